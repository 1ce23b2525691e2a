/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build context: walking it (openat/fdopendir relative to the context folder, never
 * following a symlink, skipping what .dockerignore excludes), resolving COPY/ADD sources with
 * Docker's rules (cleaned so they cannot leave the context, wildcards per path component as Go's
 * filepath.Match has them), and the digest of a step's inputs: every matched path's entries in
 * a sorted walk with type, mode, owner, link target, size, content and xattr digests, never a
 * time. File contents are hashed once: a stat cache keyed by the context-relative path remembers
 * (size, mtime, ctime, inode) -> digests in a compact binary file, loaded once and written
 * atomically only when it changed, so a rebuild of an unchanged context costs one walk. Entries
 * whose times are too recent to be trusted (a write in the same clock tick would not change
 * them) are not remembered.
 */
#include "builder/builder_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>

/* Bytes of file content hashed by this process (for tests: a warm digest reads nothing). */
uint64_t sw_build__context_bytes_hashed;

#define HASH_CHUNK ((size_t)256 << 10)
#define STATCACHE_MAGIC "SWSTATC1"
#define STATCACHE_MAX_BYTES ((size_t)512 << 20)
#define STATCACHE_MAX_ENTRIES 4000000u
#define XATTR_LIST_MAX_BYTES ((size_t)64 << 10)
#define XATTR_VALUE_MAX_BYTES ((size_t)64 << 10)

/* ---------------------------------------------------------------- opening below a folder */

int sw_build__open_beneath(int dirfd, const char *rel, int oflags, mode_t mode)
{
	if (rel == NULL || *rel == '\0')
		rel = ".";
	static bool no_openat2;
	if (!__atomic_load_n(&no_openat2, __ATOMIC_RELAXED)) {
		struct open_how how;
		memset(&how, 0, sizeof(how));
		how.flags = (uint64_t)(unsigned)(oflags | O_CLOEXEC);
		how.mode = (oflags & O_CREAT) ? (mode & 07777) : 0;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
		for (;;) {
			long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
			if (fd >= 0)
				return (int)fd;
			if (errno == EAGAIN || errno == EINTR)
				continue;
			if (errno != ENOSYS)
				return -1;
			__atomic_store_n(&no_openat2, true, __ATOMIC_RELAXED);
			break;
		}
	}
	/* the component walk: every folder opened with O_NOFOLLOW, ".." refused */
	cleanup_free char *p = sw_xstrdup(rel);
	int fd = dirfd;
	char *comp = p;
	for (char *slash; (slash = strchr(comp, '/')) != NULL; comp = slash + 1) {
		*slash = '\0';
		if (*comp == '\0' || strcmp(comp, ".") == 0)
			continue;
		int nfd = -1;
		if (strcmp(comp, "..") == 0)
			errno = EXDEV;
		else
			nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int e = errno;
		if (fd != dirfd)
			close(fd);
		if (nfd < 0) {
			errno = e;
			return -1;
		}
		fd = nfd;
	}
	int r = -1;
	if (strcmp(comp, "..") == 0)
		errno = EXDEV;
	else
		r = openat(fd, *comp ? comp : ".", oflags | O_NOFOLLOW | O_CLOEXEC, mode);
	int e = errno;
	if (fd != dirfd)
		close(fd);
	errno = e;
	return r;
}

/* ---------------------------------------------------------------- walking */

void sw_build__walk_clear(sw_build__walk *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++) {
		free(w->v[i].rel);
		free(w->v[i].link);
	}
	free(w->v);
	memset(w, 0, sizeof(*w));
}

static void walk_pop_to(sw_build__walk *w, size_t n)
{
	while (w->n > n) {
		w->n--;
		free(w->v[w->n].rel);
		free(w->v[w->n].link);
	}
}

static sw_build__walk_entry *walk_push(sw_build__walk *w, char *rel, const struct stat *st)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 64;
		w->v = sw_xrealloc(w->v, w->cap * sizeof(*w->v));
	}
	sw_build__walk_entry *e = &w->v[w->n++];
	e->rel = rel;
	e->st = *st;
	e->link = NULL;
	return e;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join_rel(const char *a, const char *b)
{
	if (!a || !*a)
		return sw_xstrdup(b);
	return sw_xasprintf("%s/%s", a, b);
}

static char *read_link_at(int dfd, const char *name, size_t size_hint)
{
	size_t cap = size_hint + 1 > 64 ? size_hint + 1 : 64;
	for (;;) {
		char *buf = sw_xmalloc(cap);
		ssize_t n = readlinkat(dfd, name, buf, cap);
		if (n < 0) {
			free(buf);
			return NULL;
		}
		if ((size_t)n < cap) {
			buf[n] = '\0';
			return buf;
		}
		free(buf);
		if (cap > 65536)
			return NULL;
		cap *= 2;
	}
}

