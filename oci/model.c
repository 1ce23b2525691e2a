/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI image model: descriptors, image manifests, image indexes and image configs, read from
 * OCI or Docker schema 2 JSON with every field validated (errors name the field path, like
 * "manifest: layers[2].digest: ..."), and written back as canonical OCI JSON (compact, sorted
 * keys) so the same model always gives the same bytes and digest. Also the media type helpers
 * and a sniffer that tells a manifest from an index.
 */
#include "oci/oci.h"

#include <string.h>

/* Descriptors may not claim more than this (1 TiB): it bounds what a download may be. */
#define DESC_MAX_SIZE ((int64_t)1 << 40)

#define CANONICAL_JSON (JSON_COMPACT | JSON_SORT_KEYS)

static void decref_jsonp(json_t **j)
{
	json_decref(*j);
}
#define cleanup_jsonref __attribute__((cleanup(decref_jsonp)))

/* ---------------------------------------------------------------- media types */

static const char *const manifest_types[] = { SW_OCI_MT_MANIFEST, SW_DOCKER_MT_MANIFEST };
static const char *const index_types[] = { SW_OCI_MT_INDEX, SW_DOCKER_MT_LIST };
static const char *const layer_types[] = {
	SW_OCI_MT_LAYER,
	SW_OCI_MT_LAYER_GZIP,
	SW_OCI_MT_LAYER_ZSTD,
	SW_DOCKER_MT_LAYER_GZIP,
	SW_DOCKER_MT_LAYER,
	"application/vnd.oci.image.layer.nondistributable.v1.tar",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
	"application/vnd.docker.image.rootfs.diff.tar.zstd",
};

static const char *find_type(const char *const *types, size_t n, const char *mt)
{
	if (!mt)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strcmp(types[i], mt) == 0)
			return types[i];
	return NULL;
}

bool sw_oci_media_type_is_index(const char *mt)
{
	return find_type(index_types, SW_ARRAY_SIZE(index_types), mt) != NULL;
}

bool sw_oci_media_type_is_manifest(const char *mt)
{
	return find_type(manifest_types, SW_ARRAY_SIZE(manifest_types), mt) != NULL;
}

bool sw_oci_media_type_is_layer(const char *mt)
{
	return find_type(layer_types, SW_ARRAY_SIZE(layer_types), mt) != NULL;
}

const char *sw_oci_media_type_sniff(const char *buf, size_t len)
{
	if (!buf || len > SW_OCI_MAX_MANIFEST_BYTES)
		return NULL;
	cleanup_jsonref json_t *j = json_loadb(buf, len, 0, NULL);
	if (!json_is_object(j))
		return NULL;
	json_t *mt = json_object_get(j, "mediaType");
	if (json_is_string(mt)) {
		const char *s = json_string_value(mt);
		const char *r = find_type(manifest_types, SW_ARRAY_SIZE(manifest_types), s);
		return r ? r : find_type(index_types, SW_ARRAY_SIZE(index_types), s);
	}
	if (mt && !json_is_null(mt))
		return NULL;
	if (json_is_array(json_object_get(j, "manifests")))
		return SW_OCI_MT_INDEX;
	if (json_is_object(json_object_get(j, "config")) &&
	    json_is_array(json_object_get(j, "layers")))
		return SW_OCI_MT_MANIFEST;
	return NULL;
}

/* ---------------------------------------------------------------- parsing helpers */

static const char *type_name(const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number with a fraction";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "something else";
}

/* Fail with "WHAT: PATH: message" (SW_ERR_INVALID). */
static int bad(sw_error **err, const char *what, const char *path, const char *fmt, ...)
        SW_PRINTF(4, 5);

static int bad(sw_error **err, const char *what, const char *path, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	if (path && *path)
		return sw_error_set(err, SW_ERR_INVALID, "%s: %s: %s", what, path, m);
	return sw_error_set(err, SW_ERR_INVALID, "%s: %s", what, m);
}

/* "base.key" (or "key" at the top) into buf. */
static const char *subpath(char *buf, size_t n, const char *base, const char *key)
{
	int r = base && *base ? snprintf(buf, n, "%s.%s", base, key) : snprintf(buf, n, "%s", key);
	if (r < 0 || (size_t)r >= n)
		buf[n - 1] = '\0'; /* a truncated path still names the place */
	return buf;
}

#define PATH_MAX_LEN 256

