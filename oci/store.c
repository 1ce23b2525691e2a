/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local content store: an OCI image layout folder (`oci-layout`, `index.json`,
 * `blobs/sha256/<hex>`) that umoci and skopeo read as well. Blobs are streamed into a temporary
 * file under `<dir>/.slipway/tmp/` while they are hashed, fsynced and renamed into place; reads
 * hash the content again and remove a blob that no longer matches its name, so a later pull
 * fetches it anew. index.json (tags are entries with the org.opencontainers.image.ref.name
 * annotation) and the per-registry "which repository holds this blob" records under
 * `<dir>/.slipway/sources/` are read, modified and rewritten atomically under an exclusive flock
 * on `<dir>/.slipway.lock`, so concurrent writers (processes or threads) never lose an update.
 */
#include "oci/oci.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

/* index.json is ours and small; this cap only stops a runaway file. */
#define STORE_MAX_INDEX_BYTES ((size_t)64 << 20)
#define STORE_MAX_SOURCES_BYTES ((size_t)16 << 20)
/* Repositories remembered per blob, and blobs remembered per registry. */
#define STORE_SOURCES_PER_BLOB 8
#define STORE_SOURCES_MAX_BLOBS 20000
#define STORE_IO_CHUNK ((size_t)256 << 10)
#define STORE_STALE_TMP_SECONDS (24 * 3600)

#define LAYOUT_FILE "oci-layout"
#define INDEX_FILE "index.json"
#define LOCK_FILE ".slipway.lock"
#define PRIVATE_DIR ".slipway"
#define TMP_DIR ".slipway/tmp"
#define SOURCES_DIR ".slipway/sources"
#define LAYOUT_CONTENT "{\"imageLayoutVersion\":\"1.0.0\"}"

struct sw_oci_store {
	char *dir;   /* as given */
	char *blobs; /* <dir>/blobs/sha256 */
};

struct sw_oci_blob_writer {
	sw_oci_store *s;
	int fd;
	char *tmp_path;
	sw_oci_hasher *h;
	int64_t size;
};

/* ---------------------------------------------------------------- locking */

/* Take the store's exclusive lock; *out_fd holds it until closed. */
static int store_lock(int *out_fd, sw_oci_store *s, sw_error **err)
{
	cleanup_free char *path = sw_path_join(s->dir, LOCK_FILE);
	cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return sw_error_os(err, errno, "open lock file %s", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR)
			return sw_error_os(err, errno, "lock %s", path);
	}
	*out_fd = steal_fd(&fd);
	return 0;
}

/* ---------------------------------------------------------------- opening */

static bool path_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

/* A folder we may turn into a layout: empty, or holding only layout (or slipway) entries. */
static int check_adoptable(const char *dir, sw_error **err)
{
	DIR *d = opendir(dir);
	if (!d)
		return sw_error_os(err, errno, "open %s", dir);
	struct dirent *e;
	int r = 0;
	while ((e = readdir(d)) != NULL) {
		const char *n = e->d_name;
		if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, LOCK_FILE) == 0 ||
		    strcmp(n, PRIVATE_DIR) == 0 || strcmp(n, "blobs") == 0 ||
		    strcmp(n, INDEX_FILE) == 0 ||
		    /* another process creating the layout right now (sw_fs_write_atomic) */
		    strncmp(n, "." INDEX_FILE ".tmp-", sizeof(INDEX_FILE) + 5) == 0 ||
		    strncmp(n, "." LAYOUT_FILE ".tmp-", sizeof(LAYOUT_FILE) + 5) == 0)
			continue;
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "%s is not an OCI image layout (no oci-layout file) and not empty "
		                 "(it holds '%s'); refusing to turn it into one",
		                 dir, n);
		break;
	}
	closedir(d);
	return r;
}

static int check_layout_file(const char *dir, sw_error **err)
{
	cleanup_free char *path = sw_path_join(dir, LAYOUT_FILE);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, path, 4096, &e) < 0) {
		int code = sw_error_code_of(e);
		sw_error_free(e);
		if (code == SW_ERR_NOT_FOUND)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "%s is not an OCI image layout: no oci-layout file",
			                    dir);
		return sw_error_set(err, SW_ERR_INVALID, "%s: cannot read oci-layout", dir);
	}
	json_error_t jerr;
	json_auto_t *j = json_loadb(buf, len, 0, &jerr);
	const char *v = j ? json_string_value(json_object_get(j, "imageLayoutVersion")) : NULL;
	if (!v)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "%s is not a valid OCI image layout: oci-layout has no imageLayoutVersion",
		        dir);
	if (strncmp(v, "1.", 2) != 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "%s: unsupported OCI image layout version '%s'", dir, v);
	return 0;
}

static int write_empty_index(const char *dir, sw_error **err)
{
	cleanup_free char *path = sw_path_join(dir, INDEX_FILE);
	if (path_exists(path))
		return 0;
	static const char empty[] =
	        "{\"manifests\":[],\"mediaType\":\"" SW_OCI_MT_INDEX "\",\"schemaVersion\":2}";
	return sw_fs_write_atomic(path, empty, sizeof(empty) - 1, 0644, err);
}

