/* SPDX-License-Identifier: Apache-2.0 */
/*
 * COPY and ADD into a mounted rootfs with Docker's (BuildKit's) semantics. The destination is
 * resolved inside dst_root with symlinks followed as chroot would (an image's "/app -> /x" leads
 * to dst_root/x, never outside); below it every folder is opened relative to its parent's fd
 * with O_NOFOLLOW, so nothing is ever written through a symlink or outside the root. Several
 * sources or a trailing "/" make dest a folder; a source folder copies its content; a single
 * file goes into dest when dest is an existing folder. Created destination folders are 0755 and
 * owned by the --chown user (else 0:0); copied entries keep their mode (with setuid, setgid,
 * sticky) unless --chmod, their owner with keep_owners (--from) or become 0:0 (context) unless
 * --chown, and their times (clamped to SOURCE_DATE_EPOCH); symlinks stay symlinks, hard links
 * inside one source stay hard links, fifos and devices are recreated. Data moves with
 * copy_file_range, falling back to read/write. ADD extracts local tar archives (plain, gzip,
 * bzip2, xz, zstd; detected by content with libarchive, which only reads here) into dest with
 * the same rules, refusing entries that would leave the destination.
 */
#include "builder/builder_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#define COPY_BUF ((size_t)256 << 10)
#define MAX_LINKS_TRACKED 4096
#define ARCHIVE_MAX_ENTRIES 1000000ULL
#define ARCHIVE_MAX_TOTAL (64ULL << 30)

typedef struct hard_link {
	dev_t dev;
	ino_t ino;
	int fd; /* O_PATH of the first copy */
} hard_link;

typedef struct copier {
	int rootfd; /* dst_root, O_PATH */
	int srcfd;  /* src_root, O_PATH */
	const sw_build__copy_opts *o;
	sw_build__copy_stats st;
	char *buf;
	bool no_cfr;
	hard_link *links;
	size_t n_links;
} copier;

static void links_reset(copier *c)
{
	for (size_t i = 0; i < c->n_links; i++)
		close(c->links[i].fd);
	c->n_links = 0;
}

/* ---------------------------------------------------------------- metadata */

static void entry_owner(const copier *c, const struct stat *st, uid_t *uid, gid_t *gid)
{
	if (c->o->chown) {
		*uid = c->o->uid;
		*gid = c->o->gid;
	} else if (c->o->keep_owners) {
		*uid = st->st_uid;
		*gid = st->st_gid;
	} else {
		*uid = 0;
		*gid = 0;
	}
}

static mode_t entry_mode(const copier *c, const struct stat *st)
{
	return c->o->chmod ? (c->o->mode & 07777) : (st->st_mode & 07777);
}

static void clamp_times(const copier *c, struct timespec ts[2])
{
	int64_t sde = c->o->source_date_epoch;
	if (sde < 0)
		return;
	for (int i = 0; i < 2; i++) {
		if (ts[i].tv_sec > sde || (ts[i].tv_sec == sde && ts[i].tv_nsec > 0)) {
			ts[i].tv_sec = (time_t)sde;
			ts[i].tv_nsec = 0;
		}
	}
}

static void entry_times(const copier *c, const struct stat *st, struct timespec ts[2])
{
	ts[0] = st->st_atim;
	ts[1] = st->st_mtim;
	clamp_times(c, ts);
}

static bool xattr_keep(const char *name)
{
	if (strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0)
		return false;
	if (strncmp(name, "security.", 9) == 0)
		return strcmp(name, "security.capability") == 0;
	return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0;
}

/* Copy the kept xattrs from fd `in` to fd `out`; where the target cannot hold them, skip. */
static int copy_xattrs(int in, int out, const char *shown, sw_error **err)
{
	char list[4096];
	ssize_t n = flistxattr(in, list, sizeof(list));
	cleanup_free char *big = NULL;
	char *names = list;
	if (n < 0 && errno == ERANGE) {
		ssize_t need = flistxattr(in, NULL, 0);
		if (need <= 0 || need > (64 << 10))
			return 0;
		big = sw_xmalloc((size_t)need);
		n = flistxattr(in, big, (size_t)need);
		names = big;
	}
	if (n <= 0)
		return 0;
	cleanup_free char *val = NULL;
	for (char *p = names; p < names + n; p += strlen(p) + 1) {
		if (!*p || !xattr_keep(p))
			continue;
		if (!val)
			val = sw_xmalloc(64 << 10);
		ssize_t vl = fgetxattr(in, p, val, 64 << 10);
		if (vl < 0)
			continue;
		if (fsetxattr(out, p, val, (size_t)vl, 0) == 0)
			continue;
		if (errno == ENOTSUP || errno == EPERM)
			continue;
		return sw_error_os(err, errno, "copy to '%s': set xattr %s", shown, p);
	}
	return 0;
}

