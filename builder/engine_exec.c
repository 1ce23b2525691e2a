/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Executing the steps the cache did not have. RUN: a container through the executor over an
 * overlay of the stage's layer snapshots with a fresh upper folder, with the step's mounts
 * (bind from the context, a stage or an image; persistent cache folders; secrets copied to a
 * private file and bind-mounted read-only; tmpfs) and its output streamed as events. COPY/ADD
 * and WORKDIR: the same overlay mounted on the host, the files copied (owners resolved through
 * the image's own /etc/passwd and /etc/group) or the folder created, then unmounted. In every
 * case the upper folder becomes the step's layer and snapshot.
 */
#include "builder/engine_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>

#define TAIL_BYTES 8192
#define TAIL_LINES 10

/* ---------------------------------------------------------------- files in a rootfs */

typedef struct root_reader {
	const char *root;
} root_reader;

static int read_in_root(char **out, size_t *out_len, const char *path, void *payload,
                        sw_error **err)
{
	root_reader *rr = payload;
	int rootfd = open(rr->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open %s", rr->root);
	int fd = -1;
	sw_error *e = NULL;
	int rc = sw_path_open_in_root(&fd, rootfd, path, O_RDONLY | O_CLOEXEC, 0, &e);
	close(rootfd);
	if (rc < 0) {
		int code = e && e->sys == ENOENT ? SW_ERR_NOT_FOUND : sw_error_code_of(e);
		int r = sw_error_set(err, code, "%s in the image: %s", path, sw_error_msg(e));
		sw_error_free(e);
		return r;
	}
	sw_buf b = SW_BUF_INIT((size_t)4 << 20);
	char chunk[8192];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = sw_error_os(err, errno, "read %s in the image", path);
			break;
		}
		if (n == 0)
			break;
		if ((rc = sw_buf_append(&b, chunk, (size_t)n, err)) < 0)
			break;
	}
	close(fd);
	if (rc < 0) {
		sw_buf_free(&b);
		return rc;
	}
	*out = sw_buf_steal(&b, out_len);
	return 0;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

/*
 * An owner for COPY --chown and WORKDIR under USER, as BuildKit reads it: a name gives the
 * passwd entry's uid and gid, a number alone is used for both, a group (name or number) after
 * ':' sets the gid.
 */
static int resolve_owner(uid_t *uid, gid_t *gid, const char *root, const char *spec, sw_error **err)
{
	const char *colon = strchr(spec, ':');
	cleanup_free char *user =
	        colon ? sw_xstrndup(spec, (size_t)(colon - spec)) : sw_xstrdup(spec);
	if (all_digits(user) && (!colon || all_digits(colon + 1))) {
		unsigned long long u = strtoull(user, NULL, 10);
		unsigned long long g = colon ? strtoull(colon + 1, NULL, 10) : u;
		if (u > 0xfffffffeULL || g > 0xfffffffeULL)
			return sw_error_set(err, SW_ERR_INVALID, "user '%s': id out of range",
			                    spec);
		*uid = (uid_t)u;
		*gid = (gid_t)g;
		return 0;
	}
	root_reader rr = { root };
	if (all_digits(user) && !colon) {
		*uid = *gid = (uid_t)strtoull(user, NULL, 10);
		return 0;
	}
	if (sw_exec_user_resolve(uid, gid, NULL, NULL, spec, read_in_root, &rr, err) < 0)
		return sw_error_wrap(err, "user '%s'", spec);
	if (all_digits(user) && !colon)
		*gid = (gid_t)*uid;
	return 0;
}

/* A path inside `root` with symlinks resolved inside it, as a host path (caller frees). */
static int path_in_root(char **out, const char *root, const char *path, sw_error **err)
{
	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open %s", root);
	cleanup_free char *rel = NULL;
	int rc = sw_path_resolve_in_root(&rel, rootfd, path, 0, err);
	close(rootfd);
	if (rc < 0)
		return rc;
	*out = rel[0] ? sw_path_join(root, rel) : sw_xstrdup(root);
	return 0;
}

/* ---------------------------------------------------------------- wildcards in a rootfs */

static bool has_wildcard(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

static int glob_rec(char ***out, int rootfd, const char *prefix, char **comps, size_t i,
                    sw_error **err)
{
	if (!comps[i]) {
		sw_strv_push(out, prefix[0] ? prefix : ".");
		return 0;
	}
	if (!has_wildcard(comps[i])) {
		cleanup_free char *next =
		        prefix[0] ? sw_xasprintf("%s/%s", prefix, comps[i]) : sw_xstrdup(comps[i]);
		int fd = -1;
		sw_error *e = NULL;
		if (sw_path_open_in_root(&fd, rootfd, next, O_PATH, 0, &e) < 0) {
			sw_error_free(e);
			return 0;
		}
		close(fd);
		return glob_rec(out, rootfd, next, comps, i + 1, err);
	}
	int dfd = -1;
	sw_error *e = NULL;
	if (sw_path_open_in_root(&dfd, rootfd, prefix[0] ? prefix : ".",
	                         O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, &e) < 0) {
		sw_error_free(e);
		return 0;
	}
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return 0;
	}
	cleanup_strv char **names = NULL;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fnmatch(comps[i], de->d_name, 0) == 0)
			sw_strv_push(&names, de->d_name);
	}
	closedir(d);
	for (size_t k = 0; names && names[k]; k++) {
		cleanup_free char *next =
		        prefix[0] ? sw_xasprintf("%s/%s", prefix, names[k]) : sw_xstrdup(names[k]);
		if (glob_rec(out, rootfd, next, comps, i + 1, err) < 0)
			return sw_error_code_of(*err);
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sources of COPY --from: root-relative paths, wildcards matched in the source rootfs. */
static int match_in_root(char ***out, const char *root, char *const *srcs, sw_error **err)
{
	*out = NULL;
	int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open %s", root);
	cleanup_strv char **all = NULL;
	int rc = 0;
	for (size_t i = 0; srcs && srcs[i] && rc == 0; i++) {
		cleanup_free char *clean = sw_path_clean(srcs[i]);
		const char *rel = clean;
		while (*rel == '/')
			rel++;
		if (!*rel || strcmp(rel, ".") == 0) {
			sw_strv_push(&all, ".");
			continue;
		}
		if (!has_wildcard(rel)) {
			sw_strv_push(&all, rel);
			continue;
		}
		cleanup_strv char **comps = NULL;
		cleanup_free char *tmp = sw_xstrdup(rel);
		char *save = NULL;
		for (char *c = strtok_r(tmp, "/", &save); c; c = strtok_r(NULL, "/", &save))
			sw_strv_push(&comps, c);
		cleanup_strv char **found = NULL;
		rc = glob_rec(&found, rootfd, "", comps, 0, err);
		if (rc == 0 && !found)
			rc = sw_error_set(err, SW_ERR_NOT_FOUND, "\"%s\" not found", srcs[i]);
		if (rc == 0) {
			qsort(found, sw_strv_len(found), sizeof(char *), cmp_str);
			for (size_t k = 0; found[k]; k++)
				sw_strv_push(&all, found[k]);
		}
	}
	close(rootfd);
	if (rc < 0)
		return rc;
	*out = steal_pointer(&all);
	return 0;
}

/* ---------------------------------------------------------------- copied-up folders */

static bool is_opaque_at(int dirfd, const char *name)
{
	static const char *const keys[] = { "trusted.overlay.opaque", "user.overlay.opaque" };
	cleanup_free char *path = sw_xasprintf("/proc/self/fd/%d/%s", dirfd, name);
	for (size_t i = 0; i < SW_ARRAY_SIZE(keys); i++) {
		char v[4];
		ssize_t n = lgetxattr(path, keys[i], v, sizeof(v));
		if (n == 1 && v[0] == 'y')
			return true;
	}
	return false;
}

/* Does the merged view below the upper show `rel` as a folder with exactly these attributes? */
static bool same_in_lowers(char *const *lowers, const char *rel, const struct stat *st)
{
	for (size_t i = 0; lowers && lowers[i]; i++) {
		cleanup_free char *p = sw_path_join(lowers[i], rel);
		struct stat ls;
		if (lstat(p, &ls) == 0) {
			return S_ISDIR(ls.st_mode) && ls.st_mode == st->st_mode &&
			       ls.st_uid == st->st_uid && ls.st_gid == st->st_gid &&
			       ls.st_mtim.tv_sec == st->st_mtim.tv_sec &&
			       ls.st_mtim.tv_nsec == st->st_mtim.tv_nsec;
		}
		/* hidden below this lower? (a whiteout, a non-folder or an opaque folder above) */
		cleanup_free char *up = sw_xstrdup(rel);
		for (char *slash = strrchr(up, '/'); slash; slash = strrchr(up, '/')) {
			*slash = 0;
			cleanup_free char *a = sw_path_join(lowers[i], up);
			if (lstat(a, &ls) == 0) {
				if (!S_ISDIR(ls.st_mode))
					return false;
				int fd = open(lowers[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
				bool opaque = fd >= 0 && is_opaque_at(fd, up);
				if (fd >= 0)
					close(fd);
				if (opaque)
					return false;
				break;
			}
		}
	}
	return false;
}

/* Post-order walk: returns true when the folder ends up empty. */
static bool prune_dir(int dfd, const char *rel, char *const *lowers, int depth)
{
	DIR *d = fdopendir(dfd);
	if (!d) {
		close(dfd);
		return false;
	}
	bool empty = true;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode) || depth > 256) {
			empty = false;
			continue;
		}
		cleanup_free char *crel =
		        rel[0] ? sw_xasprintf("%s/%s", rel, de->d_name) : sw_xstrdup(de->d_name);
		int cfd = openat(dirfd(d), de->d_name,
		                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			empty = false;
			continue;
		}
		bool child_empty = prune_dir(cfd, crel, lowers, depth + 1);
		if (child_empty && !is_opaque_at(dirfd(d), de->d_name) &&
		    same_in_lowers(lowers, crel, &st) &&
		    unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) == 0)
			continue;
		empty = false;
	}
	closedir(d);
	return empty;
}