static int store_create(sw_oci_store *s, sw_error **err)
{
	if (sw_fs_mkdir_p(s->dir, 0755, err) < 0)
		return sw_error_wrap(err, "create OCI image layout %s", s->dir);
	cleanup_free char *layout = sw_path_join(s->dir, LAYOUT_FILE);
	if (path_exists(layout))
		return 0;
	cleanup_close int lock = -1;
	if (store_lock(&lock, s, err) < 0)
		return sw_error_wrap(err, "create OCI image layout %s", s->dir);
	if (path_exists(layout)) /* another writer finished it meanwhile */
		return 0;
	/* under the lock, so no other writer is half-way through creating it */
	int r = check_adoptable(s->dir, err);
	if (r < 0)
		return r;
	if (sw_fs_mkdir_p(s->blobs, 0755, err) < 0 || write_empty_index(s->dir, err) < 0 ||
	    sw_fs_write_atomic(layout, LAYOUT_CONTENT, sizeof(LAYOUT_CONTENT) - 1, 0644, err) < 0)
		return sw_error_wrap(err, "create OCI image layout %s", s->dir);
	return 0;
}

/*
 * Temporary blob files left by a writer that died (a crash, a kill -9) are removed when they
 * are a day old: no live writer keeps one that long without writing to it.
 */
static void sweep_stale_tmp(sw_oci_store *s)
{
	cleanup_free char *tmpdir = sw_path_join(s->dir, TMP_DIR);
	DIR *d = opendir(tmpdir);
	if (!d)
		return;
	time_t limit = time(NULL) - STORE_STALE_TMP_SECONDS;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		if (strncmp(e->d_name, "blob-", 5) != 0 ||
		    fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_mtime >= limit)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			SW_LOG(SW_LOG_DEBUG, "removed stale temporary blob %s/%s", tmpdir,
			       e->d_name);
	}
	closedir(d);
}

int sw_oci_store_open(sw_oci_store **out, const char *dir, bool create, sw_error **err)
{
	*out = NULL;
	if (!dir || !dir[0])
		return sw_error_set(err, SW_ERR_INVALID, "OCI image layout: empty folder name");
	sw_oci_store *s = sw_xcalloc(1, sizeof(*s));
	s->dir = sw_xstrdup(dir);
	s->blobs = sw_path_join(dir, "blobs/sha256");
	cleanup_free char *index = sw_path_join(dir, INDEX_FILE);
	int r = 0;
	struct stat st;
	if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "%s is not a folder (expected an OCI image layout)", dir);
		goto fail;
	}
	if (create) {
		r = store_create(s, err);
		if (r < 0)
			goto fail;
	} else if (stat(dir, &st) < 0) {
		if (errno == ENOENT)
			r = sw_error_set(err, SW_ERR_NOT_FOUND, "no OCI image layout at %s", dir);
		else
			r = sw_error_os(err, errno, "open OCI image layout %s", dir);
		goto fail;
	}
	r = check_layout_file(dir, err);
	if (r < 0)
		goto fail;
	if (!path_exists(index)) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "%s is not a valid OCI image layout: no index.json", dir);
		goto fail;
	}
	sweep_stale_tmp(s);
	*out = s;
	return 0;
fail:
	sw_oci_store_free(s);
	return r < 0 ? r : SW_ERR_GENERIC;
}

void sw_oci_store_free(sw_oci_store *s)
{
	if (!s)
		return;
	free(s->dir);
	free(s->blobs);
	free(s);
}

const char *sw_oci_store_dir(const sw_oci_store *s)
{
	return s->dir;
}

char *sw_oci_store_default_dir(void)
{
	const char *state = getenv("SLIPWAY_STATE_DIR");
	if (state && state[0])
		return sw_path_join(state, "store");
	if (geteuid() == 0)
		return sw_xstrdup("/var/lib/slipway/store");
	const char *xdg = getenv("XDG_STATE_HOME");
	if (xdg && xdg[0] == '/')
		return sw_path_join(xdg, "slipway/store");
	const char *home = getenv("HOME");
	if (!home || !home[0]) {
		struct passwd *pw = getpwuid(geteuid());
		home = pw && pw->pw_dir ? pw->pw_dir : "/";
	}
	return sw_path_join(home, ".local/state/slipway/store");
}

/* ---------------------------------------------------------------- blobs */

char *sw_oci_store_blob_path(sw_oci_store *s, const sw_digest *d)
{
	return sw_path_join(s->blobs, sw_oci_digest_hex(d));
}

bool sw_oci_store_has_blob(sw_oci_store *s, const sw_digest *d)
{
	if (!sw_oci_digest_is_set(d) || sw_oci_digest_parse(NULL, d->s, NULL) < 0)
		return false;
	cleanup_free char *p = sw_oci_store_blob_path(s, d);
	struct stat st;
	return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int open_blob_file(int *out_fd, struct stat *st, sw_oci_store *s, const sw_digest *d,
                          sw_error **err)
{
	if (sw_oci_digest_parse(NULL, d->s, err) < 0)
		return SW_ERR_INVALID;
	cleanup_free char *p = sw_oci_store_blob_path(s, d);
	cleanup_close int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT)
			return sw_error_set(err, SW_ERR_NOT_FOUND, "blob %s not found in %s", d->s,
			                    s->dir);
		return sw_error_os(err, errno, "open blob %s in %s", d->s, s->dir);
	}
	if (fstat(fd, st) < 0)
		return sw_error_os(err, errno, "stat blob %s in %s", d->s, s->dir);
	if (!S_ISREG(st->st_mode))
		return sw_error_set(err, SW_ERR_INVALID, "blob %s in %s is not a regular file",
		                    d->s, s->dir);
	*out_fd = steal_fd(&fd);
	return 0;
}

