/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pipeline job caches: folders of a job's workspace kept between runs under
 * STATE/cache/jobs/<sha256 of the key>.tar. The file is a pax tar written with libarchive
 * (regular files, folders, symlinks, modes and mtimes; no owners, no devices, hard links stored
 * as separate files), followed by one 512-byte block after the tar's end that records the
 * sha256 and size of the tar ("slipway-job-cache 1\nsha256:<hex>\nsize:<n>\n", zero padded):
 * tar readers stop at the end-of-archive marker and never see it, and a restore checks it
 * first, so a damaged or truncated file is a miss (removed, with a warning), never half a
 * cache. Saves write "<owner>.job-XXXXXX" in the same folder, fsync it and rename it over the
 * old version (the index lock held shared around the rename, as prune holds it exclusively);
 * temporary files of processes that are gone are removed by the next save. Restores go through
 * the safe layer applier, so nothing outside the workspace is ever written, and touch the
 * file's mtime: prune removes the least recently restored first.
 */
#include "cache/cache_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>

#define TRAILER_SIZE 512
#define TRAILER_MAGIC "slipway-job-cache 1\n"
#define IO_BUF (128 * 1024)
#define MAX_DEPTH 256

static char *jobs_dir(sw_cache *c)
{
	return sw_path_join(c->root, "jobs");
}

static void key_hex(char out[65], const char *key)
{
	sw_digest d;
	sw_oci_digest_bytes(&d, key, strlen(key));
	memcpy(out, sw_oci_digest_hex(&d), 64);
	out[64] = '\0';
}

/* Temporary files of saves whose process is gone. */
static void sweep_job_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!strstr(de->d_name, ".job-"))
			continue;
		if (sw_cache__owner_alive(de->d_name) == 0) {
			(void)unlinkat(dirfd(d), de->d_name, 0);
			SW_LOG(SW_LOG_DEBUG, "cache: removed the unfinished job cache '%s/%s'", dir,
			       de->d_name);
		}
	}
	closedir(d);
}

/* ---------------------------------------------------------------- save */

typedef struct saver {
	struct archive *a;
	int fd;
	sw_oci_hasher *hash;
	uint64_t size;
	int write_errno;
	sw_cache__strmap done; /* path -> 1 entry written, 2 folder written with its content */
	char *buf;
	const char *key;
} saver;

static la_ssize_t write_cb(struct archive *a, void *payload, const void *buf, size_t len)
{
	saver *s = payload;
	sw_error *e = NULL;
	if (sw_fs_write_all(s->fd, buf, len, &e) < 0) {
		s->write_errno = e && e->sys ? e->sys : EIO;
		archive_set_error(a, s->write_errno, "%s", sw_error_msg(e));
		sw_error_free(e);
		return -1;
	}
	sw_oci_hasher_update(s->hash, buf, len);
	s->size += len;
	return (la_ssize_t)len;
}

static int archive_fail(saver *s, sw_error **err, const char *rel, const char *what)
{
	return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_ARCHIVE, archive_errno(s->a),
	                    "%s '%s': %s", what, rel, archive_error_string(s->a));
}

/* Write the header (and content) of one entry `name` of dirfd, known as `rel`. */
static int save_one(saver *s, int dirfd, const char *name, const char *rel, const struct stat *st,
                    sw_error **err)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, rel);
	archive_entry_set_mode(e, st->st_mode);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_mtime(e, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
	int r = 0;
	int fd = -1;
	int64_t fsize = 0;
	if (S_ISREG(st->st_mode)) {
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			archive_entry_free(e);
			return sw_error_os(err, errno, "open '%s'", rel);
		}
		struct stat fst;
		if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode)) {
			close(fd);
			archive_entry_free(e);
			return sw_error_set(err, SW_ERR_CONFLICT, "'%s' changed while being saved",
			                    rel);
		}
		fsize = fst.st_size;
		archive_entry_set_size(e, fsize);
	} else if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, PATH_MAX);
		if (n < 0) {
			archive_entry_free(e);
			return sw_error_os(err, errno, "read the symlink '%s'", rel);
		}
		target[n] = '\0';
		archive_entry_set_symlink(e, target);
		archive_entry_set_size(e, 0);
	} else {
		archive_entry_set_size(e, 0);
	}
	if (archive_write_header(s->a, e) < ARCHIVE_WARN)
		r = archive_fail(s, err, rel, "write the header of");
	archive_entry_free(e);
	if (r == 0 && fd >= 0) {
		int64_t left = fsize;
		while (r == 0 && left > 0) {
			ssize_t n = read(fd, s->buf, IO_BUF);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				r = sw_error_os(err, errno, "read '%s'", rel);
				break;
			}
			if (n == 0) {
				/* shrunk while being read: keep the size written in the header */
				memset(s->buf, 0, IO_BUF);
				n = left < IO_BUF ? (ssize_t)left : IO_BUF;
			}
			if (n > left)
				n = (ssize_t)left;
			if (archive_write_data(s->a, s->buf, (size_t)n) < 0)
				r = archive_fail(s, err, rel, "write the content of");
			left -= n;
		}
	}
	if (fd >= 0)
		close(fd);
	return r;
}