/* Load a JSON object from (buf, len): size capped, duplicate keys refused. */
static int load_object(json_t **out, const char *what, const char *buf, size_t len, size_t max,
                       sw_error **err)
{
	*out = NULL;
	if (!buf)
		return bad(err, what, NULL, "no document");
	if (len > max)
		return bad(err, what, NULL, "%zu bytes is over the limit of %zu", len, max);
	json_error_t je;
	json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, (int)json_error_code(&je),
		                    "%s: invalid JSON at line %d, column %d: %s", what, je.line,
		                    je.column, je.text);
	if (!json_is_object(j)) {
		int r = bad(err, what, NULL, "expected a JSON object, got %s", type_name(j));
		json_decref(j);
		return r;
	}
	*out = j;
	return 0;
}

#define F_REQUIRED 1u
#define F_NONEMPTY 2u

/*
 * obj[key] as a string (borrowed): *out NULL when absent or null, which is an error with
 * F_REQUIRED. F_NONEMPTY refuses "".
 */
static int get_str(const char **out, json_t *obj, const char *key, unsigned flags, const char *what,
                   const char *path, sw_error **err)
{
	char p[PATH_MAX_LEN];
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v)) {
		if (flags & F_REQUIRED)
			return bad(err, what, subpath(p, sizeof(p), path, key), "missing");
		return 0;
	}
	if (!json_is_string(v))
		return bad(err, what, subpath(p, sizeof(p), path, key), "expected a string, got %s",
		           type_name(v));
	if ((flags & F_NONEMPTY) && json_string_length(v) == 0)
		return bad(err, what, subpath(p, sizeof(p), path, key), "empty");
	*out = json_string_value(v);
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s ? sw_xstrdup(s) : NULL;
}

/* obj[key]: an object whose values are all strings; copied into *out, NULL when empty. */
static int get_string_map(json_t **out, json_t *obj, const char *key, const char *what,
                          const char *path, sw_error **err)
{
	char p[PATH_MAX_LEN];
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	subpath(p, sizeof(p), path, key);
	if (!json_is_object(v))
		return bad(err, what, p, "expected an object of strings, got %s", type_name(v));
	const char *k;
	json_t *val;
	json_object_foreach (v, k, val) {
		if (!json_is_string(val))
			return bad(err, what, p, "'%.64s': expected a string, got %s", k,
			           type_name(val));
	}
	if (json_object_size(v))
		*out = json_deep_copy(v);
	return 0;
}

/* obj[key]: an array of strings (with allow_string, a lone string too) into a vector. */
static int get_strv(char ***out, json_t *obj, const char *key, bool allow_string, const char *what,
                    const char *path, sw_error **err)
{
	char p[PATH_MAX_LEN];
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	subpath(p, sizeof(p), path, key);
	if (allow_string && json_is_string(v)) {
		char **r = sw_xcalloc(2, sizeof(char *));
		r[0] = sw_xstrdup(json_string_value(v));
		*out = r;
		return 0;
	}
	if (!json_is_array(v))
		return bad(err, what, p, "expected an array of strings, got %s", type_name(v));
	size_t n = json_array_size(v);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(v, i);
		char q[PATH_MAX_LEN + 24];
		snprintf(q, sizeof(q), "%s[%zu]", p, i);
		if (!json_is_string(e))
			return bad(err, what, q, "expected a string, got %s", type_name(e));
	}
	char **r = sw_xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		r[i] = sw_xstrdup(json_string_value(json_array_get(v, i)));
	*out = r;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* obj[key]: an object used as a set ("80/tcp": {}); its keys, sorted, NULL when empty. */
static int get_key_set(char ***out, json_t *obj, const char *key, const char *what,
                       const char *path, sw_error **err)
{
	char p[PATH_MAX_LEN];
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return bad(err, what, subpath(p, sizeof(p), path, key),
		           "expected an object, got %s", type_name(v));
	size_t n = json_object_size(v);
	if (!n)
		return 0;
	char **r = sw_xcalloc(n + 1, sizeof(char *));
	size_t i = 0;
	const char *k;
	json_t *val;
	json_object_foreach (v, k, val) {
		if (i < n)
			r[i++] = sw_xstrdup(k);
	}
	qsort(r, i, sizeof(char *), cmp_str);
	*out = r;
	return 0;
}

