/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The executor's unit test program. User resolution and the runtime spec are checked in memory;
 * the rest runs real containers (as root, with runc and, when installed, again with crun) over
 * a busybox rootfs built from /bin/busybox: output streams, exit codes (127 for a missing
 * executable), env, cwd and users, what lands in the upper folder (files, whiteouts, no mount
 * stubs), network none and host, bind and tmpfs mounts, timeout and cancel (no process
 * survives), host-side overlay mounts (many lowers, the classic option string, read-only,
 * scratch) and the sweep after a SIGKILLed owner. Every container case ends by checking that
 * nothing is left: no mounts under its temporary folder, no runtime containers, no boxes.
 * Cases that need root or a runtime skip cleanly without them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "executor/executor.h"
#include "executor/executor_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>

/* ---------------------------------------------------------------- shared state */

static const char *g_runtime; /* the runtime of the running group: "runc" or "crun" */
static bool g_can_run;        /* root, overlayfs, busybox and the runtime are there */
static char *g_base;          /* temporary folder holding the busybox lower */
static char *g_lower;         /* the busybox rootfs (a read-only lower) */

static bool have_program(const char *name)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

static void write_file(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
}

static char *read_text(const char *path)
{
	char *data = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&data, &len, path, 1 << 20, &e) < 0)
		fail_msg("read %s: %s", path, sw_error_msg(e));
	return data;
}

static bool exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static char *join(const char *a, const char *b)
{
	return sw_path_join(a, b);
}

/* A busybox root filesystem like tests/integration/lib_rootfs.sh makes, plus /etc/victim. */
static int make_busybox_rootfs(const char *root)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
	         "set -e; r='%s'; mkdir -p \"$r/bin\" \"$r/etc\" \"$r/root\" \"$r/tmp\"; "
	         "chmod 0755 \"$r\"; chmod 1777 \"$r/tmp\"; chmod 0700 \"$r/root\"; "
	         "cp /bin/busybox \"$r/bin/busybox\"; chmod 0755 \"$r/bin/busybox\"; "
	         "for a in $(/bin/busybox --list); do case $a in busybox|*/*) continue;; esac; "
	         "ln -sf busybox \"$r/bin/$a\"; done; "
	         "printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:"
	         "/nonexistent:/bin/false\\n' >\"$r/etc/passwd\"; "
	         "printf 'root:x:0:\\nnogroup:x:65534:\\n' >\"$r/etc/group\"; "
	         "echo victim >\"$r/etc/victim\"",
	         root);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------- per-test fixture */

typedef struct fixture {
	char *tmp;
	char *state;
	char *upper;
	sw_buf out, err;
	volatile sig_atomic_t cancel;
	const char *cancel_on; /* set cancel when stdout contains this */
	int cancel_value;      /* what it is set to (0: 1) */
} fixture;

static int setup(void **state)
{
	fixture *f = sw_xcalloc(1, sizeof(*f));
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-test-exec-", &e) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(e));
		sw_error_free(e);
		free(f);
		return -1;
	}
	f->state = join(f->tmp, "state");
	f->upper = join(f->tmp, "upper");
	sw_buf_init(&f->out, 0);
	sw_buf_init(&f->err, 0);
	setenv("SLIPWAY_STATE_DIR", f->state, 1);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	sw_error *e = NULL;
	/* never remove anything through a mount a failed case left behind */
	if (sw_exec__unmount_under(f->tmp, &e) < 0) {
		fprintf(stderr, "teardown: %s\n", sw_error_msg(e));
		sw_error_free(e);
		return -1;
	}
	if (sw_fs_rm_rf(f->tmp, &e) < 0) {
		fprintf(stderr, "teardown: %s\n", sw_error_msg(e));
		sw_error_free(e);
	}
	unsetenv("SLIPWAY_STATE_DIR");
	free(f->tmp);
	free(f->state);
	free(f->upper);
	sw_buf_free(&f->out);
	sw_buf_free(&f->err);
	free(f);
	return 0;
}

static void on_output(sw_exec_stream stream, const char *data, size_t len, void *payload)
{
	fixture *f = payload;
	sw_buf *b = stream == SW_EXEC_STDOUT ? &f->out : &f->err;
	assert_int_equal(sw_buf_append(b, data, len, NULL), 0);
	if (f->cancel_on && stream == SW_EXEC_STDOUT && f->out.data &&
	    strstr(f->out.data, f->cancel_on))
		f->cancel = f->cancel_value ? f->cancel_value : 1;
}

static sw_exec_spec base_spec(fixture *f, char *const *argv)
{
	static const char *lowers[1];
	lowers[0] = g_lower;
	sw_exec_spec s = {
		.lower_dirs = lowers,
		.n_lower = 1,
		.upper_dir = f->upper,
		.argv = argv,
		.runtime = g_runtime,
		.state_dir = f->state,
		.id_prefix = "test",
		.on_output = on_output,
		.payload = f,
	};
	return s;
}

static void run_ok(sw_exec_result *res, const sw_exec_spec *spec)
{
	sw_error *e = NULL;
	int r = sw_exec_container_run(res, spec, &e);
	if (r < 0)
		fail_msg("container run: %s", sw_error_msg(e));
}

static char *runtime_root(fixture *f)
{
	cleanup_free char *real = realpath(f->state, NULL);
	assert_non_null(real);
	return sw_xasprintf("%s/exec/runtime/%s", real, g_runtime);
}

/* Nothing left: no mounts under the case's folder, no runtime containers, no boxes. */
static void assert_clean(fixture *f)
{
	cleanup_strv char **mounts = NULL;
	sw_error *e = NULL;
	cleanup_free char *real = realpath(f->tmp, NULL);
	assert_non_null(real);
	assert_int_equal(sw_fs_mounts_under(&mounts, real, &e), 0);
	if (mounts[0])
		fail_msg("still mounted: %s", mounts[0]);
	cleanup_free char *root = runtime_root(f);
	if (exists(root)) {
		char cmd[4096];
		snprintf(cmd, sizeof(cmd), "%s --root '%s' list -q 2>&1", g_runtime, root);
		FILE *p = popen(cmd, "r");
		assert_non_null(p);
		char buf[4096];
		size_t n = fread(buf, 1, sizeof(buf) - 1, p);
		buf[n] = '\0';
		assert_int_equal(pclose(p), 0);
		if (n)
			fail_msg("%s list: %s", g_runtime, buf);
	}
	cleanup_free char *exec = sw_xasprintf("%s/exec", real);
	DIR *d = opendir(exec);
	if (d) {
		for (struct dirent *de; (de = readdir(d)) != NULL;) {
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
			    strcmp(de->d_name, "runtime"))
				fail_msg("left in %s: %s", exec, de->d_name);
		}
		closedir(d);
	}
	/* no overlay work folder beside the upper */
	d = opendir(f->tmp);
	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		if (strstr(de->d_name, ".slipway-work-"))
			fail_msg("work folder left: %s", de->d_name);
	closedir(d);
}