typedef struct walker {
	sw_build__walk *out;
	const sw_dockerignore *di;
	const char *start; /* root-relative start, for ignore checks */
} walker;

/* Walk the open folder `dfd` (consumed) whose start-relative path is `rel`. */
static int walk_dir(walker *w, int dfd, const char *rel, sw_error **err)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		int e = errno;
		close(dfd);
		return sw_error_os(err, e, "read folder '%s'", *rel ? rel : ".");
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				r = sw_error_os(err, errno, "read folder '%s'", *rel ? rel : ".");
			break;
		}
		const char *nm = de->d_name;
		if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			names = sw_xrealloc(names, cap * sizeof(*names));
		}
		names[n++] = sw_xstrdup(nm);
	}
	if (r == 0 && n > 1)
		qsort(names, n, sizeof(*names), name_cmp);
	int fd = dirfd(d);
	for (size_t i = 0; r == 0 && i < n; i++) {
		struct stat st;
		if (fstatat(fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue; /* removed while we walked */
			cleanup_free char *p = join_rel(rel, names[i]);
			r = sw_error_os(err, errno, "stat '%s'", p);
			break;
		}
		char *crel = join_rel(rel, names[i]);
		bool ignored = false;
		cleanup_free char *rootrel = NULL;
		if (w->di) {
			rootrel = join_rel(w->start, crel);
			ignored = sw_dockerignore_match(w->di, rootrel);
		}
		if (S_ISDIR(st.st_mode)) {
			if (ignored && !sw_dockerignore_may_include_under(w->di, rootrel)) {
				free(crel);
				continue;
			}
			size_t mark = w->out->n;
			walk_push(w->out, crel, &st);
			int cfd = openat(fd, names[i],
			                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				r = sw_error_os(err, errno, "open folder '%s'", crel);
				break;
			}
			r = walk_dir(w, cfd, crel, err);
			if (r == 0 && ignored && w->out->n == mark + 1)
				walk_pop_to(w->out, mark); /* nothing under it was re-included */
			continue;
		}
		if (ignored) {
			free(crel);
			continue;
		}
		sw_build__walk_entry *e = walk_push(w->out, crel, &st);
		if (S_ISLNK(st.st_mode)) {
			e->link = read_link_at(fd, names[i], (size_t)st.st_size);
			if (!e->link)
				r = sw_error_os(err, errno ? errno : ENAMETOOLONG, "read link '%s'",
				                crel);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return r;
}

int sw_build__walk_tree(sw_build__walk *out, int rootfd, const char *start,
                        const sw_dockerignore *di, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!start)
		start = "";
	struct stat st;
	int fd = -1;
	if (*start == '\0') {
		fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return sw_error_os(err, e, "open the root folder");
		}
	} else {
		fd = sw_build__open_beneath(rootfd, start, O_PATH | O_NOFOLLOW, 0);
		if (fd < 0 || fstat(fd, &st) < 0) {
			int e = errno;
			if (fd >= 0)
				close(fd);
			return sw_error_os(err, e, "open '%s'", start);
		}
		if (S_ISDIR(st.st_mode)) {
			int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			int e = errno;
			close(fd);
			fd = dfd;
			if (fd < 0)
				return sw_error_os(err, e, "open folder '%s'", start);
		}
	}
	sw_build__walk_entry *e = walk_push(out, sw_xstrdup(""), &st);
	if (!S_ISDIR(st.st_mode)) {
		int r = 0;
		if (S_ISLNK(st.st_mode)) {
			e->link = read_link_at(fd, "", (size_t)st.st_size);
			if (!e->link)
				r = sw_error_os(err, errno, "read link '%s'", start);
		}
		close(fd);
		if (r < 0)
			sw_build__walk_clear(out);
		return r;
	}
	walker w = { .out = out, .di = di, .start = start };
	int r = walk_dir(&w, fd, "", err);
	if (r < 0)
		sw_build__walk_clear(out);
	return r;
}

/* ---------------------------------------------------------------- source paths */

/* "/x/../y", "../y", "./y/" -> "y"; the root is "". Caller frees. */
static char *source_clean(const char *src)
{
	cleanup_free char *rooted = sw_xasprintf("/%s", src ? src : "");
	char *c = sw_path_clean(rooted);
	char *r = sw_xstrdup(c + 1);
	free(c);
	return r;
}