static int check_schema_version(json_t *j, const char *what, sw_error **err)
{
	json_t *v = json_object_get(j, "schemaVersion");
	if (!v)
		return bad(err, what, "schemaVersion", "missing");
	if (!json_is_integer(v))
		return bad(err, what, "schemaVersion", "expected the integer 2, got %s",
		           type_name(v));
	json_int_t n = json_integer_value(v);
	if (n == 1)
		return bad(err, what, "schemaVersion",
		           "Docker schema 1 is not supported (only schema 2 and OCI)");
	if (n != 2)
		return bad(err, what, "schemaVersion", "expected 2, got %lld", (long long)n);
	return 0;
}

/*
 * The document's media type, checked against the kind being parsed and against `expected` (a
 * Content-Type, parameters ignored, or a descriptor's mediaType). A document without mediaType
 * takes the expected one, else `dflt`.
 */
static int check_media_type(char **out, json_t *j, const char *expected, const char *what,
                            bool (*is_kind)(const char *), const char *kind_name, const char *dflt,
                            sw_error **err)
{
	*out = NULL;
	const char *doc = NULL;
	if (get_str(&doc, j, "mediaType", 0, what, NULL, err) < 0)
		return SW_ERR_INVALID;
	if (doc && !is_kind(doc))
		return bad(err, what, "mediaType", "'%.100s' is not %s media type", doc, kind_name);
	cleanup_free char *exp = NULL;
	if (expected) {
		size_t n = strcspn(expected, ";");
		while (n && (expected[n - 1] == ' ' || expected[n - 1] == '\t'))
			n--;
		exp = sw_xstrndup(expected, n);
	}
	if (exp && doc && strcmp(doc, exp) != 0)
		return bad(err, what, "mediaType",
		           "the document says '%.100s' but '%.100s' was expected", doc, exp);
	if (exp && !doc && !is_kind(exp))
		return bad(err, what, "mediaType",
		           "'%.100s' was expected but the document is %s without a mediaType", exp,
		           kind_name);
	*out = sw_xstrdup(doc ? doc : exp ? exp : dflt);
	return 0;
}

/* ---------------------------------------------------------------- platforms and descriptors */

static int platform_from_json(sw_oci_platform **out, json_t *j, const char *what, const char *path,
                              sw_error **err)
{
	*out = NULL;
	if (!json_is_object(j))
		return bad(err, what, path, "expected an object, got %s", type_name(j));
	const char *os = NULL, *arch = NULL, *variant = NULL, *osv = NULL;
	if (get_str(&os, j, "os", F_REQUIRED | F_NONEMPTY, what, path, err) < 0 ||
	    get_str(&arch, j, "architecture", F_REQUIRED | F_NONEMPTY, what, path, err) < 0 ||
	    get_str(&variant, j, "variant", 0, what, path, err) < 0 ||
	    get_str(&osv, j, "os.version", 0, what, path, err) < 0)
		return SW_ERR_INVALID;
	static const char *const lists[] = { "os.features", "features" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(lists); i++) {
		cleanup_strv char **v = NULL;
		if (get_strv(&v, j, lists[i], false, what, path, err) < 0)
			return SW_ERR_INVALID;
	}
	sw_oci_platform *pl = sw_xcalloc(1, sizeof(*pl));
	pl->os = sw_xstrdup(os);
	pl->architecture = sw_xstrdup(arch);
	pl->variant = variant && *variant ? sw_xstrdup(variant) : NULL;
	pl->os_version = osv && *osv ? sw_xstrdup(osv) : NULL;
	*out = pl;
	return 0;
}