/* Whether a process with exactly this command line runs. */
static bool process_running(const char *const *cmdline)
{
	DIR *d = opendir("/proc");
	assert_non_null(d);
	char want[256];
	size_t wlen = 0;
	for (size_t i = 0; cmdline[i]; i++) {
		size_t n = strlen(cmdline[i]) + 1;
		memcpy(want + wlen, cmdline[i], n);
		wlen += n;
	}
	bool found = false;
	for (struct dirent *de; !found && (de = readdir(d)) != NULL;) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		char path[300], buf[256];
		snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf));
		close(fd);
		/* a zombie has an empty command line: it is gone for our purpose */
		found = n == (ssize_t)wlen && memcmp(buf, want, wlen) == 0;
	}
	closedir(d);
	return found;
}

#define NEED_CONTAINERS()                                                                 \
	do {                                                                              \
		if (!g_can_run) {                                                         \
			print_message("skipped: needs root, overlayfs, busybox and %s\n", \
			              g_runtime);                                         \
			skip();                                                           \
		}                                                                         \
	} while (0)

/* ---------------------------------------------------------------- users (in memory) */

typedef struct memfs {
	const char *passwd;
	const char *group;
	int reads;
} memfs;

static int mem_read(char **out, size_t *out_len, const char *path, void *payload, sw_error **err)
{
	memfs *m = payload;
	m->reads++;
	const char *c = strcmp(path, "/etc/passwd") == 0  ? m->passwd
	                : strcmp(path, "/etc/group") == 0 ? m->group
	                                                  : NULL;
	if (!c)
		return sw_error_set(err, SW_ERR_NOT_FOUND, "%s: no such file", path);
	*out = sw_xstrdup(c);
	*out_len = strlen(c);
	return 0;
}

static void test_executor__user_resolve(void **state)
{
	(void)state;
	memfs m = {
		.passwd = "# comment\n"
		          "root:x:0:0:root:/root:/bin/sh\n"
		          "broken line\n"
		          "app:x:1000:1001:App:/home/app:/bin/sh\n"
		          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
		          "42:x:4242:4243::/h42:/bin/sh\n",
		.group = "root:x:0:\n"
		         "appgrp:x:1001:\n"
		         "docker:x:999:app,other\n"
		         "audio:x:29:other,app\n"
		         "staff:x:50:\n"
		         "nogroup:x:65534:\n",
	};
	uid_t uid;
	gid_t gid;
	gid_t *groups = NULL;
	size_t n = 0;
	sw_error *e = NULL;

	/* NULL: root */
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, &groups, &n, NULL, mem_read, &m, &e), 0);
	assert_int_equal(uid, 0);
	assert_int_equal(gid, 0);
	assert_int_equal(n, 0);
	free(groups);

	/* a name: primary group from passwd, supplementary from group member lists */
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, &groups, &n, "app", mem_read, &m, &e), 0);
	assert_int_equal(uid, 1000);
	assert_int_equal(gid, 1001);
	assert_int_equal(n, 2);
	assert_int_equal(groups[0], 999);
	assert_int_equal(groups[1], 29);
	free(groups);

	/* a uid with an entry is that entry; numeric user names match by name first */
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, &groups, &n, "1000", mem_read, &m, &e),
	                 0);
	assert_int_equal(uid, 1000);
	assert_int_equal(gid, 1001);
	assert_int_equal(n, 2);
	free(groups);
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, NULL, NULL, "42", mem_read, &m, &e), 0);
	assert_int_equal(uid, 4242);
	assert_int_equal(gid, 4243);

	/* a uid without an entry: gid 0, no groups */
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, &groups, &n, "1234", mem_read, &m, &e),
	                 0);
	assert_int_equal(uid, 1234);
	assert_int_equal(gid, 0);
	assert_int_equal(n, 0);
	free(groups);

	/* explicit groups: numbers, names, and no supplementary groups */
	assert_int_equal(
	        sw_exec_user_resolve(&uid, &gid, &groups, &n, "1234:5678", mem_read, &m, &e), 0);
	assert_int_equal(uid, 1234);
	assert_int_equal(gid, 5678);
	free(groups);
	assert_int_equal(
	        sw_exec_user_resolve(&uid, &gid, &groups, &n, "app:staff", mem_read, &m, &e), 0);
	assert_int_equal(uid, 1000);
	assert_int_equal(gid, 50);
	assert_int_equal(n, 0);
	free(groups);
	assert_int_equal(
	        sw_exec_user_resolve(&uid, &gid, &groups, &n, "nobody:999", mem_read, &m, &e), 0);
	assert_int_equal(uid, 65534);
	assert_int_equal(gid, 999);
	free(groups);

	/* unknown names are NOT_FOUND, naming them */
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, &groups, &n, "ghost", mem_read, &m, &e),
	                 SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "ghost"));
	sw_error_clear(&e);
	assert_int_equal(
	        sw_exec_user_resolve(&uid, &gid, &groups, &n, "app:ghosts", mem_read, &m, &e),
	        SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "ghosts"));
	sw_error_clear(&e);

	/* bad forms */
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, NULL, NULL, "app:", mem_read, &m, &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, NULL, NULL, ":5", mem_read, &m, &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(
	        sw_exec_user_resolve(&uid, &gid, NULL, NULL, "99999999999", mem_read, &m, &e),
	        SW_ERR_INVALID);
	sw_error_clear(&e);

	/* no /etc files at all: numbers are fine, names are not */
	memfs none = { 0 };
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, &groups, &n, "7:8", mem_read, &none, &e),
	                 0);
	assert_int_equal(uid, 7);
	assert_int_equal(gid, 8);
	free(groups);
	assert_int_equal(sw_exec_user_resolve(&uid, &gid, NULL, NULL, "root", mem_read, &none, &e),
	                 SW_ERR_NOT_FOUND);
	sw_error_clear(&e);
}

static int failing_read(char **out, size_t *out_len, const char *path, void *payload,
                        sw_error **err)
{
	(void)out;
	(void)out_len;
	(void)payload;
	return sw_error_set(err, SW_ERR_GENERIC, "%s: disk on fire", path);
}

static void test_executor__user_resolve_read_error(void **state)
{
	(void)state;
	uid_t uid;
	gid_t gid;
	sw_error *e = NULL;
	assert_int_equal(
	        sw_exec_user_resolve(&uid, &gid, NULL, NULL, "app", failing_read, NULL, &e),
	        SW_ERR_GENERIC);
	assert_non_null(strstr(sw_error_msg(e), "disk on fire"));
	sw_error_free(e);
}

/* ---------------------------------------------------------------- runtime spec (in memory) */