/* The content of blob `d` hashes to `got`: remove the file and report it. */
static int blob_corrupted(sw_oci_store *s, const sw_digest *d, const sw_digest *got, sw_error **err)
{
	cleanup_free char *p = sw_oci_store_blob_path(s, d);
	if (unlink(p) < 0 && errno != ENOENT)
		SW_LOG(SW_LOG_DEBUG, "remove corrupted blob %s: %s", p, strerror(errno));
	return sw_error_set(err, SW_ERR_INVALID,
	                    "blob %s in %s is corrupted (its content hashes to %s); "
	                    "it was removed so that it can be fetched again",
	                    d->s, s->dir, got->s);
}

static ssize_t read_retry(int fd, void *buf, size_t len)
{
	ssize_t n;
	do {
		n = read(fd, buf, len);
	} while (n < 0 && errno == EINTR);
	return n;
}

int sw_oci_store_read_blob(char **out, size_t *out_len, sw_oci_store *s, const sw_digest *d,
                           size_t max, sw_error **err)
{
	*out = NULL;
	if (out_len)
		*out_len = 0;
	cleanup_close int fd = -1;
	struct stat st;
	int rc = open_blob_file(&fd, &st, s, d, err);
	if (rc < 0)
		return rc;
	if ((uint64_t)st.st_size > (uint64_t)max)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "blob %s is %lld bytes, more than the %zu allowed", d->s,
		                    (long long)st.st_size, max);
	size_t size = (size_t)st.st_size;
	cleanup_free char *buf = sw_xmalloc(size + 1);
	size_t got = 0;
	while (got < size) {
		ssize_t n = read_retry(fd, buf + got, size - got);
		if (n < 0)
			return sw_error_os(err, errno, "read blob %s in %s", d->s, s->dir);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	/* the file may not have grown; a blob is never written in place */
	char extra;
	if (got == size && read_retry(fd, &extra, 1) > 0)
		return sw_error_set(err, SW_ERR_INVALID, "blob %s in %s changed while read", d->s,
		                    s->dir);
	buf[got] = '\0';
	sw_digest have;
	sw_oci_digest_bytes(&have, buf, got);
	if (!sw_oci_digest_eq(&have, d))
		return blob_corrupted(s, d, &have, err);
	*out = steal_pointer(&buf);
	if (out_len)
		*out_len = got;
	return 0;
}

int sw_oci_store_open_blob(int *out_fd, int64_t *out_size, sw_oci_store *s, const sw_digest *d,
                           sw_error **err)
{
	*out_fd = -1;
	struct stat st;
	int rc = open_blob_file(out_fd, &st, s, d, err);
	if (rc < 0)
		return rc;
	if (out_size)
		*out_size = (int64_t)st.st_size;
	return 0;
}

int sw_oci_store_verify_blob(sw_oci_store *s, const sw_digest *d, sw_error **err)
{
	cleanup_close int fd = -1;
	struct stat st;
	int rc = open_blob_file(&fd, &st, s, d, err);
	if (rc < 0)
		return rc;
	sw_oci_hasher *h = sw_oci_hasher_new();
	cleanup_free char *buf = sw_xmalloc(STORE_IO_CHUNK);
	for (;;) {
		ssize_t n = read_retry(fd, buf, STORE_IO_CHUNK);
		if (n < 0) {
			int e = errno;
			sw_oci_hasher_free(h);
			return sw_error_os(err, e, "read blob %s in %s", d->s, s->dir);
		}
		if (n == 0)
			break;
		sw_oci_hasher_update(h, buf, (size_t)n);
	}
	sw_digest have;
	sw_oci_hasher_final(h, &have);
	sw_oci_hasher_free(h);
	if (!sw_oci_digest_eq(&have, d))
		return blob_corrupted(s, d, &have, err);
	return 0;
}

/* ---------------------------------------------------------------- blob writer */

int sw_oci_store_blob_begin(sw_oci_blob_writer **out, sw_oci_store *s, sw_error **err)
{
	*out = NULL;
	cleanup_free char *tmpdir = sw_path_join(s->dir, TMP_DIR);
	if (sw_fs_mkdir_p(tmpdir, 0755, err) < 0 || sw_fs_mkdir_p(s->blobs, 0755, err) < 0)
		return sw_error_wrap(err, "store blob in %s", s->dir);
	char *path = sw_path_join(tmpdir, "blob-XXXXXX");
	int fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		free(path);
		return sw_error_os(err, e, "create a temporary blob file in %s", tmpdir);
	}
	sw_oci_blob_writer *w = sw_xcalloc(1, sizeof(*w));
	w->s = s;
	w->fd = fd;
	w->tmp_path = path;
	w->h = sw_oci_hasher_new();
	*out = w;
	return 0;
}