static int descriptor_from_json(sw_oci_descriptor *out, json_t *j, const char *what,
                                const char *path, sw_error **err)
{
	char p[PATH_MAX_LEN];
	memset(out, 0, sizeof(*out));
	if (!json_is_object(j))
		return bad(err, what, path, "expected a descriptor object, got %s", type_name(j));
	const char *mt = NULL, *dg = NULL, *at = NULL;
	if (get_str(&mt, j, "mediaType", F_REQUIRED | F_NONEMPTY, what, path, err) < 0 ||
	    get_str(&dg, j, "digest", F_REQUIRED | F_NONEMPTY, what, path, err) < 0 ||
	    get_str(&at, j, "artifactType", 0, what, path, err) < 0)
		return SW_ERR_INVALID;
	sw_digest d;
	cleanup_error sw_error *derr = NULL;
	if (sw_oci_digest_parse(&d, dg, &derr) < 0)
		return bad(err, what, subpath(p, sizeof(p), path, "digest"), "%s",
		           sw_error_msg(derr));
	json_t *size = json_object_get(j, "size");
	subpath(p, sizeof(p), path, "size");
	if (!size)
		return bad(err, what, p, "missing");
	if (!json_is_integer(size))
		return bad(err, what, p, "expected an integer, got %s", type_name(size));
	json_int_t sz = json_integer_value(size);
	if (sz < 0)
		return bad(err, what, p, "negative (%lld)", (long long)sz);
	if (sz > DESC_MAX_SIZE)
		return bad(err, what, p, "%lld is over the limit of %lld bytes", (long long)sz,
		           (long long)DESC_MAX_SIZE);
	json_t *annotations = NULL;
	if (get_string_map(&annotations, j, "annotations", what, path, err) < 0)
		return SW_ERR_INVALID;
	sw_oci_platform *platform = NULL;
	json_t *pj = json_object_get(j, "platform");
	if (pj && !json_is_null(pj) &&
	    platform_from_json(&platform, pj, what, subpath(p, sizeof(p), path, "platform"), err) <
	            0) {
		json_decref(annotations);
		return SW_ERR_INVALID;
	}
	out->media_type = sw_xstrdup(mt);
	out->digest = d;
	out->size = (int64_t)sz;
	out->annotations = annotations;
	out->platform = platform;
	out->artifact_type = at && *at ? sw_xstrdup(at) : NULL;
	return 0;
}

/* An array of descriptors at obj[key] (required). */
static int descriptors_from_json(sw_oci_descriptor **out, size_t *out_n, json_t *obj,
                                 const char *key, const char *what, sw_error **err)
{
	*out = NULL;
	*out_n = 0;
	json_t *a = json_object_get(obj, key);
	if (!a || json_is_null(a))
		return bad(err, what, key, "missing");
	if (!json_is_array(a))
		return bad(err, what, key, "expected an array, got %s", type_name(a));
	size_t n = json_array_size(a);
	sw_oci_descriptor *v = sw_xcalloc(n ? n : 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX_LEN];
		snprintf(p, sizeof(p), "%s[%zu]", key, i);
		if (descriptor_from_json(&v[i], json_array_get(a, i), what, p, err) < 0) {
			for (size_t k = 0; k < i; k++)
				sw_oci_descriptor_clear(&v[k]);
			free(v);
			return SW_ERR_INVALID;
		}
	}
	*out = v;
	*out_n = n;
	return 0;
}

void sw_oci_descriptor_clear(sw_oci_descriptor *d)
{
	if (!d)
		return;
	free(d->media_type);
	json_decref(d->annotations);
	if (d->platform) {
		sw_oci_platform_clear(d->platform);
		free(d->platform);
	}
	free(d->artifact_type);
	memset(d, 0, sizeof(*d));
}

void sw_oci_descriptor_copy(sw_oci_descriptor *dst, const sw_oci_descriptor *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->media_type = dup_or_null(src->media_type);
	dst->digest = src->digest;
	dst->size = src->size;
	dst->annotations = src->annotations ? json_deep_copy(src->annotations) : NULL;
	if (src->platform) {
		dst->platform = sw_xcalloc(1, sizeof(*dst->platform));
		dst->platform->os = dup_or_null(src->platform->os);
		dst->platform->architecture = dup_or_null(src->platform->architecture);
		dst->platform->variant = dup_or_null(src->platform->variant);
		dst->platform->os_version = dup_or_null(src->platform->os_version);
	}
	dst->artifact_type = dup_or_null(src->artifact_type);
}

const char *sw_oci_descriptor_annotation(const sw_oci_descriptor *d, const char *key)
{
	if (!d || !d->annotations || !key)
		return NULL;
	return json_string_value(json_object_get(d->annotations, key));
}

void sw_oci_descriptor_set_annotation(sw_oci_descriptor *d, const char *key, const char *value)
{
	if (!value) {
		if (d->annotations) {
			json_object_del(d->annotations, key);
			if (json_object_size(d->annotations) == 0) {
				json_decref(d->annotations);
				d->annotations = NULL;
			}
		}
		return;
	}
	if (!d->annotations)
		d->annotations = json_object();
	json_object_set_new(d->annotations, key, json_string(value));
}

/* ---------------------------------------------------------------- serializing helpers */

static void set_string(json_t *o, const char *key, const char *value)
{
	/* json_string refuses invalid UTF-8 (NULL); the key is then left out */
	json_object_set_new(o, key, json_string(value));
}