static bool json_strv_has(json_t *a, const char *s)
{
	size_t i;
	json_t *v;
	json_array_foreach (a, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
			return true;
	return false;
}

static json_t *find_mount(json_t *mounts, const char *dest)
{
	size_t i;
	json_t *m;
	json_array_foreach (mounts, i, m) {
		const char *d = json_string_value(json_object_get(m, "destination"));
		if (d && strcmp(d, dest) == 0)
			return m;
	}
	return NULL;
}

static void test_executor__spec(void **state)
{
	(void)state;
	char *argv[] = { "sh", "-c", "true", NULL };
	char *env[] = { "A=1", "PATH=/bin", NULL };
	sw_exec_mount mounts[] = {
		{ .type = "bind",
		  .source = "/srv/cache",
		  .destination = "/cache",
		  .readonly = true },
		{ .type = "tmpfs", .destination = "/scratch", .mode = 01777 },
	};
	sw_exec_spec s = { .argv = argv,
		           .mounts = mounts,
		           .n_mounts = 2,
		           .memory_limit = 1 << 30,
		           .pids_limit = 100 };
	gid_t groups[] = { 29, 999 };
	sw_exec__spec_in in = { .spec = &s,
		                .id = "t-1",
		                .rootfs = "/x/rootfs",
		                .bundle = "/x",
		                .uid = 1000,
		                .gid = 1001,
		                .groups = groups,
		                .n_groups = 2,
		                .env = env,
		                .cwd = "/app",
		                .hostname = "host1",
		                .cgroups_path = "slipway/t-1" };
	json_t *j = sw_exec__spec_build(&in);
	assert_string_equal(json_string_value(json_object_get(j, "ociVersion")), "1.0.2");
	json_t *p = json_object_get(j, "process");
	assert_true(json_is_false(json_object_get(p, "terminal")));
	assert_true(json_is_true(json_object_get(p, "noNewPrivileges")));
	assert_string_equal(json_string_value(json_object_get(p, "cwd")), "/app");
	json_t *user = json_object_get(p, "user");
	assert_int_equal(json_integer_value(json_object_get(user, "uid")), 1000);
	assert_int_equal(json_integer_value(json_object_get(user, "gid")), 1001);
	assert_int_equal(json_array_size(json_object_get(user, "additionalGids")), 2);
	json_t *caps = json_object_get(p, "capabilities");
	static const char *const docker_caps[] = {
		"CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
		"CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
		"CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
		"CAP_KILL",    "CAP_AUDIT_WRITE"
	};
	for (const char *set_name = "bounding"; set_name;
	     set_name = strcmp(set_name, "bounding") == 0    ? "effective"
	                : strcmp(set_name, "effective") == 0 ? "permitted"
	                                                     : NULL) {
		json_t *set = json_object_get(caps, set_name);
		assert_int_equal(json_array_size(set), SW_ARRAY_SIZE(docker_caps));
		for (size_t i = 0; i < SW_ARRAY_SIZE(docker_caps); i++)
			assert_true(json_strv_has(set, docker_caps[i]));
	}
	assert_null(json_object_get(caps, "ambient"));
	assert_null(json_object_get(caps, "inheritable"));
	json_t *rl = json_array_get(json_object_get(p, "rlimits"), 0);
	assert_string_equal(json_string_value(json_object_get(rl, "type")), "RLIMIT_NOFILE");
	assert_int_equal(json_integer_value(json_object_get(rl, "soft")), 1048576);

	json_t *ms = json_object_get(j, "mounts");
	json_t *hosts = find_mount(ms, "/etc/hosts");
	assert_non_null(hosts);
	assert_string_equal(json_string_value(json_object_get(hosts, "source")), "/x/hosts");
	assert_true(json_strv_has(json_object_get(hosts, "options"), "ro"));
	assert_non_null(find_mount(ms, "/etc/resolv.conf"));
	assert_non_null(find_mount(ms, "/proc"));
	assert_non_null(find_mount(ms, "/dev/pts"));
	assert_non_null(find_mount(ms, "/dev/mqueue"));
	json_t *shm = find_mount(ms, "/dev/shm");
	assert_true(json_strv_has(json_object_get(shm, "options"), "size=67108864"));
	json_t *sys = find_mount(ms, "/sys");
	assert_true(json_strv_has(json_object_get(sys, "options"), "ro"));
	assert_true(
	        json_strv_has(json_object_get(find_mount(ms, "/sys/fs/cgroup"), "options"), "ro"));
	json_t *cache = find_mount(ms, "/cache");
	assert_string_equal(json_string_value(json_object_get(cache, "source")), "/srv/cache");
	assert_true(json_strv_has(json_object_get(cache, "options"), "ro"));
	json_t *scratch = find_mount(ms, "/scratch");
	assert_string_equal(json_string_value(json_object_get(scratch, "type")), "tmpfs");
	assert_true(json_strv_has(json_object_get(scratch, "options"), "mode=1777"));
	/* the caller's mounts come after the defaults */
	assert_ptr_equal(json_array_get(ms, json_array_size(ms) - 1), scratch);

	json_t *l = json_object_get(j, "linux");
	assert_string_equal(json_string_value(json_object_get(l, "cgroupsPath")), "slipway/t-1");
	json_t *res = json_object_get(l, "resources");
	assert_int_equal(
	        json_integer_value(json_object_get(json_object_get(res, "memory"), "limit")),
	        1 << 30);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(res, "pids"), "limit")),
	                 100);
	assert_true(json_strv_has(json_object_get(l, "maskedPaths"), "/proc/kcore"));
	assert_true(json_strv_has(json_object_get(l, "maskedPaths"), "/proc/keys"));
	assert_true(json_strv_has(json_object_get(l, "readonlyPaths"), "/proc/sys"));
	assert_true(json_strv_has(json_object_get(l, "readonlyPaths"), "/proc/sysrq-trigger"));
	size_t i;
	json_t *ns;
	bool has_net = false;
	size_t n_ns = 0;
	json_array_foreach (json_object_get(l, "namespaces"), i, ns) {
		n_ns++;
		has_net |= strcmp(json_string_value(json_object_get(ns, "type")), "network") == 0;
	}
	assert_true(has_net);
	assert_int_equal(n_ns, 5);
	json_decref(j);

	/* host network: no network namespace; no limits: no memory/pids sections */
	s.network = SW_EXEC_NET_HOST;
	s.memory_limit = 0;
	s.pids_limit = 0;
	j = sw_exec__spec_build(&in);
	l = json_object_get(j, "linux");
	json_array_foreach (json_object_get(l, "namespaces"), i, ns)
		assert_string_not_equal(json_string_value(json_object_get(ns, "type")), "network");
	assert_int_equal(json_array_size(json_object_get(l, "namespaces")), 4);
	assert_null(json_object_get(json_object_get(l, "resources"), "memory"));
	assert_null(json_object_get(json_object_get(l, "resources"), "pids"));
	json_decref(j);
}

