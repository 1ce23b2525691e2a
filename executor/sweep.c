/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sweep: what slipway processes that died (SIGKILL, a crash, a power cut) left under
 * STATE/exec. A box whose owner label names a process that no longer runs (its pid gone, or
 * reused by a process with another start time) gets its runtime container killed and deleted,
 * everything mounted under it unmounted (deepest first, detached when busy), its overlay work
 * folder and the box removed. Then runtime state under STATE/exec/runtime/NAME without a box is
 * an orphan too (a box always exists before its runtime state and outlives it). Boxes of live
 * owners, and runtime roots elsewhere, are never touched. Last, the pods' network namespaces
 * under STATE/exec/netns/ whose owners are gone go too, with their slirp4netns processes
 * (netns.c). Sweeps are serialised by a lock on the STATE/exec folder itself.
 */
#include "executor/executor_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

/* A box without a readable label is taken as abandoned only after this long. */
#define UNLABELLED_GRACE_S 60

/* Whether `root` is a runtime root of this state folder (STATE/exec/runtime/<name>). */
static bool root_is_ours(const char *exec_dir, const char *root)
{
	cleanup_free char *base = sw_path_join(exec_dir, SW_EXEC__RUNTIME_DIR);
	size_t n = strlen(base);
	return strncmp(root, base, n) == 0 && root[n] == '/' && root[n + 1] &&
	       !strchr(root + n + 1, '/') && strcmp(root + n + 1, "..") != 0 &&
	       strcmp(root + n + 1, ".") != 0;
}

static int sweep_box(bool *swept, const char *exec_dir, const char *name, sw_error **err)
{
	*swept = false;
	cleanup_free char *dir = sw_path_join(exec_dir, name);
	cleanup_free char *label_path = sw_path_join(dir, SW_EXEC__OWNER_FILE);
	cleanup_free char *text = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	sw_exec__owner owner = { 0 };
	bool labelled = sw_fs_read_file(&text, &len, label_path, 64 * 1024, &e) == 0 &&
	                sw_exec__owner_parse(&owner, text, &e) == 0;
	sw_error_free(e);
	if (labelled && sw_exec__owner_alive(&owner)) {
		sw_exec__owner_clear(&owner);
		return 0;
	}
	if (!labelled) {
		/* a box being made this instant has no label yet: leave young ones alone */
		struct stat st;
		if (stat(dir, &st) < 0 || time(NULL) - st.st_mtime < UNLABELLED_GRACE_S)
			return 0;
	}
	SW_LOG(SW_LOG_DEBUG, "sweep: '%s' was left by process %d", dir, (int)owner.pid);
	int r = 0;
	if (owner.runtime && owner.root && root_is_ours(exec_dir, owner.root)) {
		sw_exec__runtime rt;
		sw_exec__runtime_init_known(&rt, owner.runtime, owner.root);
		if (sw_exec__runtime_has(&rt, name)) {
			(void)sw_exec__runtime_kill(&rt, name, "KILL");
			r = sw_exec__runtime_delete(&rt, name, err);
		}
		sw_exec__runtime_clear(&rt);
	}
	if (r == 0) {
		sw_exec__box box = { .dir = steal_pointer(&dir),
			             .dirfd = -1,
			             .workdir = steal_pointer(&owner.workdir) };
		r = sw_exec__box_destroy(&box, err);
		sw_exec__box_clear(&box);
	}
	sw_exec__owner_clear(&owner);
	if (r < 0)
		return sw_error_wrap(err, "sweep '%s'", name);
	*swept = true;
	return 0;
}