/*
 * Remove from an overlay upper folder the folders overlayfs only copied up (empty, not opaque,
 * and the same mode, owner and mtime as the folder they shadow), as BuildKit's differ leaves
 * them out: a RUN that changes nothing then makes an empty layer.
 */
static void prune_copied_up(const char *upper, char *const *lowers)
{
	int fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		(void)prune_dir(fd, "", lowers, 0);
}

/* ---------------------------------------------------------------- RUN */

typedef struct run_io {
	sw_build__ctx *b;
	int step;
	const char *stage;
	const char *title;
	char tail[TAIL_BYTES];
	size_t tail_len;
} run_io;

static void run_output(sw_exec_stream stream, const char *data, size_t len, void *payload)
{
	(void)stream;
	run_io *io = payload;
	sw_build__emit(io->b, SW_BUILD_EV_STEP_OUTPUT, io->step, io->stage, io->title, false, false,
	               0, 0, data, len);
	if (len >= TAIL_BYTES) {
		memcpy(io->tail, data + len - TAIL_BYTES, TAIL_BYTES);
		io->tail_len = TAIL_BYTES;
		return;
	}
	if (io->tail_len + len > TAIL_BYTES) {
		size_t drop = io->tail_len + len - TAIL_BYTES;
		memmove(io->tail, io->tail + drop, io->tail_len - drop);
		io->tail_len -= drop;
	}
	memcpy(io->tail + io->tail_len, data, len);
	io->tail_len += len;
}