/* Owner, mode, times of an open file or folder (chown first: it clears setuid bits). */
static int set_meta_fd(const copier *c, int fd, const struct stat *st, const char *shown,
                       sw_error **err)
{
	uid_t uid;
	gid_t gid;
	entry_owner(c, st, &uid, &gid);
	if (fchown(fd, uid, gid) < 0)
		return sw_error_os(err, errno, "copy to '%s': chown %lu:%lu", shown,
		                   (unsigned long)uid, (unsigned long)gid);
	if (fchmod(fd, entry_mode(c, st)) < 0)
		return sw_error_os(err, errno, "copy to '%s': chmod", shown);
	struct timespec ts[2];
	entry_times(c, st, ts);
	if (futimens(fd, ts) < 0)
		return sw_error_os(err, errno, "copy to '%s': set times", shown);
	return 0;
}

/* ---------------------------------------------------------------- destination folders */

/* Remove `name` in `dfd` and everything under it, never following a symlink. */
static int rm_tree(int dfd, const char *name, const char *shown, sw_error **err)
{
	if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return sw_error_os(err, errno, "remove '%s'", shown);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "remove '%s'", shown);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return sw_error_os(err, errno, "remove '%s'", shown);
	}
	cleanup_strv char **names = NULL;
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			sw_strv_push(&names, de->d_name);
	int r = 0;
	for (size_t i = 0; r == 0 && names && names[i]; i++)
		r = rm_tree(dirfd(d), names[i], shown, err);
	closedir(d);
	if (r == 0 && unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		r = sw_error_os(err, errno, "remove '%s'", shown);
	return r;
}

/*
 * Resolve `path` (an image path) inside the root following symlinks as chroot would, and
 * create the folders that are missing (0755, owned uid:gid). *out_fd is the folder opened
 * O_RDONLY; *out_rel (may be NULL) its root-relative path.
 */
static int mkdir_in_root(copier *c, const char *path, uid_t uid, gid_t gid, int *out_fd,
                         char **out_rel, sw_error **err)
{
	*out_fd = -1;
	if (out_rel)
		*out_rel = NULL;
	cleanup_free char *rel = NULL;
	int r = sw_path_resolve_in_root(&rel, c->rootfd, path, 0, err);
	if (r < 0)
		return r;
	int fd = openat(c->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open the destination root");
	size_t len = strlen(rel);
	for (size_t pos = 0; pos < len;) {
		size_t end = pos;
		while (end < len && rel[end] != '/')
			end++;
		cleanup_free char *comp = sw_xstrndup(rel + pos, end - pos);
		int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0 && errno == ENOENT) {
			if (mkdirat(fd, comp, 0700) < 0 && errno != EEXIST) {
				int e = errno;
				close(fd);
				return sw_error_os(err, e, "create folder '/%.*s'", (int)end, rel);
			}
			nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (nfd >= 0) {
				struct timespec ts[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };
				if (c->o->source_date_epoch >= 0) {
					ts[0].tv_sec = ts[1].tv_sec =
					        (time_t)c->o->source_date_epoch;
					ts[0].tv_nsec = ts[1].tv_nsec = 0;
				}
				if (fchown(nfd, uid, gid) < 0 || fchmod(nfd, 0755) < 0 ||
				    futimens(nfd, ts) < 0) {
					int e = errno;
					close(nfd);
					close(fd);
					return sw_error_os(err, e, "set up folder '/%.*s'",
					                   (int)end, rel);
				}
			}
		}
		if (nfd < 0) {
			int e = errno;
			close(fd);
			if (e == ENOTDIR || e == ELOOP)
				return sw_error_set(err, SW_ERR_INVALID,
				                    "cannot copy to non-directory: /%.*s", (int)end,
				                    rel);
			return sw_error_os(err, e, "open folder '/%.*s'", (int)end, rel);
		}
		close(fd);
		fd = nfd;
		pos = end + 1;
	}
	*out_fd = fd;
	if (out_rel)
		*out_rel = steal_pointer(&rel);
	return 0;
}

/* ---------------------------------------------------------------- entries */

static int copy_data(copier *c, int in, int out, const char *shown, sw_error **err)
{
	uint64_t done = 0;
	if (!c->no_cfr) {
		for (;;) {
			ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)1 << 30, 0);
			if (n > 0) {
				done += (uint64_t)n;
				continue;
			}
			if (n == 0)
				goto out;
			if (errno == EINTR)
				continue;
			if (done == 0 &&
			    (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
			     errno == EOPNOTSUPP || errno == EBADF || errno == EPERM)) {
				/* the same source and destination for the whole copy: one refusal
				 * holds for every other file, so do not ask again per file */
				c->no_cfr = true;
				break;
			}
			return sw_error_os(err, errno, "copy to '%s'", shown);
		}
	}
	if (!c->buf)
		c->buf = sw_xmalloc(COPY_BUF);
	for (;;) {
		ssize_t n = read(in, c->buf, COPY_BUF);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return sw_error_os(err, errno, "copy to '%s': read", shown);
		}
		if (n == 0)
			break;
		int r = sw_fs_write_all(out, c->buf, (size_t)n, err);
		if (r < 0)
			return sw_error_wrap(err, "copy to '%s'", shown);
		done += (uint64_t)n;
	}