static void test_executor__owner_label(void **state)
{
	(void)state;
	sw_exec__owner o;
	sw_error *e = NULL;
	assert_int_equal(sw_exec__owner_parse(
	                         &o,
	                         "pid=12\nstart=345\nruntime=/usr/bin/runc\n"
	                         "root=/s/exec/runtime/runc\nworkdir=/u/12-345.slipway-work-x\n",
	                         &e),
	                 0);
	assert_int_equal(o.pid, 12);
	assert_int_equal(o.start, 345);
	assert_string_equal(o.runtime, "/usr/bin/runc");
	assert_string_equal(o.workdir, "/u/12-345.slipway-work-x");
	sw_exec__owner_clear(&o);
	assert_int_equal(sw_exec__owner_parse(&o, "pid=12\n", &e), SW_ERR_INVALID);
	sw_error_clear(&e);

	/* this process is alive; with another start time it is a recycled pid */
	unsigned long long start = 0;
	assert_int_equal(sw_proc_starttime(&start, getpid()), 0);
	sw_exec__owner me = { .pid = getpid(), .start = start };
	assert_true(sw_exec__owner_alive(&me));
	me.start = start + 1;
	assert_false(sw_exec__owner_alive(&me));
	/* a child that exited and was reaped is dead */
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	unsigned long long cstart = 0;
	(void)sw_proc_starttime(&cstart, pid);
	waitpid(pid, NULL, 0);
	sw_exec__owner child = { .pid = pid, .start = cstart };
	assert_false(sw_exec__owner_alive(&child));

	/* a forged label cannot make a sweep remove arbitrary folders */
	assert_int_equal(sw_exec__workdir_remove("/etc", &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(sw_exec__workdir_remove("/x/1-2.slipway-work-y/../../etc", &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_int_equal(sw_exec__workdir_remove("relative/1-2.slipway-work-y", &e),
	                 SW_ERR_INVALID);
	sw_error_clear(&e);

	char esc[] = "/a\\040b\\134c\\011d";
	sw_fs_mountinfo_unescape(esc);
	assert_string_equal(esc, "/a b\\c\td");
}

/* ---------------------------------------------------------------- containers */

static void test_executor__output_streams(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sh", "-c", "echo to-stdout; echo to-stderr >&2; echo more", NULL };
	sw_exec_spec s = base_spec(f, argv);
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.signal, 0);
	assert_false(res.timed_out);
	assert_false(res.cancelled);
	assert_string_equal(f->out.data, "to-stdout\nmore\n");
	assert_string_equal(f->err.data, "to-stderr\n");
	assert_clean(f);
}

static void test_executor__large_output(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sh", "-c", "yes 0123456789abcdef | head -c 3000000; echo end >&2", NULL };
	sw_exec_spec s = base_spec(f, argv);
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(f->out.len, 3000000);
	assert_memory_equal(f->out.data, "0123456789abcdef\n0123", 21);
	assert_string_equal(f->err.data, "end\n");
	assert_clean(f);
}

static void test_executor__exit_codes(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	sw_exec_result res;
	char *t[] = { "/bin/true", NULL };
	sw_exec_spec s = base_spec(f, t);
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);

	char *three[] = { "sh", "-c", "exit 3", NULL };
	s = base_spec(f, three);
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 3);
	assert_int_equal(res.signal, 0);

	/* a missing executable is exit code 127 with the runtime's message, as in Docker */
	char *missing[] = { "no-such-command", "arg", NULL };
	s = base_spec(f, missing);
	sw_buf_reset(&f->err);
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 127);
	assert_non_null(f->err.data);
	assert_non_null(strstr(f->err.data, "no-such-command"));
	assert_non_null(strstr(f->err.data, "not found"));

	/* by absolute path too */
	char *missing_abs[] = { "/usr/bin/nothing-here", NULL };
	s = base_spec(f, missing_abs);
	sw_buf_reset(&f->err);
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 127);
	assert_non_null(strstr(f->err.data, "nothing-here"));

	/* not executable: 126 */
	char *noexec[] = { "/etc/passwd", NULL };
	s = base_spec(f, noexec);
	sw_buf_reset(&f->err);
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 126);
	assert_true(f->err.len > 0);
	assert_clean(f);
}

static void test_executor__env_cwd(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sh", "-c", "echo \"$GREETING|$HOME|$PATH\"; pwd; ls -ld . | cut -c1-10",
		         NULL };
	char *env[] = { "GREETING=hello world", NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.env = env;
	s.cwd = "/work/deep/dir";
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(f->out.data, "hello world|/root|/usr/local/sbin:/usr/local/bin:"
	                                 "/usr/sbin:/usr/bin:/sbin:/bin\n/work/deep/dir\n"
	                                 "drwxr-xr-x\n");
	/* the created folder is part of the step's changes */
	cleanup_free char *made = join(f->upper, "work/deep/dir");
	struct stat st;
	assert_int_equal(stat(made, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_uid, 0);
	assert_clean(f);
}

static void test_executor__users(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sh", "-c", "id -u; id -g; echo $HOME", NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.user = "nobody";
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(f->out.data, "65534\n65534\n/nonexistent\n");

	sw_buf_reset(&f->out);
	s.user = "1234:5678";
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(f->out.data, "1234\n5678\n/\n");

	/* an unknown name stops the run before anything starts */
	s.user = "ghost";
	sw_error *e = NULL;
	assert_int_equal(sw_exec_container_run(&res, &s, &e), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "ghost"));
	sw_error_free(e);
	assert_clean(f);
}