int sw_oci_blob_writer_write(sw_oci_blob_writer *w, const void *data, size_t len, sw_error **err)
{
	if (w->fd < 0)
		return sw_error_set(err, SW_ERR_GENERIC, "blob writer already failed");
	if (sw_fs_write_all(w->fd, data, len, err) < 0)
		return sw_error_wrap(err, "write blob into %s", w->s->dir);
	sw_oci_hasher_update(w->h, data, len);
	w->size += (int64_t)len;
	return 0;
}

int64_t sw_oci_blob_writer_size(const sw_oci_blob_writer *w)
{
	return w->size;
}

void sw_oci_blob_writer_abort(sw_oci_blob_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp_path)
		unlink(w->tmp_path);
	free(w->tmp_path);
	sw_oci_hasher_free(w->h);
	free(w);
}

int sw_oci_blob_writer_commit(sw_digest *out_digest, int64_t *out_size, sw_oci_blob_writer *w,
                              const sw_digest *expected, sw_error **err)
{
	sw_oci_store *s = w->s;
	sw_digest d;
	sw_oci_hasher_final(w->h, &d);
	cleanup_free char *dst = sw_oci_store_blob_path(s, &d);
	int r = 0;
	if (expected && !sw_oci_digest_eq(&d, expected)) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "blob content does not match its digest: expected %s, "
		                 "got %s (%lld bytes); nothing stored",
		                 expected->s, d.s, (long long)w->size);
		goto out;
	}
	if (fchmod(w->fd, 0644) < 0) {
		r = sw_error_os(err, errno, "chmod %s", w->tmp_path);
		goto out;
	}
	if (fsync(w->fd) < 0) {
		r = sw_error_os(err, errno, "fsync %s", w->tmp_path);
		goto out;
	}
	struct stat st;
	if (stat(dst, &st) == 0 && S_ISREG(st.st_mode) && (int64_t)st.st_size == w->size) {
		/* already there (content addressed: same name, same bytes) */
		goto out;
	}
	if (rename(w->tmp_path, dst) < 0) {
		r = sw_error_os(err, errno, "move blob %s into %s", d.s, s->blobs);
		goto out;
	}
	free(w->tmp_path);
	w->tmp_path = NULL;
	if (sw_fs_fsync_dir(s->blobs, err) < 0) {
		r = sw_error_wrap(err, "store blob %s", d.s);
		goto out;
	}
out:
	if (r == 0) {
		if (out_digest)
			*out_digest = d;
		if (out_size)
			*out_size = w->size;
	}
	sw_oci_blob_writer_abort(w);
	return r;
}

int sw_oci_store_put_blob(sw_digest *out, sw_oci_store *s, const void *data, size_t len,
                          sw_error **err)
{
	sw_digest d;
	sw_oci_digest_bytes(&d, data, len);
	if (sw_oci_store_has_blob(s, &d)) {
		cleanup_free char *p = sw_oci_store_blob_path(s, &d);
		struct stat st;
		if (stat(p, &st) == 0 && (size_t)st.st_size == len) {
			if (out)
				*out = d;
			return 0;
		}
	}
	sw_oci_blob_writer *w = NULL;
	int rc = sw_oci_store_blob_begin(&w, s, err);
	if (rc < 0)
		return rc;
	rc = sw_oci_blob_writer_write(w, data, len, err);
	if (rc < 0) {
		sw_oci_blob_writer_abort(w);
		return rc;
	}
	return sw_oci_blob_writer_commit(out, NULL, w, &d, err);
}

/* ---------------------------------------------------------------- index.json */

static json_t *platform_to_json(const sw_oci_platform *p)
{
	json_t *o = json_object();
	if (p->architecture)
		json_object_set_new(o, "architecture", json_string(p->architecture));
	if (p->os)
		json_object_set_new(o, "os", json_string(p->os));
	if (p->variant)
		json_object_set_new(o, "variant", json_string(p->variant));
	if (p->os_version)
		json_object_set_new(o, "os.version", json_string(p->os_version));
	return o;
}

static json_t *descriptor_to_json(const sw_oci_descriptor *d)
{
	json_t *o = json_object();
	json_object_set_new(o, "mediaType", json_string(d->media_type));
	json_object_set_new(o, "digest", json_string(d->digest.s));
	json_object_set_new(o, "size", json_integer(d->size));
	if (d->artifact_type)
		json_object_set_new(o, "artifactType", json_string(d->artifact_type));
	if (d->platform)
		json_object_set_new(o, "platform", platform_to_json(d->platform));
	if (d->annotations && json_object_size(d->annotations) > 0)
		json_object_set_new(o, "annotations", json_deep_copy(d->annotations));
	return o;
}

static int read_index_file(char **out, size_t *out_len, sw_oci_store *s, sw_error **err)
{
	cleanup_free char *path = sw_path_join(s->dir, INDEX_FILE);
	if (sw_fs_read_file(out, out_len, path, STORE_MAX_INDEX_BYTES, err) < 0)
		return sw_error_wrap(err, "read the index of %s", s->dir);
	return 0;
}

