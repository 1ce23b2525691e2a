/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer applier: unpack a layer tarball (gzip, zstd or plain; detected) onto a rootfs folder,
 * honouring whiteouts and opaque markers, without ever writing outside that folder. libarchive
 * only reads; every write is done here, relative to the directory fd of the entry's parent,
 * which is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) (or a component walk with
 * O_NOFOLLOW where openat2 is missing): an entry whose parent path goes through a symlink, has
 * ".." or is absolute is refused before anything is written for it. Sizes and the entry count
 * are bounded. Folder modes and mtimes are set at the end, deepest first.
 */
#include "oci/oci_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#define DEFAULT_MAX_ENTRIES 1000000ULL
#define DEFAULT_MAX_TOTAL (64ULL << 30)
#define DEFAULT_MAX_ENTRY (16ULL << 30)

#define OPAQUE_MARKER ".wh..wh..opq"
#define WHITEOUT_PREFIX ".wh."
#define WHITEOUT_META_PREFIX ".wh..wh."

/* ---------------------------------------------------------------- a set of paths */

typedef struct str_set {
	char **slots;
	size_t cap; /* power of two */
	size_t n;
} str_set;

static size_t str_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return (size_t)(h ^ (h >> 29));
}

static bool set_has_n(const str_set *m, const char *s, size_t n)
{
	if (!m->cap)
		return false;
	size_t j = str_hash(s, n) & (m->cap - 1);
	while (m->slots[j]) {
		if (strlen(m->slots[j]) == n && memcmp(m->slots[j], s, n) == 0)
			return true;
		j = (j + 1) & (m->cap - 1);
	}
	return false;
}

static void set_insert(str_set *m, char *owned)
{
	size_t j = str_hash(owned, strlen(owned)) & (m->cap - 1);
	while (m->slots[j])
		j = (j + 1) & (m->cap - 1);
	m->slots[j] = owned;
}

static void set_add_n(str_set *m, const char *s, size_t n)
{
	if ((m->n + 1) * 2 > m->cap) {
		size_t ocap = m->cap;
		char **old = m->slots;
		m->cap = ocap ? ocap * 2 : 256;
		m->slots = sw_xcalloc(m->cap, sizeof(*m->slots));
		for (size_t i = 0; i < ocap; i++)
			if (old[i])
				set_insert(m, old[i]);
		free(old);
	}
	set_insert(m, sw_xstrndup(s, n));
	m->n++;
}

/* Add `path` and its parents (a parent is present whenever a child is). */
static void set_add_with_parents(str_set *m, const char *path)
{
	size_t n = strlen(path);
	while (n > 0 && !set_has_n(m, path, n)) {
		set_add_n(m, path, n);
		while (n > 0 && path[n - 1] != '/')
			n--;
		if (n > 0)
			n--; /* drop the '/' */
	}
}

static void set_clear(str_set *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i]);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------- state */

/* A folder whose mode and times are set at the end. */
typedef struct dir_fix {
	char *path;
	mode_t mode;
	struct timespec ts[2];
	size_t depth;
	size_t seq;
} dir_fix;

typedef struct apply_ctx {
	int rootfd; /* O_PATH | O_DIRECTORY */
	uint64_t max_entries, max_total, max_entry;
	bool keep_owners;
	bool wh_devices;
	bool no_openat2;
	uint64_t total; /* declared bytes so far */
	sw_oci_apply_stats st;
	str_set written; /* paths this layer wrote (and their parents) */
	dir_fix *dirs;
	size_t n_dirs, cap_dirs;
	char *cache_path; /* the last parent folder resolved ... */
	int cache_fd;     /* ... and its O_PATH fd */
} apply_ctx;

static int entry_fail(sw_error **err, const char *entry, const char *fmt, ...) SW_PRINTF(3, 4);

/* SW_ERR_INVALID "layer entry 'NAME': ..." */
static int entry_fail(sw_error **err, const char *entry, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *msg = sw_xvasprintf(fmt, ap);
	va_end(ap);
	return sw_error_set(err, SW_ERR_INVALID, "layer entry '%s': %s", entry, msg);
}