static bool is_whiteout_name(const char *name)
{
	return strncmp(name, ".wh.", 4) == 0;
}

static int save_tree(saver *s, int dirfd, const char *name, const char *rel, int depth,
                     sw_error **err);

static int save_dir_contents(saver *s, int fd, const char *rel, int depth, sw_error **err)
{
	int dfd = dup(fd);
	if (dfd < 0)
		return sw_error_os(err, errno, "dup");
	DIR *d = fdopendir(dfd);
	if (!d) {
		int e = errno;
		close(dfd);
		return sw_error_os(err, e, "read the folder '%s'", rel);
	}
	rewinddir(d);
	char **names = NULL;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			sw_strv_push(&names, de->d_name);
	}
	closedir(d);
	int r = 0;
	for (char **n = names; r == 0 && n && *n; n++) {
		cleanup_free char *sub = sw_xasprintf("%s/%s", rel, *n);
		r = save_tree(s, fd, *n, sub, depth + 1, err);
	}
	sw_strv_free(names);
	return r;
}

/* Save the entry `name` of dirfd (and, for a folder, everything in it). */
static int save_tree(saver *s, int dirfd, const char *name, const char *rel, int depth,
                     sw_error **err)
{
	if (depth > MAX_DEPTH)
		return sw_error_set(err, SW_ERR_INVALID, "'%s': folders nested too deep", rel);
	if (is_whiteout_name(name)) {
		SW_LOG(SW_LOG_DEBUG, "cache: job cache: '%s' skipped (an overlay whiteout name)",
		       rel);
		return 0;
	}
	int64_t state = sw_cache__strmap_get(&s->done, rel);
	if (state == 2)
		return 0;
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : sw_error_os(err, errno, "stat '%s'", rel);
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode)) {
		SW_LOG(SW_LOG_DEBUG, "cache: job cache: '%s' skipped (not a file, folder or link)",
		       rel);
		return 0;
	}
	int r;
	if (state == 0 && (r = save_one(s, dirfd, name, rel, &st, err)) < 0)
		return r;
	sw_cache__strmap_add(&s->done, rel, S_ISDIR(st.st_mode) ? 2 - state : 1 - state);
	if (!S_ISDIR(st.st_mode))
		return 0;
	cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open the folder '%s'", rel);
	return save_dir_contents(s, fd, rel, depth, err);
}

/* Save one path given by the caller: its parent folders as entries of their own, then the
 * path itself. A component on the way that is a symlink is refused. */
static int save_path(saver *s, int rootfd, const char *path, sw_error **err)
{
	for (const char *p = path; *p;) {
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return sw_error_set(err, SW_ERR_INVALID, "path '%s' leaves the workspace",
			                    path);
		p += len;
		while (*p == '/')
			p++;
	}
	if (path[0] == '/')
		return sw_error_set(err, SW_ERR_INVALID, "path '%s' leaves the workspace", path);
	cleanup_free char *clean = sw_path_clean(path);
	if (!*clean || strcmp(clean, ".") == 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "path '%s': the whole workspace cannot be a cache path", path);
	cleanup_close int fd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open the workspace");
	char *slash;
	char *comp = clean;
	while ((slash = strchr(comp, '/')) != NULL) {
		*slash = '\0';
		struct stat st;
		if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				return 0;
			return sw_error_os(err, errno, "stat '%s'", clean);
		}
		if (S_ISLNK(st.st_mode))
			return sw_error_set(err, SW_ERR_INVALID,
			                    "path '%s' goes through the symlink '%s': refused",
			                    path, clean);
		if (!S_ISDIR(st.st_mode))
			return 0; /* not there */
		if (sw_cache__strmap_get(&s->done, clean) == 0) {
			int r = save_one(s, fd, comp, clean, &st, err);
			if (r < 0)
				return r;
			sw_cache__strmap_add(&s->done, clean, 1);
		}
		int nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (nfd < 0)
			return sw_error_os(err, errno, "open the folder '%s'", clean);
		close(fd);
		fd = nfd;
		*slash = '/';
		comp = slash + 1;
	}
	return save_tree(s, fd, comp, clean, 0, err);
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int write_archive(saver *s, int rootfd, const char *const *paths, size_t n, sw_error **err)
{
	s->a = archive_write_new();
	if (archive_write_set_format_pax(s->a) != ARCHIVE_OK ||
	    archive_write_add_filter_none(s->a) != ARCHIVE_OK ||
	    archive_write_open2(s->a, s, NULL, write_cb, NULL, NULL) != ARCHIVE_OK)
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_ARCHIVE, archive_errno(s->a),
		                    "start the archive: %s", archive_error_string(s->a));
	/* sorted, so a folder comes before the paths inside it */
	cleanup_free const char **sorted = sw_xcalloc(n + 1, sizeof(*sorted));
	for (size_t i = 0; i < n; i++)
		sorted[i] = paths[i];
	if (n > 1)
		qsort(sorted, n, sizeof(*sorted), str_cmp);
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		if (!sorted[i] || !*sorted[i])
			continue;
		r = save_path(s, rootfd, sorted[i], err);
	}
	if (r == 0 && archive_write_close(s->a) != ARCHIVE_OK)
		r = sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_ARCHIVE, archive_errno(s->a),
		                 "finish the archive: %s", archive_error_string(s->a));
	return r;
}

