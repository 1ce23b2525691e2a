/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Root filesystems over overlayfs. Lower folders (top first) are stacked under a fresh upper
 * folder whose content, after a step, is exactly the step's layer diff in overlay format. So the
 * mount uses index=off (no inode index tying the upper to these lowers), metacopy=off (a changed
 * file is copied up whole, never as metadata only) and redirect_dir=off (renaming a lower folder
 * copies it instead of leaving a redirect xattr that no layer tar can express); xino keeps the
 * kernel's default. With an upper folder the mount is also `volatile`: unmounting it does not
 * sync the upper's whole filesystem (~10 ms per container on an idle disk, far more on a busy
 * one). The upper is scratch until the cache adopts it as a snapshot, and the cache flushes a
 * snapshot (syncfs) before renaming it in. The kernel's new mount API adds lowers one at a time
 * ("lowerdir+", Linux 6.8), so any number of layers fits; older kernels get the classic option
 * string, which must fit in a page. Without lowers the upper folder alone is bind-mounted (a
 * scratch rootfs).
 */
#include "executor/executor_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

bool sw_exec__overlay_no_new_api;

static const char *const overlay_opts[][2] = {
	{ "redirect_dir", "off" },
	{ "metacopy", "off" },
	{ "index", "off" },
};

/* The messages the kernel left in an fs context ("e overlayfs: ..."), joined by "; ". */
static char *fs_context_log(int fd)
{
	sw_buf b = SW_BUF_INIT(4096);
	char msg[512];
	for (int i = 0; i < 16; i++) {
		ssize_t n = read(fd, msg, sizeof(msg) - 1);
		if (n <= 0)
			break;
		msg[n] = '\0';
		const char *m = msg;
		if (n > 2 && msg[1] == ' ')
			m += 2; /* the "e ", "w ", "i " level tag */
		if ((b.len && sw_buf_puts(&b, "; ", NULL) < 0) || sw_buf_puts(&b, m, NULL) < 0)
			break;
	}
	return b.len ? sw_buf_steal(&b, NULL) : (sw_buf_free(&b), NULL);
}

/* 1: mounted; 0: the kernel lacks the new API or "lowerdir+" (use the classic string). */
static int mount_new_api(const char *target, const char *const *lowers, size_t n_lower,
                         const char *upper, const char *workdir, const char *empty, sw_error **err)
{
	if (__atomic_load_n(&sw_exec__overlay_no_new_api, __ATOMIC_RELAXED))
		return 0;
	int fd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOSYS || errno == EPERM)
			return 0;
		return sw_error_os(err, errno, "overlay mount at '%s': fsopen", target);
	}
	int r = 0;
	const char *what = NULL, *arg = NULL;
	for (size_t i = 0; i < n_lower + (empty ? 1 : 0); i++) {
		const char *l = i < n_lower ? lowers[i] : empty;
		if (fsconfig(fd, FSCONFIG_SET_STRING, "lowerdir+", l, 0) < 0) {
			if (i == 0 && errno == EINVAL) {
				/* an old kernel: no "lowerdir+" (read the log to drop it) */
				free(fs_context_log(fd));
				close(fd);
				return 0;
			}
			what = "lower folder", arg = l;
			goto fail;
		}
	}
	if (upper) {
		if (fsconfig(fd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0) {
			what = "upper folder", arg = upper;
			goto fail;
		}
		if (fsconfig(fd, FSCONFIG_SET_STRING, "workdir", workdir, 0) < 0) {
			what = "work folder", arg = workdir;
			goto fail;
		}
	}
	for (size_t i = 0; i < SW_ARRAY_SIZE(overlay_opts); i++) {
		if (fsconfig(fd, FSCONFIG_SET_STRING, overlay_opts[i][0], overlay_opts[i][1], 0) <
		    0) {
			what = "option", arg = overlay_opts[i][0];
			goto fail;
		}
	}
	if (upper && fsconfig(fd, FSCONFIG_SET_FLAG, "volatile", NULL, 0) < 0) {
		what = "option", arg = "volatile";
		goto fail;
	}
	if (fsconfig(fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		what = "create", arg = upper ? upper : lowers[0];
		goto fail;
	}
	int mfd = fsmount(fd, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0) {
		what = "fsmount", arg = target;
		goto fail;
	}
	if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
		int e = errno;
		close(mfd);
		close(fd);
		return sw_error_os(err, e, "overlay mount at '%s'", target);
	}
	close(mfd);
	close(fd);
	return 1;

fail:;
	int e = errno;
	cleanup_free char *log = fs_context_log(fd);
	close(fd);
	r = sw_error_os(err, e, "overlay mount at '%s': %s '%s'%s%s", target, what, arg,
	                log ? ": " : "", log ? log : "");
	return r;
}