static int entry_os(sw_error **err, int errnum, const char *entry, const char *what)
{
	return sw_error_os(err, errnum, "layer entry '%s': %s", entry, what);
}

static void cache_drop(apply_ctx *c)
{
	if (c->cache_fd >= 0)
		close(c->cache_fd);
	c->cache_fd = -1;
	free(c->cache_path);
	c->cache_path = NULL;
}

/* ---------------------------------------------------------------- safe path resolution */

/* Explain why `prefix` (a prefix of the entry's parent, relative to fd's folder `comp`) cannot
 * be gone through. */
static int walk_fail(sw_error **err, int dfd, const char *comp, int errnum, const char *prefix,
                     const char *entry)
{
	struct stat st;
	if (fstatat(dfd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISLNK(st.st_mode))
			return entry_fail(err, entry,
			                  "'%s' is a symlink: writing through a symlink is refused",
			                  prefix);
		if (!S_ISDIR(st.st_mode))
			return entry_fail(err, entry, "'%s' is not a folder", prefix);
	}
	cleanup_free char *what = sw_xasprintf("open folder '%s'", prefix);
	return entry_os(err, errnum, entry, what);
}

/*
 * Open the folder `rel` (clean, root-relative, "" for the root) as O_PATH without following any
 * symlink. Missing folders are created (0755) when `create`; else 1 is returned for them.
 * *out is an fd the caller closes.
 */
