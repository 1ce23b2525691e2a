/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Filesystem helpers: atomic file replacement (a temporary file in the same folder, fsync,
 * rename, fsync of the folder; the temporary file never outlives a failure), capped whole-file
 * reads, recursive create, a recursive remove that never follows symlinks and works through
 * read-only folders, and temporary folders. Every descriptor is opened O_CLOEXEC.
 */
#include "common/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define TMP_ATTEMPTS 100

int sw_fs_write_all(int fd, const void *data, size_t len, sw_error **err)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sw_error_os(err, errno, "write");
		}
		if (n == 0)
			return sw_error_os(err, EIO, "write returned 0");
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Six characters from [a-zA-Z0-9] for temporary names. */
static void random_suffix(char out[7])
{
	static const char chars[] =
	        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
	unsigned char rnd[6];
	if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
		             ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)out;
		for (size_t i = 0; i < sizeof(rnd); i++, x >>= 8)
			rnd[i] = (unsigned char)x;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		out[i] = chars[rnd[i] % (sizeof(chars) - 1)];
	out[6] = '\0';
}

/* fsync a folder; filesystems that cannot sync folders (EINVAL) are not an error. */
static int fsync_dir_at(int dirfd, const char *path, const char *display, sw_error **err)
{
	cleanup_close int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open folder '%s'", display);
	if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
		return sw_error_os(err, errno, "fsync folder '%s'", display);
	return 0;
}

int sw_fs_fsync_dir(const char *path, sw_error **err)
{
	return fsync_dir_at(AT_FDCWD, path, path, err);
}

int sw_fs_write_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                          sw_error **err)
{
	if (name == NULL || *name == '\0')
		return sw_error_set(err, SW_ERR_INVALID, "atomic write: empty file name");
	const char *slash = strrchr(name, '/');
	const char *base = slash ? slash + 1 : name;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return sw_error_set(err, SW_ERR_INVALID, "write '%s': not a file name", name);
	/* the folder part, kept with its slash ("/" for files right under the root) */
	cleanup_free char *dir = slash ? sw_xstrndup(name, (size_t)(slash - name) + 1) : NULL;

	cleanup_free char *tmp = NULL;
	cleanup_close int fd = -1;
	for (int i = 0; i < TMP_ATTEMPTS && fd < 0; i++) {
		char sfx[7];
		random_suffix(sfx);
		free(tmp);
		tmp = sw_xasprintf("%s.%.200s.tmp-%s", dir ? dir : "", base, sfx);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0 && errno != EEXIST)
			return sw_error_os(err, errno, "write '%s': create a temporary file", name);
	}
	if (fd < 0)
		return sw_error_os(err, EEXIST, "write '%s': create a temporary file", name);

	int r;
	if (fchmod(fd, mode & 07777) < 0) {
		r = sw_error_os(err, errno, "write '%s': set mode %04o", name,
		                (unsigned)(mode & 07777));
		goto fail;
	}
	r = sw_fs_write_all(fd, data, len, err);
	if (r < 0) {
		sw_error_wrap(err, "write '%s'", name);
		goto fail;
	}
	if (fsync(fd) < 0) {
		r = sw_error_os(err, errno, "write '%s': fsync", name);
		goto fail;
	}
	if (close(steal_fd(&fd)) < 0 && errno != EINTR) {
		r = sw_error_os(err, errno, "write '%s': close", name);
		goto fail;
	}
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		r = sw_error_os(err, errno, "write '%s': rename", name);
		goto fail;
	}
	return fsync_dir_at(dirfd, dir ? dir : ".", dir ? dir : ".", err);

fail:
	unlinkat(dirfd, tmp, 0);
	return r;
}

int sw_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, sw_error **err)
{
	return sw_fs_write_atomic_at(AT_FDCWD, path, data, len, mode, err);
}