/* The last lines of the output, each indented. */
static char *tail_lines(const run_io *io)
{
	size_t end = io->tail_len;
	while (end && (io->tail[end - 1] == '\n' || io->tail[end - 1] == '\r'))
		end--;
	size_t start = end;
	int lines = 0;
	while (start > 0) {
		if (io->tail[start - 1] == '\n' && ++lines == TAIL_LINES)
			break;
		start--;
	}
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	int rc = 0;
	bool bol = true;
	for (size_t i = start; i < end && rc == 0; i++) {
		if (bol)
			rc = sw_buf_puts(&b, "\n  ", &e);
		bol = io->tail[i] == '\n';
		if (!bol && rc == 0 && io->tail[i] != '\r')
			rc = sw_buf_append(&b, &io->tail[i], 1, &e);
	}
	sw_error_free(e);
	return sw_buf_steal(&b, NULL);
}

typedef struct run_res {
	sw_exec_mount *mounts;
	size_t n;
	char **strs; /* strings the mounts point at */
	int *locks;  /* flock fds of cache mounts */
	size_t n_locks;
	char **tmp; /* scratch folders of this run (secrets, copies, scripts) */
	char **mps; /* overlay mounts of this run (writable binds) */
} run_res;

static const char *keep(run_res *r, char *s)
{
	sw_strv_push(&r->strs, s);
	free(s);
	return r->strs[sw_strv_len(r->strs) - 1];
}

