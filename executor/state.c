/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The executor's state on disk: STATE/exec/<id>/ "boxes", one per container or host-side
 * overlay, each labelled with an owner file (the slipway pid and its start time from
 * /proc/PID/stat, so a recycled pid is not taken for the owner, plus the runtime and the work
 * folder to clean), and the mount helpers that read /proc/self/mountinfo to unmount whatever
 * is under a folder, deepest first, before anything there is removed.
 */
#include "executor/executor_internal.h"
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

/* ---------------------------------------------------------------- folders */

int sw_exec__exec_dir(char **out, const char *state_dir, sw_error **err)
{
	*out = NULL;
	cleanup_free char *state = NULL;
	if (state_dir && *state_dir) {
		state = sw_xstrdup(state_dir);
	} else {
		/* the parent of the default content store is the default state folder */
		cleanup_free char *store = sw_oci_store_default_dir();
		char *slash = strrchr(store, '/');
		state = slash && slash != store ? sw_xstrndup(store, (size_t)(slash - store))
		                                : sw_xstrdup("/");
	}
	cleanup_free char *exec = sw_path_join(state, "exec");
	int r = sw_fs_mkdir_p(exec, 0700, err);
	if (r < 0)
		return sw_error_wrap(err, "executor state folder");
	char *real = realpath(exec, NULL);
	if (!real)
		return sw_error_os(err, errno, "executor state folder '%s'", exec);
	*out = real;
	return 0;
}

/* ---------------------------------------------------------------- owner labels */

void sw_exec__owner_clear(sw_exec__owner *o)
{
	free(o->runtime);
	free(o->root);
	free(o->workdir);
	memset(o, 0, sizeof(*o));
}

int sw_exec__owner_parse(sw_exec__owner *out, const char *text, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	bool have_pid = false, have_start = false;
	const char *line = text;
	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		const char *eq = memchr(line, '=', len);
		if (eq) {
			size_t klen = (size_t)(eq - line);
			cleanup_free char *val = sw_xstrndup(eq + 1, len - klen - 1);
			char *end = NULL;
			if (klen == 3 && memcmp(line, "pid", 3) == 0) {
				long v = strtol(val, &end, 10);
				if (*val && !*end && v > 0 && v <= INT_MAX) {
					out->pid = (pid_t)v;
					have_pid = true;
				}
			} else if (klen == 5 && memcmp(line, "start", 5) == 0) {
				unsigned long long v = strtoull(val, &end, 10);
				if (*val && !*end) {
					out->start = v;
					have_start = true;
				}
			} else if (klen == 7 && memcmp(line, "runtime", 7) == 0 && *val) {
				free(out->runtime);
				out->runtime = steal_pointer(&val);
			} else if (klen == 4 && memcmp(line, "root", 4) == 0 && *val) {
				free(out->root);
				out->root = steal_pointer(&val);
			} else if (klen == 7 && memcmp(line, "workdir", 7) == 0 && *val) {
				free(out->workdir);
				out->workdir = steal_pointer(&val);
			}
		}
		line = nl ? nl + 1 : NULL;
	}
	if (!have_pid || !have_start) {
		sw_exec__owner_clear(out);
		return sw_error_set(err, SW_ERR_INVALID, "owner label without pid and start time");
	}
	return 0;
}

bool sw_exec__owner_alive(const sw_exec__owner *o)
{
	unsigned long long start = 0;
	int r = sw_proc_starttime(&start, o->pid);
	if (r == -ENOENT || r == -ESRCH)
		return false;
	if (r < 0)
		return true; /* cannot tell: never touch what may be alive */
	return start == o->start;
}

/* ---------------------------------------------------------------- boxes */