static void test_executor__upper_and_whiteouts(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sh", "-c", "echo new > /created; rm /etc/victim; cat /etc/hosts", NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.hostname = "builder-1";
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_non_null(strstr(f->out.data, "127.0.0.1\tlocalhost builder-1\n"));
	assert_non_null(strstr(f->out.data, "::1\tlocalhost"));

	cleanup_free char *created = join(f->upper, "created");
	cleanup_free char *content = read_text(created);
	assert_string_equal(content, "new\n");
	cleanup_free char *in_lower = join(g_lower, "created");
	assert_false(exists(in_lower));

	/* the deleted lower file is a 0/0 character device in the upper; the lower keeps it */
	cleanup_free char *wh = join(f->upper, "etc/victim");
	struct stat st;
	assert_int_equal(lstat(wh, &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	assert_int_equal(major(st.st_rdev), 0);
	assert_int_equal(minor(st.st_rdev), 0);
	cleanup_free char *victim = join(g_lower, "etc/victim");
	assert_true(exists(victim));

	/* the runtime's mount points are gone again: the upper holds only the changes */
	static const char *const stubs[] = {
		"proc", "dev", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname"
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(stubs); i++) {
		cleanup_free char *p = join(f->upper, stubs[i]);
		if (exists(p))
			fail_msg("mount stub left in the upper: %s", stubs[i]);
	}
	/* and the copied-up /etc kept the lower's modification time */
	cleanup_free char *ue = join(f->upper, "etc");
	cleanup_free char *le = join(g_lower, "etc");
	struct stat ust, lst;
	assert_int_equal(stat(ue, &ust), 0);
	assert_int_equal(stat(le, &lst), 0);
	assert_int_equal(ust.st_mtim.tv_sec, lst.st_mtim.tv_sec);
	assert_clean(f);
}

/* The interface names of a /proc/net/dev text, sorted, joined by ",". */
static char *interfaces(const char *text)
{
	cleanup_strv char **names = NULL;
	cleanup_free char *copy = sw_xstrdup(text);
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':');
		if (!colon || strchr(line, '|'))
			continue;
		*colon = '\0';
		while (*line == ' ')
			line++;
		sw_strv_push(&names, line);
	}
	size_t n = sw_strv_len(names);
	for (size_t i = 0; i + 1 < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (strcmp(names[i], names[j]) > 0) {
				char *t = names[i];
				names[i] = names[j];
				names[j] = t;
			}
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(sw_buf_printf(&b, NULL, "%s%s", i ? "," : "", names[i]), 0);
	return sw_buf_steal(&b, NULL);
}

static void test_executor__network(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "cat", "/proc/net/dev", NULL };
	sw_exec_spec s = base_spec(f, argv);
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	cleanup_free char *none = interfaces(f->out.data);
	assert_string_equal(none, "lo");

	sw_buf_reset(&f->out);
	s.network = SW_EXEC_NET_HOST;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	cleanup_free char *in_host = interfaces(f->out.data);
	cleanup_free char *host_text = read_text("/proc/net/dev");
	cleanup_free char *host = interfaces(host_text);
	assert_string_equal(in_host, host);
	if (strcmp(host, "lo") == 0)
		print_message("note: this host has only 'lo': host networking looks like none\n");

	/* resolv.conf: the host's with host networking, the loopback without network */
	char *rc[] = { "cat", "/etc/resolv.conf", NULL };
	s = base_spec(f, rc);
	sw_buf_reset(&f->out);
	run_ok(&res, &s);
	assert_string_equal(f->out.data, "nameserver 127.0.0.1\n");
	s.network = SW_EXEC_NET_HOST;
	sw_buf_reset(&f->out);
	run_ok(&res, &s);
	cleanup_free char *host_rc = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&host_rc, &len, "/etc/resolv.conf", 1 << 20, &e) < 0) {
		sw_error_free(e);
		host_rc = sw_xstrdup("");
	}
	assert_string_equal(f->out.data ? f->out.data : "", host_rc);
	assert_clean(f);
}

