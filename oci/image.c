/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Whole images made locally: importing a root filesystem tarball as a one-layer image (the
 * layer, an image config for the requested platform and an OCI manifest, stored and tagged in a
 * content store). With SOURCE_DATE_EPOCH set, the same tarball always gives the same manifest
 * digest.
 */
#include "oci/oci.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define IMPORT_DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* SOURCE_DATE_EPOCH as seconds, or -1 when unset; SW_ERR_INVALID when it is not a number. */
static int source_date_epoch(int64_t *out, sw_error **err)
{
	*out = -1;
	const char *v = getenv("SOURCE_DATE_EPOCH");
	if (!v || !v[0])
		return 0;
	char *end = NULL;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || !end || *end || n < 0 || n > 253402300799LL) /* up to year 9999 */
		return sw_error_set(err, SW_ERR_INVALID,
		                    "SOURCE_DATE_EPOCH '%.40s' is not a number of seconds", v);
	*out = n;
	return 0;
}

/* RFC 3339 in UTC: "2023-11-14T22:13:20Z". */
static char *rfc3339(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	char buf[64];
	if (!gmtime_r(&tt, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return sw_xstrdup("1970-01-01T00:00:00Z");
	return sw_xstrdup(buf);
}

static const char *path_basename(const char *p)
{
	const char *slash = strrchr(p, '/');
	return slash && slash[1] ? slash + 1 : p;
}

int sw_oci_image_import(sw_oci_descriptor *out, sw_oci_store *s, const char *tar_path,
                        const char *name, const sw_oci_platform *platform,
                        const sw_oci_layer_opts *opts, sw_error **err)
{
	if (out)
		memset(out, 0, sizeof(*out));
	int64_t epoch = -1;
	int r = source_date_epoch(&epoch, err);
	if (r < 0)
		return r;
	sw_oci_layer_opts lopts = { .compression = SW_OCI_COMPRESS_GZIP,
		                    .source_date_epoch = epoch };
	if (opts)
		lopts = *opts;

	sw_oci_layer_info layer;
	memset(&layer, 0, sizeof(layer));
	r = sw_oci_layer_write_tar(&layer, s, tar_path, &lopts, err);
	if (r < 0)
		return r; /* the message names the tarball and the entry */

	sw_oci_platform plat;
	memset(&plat, 0, sizeof(plat));
	if (!platform)
		sw_oci_platform_default(&plat);
	const sw_oci_platform *p = platform ? platform : &plat;
	if (!p->os || !p->architecture) {
		sw_oci_platform_clear(&plat);
		return sw_error_set(err, SW_ERR_INVALID,
		                    "import %s: the platform needs an OS and an architecture",
		                    tar_path);
	}

	/* the image config */
	sw_oci_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.created = rfc3339(epoch >= 0 ? epoch : (int64_t)time(NULL));
	cfg.architecture = sw_xstrdup(p->architecture);
	cfg.os = sw_xstrdup(p->os);
	cfg.variant = p->variant ? sw_xstrdup(p->variant) : NULL;
	sw_strv_push(&cfg.env, IMPORT_DEFAULT_PATH);
	cfg.diff_ids = sw_xcalloc(1, sizeof(*cfg.diff_ids));
	cfg.diff_ids[0] = layer.diff_id;
	cfg.n_diff_ids = 1;
	cfg.history = sw_xcalloc(1, sizeof(*cfg.history));
	cfg.history[0].created = sw_xstrdup(cfg.created);
	cfg.history[0].created_by =
	        sw_xasprintf("slipway image import %s", path_basename(tar_path));
	cfg.n_history = 1;
	cfg.raw = json_object();
	sw_oci_platform_clear(&plat);

	size_t cfg_len = 0;
	cleanup_free char *cfg_json = sw_oci_config_serialize(&cfg, &cfg_len);
	sw_oci_config_clear(&cfg);
	sw_digest cfg_digest;
	r = sw_oci_store_put_blob(&cfg_digest, s, cfg_json, cfg_len, err);
	if (r < 0)
		return sw_error_wrap(err, "import %s: store the config", tar_path);

	/* the manifest */
	sw_oci_manifest m;
	memset(&m, 0, sizeof(m));
	m.media_type = sw_xstrdup(SW_OCI_MT_MANIFEST);
	m.config.media_type = sw_xstrdup(SW_OCI_MT_CONFIG);
	m.config.digest = cfg_digest;
	m.config.size = (int64_t)cfg_len;
	m.layers = sw_xcalloc(1, sizeof(*m.layers));
	m.n_layers = 1;
	m.layers[0].media_type = sw_xstrdup(layer.media_type);
	m.layers[0].digest = layer.blob_digest;
	m.layers[0].size = layer.blob_size;
	size_t man_len = 0;
	cleanup_free char *man_json = sw_oci_manifest_serialize(&m, &man_len);
	sw_oci_manifest_clear(&m);
	sw_digest man_digest;
	r = sw_oci_store_put_blob(&man_digest, s, man_json, man_len, err);
	if (r < 0)
		return sw_error_wrap(err, "import %s: store the manifest", tar_path);

	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	desc.media_type = sw_xstrdup(SW_OCI_MT_MANIFEST);
	desc.digest = man_digest;
	desc.size = (int64_t)man_len;
	if (name) {
		r = sw_oci_store_tag(s, name, &desc, err);
		if (r < 0) {
			sw_oci_descriptor_clear(&desc);
			return sw_error_wrap(err, "import %s", tar_path);
		}
	}
	if (out)
		*out = desc;
	else
		sw_oci_descriptor_clear(&desc);
	return 0;
}