static json_t *platform_to_json(const sw_oci_platform *p)
{
	json_t *o = json_object();
	set_string(o, "architecture", p->architecture ? p->architecture : "");
	set_string(o, "os", p->os ? p->os : "");
	if (p->variant && *p->variant)
		set_string(o, "variant", p->variant);
	if (p->os_version && *p->os_version)
		set_string(o, "os.version", p->os_version);
	return o;
}

static json_t *descriptor_to_json(const sw_oci_descriptor *d)
{
	json_t *o = json_object();
	set_string(o, "mediaType", d->media_type ? d->media_type : "");
	set_string(o, "digest", d->digest.s);
	json_object_set_new(o, "size", json_integer(d->size));
	if (d->annotations && json_object_size(d->annotations))
		json_object_set_new(o, "annotations", json_deep_copy(d->annotations));
	if (d->platform)
		json_object_set_new(o, "platform", platform_to_json(d->platform));
	if (d->artifact_type && *d->artifact_type)
		set_string(o, "artifactType", d->artifact_type);
	return o;
}

static char *dump_canonical(json_t *j, size_t *len)
{
	char *s = json_dumps(j, CANONICAL_JSON);
	if (!s)
		abort(); /* only fails when out of memory */
	if (len)
		*len = strlen(s);
	return s;
}

/* ---------------------------------------------------------------- manifests and indexes */

int sw_oci_manifest_parse(sw_oci_manifest *out, const char *buf, size_t len,
                          const char *expected_media_type, sw_error **err)
{
	static const char what[] = "manifest";
	memset(out, 0, sizeof(*out));
	cleanup_jsonref json_t *j = NULL;
	if (load_object(&j, what, buf, len, SW_OCI_MAX_MANIFEST_BYTES, err) < 0)
		return SW_ERR_INVALID;
	if (check_schema_version(j, what, err) < 0)
		return SW_ERR_INVALID;
	if (check_media_type(&out->media_type, j, expected_media_type, what,
	                     sw_oci_media_type_is_manifest, "an image manifest", SW_OCI_MT_MANIFEST,
	                     err) < 0)
		goto fail;
	if (json_object_get(j, "manifests")) {
		bad(err, what, "manifests", "present in an image manifest (is this an index?)");
		goto fail;
	}
	json_t *config = json_object_get(j, "config");
	if (!config || json_is_null(config)) {
		bad(err, what, "config", "missing");
		goto fail;
	}
	if (descriptor_from_json(&out->config, config, what, "config", err) < 0)
		goto fail;
	if (descriptors_from_json(&out->layers, &out->n_layers, j, "layers", what, err) < 0)
		goto fail;
	if (get_string_map(&out->annotations, j, "annotations", what, NULL, err) < 0)
		goto fail;
	return 0;
fail:
	sw_oci_manifest_clear(out);
	return SW_ERR_INVALID;
}

int sw_oci_index_parse(sw_oci_index *out, const char *buf, size_t len,
                       const char *expected_media_type, sw_error **err)
{
	static const char what[] = "index";
	memset(out, 0, sizeof(*out));
	cleanup_jsonref json_t *j = NULL;
	if (load_object(&j, what, buf, len, SW_OCI_MAX_MANIFEST_BYTES, err) < 0)
		return SW_ERR_INVALID;
	if (check_schema_version(j, what, err) < 0)
		return SW_ERR_INVALID;
	if (check_media_type(&out->media_type, j, expected_media_type, what,
	                     sw_oci_media_type_is_index, "an image index", SW_OCI_MT_INDEX,
	                     err) < 0)
		goto fail;
	if (json_object_get(j, "layers")) {
		bad(err, what, "layers", "present in an image index (is this a manifest?)");
		goto fail;
	}
	if (descriptors_from_json(&out->manifests, &out->n_manifests, j, "manifests", what, err) <
	    0)
		goto fail;
	if (get_string_map(&out->annotations, j, "annotations", what, NULL, err) < 0)
		goto fail;
	return 0;
fail:
	sw_oci_index_clear(out);
	return SW_ERR_INVALID;
}