static void test_executor__mounts(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	cleanup_free char *ro = join(f->tmp, "ro-src");
	cleanup_free char *rw = join(f->tmp, "rw-src");
	assert_int_equal(mkdir(ro, 0755), 0);
	assert_int_equal(mkdir(rw, 0755), 0);
	cleanup_free char *ro_file = join(ro, "data.txt");
	write_file(ro_file, "from the host\n");
	sw_exec_mount m[] = {
		{ .type = "bind", .source = ro, .destination = "/mnt/ro", .readonly = true },
		{ .type = "bind", .source = rw, .destination = "/mnt/rw" },
		{ .type = "tmpfs", .destination = "/scratch", .mode = 01777 },
	};
	char *argv[] = { "sh", "-c",
		         "cat /mnt/ro/data.txt; "
		         "if echo x > /mnt/ro/new 2>/dev/null; then echo ro-writable; fi; "
		         "echo written > /mnt/rw/out.txt; "
		         "echo t > /scratch/tmpfile; ls -ld /scratch | cut -c1-10",
		         NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.mounts = m;
	s.n_mounts = SW_ARRAY_SIZE(m);
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(f->out.data, "from the host\ndrwxrwxrwt\n");
	cleanup_free char *ro_new = join(ro, "new");
	assert_false(exists(ro_new));
	cleanup_free char *rw_out = join(rw, "out.txt");
	cleanup_free char *written = read_text(rw_out);
	assert_string_equal(written, "written\n");
	/* neither the tmpfs content nor the mount points stay in the upper */
	cleanup_free char *up_mnt = join(f->upper, "mnt");
	cleanup_free char *up_scratch = join(f->upper, "scratch");
	assert_false(exists(up_mnt));
	assert_false(exists(up_scratch));
	assert_clean(f);
}

static void test_executor__readonly_rootfs(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	/* a layer with the mount points the runtime needs, over busybox */
	cleanup_free char *top = join(f->tmp, "top");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
	         "set -e; mkdir -p %s/proc %s/dev %s/sys %s/etc; touch %s/etc/hosts "
	         "%s/etc/resolv.conf %s/etc/hostname",
	         top, top, top, top, top, top, top);
	assert_int_equal(system(cmd), 0);
	const char *lowers[] = { top, g_lower };
	char *argv[] = { "sh", "-c", "cat /etc/victim; touch /x 2>/dev/null || echo read-only",
		         NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.lower_dirs = lowers;
	s.n_lower = 2;
	s.upper_dir = NULL;
	s.readonly_rootfs = true;
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(f->out.data, "victim\nread-only\n");
	assert_false(exists(f->upper));
	assert_clean(f);
}

static void test_executor__timeout(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sleep", "31", NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.timeout_ms = 500;
	s.kill_grace_ms = 300;
	sw_exec_result res;
	int64_t t0 = sw_exec__now_ms();
	run_ok(&res, &s);
	int64_t took = sw_exec__now_ms() - t0;
	assert_true(res.timed_out);
	assert_false(res.cancelled);
	assert_true(res.exit_code > 128);
	assert_true(took >= 500);
	assert_true(took < 10000);
	static const char *const cmdline[] = { "sleep", "31", NULL };
	assert_false(process_running(cmdline));
	assert_clean(f);

	/* a timeout kills at once (no grace), even a process that handles SIGTERM */
	char *trap[] = { "sh", "-c",
		         "trap 'echo got-term; exit 7' TERM; echo up; "
		         "while true; do sleep 0.05; done",
		         NULL };
	s = base_spec(f, trap);
	s.timeout_ms = 700;
	s.kill_grace_ms = 20000;
	sw_buf_reset(&f->out);
	t0 = sw_exec__now_ms();
	run_ok(&res, &s);
	took = sw_exec__now_ms() - t0;
	assert_true(res.timed_out);
	assert_int_equal(res.exit_code, 128 + SIGKILL);
	assert_string_equal(f->out.data, "up\n");
	assert_true(took < 10000);
	assert_clean(f);
}

static void test_executor__cancel(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	/* a cancel sends SIGTERM to every process: the sleep (not PID 1) ends at once, then the
	 * shell's own trap runs, well within the grace */
	char *argv[] = {
		"sh", "-c",
		"trap 'echo got-term; exit 7' TERM; echo ready; sleep 32; echo not-reached", NULL
	};
	sw_exec_spec s = base_spec(f, argv);
	s.cancel = &f->cancel;
	s.kill_grace_ms = 20000;
	f->cancel_on = "ready";
	sw_exec_result res;
	int64_t t0 = sw_exec__now_ms();
	run_ok(&res, &s);
	int64_t took = sw_exec__now_ms() - t0;
	assert_true(res.cancelled);
	assert_false(res.timed_out);
	assert_int_equal(res.exit_code, 7);
	assert_true(took < 10000);
	assert_string_equal(f->out.data, "ready\ngot-term\n");
	static const char *const cmdline[] = { "sleep", "32", NULL };
	assert_false(process_running(cmdline));
	assert_clean(f);

	/* a second cancel (2) kills at once, without waiting for the grace */
	char *stubborn[] = { "sh", "-c",
		             "trap '' TERM; echo ready; while true; do sleep 0.05; done", NULL };
	s = base_spec(f, stubborn);
	s.cancel = &f->cancel;
	s.kill_grace_ms = 20000;
	f->cancel = 0;
	f->cancel_on = "ready";
	f->cancel_value = 2;
	sw_buf_reset(&f->out);
	t0 = sw_exec__now_ms();
	run_ok(&res, &s);
	took = sw_exec__now_ms() - t0;
	f->cancel_value = 0;
	assert_true(res.cancelled);
	assert_int_equal(res.exit_code, 128 + SIGKILL);
	assert_true(took < 10000);
	assert_clean(f);
}

static void test_executor__kill_while_starting(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sleep", "33", NULL };
	static const char *const cmdline[] = { "sleep", "33", NULL };
	/* timeouts that fire while the runtime is still creating the container */
	for (int i = 0; i < 4; i++) {
		sw_exec_spec s = base_spec(f, argv);
		s.timeout_ms = 1 + i * 7;
		s.kill_grace_ms = 50;
		sw_exec_result res;
		run_ok(&res, &s);
		assert_true(res.timed_out);
		assert_false(process_running(cmdline));
		assert_clean(f);
	}
	/* cancelled before the start: nothing runs */
	sw_exec_spec s = base_spec(f, argv);
	f->cancel = 1;
	s.cancel = &f->cancel;
	sw_exec_result res;
	sw_error *e = NULL;
	assert_int_equal(sw_exec_container_run(&res, &s, &e), SW_ERR_CANCELLED);
	sw_error_free(e);
	assert_false(process_running(cmdline));
	assert_clean(f);
}

static void test_executor__limits(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = {
		"sh", "-c",
		"cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; "
		"ulimit -n",
		NULL
	};
	sw_exec_spec s = base_spec(f, argv);
	s.memory_limit = 64 << 20;
	s.pids_limit = 50;
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	/* RLIMIT_NOFILE: 1048576 as in Docker, or this process's hard limit when it lacks
	 * CAP_SYS_RESOURCE to raise it */
	struct rlimit rl;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	cleanup_free char *status = read_text("/proc/self/status");
	const char *eff = strstr(status, "\nCapEff:");
	assert_non_null(eff);
	bool can_raise = (strtoull(eff + 9, NULL, 16) >> 24) & 1; /* CAP_SYS_RESOURCE */
	unsigned long long nofile =
	        rl.rlim_max >= 1048576 || can_raise ? 1048576 : (unsigned long long)rl.rlim_max;
	cleanup_free char *want = sw_xasprintf("67108864\n50\n%llu\n", nofile);
	assert_string_equal(f->out.data, want);
	assert_clean(f);
}

static void test_executor__errors(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "true", NULL };
	sw_exec_spec s = base_spec(f, argv);
	sw_exec_result res;
	sw_error *e = NULL;

	s.runtime = "no-such-runtime";
	assert_int_equal(sw_exec_container_run(&res, &s, &e), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "no-such-runtime"));
	sw_error_clear(&e);

	s = base_spec(f, argv);
	const char *bad_lower[] = { "/nonexistent/lower" };
	s.lower_dirs = bad_lower;
	assert_true(sw_exec_container_run(&res, &s, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "/nonexistent/lower"));
	sw_error_clear(&e);

	s = base_spec(f, argv);
	s.cwd = "relative";
	assert_int_equal(sw_exec_container_run(&res, &s, &e), SW_ERR_INVALID);
	sw_error_clear(&e);

	s = base_spec(f, argv);
	s.id_prefix = "bad/prefix";
	assert_int_equal(sw_exec_container_run(&res, &s, &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_clean(f);
}

static void test_executor__default_state_dir(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "sh", "-c", "echo ok", NULL };
	sw_exec_spec s = base_spec(f, argv);
	s.state_dir = NULL; /* $SLIPWAY_STATE_DIR, set by the fixture */
	s.runtime = NULL;   /* runc */
	const char *saved = g_runtime;
	g_runtime = "runc";
	sw_exec_result res;
	run_ok(&res, &s);
	assert_int_equal(res.exit_code, 0);
	cleanup_free char *rt_root = runtime_root(f);
	assert_true(exists(rt_root));
	assert_clean(f);
	g_runtime = saved;
}

/* ---------------------------------------------------------------- host-side overlays */

static void test_executor__overlay_mount(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	cleanup_free char *l1 = join(f->tmp, "l1");
	cleanup_free char *l2 = join(f->tmp, "l2");
	assert_int_equal(mkdir(l1, 0755), 0);
	assert_int_equal(mkdir(l2, 0755), 0);
	cleanup_free char *l1f = join(l1, "same");
	cleanup_free char *l2f = join(l2, "same");
	cleanup_free char *l2only = join(l2, "bottom-only");
	write_file(l1f, "top\n");
	write_file(l2f, "bottom\n");
	write_file(l2only, "b\n");
	const char *lowers[] = { l1, l2 };
	char *mp = NULL;
	sw_error *e = NULL;
	if (sw_exec_overlay_mount(&mp, f->state, lowers, 2, f->upper, &e) < 0)
		fail_msg("overlay mount: %s", sw_error_msg(e));
	cleanup_free char *same = join(mp, "same");
	cleanup_free char *got = read_text(same);
	assert_string_equal(got, "top\n");
	cleanup_free char *bo = join(mp, "bottom-only");
	assert_true(exists(bo));
	cleanup_free char *nf = join(mp, "host-made");
	write_file(nf, "x");
	assert_int_equal(unlink(bo), 0);
	if (sw_exec_overlay_unmount(mp, &e) < 0)
		fail_msg("overlay unmount: %s", sw_error_msg(e));
	cleanup_free char *up_nf = join(f->upper, "host-made");
	assert_true(exists(up_nf));
	cleanup_free char *up_wh = join(f->upper, "bottom-only");
	struct stat st;
	assert_int_equal(lstat(up_wh, &st), 0);
	assert_true(S_ISCHR(st.st_mode));
	free(mp);
	mp = NULL;

	/* no lowers: the upper itself (a scratch rootfs) */
	if (sw_exec_overlay_mount(&mp, f->state, NULL, 0, f->upper, &e) < 0)
		fail_msg("bind mount: %s", sw_error_msg(e));
	cleanup_free char *via = join(mp, "host-made");
	assert_true(exists(via));
	assert_int_equal(sw_exec_overlay_unmount(mp, &e), 0);
	free(mp);
	mp = NULL;

	/* read-only over one lower: writes fail, whiteouts in the lower hide their file */
	cleanup_free char *up2 = join(f->tmp, "upper2");
	assert_int_equal(mkdir(up2, 0755), 0);
	cleanup_free char *whiteout = join(l1, "hidden");
	assert_int_equal(mknod(whiteout, S_IFCHR | 0, makedev(0, 0)), 0);
	const char *one[] = { l1 };
	if (sw_exec_overlay_mount(&mp, f->state, one, 1, NULL, &e) < 0)
		fail_msg("read-only overlay: %s", sw_error_msg(e));
	cleanup_free char *hidden = join(mp, "hidden");
	assert_false(exists(hidden));
	cleanup_free char *ro_new = join(mp, "new");
	assert_true(open(ro_new, O_WRONLY | O_CREAT | O_CLOEXEC, 0644) < 0);
	assert_int_equal(errno, EROFS);
	assert_int_equal(sw_exec_overlay_unmount(mp, &e), 0);
	free(mp);
	mp = NULL;

	/* not ours to unmount */
	assert_int_equal(sw_exec_overlay_unmount("/proc", &e), SW_ERR_INVALID);
	sw_error_clear(&e);
	assert_clean(f);
}