int sw_fs_read_file(char **out, size_t *out_len, const char *path, size_t max, sw_error **err)
{
	*out = NULL;
	if (out_len)
		*out_len = 0;
	if (max == 0)
		max = SW_BUF_DEFAULT_MAX;
	cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return sw_error_os(err, errno, "open '%s'", path);
	sw_buf b = SW_BUF_INIT(max);
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			sw_buf_free(&b);
			return sw_error_os(err, e, "read '%s'", path);
		}
		if (n == 0)
			break;
		if (sw_buf_append(&b, chunk, (size_t)n, NULL) < 0) {
			sw_buf_free(&b);
			return sw_error_set(err, SW_ERR_INVALID,
			                    "read '%s': file exceeds the limit of %zu bytes", path,
			                    max);
		}
	}
	*out = sw_buf_steal(&b, out_len);
	return 0;
}

/* Create one folder; an existing folder is fine, anything else in the way is not. */
static int mkdir_one(const char *path, mode_t mode, sw_error **err)
{
	if (mkdir(path, mode) == 0)
		return 0;
	int e = errno;
	struct stat st;
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return 0;
		return sw_error_os(err, ENOTDIR, "create folder '%s'", path);
	}
	return sw_error_os(err, e, "create folder '%s'", path);
}

int sw_fs_mkdir_p(const char *path, mode_t mode, sw_error **err)
{
	if (path == NULL || *path == '\0')
		return sw_error_set(err, SW_ERR_INVALID, "create folder: empty path");
	cleanup_free char *p = sw_xstrdup(path);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/' || s[-1] == '/')
			continue;
		*s = '\0';
		int r = mkdir_one(p, mode, err);
		*s = '/';
		if (r < 0)
			return r;
	}
	return mkdir_one(p, mode, err);
}

/* Remove `name` (relative to dirfd) and everything under it; `display` is its full path. */
static int rm_at(int dirfd, const char *name, const char *display, sw_error **err)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return sw_error_os(err, errno, "remove '%s'", display);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
			return sw_error_os(err, errno, "remove '%s'", display);
		return 0;
	}
	int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	int fd = openat(dirfd, name, flags);
	if (fd < 0 && errno == EACCES) {
		/* a folder we may not read: make it ours to empty (no symlink can be here:
		 * fchmodat does not follow one, and O_NOFOLLOW above refuses one) */
		if (fchmodat(dirfd, name, 0700, 0) == 0)
			fd = openat(dirfd, name, flags);
		else
			errno = EACCES;
	}
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return sw_error_os(err, errno, "open folder '%s'", display);
	}
	/* removing entries needs write and search permission on the folder */
	if ((st.st_mode & 0300) != 0300 && fchmod(fd, (st.st_mode & 07777) | 0700) < 0) {
		int e = errno;
		close(fd);
		return sw_error_os(err, e, "make folder '%s' writable", display);
	}
	int dfd = dup(fd);
	if (dfd < 0) {
		int e = errno;
		close(fd);
		return sw_error_os(err, e, "dup");
	}
	DIR *d = fdopendir(dfd);
	if (!d) {
		int e = errno;
		close(dfd);
		close(fd);
		return sw_error_os(err, e, "read folder '%s'", display);
	}
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				r = sw_error_os(err, errno, "read folder '%s'", display);
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		cleanup_free char *child = sw_xasprintf("%s/%s", display, de->d_name);
		r = rm_at(fd, de->d_name, child, err);
		if (r < 0)
			break;
	}
	closedir(d);
	close(fd);
	if (r < 0)
		return r;
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return sw_error_os(err, errno, "remove folder '%s'", display);
	return 0;
}

