/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Paths: lexical cleaning and joining, and resolution inside a root folder that cannot be left.
 * sw_path_open_in_root lets the kernel do the walk with openat2(RESOLVE_IN_ROOT) where it can;
 * otherwise, and for sw_path_resolve_in_root, a component walk reads each symlink with
 * readlinkat relative to the root fd and restarts from the root for absolute targets, so ".."
 * and symlinks (absolute or relative) stay inside, as they would under chroot. The fallback
 * open then walks the resolved path one component at a time with O_NOFOLLOW, so a symlink
 * swapped in after resolution makes the open fail instead of leaving the root.
 */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>

#define MAX_SYMLINKS 40

/*
 * Set when the kernel has no openat2 (and by tests, to exercise the fallback walk). Not in
 * common.h on purpose: nothing but the tests should touch it.
 */
bool sw_common__path_no_openat2;

char *sw_path_clean(const char *path)
{
	if (path == NULL || *path == '\0')
		return sw_xstrdup(".");
	size_t n = strlen(path);
	bool rooted = path[0] == '/';
	char *out = sw_xmalloc(n + 2);
	size_t w = 0, r = 0, dotdot = 0; /* dotdot: where ".." can no longer pop */
	if (rooted) {
		out[w++] = '/';
		r = 1;
		dotdot = 1;
	}
	while (r < n) {
		if (path[r] == '/') {
			r++;
		} else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
			r++;
		} else if (path[r] == '.' && path[r + 1] == '.' &&
		           (r + 2 == n || path[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				w--;
				while (w > dotdot && out[w] != '/')
					w--;
			} else if (!rooted) {
				if (w > 0)
					out[w++] = '/';
				out[w++] = '.';
				out[w++] = '.';
				dotdot = w;
			}
		} else {
			if (w != (rooted ? 1u : 0u))
				out[w++] = '/';
			for (; r < n && path[r] != '/'; r++)
				out[w++] = path[r];
		}
	}
	if (w == 0)
		out[w++] = '.';
	out[w] = '\0';
	return out;
}

char *sw_path_join(const char *a, const char *b)
{
	if (a == NULL || *a == '\0')
		return sw_xstrdup(b ? b : "");
	size_t la = strlen(a);
	while (la > 1 && a[la - 1] == '/')
		la--;
	if (b)
		while (*b == '/')
			b++;
	if (b == NULL || *b == '\0')
		return sw_xstrndup(a, la);
	if (la == 1 && a[0] == '/')
		return sw_xasprintf("/%s", b);
	return sw_xasprintf("%.*s/%s", (int)la, a, b);
}

/* Drop the last component of a root-relative path ("" stays ""). */
static void pop_component(sw_buf *b)
{
	char *slash = b->len ? memrchr(b->data, '/', b->len) : NULL;
	b->len = slash ? (size_t)(slash - b->data) : 0;
	if (b->data)
		b->data[b->len] = '\0';
}

int sw_path_resolve_in_root(char **out, int rootfd, const char *path, int flags, sw_error **err)
{
	*out = NULL;
	if (path == NULL)
		return sw_error_set(err, SW_ERR_INVALID, "resolve: no path");
	sw_buf res = SW_BUF_INIT((size_t)PATH_MAX * 4);
	cleanup_free char *rem = sw_xstrdup(path); /* what is left to walk */
	char *link = sw_xmalloc(PATH_MAX);
	size_t pos = 0;
	int links = 0, r = 0;
	(void)!sw_buf_append(&res, "", 0, NULL); /* res.data is never NULL below */

	for (;;) {
		while (rem[pos] == '/')
			pos++;
		if (rem[pos] == '\0')
			break;
		const char *comp = rem + pos;
		size_t n = strcspn(comp, "/");
		pos += n;
		bool last = rem[pos + strspn(rem + pos, "/")] == '\0';
		if (n == 1 && comp[0] == '.')
			continue;
		if (n == 2 && comp[0] == '.' && comp[1] == '.') {
			pop_component(&res); /* clamped: "" has nothing to pop */
			continue;
		}
		size_t parent_len = res.len;
		if ((res.len && sw_buf_append(&res, "/", 1, NULL) < 0) ||
		    sw_buf_append(&res, comp, n, NULL) < 0) {
			r = sw_error_os(err, ENAMETOOLONG, "resolve '%s'", path);
			goto out;
		}
		if (last && (flags & SW_PATH_NOFOLLOW))
			continue;
		ssize_t l = readlinkat(rootfd, res.data, link, PATH_MAX);
		if (l < 0) {
			/* not a symlink, or missing: taken as it is (missing ones lexically) */
			if (errno == EINVAL || errno == ENOENT || errno == ENOTDIR)
				continue;
			r = sw_error_os(err, errno, "resolve '%s': read link '%s'", path, res.data);
			goto out;
		}
		if (l >= PATH_MAX) {
			r = sw_error_os(err, ENAMETOOLONG, "resolve '%s': read link '%s'", path,
			                res.data);
			goto out;
		}
		if (++links > MAX_SYMLINKS) {
			r = sw_error_set(err, SW_ERR_INVALID,
			                 "resolve '%s': more than %d symbolic links (a loop?)",
			                 path, MAX_SYMLINKS);
			goto out;
		}
		/* continue from the link's folder, or from the root for an absolute target */
		res.len = link[0] == '/' ? 0 : parent_len;
		res.data[res.len] = '\0';
		const char *rest = rem + pos;
		char *next = sw_xasprintf("%.*s%s", (int)l, link, rest);
		free(rem);
		rem = next;
		pos = 0;
	}
	*out = sw_buf_steal(&res, NULL);
out:
	free(link);
	sw_buf_free(&res);
	return r;
}