void sw_oci_manifest_clear(sw_oci_manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	sw_oci_descriptor_clear(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		sw_oci_descriptor_clear(&m->layers[i]);
	free(m->layers);
	json_decref(m->annotations);
	memset(m, 0, sizeof(*m));
}

void sw_oci_index_clear(sw_oci_index *ix)
{
	if (!ix)
		return;
	free(ix->media_type);
	for (size_t i = 0; i < ix->n_manifests; i++)
		sw_oci_descriptor_clear(&ix->manifests[i]);
	free(ix->manifests);
	json_decref(ix->annotations);
	memset(ix, 0, sizeof(*ix));
}

char *sw_oci_manifest_serialize(const sw_oci_manifest *m, size_t *len)
{
	cleanup_jsonref json_t *o = json_object();
	json_object_set_new(o, "schemaVersion", json_integer(2));
	set_string(o, "mediaType", SW_OCI_MT_MANIFEST);
	json_object_set_new(o, "config", descriptor_to_json(&m->config));
	json_t *layers = json_array();
	for (size_t i = 0; i < m->n_layers; i++)
		json_array_append_new(layers, descriptor_to_json(&m->layers[i]));
	json_object_set_new(o, "layers", layers);
	if (m->annotations && json_object_size(m->annotations))
		json_object_set_new(o, "annotations", json_deep_copy(m->annotations));
	return dump_canonical(o, len);
}

char *sw_oci_index_serialize(const sw_oci_index *ix, size_t *len)
{
	cleanup_jsonref json_t *o = json_object();
	json_object_set_new(o, "schemaVersion", json_integer(2));
	set_string(o, "mediaType", SW_OCI_MT_INDEX);
	json_t *manifests = json_array();
	for (size_t i = 0; i < ix->n_manifests; i++)
		json_array_append_new(manifests, descriptor_to_json(&ix->manifests[i]));
	json_object_set_new(o, "manifests", manifests);
	if (ix->annotations && json_object_size(ix->annotations))
		json_object_set_new(o, "annotations", json_deep_copy(ix->annotations));
	return dump_canonical(o, len);
}

/* ---------------------------------------------------------------- image config */

static int history_from_json(sw_oci_config *c, json_t *j, sw_error **err)
{
	static const char what[] = "config";
	json_t *h = json_object_get(j, "history");
	if (!h || json_is_null(h))
		return 0;
	if (!json_is_array(h))
		return bad(err, what, "history", "expected an array, got %s", type_name(h));
	size_t n = json_array_size(h);
	if (!n)
		return 0;
	c->history = sw_xcalloc(n, sizeof(*c->history));
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX_LEN];
		snprintf(p, sizeof(p), "history[%zu]", i);
		json_t *e = json_array_get(h, i);
		if (!json_is_object(e))
			return bad(err, what, p, "expected an object, got %s", type_name(e));
		const char *created = NULL, *created_by = NULL, *comment = NULL;
		if (get_str(&created, e, "created", 0, what, p, err) < 0 ||
		    get_str(&created_by, e, "created_by", 0, what, p, err) < 0 ||
		    get_str(&comment, e, "comment", 0, what, p, err) < 0)
			return SW_ERR_INVALID;
		json_t *empty = json_object_get(e, "empty_layer");
		if (empty && !json_is_null(empty) && !json_is_boolean(empty)) {
			char q[PATH_MAX_LEN];
			return bad(err, what, subpath(q, sizeof(q), p, "empty_layer"),
			           "expected a boolean, got %s", type_name(empty));
		}
		sw_oci_history *hh = &c->history[c->n_history++];
		hh->created = dup_or_null(created);
		hh->created_by = dup_or_null(created_by);
		hh->comment = dup_or_null(comment);
		hh->empty_layer = json_is_true(empty);
	}
	return 0;
}

static int rootfs_from_json(sw_oci_config *c, json_t *j, sw_error **err)
{
	static const char what[] = "config";
	json_t *r = json_object_get(j, "rootfs");
	if (!r || json_is_null(r))
		return bad(err, what, "rootfs", "missing");
	if (!json_is_object(r))
		return bad(err, what, "rootfs", "expected an object, got %s", type_name(r));
	const char *type = NULL;
	if (get_str(&type, r, "type", F_REQUIRED, what, "rootfs", err) < 0)
		return SW_ERR_INVALID;
	if (strcmp(type, "layers") != 0)
		return bad(err, what, "rootfs.type", "expected \"layers\", got \"%.64s\"", type);
	json_t *ids = json_object_get(r, "diff_ids");
	if (!ids || json_is_null(ids))
		return bad(err, what, "rootfs.diff_ids", "missing");
	if (!json_is_array(ids))
		return bad(err, what, "rootfs.diff_ids", "expected an array, got %s",
		           type_name(ids));
	size_t n = json_array_size(ids);
	if (!n)
		return 0;
	c->diff_ids = sw_xcalloc(n, sizeof(*c->diff_ids));
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(ids, i);
		char p[PATH_MAX_LEN];
		snprintf(p, sizeof(p), "rootfs.diff_ids[%zu]", i);
		if (!json_is_string(e))
			return bad(err, what, p, "expected a string, got %s", type_name(e));
		cleanup_error sw_error *derr = NULL;
		if (sw_oci_digest_parse(&c->diff_ids[i], json_string_value(e), &derr) < 0)
			return bad(err, what, p, "%s", sw_error_msg(derr));
		c->n_diff_ids++;
	}
	return 0;
}