static sw_exec_mount *add_mount(run_res *r)
{
	r->mounts = sw_xrealloc(r->mounts, (r->n + 1) * sizeof(*r->mounts));
	sw_exec_mount *m = &r->mounts[r->n++];
	memset(m, 0, sizeof(*m));
	return m;
}

static void run_res_clear(sw_build__ctx *b, run_res *r)
{
	for (size_t i = 0; i < r->n_locks; i++)
		close(r->locks[i]);
	free(r->locks);
	for (size_t i = 0; r->mps && r->mps[i]; i++) {
		sw_error *e = NULL;
		if (sw_build__overlay_drop(b, r->mps[i], &e) < 0) {
			SW_LOG(SW_LOG_WARN, "build: %s", sw_error_msg(e));
			sw_error_free(e);
		}
	}
	sw_strv_free(r->mps);
	for (size_t i = 0; r->tmp && r->tmp[i]; i++)
		sw_build__scratch_remove(b, r->tmp[i]);
	sw_strv_free(r->tmp);
	sw_strv_free(r->strs);
	free(r->mounts);
	memset(r, 0, sizeof(*r));
}

static int run_tmp(char **out, sw_build__ctx *b, run_res *r, const char *prefix, sw_error **err)
{
	if (sw_build__scratch(out, b, prefix, err) < 0)
		return sw_error_code_of(*err);
	sw_strv_push(&r->tmp, *out);
	return 0;
}

static int lock_wait(int fd, sw_build__ctx *b, sw_error **err)
{
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EINTR)
			return sw_error_os(err, errno, "lock cache mount");
		if (sw_build__cancelled(b))
			return sw_error_set(err, SW_ERR_CANCELLED, "build cancelled");
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static int mount_cache(run_res *r, sw_build__ctx *b, const sw_build__mount *m, sw_error **err)
{
	sw_digest d;
	sw_oci_digest_bytes(&d, m->id, strlen(m->id));
	cleanup_free char *base = sw_path_join(b->state_dir, "cache/mounts");
	if (sw_fs_mkdir_p(base, 0700, err) < 0)
		return sw_error_code_of(*err);
	char *dir = sw_xasprintf("%s/%.40s", base, sw_oci_digest_hex(&d));
	if (mkdir(dir, m->mode & 07777) == 0) {
		if (chown(dir, m->uid, m->gid) < 0 || chmod(dir, m->mode & 07777) < 0) {
			int r2 = sw_error_os(err, errno, "cache mount folder %s", dir);
			free(dir);
			return r2;
		}
	} else if (errno != EEXIST) {
		int r2 = sw_error_os(err, errno, "cache mount folder %s", dir);
		free(dir);
		return r2;
	}
	if (m->sharing != SW_BUILD__SHARING_SHARED) {
		/* private is served like locked: one user at a time */
		cleanup_free char *lp = sw_xasprintf("%s.lock", dir);
		int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0) {
			int r2 = sw_error_os(err, errno, "cache mount lock %s", lp);
			free(dir);
			return r2;
		}
		r->locks = sw_xrealloc(r->locks, (r->n_locks + 1) * sizeof(int));
		r->locks[r->n_locks++] = fd;
		if (lock_wait(fd, b, err) < 0) {
			free(dir);
			return sw_error_code_of(*err);
		}
	}
	sw_exec_mount *em = add_mount(r);
	em->type = "bind";
	em->source = keep(r, dir);
	em->destination = m->target;
	return 0;
}