static int write_all_at(int dirfd, const char *name, int flags, const char *data, sw_error **err)
{
	int fd = openat(dirfd, name, flags | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return sw_error_os(err, errno, "write '%s'", name);
	int r = sw_fs_write_all(fd, data, strlen(data), err);
	close(fd);
	return r;
}

static bool prefix_ok(const char *prefix)
{
	size_t n = strlen(prefix);
	if (n == 0 || n > 40)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = prefix[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return prefix[0] != '.';
}

void sw_exec__box_clear(sw_exec__box *b)
{
	if (b->dirfd >= 0)
		close(b->dirfd);
	free(b->id);
	free(b->dir);
	free(b->rootfs);
	free(b->workdir);
	memset(b, 0, sizeof(*b));
	b->dirfd = -1;
}

int sw_exec__box_create(sw_exec__box *out, const char *exec_dir, const char *prefix,
                        const char *runtime_path, const char *runtime_root, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	out->dirfd = -1;
	if (!prefix || !*prefix)
		prefix = "slipway";
	if (!prefix_ok(prefix))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "container id prefix '%s': use up to 40 letters, digits, '_', "
		                    "'-' or '.'",
		                    prefix);
	unsigned long long start = 0;
	int sr = sw_proc_starttime(&start, getpid());
	if (sr < 0)
		return sw_error_os(err, -sr, "read the start time of this process");

	for (int attempt = 0;; attempt++) {
		uint8_t rnd[8];
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return sw_error_os(err, errno, "getrandom");
		char hex[17];
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
		char *id = sw_xasprintf("%s-%s", prefix, hex);
		char *dir = sw_path_join(exec_dir, id);
		if (mkdir(dir, 0700) == 0) {
			out->id = id;
			out->dir = dir;
			break;
		}
		int e = errno;
		free(id);
		if (e != EEXIST || attempt >= 8) {
			int r = sw_error_os(err, e, "create container folder '%s'", dir);
			free(dir);
			return r;
		}
		free(dir);
	}
	out->dirfd = open(out->dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (out->dirfd < 0) {
		int r = sw_error_os(err, errno, "open '%s'", out->dir);
		(void)rmdir(out->dir);
		sw_exec__box_clear(out);
		return r;
	}
	cleanup_free char *label =
	        runtime_path ? sw_xasprintf("pid=%d\nstart=%llu\nruntime=%s\nroot=%s\n",
	                                    (int)getpid(), start, runtime_path, runtime_root)
	                     : sw_xasprintf("pid=%d\nstart=%llu\n", (int)getpid(), start);
	int r = write_all_at(out->dirfd, SW_EXEC__OWNER_FILE, O_CREAT | O_EXCL, label, err);
	if (r == 0 && mkdirat(out->dirfd, SW_EXEC__ROOTFS_DIR, 0755) < 0)
		r = sw_error_os(err, errno, "create '%s/%s'", out->dir, SW_EXEC__ROOTFS_DIR);
	if (r < 0) {
		sw_error *e2 = NULL;
		if (sw_fs_rm_rf(out->dir, &e2) < 0)
			sw_error_free(e2);
		sw_exec__box_clear(out);
		return r;
	}
	out->rootfs = sw_path_join(out->dir, SW_EXEC__ROOTFS_DIR);
	return 0;
}

int sw_exec__box_label(sw_exec__box *b, const char *key, const char *value, sw_error **err)
{
	if (strchr(value, '\n'))
		return sw_error_set(err, SW_ERR_INVALID, "label %s: a newline in '%s'", key, value);
	cleanup_free char *line = sw_xasprintf("%s=%s\n", key, value);
	return write_all_at(b->dirfd, SW_EXEC__OWNER_FILE, O_APPEND, line, err);
}

int sw_exec__workdir_remove(const char *workdir, sw_error **err)
{
	if (!workdir || !*workdir)
		return 0;
	const char *base = strrchr(workdir, '/');
	base = base ? base + 1 : workdir;
	const char *tag = strstr(base, "." SW_EXEC__WORK_PREFIX);
	if (workdir[0] != '/' || !tag || strspn(base, "0123456789-") != (size_t)(tag - base))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "refusing to remove '%s': not a slipway work folder", workdir);
	cleanup_strv char **mounts = NULL;
	int r = sw_fs_mounts_under(&mounts, workdir, err);
	if (r < 0)
		return r;
	if (mounts[0])
		return sw_error_set(err, SW_ERR_GENERIC, "work folder '%s' has mounts under it",
		                    workdir);
	return sw_fs_rm_rf(workdir, err);
}

int sw_exec__box_destroy(sw_exec__box *b, sw_error **err)
{
	if (!b->dir)
		return 0;
	int r = sw_exec__unmount_under(b->dir, err);
	if (r < 0)
		return sw_error_wrap(err, "clean up '%s'", b->dir);
	b->mounted = false;
	if (b->workdir) {
		r = sw_exec__workdir_remove(b->workdir, err);
		if (r < 0)
			return r;
		free(b->workdir);
		b->workdir = NULL;
	}
	/* nothing is mounted below the folder any more (checked above): remove it */
	if (b->dirfd >= 0) {
		close(b->dirfd);
		b->dirfd = -1;
	}
	r = sw_fs_rm_rf(b->dir, err);
	if (r < 0)
		return r;
	free(b->dir);
	b->dir = NULL;
	return 0;
}

/* ---------------------------------------------------------------- mounts */

int sw_exec__unmount_under(const char *prefix, sw_error **err)
{
	for (int pass = 0; pass < 3; pass++) {
		cleanup_strv char **mounts = NULL;
		int r = sw_fs_mounts_under(&mounts, prefix, err);
		if (r < 0)
			return r;
		if (!mounts[0])
			return 0;
		for (size_t i = 0; mounts[i]; i++) {
			const char *mp = mounts[i];
			int tries = 0;
			while (umount2(mp, UMOUNT_NOFOLLOW) < 0) {
				if (errno == EINVAL || errno == ENOENT)
					break; /* not (any more) a mount point */
				if (errno != EBUSY)
					return sw_error_os(err, errno, "unmount '%s'", mp);
				if (++tries < 5) {
					struct timespec ts = { 0, 5 * 1000 * 1000 };
					nanosleep(&ts, NULL);
					continue;
				}
				SW_LOG(SW_LOG_DEBUG, "'%s' is busy: detaching it", mp);
				if (umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 &&
				    errno != EINVAL && errno != ENOENT)
					return sw_error_os(err, errno, "detach '%s'", mp);
				break;
			}
		}
	}
	cleanup_strv char **left = NULL;
	int r = sw_fs_mounts_under(&left, prefix, err);
	if (r < 0)
		return r;
	if (left[0])
		return sw_error_set(err, SW_ERR_GENERIC, "'%s' is still mounted", left[0]);
	return 0;
}