/* Escape ':' ',' and '\' for the classic lowerdir= option string. */
static int append_escaped(sw_buf *b, const char *s)
{
	for (; *s; s++) {
		if ((*s == ':' || *s == ',' || *s == '\\') && sw_buf_append(b, "\\", 1, NULL) < 0)
			return -1;
		if (sw_buf_append(b, s, 1, NULL) < 0)
			return -1;
	}
	return 0;
}

static int mount_classic(const char *target, const char *const *lowers, size_t n_lower,
                         const char *upper, const char *workdir, const char *empty, sw_error **err)
{
	long page = sysconf(_SC_PAGESIZE);
	sw_buf b = SW_BUF_INIT((size_t)(page > 0 ? page : 4096) - 1);
	int r = 0;
	bool ok = sw_buf_puts(&b, "lowerdir=", NULL) == 0;
	for (size_t i = 0; ok && i < n_lower + (empty ? 1 : 0); i++) {
		const char *l = i < n_lower ? lowers[i] : empty;
		ok = (i == 0 || sw_buf_puts(&b, ":", NULL) == 0) && append_escaped(&b, l) == 0;
	}
	if (ok && upper)
		ok = sw_buf_puts(&b, ",upperdir=", NULL) == 0 && append_escaped(&b, upper) == 0 &&
		     sw_buf_puts(&b, ",workdir=", NULL) == 0 && append_escaped(&b, workdir) == 0;
	for (size_t i = 0; ok && i < SW_ARRAY_SIZE(overlay_opts); i++)
		ok = sw_buf_printf(&b, NULL, ",%s=%s", overlay_opts[i][0], overlay_opts[i][1]) == 0;
	if (ok && upper)
		ok = sw_buf_puts(&b, ",volatile", NULL) == 0;
	if (!ok) {
		r = sw_error_set(
		        err, SW_ERR_INVALID,
		        "overlay mount at '%s': %zu lower folders do not fit in one page of "
		        "mount options (this kernel has no \"lowerdir+\")",
		        target, n_lower);
		goto out;
	}
	if (mount("overlay", target, "overlay", 0, b.data) < 0)
		r = sw_error_os(err, errno, "overlay mount at '%s' (%s)", target, b.data);
out:
	sw_buf_free(&b);
	return r;
}

int sw_exec__overlay_mount_at(const char *target, const char *const *lowers, size_t n_lower,
                              const char *upper, const char *workdir, const char *empty,
                              sw_error **err)
{
	if (n_lower == 0) {
		if (!upper)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "rootfs at '%s': neither lower nor upper folders",
			                    target);
		if (mount(upper, target, NULL, MS_BIND, NULL) < 0)
			return sw_error_os(err, errno, "bind mount '%s' at '%s'", upper, target);
		return 0;
	}
	for (size_t i = 0; i < n_lower; i++)
		if (!lowers[i] || lowers[i][0] != '/')
			return sw_error_set(err, SW_ERR_INVALID,
			                    "overlay lower folder '%s' is not an absolute path",
			                    lowers[i] ? lowers[i] : "(null)");
	if (upper && !workdir)
		return sw_error_set(err, SW_ERR_INVALID, "overlay upper without a work folder");
	/* overlayfs wants two lowers when there is no upper: an empty one goes below */
	const char *bottom = !upper && n_lower == 1 ? empty : NULL;
	if (!upper && n_lower == 1 && !empty)
		return sw_error_set(err, SW_ERR_INVALID, "read-only overlay needs an empty folder");
	int r = mount_new_api(target, lowers, n_lower, upper, workdir, bottom, err);
	if (r != 0)
		return r < 0 ? r : 0;
	return mount_classic(target, lowers, n_lower, upper, workdir, bottom, err);
}