static int resolve_dir(apply_ctx *c, const char *rel, bool create, int *out, const char *entry,
                       sw_error **err)
{
	*out = -1;
	if (!*rel) {
		int fd = fcntl(c->rootfd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return entry_os(err, errno, entry, "dup");
		*out = fd;
		return 0;
	}
	if (!c->no_openat2) {
		struct open_how how;
		memset(&how, 0, sizeof(how));
		how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
		long fd;
		int tries = 0;
		do
			fd = syscall(SYS_openat2, c->rootfd, rel, &how, sizeof(how));
		while (fd < 0 && (errno == EAGAIN || errno == EINTR) && ++tries < 16);
		if (fd >= 0) {
			*out = (int)fd;
			return 0;
		}
		if (errno == ENOSYS || errno == EPERM)
			c->no_openat2 = true;
		else if (errno == EXDEV)
			return entry_fail(err, entry, "'%s' leads outside the target folder", rel);
		else if (errno != ENOENT && errno != ELOOP && errno != ENOTDIR && errno != EAGAIN &&
		         errno != EINTR) {
			cleanup_free char *what = sw_xasprintf("open folder '%s'", rel);
			return entry_os(err, errno, entry, what);
		}
		/* the walk below creates what is missing or says precisely what is wrong */
	}
	int fd = fcntl(c->rootfd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return entry_os(err, errno, entry, "dup");
	size_t len = strlen(rel);
	cleanup_free char *prefix = sw_xstrdup(rel);
	size_t pos = 0;
	while (pos < len) {
		size_t end = pos;
		while (end < len && rel[end] != '/')
			end++;
		prefix[end] = '\0';
		const char *comp = prefix + pos;
		if (!*comp || strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0) {
			/* callers pass clean paths; never walk up, whatever happens */
			close(fd);
			return entry_fail(err, entry, "'%s' is not a clean path", rel);
		}
		int nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0 && errno == ENOENT && create) {
			if (mkdirat(fd, comp, 0755) < 0 && errno != EEXIST) {
				int e = errno;
				close(fd);
				cleanup_free char *what =
				        sw_xasprintf("create folder '%s'", prefix);
				return entry_os(err, e, entry, what);
			}
			nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (nfd < 0) {
			int e = errno;
			if (e == ENOENT && !create) {
				close(fd);
				return 1;
			}
			int r = walk_fail(err, fd, comp, e, prefix, entry);
			close(fd);
			return r;
		}
		struct stat st;
		if (fstat(nfd, &st) < 0 || !S_ISDIR(st.st_mode)) {
			close(nfd);
			int r = walk_fail(err, fd, comp, ENOTDIR, prefix, entry);
			close(fd);
			return r;
		}
		close(fd);
		fd = nfd;
		prefix[end] = '/';
		pos = end + 1;
	}
	*out = fd;
	return 0;
}

/* Like resolve_dir, through a one-entry cache. *out is the caller's to close. */
static int parent_open(apply_ctx *c, const char *parent, bool create, int *out, const char *entry,
                       sw_error **err)
{
	*out = -1;
	if (c->cache_fd < 0 || strcmp(c->cache_path, parent) != 0) {
		cache_drop(c);
		int fd = -1;
		int r = resolve_dir(c, parent, create, &fd, entry, err);
		if (r != 0)
			return r;
		c->cache_fd = fd;
		c->cache_path = sw_xstrdup(parent);
	}
	*out = fcntl(c->cache_fd, F_DUPFD_CLOEXEC, 3);
	if (*out < 0)
		return entry_os(err, errno, entry, "dup");
	return 0;
}

/* ---------------------------------------------------------------- removal */

typedef struct name_list {
	char **v;
	size_t n, cap;
} name_list;

static void names_free(name_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* The names in the folder `fd` (consumed: closed here). */
static int names_read(name_list *out, int fd, const char *entry, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
		close(fd);
		return entry_os(err, e, entry, "read folder");
	}
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				r = entry_os(err, errno, entry, "read folder");
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (out->n == out->cap) {
			out->cap = out->cap ? out->cap * 2 : 16;
			out->v = sw_xrealloc(out->v, out->cap * sizeof(*out->v));
		}
		out->v[out->n++] = sw_xstrdup(de->d_name);
	}
	closedir(d);
	if (r < 0)
		names_free(out);
	return r;
}

/* Remove `name` in `dfd` and everything under it, never following a symlink. */
static int rm_tree(apply_ctx *c, int dfd, const char *name, const char *entry, sw_error **err)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return entry_os(err, errno, entry, "stat what it replaces");
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
			return entry_os(err, errno, entry, "remove what it replaces");
		return 0;
	}
	cache_drop(c);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return entry_os(err, errno, entry, "open a folder to remove");
	int sub = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (sub < 0) {
		int e = errno;
		close(fd);
		return entry_os(err, e, entry, "dup");
	}
	name_list l;
	int r = names_read(&l, fd, entry, err);
	for (size_t i = 0; r == 0 && i < l.n; i++)
		r = rm_tree(c, sub, l.v[i], entry, err);
	names_free(&l);
	close(sub);
	if (r < 0)
		return r;
	if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return entry_os(err, errno, entry, "remove a folder it replaces");
	return 0;
}

/* Make room for a new entry `base`: remove what is there unless both are folders. *kept says
 * a folder was kept. */
static int make_room(apply_ctx *c, int pfd, const char *base, bool new_is_dir, bool *kept,
                     const char *entry, sw_error **err)
{
	if (kept)
		*kept = false;
	struct stat st;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return entry_os(err, errno, entry, "stat");
	}
	if (S_ISDIR(st.st_mode) && new_is_dir) {
		if (kept)
			*kept = true;
		return 0;
	}
	return rm_tree(c, pfd, base, entry, err);
}

/*
 * Opaque marker: remove from the folder `dfd` (path `dpath`) everything this layer did not
 * write, going down into the folders it did write into.
 */