static int mount_secret(run_res *r, sw_build__ctx *b, const sw_build__mount *m, sw_error **err)
{
	const sw_build_secret *sec = NULL;
	for (size_t i = 0; i < b->o->n_secrets; i++)
		if (b->o->secrets[i].id && strcmp(b->o->secrets[i].id, m->id) == 0)
			sec = &b->o->secrets[i];
	if (!sec) {
		if (m->required)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "secret \"%s\" is required but was "
			                    "not given",
			                    m->id);
		return 0; /* an optional secret that is not there: no mount */
	}
	cleanup_free char *data = NULL;
	size_t len = 0;
	if (sw_fs_read_file(&data, &len, sec->src, (size_t)16 << 20, err) < 0)
		return sw_error_wrap(err, "secret \"%s\"", m->id);
	cleanup_free char *dir = NULL;
	if (run_tmp(&dir, b, r, "secret-", err) < 0)
		return sw_error_code_of(*err);
	if (chmod(dir, 0700) < 0)
		return sw_error_os(err, errno, "chmod %s", dir);
	char *file = sw_path_join(dir, "secret");
	int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int r2 = sw_error_os(err, errno, "secret file %s", file);
		free(file);
		return r2;
	}
	int rc = sw_fs_write_all(fd, data, len, err);
	if (rc == 0 && (fchown(fd, m->uid, m->gid) < 0 || fchmod(fd, m->mode & 07777) < 0))
		rc = sw_error_os(err, errno, "secret file %s", file);
	close(fd);
	explicit_bzero(data, len);
	if (rc < 0) {
		free(file);
		return rc;
	}
	/* the folder must be traversable by the container's user */
	if (chmod(dir, 0711) < 0) {
		free(file);
		return sw_error_os(err, errno, "chmod %s", dir);
	}
	sw_exec_mount *em = add_mount(r);
	em->type = "bind";
	em->source = keep(r, file);
	em->destination = m->target;
	em->readonly = true;
	return 0;
}

static int mount_bind(run_res *r, sw_build__ctx *b, const sw_build__mount *m, sw_error **err)
{
	const char *root = NULL;
	if (m->from_kind == SW_BUILD__SRC_CONTEXT) {
		root = sw_build__context_dir(b->ctx);
		cleanup_free char *src = NULL;
		if (path_in_root(&src, root, m->source, err) < 0)
			return sw_error_wrap(err, "--mount source '%s'", m->source);
		struct stat st;
		if (stat(src, &st) < 0)
			return sw_error_os(err, errno, "--mount source '%s'", m->source);
		if (S_ISDIR(st.st_mode) && (b->has_ignore_file || !m->readonly)) {
			/* a copy of what the context holds (ignored files left out), writable */
			char *tmp = NULL;
			if (run_tmp(&tmp, b, r, "bind-", err) < 0)
				return sw_error_code_of(*err);
			tmp = (char *)keep(r, tmp);
			sw_build__copy_opts co;
			memset(&co, 0, sizeof(co));
			co.ignore = b->di;
			co.source_date_epoch = -1;
			if (sw_build__copy(NULL, tmp, "/", root, m->matched, &co, err) < 0)
				return sw_error_wrap(err, "--mount source '%s'", m->source);
			sw_exec_mount *em = add_mount(r);
			em->type = "bind";
			em->source = tmp;
			em->destination = m->target;
			em->readonly = m->readonly;
			return 0;
		}
		if (!m->readonly) {
			/* a single file, writable: a private copy */
			cleanup_free char *tmp = NULL;
			if (run_tmp(&tmp, b, r, "bind-", err) < 0)
				return sw_error_code_of(*err);
			sw_build__copy_opts co;
			memset(&co, 0, sizeof(co));
			co.source_date_epoch = -1;
			cleanup_free char *dest = sw_xstrdup("/file");
			if (sw_build__copy(NULL, tmp, dest, root, m->matched, &co, err) < 0)
				return sw_error_wrap(err, "--mount source '%s'", m->source);
			sw_exec_mount *em = add_mount(r);
			em->type = "bind";
			em->source = keep(r, sw_path_join(tmp, "file"));
			em->destination = m->target;
			return 0;
		}
		sw_exec_mount *em = add_mount(r);
		em->type = "bind";
		em->source = keep(r, steal_pointer(&src));
		em->destination = m->target;
		em->readonly = true;
		return 0;
	}
	char *view = NULL;
	if (sw_build__view(&view, b, m->from_kind, m->from, err) < 0)
		return sw_error_code_of(*err);
	cleanup_free char *src = NULL;
	if (path_in_root(&src, view, m->source, err) < 0)
		return sw_error_wrap(err, "--mount source '%s'", m->source);
	struct stat st;
	if (stat(src, &st) < 0)
		return sw_error_os(err, errno, "--mount source '%s'", m->source);
	if (!m->readonly && S_ISDIR(st.st_mode)) {
		/* writes go to a throw-away upper folder */
		cleanup_free char *upper = NULL;
		if (run_tmp(&upper, b, r, "bindrw-", err) < 0)
			return sw_error_code_of(*err);
		const char *lowers[] = { src };
		char *mp = NULL;
		if (sw_build__overlay(&mp, b, lowers, 1, upper, err) < 0)
			return sw_error_code_of(*err);
		sw_strv_push(&r->mps, mp);
		sw_exec_mount *em = add_mount(r);
		em->type = "bind";
		em->source = keep(r, mp);
		em->destination = m->target;
		return 0;
	}
	sw_exec_mount *em = add_mount(r);
	em->type = "bind";
	em->source = keep(r, steal_pointer(&src));
	em->destination = m->target;
	em->readonly = true;
	return 0;
}