static int parse_index(sw_oci_index *out, const char *buf, size_t len, sw_oci_store *s,
                       sw_error **err)
{
	if (sw_oci_index_parse(out, buf, len, NULL, err) < 0)
		return sw_error_wrap(err, "%s/" INDEX_FILE, s->dir);
	return 0;
}

int sw_oci_store_list(sw_oci_index *out, sw_oci_store *s, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int rc = read_index_file(&buf, &len, s, err);
	if (rc < 0)
		return rc;
	return parse_index(out, buf, len, s, err);
}

/*
 * Tag names follow the OCI ref.name grammar: components separated by '/', each made of
 * alphanumerics joined by one of "-._:@+" (or "--").
 */
static int check_tag_name(const char *name, sw_error **err)
{
	size_t n = name ? strlen(name) : 0;
	if (n == 0 || n > 255)
		return sw_error_set(err, SW_ERR_INVALID, "tag '%s': must be 1 to 255 characters",
		                    name ? name : "");
	if (strncmp(name, "sha256:", 7) == 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "tag '%.80s': a tag cannot look like a digest", name);
	char prev = '/';
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool alnum =
		        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		bool sep = strchr("-._:@+/", c) != NULL;
		bool prev_alnum = (prev >= 'a' && prev <= 'z') || (prev >= 'A' && prev <= 'Z') ||
		                  (prev >= '0' && prev <= '9');
		if (!alnum && !sep)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "tag '%.80s': character '%c' is not allowed", name, c);
		if (sep && !prev_alnum && !(c == '-' && prev == '-'))
			return sw_error_set(err, SW_ERR_INVALID,
			                    "tag '%.80s': '%c' must follow a letter or digit", name,
			                    c);
		prev = c;
	}
	if (name[n - 1] == '/' || !((name[n - 1] >= 'a' && name[n - 1] <= 'z') ||
	                            (name[n - 1] >= 'A' && name[n - 1] <= 'Z') ||
	                            (name[n - 1] >= '0' && name[n - 1] <= '9')))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "tag '%.80s': must end with a letter or digit", name);
	return 0;
}

static const char *entry_ref_name(json_t *entry)
{
	json_t *ann = json_object_get(entry, "annotations");
	return json_string_value(json_object_get(ann, SW_OCI_ANNOT_REF_NAME));
}

/*
 * Rewrite index.json under the lock: drop every entry named `name`, then append `add` (which
 * may be NULL, and is consumed). *removed counts dropped entries.
 */
static int index_update(sw_oci_store *s, const char *name, json_t *add, size_t *removed,
                        sw_error **err)
{
	json_auto_t *addj = add;
	cleanup_close int lock = -1;
	int rc = store_lock(&lock, s, err);
	if (rc < 0)
		return rc;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	rc = read_index_file(&buf, &len, s, err);
	if (rc < 0)
		return rc;
	/* validate first: never rewrite a file we do not understand */
	sw_oci_index check;
	rc = parse_index(&check, buf, len, s, err);
	if (rc < 0)
		return rc;
	sw_oci_index_clear(&check);
	json_error_t jerr;
	json_auto_t *root = json_loadb(buf, len, 0, &jerr);
	if (!json_is_object(root))
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, 0, "%s/" INDEX_FILE ": %s",
		                    s->dir, jerr.text);
	json_t *mans = json_object_get(root, "manifests");
	if (!json_is_array(mans)) {
		mans = json_array();
		json_object_set_new(root, "manifests", mans);
	}
	size_t n_removed = 0;
	/* tagging again what the tag already names changes nothing: no rewrite, no fsync */
	if (addj) {
		size_t same = 0, named = 0;
		for (size_t i = 0; i < json_array_size(mans); i++) {
			json_t *m = json_array_get(mans, i);
			const char *rn = entry_ref_name(m);
			if (rn && strcmp(rn, name) == 0) {
				named++;
				same += json_equal(m, addj) ? 1 : 0;
			}
		}
		if (named == 1 && same == 1) {
			if (removed)
				*removed = 0;
			return 0;
		}
	}
	for (size_t i = json_array_size(mans); i-- > 0;) {
		const char *rn = entry_ref_name(json_array_get(mans, i));
		if (rn && strcmp(rn, name) == 0) {
			json_array_remove(mans, i);
			n_removed++;
		}
	}
	if (addj)
		json_array_append_new(mans, steal_pointer(&addj));
	if (!json_object_get(root, "schemaVersion"))
		json_object_set_new(root, "schemaVersion", json_integer(2));
	if (!json_object_get(root, "mediaType"))
		json_object_set_new(root, "mediaType", json_string(SW_OCI_MT_INDEX));
	cleanup_free char *out = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
	if (!out)
		abort();
	cleanup_free char *path = sw_path_join(s->dir, INDEX_FILE);
	if (sw_fs_write_atomic(path, out, strlen(out), 0644, err) < 0)
		return sw_error_wrap(err, "update the index of %s", s->dir);
	if (removed)
		*removed = n_removed;
	return 0;
}