int sw_build__source_resolve(char **out_rel, struct stat *st, int rootfd, const char *path,
                             sw_error **err)
{
	*out_rel = NULL;
	cleanup_free char *clean = source_clean(path);
	cleanup_free char *rel = NULL;
	int r = sw_path_resolve_in_root(&rel, rootfd, *clean ? clean : "/", 0, err);
	if (r < 0)
		return r;
	if (fstatat(rootfd, *rel ? rel : ".", st, AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		if (e == ENOENT || e == ENOTDIR)
			return sw_error_set(err, SW_ERR_NOT_FOUND, "\"%s\" not found", path);
		return sw_error_os(err, e, "stat '%s'", path);
	}
	*out_rel = steal_pointer(&rel);
	return 0;
}

/* ---------------------------------------------------------------- the stat cache */

typedef struct sc_entry {
	char *path;
	uint64_t size;
	int64_t mtime_ns;
	int64_t ctime_ns;
	uint64_t ino;
	unsigned char sha[32];
	unsigned char xsha[32]; /* digest of the kept xattrs (when has_x) */
	bool has_x;
	bool seen;
	bool dead; /* replaced by a newer entry for the same path */
} sc_entry;

struct sw_build__context {
	char *dir;
	int fd; /* O_PATH | O_DIRECTORY */
	const sw_dockerignore *di;
	char *cache_path;
	sc_entry *ents;
	size_t n_ents, cap_ents;
	uint32_t *index; /* open addressing: entry number + 1, 0 empty */
	size_t index_cap;
	bool dirty;
	pthread_mutex_t mu;
};

static uint64_t path_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 31);
}

static void sc_index_put(sw_build__context *c, size_t i)
{
	size_t j = path_hash(c->ents[i].path) & (c->index_cap - 1);
	while (c->index[j]) {
		sc_entry *o = &c->ents[c->index[j] - 1];
		if (strcmp(o->path, c->ents[i].path) == 0) {
			o->dead = true;
			c->index[j] = (uint32_t)i + 1;
			return;
		}
		j = (j + 1) & (c->index_cap - 1);
	}
	c->index[j] = (uint32_t)i + 1;
}

static void sc_index_grow(sw_build__context *c)
{
	size_t cap = c->index_cap ? c->index_cap * 2 : 1024;
	free(c->index);
	c->index = sw_xcalloc(cap, sizeof(*c->index));
	c->index_cap = cap;
	for (size_t i = 0; i < c->n_ents; i++)
		if (!c->ents[i].dead)
			sc_index_put(c, i);
}

static sc_entry *sc_find(sw_build__context *c, const char *path)
{
	if (!c->index_cap)
		return NULL;
	size_t j = path_hash(path) & (c->index_cap - 1);
	while (c->index[j]) {
		sc_entry *e = &c->ents[c->index[j] - 1];
		if (strcmp(e->path, path) == 0)
			return e;
		j = (j + 1) & (c->index_cap - 1);
	}
	return NULL;
}

