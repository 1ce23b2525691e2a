/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Workspaces of pipeline jobs: expanding artifact and cache globs to the paths that exist (with
 * the pipeline module's glob rules, never following symlinks while walking), copying paths out
 * of a workspace (modes and mtimes kept, symlinks copied as symlinks, everything opened relative
 * to a folder descriptor with O_NOFOLLOW so nothing outside the root is ever read) and removing
 * a workspace tree without crossing into mounts.
 */
#include "agent/agent_internal.h"
#include "pipeline/pipeline.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#define COPY_BUF (128 * 1024)
#define MAX_DEPTH 256

/* ---------------------------------------------------------------- paths */

static bool has_glob_chars(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* A relative path without "..": cleaned (no "./", "//", trailing "/"); NULL when it is
 * absolute, empty or climbs. */
static char *rel_path_clean(const char *p)
{
	if (!p || !*p || p[0] == '/')
		return NULL;
	const char *s = p;
	while (*s) {
		size_t len = strcspn(s, "/");
		if (len == 2 && s[0] == '.' && s[1] == '.')
			return NULL;
		s += len;
		while (*s == '/')
			s++;
	}
	char *c = sw_path_clean(p);
	if (strcmp(c, ".") == 0 || !*c) {
		free(c);
		return NULL;
	}
	return c;
}

/* Open the folder `rel` (may be "") under rootfd component by component, never following a
 * symlink. Returns the fd, or -1 with errno (ELOOP/ENOTDIR for a symlink or a file). */
static int open_dir_nofollow(int rootfd, const char *rel)
{
	int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !*rel)
		return fd;
	cleanup_free char *copy = sw_xstrdup(rel);
	char *save = NULL;
	for (char *comp = strtok_r(copy, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		close(fd);
		if (nfd < 0) {
			errno = e;
			return -1;
		}
		fd = nfd;
	}
	return fd;
}

static void split_rel(const char *rel, char **parent, const char **base)
{
	const char *slash = strrchr(rel, '/');
	if (!slash) {
		*parent = sw_xstrdup("");
		*base = rel;
	} else {
		*parent = sw_xstrndup(rel, (size_t)(slash - rel));
		*base = slash + 1;
	}
}

/* ---------------------------------------------------------------- globs */

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct matches {
	char **v;
	size_t n, cap;
} matches;

static void matches_add(matches *m, const char *p)
{
	if (m->n + 2 > m->cap) {
		m->cap = m->cap ? m->cap * 2 : 32;
		m->v = sw_xrealloc(m->v, m->cap * sizeof(*m->v));
	}
	m->v[m->n++] = sw_xstrdup(p);
	m->v[m->n] = NULL;
}

/* Walk the folder `dirfd` (whose path relative to the root is `rel`), matching every entry
 * against the pattern; folders are entered (not symlinks) while depth allows. */
static int glob_walk(matches *m, int dirfd, const char *rel, const char *pattern, int depth,
                     int max_depth, sw_error **err)
{
	if (depth > MAX_DEPTH)
		return sw_error_set(err, SW_ERR_INVALID, "'%s': folders nested too deep", rel);
	int fd = dup(dirfd);
	if (fd < 0)
		return sw_error_os(err, errno, "dup");
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return sw_error_os(err, e, "read the folder '%s'", *rel ? rel : ".");
	}
	rewinddir(d);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		cleanup_free char *p =
		        *rel ? sw_xasprintf("%s/%s", rel, de->d_name) : sw_xstrdup(de->d_name);
		if (sw_pl_glob_match(pattern, p))
			matches_add(m, p);
		if (max_depth >= 0 && depth + 1 >= max_depth)
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		int sub =
		        openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		r = glob_walk(m, sub, p, pattern, depth + 1, max_depth, err);
		close(sub);
	}
	closedir(d);
	return r;
}

static int glob_one(matches *m, int rootfd, const char *pattern, sw_error **err)
{
	cleanup_free char *clean = rel_path_clean(pattern);
	if (!clean)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "path '%s' leaves the workspace (absolute, empty or with \"..\")", pattern);
	if (!has_glob_chars(clean)) {
		cleanup_free char *parent = NULL;
		const char *base;
		split_rel(clean, &parent, &base);
		int pfd = open_dir_nofollow(rootfd, parent);
		if (pfd < 0)
			return 0; /* missing, or through a symlink: not there as far as we walk */
		struct stat st;
		if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
			matches_add(m, clean);
		close(pfd);
		return 0;
	}
	/* walk from the longest prefix of whole components without glob characters */
	size_t prefix_len = 0;
	int n_comps = 0;
	bool globstar = false;
	bool in_prefix = true;
	for (const char *s = clean; *s;) {
		size_t len = strcspn(s, "/");
		cleanup_free char *comp = sw_xstrndup(s, len);
		if (strstr(comp, "**"))
			globstar = true;
		if (in_prefix && has_glob_chars(comp))
			in_prefix = false;
		if (in_prefix)
			prefix_len = (size_t)(s - clean) + len;
		else
			n_comps++;
		s += len;
		while (*s == '/')
			s++;
	}
	cleanup_free char *prefix = sw_xstrndup(clean, prefix_len);
	int dfd = open_dir_nofollow(rootfd, prefix);
	if (dfd < 0)
		return 0;
	int r = glob_walk(m, dfd, prefix, clean, 0, globstar ? -1 : n_comps, err);
	close(dfd);
	return r;
}