static int opaque_clear(apply_ctx *c, int dfd, const char *dpath, const char *entry, sw_error **err)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return entry_os(err, errno, entry, "open the opaque folder");
	int sub = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (sub < 0) {
		int e = errno;
		close(fd);
		return entry_os(err, e, entry, "dup");
	}
	name_list l;
	int r = names_read(&l, fd, entry, err);
	for (size_t i = 0; r == 0 && i < l.n; i++) {
		cleanup_free char *child =
		        *dpath ? sw_xasprintf("%s/%s", dpath, l.v[i]) : sw_xstrdup(l.v[i]);
		if (!set_has_n(&c->written, child, strlen(child))) {
			r = rm_tree(c, sub, l.v[i], entry, err);
			continue;
		}
		struct stat st;
		if (fstatat(sub, l.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			continue;
		int cfd = openat(sub, l.v[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			r = entry_os(err, errno, entry, "open a folder under the opaque folder");
			break;
		}
		r = opaque_clear(c, cfd, child, entry, err);
		close(cfd);
	}
	names_free(&l);
	close(sub);
	return r;
}

/* ---------------------------------------------------------------- metadata */

static int set_owner(apply_ctx *c, int fd, int pfd, const char *base, struct archive_entry *e,
                     const char *entry, sw_error **err)
{
	if (!c->keep_owners)
		return 0;
	uid_t uid = (uid_t)archive_entry_uid(e);
	gid_t gid = (gid_t)archive_entry_gid(e);
	int r = fd >= 0 ? fchown(fd, uid, gid) : fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW);
	if (r < 0) {
		cleanup_free char *what =
		        sw_xasprintf("chown to %lu:%lu", (unsigned long)uid, (unsigned long)gid);
		return entry_os(err, errno, entry, what);
	}
	return 0;
}

static int set_xattrs(int fd, int pfd, const char *base, struct archive_entry *e, bool plain,
                      const char *entry, sw_error **err)
{
	if (archive_entry_xattr_reset(e) == 0)
		return 0;
	const char *name;
	const void *value;
	size_t len;
	cleanup_free char *proc = NULL;
	while (archive_entry_xattr_next(e, &name, &value, &len) == ARCHIVE_OK) {
		if (!name || !*name || !sw_oci__layer_xattr_keep(name))
			continue;
		int r;
		if (fd >= 0) {
			r = fsetxattr(fd, name, value, len, 0);
		} else {
			if (!proc)
				proc = sw_xasprintf("/proc/self/fd/%d/%s", pfd, base);
			r = lsetxattr(proc, name, value, len, 0);
		}
		if (r == 0)
			continue;
		int errnum = errno;
		bool user = strncmp(name, "user.", 5) == 0;
		bool trusted = strncmp(name, "trusted.", 8) == 0;
		/* file systems without xattrs, and user.* on a node that cannot have them */
		if (errnum == ENOTSUP && (user || trusted))
			continue;
		if (errnum == EPERM && user && !plain)
			continue;
		cleanup_free char *what = sw_xasprintf("set xattr %s", name);
		return entry_os(err, errnum, entry, what);
	}
	return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime_is_set(e) ? archive_entry_mtime(e) : 0;
	ts[1].tv_nsec = archive_entry_mtime_is_set(e) ? archive_entry_mtime_nsec(e) : 0;
	if (archive_entry_atime_is_set(e)) {
		ts[0].tv_sec = archive_entry_atime(e);
		ts[0].tv_nsec = archive_entry_atime_nsec(e);
	} else {
		ts[0] = ts[1];
	}
	if (ts[0].tv_nsec < 0 || ts[0].tv_nsec > 999999999)
		ts[0].tv_nsec = 0;
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec > 999999999)
		ts[1].tv_nsec = 0;
}

/* ---------------------------------------------------------------- entries */

static int write_data(apply_ctx *c, struct archive *a, int fd, int64_t size, const char *entry,
                      sw_error **err)
{
	int64_t end = 0;
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar = archive_read_data_block(a, &buf, &len, &off);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE,
			                    archive_errno(a), "layer entry '%s': read: %s", entry,
			                    archive_error_string(a));
		if (off < 0 || (uint64_t)off + len > (uint64_t)size)
			return entry_fail(err, entry, "more data than its declared %lld bytes",
			                  (long long)size);
		const char *p = buf;
		while (len > 0) {
			ssize_t n = pwrite(fd, p, len, off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return entry_os(err, errno, entry, "write");
			}
			p += n;
			off += n;
			len -= (size_t)n;
		}
		if (off > end)
			end = off;
	}
	if (end < size && ftruncate(fd, size) < 0)
		return entry_os(err, errno, entry, "extend");
	c->st.bytes += (uint64_t)size;
	return 0;
}

