/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build cache index: one small JSON file per cache key under STATE/cache/index, naming the
 * layer a step produced (diff ID, the blob in the content store, the step's history text) and
 * when it was made and last used. Files are replaced atomically; a lookup whose blob has left
 * the store removes the stale entry and misses; a hit rewrites the file with the new last use.
 */
#include "cache/cache_internal.h"

/* How precisely the last use of an entry is recorded, in seconds. */
#define SW_CACHE__LAST_USED_GRAIN 60

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#define ENTRY_MAX ((size_t)64 << 10)

void sw_cache_entry_clear(sw_cache_entry *e)
{
	if (!e)
		return;
	free(e->created_by);
	sw_oci_descriptor_clear(&e->blob);
	memset(e, 0, sizeof(*e));
}

void sw_cache_entries_free(sw_cache_entry *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		sw_cache_entry_clear(&v[i]);
	free(v);
}

char *sw_cache__entry_path(sw_cache *c, const char *key)
{
	sw_digest d;
	if (!key || sw_oci_digest_parse(&d, key, NULL) < 0)
		return NULL;
	cleanup_free char *name = sw_xasprintf("%s.json", sw_oci_digest_hex(&d));
	return sw_path_join(c->index, name);
}

/* ---------------------------------------------------------------- JSON */

static char *entry_serialize(const sw_cache_entry *e, size_t *len)
{
	json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:I}, s:s, s:I, s:I}", "key", e->key,
	                      "diffID", e->diff_id.s, "blob", "mediaType", e->blob.media_type,
	                      "digest", e->blob.digest.s, "size", (json_int_t)e->blob.size,
	                      "createdBy", e->created_by ? e->created_by : "", "created",
	                      (json_int_t)e->created, "lastUsed", (json_int_t)e->last_used);
	if (!o)
		abort(); /* only on exhaustion: every string is valid here */
	char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (!s)
		abort();
	*len = strlen(s);
	return s;
}

static int digest_field(sw_digest *out, json_t *o, const char *name, sw_error **err)
{
	json_t *v = json_object_get(o, name);
	if (!json_is_string(v))
		return sw_error_set(err, SW_ERR_INVALID, "cache entry: %s: missing or not a string",
		                    name);
	if (sw_oci_digest_parse(out, json_string_value(v), err) < 0)
		return sw_error_wrap(err, "cache entry: %s", name);
	return 0;
}

static int int_field(int64_t *out, json_t *o, const char *name, sw_error **err)
{
	json_t *v = json_object_get(o, name);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "cache entry: %s: missing or not a whole number >= 0", name);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

int sw_cache__entry_parse(sw_cache_entry *out, const char *buf, size_t len, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	json_error_t je;
	json_t *o = json_loadb(buf, len, 0, &je);
	if (!o)
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, 0,
		                    "cache entry: line %d: %s", je.line, je.text);
	int r = SW_ERR_INVALID;
	sw_digest key;
	json_t *blob = json_object_get(o, "blob");
	json_t *cb = json_object_get(o, "createdBy");
	if (!json_is_object(o)) {
		sw_error_set(err, r, "cache entry: not a JSON object");
		goto fail;
	}
	if ((r = digest_field(&key, o, "key", err)) < 0 ||
	    (r = digest_field(&out->diff_id, o, "diffID", err)) < 0)
		goto fail;
	snprintf(out->key, sizeof(out->key), "%s", key.s);
	if (!json_is_object(blob)) {
		r = sw_error_set(err, SW_ERR_INVALID,
		                 "cache entry: blob: missing or not an object");
		goto fail;
	}
	json_t *mt = json_object_get(blob, "mediaType");
	if (!json_is_string(mt) || !*json_string_value(mt)) {
		r = sw_error_set(err, SW_ERR_INVALID, "cache entry: blob.mediaType: missing");
		goto fail;
	}
	if ((r = digest_field(&out->blob.digest, blob, "digest", err)) < 0 ||
	    (r = int_field(&out->blob.size, blob, "size", err)) < 0 ||
	    (r = int_field(&out->created, o, "created", err)) < 0 ||
	    (r = int_field(&out->last_used, o, "lastUsed", err)) < 0)
		goto fail;
	if (cb && !json_is_string(cb)) {
		r = sw_error_set(err, SW_ERR_INVALID, "cache entry: createdBy: not a string");
		goto fail;
	}
	out->blob.media_type = sw_xstrdup(json_string_value(mt));
	out->created_by = sw_xstrdup(cb ? json_string_value(cb) : "");
	json_decref(o);
	return 0;