int sw_oci_store_tag(sw_oci_store *s, const char *name, const sw_oci_descriptor *desc,
                     sw_error **err)
{
	if (check_tag_name(name, err) < 0)
		return SW_ERR_INVALID;
	if (!desc->media_type || !sw_oci_digest_is_set(&desc->digest) || desc->size < 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "tag '%s': the descriptor needs a media type, digest and size",
		                    name);
	json_t *entry = descriptor_to_json(desc);
	json_t *ann = json_object_get(entry, "annotations");
	if (!ann) {
		ann = json_object();
		json_object_set_new(entry, "annotations", ann);
	}
	json_object_set_new(ann, SW_OCI_ANNOT_REF_NAME, json_string(name));
	if (index_update(s, name, entry, NULL, err) < 0)
		return sw_error_wrap(err, "tag '%s'", name);
	return 0;
}

int sw_oci_store_untag(sw_oci_store *s, const char *name, sw_error **err)
{
	size_t removed = 0;
	if (index_update(s, name, NULL, &removed, err) < 0)
		return sw_error_wrap(err, "untag '%s'", name);
	if (removed == 0)
		return sw_error_set(err, SW_ERR_NOT_FOUND, "image '%s' not found in %s", name,
		                    s->dir);
	return 0;
}

/* A descriptor for a manifest or index blob that is in the store but not in index.json. */
static int describe_blob(sw_oci_descriptor *out, sw_oci_store *s, const sw_digest *d,
                         sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int rc = sw_oci_store_read_blob(&buf, &len, s, d, SW_OCI_MAX_MANIFEST_BYTES, err);
	if (rc < 0)
		return rc;
	const char *mt = sw_oci_media_type_sniff(buf, len);
	if (!mt)
		return sw_error_set(err, SW_ERR_INVALID, "blob %s in %s is not a manifest or index",
		                    d->s, s->dir);
	memset(out, 0, sizeof(*out));
	out->media_type = sw_xstrdup(mt);
	out->digest = *d;
	out->size = (int64_t)len;
	return 0;
}

int sw_oci_store_resolve(sw_oci_descriptor *out, sw_oci_store *s, const char *name, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	sw_oci_index ix;
	int rc = sw_oci_store_list(&ix, s, err);
	if (rc < 0)
		return rc;
	sw_digest d;
	bool by_digest = strncmp(name, "sha256:", 7) == 0;
	if (by_digest && sw_oci_digest_parse(&d, name, err) < 0) {
		sw_oci_index_clear(&ix);
		return SW_ERR_INVALID;
	}
	const sw_oci_descriptor *found = NULL;
	for (size_t i = 0; i < ix.n_manifests; i++) {
		const sw_oci_descriptor *e = &ix.manifests[i];
		if (by_digest ? sw_oci_digest_eq(&e->digest, &d)
		              : (sw_oci_descriptor_annotation(e, SW_OCI_ANNOT_REF_NAME) &&
		                 strcmp(sw_oci_descriptor_annotation(e, SW_OCI_ANNOT_REF_NAME),
		                        name) == 0))
			found = e; /* the last one wins, like an append-only log */
		if (found && by_digest)
			break;
	}
	if (found)
		sw_oci_descriptor_copy(out, found);
	sw_oci_index_clear(&ix);
	if (found)
		return 0;
	if (by_digest && sw_oci_store_has_blob(s, &d))
		return describe_blob(out, s, &d, err);
	return sw_error_set(err, SW_ERR_NOT_FOUND, "image '%s' not found in %s", name, s->dir);
}

/* ---------------------------------------------------------------- images */

static int read_doc(char **out, size_t *out_len, sw_oci_store *s, const sw_oci_descriptor *d,
                    size_t max, sw_error **err)
{
	int rc = sw_oci_store_read_blob(out, out_len, s, &d->digest, max, err);
	if (rc < 0)
		return rc;
	if (d->size >= 0 && (int64_t)*out_len != d->size) {
		free(*out);
		*out = NULL;
		return sw_error_set(err, SW_ERR_INVALID,
		                    "blob %s in %s is %zu bytes, its descriptor says %lld",
		                    d->digest.s, s->dir, *out_len, (long long)d->size);
	}
	return 0;
}