static int run_mounts(run_res *r, sw_build__ctx *b, const sw_build__step *s, sw_error **err)
{
	for (size_t i = 0; i < s->n_mounts; i++) {
		const sw_build__mount *m = &s->mounts[i];
		int rc = 0;
		switch (m->type) {
		case SW_BUILD__MOUNT_BIND:
			rc = mount_bind(r, b, m, err);
			break;
		case SW_BUILD__MOUNT_CACHE:
			rc = mount_cache(r, b, m, err);
			break;
		case SW_BUILD__MOUNT_SECRET:
			rc = mount_secret(r, b, m, err);
			break;
		case SW_BUILD__MOUNT_TMPFS: {
			sw_exec_mount *em = add_mount(r);
			em->type = "tmpfs";
			em->destination = m->target;
			em->mode = 01777;
			break;
		}
		}
		if (rc < 0)
			return rc;
	}
	if (s->script) {
		char *dir = NULL;
		if (run_tmp(&dir, b, r, "script-", err) < 0)
			return sw_error_code_of(*err);
		dir = (char *)keep(r, dir);
		cleanup_free char *f = sw_path_join(dir, s->script_name);
		if (sw_fs_write_atomic(f, s->script, strlen(s->script), 0755, err) < 0)
			return sw_error_code_of(*err);
		sw_exec_mount *em = add_mount(r);
		em->type = "bind";
		em->source = dir;
		em->destination = "/dev/pipes";
		em->readonly = true;
	}
	return 0;
}

int sw_build__exec_run(int *code, sw_build__ctx *b, int si, size_t ki, int step_no, sw_error **err)
{
	*code = 0;
	sw_build__stage *st = &b->plan->stages[si];
	const sw_build__step *s = &st->steps[ki];
	sw_build__rt *rt = &b->srt[si];
	cleanup_strv char **lowers = NULL;
	cleanup_free char *upper = NULL;
	if (sw_build__lowers(&lowers, b, rt, err) < 0 ||
	    sw_build__scratch(&upper, b, "run-", err) < 0)
		return sw_error_code_of(*err);
	run_res rr;
	memset(&rr, 0, sizeof(rr));
	int rc = run_mounts(&rr, b, s, err);
	if (rc < 0) {
		run_res_clear(b, &rr);
		return rc;
	}
	run_io *io = sw_xcalloc(1, sizeof(*io));
	io->b = b;
	io->step = step_no;
	io->stage = st->label;
	io->title = s->title;
	sw_exec_spec spec;
	memset(&spec, 0, sizeof(spec));
	spec.lower_dirs = (const char *const *)lowers;
	spec.n_lower = sw_strv_len(lowers);
	spec.upper_dir = upper;
	spec.argv = s->argv;
	spec.env = s->env;
	spec.cwd = s->cwd;
	spec.user = s->user;
	spec.mounts = rr.mounts;
	spec.n_mounts = rr.n;
	spec.network = s->net_host ? SW_EXEC_NET_HOST : SW_EXEC_NET_NONE;
	spec.runtime = b->o->runtime;
	spec.state_dir = b->state_dir;
	spec.id_prefix = "build";
	spec.cancel = b->o->cancel;
	spec.kill_grace_ms = 1000; /* a cancelled build does not wait long for a step */
	spec.on_output = run_output;
	spec.payload = io;
	sw_exec_result res;
	memset(&res, 0, sizeof(res));
	const char *file = b->df->filename ? b->df->filename : "Dockerfile";
	rc = sw_exec_container_run(&res, &spec, err);
	run_res_clear(b, &rr);
	if (rc < 0) {
		sw_error_wrap(err, "RUN step %d (%s:%d)", step_no, file, s->ins->line);
		free(io);
		return rc;
	}
	if (res.cancelled || sw_build__cancelled(b)) {
		free(io);
		return sw_error_set(err, SW_ERR_CANCELLED,
		                    "build cancelled during RUN step %d (%s:%d)", step_no, file,
		                    s->ins->line);
	}
	if (res.exit_code != 0) {
		*code = res.exit_code;
		cleanup_free char *tail = tail_lines(io);
		free(io);
		const char *why = res.timed_out ? " (timed out)" : "";
		if (res.signal)
			return sw_error_set(
			        err, SW_ERR_GENERIC,
			        "RUN step %d (%s:%d): exit code %d (killed by signal %d)%s%s%s",
			        step_no, file, s->ins->line, res.exit_code, res.signal, why,
			        tail[0] ? "; last output:" : "", tail);
		return sw_error_set(err, SW_ERR_GENERIC, "RUN step %d (%s:%d): exit code %d%s%s%s",
		                    step_no, file, s->ins->line, res.exit_code, why,
		                    tail[0] ? "; last output:" : "", tail);
	}
	free(io);
	prune_copied_up(upper, lowers);
	return sw_build__commit(b, &rt->steps[ki], s, upper, err);
}

