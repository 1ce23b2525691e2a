/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer snapshots: one folder per layer diff ID under STATE/cache/snapshots, the layer applied
 * alone onto an empty folder with overlay-style whiteouts, ready to be an overlay lower folder.
 * A snapshot is made in a scratch folder of tmp/ and renamed into place (no-replace), so two
 * processes racing for the same layer both succeed and one folder remains. Its size on disk is
 * measured once (snapshots never change) and kept in a small file beside it, whose mtime is the
 * snapshot's last use.
 *
 * Verification: the applier reads the blob stream itself, so it cannot be asked what it
 * unpacked. Instead a thread reads the store's blob file, hashes it (the blob digest: the
 * store's file is checked on this read, as sw_oci_store_open_blob asks of its readers),
 * decompresses it with the same decompressors the applier knows, hashes the result (the diff
 * ID) and feeds exactly those bytes to the applier through a pipe. One pass, both digests, and
 * what was hashed is what was applied: a blob whose content does not match the diff ID it is
 * filed under (a config that lies) never becomes a snapshot that other images would share.
 * libarchive is used here only as a decompressor (raw format); moving this into the oci module
 * (the applier reporting the diff ID it saw) would drop it.
 */
#include "cache/cache_internal.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#define FEED_BUF ((size_t)256 << 10)
#define INFO_MAX ((size_t)4096)
#define DU_MAX_DEPTH 4096

bool sw_cache__is_hex_name(const char *name, const char *suffix)
{
	for (int i = 0; i < 64; i++) {
		char ch = name[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return false;
	}
	return strcmp(name + 64, suffix) == 0;
}

/* ---------------------------------------------------------------- sizes on disk */

static int du_at(uint64_t *total, sw_cache__strmap *seen, int parent_fd, const char *name,
                 const char *display, int depth, sw_error **err)
{
	struct stat st;
	if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return sw_error_os(err, errno, "stat '%s'", display);
	}
	if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
		char key[48];
		snprintf(key, sizeof(key), "%llx:%llx", (unsigned long long)st.st_dev,
		         (unsigned long long)st.st_ino);
		if (sw_cache__strmap_add(seen, key, 1) > 1)
			return 0;
	}
	*total += (uint64_t)st.st_blocks * 512;
	if (!S_ISDIR(st.st_mode))
		return 0;
	if (depth > DU_MAX_DEPTH)
		return sw_error_set(err, SW_ERR_INVALID, "'%s': folders nested too deep", display);
	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "open folder '%s'", display);
	DIR *d = fdopendir(fd);
	if (!d) {
		int e = errno;
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
		if ((r = du_at(total, seen, dirfd(d), de->d_name, child, depth + 1, err)) < 0)
			break;
	}
	closedir(d);
	return r;
}

int sw_cache__du(uint64_t *out, const char *path, sw_error **err)
{
	*out = 0;
	sw_cache__strmap seen = { 0 };
	int r = du_at(out, &seen, AT_FDCWD, path, path, 0, err);
	sw_cache__strmap_free(&seen);
	return r;
}

static char *info_path(sw_cache *c, const char *hex)
{
	cleanup_free char *name = sw_xasprintf("%s.info", hex);
	return sw_path_join(c->snapshots, name);
}

static int info_write(sw_cache *c, const char *hex, uint64_t size, sw_error **err)
{
	cleanup_free char *p = info_path(c, hex);
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "{\"size\":%llu}\n", (unsigned long long)size);
	return sw_fs_write_atomic(p, buf, (size_t)n, 0600, err);
}

int sw_cache__snapshot_size(uint64_t *out, sw_cache *c, const char *hex, sw_error **err)
{
	*out = 0;
	cleanup_free char *p = info_path(c, hex);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (sw_fs_read_file(&buf, &len, p, INFO_MAX, NULL) == 0) {
		json_error_t je;
		json_t *o = json_loadb(buf, len, 0, &je);
		json_t *v = o ? json_object_get(o, "size") : NULL;
		bool ok = v && json_is_integer(v) && json_integer_value(v) >= 0;
		if (ok)
			*out = (uint64_t)json_integer_value(v);
		json_decref(o);
		if (ok)
			return 0;
	}
	/* missing or damaged: measure again (snapshots do not change) */
	cleanup_free char *dir = sw_path_join(c->snapshots, hex);
	int r = sw_cache__du(out, dir, err);
	if (r < 0)
		return sw_error_wrap(err, "measure snapshot %s", hex);
	if (info_write(c, hex, *out, err) < 0)
		return sw_error_wrap(err, "snapshot %s", hex);
	return 0;
}