static int openat2_in_root(int rootfd, const char *path, int oflags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned)(oflags | O_CLOEXEC),
		.mode = (oflags & (O_CREAT | __O_TMPFILE)) ? (mode & 07777) : 0,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	for (int i = 0; i < 32; i++) {
		long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		/* EAGAIN: the kernel saw a rename or mount race and asks for another try */
		if (errno != EAGAIN && errno != EINTR)
			return -1;
	}
	return -1;
}

/* Open a resolved root-relative path one component at a time, never following a symlink. */
static int open_walk(int rootfd, const char *rel, int oflags, mode_t mode)
{
	if (*rel == '\0')
		return openat(rootfd, ".", oflags | O_CLOEXEC, mode);
	cleanup_free char *p = sw_xstrdup(rel);
	int dirfd = rootfd;
	char *comp = p;
	for (char *slash; (slash = strchr(comp, '/')) != NULL; comp = slash + 1) {
		*slash = '\0';
		int nfd = openat(dirfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		if (dirfd != rootfd)
			close(dirfd);
		if (nfd < 0) {
			errno = e;
			return -1;
		}
		dirfd = nfd;
	}
	int fd = openat(dirfd, comp, oflags | O_NOFOLLOW | O_CLOEXEC, mode);
	int e = errno;
	if (dirfd != rootfd)
		close(dirfd);
	errno = e;
	return fd;
}

int sw_path_open_in_root(int *out_fd, int rootfd, const char *path, int oflags, mode_t mode,
                         sw_error **err)
{
	*out_fd = -1;
	if (path == NULL)
		return sw_error_set(err, SW_ERR_INVALID, "open in root: no path");
	if (!__atomic_load_n(&sw_common__path_no_openat2, __ATOMIC_RELAXED)) {
		int fd = openat2_in_root(rootfd, path, oflags, mode);
		if (fd >= 0) {
			*out_fd = fd;
			return 0;
		}
		if (errno != ENOSYS)
			return sw_error_os(err, errno, "open '%s' in root", path);
		__atomic_store_n(&sw_common__path_no_openat2, true, __ATOMIC_RELAXED);
	}

	/* O_CREAT|O_EXCL never follows a final symlink; O_NOFOLLOW asks the same */
	int rflags = 0;
	if ((oflags & O_NOFOLLOW) || ((oflags & O_CREAT) && (oflags & O_EXCL)))
		rflags |= SW_PATH_NOFOLLOW;
	cleanup_free char *rel = NULL;
	int r = sw_path_resolve_in_root(&rel, rootfd, path, rflags, err);
	if (r < 0)
		return sw_error_wrap(err, "open '%s' in root", path);
	int fd = open_walk(rootfd, rel, oflags, mode);
	if (fd < 0)
		return sw_error_os(err, errno, "open '%s' in root (as '/%s')", path, rel);
	*out_fd = fd;
	return 0;
}

int sw_path_mkdir_in_root(int rootfd, const char *path, mode_t mode, bool chown_new, uid_t uid,
                          gid_t gid, sw_error **err)
{
	cleanup_free char *clean = sw_path_clean(path);
	sw_buf acc = SW_BUF_INIT(0);
	int rc = 0;
	const char *p = clean;
	while (rc == 0 && *p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, "/");
		cleanup_free char *parent = sw_xasprintf("/%s", acc.len ? acc.data : "");
		if ((acc.len && sw_buf_append(&acc, "/", 1, err) < 0) ||
		    sw_buf_append(&acc, p, n, err) < 0) {
			rc = SW_ERR_INVALID;
			break;
		}
		cleanup_free char *comp = sw_xstrndup(p, n);
		p += n;
		int fd = -1;
		sw_error *e = NULL;
		if (sw_path_open_in_root(&fd, rootfd, acc.data, O_PATH | O_DIRECTORY, 0, &e) == 0) {
			close(fd);
			continue;
		}
		if (!e || e->sys != ENOENT) {
			if (err && !*err)
				*err = e;
			else
				sw_error_free(e);
			rc = sw_error_code_of(err ? *err : NULL);
			if (rc == 0)
				rc = SW_ERR_GENERIC;
			break;
		}
		sw_error_free(e);
		int pfd = -1;
		if ((rc = sw_path_open_in_root(&pfd, rootfd, parent, O_RDONLY | O_DIRECTORY, 0,
		                               err)) < 0)
			break;
		if (mkdirat(pfd, comp, mode) < 0 && errno != EEXIST)
			rc = sw_error_os(err, errno, "create /%s", acc.data);
		else if (chown_new && fchownat(pfd, comp, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			rc = sw_error_os(err, errno, "chown /%s", acc.data);
		close(pfd);
	}
	sw_buf_free(&acc);
	return rc;
}