static int apply_file(apply_ctx *c, struct archive *a, struct archive_entry *e, int pfd,
                      const char *base, const char *entry, sw_error **err)
{
	int r = make_room(c, pfd, base, false, NULL, entry, err);
	if (r < 0)
		return r;
	cleanup_close int fd =
	        openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return entry_os(err, errno, entry, "create");
	int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
	if ((r = write_data(c, a, fd, size, entry, err)) < 0)
		return r;
	if ((r = set_owner(c, fd, -1, NULL, e, entry, err)) < 0)
		return r;
	if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
		return entry_os(err, errno, entry, "chmod");
	if ((r = set_xattrs(fd, -1, NULL, e, true, entry, err)) < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	if (futimens(fd, ts) < 0)
		return entry_os(err, errno, entry, "set times");
	return 0;
}

static int apply_dir(apply_ctx *c, struct archive_entry *e, int pfd, const char *base,
                     const char *path, const char *entry, sw_error **err)
{
	bool kept = false;
	int r = make_room(c, pfd, base, true, &kept, entry, err);
	if (r < 0)
		return r;
	if (!kept && mkdirat(pfd, base, 0700) < 0)
		return entry_os(err, errno, entry, "create folder");
	cleanup_close int fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return entry_os(err, errno, entry, "open folder");
	if ((r = set_owner(c, fd, -1, NULL, e, entry, err)) < 0)
		return r;
	if ((r = set_xattrs(fd, -1, NULL, e, true, entry, err)) < 0)
		return r;
	if (c->n_dirs == c->cap_dirs) {
		c->cap_dirs = c->cap_dirs ? c->cap_dirs * 2 : 64;
		c->dirs = sw_xrealloc(c->dirs, c->cap_dirs * sizeof(*c->dirs));
	}
	dir_fix *f = &c->dirs[c->n_dirs];
	f->path = sw_xstrdup(path);
	f->mode = archive_entry_perm(e) & 07777;
	entry_times(e, f->ts);
	f->depth = 0;
	for (const char *p = path; *p; p++)
		f->depth += *p == '/';
	f->seq = c->n_dirs++;
	return 0;
}

static int apply_symlink(apply_ctx *c, struct archive_entry *e, int pfd, const char *base,
                         const char *entry, sw_error **err)
{
	const char *target = archive_entry_symlink(e);
	if (!target || !*target)
		return entry_fail(err, entry, "symlink without a target");
	int r = make_room(c, pfd, base, false, NULL, entry, err);
	if (r < 0)
		return r;
	if (symlinkat(target, pfd, base) < 0)
		return entry_os(err, errno, entry, "create symlink");
	if ((r = set_owner(c, -1, pfd, base, e, entry, err)) < 0)
		return r;
	if ((r = set_xattrs(-1, pfd, base, e, false, entry, err)) < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_os(err, errno, entry, "set times");
	return 0;
}

static int apply_node(apply_ctx *c, struct archive_entry *e, int pfd, const char *base,
                      const char *entry, sw_error **err)
{
	mode_t type = archive_entry_filetype(e);
	mode_t kind = type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO;
	dev_t dev = kind == S_IFIFO
	                    ? 0
	                    : makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
	int r = make_room(c, pfd, base, false, NULL, entry, err);
	if (r < 0)
		return r;
	if (mknodat(pfd, base, kind | 0600, dev) < 0) {
		if (errno == EPERM && kind != S_IFIFO)
			return sw_error_os(err, errno,
			                   "layer entry '%s': creating a device node needs root "
			                   "(CAP_MKNOD)",
			                   entry);
		return entry_os(err, errno, entry, "create node");
	}
	if ((r = set_owner(c, -1, pfd, base, e, entry, err)) < 0)
		return r;
	/* just created, not a symlink: fchmodat cannot be led elsewhere */
	if (fchmodat(pfd, base, archive_entry_perm(e) & 07777, 0) < 0)
		return entry_os(err, errno, entry, "chmod");
	if ((r = set_xattrs(-1, pfd, base, e, false, entry, err)) < 0)
		return r;
	struct timespec ts[2];
	entry_times(e, ts);
	if (utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_os(err, errno, entry, "set times");
	return 0;
}

static void split_path(const char *path, char **parent, const char **base)
{
	const char *slash = strrchr(path, '/');
	*parent = slash ? sw_xstrndup(path, (size_t)(slash - path)) : sw_xstrdup("");
	*base = slash ? slash + 1 : path;
}

static int apply_hardlink(apply_ctx *c, const char *link, const char *path, const char *entry,
                          sw_error **err)
{
	cleanup_free char *target = NULL;
	int r = sw_oci__layer_path_clean(&target, link, "hard link target", err);
	if (r < 0)
		return sw_error_wrap(err, "layer entry '%s'", entry);
	if (!*target)
		return entry_fail(err, entry, "hard link to the root folder");
	if (strcmp(target, path) == 0)
		return entry_fail(err, entry, "hard link to itself");
	cleanup_free char *tparent = NULL;
	const char *tbase;
	split_path(target, &tparent, &tbase);
	cleanup_close int tpfd = -1;
	r = resolve_dir(c, tparent, false, &tpfd, entry, err);
	if (r < 0)
		return sw_error_wrap(err, "hard link target '%s'", target);
	if (r > 0)
		return entry_fail(err, entry, "hard link target '%s' does not exist", target);
	struct stat tst;
	if (fstatat(tpfd, tbase, &tst, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return entry_fail(err, entry, "hard link target '%s' does not exist",
			                  target);
		cleanup_free char *what = sw_xasprintf("stat hard link target '%s'", target);
		return entry_os(err, errno, entry, what);
	}
	if (S_ISDIR(tst.st_mode))
		return entry_fail(err, entry, "hard link target '%s' is a folder", target);

	cleanup_free char *parent = NULL;
	const char *base;
	split_path(path, &parent, &base);
	cleanup_close int pfd = -1;
	if ((r = parent_open(c, parent, true, &pfd, entry, err)) < 0)
		return r;
	struct stat st;
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == tst.st_dev &&
	    st.st_ino == tst.st_ino)
		return 0; /* already that file */
	if ((r = make_room(c, pfd, base, false, NULL, entry, err)) < 0)
		return r;
	if (linkat(tpfd, tbase, pfd, base, 0) < 0) {
		cleanup_free char *what = sw_xasprintf("hard link to '%s'", target);
		return entry_os(err, errno, entry, what);
	}
	return 0;
}

static int apply_whiteout(apply_ctx *c, const char *parent, const char *base, const char *entry,
                          sw_error **err)
{
	bool opaque = strcmp(base, OPAQUE_MARKER) == 0;
	if (!opaque && strncmp(base, WHITEOUT_META_PREFIX, strlen(WHITEOUT_META_PREFIX)) == 0) {
		SW_LOG(SW_LOG_DEBUG, "layer: ignoring whiteout meta entry '%s'", entry);
		return 0;
	}
	const char *name = base + strlen(WHITEOUT_PREFIX);
	if (!opaque && (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0))
		return entry_fail(err, entry, "invalid whiteout name");
	c->st.whiteouts++;
	cleanup_close int pfd = -1;
	int r = parent_open(c, parent, opaque || c->wh_devices, &pfd, entry, err);
	if (r < 0)
		return r;
	if (r > 0)
		return 0; /* nothing below to hide */
	if (opaque) {
		if ((r = opaque_clear(c, pfd, parent, entry, err)) < 0)
			return r;
		if (!c->wh_devices)
			return 0;
		cleanup_close int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return entry_os(err, errno, entry, "open the opaque folder");
		if (fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) < 0)
			return entry_os(err, errno, entry,
			                "set trusted.overlay.opaque (needs root and a file "
			                "system with trusted xattrs)");
		return 0;
	}
	if ((r = rm_tree(c, pfd, name, entry, err)) < 0)
		return r;
	if (!c->wh_devices)
		return 0;
	if (mknodat(pfd, name, S_IFCHR | 0, makedev(0, 0)) < 0)
		return entry_os(err, errno, entry,
		                "create an overlay whiteout device (needs root, CAP_MKNOD)");
	cleanup_free char *wpath = *parent ? sw_xasprintf("%s/%s", parent, name) : sw_xstrdup(name);
	set_add_with_parents(&c->written, wpath);
	return 0;
}

static int apply_entry(apply_ctx *c, struct archive *a, struct archive_entry *e, const char *entry,
                       sw_error **err)
{
	int64_t size = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
	if (size < 0)
		return entry_fail(err, entry, "negative size");
	if ((uint64_t)size > c->max_entry)
		return entry_fail(err, entry, "%lld bytes exceed the limit of %llu bytes per entry",
		                  (long long)size, (unsigned long long)c->max_entry);
	if ((uint64_t)size > c->max_total - c->total)
		return entry_fail(err, entry, "the layer's content exceeds the limit of %llu bytes",
		                  (unsigned long long)c->max_total);
	c->total += (uint64_t)size;

	cleanup_free char *path = NULL;
	int r = sw_oci__layer_path_clean(&path, entry, "layer entry", err);
	if (r < 0)
		return r;
	if (!*path)
		return 0; /* the root folder itself: left as it is */
	cleanup_free char *parent = NULL;
	const char *base;
	split_path(path, &parent, &base);

	if (strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) == 0)
		return apply_whiteout(c, parent, base, entry, err);

	const char *link = archive_entry_hardlink(e);
	mode_t type = archive_entry_filetype(e);
	if (link) {
		r = apply_hardlink(c, link, path, entry, err);
	} else {
		if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFCHR &&
		    type != AE_IFBLK && type != AE_IFIFO)
			return entry_fail(err, entry, "unsupported entry type 0%o", (unsigned)type);
		cleanup_close int pfd = -1;
		if ((r = parent_open(c, parent, true, &pfd, entry, err)) < 0)
			return r;
		switch (type) {
		case AE_IFREG:
			r = apply_file(c, a, e, pfd, base, entry, err);
			break;
		case AE_IFDIR:
			r = apply_dir(c, e, pfd, base, path, entry, err);
			break;
		case AE_IFLNK:
			r = apply_symlink(c, e, pfd, base, entry, err);
			break;
		default:
			r = apply_node(c, e, pfd, base, entry, err);
			break;
		}
	}
	if (r < 0)
		return r;
	set_add_with_parents(&c->written, path);
	return 0;
}