/* Mark a snapshot used now: its size file's mtime (made when missing). */
static int mark_used(sw_cache *c, const char *hex, sw_error **err)
{
	cleanup_free char *p = info_path(c, hex);
	if (utimensat(AT_FDCWD, p, NULL, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	if (errno != ENOENT)
		return sw_error_os(err, errno, "mark snapshot %s used", hex);
	uint64_t size;
	return sw_cache__snapshot_size(&size, c, hex, err);
}

/* ---------------------------------------------------------------- the verifying feed */

typedef struct feed {
	int blob_fd;
	int out_fd; /* write end of the pipe to the applier; -1 once it is gone */
	sw_oci_hasher *blob_hash;
	sw_oci_hasher *diff_hash;
	int64_t blob_size;
	char *in_buf;
	sw_error *err;
	int rc;
} feed;

static la_ssize_t feed_read_cb(struct archive *a, void *payload, const void **out)
{
	feed *f = payload;
	*out = f->in_buf;
	for (;;) {
		ssize_t n = read(f->blob_fd, f->in_buf, FEED_BUF);
		if (n > 0) {
			sw_oci_hasher_update(f->blob_hash, f->in_buf, (size_t)n);
			f->blob_size += n;
		}
		if (n >= 0)
			return n;
		if (errno != EINTR) {
			archive_set_error(a, errno, "read: %s", strerror(errno));
			return -1;
		}
	}
}

static void feed_send(feed *f, const char *p, size_t len)
{
	while (len > 0 && f->out_fd >= 0) {
		ssize_t n = send(f->out_fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* the applier stopped reading (done, or failed): keep hashing */
			close(f->out_fd);
			f->out_fd = -1;
			return;
		}
		p += n;
		len -= (size_t)n;
	}
}

static void *feed_run(void *arg)
{
	feed *f = arg;
	struct archive *a = archive_read_new();
	if (!a)
		abort();
	/* the applier's decompressors (oci/layer_write.c sw_oci__layer_reader_new), no more:
	 * never archive_read_support_filter_all, which may run external programs */
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_filter_xz(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_filter_lz4(a);
	archive_read_support_format_raw(a);
	archive_read_support_format_empty(a);
	struct archive_entry *ent;
	int ar = archive_read_open(a, f, NULL, feed_read_cb, NULL);
	if (ar == ARCHIVE_OK)
		ar = archive_read_next_header(a, &ent);
	while (ar == ARCHIVE_OK || ar == ARCHIVE_WARN) {
		const void *buf;
		size_t len;
		la_int64_t off;
		ar = archive_read_data_block(a, &buf, &len, &off);
		if (ar == ARCHIVE_OK || ar == ARCHIVE_WARN) {
			sw_oci_hasher_update(f->diff_hash, buf, len);
			feed_send(f, buf, len);
		}
	}
	if (ar != ARCHIVE_EOF)
		f->rc = sw_error_lib(&f->err, SW_ERR_INVALID, SW_ERRSRC_ARCHIVE, archive_errno(a),
		                     "decompress: %s", archive_error_string(a));
	/* the applier sees the end of its stream now */
	if (f->out_fd >= 0) {
		close(f->out_fd);
		f->out_fd = -1;
	}
	/* The blob digest covers the whole file: past the end of the compressed stream, and
	 * past a decompression error too (a changed blob is then named as the cause). */
	for (;;) {
		const void *dummy;
		la_ssize_t n = feed_read_cb(a, f, &dummy);
		if (n <= 0) {
			if (n < 0 && f->rc == 0)
				f->rc = sw_error_os(&f->err, archive_errno(a), "read the blob");
			break;
		}
	}
	archive_read_free(a);
	return NULL;
}

/* Apply the store's blob `layer` onto `dir`, checking its digest and size and that its
 * uncompressed content is `diff_id`. */
static int unpack_verified(sw_cache *c, const char *dir, const sw_oci_descriptor *layer,
                           const sw_digest *diff_id, sw_error **err)
{
	cleanup_close int blob_fd = -1;
	int64_t size = 0;
	int r = sw_oci_store_open_blob(&blob_fd, &size, c->store, &layer->digest, err);
	if (r < 0)
		return r;
	if (layer->size >= 0 && size != layer->size)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "layer %s: the store's blob has %lld bytes, its descriptor says "
		        "%lld",
		        layer->digest.s, (long long)size, (long long)layer->size);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return sw_error_os(err, errno, "socketpair");
	feed f = { .blob_fd = blob_fd, .out_fd = sv[1] };
	f.blob_hash = sw_oci_hasher_new();
	f.diff_hash = sw_oci_hasher_new();
	f.in_buf = sw_xmalloc(FEED_BUF);
	pthread_t th;
	int pr = pthread_create(&th, NULL, feed_run, &f);
	if (pr != 0) {
		close(sv[0]);
		close(sv[1]);
		r = sw_error_os(err, pr, "start the layer reader thread");
		goto out;
	}
	sw_oci_apply_opts opts = { .keep_owners = true, .whiteouts_as_devices = true };
	sw_error *apply_err = NULL;
	int ar = sw_oci_layer_apply_fd(NULL, dir, sv[0], &opts, &apply_err);
	/* The feed sees the applier gone and only hashes the rest (also after a failure, so
	 * that a feed error always means the stream itself was bad). */
	close(sv[0]);
	pthread_join(th, NULL);
	/* the causes, deepest first: a changed blob, a bad stream, the applier, the content */
	sw_digest got_blob, got_diff;
	sw_oci_hasher_final(f.blob_hash, &got_blob);
	sw_oci_hasher_final(f.diff_hash, &got_diff);
	if (!sw_oci_digest_eq(&got_blob, &layer->digest) || f.blob_size != size) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "layer %s: the store's blob is damaged (its content is %s)",
		                 layer->digest.s, got_blob.s);
		/* the store's own check removes the bad file, so a pull can fetch it again */
		if (sw_oci_store_verify_blob(c->store, &layer->digest, NULL) == 0)
			SW_LOG(SW_LOG_DEBUG, "cache: blob %s changed while being read",
			       layer->digest.s);
	} else if (f.rc < 0) {
		r = f.rc;
		if (err && !*err) {
			*err = f.err;
			f.err = NULL;
		}
		sw_error_wrap(err, "layer %s", layer->digest.s);
	} else if (ar < 0) {
		r = ar;
		if (err && !*err) {
			*err = apply_err;
			apply_err = NULL;
		}
	} else if (!sw_oci_digest_eq(&got_diff, diff_id)) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "layer %s: its uncompressed content is %s, not the diff ID %s",
		                 layer->digest.s, got_diff.s, diff_id->s);
	}
	sw_error_free(apply_err);