fail:
	json_decref(o);
	sw_cache_entry_clear(out);
	return r;
}

static int entry_cmp(const void *pa, const void *pb)
{
	const sw_cache_entry *a = pa, *b = pb;
	if (a->last_used != b->last_used)
		return a->last_used > b->last_used ? -1 : 1;
	if (a->created != b->created)
		return a->created > b->created ? -1 : 1;
	return strcmp(a->key, b->key);
}

void sw_cache__entries_sort(sw_cache_entry *v, size_t n)
{
	if (n > 1)
		qsort(v, n, sizeof(*v), entry_cmp);
}

/* ---------------------------------------------------------------- locking */

/* A failure of flock (not expected on a local file) only weakens the lookup-versus-prune
 * ordering; it is not worth failing a build over. */
static void flock_quiet(int fd, int op)
{
	while (flock(fd, op) < 0 && errno == EINTR)
		;
}

void sw_cache__index_hold(sw_cache *c)
{
	pthread_mutex_lock(&c->index_mu);
	if (c->index_holds++ == 0)
		flock_quiet(c->index_lock_fd, LOCK_SH);
	pthread_mutex_unlock(&c->index_mu);
}

void sw_cache__index_release(sw_cache *c)
{
	pthread_mutex_lock(&c->index_mu);
	if (c->index_holds > 0 && --c->index_holds == 0)
		flock_quiet(c->index_lock_fd, LOCK_UN);
	pthread_mutex_unlock(&c->index_mu);
}

/* ---------------------------------------------------------------- lookup, put, list */

static int write_entry(const char *path, const sw_cache_entry *e, sw_error **err)
{
	size_t len = 0;
	cleanup_free char *s = entry_serialize(e, &len);
	return sw_fs_write_atomic(path, s, len, 0600, err);
}

static int lookup_locked(sw_cache_entry *out, sw_cache *c, const char *key, const char *path,
                         sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	int r = sw_fs_read_file(&buf, &len, path, ENTRY_MAX, &e);
	if (r < 0) {
		bool missing = e && e->source == SW_ERRSRC_OS && e->sys == ENOENT;
		if (missing) {
			sw_error_free(e);
			return sw_error_set(err, SW_ERR_NOT_FOUND, "no cache entry for %s", key);
		}
		if (err && !*err)
			*err = e;
		else
			sw_error_free(e);
		return sw_error_wrap(err, "cache entry %s", key);
	}
	if (sw_cache__entry_parse(out, buf, len, &e) < 0 || strcmp(out->key, key) != 0) {
		SW_LOG(SW_LOG_DEBUG, "cache: removing damaged entry '%s': %s", path,
		       e ? sw_error_msg(e) : "another key");
		sw_error_free(e);
		sw_cache_entry_clear(out);
		(void)unlink(path);
		return sw_error_set(err, SW_ERR_NOT_FOUND, "no cache entry for %s", key);
	}
	if (!sw_oci_store_has_blob(c->store, &out->blob.digest)) {
		SW_LOG(SW_LOG_DEBUG, "cache: removing stale entry %s: blob %s is gone", key,
		       out->blob.digest.s);
		(void)unlink(path);
		sw_cache_entry_clear(out);
		return sw_error_set(err, SW_ERR_NOT_FOUND,
		                    "no cache entry for %s (its layer has left the store)", key);
	}
	/* last use is kept to the minute: a hit within a minute of the last one rewrites nothing
	 * (a warm rebuild then costs no write and no fsync per step) */
	int64_t now = (int64_t)time(NULL);
	if (out->last_used <= now && now - out->last_used < SW_CACHE__LAST_USED_GRAIN)
		return 0;
	out->last_used = now;
	if ((r = write_entry(path, out, err)) < 0) {
		sw_cache_entry_clear(out);
		return sw_error_wrap(err, "mark cache entry %s used", key);
	}
	return 0;
}