static int dir_fix_cmp(const void *pa, const void *pb)
{
	const dir_fix *a = pa, *b = pb;
	if (a->depth != b->depth)
		return a->depth < b->depth ? 1 : -1;
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Folder modes and times, deepest first (writing into a folder changes its mtime). */
static int fix_dirs(apply_ctx *c, sw_error **err)
{
	if (c->n_dirs > 1)
		qsort(c->dirs, c->n_dirs, sizeof(*c->dirs), dir_fix_cmp);
	for (size_t i = 0; i < c->n_dirs; i++) {
		dir_fix *f = &c->dirs[i];
		sw_error *ignored = NULL;
		int pfd = -1;
		int r = resolve_dir(c, f->path, false, &pfd, f->path, &ignored);
		sw_error_free(ignored);
		if (r != 0)
			continue; /* replaced or removed later in the layer */
		int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(pfd);
		if (fd < 0)
			return entry_os(err, errno, f->path, "open folder");
		if (fchmod(fd, f->mode) < 0 || futimens(fd, f->ts) < 0) {
			int e = errno;
			close(fd);
			return entry_os(err, e, f->path, "set folder mode and times");
		}
		close(fd);
	}
	return 0;
}

static int apply_archive(apply_ctx *c, struct archive *a, sw_error **err)
{
	cleanup_free char *last = NULL;
	for (;;) {
		struct archive_entry *e = NULL;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			if (last)
				return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE,
				                    archive_errno(a),
				                    "read the entry after '%s': %s", last,
				                    archive_error_string(a));
			return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE,
			                    archive_errno(a), "read: %s", archive_error_string(a));
		}
		const char *entry = archive_entry_pathname(e);
		if (!entry)
			entry = "";
		c->st.entries++;
		if (c->st.entries > c->max_entries)
			return entry_fail(err, entry, "the layer has more than %llu entries",
			                  (unsigned long long)c->max_entries);
		int r = apply_entry(c, a, e, entry, err);
		if (r < 0)
			return r;
		free(last);
		last = sw_xstrdup(entry);
	}
	return fix_dirs(c, err);
}

