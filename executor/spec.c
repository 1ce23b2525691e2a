/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI runtime spec (config.json, runtime-spec 1.0.2 as runc 1.1 and crun read it) of one
 * container, shaped like Docker's defaults (moby oci/defaults.go): Docker's default capability set
 * in bounding/effective/permitted (none ambient or inheritable), no new privileges, RLIMIT_NOFILE
 * 1048576, /proc, a tmpfs /dev with the runtime's default devices, /dev/pts, /dev/shm (64 MiB),
 * /dev/mqueue, a read-only /sys and /sys/fs/cgroup, Docker's masked and read-only /proc and /sys
 * paths, a device cgroup that denies everything but the usual devices (and mknod), memory/pids/CPU
 * (CFS quota per 100 ms) limits when asked, pid/ipc/uts/mount namespaces plus a network one unless
 * the host network is asked for (a fresh one, or the namespace file of a pod joined by path).
 * /etc/hosts, /etc/resolv.conf and /etc/hostname are read-only binds of files in the bundle; the
 * caller's bind and tmpfs mounts come last.
 */
#include "executor/executor_internal.h"

#include <string.h>

const char *const sw_exec__default_caps[] = {
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
	NULL,
};

static const char *const masked_paths[] = {
	"/proc/asound",
	"/proc/acpi",
	"/proc/kcore",
	"/proc/keys",
	"/proc/latency_stats",
	"/proc/timer_list",
	"/proc/timer_stats",
	"/proc/sched_debug",
	"/proc/scsi",
	"/sys/firmware",
	"/sys/devices/virtual/powercap",
	NULL,
};

static const char *const readonly_paths[] = {
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", NULL,
};