int sw_oci_store_load_image(sw_oci_descriptor *out_desc, sw_oci_manifest *out_manifest,
                            sw_oci_config *out_config, sw_oci_store *s, const char *name,
                            const sw_oci_platform *want, sw_error **err)
{
	sw_oci_descriptor desc;
	sw_oci_manifest m;
	memset(&m, 0, sizeof(m));
	int r = sw_oci_store_resolve(&desc, s, name, err);
	if (r < 0)
		return r;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (sw_oci_media_type_is_index(desc.media_type)) {
		r = read_doc(&buf, &len, s, &desc, SW_OCI_MAX_MANIFEST_BYTES, err);
		if (r < 0)
			goto fail;
		sw_oci_index ix;
		r = sw_oci_index_parse(&ix, buf, len, desc.media_type, err);
		if (r < 0) {
			sw_error_wrap(err, "index %s", desc.digest.s);
			goto fail;
		}
		sw_oci_platform host = { 0 };
		if (!want)
			sw_oci_platform_default(&host);
		const sw_oci_descriptor *sel = NULL;
		r = sw_oci_index_select(&sel, &ix, want ? want : &host, err);
		sw_oci_platform_clear(&host);
		if (r == 0) {
			sw_oci_descriptor_clear(&desc);
			sw_oci_descriptor_copy(&desc, sel);
		}
		sw_oci_index_clear(&ix);
		free(buf);
		buf = NULL;
		if (r < 0) {
			sw_error_wrap(err, "image '%s'", name);
			goto fail;
		}
	}
	if (!sw_oci_media_type_is_manifest(desc.media_type)) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "image '%s': %s has media type '%s', not an image manifest", name,
		                 desc.digest.s, desc.media_type);
		goto fail;
	}
	r = read_doc(&buf, &len, s, &desc, SW_OCI_MAX_MANIFEST_BYTES, err);
	if (r < 0)
		goto fail;
	r = sw_oci_manifest_parse(&m, buf, len, desc.media_type, err);
	if (r < 0) {
		sw_error_wrap(err, "manifest %s", desc.digest.s);
		goto fail;
	}
	if (out_config) {
		cleanup_free char *cbuf = NULL;
		size_t clen = 0;
		r = read_doc(&cbuf, &clen, s, &m.config, SW_OCI_MAX_CONFIG_BYTES, err);
		if (r < 0) {
			sw_error_wrap(err, "image '%s': config", name);
			goto fail;
		}
		r = sw_oci_config_parse(out_config, cbuf, clen, err);
		if (r < 0) {
			sw_error_wrap(err, "image '%s': config %s", name, m.config.digest.s);
			goto fail;
		}
	}
	if (out_manifest)
		*out_manifest = m;
	else
		sw_oci_manifest_clear(&m);
	if (out_desc)
		*out_desc = desc;
	else
		sw_oci_descriptor_clear(&desc);
	return 0;
fail:
	sw_oci_manifest_clear(&m);
	sw_oci_descriptor_clear(&desc);
	return r;
}

/* Stream one blob from `src` into `dst` through the verifying writer. */
static int copy_blob(sw_oci_store *dst, sw_oci_store *src, const sw_oci_descriptor *d,
                     sw_error **err)
{
	if (sw_oci_store_has_blob(dst, &d->digest))
		return 0;
	cleanup_close int fd = -1;
	int64_t size = 0;
	int rc = sw_oci_store_open_blob(&fd, &size, src, &d->digest, err);
	if (rc < 0)
		return rc;
	if (d->size >= 0 && size != d->size)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "blob %s in %s is %lld bytes, its descriptor says %lld",
		                    d->digest.s, src->dir, (long long)size, (long long)d->size);
	sw_oci_blob_writer *w = NULL;
	rc = sw_oci_store_blob_begin(&w, dst, err);
	if (rc < 0)
		return rc;
	cleanup_free char *buf = sw_xmalloc(STORE_IO_CHUNK);
	for (;;) {
		ssize_t n = read_retry(fd, buf, STORE_IO_CHUNK);
		if (n < 0) {
			int e = errno;
			sw_oci_blob_writer_abort(w);
			return sw_error_os(err, e, "read blob %s in %s", d->digest.s, src->dir);
		}
		if (n == 0)
			break;
		rc = sw_oci_blob_writer_write(w, buf, (size_t)n, err);
		if (rc < 0) {
			sw_oci_blob_writer_abort(w);
			return rc;
		}
	}
	rc = sw_oci_blob_writer_commit(NULL, NULL, w, &d->digest, err);
	if (rc == SW_ERR_INVALID) {
		/* the copy in the source is bad: drop it there too, so it is fetched again */
		if (sw_oci_store_verify_blob(src, &d->digest, NULL) < 0)
			return sw_error_wrap(err, "%s in %s is corrupted and was removed",
			                     d->digest.s, src->dir);
	}
	return rc;
}

static int copy_tree(sw_oci_store *dst, sw_oci_store *src, const sw_oci_descriptor *d, int depth,
                     sw_error **err)
{
	if (depth > 4)
		return sw_error_set(err, SW_ERR_INVALID, "index %s: nested too deeply",
		                    d->digest.s);
	if (sw_oci_media_type_is_index(d->media_type) ||
	    sw_oci_media_type_is_manifest(d->media_type)) {
		cleanup_free char *buf = NULL;
		size_t len = 0;
		int rc = read_doc(&buf, &len, src, d, SW_OCI_MAX_MANIFEST_BYTES, err);
		if (rc < 0)
			return rc;
		if (sw_oci_media_type_is_index(d->media_type)) {
			sw_oci_index ix;
			if (sw_oci_index_parse(&ix, buf, len, d->media_type, err) < 0)
				return sw_error_wrap(err, "index %s", d->digest.s);
			int r = 0;
			for (size_t i = 0; i < ix.n_manifests && r == 0; i++)
				r = copy_tree(dst, src, &ix.manifests[i], depth + 1, err);
			sw_oci_index_clear(&ix);
			if (r < 0)
				return r;
		} else {
			sw_oci_manifest m;
			if (sw_oci_manifest_parse(&m, buf, len, d->media_type, err) < 0)
				return sw_error_wrap(err, "manifest %s", d->digest.s);
			int r = copy_blob(dst, src, &m.config, err);
			for (size_t i = 0; i < m.n_layers && r == 0; i++)
				r = copy_blob(dst, src, &m.layers[i], err);
			sw_oci_manifest_clear(&m);
			if (r < 0)
				return sw_error_wrap(err, "manifest %s", d->digest.s);
		}
		/* the document last: a manifest is never there without its blobs */
		if (sw_oci_store_has_blob(dst, &d->digest))
			return 0;
		return sw_oci_store_put_blob(NULL, dst, buf, len, err);
	}
	return copy_blob(dst, src, d, err);
}