int sw_cache_job_save(uint64_t *out_bytes, sw_cache *c, const char *key, const char *workspace,
                      const char *const *paths, size_t n_paths, sw_error **err)
{
	if (out_bytes)
		*out_bytes = 0;
	if (!key || !*key)
		return sw_error_set(err, SW_ERR_INVALID, "job cache: empty key");
	char hex[65];
	key_hex(hex, key);
	cleanup_free char *dir = jobs_dir(c);
	int r = sw_fs_mkdir_p(dir, 0700, err);
	if (r < 0)
		return sw_error_wrap(err, "save the job cache '%s'", key);
	sweep_job_tmp(dir);
	cleanup_close int rootfd = open(workspace, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "save the job cache '%s': open the workspace '%s'",
		                   key, workspace);

	char owner[SW_CACHE__OWNER_MAX];
	sw_cache__owner_tag(owner);
	cleanup_free char *tmp = sw_xasprintf("%s/%s.job-XXXXXX", dir, owner);
	saver s = { .fd = -1 };
	s.fd = mkostemp(tmp, O_CLOEXEC);
	if (s.fd < 0)
		return sw_error_os(err, errno, "save the job cache '%s': create '%s'", key, tmp);
	s.hash = sw_oci_hasher_new();
	s.buf = sw_xmalloc(IO_BUF);
	s.key = key;
	r = write_archive(&s, rootfd, paths, n_paths, err);
	if (r == 0) {
		char trailer[TRAILER_SIZE];
		memset(trailer, 0, sizeof(trailer));
		sw_digest d;
		sw_oci_hasher_final(s.hash, &d);
		snprintf(trailer, sizeof(trailer), "%ssha256:%s\nsize:%llu\n", TRAILER_MAGIC,
		         sw_oci_digest_hex(&d), (unsigned long long)s.size);
		r = sw_fs_write_all(s.fd, trailer, sizeof(trailer), err);
	}
	if (r == 0 && fsync(s.fd) < 0)
		r = sw_error_os(err, errno, "fsync '%s'", tmp);
	uint64_t total = s.size + TRAILER_SIZE;
	if (s.a)
		archive_write_free(s.a);
	sw_oci_hasher_free(s.hash);
	sw_cache__strmap_free(&s.done);
	free(s.buf);
	if (close(s.fd) < 0 && r == 0)
		r = sw_error_os(err, errno, "close '%s'", tmp);
	if (r == 0) {
		cleanup_free char *final = sw_xasprintf("%s/%s.tar", dir, hex);
		sw_cache__index_hold(c);
		if (rename(tmp, final) < 0)
			r = sw_error_os(err, errno, "rename '%s' to '%s'", tmp, final);
		sw_cache__index_release(c);
		if (r == 0)
			r = sw_fs_fsync_dir(dir, err);
	}
	if (r < 0) {
		(void)unlink(tmp);
		return sw_error_wrap(err, "save the job cache '%s'", key);
	}
	if (out_bytes)
		*out_bytes = total;
	return 0;
}

/* ---------------------------------------------------------------- restore */