int sw_ws_glob(char ***out, const char *root, const char *const *patterns, size_t n, sw_error **err)
{
	*out = NULL;
	cleanup_close int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open the workspace '%s'", root);
	matches m = { 0 };
	for (size_t i = 0; i < n; i++) {
		int r = glob_one(&m, rootfd, patterns[i], err);
		if (r < 0) {
			sw_strv_free(m.v);
			return r;
		}
	}
	if (!m.v)
		m.v = sw_xcalloc(1, sizeof(*m.v));
	if (m.n > 1)
		qsort(m.v, m.n, sizeof(*m.v), str_cmp);
	size_t w = 0;
	for (size_t i = 0; i < m.n; i++) {
		if (w > 0 && strcmp(m.v[w - 1], m.v[i]) == 0) {
			free(m.v[i]);
			continue;
		}
		m.v[w++] = m.v[i];
	}
	m.v[w] = NULL;
	*out = m.v;
	return 0;
}

/* ---------------------------------------------------------------- copy out */

typedef struct copier {
	uint64_t bytes;
	char *buf;
} copier;

static int copy_data(copier *cp, int in, int out, const char *rel, sw_error **err)
{
	for (;;) {
		ssize_t n = read(in, cp->buf, COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sw_error_os(err, errno, "read '%s'", rel);
		if (n == 0)
			return 0;
		if (sw_fs_write_all(out, cp->buf, (size_t)n, err) < 0)
			return sw_error_wrap(err, "copy '%s'", rel);
		cp->bytes += (uint64_t)n;
	}
}

/* Make room for a new non-folder entry `name` in dstfd: remove what is there unless it is a
 * folder we keep. */
static int dst_clear(int dstfd, const char *name, bool want_dir, bool *is_dir, const char *rel,
                     sw_error **err)
{
	struct stat st;
	*is_dir = false;
	if (fstatat(dstfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : sw_error_os(err, errno, "stat the copy of '%s'", rel);
	if (S_ISDIR(st.st_mode)) {
		if (want_dir) {
			*is_dir = true;
			return 0;
		}
		return sw_error_set(err, SW_ERR_CONFLICT,
		                    "copy '%s': a folder of that name is already there", rel);
	}
	if (unlinkat(dstfd, name, 0) < 0)
		return sw_error_os(err, errno, "replace the copy of '%s'", rel);
	return 0;
}

static int copy_entry(copier *cp, int srcdir, int dstdir, const char *name, const char *rel,
                      int depth, sw_error **err);

static int copy_dir_contents(copier *cp, int srcfd, int dstfd, const char *rel, int depth,
                             sw_error **err)
{
	int fd = dup(srcfd);
	if (fd < 0)
		return sw_error_os(err, errno, "dup");
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return sw_error_os(err, e, "read the folder '%s'", rel);
	}
	rewinddir(d);
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		cleanup_free char *sub = sw_xasprintf("%s/%s", rel, de->d_name);
		r = copy_entry(cp, srcfd, dstfd, de->d_name, sub, depth + 1, err);
	}
	closedir(d);
	return r;
}

/* Copy the entry `name` of srcdir (never following it) to the same name in dstdir. */
static int copy_entry(copier *cp, int srcdir, int dstdir, const char *name, const char *rel,
                      int depth, sw_error **err)
{
	if (depth > MAX_DEPTH)
		return sw_error_set(err, SW_ERR_INVALID, "'%s': folders nested too deep", rel);
	struct stat st;
	if (fstatat(srcdir, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0; /* gone meanwhile */
		return sw_error_os(err, errno, "stat '%s'", rel);
	}
	struct timespec ts[2] = { st.st_atim, st.st_mtim };
	bool is_dir = false;
	int r;
	if (S_ISREG(st.st_mode)) {
		cleanup_close int in = openat(srcdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (in < 0)
			return sw_error_os(err, errno, "open '%s'", rel);
		if ((r = dst_clear(dstdir, name, false, &is_dir, rel, err)) < 0)
			return r;
		cleanup_close int out = openat(
		        dstdir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0)
			return sw_error_os(err, errno, "create the copy of '%s'", rel);
		if ((r = copy_data(cp, in, out, rel, err)) < 0)
			return r;
		if (fchmod(out, st.st_mode & 07777) < 0 || futimens(out, ts) < 0)
			return sw_error_os(err, errno, "set the mode and times of the copy of '%s'",
			                   rel);
		return 0;
	}
	if (S_ISLNK(st.st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(srcdir, name, target, PATH_MAX);
		if (n < 0)
			return sw_error_os(err, errno, "read the symlink '%s'", rel);
		target[n] = '\0';
		if ((r = dst_clear(dstdir, name, false, &is_dir, rel, err)) < 0)
			return r;
		if (symlinkat(target, dstdir, name) < 0)
			return sw_error_os(err, errno, "copy the symlink '%s'", rel);
		(void)utimensat(dstdir, name, ts, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
	if (S_ISDIR(st.st_mode)) {
		cleanup_close int in =
		        openat(srcdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (in < 0)
			return sw_error_os(err, errno, "open the folder '%s'", rel);
		if ((r = dst_clear(dstdir, name, true, &is_dir, rel, err)) < 0)
			return r;
		if (!is_dir && mkdirat(dstdir, name, 0700) < 0)
			return sw_error_os(err, errno, "create the folder '%s'", rel);
		cleanup_close int out =
		        openat(dstdir, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (out < 0)
			return sw_error_os(err, errno, "open the copy of '%s'", rel);
		if ((r = copy_dir_contents(cp, in, out, rel, depth, err)) < 0)
			return r;
		if (fchmod(out, st.st_mode & 07777) < 0 || futimens(out, ts) < 0)
			return sw_error_os(err, errno, "set the mode and times of the copy of '%s'",
			                   rel);
		return 0;
	}
	SW_LOG(SW_LOG_DEBUG, "workspace: '%s' is not a file, folder or symlink: not copied", rel);
	return 0;
}

/* Create the parents of `rel` under dstfd (modes of the source's folders) and return the fd of
 * the last; the source's folders are opened without following symlinks. */
static int copy_parents(int *src_out, int *dst_out, int rootfd, int dstfd, const char *parent,
                        const char *rel, sw_error **err)
{
	int s = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int d = openat(dstfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s < 0 || d < 0) {
		int e = errno;
		if (s >= 0)
			close(s);
		if (d >= 0)
			close(d);
		return sw_error_os(err, e, "open folders to copy '%s'", rel);
	}
	cleanup_free char *copy = sw_xstrdup(parent);
	char *save = NULL;
	int r = 0;
	for (char *comp = strtok_r(copy, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		int ns = openat(s, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (ns < 0) {
			r = errno == ENOENT
			            ? 1
			            : sw_error_set(err, SW_ERR_INVALID,
			                           "copy '%s': '%s' on the way is not a folder "
			                           "(symlinks are not followed)",
			                           rel, comp);
			break;
		}
		struct stat st;
		mode_t mode = fstat(ns, &st) == 0 ? (st.st_mode & 07777) : 0755;
		if (mkdirat(d, comp, mode) < 0 && errno != EEXIST) {
			r = sw_error_os(err, errno, "create the folder of '%s'", rel);
			close(ns);
			break;
		}
		int nd = openat(d, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nd < 0) {
			r = sw_error_os(err, errno, "open the folder of '%s'", rel);
			close(ns);
			break;
		}
		close(s);
		close(d);
		s = ns;
		d = nd;
	}
	if (r != 0) {
		close(s);
		close(d);
		return r;
	}
	*src_out = s;
	*dst_out = d;
	return 0;
}

int sw_ws_copy_out(uint64_t *bytes, const char *root, char *const *paths, const char *dest,
                   sw_error **err)
{
	if (bytes)
		*bytes = 0;
	cleanup_close int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open the workspace '%s'", root);
	int r = sw_fs_mkdir_p(dest, 0755, err);
	if (r < 0)
		return r;
	cleanup_close int dstfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dstfd < 0)
		return sw_error_os(err, errno, "open '%s'", dest);
	/* sorted, so a folder comes before what is inside it (and that is then skipped) */
	size_t n = sw_strv_len(paths);
	cleanup_free char **sorted = sw_xcalloc(n + 1, sizeof(*sorted));
	for (size_t i = 0; i < n; i++) {
		sorted[i] = rel_path_clean(paths[i]);
		if (!sorted[i]) {
			r = sw_error_set(err, SW_ERR_INVALID,
			                 "copy '%s': the path leaves the workspace", paths[i]);
			for (size_t j = 0; j < i; j++)
				free(sorted[j]);
			return r;
		}
	}
	if (n > 1)
		qsort(sorted, n, sizeof(*sorted), str_cmp);
	copier cp = { 0, sw_xmalloc(COPY_BUF) };
	const char *last_dir = NULL;
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *rel = sorted[i];
		if (last_dir) {
			size_t l = strlen(last_dir);
			if (strncmp(rel, last_dir, l) == 0 && (rel[l] == '/' || rel[l] == '\0'))
				continue; /* copied with its folder */
		}
		cleanup_free char *parent = NULL;
		const char *base;
		split_rel(rel, &parent, &base);
		int sfd = -1, dfd = -1;
		r = copy_parents(&sfd, &dfd, rootfd, dstfd, parent, rel, err);
		if (r == 1) {
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		struct stat st;
		if (fstatat(sfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
			last_dir = rel;
		r = copy_entry(&cp, sfd, dfd, base, rel, 0, err);
		close(sfd);
		close(dfd);
	}
	for (size_t i = 0; i < n; i++)
		free(sorted[i]);
	free(cp.buf);
	if (r < 0)
		return sw_error_wrap(err, "copy out of '%s'", root);
	if (bytes)
		*bytes = cp.bytes;
	return 0;
}

/* ---------------------------------------------------------------- removal */

/* The first (deepest) mount point at or under `path` (caller frees), NULL when none. */
static char *mount_under(const char *path)
{
	char **v = NULL;
	sw_error *e = NULL;
	if (sw_fs_mounts_under(&v, path, &e) < 0) {
		sw_error_free(e);
		return sw_xstrdup(path); /* unknown: as if it were one */
	}
	char *found = v[0] ? sw_xstrdup(v[0]) : NULL;
	sw_strv_free(v);
	return found;
}

static int remove_contents(int dirfd, dev_t dev, const char *path, int depth, sw_error **err)
{
	if (depth > MAX_DEPTH)
		return sw_error_set(err, SW_ERR_INVALID, "remove '%s': folders nested too deep",
		                    path);
	int fd = dup(dirfd);
	if (fd < 0)
		return sw_error_os(err, errno, "dup");
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return sw_error_os(err, e, "read the folder '%s'", path);
	}
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = sw_error_os(err, errno, "stat '%s/%s'", path, de->d_name);
			break;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (unlinkat(dirfd, de->d_name, 0) < 0 && errno != ENOENT)
				r = sw_error_os(err, errno, "remove '%s/%s'", path, de->d_name);
			continue;
		}
		cleanup_free char *sub = sw_xasprintf("%s/%s", path, de->d_name);
		if (st.st_dev != dev) {
			r = sw_error_set(err, SW_ERR_CONFLICT,
			                 "remove '%s': '%s' is a mount point; not crossing it",
			                 path, sub);
			break;
		}
		int sfd =
		        openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0 && errno == EACCES && fchmodat(dirfd, de->d_name, 0700, 0) == 0)
			sfd = openat(dirfd, de->d_name,
			             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sfd < 0) {
			r = sw_error_os(err, errno, "open '%s'", sub);
			break;
		}
		struct stat sst;
		if (fstat(sfd, &sst) == 0 && sst.st_dev != dev) {
			close(sfd);
			r = sw_error_set(err, SW_ERR_CONFLICT,
			                 "remove '%s': '%s' is a mount point; not crossing it",
			                 path, sub);
			break;
		}
		r = remove_contents(sfd, dev, sub, depth + 1, err);
		close(sfd);
		if (r == 0 && unlinkat(dirfd, de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			r = sw_error_os(err, errno, "remove the folder '%s'", sub);
	}
	closedir(d);
	return r;
}

int sw_ws_remove_tree(const char *path, sw_error **err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : sw_error_os(err, errno, "remove '%s'", path);
	if (!S_ISDIR(st.st_mode)) {
		if (unlink(path) < 0 && errno != ENOENT)
			return sw_error_os(err, errno, "remove '%s'", path);
		return 0;
	}
	char real[PATH_MAX];
	if (!realpath(path, real))
		return sw_error_os(err, errno, "remove '%s'", path);
	cleanup_free char *mnt = mount_under(real);
	if (mnt)
		return sw_error_set(err, SW_ERR_CONFLICT,
		                    "remove '%s': '%s' is mounted inside; unmount it first", path,
		                    mnt);
	cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open '%s'", path);
	int r = remove_contents(fd, st.st_dev, path, 0, err);
	if (r < 0)
		return r;
	if (rmdir(path) < 0 && errno != ENOENT)
		return sw_error_os(err, errno, "remove the folder '%s'", path);
	return 0;
}
