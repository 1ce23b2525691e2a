/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry cache (--cache-from, --cache-to). One small image per cache key, tagged
 * `<repo>:<key hex>`: its manifest has a single layer (the step's blob, as stored locally, so
 * nothing is compressed again) and a config of media type
 * application/vnd.slipway.cache.config.v1+json holding {"slipway.cache.key", "diff_id",
 * "created_by"}. A probe that finds one pulls the blob into the store and records a local
 * cache entry, so a second machine with an empty cache reuses the first one's layers; an export
 * pushes such an image for every step the build executed or found (blobs the registry already
 * has are skipped by their HEAD).
 */
#include "builder/engine_internal.h"

#include <string.h>
#include <time.h>

static int cache_ref(sw_oci_ref *out, const char *repo, const char *key, sw_error **err)
{
	if (sw_build__ref_parse(out, repo, err) < 0)
		return sw_error_wrap(err, "cache repository '%s'", repo);
	free(out->tag);
	memset(&out->digest, 0, sizeof(out->digest));
	const char *hex = strchr(key, ':');
	out->tag = sw_xstrdup(hex ? hex + 1 : key);
	return 0;
}

static void json_decref_p(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define cleanup_jsonp __attribute__((cleanup(json_decref_p)))

/* Check a pulled cache image and turn it into a local entry. */
static int adopt_entry(sw_cache_entry *e, sw_build__ctx *b, const sw_oci_descriptor *desc,
                       const char *key, sw_error **err)
{
	cleanup_free char *mbuf = NULL;
	size_t mlen = 0;
	if (sw_oci_store_read_blob(&mbuf, &mlen, b->store, &desc->digest, SW_OCI_MAX_MANIFEST_BYTES,
	                           err) < 0)
		return sw_error_code_of(*err);
	sw_oci_manifest m;
	if (sw_oci_manifest_parse(&m, mbuf, mlen, NULL, err) < 0)
		return sw_error_code_of(*err);
	int rc = 0;
	cleanup_free char *cbuf = NULL;
	size_t clen = 0;
	cleanup_jsonp json_t *j = NULL;
	json_error_t je;
	if (!m.config.media_type || strcmp(m.config.media_type, SW_BUILD__CACHE_CONFIG_MT) != 0 ||
	    m.n_layers != 1) {
		rc = sw_error_set(err, SW_ERR_INVALID, "not a slipway cache entry");
		goto out;
	}
	if ((rc = sw_oci_store_read_blob(&cbuf, &clen, b->store, &m.config.digest, 1 << 20, err)) <
	    0)
		goto out;
	j = json_loadb(cbuf, clen, 0, &je);
	const char *k = json_string_value(json_object_get(j, "slipway.cache.key"));
	const char *diff = json_string_value(json_object_get(j, "diff_id"));
	const char *by = json_string_value(json_object_get(j, "created_by"));
	if (!k || strcmp(k, key) != 0 || !diff) {
		rc = sw_error_set(err, SW_ERR_INVALID, "cache entry config does not match key %s",
		                  key);
		goto out;
	}
	memset(e, 0, sizeof(*e));
	if ((rc = sw_oci_digest_parse(&e->diff_id, diff, err)) < 0)
		goto out;
	snprintf(e->key, sizeof(e->key), "%s", key);
	sw_oci_descriptor_copy(&e->blob, &m.layers[0]);
	json_decref(e->blob.annotations);
	e->blob.annotations = NULL;
	e->created_by = sw_xstrdup(by ? by : "");
	e->created = time(NULL);
	e->last_used = e->created;
	rc = sw_cache_put(b->cache, e, err);
	if (rc < 0)
		sw_cache_entry_clear(e);
out:
	sw_oci_manifest_clear(&m);
	return rc;
}

int sw_build__regcache_probe(bool *hit, sw_build__ctx *b, sw_build__step_rt *sr,
                             const sw_build__step *s, sw_error **err)
{
	(void)err;
	*hit = false;
	for (size_t i = 0; b->o->cache_from[i]; i++) {
		const char *repo = b->o->cache_from[i];
		sw_error *e = NULL;
		sw_oci_ref ref;
		memset(&ref, 0, sizeof(ref));
		sw_oci_registry *r = NULL;
		sw_oci_descriptor desc;
		memset(&desc, 0, sizeof(desc));
		int rc = cache_ref(&ref, repo, s->key, &e);
		if (rc == 0)
			rc = sw_build__registry(&r, b, ref.registry, &e);
		if (rc == 0)
			rc = sw_oci_registry_pull(&desc, r, b->store, &ref, NULL, &e);
		if (rc == 0)
			rc = adopt_entry(&sr->entry, b, &desc, s->key, &e);
		sw_oci_ref_clear(&ref);
		sw_oci_descriptor_clear(&desc);
		if (rc == 0) {
			*hit = true;
			return 0;
		}
		if (sw_error_code_of(e) != SW_ERR_NOT_FOUND)
			sw_build__log(b, "warning: --cache-from %s: %s", repo, sw_error_msg(e));
		sw_error_free(e);
	}
	return 0;
}

static int export_one(sw_build__ctx *b, const sw_cache_entry *e, sw_error **err)
{
	/* the config: canonical JSON, so the same step gives the same image everywhere */
	cleanup_jsonp json_t *j = json_object();
	json_object_set_new(j, "slipway.cache.key", json_string(e->key));
	json_object_set_new(j, "diff_id", json_string(e->diff_id.s));
	json_object_set_new(j, "created_by", json_string(e->created_by ? e->created_by : ""));
	cleanup_free char *cjson = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	if (!cjson)
		return sw_error_set(err, SW_ERR_GENERIC, "cache config: out of memory");
	sw_digest cd;
	if (sw_oci_store_put_blob(&cd, b->store, cjson, strlen(cjson), err) < 0)
		return sw_error_code_of(*err);
	sw_oci_manifest m;
	memset(&m, 0, sizeof(m));
	m.media_type = SW_OCI_MT_MANIFEST;
	m.config.media_type = SW_BUILD__CACHE_CONFIG_MT;
	m.config.digest = cd;
	m.config.size = (int64_t)strlen(cjson);
	sw_oci_descriptor layer;
	memset(&layer, 0, sizeof(layer));
	layer.media_type = e->blob.media_type;
	layer.digest = e->blob.digest;
	layer.size = e->blob.size;
	m.layers = &layer;
	m.n_layers = 1;
	size_t mlen = 0;
	cleanup_free char *mjson = sw_oci_manifest_serialize(&m, &mlen);
	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	if (sw_oci_store_put_blob(&desc.digest, b->store, mjson, mlen, err) < 0)
		return sw_error_code_of(*err);
	desc.media_type = SW_OCI_MT_MANIFEST;
	desc.size = (int64_t)mlen;
	sw_oci_ref ref;
	if (cache_ref(&ref, b->o->cache_to, e->key, err) < 0)
		return sw_error_code_of(*err);
	sw_oci_registry *r = NULL;
	int rc = sw_build__registry(&r, b, ref.registry, err);
	if (rc == 0)
		rc = sw_oci_registry_push(r, b->store, &desc, &ref, err);
	sw_oci_ref_clear(&ref);
	return rc;
}

int sw_build__regcache_export(sw_build__ctx *b, sw_error **err)
{
	sw_build__plan *p = b->plan;
	unsigned n = 0;
	sw_build__log(b, "exporting the cache to %s", b->o->cache_to);
	for (size_t i = 0; i < p->n_stages; i++) {
		if (!b->srt[i].need)
			continue;
		const sw_build__stage *st = &p->stages[i];
		for (size_t k = 0; k < st->n_steps; k++) {
			const sw_build__step_rt *sr = &b->srt[i].steps[k];
			if (!st->steps[k].layer || !sr->have)
				continue;
			if (export_one(b, &sr->entry, err) < 0)
				return sw_error_wrap(err, "--cache-to %s: %s", b->o->cache_to,
				                     st->steps[k].title);
			n++;
		}
	}
	sw_build__log(b, "exported %u cache entr%s to %s", n, n == 1 ? "y" : "ies", b->o->cache_to);
	return 0;
}