int sw_fs_rm_rf(const char *path, sw_error **err)
{
	if (path == NULL || *path == '\0')
		return sw_error_set(err, SW_ERR_INVALID, "remove: empty path");
	/* the last component, trailing slashes aside; "." and ".." are refused like rm does */
	cleanup_free char *p = sw_xstrdup(path);
	size_t len = strlen(p);
	while (len > 1 && p[len - 1] == '/')
		p[--len] = '\0';
	char *slash = strrchr(p, '/');
	const char *base = slash ? slash + 1 : p;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "remove '%s': refusing to remove this path", path);
	const char *parent = ".";
	if (slash == p)
		parent = "/";
	else if (slash)
		*slash = '\0', parent = p;
	cleanup_close int dirfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		if (errno == ENOENT)
			return 0;
		return sw_error_os(err, errno, "remove '%s': open its folder", path);
	}
	cleanup_free char *display =
	        sw_xasprintf("%s%s%s", slash ? parent : "", slash && slash != p ? "/" : "", base);
	return rm_at(dirfd, base, display, err);
}

int sw_fs_mkdtemp(char **out, const char *parent, const char *prefix, sw_error **err)
{
	*out = NULL;
	if (parent == NULL || *parent == '\0')
		parent = sw_fs_tmpdir();
	if (prefix == NULL)
		prefix = "slipway-";
	if (strchr(prefix, '/'))
		return sw_error_set(err, SW_ERR_INVALID, "temporary folder prefix '%s' has a '/'",
		                    prefix);
	char *tmpl = sw_xasprintf("%s%s%sXXXXXX", parent,
	                          parent[strlen(parent) - 1] == '/' ? "" : "/", prefix);
	if (!mkdtemp(tmpl)) {
		int e = errno;
		int r = sw_error_os(err, e, "create a temporary folder '%s'", tmpl);
		free(tmpl);
		return r;
	}
	*out = tmpl;
	return 0;
}

const char *sw_fs_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	return (t && *t) ? t : "/tmp";
}

/* ---------------------------------------------------------------- mounts */

void sw_fs_mountinfo_unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r;) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 4;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

static size_t depth_of(const char *p)
{
	size_t d = 0;
	for (; *p; p++)
		d += *p == '/';
	return d;
}

typedef struct mount_ent {
	char *path;
	size_t depth;
	size_t order;
} mount_ent;

static int cmp_deepest_last_first(const void *a, const void *b)
{
	const mount_ent *x = a, *y = b;
	if (x->depth != y->depth)
		return x->depth < y->depth ? 1 : -1;
	return x->order < y->order ? 1 : (x->order > y->order ? -1 : 0);
}

int sw_fs_mounts_under(char ***out, const char *prefix, sw_error **err)
{
	*out = NULL;
	cleanup_free char *info = NULL;
	size_t len = 0;
	int r = sw_fs_read_file(&info, &len, "/proc/self/mountinfo", (size_t)64 << 20, err);
	if (r < 0)
		return r;
	size_t plen = strlen(prefix);
	while (plen > 1 && prefix[plen - 1] == '/')
		plen--;
	mount_ent *ents = NULL;
	size_t n = 0;
	char *save = NULL;
	for (char *line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." */
		char *f = line;
		for (int i = 0; i < 4 && f; i++) {
			f = strchr(f, ' ');
			if (f)
				f++;
		}
		if (!f)
			continue;
		size_t flen = strcspn(f, " ");
		cleanup_free char *mp = sw_xstrndup(f, flen);
		sw_fs_mountinfo_unescape(mp);
		if (strncmp(mp, prefix, plen) != 0 || (mp[plen] != '\0' && mp[plen] != '/'))
			continue;
		ents = sw_xrealloc(ents, (n + 1) * sizeof(*ents));
		ents[n].depth = depth_of(mp);
		ents[n].order = n;
		ents[n].path = steal_pointer(&mp);
		n++;
	}
	if (n)
		qsort(ents, n, sizeof(*ents), cmp_deepest_last_first);
	char **v = sw_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		v[i] = ents[i].path;
	free(ents);
	*out = v;
	return 0;
}

bool sw_fs_has_mounts_under(const char *path)
{
	char **v = NULL;
	sw_error *e = NULL;
	if (sw_fs_mounts_under(&v, path, &e) < 0) {
		sw_error_free(e);
		return true; /* unknown: as if there were one (never delete through a mount) */
	}
	bool any = v[0] != NULL;
	sw_strv_free(v);
	return any;
}