int sw_exec__workdir_create(char **out, const char *upper, sw_error **err)
{
	*out = NULL;
	cleanup_free char *real = realpath(upper, NULL);
	if (!real)
		return sw_error_os(err, errno, "overlay upper folder '%s'", upper);
	char *slash = strrchr(real, '/');
	if (!slash || slash[1] == '\0')
		return sw_error_set(err, SW_ERR_INVALID, "overlay upper folder '%s' has no parent",
		                    upper);
	const char *parent = slash == real ? "/" : (*slash = '\0', real);
	/* "PID-START." first: the owner tag that sweeps of the folder it lands in (the cache's
	 * tmp/) read, so a live container's work folder is never taken for an abandoned one */
	unsigned long long start = 0;
	(void)sw_proc_starttime(&start, getpid());
	cleanup_free char *prefix =
	        sw_xasprintf("%d-%llu.%s", (int)getpid(), start, SW_EXEC__WORK_PREFIX);
	return sw_fs_mkdtemp(out, parent, prefix, err);
}

/* ---------------------------------------------------------------- public host-side mounts */

int sw_exec_overlay_mount(char **out_mountpoint, const char *state_dir,
                          const char *const *lower_dirs, size_t n_lower, const char *upper_dir,
                          sw_error **err)
{
	*out_mountpoint = NULL;
	if (n_lower == 0 && !upper_dir)
		return sw_error_set(err, SW_ERR_INVALID, "overlay mount: no folders");
	cleanup_free char *exec_dir = NULL;
	int r = sw_exec__exec_dir(&exec_dir, state_dir, err);
	if (r < 0)
		return r;
	sw_exec__box box;
	r = sw_exec__box_create(&box, exec_dir, "overlay", NULL, NULL, err);
	if (r < 0)
		return r;
	cleanup_free char *empty = NULL;
	if (upper_dir) {
		r = sw_fs_mkdir_p(upper_dir, 0755, err);
		if (r == 0 && n_lower > 0)
			r = sw_exec__workdir_create(&box.workdir, upper_dir, err);
		if (r == 0 && box.workdir)
			r = sw_exec__box_label(&box, "workdir", box.workdir, err);
	} else if (n_lower == 1) {
		empty = sw_path_join(box.dir, "empty");
		if (mkdir(empty, 0755) < 0)
			r = sw_error_os(err, errno, "create '%s'", empty);
	}
	if (r == 0)
		r = sw_exec__overlay_mount_at(box.rootfs, lower_dirs, n_lower, upper_dir,
		                              box.workdir, empty, err);
	if (r < 0) {
		sw_error *e2 = NULL;
		if (sw_exec__box_destroy(&box, &e2) < 0) {
			SW_LOG(SW_LOG_WARN, "%s", sw_error_msg(e2));
			sw_error_free(e2);
		}
		sw_exec__box_clear(&box);
		return r;
	}
	*out_mountpoint = steal_pointer(&box.rootfs);
	sw_exec__box_clear(&box);
	return 0;
}

int sw_exec_overlay_unmount(const char *mountpoint, sw_error **err)
{
	if (!mountpoint || mountpoint[0] != '/')
		return sw_error_set(err, SW_ERR_INVALID, "overlay unmount: '%s' is not absolute",
		                    mountpoint ? mountpoint : "(null)");
	cleanup_free char *mp = sw_path_clean(mountpoint);
	char *slash = strrchr(mp, '/');
	if (!slash || strcmp(slash + 1, SW_EXEC__ROOTFS_DIR) != 0 || slash == mp)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "overlay unmount: '%s' is not a mount point made by "
		                    "sw_exec_overlay_mount",
		                    mountpoint);
	cleanup_free char *dir = sw_xstrndup(mp, (size_t)(slash - mp));
	cleanup_free char *owner_path = sw_path_join(dir, SW_EXEC__OWNER_FILE);
	cleanup_free char *text = NULL;
	size_t len = 0;
	int r = sw_fs_read_file(&text, &len, owner_path, 64 * 1024, err);
	if (r < 0)
		return sw_error_wrap(err, "overlay unmount '%s'", mountpoint);
	sw_exec__owner owner;
	r = sw_exec__owner_parse(&owner, text, err);
	if (r < 0)
		return sw_error_wrap(err, "overlay unmount '%s': %s", mountpoint, owner_path);
	sw_exec__box box = { .dir = steal_pointer(&dir),
		             .dirfd = -1,
		             .workdir = steal_pointer(&owner.workdir) };
	sw_exec__owner_clear(&owner);
	r = sw_exec__box_destroy(&box, err);
	sw_exec__box_clear(&box);
	return r;
}