/* Runtime state under one root with no box beside it: kill and delete it. */
static int sweep_root(unsigned *count, const char *exec_dir, const char *root_name,
                      const char *runtime, sw_error **err)
{
	cleanup_free char *rootdir = sw_path_join(exec_dir, SW_EXEC__RUNTIME_DIR);
	cleanup_free char *root = sw_path_join(rootdir, root_name);
	/* the runtime of a root is the executable of that name (how the root was named) */
	const char *rbase = runtime ? strrchr(runtime, '/') : NULL;
	rbase = rbase ? rbase + 1 : runtime;
	sw_exec__runtime rt;
	sw_error *e = NULL;
	if (sw_exec__runtime_init(&rt,
	                          runtime && strcmp(rbase, root_name) == 0 ? runtime : root_name,
	                          exec_dir, &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "sweep: no runtime for '%s': %s", root, sw_error_msg(e));
		sw_error_free(e);
		return 0;
	}
	DIR *d = opendir(root);
	if (!d) {
		sw_exec__runtime_clear(&rt);
		return errno == ENOENT ? 0 : sw_error_os(err, errno, "sweep: read '%s'", root);
	}
	int r = 0;
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		if (de->d_name[0] == '.')
			continue;
		/* checked now, not from an earlier listing: a box precedes its runtime state */
		struct stat st;
		cleanup_free char *box = sw_path_join(exec_dir, de->d_name);
		if (lstat(box, &st) == 0 || errno != ENOENT)
			continue;
		SW_LOG(SW_LOG_DEBUG, "sweep: runtime state of %s has no box", de->d_name);
		(void)sw_exec__runtime_kill(&rt, de->d_name, "KILL");
		if (sw_exec__runtime_delete(&rt, de->d_name, err) < 0) {
			r = SW_ERR_GENERIC;
			break;
		}
		(*count)++;
	}
	closedir(d);
	sw_exec__runtime_clear(&rt);
	return r;
}

int sw_exec_sweep(unsigned *removed, const char *state_dir, const char *runtime, sw_error **err)
{
	if (removed)
		*removed = 0;
	cleanup_free char *exec_dir = NULL;
	int r = sw_exec__exec_dir(&exec_dir, state_dir, err);
	if (r < 0)
		return r;
	cleanup_close int lockfd = open(exec_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lockfd < 0)
		return sw_error_os(err, errno, "sweep: open '%s'", exec_dir);
	while (flock(lockfd, LOCK_EX) < 0) {
		if (errno != EINTR)
			return sw_error_os(err, errno, "sweep: lock '%s'", exec_dir);
	}
	unsigned count = 0;
	int first_err = 0;
	DIR *d = opendir(exec_dir);
	if (!d)
		return sw_error_os(err, errno, "sweep: read '%s'", exec_dir);
	cleanup_strv char **names = NULL;
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		if (de->d_name[0] == '.' || strcmp(de->d_name, SW_EXEC__RUNTIME_DIR) == 0 ||
		    strcmp(de->d_name, "netns") == 0)
			continue;
		sw_strv_push(&names, de->d_name);
	}
	closedir(d);
	for (size_t i = 0; names && names[i]; i++) {
		struct stat st;
		cleanup_free char *p = sw_path_join(exec_dir, names[i]);
		if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		bool swept = false;
		sw_error *e = NULL;
		r = sweep_box(&swept, exec_dir, names[i], &e);
		if (r < 0) {
			/* go on with the others; report the first failure */
			SW_LOG(SW_LOG_WARN, "%s", sw_error_msg(e));
			if (!first_err) {
				first_err = r;
				if (err && !*err)
					*err = steal_pointer(&e);
			}
			sw_error_free(e);
			continue;
		}
		count += swept;
	}

	cleanup_free char *rootdir = sw_path_join(exec_dir, SW_EXEC__RUNTIME_DIR);
	DIR *rd = opendir(rootdir);
	if (rd) {
		cleanup_strv char **roots = NULL;
		for (struct dirent *de; (de = readdir(rd)) != NULL;)
			if (de->d_name[0] != '.')
				sw_strv_push(&roots, de->d_name);
		closedir(rd);
		for (size_t i = 0; roots && roots[i]; i++) {
			sw_error *e = NULL;
			r = sweep_root(&count, exec_dir, roots[i], runtime, &e);
			if (r < 0 && !first_err) {
				first_err = r;
				if (err && !*err)
					*err = steal_pointer(&e);
			}
			sw_error_free(e);
		}
	}
	/* the pods' network namespaces, after the containers that joined them */
	unsigned n_ns = 0;
	sw_error *e = NULL;
	r = sw_exec__netns_sweep(&n_ns, exec_dir, &e);
	if (r < 0 && !first_err) {
		first_err = r;
		if (err && !*err)
			*err = steal_pointer(&e);
	}
	sw_error_free(e);
	if (n_ns)
		SW_LOG(SW_LOG_DEBUG, "sweep: %u network namespaces removed", n_ns);
	if (removed)
		*removed = count;
	return first_err;
}