/* ---------------------------------------------------------------- COPY / ADD */

static int copy_sources(const char **root, char ***srcs, char **tmpdir, sw_build__ctx *b,
                        const sw_build__step *s, sw_error **err)
{
	*srcs = NULL;
	switch (s->src_kind) {
	case SW_BUILD__SRC_CONTEXT:
		*root = sw_build__context_dir(b->ctx);
		*srcs = sw_strv_dup(s->matched);
		return 0;
	case SW_BUILD__SRC_STAGE:
	case SW_BUILD__SRC_IMAGE: {
		char *view = NULL;
		if (sw_build__view(&view, b, s->src_kind, s->src, err) < 0)
			return sw_error_code_of(*err);
		*root = view;
		return match_in_root(srcs, view, s->srcs, err);
	}
	case SW_BUILD__SRC_HEREDOC: {
		if (sw_build__scratch(tmpdir, b, "heredoc-", err) < 0)
			return sw_error_code_of(*err);
		for (size_t i = 0; s->srcs[i]; i++) {
			cleanup_free char *f = sw_path_join(*tmpdir, s->srcs[i]);
			if (sw_fs_write_atomic(f, s->bodies[i], strlen(s->bodies[i]), 0644, err) <
			    0)
				return sw_error_code_of(*err);
			if (chmod(f, 0644) < 0)
				return sw_error_os(err, errno, "chmod %s", f);
		}
		*root = *tmpdir;
		*srcs = sw_strv_dup(s->srcs);
		return 0;
	}
	case SW_BUILD__SRC_URL:
		*root = b->download_dir;
		for (size_t i = 0; s->srcs[i]; i++)
			for (size_t k = 0; k < b->n_downloads; k++)
				if (strcmp(b->downloads[k].url, s->srcs[i]) == 0)
					sw_strv_push(srcs, b->downloads[k].name);
		if (!*srcs)
			return sw_error_set(err, SW_ERR_NOT_FOUND, "ADD: downloads missing");
		return 0;
	}
	return sw_error_set(err, SW_ERR_INVALID, "unknown source kind");
}