static int apply_run(sw_oci_apply_stats *stats, const char *rootfs, struct archive *a,
                     const sw_oci_apply_opts *opts, sw_error **err)
{
	apply_ctx c;
	memset(&c, 0, sizeof(c));
	c.cache_fd = -1;
	c.max_entries = opts && opts->max_entries ? opts->max_entries : DEFAULT_MAX_ENTRIES;
	c.max_total = opts && opts->max_total_bytes ? opts->max_total_bytes : DEFAULT_MAX_TOTAL;
	c.max_entry = opts && opts->max_entry_bytes ? opts->max_entry_bytes : DEFAULT_MAX_ENTRY;
	c.keep_owners = opts && opts->keep_owners;
	c.wh_devices = opts && opts->whiteouts_as_devices;
	c.rootfd = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c.rootfd < 0)
		return sw_error_os(err, errno, "open target folder");
	locale_t old = uselocale(sw_oci__c_locale());
	int r = apply_archive(&c, a, err);
	uselocale(old);
	if (stats)
		*stats = c.st;
	cache_drop(&c);
	close(c.rootfd);
	set_clear(&c.written);
	for (size_t i = 0; i < c.n_dirs; i++)
		free(c.dirs[i].path);
	free(c.dirs);
	return r;
}

typedef struct fd_source {
	int fd;
	void *buf;
} fd_source;