static int exec_config_from_json(sw_oci_config *c, json_t *j, sw_error **err)
{
	static const char what[] = "config";
	static const char path[] = "config";
	json_t *cfg = json_object_get(j, "config");
	if (!cfg || json_is_null(cfg))
		return 0;
	if (!json_is_object(cfg))
		return bad(err, what, path, "expected an object, got %s", type_name(cfg));
	const char *user = NULL, *wd = NULL, *sig = NULL;
	if (get_str(&user, cfg, "User", 0, what, path, err) < 0 ||
	    get_str(&wd, cfg, "WorkingDir", 0, what, path, err) < 0 ||
	    get_str(&sig, cfg, "StopSignal", 0, what, path, err) < 0)
		return SW_ERR_INVALID;
	c->user = dup_or_null(user);
	c->working_dir = dup_or_null(wd);
	c->stop_signal = dup_or_null(sig);
	if (get_strv(&c->env, cfg, "Env", false, what, path, err) < 0 ||
	    get_strv(&c->entrypoint, cfg, "Entrypoint", true, what, path, err) < 0 ||
	    get_strv(&c->cmd, cfg, "Cmd", true, what, path, err) < 0 ||
	    get_key_set(&c->exposed_ports, cfg, "ExposedPorts", what, path, err) < 0 ||
	    get_key_set(&c->volumes, cfg, "Volumes", what, path, err) < 0 ||
	    get_string_map(&c->labels, cfg, "Labels", what, path, err) < 0)
		return SW_ERR_INVALID;
	if (c->env && !c->env[0]) {
		sw_strv_free(c->env);
		c->env = NULL;
	}
	return 0;
}

int sw_oci_config_parse(sw_oci_config *out, const char *buf, size_t len, sw_error **err)
{
	static const char what[] = "config";
	memset(out, 0, sizeof(*out));
	json_t *j = NULL;
	if (load_object(&j, what, buf, len, SW_OCI_MAX_CONFIG_BYTES, err) < 0)
		return SW_ERR_INVALID;
	out->raw = j;
	const char *created = NULL, *author = NULL, *arch = NULL, *os = NULL, *variant = NULL;
	if (get_str(&created, j, "created", 0, what, NULL, err) < 0 ||
	    get_str(&author, j, "author", 0, what, NULL, err) < 0 ||
	    get_str(&arch, j, "architecture", F_REQUIRED | F_NONEMPTY, what, NULL, err) < 0 ||
	    get_str(&os, j, "os", F_REQUIRED | F_NONEMPTY, what, NULL, err) < 0 ||
	    get_str(&variant, j, "variant", 0, what, NULL, err) < 0)
		goto fail;
	out->created = dup_or_null(created);
	out->author = dup_or_null(author);
	out->architecture = sw_xstrdup(arch);
	out->os = sw_xstrdup(os);
	out->variant = dup_or_null(variant);
	if (exec_config_from_json(out, j, err) < 0 || rootfs_from_json(out, j, err) < 0 ||
	    history_from_json(out, j, err) < 0)
		goto fail;
	return 0;
fail:
	sw_oci_config_clear(out);
	return SW_ERR_INVALID;
}

void sw_oci_config_clear(sw_oci_config *c)
{
	if (!c)
		return;
	free(c->created);
	free(c->author);
	free(c->architecture);
	free(c->os);
	free(c->variant);
	free(c->user);
	sw_strv_free(c->env);
	sw_strv_free(c->entrypoint);
	sw_strv_free(c->cmd);
	free(c->working_dir);
	sw_strv_free(c->exposed_ports);
	sw_strv_free(c->volumes);
	json_decref(c->labels);
	free(c->stop_signal);
	free(c->diff_ids);
	for (size_t i = 0; i < c->n_history; i++) {
		free(c->history[i].created);
		free(c->history[i].created_by);
		free(c->history[i].comment);
	}
	free(c->history);
	json_decref(c->raw);
	memset(c, 0, sizeof(*c));
}