int sw_oci_store_copy_image(sw_oci_store *dst, sw_oci_store *src, const sw_oci_descriptor *desc,
                            const char *name, sw_error **err)
{
	if (copy_tree(dst, src, desc, 0, err) < 0)
		return sw_error_wrap(err, "copy %s from %s to %s", desc->digest.s, src->dir,
		                     dst->dir);
	if (name) {
		sw_oci_descriptor t;
		sw_oci_descriptor_copy(&t, desc);
		/* the source's tag must not follow the image into its new name */
		if (t.annotations)
			json_object_del(t.annotations, SW_OCI_ANNOT_REF_NAME);
		int r = sw_oci_store_tag(dst, name, &t, err);
		sw_oci_descriptor_clear(&t);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---------------------------------------------------------------- blob sources */

/* "<dir>/.slipway/sources/<host>.json", the host made safe as a file name. */
static char *sources_path(sw_oci_store *s, const char *registry)
{
	cleanup_free char *safe = sw_xstrdup(registry);
	for (char *p = safe; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			*p = '_';
	}
	if (safe[0] == '.')
		safe[0] = '_';
	cleanup_free char *dir = sw_path_join(s->dir, SOURCES_DIR);
	cleanup_free char *file = sw_xasprintf("%s.json", safe);
	return sw_path_join(dir, file);
}

static json_t *load_sources(const char *path)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, path, STORE_MAX_SOURCES_BYTES, &e) < 0) {
		sw_error_free(e);
		return NULL;
	}
	json_error_t jerr;
	json_t *j = json_loadb(buf, len, 0, &jerr);
	if (!json_is_object(j)) {
		SW_LOG(SW_LOG_DEBUG, "ignoring unreadable %s: %s", path, jerr.text);
		if (j)
			json_decref(j);
		return NULL;
	}
	return j;
}

int sw_oci_store_note_source(sw_oci_store *s, const sw_digest *d, const char *registry,
                             const char *repository, sw_error **err)
{
	if (!registry || !registry[0] || !repository || !repository[0])
		return sw_error_set(err, SW_ERR_INVALID,
		                    "blob source: empty registry or repository");
	if (sw_oci_digest_parse(NULL, d->s, err) < 0)
		return SW_ERR_INVALID;
	cleanup_free char *dir = sw_path_join(s->dir, SOURCES_DIR);
	if (sw_fs_mkdir_p(dir, 0755, err) < 0)
		return sw_error_wrap(err, "record blob source");
	cleanup_close int lock = -1;
	int rc = store_lock(&lock, s, err);
	if (rc < 0)
		return rc;
	cleanup_free char *path = sources_path(s, registry);
	json_auto_t *root = load_sources(path);
	if (!root)
		root = json_object();
	/* move the digest to the end: keys keep insertion order, the oldest are dropped first */
	json_t *repos = json_object_get(root, d->s);
	json_t *list = json_array();
	if (json_is_array(repos)) {
		size_t i;
		json_t *v;
		json_array_foreach (repos, i, v) {
			if (json_is_string(v) && strcmp(json_string_value(v), repository) != 0)
				json_array_append(list, v);
		}
	}
	json_array_append_new(list, json_string(repository));
	while (json_array_size(list) > STORE_SOURCES_PER_BLOB)
		json_array_remove(list, 0);
	json_object_del(root, d->s);
	json_object_set_new(root, d->s, list);
	while (json_object_size(root) > STORE_SOURCES_MAX_BLOBS) {
		void *it = json_object_iter(root);
		json_object_del(root, json_object_iter_key(it));
	}
	cleanup_free char *out = json_dumps(root, JSON_COMPACT);
	if (!out)
		abort();
	if (sw_fs_write_atomic(path, out, strlen(out), 0644, err) < 0)
		return sw_error_wrap(err, "record blob source");
	return 0;
}

char *sw_oci_store_find_source(sw_oci_store *s, const sw_digest *d, const char *registry,
                               const char *not_repo)
{
	if (!registry || !sw_oci_digest_is_set(d))
		return NULL;
	cleanup_free char *path = sources_path(s, registry);
	json_auto_t *root = load_sources(path);
	json_t *repos = json_object_get(root, d->s);
	if (!json_is_array(repos))
		return NULL;
	/* the most recent first */
	for (size_t i = json_array_size(repos); i-- > 0;) {
		const char *r = json_string_value(json_array_get(repos, i));
		if (r && r[0] && (!not_repo || strcmp(r, not_repo) != 0))
			return sw_xstrdup(r);
	}
	return NULL;
}