out:
	sw_error_free(f.err);
	sw_oci_hasher_free(f.blob_hash);
	sw_oci_hasher_free(f.diff_hash);
	free(f.in_buf);
	return r;
}

/* ---------------------------------------------------------------- putting snapshots in place */

/*
 * Make `dir` (a finished folder in tmp/) the snapshot `hex`: measure it, flush it to disk (a
 * snapshot outlives a crash only if its files do), write its size file, then rename it in
 * without replacing. When the snapshot already exists (another process won), `dir` is dropped.
 */
static int install(sw_cache *c, const char *dir, const char *hex, sw_error **err)
{
	cleanup_free char *dst = sw_path_join(c->snapshots, hex);
	struct stat st;
	if (lstat(dst, &st) < 0) {
		uint64_t size = 0;
		int r = sw_cache__du(&size, dir, err);
		if (r < 0)
			return r;
		cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return sw_error_os(err, errno, "open '%s'", dir);
		if (syncfs(fd) < 0)
			return sw_error_os(err, errno, "sync '%s'", dir);
		if ((r = info_write(c, hex, size, err)) < 0)
			return r;
		if (renameat2(AT_FDCWD, dir, AT_FDCWD, dst, RENAME_NOREPLACE) == 0)
			return sw_fs_fsync_dir(c->snapshots, err);
		/* a filesystem without RENAME_NOREPLACE: rename fails anyway onto a folder
		 * that has anything in it, and an empty one is an equal snapshot */
		if (errno == EINVAL && rename(dir, dst) == 0)
			return sw_fs_fsync_dir(c->snapshots, err);
		if (errno == EXDEV)
			return sw_error_os(err, errno,
			                   "move '%s' into the snapshots: not on the cache's "
			                   "filesystem",
			                   dir);
		if (errno != EEXIST && errno != ENOTEMPTY)
			return sw_error_os(err, errno, "move '%s' to '%s'", dir, dst);
	}
	SW_LOG(SW_LOG_DEBUG, "cache: snapshot %s already exists, dropping '%s'", hex, dir);
	return sw_fs_rm_rf(dir, err);
}