static la_ssize_t fd_read_cb(struct archive *a, void *payload, const void **out)
{
	fd_source *src = payload;
	*out = src->buf;
	for (;;) {
		ssize_t n = read(src->fd, src->buf, SW_OCI__LAYER_BUF);
		if (n >= 0)
			return n;
		if (errno != EINTR) {
			archive_set_error(a, errno, "read: %s", strerror(errno));
			return -1;
		}
	}
}

int sw_oci_layer_apply_fd(sw_oci_apply_stats *stats, const char *rootfs, int fd,
                          const sw_oci_apply_opts *opts, sw_error **err)
{
	if (stats)
		memset(stats, 0, sizeof(*stats));
	fd_source src = { fd, sw_xmalloc(SW_OCI__LAYER_BUF) };
	struct archive *a = sw_oci__layer_reader_new();
	int r;
	if (archive_read_open(a, &src, NULL, fd_read_cb, NULL) != ARCHIVE_OK)
		r = sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE, archive_errno(a),
		                 "read: %s", archive_error_string(a));
	else
		r = apply_run(stats, rootfs, a, opts, err);
	archive_read_free(a);
	free(src.buf);
	if (r < 0)
		return sw_error_wrap(err, "apply layer onto '%s'", rootfs);
	return 0;
}

int sw_oci_layer_apply_mem(sw_oci_apply_stats *stats, const char *rootfs, const void *buf,
                           size_t len, const sw_oci_apply_opts *opts, sw_error **err)
{
	if (stats)
		memset(stats, 0, sizeof(*stats));
	struct archive *a = sw_oci__layer_reader_new();
	int r;
	if (archive_read_open_memory(a, buf, len) != ARCHIVE_OK)
		r = sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE, archive_errno(a),
		                 "read: %s", archive_error_string(a));
	else
		r = apply_run(stats, rootfs, a, opts, err);
	archive_read_free(a);
	if (r < 0)
		return sw_error_wrap(err, "apply layer onto '%s'", rootfs);
	return 0;
}