int sw_build__exec_copy(sw_build__ctx *b, int si, size_t ki, sw_error **err)
{
	sw_build__stage *st = &b->plan->stages[si];
	const sw_build__step *s = &st->steps[ki];
	sw_build__rt *rt = &b->srt[si];
	cleanup_strv char **lowers = NULL;
	cleanup_free char *upper = NULL;
	cleanup_free char *mp = NULL;
	cleanup_free char *tmpdir = NULL;
	cleanup_strv char **srcs = NULL;
	const char *root = NULL;
	const char *file = b->df->filename ? b->df->filename : "Dockerfile";
	/* sources first: a stage view must not be mounted while our own overlay is busy */
	if (copy_sources(&root, &srcs, &tmpdir, b, s, err) < 0)
		return sw_error_wrap(err, "%s:%d: %s", file, s->ins->line, s->add ? "ADD" : "COPY");
	if (sw_build__lowers(&lowers, b, rt, err) < 0 ||
	    sw_build__scratch(&upper, b, "copy-", err) < 0 ||
	    sw_build__overlay(&mp, b, (const char *const *)lowers, sw_strv_len(lowers), upper,
	                      err) < 0)
		return sw_error_code_of(*err);
	sw_build__copy_opts co;
	memset(&co, 0, sizeof(co));
	co.source_date_epoch = -1;
	int rc = 0;
	if (s->chown) {
		uid_t uid = 0;
		gid_t gid = 0;
		rc = resolve_owner(&uid, &gid, mp, s->chown, err);
		if (rc < 0)
			sw_error_wrap(err, "%s:%d: %s --chown", file, s->ins->line,
			              s->add ? "ADD" : "COPY");
		co.chown = true;
		co.uid = uid;
		co.gid = gid;
	}
	co.chmod = s->chmod;
	co.mode = s->mode;
	co.keep_owners = s->src_kind == SW_BUILD__SRC_STAGE || s->src_kind == SW_BUILD__SRC_IMAGE;
	co.add_semantics = s->add && s->src_kind == SW_BUILD__SRC_CONTEXT;
	co.ignore = s->src_kind == SW_BUILD__SRC_CONTEXT ? b->di : NULL;
	if (rc == 0) {
		sw_build__copy_stats cs;
		memset(&cs, 0, sizeof(cs));
		rc = sw_build__copy(&cs, mp, s->dest, root, srcs, &co, err);
		if (rc < 0)
			sw_error_wrap(err, "%s:%d: %s", file, s->ins->line,
			              s->add ? "ADD" : "COPY");
	}
	sw_error *ue = NULL;
	if (sw_build__overlay_drop(b, mp, &ue) < 0) {
		if (rc == 0) {
			if (err && !*err)
				*err = ue;
			else
				sw_error_free(ue);
			return SW_ERR_GENERIC;
		}
		sw_error_free(ue);
	}
	if (tmpdir)
		sw_build__scratch_remove(b, tmpdir);
	if (rc < 0)
		return rc;
	return sw_build__commit(b, &rt->steps[ki], s, upper, err);
}

/* ---------------------------------------------------------------- WORKDIR */

/* mkdir -p of `path` inside the mounted root, created folders owned by uid:gid. */
static int mkdir_owned(const char *root, const char *path, bool chown_new, uid_t uid, gid_t gid,
                       sw_error **err)
{
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open %s", root);
	if (sw_path_mkdir_in_root(rootfd, path, 0755, chown_new, uid, gid, err) < 0)
		return sw_error_wrap(err, "WORKDIR %s", path);
	return 0;
}

int sw_build__exec_workdir(sw_build__ctx *b, int si, size_t ki, sw_error **err)
{
	sw_build__stage *st = &b->plan->stages[si];
	const sw_build__step *s = &st->steps[ki];
	sw_build__rt *rt = &b->srt[si];
	cleanup_strv char **lowers = NULL;
	cleanup_free char *upper = NULL;
	cleanup_free char *mp = NULL;
	if (sw_build__lowers(&lowers, b, rt, err) < 0 ||
	    sw_build__scratch(&upper, b, "workdir-", err) < 0 ||
	    sw_build__overlay(&mp, b, (const char *const *)lowers, sw_strv_len(lowers), upper,
	                      err) < 0)
		return sw_error_code_of(*err);
	int rc = 0;
	uid_t uid = 0;
	gid_t gid = 0;
	if (s->user)
		rc = resolve_owner(&uid, &gid, mp, s->user, err);
	if (rc == 0)
		rc = mkdir_owned(mp, s->workdir, s->user != NULL, uid, gid, err);
	if (rc < 0) {
		const char *file = b->df->filename ? b->df->filename : "Dockerfile";
		sw_error_wrap(err, "%s:%d", file, s->ins->line);
	}
	sw_error *ue = NULL;
	if (sw_build__overlay_drop(b, mp, &ue) < 0) {
		if (rc == 0) {
			if (err && !*err)
				*err = ue;
			else
				sw_error_free(ue);
			return SW_ERR_GENERIC;
		}
		sw_error_free(ue);
	}
	if (rc < 0)
		return rc;
	return sw_build__commit(b, &rt->steps[ki], s, upper, err);
}