out:
	c->st.bytes += done;
	return 0;
}

/* Make room for a non-folder at (dfd, name): a folder there is an error, anything else goes. */
static int make_room(int dfd, const char *name, const char *shown, sw_error **err)
{
	struct stat st;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return sw_error_os(err, errno, "stat '%s'", shown);
	}
	if (S_ISDIR(st.st_mode))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "cannot replace the folder '%s' with a file", shown);
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return sw_error_os(err, errno, "replace '%s'", shown);
	return 0;
}

static int link_to(int fd, int dfd, const char *name)
{
	if (linkat(fd, "", dfd, name, AT_EMPTY_PATH) == 0)
		return 0;
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, proc, dfd, name, AT_SYMLINK_FOLLOW);
}

/*
 * Copy one non-folder entry: the source is `sname` below the folder `sdirfd` (a name or a
 * resolved path, never followed), its lstat `st` and link target `link`; the target is `dname`
 * in the folder `ddirfd`. `shown` is the target's image path for messages.
 */
static int copy_entry(copier *c, int sdirfd, const char *sname, const struct stat *st,
                      const char *link, int ddirfd, const char *dname, const char *shown,
                      sw_error **err)
{
	if (S_ISSOCK(st->st_mode)) {
		SW_LOG(SW_LOG_DEBUG, "copy: socket '%s' skipped", shown);
		return 0;
	}
	int r = make_room(ddirfd, dname, shown, err);
	if (r < 0)
		return r;
	uid_t uid;
	gid_t gid;
	entry_owner(c, st, &uid, &gid);
	struct timespec ts[2];
	entry_times(c, st, ts);

	if (S_ISLNK(st->st_mode)) {
		if (symlinkat(link ? link : "", ddirfd, dname) < 0)
			return sw_error_os(err, errno, "copy to '%s': create symlink", shown);
		if (fchownat(ddirfd, dname, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
			return sw_error_os(err, errno, "copy to '%s': chown", shown);
		if (utimensat(ddirfd, dname, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return sw_error_os(err, errno, "copy to '%s': set times", shown);
		c->st.files++;
		return 0;
	}
	if (!S_ISREG(st->st_mode)) {
		if (mknodat(ddirfd, dname, (st->st_mode & S_IFMT) | 0600, st->st_rdev) < 0)
			return sw_error_os(err, errno, "copy to '%s': create node", shown);
		if (fchownat(ddirfd, dname, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(ddirfd, dname, entry_mode(c, st), 0) < 0 ||
		    utimensat(ddirfd, dname, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return sw_error_os(err, errno, "copy to '%s': set owner, mode and times",
			                   shown);
		c->st.files++;
		return 0;
	}

	if (st->st_nlink > 1) {
		for (size_t i = 0; i < c->n_links; i++) {
			if (c->links[i].dev != st->st_dev || c->links[i].ino != st->st_ino)
				continue;
			if (link_to(c->links[i].fd, ddirfd, dname) < 0)
				return sw_error_os(err, errno, "copy to '%s': hard link", shown);
			c->st.files++;
			return 0;
		}
	}
	cleanup_close int in = sw_build__open_beneath(sdirfd, sname, O_RDONLY | O_NOCTTY, 0);
	if (in < 0)
		return sw_error_os(err, errno, "copy to '%s': open the source", shown);
	cleanup_close int out =
	        openat(ddirfd, dname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (out < 0)
		return sw_error_os(err, errno, "copy to '%s': create", shown);
	r = copy_data(c, in, out, shown, err);
	if (r == 0)
		r = copy_xattrs(in, out, shown, err);
	if (r == 0)
		r = set_meta_fd(c, out, st, shown, err);
	if (r < 0)
		return r;
	if (st->st_nlink > 1 && c->n_links < MAX_LINKS_TRACKED) {
		int pfd = openat(ddirfd, dname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (pfd >= 0) {
			c->links = sw_xrealloc(c->links, (c->n_links + 1) * sizeof(*c->links));
			c->links[c->n_links++] = (hard_link){ st->st_dev, st->st_ino, pfd };
		}
	}
	c->st.files++;
	return 0;
}

/* ---------------------------------------------------------------- folders */

typedef struct dir_frame {
	const char *rel; /* start-relative (points into the walk) */
	int sfd;         /* source folder, O_RDONLY */
	int dfd;         /* target folder, O_RDONLY */
	const struct stat *st;
	bool top;
} dir_frame;

static int frame_close(copier *c, dir_frame *f, const char *shown, sw_error **err)
{
	int r = 0;
	if (!f->top) {
		r = copy_xattrs(f->sfd, f->dfd, shown, err);
		if (r == 0)
			r = set_meta_fd(c, f->dfd, f->st, shown, err);
	}
	if (f->sfd >= 0)
		close(f->sfd);
	if (f->dfd >= 0)
		close(f->dfd);
	f->sfd = f->dfd = -1;
	return r;
}

static bool is_parent(const char *parent, const char *rel)
{
	size_t n = strlen(parent);
	if (n == 0)
		return strchr(rel, '/') == NULL;
	return strncmp(rel, parent, n) == 0 && rel[n] == '/' && strchr(rel + n + 1, '/') == NULL;
}

/*
 * Copy the content of the source folder `srel` (root-relative under srcfd) into the open
 * target folder `dfd` (consumed), whose image path is `dshown`.
 */
static int copy_tree(copier *c, const char *srel, int dfd, const char *dshown, sw_error **err)
{
	sw_build__walk w;
	int r = sw_build__walk_tree(&w, c->srcfd, srel, c->o->ignore, err);
	if (r < 0) {
		close(dfd);
		return r;
	}
	dir_frame *stack = sw_xcalloc(w.n + 1, sizeof(*stack));
	size_t depth = 0;
	int sfd = sw_build__open_beneath(c->srcfd, srel, O_RDONLY | O_DIRECTORY, 0);
	if (sfd < 0) {
		r = sw_error_os(err, errno, "open source folder '%s'", *srel ? srel : ".");
		close(dfd);
		goto out;
	}
	stack[depth++] = (dir_frame){ "", sfd, dfd, &w.v[0].st, true };
	for (size_t i = 1; r == 0 && i < w.n; i++) {
		const sw_build__walk_entry *e = &w.v[i];
		while (depth > 1 && !is_parent(stack[depth - 1].rel, e->rel)) {
			cleanup_free char *shown = sw_path_join(dshown, stack[depth - 1].rel);
			r = frame_close(c, &stack[--depth], shown, err);
			if (r < 0)
				break;
		}
		if (r < 0)
			break;
		dir_frame *top = &stack[depth - 1];
		const char *name = strrchr(e->rel, '/');
		name = name ? name + 1 : e->rel;
		cleanup_free char *shown = sw_path_join(dshown, e->rel);
		if (!S_ISDIR(e->st.st_mode)) {
			r = copy_entry(c, top->sfd, name, &e->st, e->link, top->dfd, name, shown,
			               err);
			continue;
		}
		struct stat cur;
		if (fstatat(top->dfd, name, &cur, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) {
				r = sw_error_os(err, errno, "stat '%s'", shown);
				break;
			}
			if (mkdirat(top->dfd, name, 0700) < 0) {
				r = sw_error_os(err, errno, "create folder '%s'", shown);
				break;
			}
		} else if (!S_ISDIR(cur.st_mode)) {
			r = sw_error_set(err, SW_ERR_INVALID, "cannot copy to non-directory: %s",
			                 shown);
			break;
		}
		int nd = openat(top->dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nd < 0) {
			r = sw_error_os(err, errno, "open folder '%s'", shown);
			break;
		}
		int ns = openat(top->sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (ns < 0) {
			r = sw_error_os(err, errno, "open source folder '%s'", e->rel);
			close(nd);
			break;
		}
		stack[depth++] = (dir_frame){ e->rel, ns, nd, &e->st, false };
	}
	while (depth > 0) {
		cleanup_free char *shown = sw_path_join(dshown, stack[depth - 1].rel);
		if (r < 0) {
			stack[depth - 1].top = true; /* failing: no more metadata, just close */
			(void)!frame_close(c, &stack[--depth], shown, NULL);
		} else {
			r = frame_close(c, &stack[--depth], shown, err);
		}
	}
out:
	free(stack);
	sw_build__walk_clear(&w);
	return r;
}

/* ---------------------------------------------------------------- archives (ADD) */

static struct archive *reader_new(void)
{
	struct archive *a = archive_read_new();
	if (!a)
		abort();
	/* the formats Docker's ADD extracts; never external programs */
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_tar(a);
	return a;
}

/* Is the open file a tar archive (maybe compressed)? Rewinds fd. */
static bool is_archive(int fd)
{
	struct archive *a = reader_new();
	struct archive_entry *e;
	bool ok = archive_read_open_fd(a, fd, 64 << 10) == ARCHIVE_OK;
	if (ok) {
		int r = archive_read_next_header(a, &e);
		ok = r == ARCHIVE_OK || r == ARCHIVE_WARN;
	}
	archive_read_free(a);
	if (lseek(fd, 0, SEEK_SET) < 0)
		return false;
	return ok;
}

typedef struct dir_fix {
	char *rel; /* resolved, root-relative */
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec ts[2];
	size_t depth;
} dir_fix;

typedef struct extractor {
	copier *c;
	const char *src; /* for messages */
	char *drel;      /* the destination folder, resolved */
	char *cache_key; /* the last parent (unresolved, root-relative) ... */
	char *cache_rel; /* ... its resolved path ... */
	int cache_fd;    /* ... and fd */
	dir_fix *fixes;
	size_t n_fixes;
} extractor;

static void ex_cache_drop(extractor *x)
{
	free(x->cache_key);
	free(x->cache_rel);
	x->cache_key = x->cache_rel = NULL;
	if (x->cache_fd >= 0)
		close(x->cache_fd);
	x->cache_fd = -1;
}

static int ex_fail(extractor *x, sw_error **err, const char *entry, const char *fmt, ...)
        SW_PRINTF(4, 5);

static int ex_fail(extractor *x, sw_error **err, const char *entry, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *msg = sw_xvasprintf(fmt, ap);
	va_end(ap);
	return sw_error_set(err, SW_ERR_INVALID, "ADD %s: archive entry '%s': %s", x->src, entry,
	                    msg);
}

/* Clean an entry name relative to the destination; NULL when it would leave it. */
static char *entry_clean(const char *name)
{
	while (*name == '/')
		name++;
	char *c = sw_path_clean(*name ? name : ".");
	if (strcmp(c, "..") == 0 || strncmp(c, "../", 3) == 0) {
		free(c);
		return NULL;
	}
	return c;
}

/* The folder holding `clean` (relative to the destination), resolved inside the root and
 * created when missing. *out_fd is borrowed from the cache. */
static int ex_parent(extractor *x, const char *clean, int *out_fd, char **out_rel, sw_error **err)
{
	cleanup_free char *full = sw_path_join(x->drel, clean);
	char *slash = strrchr(full, '/');
	cleanup_free char *key = slash ? sw_xstrndup(full, (size_t)(slash - full)) : sw_xstrdup("");
	if (!x->cache_key || strcmp(x->cache_key, key) != 0) {
		ex_cache_drop(x);
		cleanup_free char *img = sw_xasprintf("/%s", key);
		int fd = -1;
		char *rel = NULL;
		int r = mkdir_in_root(x->c, img, 0, 0, &fd, &rel, err);
		if (r < 0)
			return r;
		x->cache_key = steal_pointer(&key);
		x->cache_rel = rel;
		x->cache_fd = fd;
	}
	*out_fd = x->cache_fd;
	*out_rel = x->cache_rel;
	return 0;
}

static int ex_data(extractor *x, struct archive *a, int fd, int64_t size, const char *entry,
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
			                    archive_errno(a), "ADD %s: archive entry '%s': %s",
			                    x->src, entry, archive_error_string(a));
		if (off < 0 || (uint64_t)off + len > (uint64_t)size)
			return ex_fail(x, err, entry, "more data than its declared %lld bytes",
			               (long long)size);
		const char *p = buf;
		while (len > 0) {
			ssize_t n = pwrite(fd, p, len, off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return sw_error_os(err, errno, "ADD %s: archive entry '%s': write",
				                   x->src, entry);
			}
			p += n;
			off += n;
			len -= (size_t)n;
		}
		if (off > end)
			end = off;
	}
	if (end < size && ftruncate(fd, size) < 0)
		return sw_error_os(err, errno, "ADD %s: archive entry '%s': extend", x->src, entry);
	x->c->st.bytes += (uint64_t)size;
	return 0;
}

static void ex_times(const extractor *x, struct archive_entry *e, struct timespec ts[2])
{
	ts[1].tv_sec = archive_entry_mtime_is_set(e) ? archive_entry_mtime(e) : 0;
	ts[1].tv_nsec = archive_entry_mtime_is_set(e) ? archive_entry_mtime_nsec(e) : 0;
	if (ts[1].tv_nsec < 0 || ts[1].tv_nsec > 999999999)
		ts[1].tv_nsec = 0;
	ts[0] = ts[1];
	clamp_times(x->c, ts);
}

static void ex_xattrs(struct archive_entry *e, int fd)
{
	const char *name;
	const void *value;
	size_t len;
	if (archive_entry_xattr_reset(e) == 0)
		return;
	while (archive_entry_xattr_next(e, &name, &value, &len) == ARCHIVE_OK)
		if (name && xattr_keep(name))
			(void)fsetxattr(fd, name, value, len, 0); /* best effort, as Docker */
}

static int ex_entry(extractor *x, struct archive *a, struct archive_entry *e, sw_error **err)
{
	const char *name = archive_entry_pathname(e);
	if (!name || !*name)
		return ex_fail(x, err, "", "an entry without a name");
	cleanup_free char *clean = entry_clean(name);
	if (!clean)
		return ex_fail(x, err, name, "the path leads outside of the destination");
	mode_t type = archive_entry_filetype(e);
	const char *hl = archive_entry_hardlink(e);
	uid_t uid = (uid_t)archive_entry_uid(e);
	gid_t gid = (gid_t)archive_entry_gid(e);
	mode_t mode = archive_entry_perm(e) & 07777;
	struct timespec ts[2];
	ex_times(x, e, ts);

	if (strcmp(clean, ".") == 0) {
		if (type != AE_IFDIR)
			return ex_fail(x, err, name, "not a folder");
		dir_fix f = { sw_xstrdup(x->drel), mode, uid, gid, { ts[0], ts[1] }, 0 };
		x->fixes = sw_xrealloc(x->fixes, (x->n_fixes + 1) * sizeof(*x->fixes));
		x->fixes[x->n_fixes++] = f;
		return 0;
	}
	int pfd = -1;
	char *prel = NULL;
	int r = ex_parent(x, clean, &pfd, &prel, err);
	if (r < 0)
		return sw_error_wrap(err, "ADD %s: archive entry '%s'", x->src, name);
	const char *base = strrchr(clean, '/');
	base = base ? base + 1 : clean;
	cleanup_free char *rel = *prel ? sw_xasprintf("%s/%s", prel, base) : sw_xstrdup(base);
	cleanup_free char *shown = sw_xasprintf("/%s", rel);

	struct stat cur;
	bool exists = fstatat(pfd, base, &cur, AT_SYMLINK_NOFOLLOW) == 0;
	bool keep_dir = exists && S_ISDIR(cur.st_mode) && type == AE_IFDIR && !hl;
	if (exists && !keep_dir) {
		bool resolution_changes = S_ISDIR(cur.st_mode) || S_ISLNK(cur.st_mode);
		r = rm_tree(pfd, base, shown, err);
		if (r < 0)
			return r;
		if (resolution_changes) {
			ex_cache_drop(x);
			r = ex_parent(x, clean, &pfd, &prel, err);
			if (r < 0)
				return r;
		}
	}

	if (hl) {
		cleanup_free char *lclean = entry_clean(hl);
		if (!lclean || strcmp(lclean, ".") == 0)
			return ex_fail(x, err, name,
			               "hard link to '%s' leads outside of the destination", hl);
		cleanup_free char *limg = sw_xasprintf("/%s/%s", x->drel, lclean);
		cleanup_free char *lrel = NULL;
		r = sw_path_resolve_in_root(&lrel, x->c->rootfd, limg, SW_PATH_NOFOLLOW, err);
		if (r < 0)
			return r;
		cleanup_close int lfd = sw_build__open_beneath(x->c->rootfd, lrel, O_PATH, 0);
		struct stat lst;
		if (lfd < 0 || fstat(lfd, &lst) < 0 || S_ISDIR(lst.st_mode))
			return ex_fail(x, err, name, "hard link target '%s' not found", hl);
		if (link_to(lfd, pfd, base) < 0)
			return sw_error_os(err, errno, "ADD %s: archive entry '%s': hard link",
			                   x->src, name);
		x->c->st.files++;
		return 0;
	}

	switch (type) {
	case AE_IFDIR: {
		if (!keep_dir && mkdirat(pfd, base, 0700) < 0)
			return sw_error_os(err, errno, "ADD %s: create folder '%s'", x->src, shown);
		size_t depth = 0;
		for (const char *p = rel; *p; p++)
			depth += *p == '/';
		dir_fix f = { sw_xstrdup(rel), mode, uid, gid, { ts[0], ts[1] }, depth + 1 };
		x->fixes = sw_xrealloc(x->fixes, (x->n_fixes + 1) * sizeof(*x->fixes));
		x->fixes[x->n_fixes++] = f;
		return 0;
	}
	case AE_IFREG: {
		int64_t size = archive_entry_size(e);
		if (size < 0)
			return ex_fail(x, err, name, "a negative size");
		cleanup_close int fd = openat(
		        pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return sw_error_os(err, errno, "ADD %s: create '%s'", x->src, shown);
		r = ex_data(x, a, fd, size, name, err);
		if (r < 0)
			return r;
		if (fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0)
			return sw_error_os(err, errno, "ADD %s: set owner and mode of '%s'", x->src,
			                   shown);
		ex_xattrs(e, fd);
		if (futimens(fd, ts) < 0)
			return sw_error_os(err, errno, "ADD %s: set times of '%s'", x->src, shown);
		x->c->st.files++;
		return 0;
	}
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(e);
		if (symlinkat(target ? target : "", pfd, base) < 0)
			return sw_error_os(err, errno, "ADD %s: create symlink '%s'", x->src,
			                   shown);
		if (fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return sw_error_os(err, errno, "ADD %s: set owner and times of '%s'",
			                   x->src, shown);
		ex_cache_drop(x); /* paths through it now resolve elsewhere */
		x->c->st.files++;
		return 0;
	}
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO: {
		dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
		if (mknodat(pfd, base, type | 0600, type == AE_IFIFO ? 0 : dev) < 0)
			return sw_error_os(err, errno, "ADD %s: create node '%s'", x->src, shown);
		if (fchownat(pfd, base, uid, gid, AT_SYMLINK_NOFOLLOW) < 0 ||
		    fchmodat(pfd, base, mode, 0) < 0 ||
		    utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
			return sw_error_os(err, errno, "ADD %s: set owner, mode and times of '%s'",
			                   x->src, shown);
		x->c->st.files++;
		return 0;
	}
	default:
		SW_LOG(SW_LOG_DEBUG, "ADD %s: archive entry '%s' of type %o skipped", x->src, name,
		       (unsigned)type);
		return 0;
	}
}

static int fix_cmp(const void *a, const void *b)
{
	const dir_fix *x = a, *y = b;
	if (x->depth != y->depth)
		return x->depth > y->depth ? -1 : 1;
	return strcmp(x->rel, y->rel);
}

/* Extract the archive open at `fd` into the folder `dest` (an image path). */
static int extract(copier *c, const char *src, int fd, const char *dest, sw_error **err)
{
	extractor x = { .c = c, .src = src, .cache_fd = -1 };
	uid_t uid = c->o->chown ? c->o->uid : 0;
	gid_t gid = c->o->chown ? c->o->gid : 0;
	int dfd = -1;
	int r = mkdir_in_root(c, dest, uid, gid, &dfd, &x.drel, err);
	if (r < 0)
		return r;
	close(dfd);
	struct archive *a = reader_new();
	if (archive_read_open_fd(a, fd, 256 << 10) != ARCHIVE_OK) {
		r = sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE, archive_errno(a),
		                 "ADD %s: %s", src, archive_error_string(a));
		goto out;
	}
	uint64_t entries = 0, total = 0;
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			r = sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE, archive_errno(a),
			                 "ADD %s: %s", src, archive_error_string(a));
			break;
		}
		if (++entries > ARCHIVE_MAX_ENTRIES) {
			r = sw_error_set(err, SW_ERR_INVALID, "ADD %s: more than %llu entries", src,
			                 ARCHIVE_MAX_ENTRIES);
			break;
		}
		int64_t size = archive_entry_size(e);
		total += size > 0 ? (uint64_t)size : 0;
		if (total > ARCHIVE_MAX_TOTAL) {
			r = sw_error_set(err, SW_ERR_INVALID, "ADD %s: more than %llu bytes", src,
			                 ARCHIVE_MAX_TOTAL);
			break;
		}
		r = ex_entry(&x, a, e, err);
		if (r < 0)
			break;
	}
	ex_cache_drop(&x);
	if (r == 0 && x.n_fixes) {
		qsort(x.fixes, x.n_fixes, sizeof(*x.fixes), fix_cmp);
		for (size_t i = 0; r == 0 && i < x.n_fixes; i++) {
			dir_fix *f = &x.fixes[i];
			int fixfd = sw_build__open_beneath(c->rootfd, f->rel,
			                                   O_RDONLY | O_DIRECTORY, 0);
			if (fixfd < 0)
				continue; /* replaced by a later entry */
			if (fchown(fixfd, f->uid, f->gid) < 0 || fchmod(fixfd, f->mode) < 0 ||
			    futimens(fixfd, f->ts) < 0)
				r = sw_error_os(err, errno,
				                "ADD %s: set owner, mode and times of '/%s'", src,
				                f->rel);
			close(fixfd);
		}
	}
out:
	for (size_t i = 0; i < x.n_fixes; i++)
		free(x.fixes[i].rel);
	free(x.fixes);
	free(x.drel);
	archive_read_free(a);
	return r;
}

/* ---------------------------------------------------------------- COPY */

static const char *base_name(const char *clean)
{
	const char *s = strrchr(clean, '/');
	return s ? s + 1 : clean;
}

static int copy_source(copier *c, const char *src, const char *dest, bool dest_is_dir,
                       sw_error **err)
{
	cleanup_free char *srel = NULL;
	struct stat sst;
	int r = sw_build__source_resolve(&srel, &sst, c->srcfd, src, err);
	if (r < 0)
		return r;
	links_reset(c);
	uid_t uid = c->o->chown ? c->o->uid : 0;
	gid_t gid = c->o->chown ? c->o->gid : 0;
	bool is_dir = S_ISDIR(sst.st_mode);
	cleanup_free char *rooted = sw_xasprintf("/%s", src);
	cleanup_free char *sclean = sw_path_clean(rooted);
	const char *base = base_name(sclean);

	if (c->o->add_semantics && S_ISREG(sst.st_mode)) {
		cleanup_close int fd =
		        sw_build__open_beneath(c->srcfd, srel, O_RDONLY | O_NOCTTY, 0);
		if (fd < 0)
			return sw_error_os(err, errno, "ADD %s: open", src);
		if (is_archive(fd))
			return extract(c, src, fd, dest, err);
	}

	int dfd = -1;
	cleanup_free char *drel = NULL;
	if (dest_is_dir) {
		r = mkdir_in_root(c, dest, uid, gid, &dfd, &drel, err);
		if (r < 0)
			return r;
	} else {
		r = sw_path_resolve_in_root(&drel, c->rootfd, dest, 0, err);
		if (r < 0)
			return r;
		struct stat dst;
		bool exists =
		        fstatat(c->rootfd, *drel ? drel : ".", &dst, AT_SYMLINK_NOFOLLOW) == 0;
		if (exists && S_ISDIR(dst.st_mode)) {
			dfd = sw_build__open_beneath(c->rootfd, drel, O_RDONLY | O_DIRECTORY, 0);
			if (dfd < 0)
				return sw_error_os(err, errno, "open '/%s'", drel);
		} else if (is_dir) {
			if (exists)
				return sw_error_set(err, SW_ERR_INVALID,
				                    "cannot copy to non-directory: /%s", drel);
			cleanup_free char *img = sw_xasprintf("/%s", drel);
			r = mkdir_in_root(c, img, uid, gid, &dfd, NULL, err);
			if (r < 0)
				return r;
		} else {
			/* a file to the path dest itself */
			char *slash = strrchr(drel, '/');
			cleanup_free char *pimg =
			        slash ? sw_xasprintf("/%.*s", (int)(slash - drel), drel)
			              : sw_xstrdup("/");
			int pfd = -1;
			r = mkdir_in_root(c, pimg, uid, gid, &pfd, NULL, err);
			if (r < 0)
				return r;
			cleanup_free char *shown = sw_xasprintf("/%s", drel);
			r = copy_entry(c, c->srcfd, srel, &sst, NULL, pfd, slash ? slash + 1 : drel,
			               shown, err);
			close(pfd);
			return r;
		}
	}
	cleanup_free char *dshown = sw_xasprintf("/%s", drel);
	if (is_dir)
		return copy_tree(c, srel, dfd, dshown, err);
	cleanup_free char *shown = sw_path_join(dshown, base);
	r = copy_entry(c, c->srcfd, srel, &sst, NULL, dfd, base, shown, err);
	close(dfd);
	return r;
}

int sw_build__copy(sw_build__copy_stats *stats, const char *dst_root, const char *dest,
                   const char *src_root, char *const *srcs, const sw_build__copy_opts *opts,
                   sw_error **err)
{
	if (stats)
		memset(stats, 0, sizeof(*stats));
	static const sw_build__copy_opts defaults = { .source_date_epoch = -1 };
	if (!opts)
		opts = &defaults;
	if (!dest || dest[0] != '/')
		return sw_error_set(err, SW_ERR_INVALID,
		                    "copy: the destination '%s' is not absolute", dest ? dest : "");
	size_t n = sw_strv_len(srcs);
	if (n == 0)
		return sw_error_set(err, SW_ERR_INVALID, "copy to '%s': no sources", dest);
	copier c = { .rootfd = -1, .srcfd = -1, .o = opts };
	int r = 0;
	c.rootfd = open(dst_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c.rootfd < 0)
		return sw_error_os(err, errno, "open the destination root '%s'", dst_root);
	c.srcfd = open(src_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c.srcfd < 0) {
		r = sw_error_os(err, errno, "open the source folder '%s'", src_root);
		goto out;
	}
	size_t dl = strlen(dest);
	bool dest_is_dir =
	        n > 1 || dest[dl - 1] == '/' || (dl >= 2 && strcmp(dest + dl - 2, "/.") == 0);
	for (size_t i = 0; r == 0 && i < n; i++) {
		r = copy_source(&c, srcs[i], dest, dest_is_dir, err);
		if (r < 0)
			sw_error_wrap(err, "copy '%s' to '%s'", srcs[i], dest);
	}
out:
	links_reset(&c);
	free(c.links);
	free(c.buf);
	if (c.srcfd >= 0)
		close(c.srcfd);
	close(c.rootfd);
	if (stats)
		*stats = c.st;
	return r;
}