static int check_diff_id(const sw_digest *diff_id, sw_error **err)
{
	if (!diff_id || sw_oci_digest_parse(NULL, diff_id->s, err) < 0)
		return sw_error_wrap(err, "snapshot: bad diff ID");
	return 0;
}

int sw_cache_snapshot_get(char **out_path, sw_cache *c, const sw_oci_descriptor *layer,
                          const sw_digest *diff_id, sw_error **err)
{
	*out_path = NULL;
	int r = check_diff_id(diff_id, err);
	if (r < 0)
		return r;
	const char *hex = sw_oci_digest_hex(diff_id);
	cleanup_free char *path = sw_path_join(c->snapshots, hex);
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno != ENOENT)
			return sw_error_os(err, errno, "snapshot '%s'", path);
		if (!layer)
			return sw_error_set(err, SW_ERR_NOT_FOUND, "no snapshot of layer %s",
			                    diff_id->s);
		if (sw_oci_digest_parse(NULL, layer->digest.s, err) < 0)
			return sw_error_wrap(err, "snapshot of %s: bad layer digest", diff_id->s);
		cleanup_free char *scratch = NULL;
		if ((r = sw_cache_scratch_dir(&scratch, c, "unpack-", err)) < 0)
			return r;
		r = unpack_verified(c, scratch, layer, diff_id, err);
		if (r == 0)
			r = install(c, scratch, hex, err);
		if (r < 0) {
			sw_error *e = NULL;
			if (sw_fs_rm_rf(scratch, &e) < 0)
				SW_LOG(SW_LOG_DEBUG, "cache: %s", sw_error_msg(e));
			sw_error_free(e);
			return sw_error_wrap(err, "unpack layer %s", diff_id->s);
		}
		SW_LOG(SW_LOG_DEBUG, "cache: unpacked layer %s (blob %s)", diff_id->s,
		       layer->digest.s);
	} else if (!S_ISDIR(st.st_mode)) {
		return sw_error_set(err, SW_ERR_INVALID, "snapshot '%s' is not a folder", path);
	}
	if ((r = mark_used(c, hex, err)) < 0)
		return r;
	*out_path = steal_pointer(&path);
	return 0;
}

int sw_cache_snapshot_adopt(sw_cache *c, const char *dir, const sw_digest *diff_id, sw_error **err)
{
	int r = check_diff_id(diff_id, err);
	if (r < 0)
		return r;
	struct stat st;
	if (lstat(dir, &st) < 0)
		return sw_error_os(err, errno, "adopt '%s' as snapshot %s", dir, diff_id->s);
	if (!S_ISDIR(st.st_mode))
		return sw_error_set(err, SW_ERR_INVALID, "adopt '%s': not a folder", dir);
	const char *hex = sw_oci_digest_hex(diff_id);
	if ((r = install(c, dir, hex, err)) < 0)
		return sw_error_wrap(err, "adopt '%s' as snapshot %s", dir, diff_id->s);
	return mark_used(c, hex, err);
}

bool sw_cache_snapshot_has(sw_cache *c, const sw_digest *diff_id)
{
	if (!diff_id || sw_oci_digest_parse(NULL, diff_id->s, NULL) < 0)
		return false;
	cleanup_free char *path = sw_path_join(c->snapshots, sw_oci_digest_hex(diff_id));
	struct stat st;
	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