/* Many lowers with long paths: more than a page of options. */
static void many_lowers(fixture *f, size_t n, char ***out)
{
	char **v = sw_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		v[i] = sw_xasprintf("%s/layers/layer-with-a-rather-long-name-%03zu", f->tmp, i);
		sw_error *e = NULL;
		assert_int_equal(sw_fs_mkdir_p(v[i], 0755, &e), 0);
		cleanup_free char *file = sw_xasprintf("%s/file-%03zu", v[i], i);
		write_file(file, "x");
	}
	*out = v;
}

static void test_executor__overlay_many_lowers(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	cleanup_strv char **lowers = NULL;
	many_lowers(f, 120, &lowers);
	char *mp = NULL;
	sw_error *e = NULL;
	if (sw_exec_overlay_mount(&mp, f->state, (const char *const *)lowers, 120, f->upper, &e) <
	    0)
		fail_msg("overlay of 120 lowers: %s", sw_error_msg(e));
	cleanup_free char *first = join(mp, "file-000");
	cleanup_free char *last = join(mp, "file-119");
	assert_true(exists(first));
	assert_true(exists(last));
	assert_int_equal(sw_exec_overlay_unmount(mp, &e), 0);
	free(mp);
	mp = NULL;

	/* the classic option string: a few lowers work, a page worth of them is refused */
	sw_exec__overlay_no_new_api = true;
	if (sw_exec_overlay_mount(&mp, f->state, (const char *const *)lowers, 3, f->upper, &e) < 0)
		fail_msg("classic overlay: %s", sw_error_msg(e));
	cleanup_free char *f2 = join(mp, "file-002");
	assert_true(exists(f2));
	assert_int_equal(sw_exec_overlay_unmount(mp, &e), 0);
	free(mp);
	mp = NULL;
	int r = sw_exec_overlay_mount(&mp, f->state, (const char *const *)lowers, 120, f->upper,
	                              &e);
	sw_exec__overlay_no_new_api = false;
	assert_int_equal(r, SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(e), "120 lower folders"));
	sw_error_clear(&e);

	/* and a container over all of them */
	char *argv[] = { "sh", "-c", "ls / | grep -c '^file-'", NULL };
	sw_exec_spec s = base_spec(f, argv);
	const char **all = sw_xcalloc(122, sizeof(char *));
	for (size_t i = 0; i < 120; i++)
		all[i] = lowers[i];
	all[120] = g_lower;
	s.lower_dirs = all;
	s.n_lower = 121;
	sw_exec_result res;
	run_ok(&res, &s);
	free(all);
	assert_int_equal(res.exit_code, 0);
	assert_string_equal(f->out.data, "120\n");
	assert_clean(f);
}

/* ---------------------------------------------------------------- sweep */

static bool wait_for(const char *const *cmdline, bool running, int64_t ms)
{
	int64_t end = sw_exec__now_ms() + ms;
	while (sw_exec__now_ms() < end) {
		if (process_running(cmdline) == running)
			return true;
		usleep(20 * 1000);
	}
	return process_running(cmdline) == running;
}

static void test_executor__sweep(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	static const char *const cmdline[] = { "sleep", "63", NULL };
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char *argv[] = { "sleep", "63", NULL };
		sw_exec_spec s = base_spec(f, argv);
		s.on_output = NULL;
		sw_exec_result res;
		sw_error *e = NULL;
		int r = sw_exec_container_run(&res, &s, &e);
		_exit(r < 0 ? 2 : 0);
	}
	if (!wait_for(cmdline, true, 15000)) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		fail_msg("the container's sleep never started");
	}
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_int_equal(waitpid(child, NULL, 0), child);

	/* what the dead owner left: a box with a mount, runtime state, the sleep */
	cleanup_free char *real = realpath(f->tmp, NULL);
	cleanup_strv char **mounts = NULL;
	sw_error *e = NULL;
	assert_int_equal(sw_fs_mounts_under(&mounts, real, &e), 0);
	assert_non_null(mounts[0]);
	assert_true(process_running(cmdline));

	/* a live owner's overlay is not touched */
	char *mine = NULL;
	const char *lowers[] = { g_lower };
	cleanup_free char *up2 = join(f->tmp, "upper-live");
	assert_int_equal(sw_exec_overlay_mount(&mine, f->state, lowers, 1, up2, &e), 0);

	unsigned removed = 0;
	if (sw_exec_sweep(&removed, f->state, g_runtime, &e) < 0)
		fail_msg("sweep: %s", sw_error_msg(e));
	assert_int_equal(removed, 1);
	assert_true(wait_for(cmdline, false, 3000));
	cleanup_free char *victim = join(mine, "etc/victim");
	assert_true(exists(victim));
	assert_int_equal(sw_exec_overlay_unmount(mine, &e), 0);
	free(mine);

	/* a second sweep has nothing to do */
	assert_int_equal(sw_exec_sweep(&removed, f->state, g_runtime, &e), 0);
	assert_int_equal(removed, 0);
	assert_clean(f);
}