/* Check the trailer of the open archive: NULL when whole, else why not (caller frees). */
static char *verify(int fd, off_t size)
{
	if (size < TRAILER_SIZE * 2 || size % TRAILER_SIZE != 0)
		return sw_xasprintf("%lld bytes is not a whole archive", (long long)size);
	uint64_t tar_size = (uint64_t)size - TRAILER_SIZE;
	sw_oci_hasher *h = sw_oci_hasher_new();
	cleanup_free char *buf = sw_xmalloc(IO_BUF);
	uint64_t done = 0;
	char trailer[TRAILER_SIZE + 1];
	size_t tlen = 0;
	char *why = NULL;
	char *want = NULL;
	if (lseek(fd, 0, SEEK_SET) < 0) {
		why = sw_xasprintf("seek: %s", strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, IO_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			why = sw_xasprintf("read: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		size_t k = (size_t)n;
		size_t in_tar =
		        done < tar_size ? (size_t)(tar_size - done < k ? tar_size - done : k) : 0;
		sw_oci_hasher_update(h, buf, in_tar);
		size_t rest = k - in_tar;
		if (tlen + rest > TRAILER_SIZE) {
			why = sw_xstrdup("the file grew while being read");
			goto out;
		}
		memcpy(trailer + tlen, buf + in_tar, rest);
		tlen += rest;
		done += k;
	}
	if (tlen != TRAILER_SIZE || done != (uint64_t)size) {
		why = sw_xstrdup("the file is shorter than it was");
		goto out;
	}
	trailer[TRAILER_SIZE] = '\0';
	sw_digest d;
	sw_oci_hasher_final(h, &d);
	want = sw_xasprintf("%ssha256:%s\nsize:%llu\n", TRAILER_MAGIC, sw_oci_digest_hex(&d),
	                    (unsigned long long)tar_size);
	if (strncmp(trailer, TRAILER_MAGIC, strlen(TRAILER_MAGIC)) != 0)
		why = sw_xstrdup("no end marker: the save did not finish or the file was cut");
	else if (strcmp(trailer, want) != 0)
		why = sw_xstrdup("its content does not match its checksum");
out:
	free(want);
	sw_oci_hasher_free(h);
	return why;
}

/* Remove the archive at `path` when it is still the file open as `fd`. */
static void drop_damaged(sw_cache *c, const char *path, int fd)
{
	struct stat a, b;
	sw_cache__index_hold(c);
	if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
	    a.st_ino == b.st_ino)
		(void)unlink(path);
	sw_cache__index_release(c);
}

int sw_cache_job_restore(bool *hit, char **warning, sw_cache *c, const char *key,
                         const char *workspace, sw_error **err)
{
	*hit = false;
	if (warning)
		*warning = NULL;
	if (!key || !*key)
		return sw_error_set(err, SW_ERR_INVALID, "job cache: empty key");
	char hex[65];
	key_hex(hex, key);
	cleanup_free char *dir = jobs_dir(c);
	cleanup_free char *path = sw_xasprintf("%s/%s.tar", dir, hex);
	struct stat wst;
	if (stat(workspace, &wst) < 0 || !S_ISDIR(wst.st_mode))
		return sw_error_os(err, errno ? errno : ENOTDIR,
		                   "restore the job cache '%s': the workspace '%s'", key,
		                   workspace);
	sw_cache__index_hold(c);
	cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	int open_errno = errno;
	sw_cache__index_release(c);
	if (fd < 0) {
		if (open_errno == ENOENT)
			return 0;
		return sw_error_os(err, open_errno, "restore the job cache '%s': open '%s'", key,
		                   path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return sw_error_os(err, errno, "restore the job cache '%s': stat '%s'", key, path);
	cleanup_free char *why =
	        S_ISREG(st.st_mode) ? verify(fd, st.st_size) : sw_xstrdup("not a regular file");
	if (!why && lseek(fd, 0, SEEK_SET) < 0)
		return sw_error_os(err, errno, "restore the job cache '%s': seek", key);
	if (!why) {
		sw_oci_apply_opts opts = { 0 };
		sw_error *ae = NULL;
		if (sw_oci_layer_apply_fd(NULL, workspace, fd, &opts, &ae) < 0) {
			if (sw_error_code_of(ae) != SW_ERR_INVALID) {
				if (err && !*err)
					*err = ae;
				else
					sw_error_free(ae);
				return sw_error_wrap(err, "restore the job cache '%s'", key);
			}
			why = sw_xstrdup(sw_error_msg(ae));
			sw_error_free(ae);
		}
	}
	if (why) {
		drop_damaged(c, path, fd);
		SW_LOG(SW_LOG_DEBUG, "cache: job cache %s: %s", hex, why);
		if (warning)
			*warning = sw_xasprintf("job cache '%s' is damaged (%s): removed; the job "
			                        "starts without it",
			                        key, why);
		return 0;
	}
	/* the last restore is what prune orders job caches by */
	(void)futimens(fd, NULL);
	*hit = true;
	return 0;
}