static json_t *strv_json(const char *const *v)
{
	json_t *a = json_array();
	for (size_t i = 0; v && v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

static json_t *mount_json(const char *dest, const char *type, const char *source,
                          const char *const *options)
{
	json_t *m = json_object();
	json_object_set_new(m, "destination", json_string(dest));
	json_object_set_new(m, "type", json_string(type));
	json_object_set_new(m, "source", json_string(source));
	if (options)
		json_object_set_new(m, "options", strv_json(options));
	return m;
}

/* A device cgroup rule; major/minor < 0 mean "any". */
static json_t *device_rule(bool allow, const char *type, long major, long minor, const char *access)
{
	json_t *d = json_object();
	json_object_set_new(d, "allow", json_boolean(allow));
	if (type)
		json_object_set_new(d, "type", json_string(type));
	if (major >= 0)
		json_object_set_new(d, "major", json_integer(major));
	if (minor >= 0)
		json_object_set_new(d, "minor", json_integer(minor));
	json_object_set_new(d, "access", json_string(access));
	return d;
}

static json_t *process_json(const sw_exec__spec_in *in)
{
	const sw_exec_spec *s = in->spec;
	json_t *p = json_object();
	json_object_set_new(p, "terminal", json_false());
	json_t *user = json_object();
	json_object_set_new(user, "uid", json_integer((json_int_t)in->uid));
	json_object_set_new(user, "gid", json_integer((json_int_t)in->gid));
	if (in->n_groups) {
		json_t *g = json_array();
		for (size_t i = 0; i < in->n_groups; i++)
			json_array_append_new(g, json_integer((json_int_t)in->groups[i]));
		json_object_set_new(user, "additionalGids", g);
	}
	json_object_set_new(p, "user", user);
	json_object_set_new(p, "args", strv_json((const char *const *)s->argv));
	json_object_set_new(p, "env", strv_json((const char *const *)in->env));
	json_object_set_new(p, "cwd", json_string(in->cwd));
	json_t *caps = json_object();
	json_object_set_new(caps, "bounding", strv_json(sw_exec__default_caps));
	json_object_set_new(caps, "effective", strv_json(sw_exec__default_caps));
	json_object_set_new(caps, "permitted", strv_json(sw_exec__default_caps));
	json_object_set_new(p, "capabilities", caps);
	json_t *rl = json_object();
	json_object_set_new(rl, "type", json_string("RLIMIT_NOFILE"));
	json_int_t nofile = in->nofile ? (json_int_t)in->nofile : 1048576;
	json_object_set_new(rl, "hard", json_integer(nofile));
	json_object_set_new(rl, "soft", json_integer(nofile));
	json_t *rls = json_array();
	json_array_append_new(rls, rl);
	json_object_set_new(p, "rlimits", rls);
	json_object_set_new(p, "noNewPrivileges", json_true());
	return p;
}

static json_t *mounts_json(const sw_exec__spec_in *in)
{
	const sw_exec_spec *s = in->spec;
	json_t *a = json_array();
	static const char *const proc_opts[] = { "nosuid", "noexec", "nodev", NULL };
	static const char *const dev_opts[] = { "nosuid", "strictatime", "mode=755", "size=65536k",
		                                NULL };
	static const char *const pts_opts[] = {
		"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5", NULL
	};
	static const char *const shm_opts[] = { "nosuid",    "noexec",        "nodev",
		                                "mode=1777", "size=67108864", NULL };
	static const char *const mq_opts[] = { "nosuid", "noexec", "nodev", NULL };
	static const char *const sys_opts[] = { "nosuid", "noexec", "nodev", "ro", NULL };
	static const char *const cg_opts[] = {
		"nosuid", "noexec", "nodev", "relatime", "ro", NULL
	};
	static const char *const etc_opts[] = { "bind", "ro", "nosuid", "nodev", "noexec", NULL };
	json_array_append_new(a, mount_json("/proc", "proc", "proc", proc_opts));
	json_array_append_new(a, mount_json("/dev", "tmpfs", "tmpfs", dev_opts));
	json_array_append_new(a, mount_json("/dev/pts", "devpts", "devpts", pts_opts));
	json_array_append_new(a, mount_json("/dev/shm", "tmpfs", "shm", shm_opts));
	json_array_append_new(a, mount_json("/dev/mqueue", "mqueue", "mqueue", mq_opts));
	json_array_append_new(a, mount_json("/sys", "sysfs", "sysfs", sys_opts));
	json_array_append_new(a, mount_json("/sys/fs/cgroup", "cgroup", "cgroup", cg_opts));
	static const char *const etc_files[][2] = {
		{ "/etc/hosts", "hosts" },
		{ "/etc/resolv.conf", "resolv.conf" },
		{ "/etc/hostname", "hostname" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(etc_files); i++) {
		cleanup_free char *src = sw_path_join(in->bundle, etc_files[i][1]);
		json_array_append_new(a, mount_json(etc_files[i][0], "bind", src, etc_opts));
	}
	for (size_t i = 0; i < s->n_mounts; i++) {
		const sw_exec_mount *m = &s->mounts[i];
		bool bind = !m->type || strcmp(m->type, "bind") == 0;
		if (bind) {
			const char *opts[] = { "rbind", m->readonly ? "ro" : "rw", NULL };
			json_array_append_new(a,
			                      mount_json(m->destination, "bind", m->source, opts));
		} else {
			cleanup_free char *mode = sw_xasprintf(
			        "mode=%04o", (unsigned)(m->mode ? m->mode : 0755) & 07777);
			const char *opts[] = { "nosuid", "nodev", mode, m->readonly ? "ro" : "rw",
				               NULL };
			json_array_append_new(a,
			                      mount_json(m->destination, "tmpfs", "tmpfs", opts));
		}
	}
	return a;
}

static json_t *linux_json(const sw_exec__spec_in *in)
{
	const sw_exec_spec *s = in->spec;
	json_t *l = json_object();
	json_t *ns = json_array();
	static const char *const kinds[] = { "pid", "ipc", "uts", "mount", "network" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(kinds); i++) {
		if (strcmp(kinds[i], "network") == 0 && s->network == SW_EXEC_NET_HOST)
			continue;
		json_t *n = json_object();
		json_object_set_new(n, "type", json_string(kinds[i]));
		if (strcmp(kinds[i], "network") == 0 && s->network == SW_EXEC_NET_PATH)
			json_object_set_new(n, "path", json_string(s->netns_path));
		json_array_append_new(ns, n);
	}
	json_object_set_new(l, "namespaces", ns);
	if (in->cgroups_path)
		json_object_set_new(l, "cgroupsPath", json_string(in->cgroups_path));
	json_t *res = json_object();
	json_t *dev = json_array();
	json_array_append_new(dev, device_rule(false, NULL, -1, -1, "rwm"));
	json_array_append_new(dev, device_rule(true, "c", -1, -1, "m"));
	json_array_append_new(dev, device_rule(true, "b", -1, -1, "m"));
	static const long chars[][2] = { { 1, 3 }, { 1, 5 }, { 1, 7 }, { 1, 8 },   { 1, 9 },
		                         { 5, 0 }, { 5, 1 }, { 5, 2 }, { 136, -1 } };
	for (size_t i = 0; i < SW_ARRAY_SIZE(chars); i++)
		json_array_append_new(dev, device_rule(true, "c", chars[i][0], chars[i][1], "rwm"));
	json_object_set_new(res, "devices", dev);
	if (s->memory_limit) {
		json_t *m = json_object();
		json_object_set_new(m, "limit", json_integer((json_int_t)s->memory_limit));
		json_object_set_new(res, "memory", m);
	}
	if (s->pids_limit) {
		json_t *p = json_object();
		json_object_set_new(p, "limit", json_integer((json_int_t)s->pids_limit));
		json_object_set_new(res, "pids", p);
	}
	if (s->cpu_millis) {
		/* CFS bandwidth: quota per 100 ms period (the kernel's minimum quota is 1 ms) */
		json_int_t quota = (json_int_t)s->cpu_millis * 100;
		json_t *c = json_object();
		json_object_set_new(c, "quota", json_integer(quota < 1000 ? 1000 : quota));
		json_object_set_new(c, "period", json_integer(100000));
		json_object_set_new(res, "cpu", c);
	}
	json_object_set_new(l, "resources", res);
	json_object_set_new(l, "maskedPaths", strv_json(masked_paths));
	json_object_set_new(l, "readonlyPaths", strv_json(readonly_paths));
	return l;
}

json_t *sw_exec__spec_build(const sw_exec__spec_in *in)
{
	json_t *j = json_object();
	json_object_set_new(j, "ociVersion", json_string("1.0.2"));
	json_object_set_new(j, "process", process_json(in));
	json_t *root = json_object();
	json_object_set_new(root, "path", json_string(in->rootfs));
	json_object_set_new(root, "readonly", json_boolean(in->spec->readonly_rootfs));
	json_object_set_new(j, "root", root);
	json_object_set_new(j, "hostname", json_string(in->hostname));
	json_object_set_new(j, "mounts", mounts_json(in));
	json_object_set_new(j, "linux", linux_json(in));
	return j;
}