/* Add an entry (taking `path`); an older one for the same path is marked dead. */
static sc_entry *sc_add(sw_build__context *c, char *path)
{
	if (c->n_ents == c->cap_ents) {
		c->cap_ents = c->cap_ents ? c->cap_ents * 2 : 256;
		c->ents = sw_xrealloc(c->ents, c->cap_ents * sizeof(*c->ents));
	}
	if ((c->n_ents + 1) * 2 > c->index_cap)
		sc_index_grow(c);
	size_t i = c->n_ents++;
	memset(&c->ents[i], 0, sizeof(c->ents[i]));
	c->ents[i].path = path;
	sc_index_put(c, i);
	return &c->ents[i];
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* The on-disk format, all integers little-endian:
 *   "SWSTATC1" u32 count, then per entry: u16 path length, path, u64 size, i64 mtime ns,
 *   i64 ctime ns, u64 inode, u8 flags (1: xattr digest follows), 32 bytes sha256,
 *   [32 bytes xattr digest] */
static void put_le(sw_buf *b, uint64_t v, int bytes)
{
	unsigned char tmp[8];
	for (int i = 0; i < bytes; i++)
		tmp[i] = (unsigned char)(v >> (8 * i));
	(void)!sw_buf_append(b, tmp, (size_t)bytes, NULL);
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void sc_load(sw_build__context *c)
{
	cleanup_free char *data = NULL;
	size_t len = 0;
	sw_error *err = NULL;
	if (sw_fs_read_file(&data, &len, c->cache_path, STATCACHE_MAX_BYTES, &err) < 0) {
		if (sw_error_code_of(err) != SW_ERR_NOT_FOUND)
			SW_LOG(SW_LOG_DEBUG, "stat cache: %s", sw_error_msg(err));
		sw_error_free(err);
		return;
	}
	const unsigned char *p = (const unsigned char *)data, *end = p + len;
	if (len < 12 || memcmp(p, STATCACHE_MAGIC, 8) != 0) {
		SW_LOG(SW_LOG_DEBUG, "stat cache %s: not a stat cache; ignored", c->cache_path);
		return;
	}
	uint32_t count = (uint32_t)get_le(p + 8, 4);
	p += 12;
	for (uint32_t i = 0; i < count && i < STATCACHE_MAX_ENTRIES; i++) {
		if (end - p < 2)
			goto bad;
		size_t pl = (size_t)get_le(p, 2);
		if ((size_t)(end - p) < 2 + pl + 8 * 4 + 1 + 32 || pl == 0)
			goto bad;
		if (memchr(p + 2, '\0', pl))
			goto bad;
		sc_entry *e = sc_add(c, sw_xstrndup((const char *)p + 2, pl));
		p += 2 + pl;
		e->size = get_le(p, 8);
		e->mtime_ns = (int64_t)get_le(p + 8, 8);
		e->ctime_ns = (int64_t)get_le(p + 16, 8);
		e->ino = get_le(p + 24, 8);
		uint8_t flags = p[32];
		memcpy(e->sha, p + 33, 32);
		p += 65;
		if (flags & 1) {
			if (end - p < 32)
				goto bad;
			memcpy(e->xsha, p, 32);
			e->has_x = true;
			p += 32;
		}
	}
	return;
bad:
	SW_LOG(SW_LOG_DEBUG, "stat cache %s: truncated or corrupt; ignored", c->cache_path);
	for (size_t i = 0; i < c->n_ents; i++)
		free(c->ents[i].path);
	c->n_ents = 0;
	if (c->index)
		memset(c->index, 0, c->index_cap * sizeof(*c->index));
}

static void sc_save(sw_build__context *c)
{
	sw_buf b = SW_BUF_INIT(STATCACHE_MAX_BYTES);
	(void)!sw_buf_append(&b, STATCACHE_MAGIC, 8, NULL);
	put_le(&b, 0, 4);
	uint32_t count = 0;
	for (size_t i = 0; i < c->n_ents && count < STATCACHE_MAX_ENTRIES; i++) {
		sc_entry *e = &c->ents[i];
		if (e->dead)
			continue;
		size_t pl = strlen(e->path);
		if (pl > 65535)
			continue;
		if (!e->seen) {
			/* not used by this build: kept while the file is still there */
			struct stat st;
			if (fstatat(c->fd, e->path, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
		}
		put_le(&b, pl, 2);
		if (sw_buf_append(&b, e->path, pl, NULL) < 0)
			break;
		put_le(&b, e->size, 8);
		put_le(&b, (uint64_t)e->mtime_ns, 8);
		put_le(&b, (uint64_t)e->ctime_ns, 8);
		put_le(&b, e->ino, 8);
		put_le(&b, e->has_x ? 1 : 0, 1);
		(void)!sw_buf_append(&b, e->sha, 32, NULL);
		if (e->has_x)
			(void)!sw_buf_append(&b, e->xsha, 32, NULL);
		count++;
	}
	if (b.data) {
		for (int i = 0; i < 4; i++)
			b.data[8 + i] = (char)(count >> (8 * i));
	}
	sw_error *err = NULL;
	cleanup_free char *parent = sw_xstrdup(c->cache_path);
	char *slash = strrchr(parent, '/');
	if (slash && slash != parent) {
		*slash = '\0';
		if (sw_fs_mkdir_p(parent, 0755, &err) < 0)
			sw_error_clear(&err);
	}
	if (sw_fs_write_atomic(c->cache_path, b.data, b.len, 0600, &err) < 0) {
		SW_LOG(SW_LOG_WARN, "save the build context's stat cache: %s", sw_error_msg(err));
		sw_error_free(err);
	}
	sw_buf_free(&b);
}

/* ---------------------------------------------------------------- opening and closing */

int sw_build__context_open(sw_build__context **out, const char *dir, const sw_dockerignore *di,
                           const char *statcache_path, sw_error **err)
{
	*out = NULL;
	if (!dir || !*dir)
		return sw_error_set(err, SW_ERR_INVALID, "no build context folder");
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return sw_error_set(err, SW_ERR_NOT_FOUND,
			                    "build context '%s': no such folder", dir);
		return sw_error_os(err, errno, "build context '%s'", dir);
	}
	sw_build__context *c = sw_xcalloc(1, sizeof(*c));
	c->dir = sw_xstrdup(dir);
	c->fd = fd;
	c->di = di;
	pthread_mutex_init(&c->mu, NULL);
	if (statcache_path && *statcache_path) {
		c->cache_path = sw_xstrdup(statcache_path);
		sc_load(c);
	}
	*out = c;
	return 0;
}

void sw_build__context_free(sw_build__context *c)
{
	if (!c)
		return;
	if (c->cache_path && c->dirty)
		sc_save(c);
	for (size_t i = 0; i < c->n_ents; i++)
		free(c->ents[i].path);
	free(c->ents);
	free(c->index);
	free(c->cache_path);
	if (c->fd >= 0)
		close(c->fd);
	free(c->dir);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

const char *sw_build__context_dir(const sw_build__context *c)
{
	return c ? c->dir : NULL;
}

/* ---------------------------------------------------------------- matching */

static bool has_wildcard(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' && s[1]) {
			s++;
			continue;
		}
		if (*s == '*' || *s == '?' || *s == '[')
			return true;
	}
	return false;
}

/*
 * Is the context-relative path `given` (resolved to `rel`, a folder or not) present in the
 * context as Docker sends it? An ignored folder is, when something under it is re-included.
 */
static int is_included(bool *out, sw_build__context *c, const char *given, const char *rel,
                       const struct stat *st, sw_error **err)
{
	*out = true;
	if (!c->di || !*rel)
		return 0;
	if (!sw_dockerignore_match(c->di, given) && !sw_dockerignore_match(c->di, rel))
		return 0;
	*out = false;
	if (!S_ISDIR(st->st_mode) || !sw_dockerignore_may_include_under(c->di, rel))
		return 0;
	sw_build__walk w;
	int r = sw_build__walk_tree(&w, c->fd, rel, c->di, err);
	if (r < 0)
		return r;
	*out = w.n > 1;
	sw_build__walk_clear(&w);
	return 0;
}

static int not_found(sw_error **err, const char *src, bool excluded)
{
	if (excluded)
		return sw_error_set(err, SW_ERR_NOT_FOUND,
		                    "\"%s\" not found in the build context: it is excluded by "
		                    ".dockerignore",
		                    src);
	return sw_error_set(err, SW_ERR_NOT_FOUND, "\"%s\" not found in the build context", src);
}

/*
 * Go's filepath.Match syntax as fnmatch(3) reads it: the only difference that matters is that
 * Go negates a class with "^" alone, so a leading "!" in a class is an ordinary character.
 */
static char *go_pattern(const char *pat)
{
	sw_buf b = SW_BUF_INIT(0);
	for (const char *p = pat; *p; p++) {
		if (*p == '\\' && p[1]) {
			(void)!sw_buf_append(&b, p, 2, NULL);
			p++;
			continue;
		}
		(void)!sw_buf_append(&b, p, 1, NULL);
		if (*p == '[' && p[1] == '!') {
			(void)!sw_buf_append(&b, "\\!", 2, NULL);
			p++;
		}
	}
	return sw_buf_steal(&b, NULL);
}

/* Expand one wildcard source, component by component, appending matches to *out. */
static int match_wildcards(char ***out, sw_build__context *c, const char *clean, sw_error **err)
{
	cleanup_strv char **comps = NULL;
	{
		cleanup_free char *tmp = sw_xstrdup(clean);
		char *save = NULL;
		for (char *t = strtok_r(tmp, "/", &save); t; t = strtok_r(NULL, "/", &save))
			sw_strv_push(&comps, t);
	}
	cleanup_strv char **cur = NULL;
	sw_strv_push(&cur, "");
	size_t nc = sw_strv_len(comps);
	for (size_t k = 0; k < nc; k++) {
		bool last = k + 1 == nc;
		cleanup_strv char **next = NULL;
		for (size_t i = 0; cur && cur[i]; i++) {
			if (!has_wildcard(comps[k])) {
				cleanup_free char *p = join_rel(cur[i], comps[k]);
				sw_strv_push(&next, p);
				continue;
			}
			/* list the folder cur[i] (symlinks to it followed inside the context) */
			cleanup_free char *rel = NULL;
			struct stat st;
			sw_error *e2 = NULL;
			if (sw_build__source_resolve(&rel, &st, c->fd, *cur[i] ? cur[i] : "/",
			                             &e2) < 0 ||
			    !S_ISDIR(st.st_mode)) {
				sw_error_free(e2);
				continue;
			}
			int dfd = sw_build__open_beneath(c->fd, rel, O_RDONLY | O_DIRECTORY, 0);
			if (dfd < 0)
				continue;
			DIR *d = fdopendir(dfd);
			if (!d) {
				close(dfd);
				continue;
			}
			cleanup_strv char **names = NULL;
			cleanup_free char *pat = go_pattern(comps[k]);
			for (struct dirent *de; (de = readdir(d)) != NULL;) {
				if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
					continue;
				if (fnmatch(pat, de->d_name, FNM_PATHNAME) == 0)
					sw_strv_push(&names, de->d_name);
			}
			closedir(d);
			size_t nn = sw_strv_len(names);
			if (nn > 1)
				qsort(names, nn, sizeof(*names), name_cmp);
			for (size_t j = 0; j < nn; j++) {
				cleanup_free char *p = join_rel(cur[i], names[j]);
				sw_strv_push(&next, p);
			}
		}
		sw_strv_free(cur);
		cur = steal_pointer(&next);
		if (!last && !cur)
			break;
	}
	/* keep what exists and is in the context */
	for (size_t i = 0; cur && cur[i]; i++) {
		cleanup_free char *rel = NULL;
		struct stat st;
		sw_error *e2 = NULL;
		if (sw_build__source_resolve(&rel, &st, c->fd, cur[i], &e2) < 0) {
			sw_error_free(e2);
			continue;
		}
		bool inc = false;
		int r = is_included(&inc, c, cur[i], rel, &st, err);
		if (r < 0)
			return r;
		if (inc)
			sw_strv_push(out, cur[i]);
	}
	return 0;
}

int sw_build__context_match(char ***out, sw_build__context *c, char *const *srcs, sw_error **err)
{
	*out = NULL;
	cleanup_strv char **res = NULL;
	int r = 0;
	pthread_mutex_lock(&c->mu);
	for (size_t i = 0; srcs && srcs[i]; i++) {
		cleanup_free char *clean = source_clean(srcs[i]);
		if (!*clean) {
			sw_strv_push(&res, ".");
			continue;
		}
		if (has_wildcard(clean)) {
			size_t before = sw_strv_len(res);
			r = match_wildcards(&res, c, clean, err);
			if (r < 0)
				break;
			if (sw_strv_len(res) == before) {
				r = not_found(err, srcs[i], false);
				break;
			}
			continue;
		}
		cleanup_free char *rel = NULL;
		struct stat st;
		sw_error *e2 = NULL;
		r = sw_build__source_resolve(&rel, &st, c->fd, clean, &e2);
		if (r < 0) {
			if (r == SW_ERR_NOT_FOUND) {
				sw_error_free(e2);
				r = not_found(err, srcs[i], false);
			} else if (err && !*err) {
				*err = e2;
			} else {
				sw_error_free(e2);
			}
			break;
		}
		bool inc = false;
		r = is_included(&inc, c, clean, rel, &st, err);
		if (r < 0)
			break;
		if (!inc) {
			r = not_found(err, srcs[i], true);
			break;
		}
		sw_strv_push(&res, clean);
	}
	pthread_mutex_unlock(&c->mu);
	if (r < 0)
		return r;
	if (!res)
		res = sw_xcalloc(1, sizeof(char *));
	*out = steal_pointer(&res);
	return 0;
}

/* ---------------------------------------------------------------- hashing */

static bool xattr_keep(const char *name)
{
	if (strncmp(name, "trusted.overlay.", 16) == 0 || strncmp(name, "user.overlay.", 13) == 0)
		return false;
	if (strncmp(name, "security.", 9) == 0)
		return strcmp(name, "security.capability") == 0;
	return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0;
}

/*
 * Digest of the kept xattrs of the open file `fd` (sorted by name: name, NUL, value length,
 * value). false when it has none.
 */
static bool xattrs_digest(int fd, unsigned char out[32])
{
	char list[4096];
	ssize_t n = flistxattr(fd, list, sizeof(list));
	cleanup_free char *big = NULL;
	char *names = list;
	if (n < 0 && errno == ERANGE) {
		ssize_t need = flistxattr(fd, NULL, 0);
		if (need <= 0 || (size_t)need > XATTR_LIST_MAX_BYTES)
			return false;
		big = sw_xmalloc((size_t)need);
		n = flistxattr(fd, big, (size_t)need);
		names = big;
	}
	if (n <= 0)
		return false;
	cleanup_strv char **keep = NULL;
	for (char *p = names; p < names + n; p += strlen(p) + 1)
		if (*p && xattr_keep(p))
			sw_strv_push(&keep, p);
	size_t nk = sw_strv_len(keep);
	if (!nk)
		return false;
	qsort(keep, nk, sizeof(*keep), name_cmp);
	sw_oci_hasher *h = sw_oci_hasher_new();
	cleanup_free char *val = sw_xmalloc(XATTR_VALUE_MAX_BYTES);
	for (size_t i = 0; i < nk; i++) {
		ssize_t vl = fgetxattr(fd, keep[i], val, XATTR_VALUE_MAX_BYTES);
		if (vl < 0)
			vl = 0;
		char lenbuf[32];
		int ll = snprintf(lenbuf, sizeof(lenbuf), "%zd:", vl);
		sw_oci_hasher_update(h, keep[i], strlen(keep[i]) + 1);
		sw_oci_hasher_update(h, lenbuf, (size_t)ll);
		sw_oci_hasher_update(h, val, (size_t)vl);
	}
	sw_digest d;
	sw_oci_hasher_final(h, &d);
	sw_oci_hasher_free(h);
	const char *hex = sw_oci_digest_hex(&d);
	for (int i = 0; i < 32; i++) {
		unsigned v;
		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (unsigned char)v;
	}
	return true;
}

static void hex_of(char *out, const unsigned char *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

typedef struct file_sum {
	unsigned char sha[32];
	unsigned char xsha[32];
	bool has_x;
	bool stable; /* the file did not change while it was read, and is old enough */
} file_sum;

/* Hash the file `rel` under rootfd, whose walk stat is `st`. */
static int hash_file(file_sum *out, int rootfd, const char *rel, const struct stat *st, char *buf,
                     sw_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_close int fd = sw_build__open_beneath(rootfd, rel, O_RDONLY | O_NOCTTY, 0);
	if (fd < 0)
		return sw_error_os(err, errno, "open '%s'", rel);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	sw_oci_hasher *h = sw_oci_hasher_new();
	uint64_t total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, HASH_CHUNK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			sw_oci_hasher_free(h);
			return sw_error_os(err, e, "read '%s'", rel);
		}
		if (n == 0)
			break;
		sw_oci_hasher_update(h, buf, (size_t)n);
		total += (uint64_t)n;
	}
	__atomic_add_fetch(&sw_build__context_bytes_hashed, total, __ATOMIC_RELAXED);
	sw_digest d;
	sw_oci_hasher_final(h, &d);
	sw_oci_hasher_free(h);
	const char *hex = sw_oci_digest_hex(&d);
	for (int i = 0; i < 32; i++) {
		unsigned v;
		sscanf(hex + 2 * i, "%2x", &v);
		out->sha[i] = (unsigned char)v;
	}
	out->has_x = xattrs_digest(fd, out->xsha);

	struct stat after;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	out->stable = fstat(fd, &after) == 0 && after.st_size == st->st_size &&
	              (uint64_t)after.st_size == total &&
	              ts_ns(&after.st_mtim) == ts_ns(&st->st_mtim) &&
	              ts_ns(&after.st_ctim) == ts_ns(&st->st_ctim) && after.st_ino == st->st_ino;
	/* a change within the file system's clock tick would leave the times as they are */
	int64_t newest = ts_ns(&st->st_mtim) > ts_ns(&st->st_ctim) ? ts_ns(&st->st_mtim)
	                                                           : ts_ns(&st->st_ctim);
	bool coarse = st->st_mtim.tv_nsec == 0 && st->st_ctim.tv_nsec == 0;
	int64_t margin = coarse ? 2000000000LL : 20000000LL;
	if (newest + margin >= ts_ns(&now))
		out->stable = false;
	return 0;
}

/* The content and xattr digests of a regular file, through the stat cache when there is one. */
static int file_digests(file_sum *out, sw_build__context *c, int rootfd, const char *rel,
                        const struct stat *st, char *buf, sw_error **err)
{
	sc_entry *e = c ? sc_find(c, rel) : NULL;
	if (e && !e->dead && e->size == (uint64_t)st->st_size &&
	    e->mtime_ns == ts_ns(&st->st_mtim) && e->ctime_ns == ts_ns(&st->st_ctim) &&
	    e->ino == (uint64_t)st->st_ino) {
		e->seen = true;
		memcpy(out->sha, e->sha, 32);
		memcpy(out->xsha, e->xsha, 32);
		out->has_x = e->has_x;
		out->stable = true;
		return 0;
	}
	int r = hash_file(out, rootfd, rel, st, buf, err);
	if (r < 0 || !c || !c->cache_path)
		return r;
	if (!out->stable) {
		if (e && !e->dead) {
			e->dead = true; /* stale: drop it */
			c->dirty = true;
		}
		return 0;
	}
	sc_entry *ne = sc_add(c, sw_xstrdup(rel));
	ne->size = (uint64_t)st->st_size;
	ne->mtime_ns = ts_ns(&st->st_mtim);
	ne->ctime_ns = ts_ns(&st->st_ctim);
	ne->ino = (uint64_t)st->st_ino;
	memcpy(ne->sha, out->sha, 32);
	memcpy(ne->xsha, out->xsha, 32);
	ne->has_x = out->has_x;
	ne->seen = true;
	c->dirty = true;
	return 0;
}

static char type_char(mode_t m)
{
	switch (m & S_IFMT) {
	case S_IFDIR:
		return 'd';
	case S_IFREG:
		return 'f';
	case S_IFLNK:
		return 'l';
	case S_IFCHR:
		return 'c';
	case S_IFBLK:
		return 'b';
	case S_IFIFO:
		return 'p';
	default:
		return 's';
	}
}

/* One NUL-terminated field of a record. */
static void feed(sw_oci_hasher *h, const char *s)
{
	sw_oci_hasher_update(h, s, strlen(s) + 1);
}

typedef struct link_seen {
	dev_t dev;
	ino_t ino;
	char *rel;
} link_seen;

/*
 * Feed the records of one source into h: "src" and the path as given, then for each walk
 * entry: type, path relative to the source, mode (permissions and special bits), uid, gid,
 * size, link target (symlinks; for a hard link the first path of its inode), device numbers,
 * content digest, xattr digest. Never a time or an inode number.
 */
static int digest_source(sw_oci_hasher *h, sw_build__context *c, int rootfd,
                         const sw_dockerignore *di, const char *path, bool owners, char *buf,
                         sw_error **err)
{
	cleanup_free char *srel = NULL;
	struct stat sst;
	int r = sw_build__source_resolve(&srel, &sst, rootfd, path, err);
	if (r < 0)
		return r;
	sw_build__walk w;
	r = sw_build__walk_tree(&w, rootfd, srel, di, err);
	if (r < 0)
		return r;
	feed(h, "src");
	feed(h, path);
	link_seen *links = NULL;
	size_t n_links = 0;
	for (size_t i = 0; r == 0 && i < w.n; i++) {
		const sw_build__walk_entry *e = &w.v[i];
		const struct stat *st = &e->st;
		char type = type_char(st->st_mode);
		char num[96];
		char t[2] = { type, '\0' };
		const char *target = e->link ? e->link : "";
		if (type == 'f' && st->st_nlink > 1) {
			for (size_t k = 0; k < n_links; k++) {
				if (links[k].dev == st->st_dev && links[k].ino == st->st_ino) {
					t[0] = 'h';
					target = links[k].rel;
					break;
				}
			}
			if (t[0] == 'f') {
				links = sw_xrealloc(links, (n_links + 1) * sizeof(*links));
				links[n_links++] = (link_seen){ st->st_dev, st->st_ino, e->rel };
			}
		}
		feed(h, t);
		feed(h, e->rel);
		snprintf(num, sizeof(num), "%o", (unsigned)(st->st_mode & 07777));
		feed(h, num);
		snprintf(num, sizeof(num), "%lu:%lu", owners ? (unsigned long)st->st_uid : 0UL,
		         owners ? (unsigned long)st->st_gid : 0UL);
		feed(h, num);
		snprintf(num, sizeof(num), "%lld",
		         type == 'f' || type == 'l' ? (long long)st->st_size : 0LL);
		feed(h, num);
		feed(h, target);
		if (type == 'c' || type == 'b')
			snprintf(num, sizeof(num), "%u:%u", major(st->st_rdev), minor(st->st_rdev));
		else
			num[0] = '\0';
		feed(h, num);
		char hex[65] = "", xhex[65] = "";
		if (t[0] == 'f') {
			cleanup_free char *full =
			        *e->rel ? join_rel(srel, e->rel) : sw_xstrdup(srel);
			file_sum fs;
			r = file_digests(&fs, c, rootfd, full, st, buf, err);
			if (r < 0)
				break;
			hex_of(hex, fs.sha, 32);
			if (fs.has_x)
				hex_of(xhex, fs.xsha, 32);
		}
		feed(h, hex);
		feed(h, xhex);
	}
	free(links);
	sw_build__walk_clear(&w);
	return r;
}

static int digest_paths(sw_digest *out, sw_build__context *c, int rootfd, const sw_dockerignore *di,
                        char *const *paths, bool owners, sw_error **err)
{
	sw_oci_hasher *h = sw_oci_hasher_new();
	char *buf = sw_xmalloc(HASH_CHUNK);
	feed(h, "slipway copy inputs v1");
	int r = 0;
	for (size_t i = 0; paths && paths[i] && r == 0; i++)
		r = digest_source(h, c, rootfd, di, paths[i], owners, buf, err);
	free(buf);
	if (r == 0)
		sw_oci_hasher_final(h, out);
	sw_oci_hasher_free(h);
	return r;
}

int sw_build__context_digest(sw_digest *out, sw_build__context *c, char *const *paths,
                             sw_error **err)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&c->mu);
	/* context files are sent as 0:0 (BuildKit resets owners), so host owners do not count */
	int r = digest_paths(out, c, c->fd, c->di, paths, false, err);
	pthread_mutex_unlock(&c->mu);
	if (r < 0)
		return sw_error_wrap(err, "digest of the build context '%s'", c->dir);
	return 0;
}

int sw_build__tree_digest(sw_digest *out, const char *root, char *const *paths, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_close int fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open '%s'", root);
	int r = digest_paths(out, NULL, fd, NULL, paths, true, err);
	if (r < 0)
		return sw_error_wrap(err, "digest of '%s'", root);
	return 0;
}