/* Store a string, or remove the key when it is NULL or empty (as Docker and OCI omit them). */
static void store_str(json_t *o, const char *key, const char *v)
{
	if (v && *v)
		set_string(o, key, v);
	else
		json_object_del(o, key);
}

/* Store a vector as an array; NULL (and, with drop_empty, an empty one) removes the key. */
static void store_strv(json_t *o, const char *key, char *const *v, bool drop_empty)
{
	if (!v || (drop_empty && !v[0])) {
		json_object_del(o, key);
		return;
	}
	json_t *a = json_array();
	for (size_t i = 0; v[i]; i++)
		json_array_append_new(a, json_string(v[i]));
	json_object_set_new(o, key, a);
}

/* Store a vector as a set object ({"80/tcp": {}}); NULL or empty removes the key. */
static void store_key_set(json_t *o, const char *key, char *const *v)
{
	if (!v || !v[0]) {
		json_object_del(o, key);
		return;
	}
	json_t *s = json_object();
	for (size_t i = 0; v[i]; i++)
		json_object_set_new(s, v[i], json_object());
	json_object_set_new(o, key, s);
}

static bool exec_config_empty(const sw_oci_config *c)
{
	return !(c->user && *c->user) && !(c->env && c->env[0]) && !c->entrypoint && !c->cmd &&
	       !(c->working_dir && *c->working_dir) && !(c->exposed_ports && c->exposed_ports[0]) &&
	       !(c->volumes && c->volumes[0]) && !(c->labels && json_object_size(c->labels)) &&
	       !(c->stop_signal && *c->stop_signal);
}

static void store_history_entry(json_t *e, const sw_oci_history *h)
{
	store_str(e, "created", h->created);
	store_str(e, "created_by", h->created_by);
	store_str(e, "comment", h->comment);
	if (h->empty_layer)
		json_object_set_new(e, "empty_layer", json_true());
	else
		json_object_del(e, "empty_layer");
}

char *sw_oci_config_serialize(sw_oci_config *c, size_t *len)
{
	if (!json_is_object(c->raw)) {
		json_decref(c->raw);
		c->raw = json_object();
	}
	json_t *raw = c->raw;
	store_str(raw, "created", c->created);
	store_str(raw, "author", c->author);
	store_str(raw, "architecture", c->architecture);
	store_str(raw, "os", c->os);
	store_str(raw, "variant", c->variant);

	json_t *cfg = json_object_get(raw, "config");
	if (!json_is_object(cfg) && !exec_config_empty(c)) {
		cfg = json_object();
		json_object_set_new(raw, "config", cfg);
	}
	if (json_is_object(cfg)) {
		store_str(cfg, "User", c->user);
		store_strv(cfg, "Env", c->env, true);
		store_strv(cfg, "Entrypoint", c->entrypoint, false);
		store_strv(cfg, "Cmd", c->cmd, false);
		store_str(cfg, "WorkingDir", c->working_dir);
		store_key_set(cfg, "ExposedPorts", c->exposed_ports);
		store_key_set(cfg, "Volumes", c->volumes);
		if (c->labels && json_object_size(c->labels))
			json_object_set_new(cfg, "Labels", json_deep_copy(c->labels));
		else
			json_object_del(cfg, "Labels");
		store_str(cfg, "StopSignal", c->stop_signal);
	}

	json_t *rootfs = json_object_get(raw, "rootfs");
	if (!json_is_object(rootfs)) {
		rootfs = json_object();
		json_object_set_new(raw, "rootfs", rootfs);
	}
	set_string(rootfs, "type", "layers");
	json_t *ids = json_array();
	for (size_t i = 0; i < c->n_diff_ids; i++)
		json_array_append_new(ids, json_string(c->diff_ids[i].s));
	json_object_set_new(rootfs, "diff_ids", ids);

	if (!c->n_history) {
		json_object_del(raw, "history");
	} else {
		/* entries are updated in place so fields slipway does not model survive */
		json_t *old = json_object_get(raw, "history");
		json_t *h = json_array();
		for (size_t i = 0; i < c->n_history; i++) {
			json_t *prev = json_is_array(old) ? json_array_get(old, i) : NULL;
			json_t *e = json_is_object(prev) ? json_deep_copy(prev) : json_object();
			store_history_entry(e, &c->history[i]);
			json_array_append_new(h, e);
		}
		json_object_set_new(raw, "history", h);
	}
	return dump_canonical(raw, len);
}