static void test_executor__sweep_orphan_runtime_state(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	static const char *const cmdline[] = { "sleep", "64", NULL };
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char *argv[] = { "sleep", "64", NULL };
		sw_exec_spec s = base_spec(f, argv);
		s.on_output = NULL;
		sw_exec_result res;
		sw_error *e = NULL;
		_exit(sw_exec_container_run(&res, &s, &e) < 0 ? 2 : 0);
	}
	if (!wait_for(cmdline, true, 15000)) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		fail_msg("the container's sleep never started");
	}
	assert_int_equal(kill(child, SIGKILL), 0);
	assert_int_equal(waitpid(child, NULL, 0), child);

	/* lose the box (as if a crash came between its removal and the runtime's delete) */
	cleanup_free char *real = realpath(f->state, NULL);
	cleanup_free char *exec = join(real, "exec");
	DIR *d = opendir(exec);
	assert_non_null(d);
	cleanup_free char *box = NULL;
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		if (strncmp(de->d_name, "test-", 5) == 0)
			box = join(exec, de->d_name);
	closedir(d);
	assert_non_null(box);
	cleanup_free char *label = join(box, "owner");
	cleanup_free char *text = read_text(label);
	sw_exec__owner o;
	sw_error *e = NULL;
	assert_int_equal(sw_exec__owner_parse(&o, text, &e), 0);
	assert_int_equal(sw_exec__unmount_under(box, &e), 0);
	assert_int_equal(sw_exec__workdir_remove(o.workdir, &e), 0);
	sw_exec__owner_clear(&o);
	assert_int_equal(sw_fs_rm_rf(box, &e), 0);
	assert_true(process_running(cmdline));

	unsigned removed = 0;
	if (sw_exec_sweep(&removed, f->state, g_runtime, &e) < 0)
		fail_msg("sweep: %s", sw_error_msg(e));
	assert_int_equal(removed, 1);
	assert_true(wait_for(cmdline, false, 3000));
	assert_clean(f);
}

static void test_executor__sweep_recycled_pid(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	/* a box labelled with this process's pid but another start time: a recycled pid */
	char *mp = NULL;
	sw_error *e = NULL;
	const char *lowers[] = { g_lower };
	assert_int_equal(sw_exec_overlay_mount(&mp, f->state, lowers, 1, f->upper, &e), 0);
	cleanup_free char *dir = sw_xstrndup(mp, strlen(mp) - strlen("/rootfs"));
	cleanup_free char *label = join(dir, "owner");
	cleanup_free char *text = read_text(label);
	sw_exec__owner o;
	assert_int_equal(sw_exec__owner_parse(&o, text, &e), 0);
	cleanup_free char *forged = sw_xasprintf("pid=%d\nstart=%llu\nworkdir=%s\n", (int)getpid(),
	                                         o.start + 12345, o.workdir);
	sw_exec__owner_clear(&o);
	write_file(label, forged);

	unsigned removed = 0;
	if (sw_exec_sweep(&removed, f->state, g_runtime, &e) < 0)
		fail_msg("sweep: %s", sw_error_msg(e));
	assert_int_equal(removed, 1);
	assert_false(exists(dir));
	free(mp);
	assert_clean(f);
}

/* ---------------------------------------------------------------- overhead */

static void test_executor__overhead(void **state)
{
	NEED_CONTAINERS();
	fixture *f = *state;
	char *argv[] = { "/bin/true", NULL };
	sw_exec_spec s = base_spec(f, argv);
	sw_exec_result res;
	run_ok(&res, &s); /* warm up */
	enum { N = 20 };
	int64_t times[N];
	for (int i = 0; i < N; i++) {
		int64_t t0 = sw_exec__now_ms();
		run_ok(&res, &s);
		times[i] = sw_exec__now_ms() - t0;
		assert_int_equal(res.exit_code, 0);
	}
	int64_t sum = 0, min = times[0], max = times[0];
	for (int i = 0; i < N; i++) {
		sum += times[i];
		min = times[i] < min ? times[i] : min;
		max = times[i] > max ? times[i] : max;
	}
	print_message("%s: /bin/true in a busybox container: mean %lld ms, min %lld, max %lld "
	              "(%d runs)\n",
	              g_runtime, (long long)(sum / N), (long long)min, (long long)max, N);
	assert_true(sum / N < 2000);
	assert_clean(f);
}

/* ---------------------------------------------------------------- groups */

static int group_setup(void **state, const char *runtime)
{
	(void)state;
	g_runtime = runtime;
	g_can_run = false;
	if (geteuid() != 0 || access("/bin/busybox", X_OK) != 0 || !have_program(runtime))
		return 0;
	sw_error *e = NULL;
	if (!g_base) {
		if (sw_fs_mkdtemp(&g_base, NULL, "sw-test-exec-lower-", &e) < 0) {
			fprintf(stderr, "%s\n", sw_error_msg(e));
			sw_error_free(e);
			return -1;
		}
		g_lower = join(g_base, "busybox");
		if (make_busybox_rootfs(g_lower) < 0)
			return -1;
	}
	g_can_run = true;
	return 0;
}

static int group_setup_runc(void **state)
{
	return group_setup(state, "runc");
}

static int group_setup_crun(void **state)
{
	return group_setup(state, "crun");
}

#define T(name) cmocka_unit_test_setup_teardown(test_executor__##name, setup, teardown)
#define EXEC_TESTS                                                                             \
	T(output_streams), T(large_output), T(exit_codes), T(env_cwd), T(users),               \
	        T(upper_and_whiteouts), T(network), T(mounts), T(readonly_rootfs), T(timeout), \
	        T(cancel), T(limits), T(kill_while_starting), T(errors), T(sweep),             \
	        T(sweep_orphan_runtime_state), T(overhead)

/* Pods (tests/unit/test_executor_pod.c). */
int test_executor_pod_groups(void);
int test_executor_docker_run(void);

int main(void)
{
	/* SW_TEST_GROUP=docker: only the docker backend's group (test_docker_backend.sh) */
	const char *only = getenv("SW_TEST_GROUP");
	if (only && strcmp(only, "docker") == 0)
		return test_executor_docker_run();
	if (only && strcmp(only, "pods") == 0)
		return test_executor_pod_groups();
	const struct CMUnitTest basic[] = {
		cmocka_unit_test(test_executor__user_resolve),
		cmocka_unit_test(test_executor__user_resolve_read_error),
		cmocka_unit_test(test_executor__spec),
		cmocka_unit_test(test_executor__owner_label),
	};
	const struct CMUnitTest runc_tests[] = {
		EXEC_TESTS,
		T(default_state_dir),
		T(overlay_mount),
		T(overlay_many_lowers),
		T(sweep_recycled_pid),
	};
	const struct CMUnitTest crun_tests[] = { EXEC_TESTS };
	int failed = cmocka_run_group_tests_name("executor", basic, NULL, NULL);
	failed += cmocka_run_group_tests_name("executor_runc", runc_tests, group_setup_runc, NULL);
	failed += cmocka_run_group_tests_name("executor_crun", crun_tests, group_setup_crun, NULL);
	failed += test_executor_pod_groups();
	failed += test_executor_docker_run();
	if (g_base) {
		sw_error *e = NULL;
		if (sw_fs_rm_rf(g_base, &e) < 0) {
			fprintf(stderr, "%s\n", sw_error_msg(e));
			sw_error_free(e);
		}
		free(g_base);
		free(g_lower);
	}
	return failed;
}