int sw_cache_lookup(sw_cache_entry *out, sw_cache *c, const char *key, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_free char *path = sw_cache__entry_path(c, key);
	if (!path)
		return sw_error_set(err, SW_ERR_INVALID, "cache lookup: bad key '%s'",
		                    key ? key : "(null)");
	sw_cache__index_hold(c);
	int r = lookup_locked(out, c, key, path, err);
	sw_cache__index_release(c);
	return r;
}

int sw_cache_put(sw_cache *c, const sw_cache_entry *e, sw_error **err)
{
	cleanup_free char *path = sw_cache__entry_path(c, e->key);
	if (!path)
		return sw_error_set(err, SW_ERR_INVALID, "cache put: bad key '%s'", e->key);
	if (sw_oci_digest_parse(NULL, e->diff_id.s, err) < 0 ||
	    sw_oci_digest_parse(NULL, e->blob.digest.s, err) < 0)
		return sw_error_wrap(err, "cache put %s", e->key);
	if (!e->blob.media_type || !*e->blob.media_type || e->blob.size < 0)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "cache put %s: the blob descriptor needs a media type and a size", e->key);
	int64_t now = (int64_t)time(NULL);
	sw_cache_entry w = *e;
	if (w.created <= 0)
		w.created = now;
	if (w.last_used <= 0)
		w.last_used = now;
	int r;
	/* checked under the index lock: a prune either ran before (and the blob is gone) or
	 * sees this entry */
	sw_cache__index_hold(c);
	if (!sw_oci_store_has_blob(c->store, &e->blob.digest))
		r = sw_error_set(err, SW_ERR_NOT_FOUND, "blob %s is not in the store",
		                 e->blob.digest.s);
	else
		r = write_entry(path, &w, err);
	sw_cache__index_release(c);
	if (r < 0)
		return sw_error_wrap(err, "cache put %s", e->key);
	return 0;
}

int sw_cache_list(sw_cache_entry **out, size_t *n, sw_cache *c, sw_error **err)
{
	*out = NULL;
	*n = 0;
	DIR *d = opendir(c->index);
	if (!d)
		return sw_error_os(err, errno, "read the cache index '%s'", c->index);
	sw_cache_entry *v = NULL;
	size_t len = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (!sw_cache__is_hex_name(de->d_name, ".json"))
			continue;
		cleanup_free char *p = sw_path_join(c->index, de->d_name);
		cleanup_free char *buf = NULL;
		size_t blen = 0;
		sw_error *e = NULL;
		sw_cache_entry ent;
		if (sw_fs_read_file(&buf, &blen, p, ENTRY_MAX, &e) < 0 ||
		    sw_cache__entry_parse(&ent, buf, blen, &e) < 0) {
			/* gone meanwhile (pruned) or damaged: not an entry */
			SW_LOG(SW_LOG_DEBUG, "cache: skipping '%s': %s", p, sw_error_msg(e));
			sw_error_free(e);
			continue;
		}
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			v = sw_xrealloc(v, cap * sizeof(*v));
		}
		v[len++] = ent;
	}
	closedir(d);
	sw_cache__entries_sort(v, len);
	*out = v;
	*n = len;
	return 0;
}
