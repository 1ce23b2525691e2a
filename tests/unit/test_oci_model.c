/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the OCI image model: OCI and Docker manifests, manifest lists and indexes with
 * platform selection, image configs, canonical serialization and round trips, every validation
 * error with the field it names, platforms, descriptors, media types and registry references.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "oci/oci.h"
#include "tests/unit/test_oci.h"

#define D_CFG "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
#define D_L1 "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
#define D_L2 "sha256:2f8b64a0e8b5fd7e5bbd1d4b4ae2fc6fba3b13f6dcf31c4b8dbdc84d6d21a2b1"
#define D_M1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D_M2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D_M3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define D_M4 "sha256:4444444444444444444444444444444444444444444444444444444444444444"
#define D_M5 "sha256:5555555555555555555555555555555555555555555555555555555555555555"

static const char oci_manifest[] =
        "{\n"
        "  \"schemaVersion\": 2,\n"
        "  \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\",\n"
        "  \"config\": {\n"
        "    \"mediaType\": \"application/vnd.oci.image.config.v1+json\",\n"
        "    \"digest\": \"" D_CFG "\",\n"
        "    \"size\": 1470\n"
        "  },\n"
        "  \"layers\": [\n"
        "    {\n"
        "      \"mediaType\": \"application/vnd.oci.image.layer.v1.tar+gzip\",\n"
        "      \"digest\": \"" D_L1 "\",\n"
        "      \"size\": 2814446\n"
        "    },\n"
        "    {\n"
        "      \"mediaType\": \"application/vnd.oci.image.layer.v1.tar+zstd\",\n"
        "      \"digest\": \"" D_L2 "\",\n"
        "      \"size\": 32,\n"
        "      \"annotations\": { \"com.example.note\": \"second\" }\n"
        "    }\n"
        "  ],\n"
        "  \"annotations\": {\n"
        "    \"org.opencontainers.image.revision\": \"0123abc\",\n"
        "    \"org.opencontainers.image.created\": \"2024-05-01T10:00:00Z\"\n"
        "  }\n"
        "}\n";

static const char docker_manifest[] =
        "{\"schemaVersion\":2,"
        "\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
        "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\","
        "\"size\":1457,\"digest\":\"" D_CFG "\"},"
        "\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
        "\"size\":772788,\"digest\":\"" D_L1 "\"}]}";

static const char docker_list[] =
        "{\"schemaVersion\":2,"
        "\"mediaType\":\"application/vnd.docker.distribution.manifest.list.v2+json\","
        "\"manifests\":["
        "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"size\":527,"
        "\"digest\":\"" D_M1 "\",\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
        "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"size\":527,"
        "\"digest\":\"" D_M2 "\",\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\","
        "\"variant\":\"v6\"}},"
        "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"size\":527,"
        "\"digest\":\"" D_M3 "\",\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\","
        "\"variant\":\"v7\"}},"
        "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"size\":527,"
        "\"digest\":\"" D_M4 "\",\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\","
        "\"variant\":\"v8\"}},"
        "{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"size\":527,"
        "\"digest\":\"" D_M5 "\",\"platform\":{\"architecture\":\"amd64\",\"os\":\"windows\","
        "\"os.version\":\"10.0.17763.5830\"}}]}";

/* As buildx pushes it: an attestation manifest per image, platform unknown/unknown. */
static const char oci_index[] =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
        "\"manifests\":["
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D_M5 "\","
        "\"size\":566,\"annotations\":{\"vnd.docker.reference.digest\":\"" D_M1 "\","
        "\"vnd.docker.reference.type\":\"attestation-manifest\"},"
        "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D_M1 "\","
        "\"size\":1021,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D_M2 "\","
        "\"size\":1021,\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D_M3 "\","
        "\"size\":1021,\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}}"
        "],\"annotations\":{\"org.opencontainers.image.ref.name\":\"1.0\"}}";

static const char docker_config[] =
        "{\"architecture\":\"arm\",\"variant\":\"v7\",\"os\":\"linux\","
        "\"author\":\"Jane <jane@example.com>\","
        "\"created\":\"2024-05-01T10:00:00.123456789Z\","
        "\"docker_version\":\"24.0.7\","
        "\"container_config\":{\"Hostname\":\"abc\",\"Cmd\":[\"/bin/sh\",\"-c\",\"#(nop) CMD\"]},"
        "\"config\":{\"Hostname\":\"\",\"User\":\"app:app\","
        "\"Env\":[\"PATH=/usr/local/bin:/usr/bin:/bin\",\"LANG=C.UTF-8\"],"
        "\"Entrypoint\":[\"/docker-entrypoint.sh\"],\"Cmd\":[\"nginx\",\"-g\",\"daemon off;\"],"
        "\"WorkingDir\":\"/srv\",\"ExposedPorts\":{\"80/tcp\":{},\"443/tcp\":{}},"
        "\"Volumes\":{\"/var/cache/nginx\":{},\"/data\":{}},"
        "\"Labels\":{\"maintainer\":\"NGINX\",\"org.opencontainers.image.version\":\"1.25\"},"
        "\"StopSignal\":\"SIGQUIT\","
        "\"Healthcheck\":{\"Test\":[\"CMD\",\"true\"],\"Interval\":30000000000},"
        "\"OnBuild\":null},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D_L1 "\",\"" D_L2 "\"]},"
        "\"history\":[{\"created\":\"2024-04-01T00:00:00Z\",\"created_by\":\"/bin/sh -c #(nop) "
        "ADD file:abc in / \"},"
        "{\"created\":\"2024-04-01T00:00:01Z\",\"created_by\":\"/bin/sh -c #(nop)  CMD "
        "[\\\"sh\\\"]\",\"empty_layer\":true,\"author\":\"someone\"},"
        "{\"created\":\"2024-05-01T10:00:00Z\",\"created_by\":\"RUN make\",\"comment\":"
        "\"buildkit.dockerfile.v0\"}]}";

/* ---------------------------------------------------------------- helpers */

static void assert_error_contains(sw_error *err, int code, const char *needle)
{
	assert_non_null(err);
	if (!strstr(sw_error_msg(err), needle))
		fail_msg("error '%s' does not contain '%s'", sw_error_msg(err), needle);
	assert_int_equal(sw_error_code_of(err), code);
}

static void assert_str_eq_null(const char *a, const char *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_strv_eq(char *const *a, char *const *b)
{
	if (!a || !b) {
		assert_ptr_equal(a, b);
		return;
	}
	assert_int_equal(sw_strv_len(a), sw_strv_len(b));
	for (size_t i = 0; a[i]; i++)
		assert_string_equal(a[i], b[i]);
}

static void assert_json_eq(json_t *a, json_t *b)
{
	if (!a || !b)
		assert_ptr_equal(a, b);
	else
		assert_true(json_equal(a, b));
}

static void assert_platform_eq(const sw_oci_platform *a, const sw_oci_platform *b)
{
	if (!a || !b) {
		assert_ptr_equal(a, b);
		return;
	}
	assert_str_eq_null(a->os, b->os);
	assert_str_eq_null(a->architecture, b->architecture);
	assert_str_eq_null(a->variant, b->variant);
	assert_str_eq_null(a->os_version, b->os_version);
}

static void assert_desc_eq(const sw_oci_descriptor *a, const sw_oci_descriptor *b)
{
	assert_str_eq_null(a->media_type, b->media_type);
	assert_string_equal(a->digest.s, b->digest.s);
	assert_int_equal(a->size, b->size);
	assert_json_eq(a->annotations, b->annotations);
	assert_platform_eq(a->platform, b->platform);
	assert_str_eq_null(a->artifact_type, b->artifact_type);
}

static void assert_config_eq(const sw_oci_config *a, const sw_oci_config *b)
{
	assert_str_eq_null(a->created, b->created);
	assert_str_eq_null(a->author, b->author);
	assert_str_eq_null(a->architecture, b->architecture);
	assert_str_eq_null(a->os, b->os);
	assert_str_eq_null(a->variant, b->variant);
	assert_str_eq_null(a->user, b->user);
	assert_strv_eq(a->env, b->env);
	assert_strv_eq(a->entrypoint, b->entrypoint);
	assert_strv_eq(a->cmd, b->cmd);
	assert_str_eq_null(a->working_dir, b->working_dir);
	assert_strv_eq(a->exposed_ports, b->exposed_ports);
	assert_strv_eq(a->volumes, b->volumes);
	assert_json_eq(a->labels, b->labels);
	assert_str_eq_null(a->stop_signal, b->stop_signal);
	assert_int_equal(a->n_diff_ids, b->n_diff_ids);
	for (size_t i = 0; i < a->n_diff_ids; i++)
		assert_string_equal(a->diff_ids[i].s, b->diff_ids[i].s);
	assert_int_equal(a->n_history, b->n_history);
	for (size_t i = 0; i < a->n_history; i++) {
		assert_str_eq_null(a->history[i].created, b->history[i].created);
		assert_str_eq_null(a->history[i].created_by, b->history[i].created_by);
		assert_str_eq_null(a->history[i].comment, b->history[i].comment);
		assert_int_equal(a->history[i].empty_layer, b->history[i].empty_layer);
	}
}

/* Parse `doc` as a manifest expecting failure; the error must contain `needle`. */
static void manifest_fails(const char *doc, const char *expected_mt, const char *needle)
{
	sw_oci_manifest m;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_manifest_parse(&m, doc, strlen(doc), expected_mt, &err),
	                 SW_ERR_INVALID);
	assert_error_contains(err, SW_ERR_INVALID, needle);
	assert_null(m.media_type);
	assert_null(m.layers);
	sw_error_free(err);
}

static void index_fails(const char *doc, const char *expected_mt, const char *needle)
{
	sw_oci_index ix;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_index_parse(&ix, doc, strlen(doc), expected_mt, &err),
	                 SW_ERR_INVALID);
	assert_error_contains(err, SW_ERR_INVALID, needle);
	assert_null(ix.manifests);
	sw_error_free(err);
}

static void config_fails(const char *doc, const char *needle)
{
	sw_oci_config c;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_config_parse(&c, doc, strlen(doc), &err), SW_ERR_INVALID);
	assert_error_contains(err, SW_ERR_INVALID, needle);
	assert_null(c.raw);
	assert_null(c.architecture);
	sw_error_free(err);
}

/* A one-layer manifest document with `layer` as its layer descriptor's JSON. */
static char *manifest_with_layer(const char *layer)
{
	return sw_xasprintf("{\"schemaVersion\":2,\"mediaType\":\"" SW_OCI_MT_MANIFEST "\","
	                    "\"config\":{\"mediaType\":\"" SW_OCI_MT_CONFIG "\",\"digest\":"
	                    "\"" D_CFG "\",\"size\":2},\"layers\":[{\"mediaType\":"
	                    "\"" SW_OCI_MT_LAYER_GZIP "\",\"digest\":\"" D_L1 "\",\"size\":3},%s]}",
	                    layer);
}

/* ---------------------------------------------------------------- manifests */

static void test_oci__manifest_parse_oci(void **state)
{
	(void)state;
	sw_oci_manifest m;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_manifest_parse(&m, oci_manifest, strlen(oci_manifest), NULL, &err),
	                 0);
	assert_null(err);
	assert_string_equal(m.media_type, SW_OCI_MT_MANIFEST);
	assert_string_equal(m.config.media_type, SW_OCI_MT_CONFIG);
	assert_string_equal(m.config.digest.s, D_CFG);
	assert_int_equal(m.config.size, 1470);
	assert_null(m.config.platform);
	assert_int_equal(m.n_layers, 2);
	assert_string_equal(m.layers[0].media_type, SW_OCI_MT_LAYER_GZIP);
	assert_string_equal(m.layers[0].digest.s, D_L1);
	assert_int_equal(m.layers[0].size, 2814446);
	assert_null(m.layers[0].annotations);
	assert_string_equal(m.layers[1].media_type, SW_OCI_MT_LAYER_ZSTD);
	assert_int_equal(m.layers[1].size, 32);
	assert_string_equal(sw_oci_descriptor_annotation(&m.layers[1], "com.example.note"),
	                    "second");
	assert_string_equal(json_string_value(json_object_get(m.annotations,
	                                                      "org.opencontainers.image.revision")),
	                    "0123abc");
	sw_oci_manifest_clear(&m);
	assert_null(m.layers);

	/* the same with the Content-Type the registry sent, parameters and all */
	assert_int_equal(sw_oci_manifest_parse(&m, oci_manifest, strlen(oci_manifest),
	                                       SW_OCI_MT_MANIFEST "; charset=utf-8", &err),
	                 0);
	sw_oci_manifest_clear(&m);
}

static void test_oci__manifest_parse_docker(void **state)
{
	(void)state;
	sw_oci_manifest m;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_manifest_parse(&m, docker_manifest, strlen(docker_manifest),
	                                       SW_DOCKER_MT_MANIFEST, &err),
	                 0);
	assert_null(err);
	assert_string_equal(m.media_type, SW_DOCKER_MT_MANIFEST);
	assert_string_equal(m.config.media_type, SW_DOCKER_MT_CONFIG);
	assert_int_equal(m.config.size, 1457);
	assert_int_equal(m.n_layers, 1);
	assert_string_equal(m.layers[0].media_type, SW_DOCKER_MT_LAYER_GZIP);
	assert_true(sw_oci_media_type_is_layer(m.layers[0].media_type));
	assert_int_equal(m.layers[0].size, 772788);
	assert_null(m.annotations);

	/* written back, it is an OCI manifest pointing at the same blobs */
	size_t len = 0;
	cleanup_free char *s = sw_oci_manifest_serialize(&m, &len);
	assert_int_equal(len, strlen(s));
	assert_non_null(strstr(s, "\"mediaType\":\"" SW_OCI_MT_MANIFEST "\""));
	sw_oci_manifest m2;
	assert_int_equal(sw_oci_manifest_parse(&m2, s, len, SW_OCI_MT_MANIFEST, &err), 0);
	assert_string_equal(m2.media_type, SW_OCI_MT_MANIFEST);
	assert_desc_eq(&m.config, &m2.config);
	assert_desc_eq(&m.layers[0], &m2.layers[0]);
	sw_oci_manifest_clear(&m2);
	sw_oci_manifest_clear(&m);
}

static void test_oci__manifest_without_media_type(void **state)
{
	(void)state;
	/* an OCI manifest may leave mediaType out: the descriptor's type (or OCI) is taken */
	static const char doc[] =
	        "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" SW_OCI_MT_CONFIG "\","
	        "\"digest\":\"" D_CFG "\",\"size\":5},\"layers\":[]}";
	sw_oci_manifest m;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_manifest_parse(&m, doc, strlen(doc), NULL, &err), 0);
	assert_string_equal(m.media_type, SW_OCI_MT_MANIFEST);
	assert_int_equal(m.n_layers, 0);
	sw_oci_manifest_clear(&m);
	assert_int_equal(sw_oci_manifest_parse(&m, doc, strlen(doc), SW_DOCKER_MT_MANIFEST, &err),
	                 0);
	assert_string_equal(m.media_type, SW_DOCKER_MT_MANIFEST);
	sw_oci_manifest_clear(&m);
	/* but an index media type does not fit a document without one */
	manifest_fails(doc, SW_OCI_MT_INDEX, "manifest: mediaType: '" SW_OCI_MT_INDEX "'");
}

static void test_oci__manifest_roundtrip(void **state)
{
	(void)state;
	sw_oci_manifest a, b;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_manifest_parse(&a, oci_manifest, strlen(oci_manifest), NULL, &err),
	                 0);
	size_t l1 = 0, l2 = 0, l3 = 0;
	cleanup_free char *s1 = sw_oci_manifest_serialize(&a, &l1);
	cleanup_free char *s2 = sw_oci_manifest_serialize(&a, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(s1, s2, l1);
	assert_null(strchr(s1, '\n'));
	assert_null(strchr(s1, ' '));

	assert_int_equal(sw_oci_manifest_parse(&b, s1, l1, SW_OCI_MT_MANIFEST, &err), 0);
	assert_null(err);
	assert_string_equal(a.media_type, b.media_type);
	assert_desc_eq(&a.config, &b.config);
	assert_int_equal(a.n_layers, b.n_layers);
	for (size_t i = 0; i < a.n_layers; i++)
		assert_desc_eq(&a.layers[i], &b.layers[i]);
	assert_json_eq(a.annotations, b.annotations);
	cleanup_free char *s3 = sw_oci_manifest_serialize(&b, &l3);
	assert_int_equal(l1, l3);
	assert_memory_equal(s1, s3, l1);

	sw_digest d1, d3;
	sw_oci_digest_bytes(&d1, s1, l1);
	sw_oci_digest_bytes(&d3, s3, l3);
	assert_true(sw_oci_digest_eq(&d1, &d3));
	sw_oci_manifest_clear(&a);
	sw_oci_manifest_clear(&b);
}

static void test_oci__manifest_serialize_canonical(void **state)
{
	(void)state;
	sw_oci_descriptor layer = { 0 };
	layer.media_type = (char *)SW_OCI_MT_LAYER_GZIP;
	assert_int_equal(sw_oci_digest_parse(&layer.digest, D_L1, NULL), 0);
	layer.size = 100;
	sw_oci_manifest m = { 0 };
	m.media_type = (char *)SW_OCI_MT_MANIFEST;
	m.config.media_type = (char *)SW_OCI_MT_CONFIG;
	assert_int_equal(sw_oci_digest_parse(&m.config.digest, D_CFG, NULL), 0);
	m.config.size = 7;
	m.layers = &layer;
	m.n_layers = 1;
	size_t len = 0;
	cleanup_free char *s = sw_oci_manifest_serialize(&m, &len);
	assert_string_equal(s, "{\"config\":{\"digest\":\"" D_CFG "\",\"mediaType\":"
	                       "\"" SW_OCI_MT_CONFIG "\",\"size\":7},\"layers\":[{\"digest\":"
	                       "\"" D_L1 "\",\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP "\","
	                       "\"size\":100}],\"mediaType\":\"" SW_OCI_MT_MANIFEST "\","
	                       "\"schemaVersion\":2}");
	assert_int_equal(len, strlen(s));

	/* annotations appear once set, in sorted key order */
	sw_oci_descriptor_set_annotation(&layer, "b", "2");
	sw_oci_descriptor_set_annotation(&layer, "a", "1");
	cleanup_free char *s2 = sw_oci_manifest_serialize(&m, NULL);
	assert_non_null(strstr(s2, "[{\"annotations\":{\"a\":\"1\",\"b\":\"2\"},\"digest\""));
	json_decref(layer.annotations);
}

static void test_oci__manifest_errors(void **state)
{
	(void)state;
	cleanup_free char *bad_digest =
	        manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                            "\",\"digest\":\"sha256:abc\",\"size\":1}");
	manifest_fails(bad_digest, NULL, "manifest: layers[1].digest: ");
	cleanup_free char *md5 = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                                             "\",\"digest\":\"md5:abc\",\"size\":1}");
	manifest_fails(md5, NULL, "manifest: layers[1].digest: 'md5:abc' is not a digest");
	cleanup_free char *upper = manifest_with_layer(
	        "{\"mediaType\":\"x\",\"digest\":\"sha256:A3ED95CAEB02FFE68CDD9FD84406680AE93D633CB1"
	        "6422D00E8A7C22955B46D4\",\"size\":1}");
	manifest_fails(upper, NULL, "layers[1].digest:");
	cleanup_free char *neg = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                                             "\",\"digest\":\"" D_L2 "\",\"size\":-1}");
	manifest_fails(neg, NULL, "manifest: layers[1].size: negative (-1)");
	cleanup_free char *huge = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                                              "\",\"digest\":\"" D_L2 "\","
	                                              "\"size\":9223372036854775807}");
	manifest_fails(huge, NULL, "manifest: layers[1].size: 9223372036854775807 is over");
	cleanup_free char *toobig = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                                                "\",\"digest\":\"" D_L2 "\","
	                                                "\"size\":92233720368547758070}");
	manifest_fails(toobig, NULL, "manifest: invalid JSON");
	cleanup_free char *strsize =
	        manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP "\",\"digest\":\"" D_L2
	                            "\",\"size\":\"1\"}");
	manifest_fails(strsize, NULL,
	               "manifest: layers[1].size: expected an integer, got a string");
	cleanup_free char *fsize = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                                               "\",\"digest\":\"" D_L2 "\",\"size\":1.5}");
	manifest_fails(fsize, NULL, "layers[1].size: expected an integer");
	cleanup_free char *nosize = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER_GZIP
	                                                "\",\"digest\":\"" D_L2 "\"}");
	manifest_fails(nosize, NULL, "manifest: layers[1].size: missing");
	cleanup_free char *nomt =
	        manifest_with_layer("{\"mediaType\":\"\",\"digest\":\"" D_L2 "\",\"size\":1}");
	manifest_fails(nomt, NULL, "manifest: layers[1].mediaType: empty");
	cleanup_free char *numt =
	        manifest_with_layer("{\"mediaType\":7,\"digest\":\"" D_L2 "\",\"size\":1}");
	manifest_fails(numt, NULL, "manifest: layers[1].mediaType: expected a string");
	cleanup_free char *notobj = manifest_with_layer("\"" D_L2 "\"");
	manifest_fails(notobj, NULL, "manifest: layers[1]: expected a descriptor object");
	cleanup_free char *annot = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER
	                                               "\",\"digest\":\"" D_L2 "\",\"size\":1,"
	                                               "\"annotations\":{\"a\":\"x\",\"n\":3}}");
	manifest_fails(annot, NULL,
	               "manifest: layers[1].annotations: 'n': expected a string, got an integer");
	cleanup_free char *dup = manifest_with_layer("{\"mediaType\":\"" SW_OCI_MT_LAYER
	                                             "\",\"digest\":\"" D_L2 "\",\"size\":1,"
	                                             "\"size\":2}");
	manifest_fails(dup, NULL, "duplicate object key");

	manifest_fails("{\"schemaVersion\":1,\"name\":\"x\",\"fsLayers\":[]}", NULL,
	               "manifest: schemaVersion: Docker schema 1 is not supported");
	manifest_fails("{\"schemaVersion\":3,\"config\":{},\"layers\":[]}", NULL,
	               "manifest: schemaVersion: expected 2, got 3");
	manifest_fails("{\"schemaVersion\":\"2\",\"config\":{},\"layers\":[]}", NULL,
	               "manifest: schemaVersion: expected the integer 2, got a string");
	manifest_fails("{\"config\":{},\"layers\":[]}", NULL, "manifest: schemaVersion: missing");
	manifest_fails("{\"schemaVersion\":2,\"layers\":[]}", NULL, "manifest: config: missing");
	manifest_fails("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" SW_OCI_MT_CONFIG
	               "\",\"digest\":\"" D_CFG "\",\"size\":1}}",
	               NULL, "manifest: layers: missing");
	manifest_fails("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" SW_OCI_MT_CONFIG
	               "\",\"digest\":\"" D_CFG "\",\"size\":1},\"layers\":{}}",
	               NULL, "manifest: layers: expected an array, got an object");
	manifest_fails("{\"schemaVersion\":2,\"config\":{\"digest\":\"" D_CFG "\",\"size\":1},"
	               "\"layers\":[]}",
	               NULL, "manifest: config.mediaType: missing");
	manifest_fails("{\"schemaVersion\":2,\"mediaType\":\"" SW_OCI_MT_MANIFEST "\","
	               "\"config\":{\"mediaType\":\"" SW_OCI_MT_CONFIG "\",\"digest\":\"" D_CFG
	               "\",\"size\":1},\"layers\":[],\"annotations\":[\"a\"]}",
	               NULL, "manifest: annotations: expected an object of strings, got an array");

	/* media types: the document's must be a manifest's and agree with the expected one */
	manifest_fails(oci_manifest, SW_DOCKER_MT_MANIFEST,
	               "manifest: mediaType: the document says '" SW_OCI_MT_MANIFEST
	               "' but '" SW_DOCKER_MT_MANIFEST "' was expected");
	manifest_fails(docker_manifest, SW_OCI_MT_MANIFEST, "mediaType: the document says");
	manifest_fails(docker_list, NULL,
	               "manifest: mediaType: '" SW_DOCKER_MT_LIST
	               "' is not an image manifest media type");
	manifest_fails("{\"schemaVersion\":2,\"mediaType\":\"text/plain\",\"config\":{},"
	               "\"layers\":[]}",
	               NULL, "'text/plain' is not an image manifest media type");
	manifest_fails("{\"schemaVersion\":2,\"manifests\":[],\"config\":{},\"layers\":[]}", NULL,
	               "manifest: manifests: present in an image manifest");

	/* JSON itself */
	manifest_fails("{\"schemaVersion\":2,\"config\":{\"mediaType\":", NULL,
	               "manifest: invalid JSON at line 1");
	manifest_fails("[1,2]", NULL, "manifest: expected a JSON object, got an array");
	manifest_fails("", NULL, "manifest: invalid JSON");

	/* the size cap */
	size_t big = SW_OCI_MAX_MANIFEST_BYTES + 1;
	char *buf = sw_xmalloc(big);
	memset(buf, ' ', big);
	sw_oci_manifest m;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_manifest_parse(&m, buf, big, NULL, &err), SW_ERR_INVALID);
	assert_error_contains(err, SW_ERR_INVALID, "over the limit of 4194304");
	sw_error_free(err);
	free(buf);
}

/* ---------------------------------------------------------------- indexes */

static void test_oci__index_docker_list_select(void **state)
{
	(void)state;
	sw_oci_index ix;
	sw_error *err = NULL;
	assert_int_equal(
	        sw_oci_index_parse(&ix, docker_list, strlen(docker_list), SW_DOCKER_MT_LIST, &err),
	        0);
	assert_string_equal(ix.media_type, SW_DOCKER_MT_LIST);
	assert_int_equal(ix.n_manifests, 5);
	assert_string_equal(ix.manifests[4].platform->os_version, "10.0.17763.5830");

	const sw_oci_descriptor *d = NULL;
	assert_int_equal(sw_oci_index_select(&d, &ix, NULL, &err), 0);
	assert_ptr_equal(d, &ix.manifests[0]);
	assert_string_equal(d->digest.s, D_M1);

	sw_oci_platform p;
	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm64/v8", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), 0);
	assert_string_equal(d->digest.s, D_M4);
	sw_oci_platform_clear(&p);

	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm/v7", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), 0);
	assert_string_equal(d->digest.s, D_M3);
	sw_oci_platform_clear(&p);

	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm/v6", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), 0);
	assert_string_equal(d->digest.s, D_M2);
	sw_oci_platform_clear(&p);

	assert_int_equal(sw_oci_platform_parse(&p, "windows/amd64", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), 0);
	assert_string_equal(d->digest.s, D_M5);
	sw_oci_platform_clear(&p);

	assert_int_equal(sw_oci_platform_parse(&p, "linux/s390x", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), SW_ERR_NOT_FOUND);
	assert_null(d);
	assert_error_contains(err, SW_ERR_NOT_FOUND,
	                      "no manifest for platform linux/s390x in the index (it has "
	                      "linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, "
	                      "windows/amd64)");
	sw_error_clear(&err);
	sw_oci_platform_clear(&p);
	sw_oci_index_clear(&ix);
}

static void test_oci__index_oci_attestation(void **state)
{
	(void)state;
	sw_oci_index ix;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_index_parse(&ix, oci_index, strlen(oci_index), NULL, &err), 0);
	assert_string_equal(ix.media_type, SW_OCI_MT_INDEX);
	assert_int_equal(ix.n_manifests, 4);
	assert_string_equal(
	        sw_oci_descriptor_annotation(&ix.manifests[0], "vnd.docker.reference.type"),
	        "attestation-manifest");
	assert_string_equal(
	        json_string_value(json_object_get(ix.annotations, SW_OCI_ANNOT_REF_NAME)), "1.0");

	/* the attestation comes first but is never picked */
	const sw_oci_descriptor *d = NULL;
	assert_int_equal(sw_oci_index_select(&d, &ix, NULL, &err), 0);
	assert_string_equal(d->digest.s, D_M1);

	/* arm64 without a variant in the index is arm64/v8 */
	sw_oci_platform p;
	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm64/v8", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), 0);
	assert_string_equal(d->digest.s, D_M2);
	sw_oci_platform_clear(&p);
	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm64/v9", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), SW_ERR_NOT_FOUND);
	sw_error_clear(&err);
	sw_oci_platform_clear(&p);

	/* an unknown/unknown platform is not listed in the error either */
	assert_int_equal(sw_oci_platform_parse(&p, "unknown/unknown", &err), 0);
	assert_int_equal(sw_oci_index_select(&d, &ix, &p, &err), SW_ERR_NOT_FOUND);
	assert_error_contains(err, SW_ERR_NOT_FOUND,
	                      "(it has linux/amd64, linux/arm64, linux/arm/v7)");
	sw_error_clear(&err);
	sw_oci_platform_clear(&p);

	/* an attestation marked only by its annotation is skipped too */
	sw_oci_platform_clear(ix.manifests[0].platform);
	ix.manifests[0].platform->os = sw_xstrdup("linux");
	ix.manifests[0].platform->architecture = sw_xstrdup("amd64");
	assert_int_equal(sw_oci_index_select(&d, &ix, NULL, &err), 0);
	assert_string_equal(d->digest.s, D_M1);

	/* round trip: parse -> serialize -> parse gives the same model and the same bytes */
	size_t l1 = 0, l2 = 0;
	cleanup_free char *s1 = sw_oci_index_serialize(&ix, &l1);
	sw_oci_index ix2;
	assert_int_equal(sw_oci_index_parse(&ix2, s1, l1, SW_OCI_MT_INDEX, &err), 0);
	assert_int_equal(ix2.n_manifests, ix.n_manifests);
	for (size_t i = 0; i < ix.n_manifests; i++)
		assert_desc_eq(&ix.manifests[i], &ix2.manifests[i]);
	assert_json_eq(ix.annotations, ix2.annotations);
	cleanup_free char *s2 = sw_oci_index_serialize(&ix2, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(s1, s2, l1);
	sw_oci_index_clear(&ix2);
	sw_oci_index_clear(&ix);
}

static void test_oci__index_select_edge_cases(void **state)
{
	(void)state;
	sw_error *err = NULL;
	sw_oci_index ix;
	const sw_oci_descriptor *d = NULL;
	/* entries without a platform fit any request (an index of one image, as in a store) */
	static const char noplat[] =
	        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" SW_OCI_MT_MANIFEST "\","
	        "\"digest\":\"" D_M1 "\",\"size\":10}]}";
	assert_int_equal(sw_oci_index_parse(&ix, noplat, strlen(noplat), NULL, &err), 0);
	assert_string_equal(ix.media_type, SW_OCI_MT_INDEX);
	assert_int_equal(sw_oci_index_select(&d, &ix, NULL, &err), 0);
	assert_string_equal(d->digest.s, D_M1);
	sw_oci_index_clear(&ix);

	/* only manifests are candidates: a nested index or an artifact is not */
	static const char others[] =
	        "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" SW_OCI_MT_INDEX "\","
	        "\"digest\":\"" D_M1 "\",\"size\":10,\"platform\":{\"os\":\"linux\","
	        "\"architecture\":\"amd64\"}},{\"mediaType\":\"application/vnd.example+json\","
	        "\"digest\":\"" D_M2 "\",\"size\":10,\"artifactType\":\"application/x-sbom\","
	        "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";
	assert_int_equal(sw_oci_index_parse(&ix, others, strlen(others), NULL, &err), 0);
	assert_string_equal(ix.manifests[1].artifact_type, "application/x-sbom");
	assert_int_equal(sw_oci_index_select(&d, &ix, NULL, &err), SW_ERR_NOT_FOUND);
	assert_error_contains(err, SW_ERR_NOT_FOUND, "(it has no platform manifests)");
	sw_error_clear(&err);
	sw_oci_index_clear(&ix);

	/* an empty index serializes with an empty manifests array */
	sw_oci_index empty = { 0 };
	cleanup_free char *s = sw_oci_index_serialize(&empty, NULL);
	assert_string_equal(s, "{\"manifests\":[],\"mediaType\":\"" SW_OCI_MT_INDEX "\","
	                       "\"schemaVersion\":2}");
}

static void test_oci__index_errors(void **state)
{
	(void)state;
	index_fails(oci_index, SW_DOCKER_MT_LIST,
	            "index: mediaType: the document says '" SW_OCI_MT_INDEX
	            "' but '" SW_DOCKER_MT_LIST "' was expected");
	index_fails(oci_manifest, NULL,
	            "index: mediaType: '" SW_OCI_MT_MANIFEST "' is not an image index media type");
	index_fails("{\"schemaVersion\":2}", NULL, "index: manifests: missing");
	index_fails("{\"schemaVersion\":2,\"manifests\":[],\"layers\":[]}", NULL,
	            "index: layers: present in an image index");
	index_fails("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" SW_OCI_MT_MANIFEST
	            "\",\"digest\":\"" D_M1 "\",\"size\":1,\"platform\":{\"os\":\"linux\"}}]}",
	            NULL, "index: manifests[0].platform.architecture: missing");
	index_fails("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" SW_OCI_MT_MANIFEST
	            "\",\"digest\":\"" D_M1 "\",\"size\":1,\"platform\":{\"os\":1,"
	            "\"architecture\":\"amd64\"}}]}",
	            NULL, "index: manifests[0].platform.os: expected a string, got an integer");
	index_fails("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" SW_OCI_MT_MANIFEST
	            "\",\"digest\":\"" D_M1 "\",\"size\":1},{\"mediaType\":\"" SW_OCI_MT_MANIFEST
	            "\",\"digest\":\"sha256:xyz\",\"size\":1}]}",
	            NULL, "index: manifests[1].digest: ");
	index_fails("{\"schemaVersion\":2,\"manifests\":[],\"manifests\":[]}", NULL,
	            "duplicate object key");
	index_fails("{\"schemaVersion\":2,\"manifests\":[", NULL, "index: invalid JSON");
}

/* ---------------------------------------------------------------- configs */

static void test_oci__config_parse_all_fields(void **state)
{
	(void)state;
	sw_oci_config c;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_config_parse(&c, docker_config, strlen(docker_config), &err), 0);
	assert_null(err);
	assert_string_equal(c.architecture, "arm");
	assert_string_equal(c.variant, "v7");
	assert_string_equal(c.os, "linux");
	assert_string_equal(c.author, "Jane <jane@example.com>");
	assert_string_equal(c.created, "2024-05-01T10:00:00.123456789Z");
	assert_string_equal(c.user, "app:app");
	assert_int_equal(sw_strv_len(c.env), 2);
	assert_string_equal(c.env[0], "PATH=/usr/local/bin:/usr/bin:/bin");
	assert_string_equal(c.env[1], "LANG=C.UTF-8");
	assert_int_equal(sw_strv_len(c.entrypoint), 1);
	assert_string_equal(c.entrypoint[0], "/docker-entrypoint.sh");
	assert_int_equal(sw_strv_len(c.cmd), 3);
	assert_string_equal(c.cmd[2], "daemon off;");
	assert_string_equal(c.working_dir, "/srv");
	assert_int_equal(sw_strv_len(c.exposed_ports), 2);
	assert_string_equal(c.exposed_ports[0], "443/tcp");
	assert_string_equal(c.exposed_ports[1], "80/tcp");
	assert_int_equal(sw_strv_len(c.volumes), 2);
	assert_string_equal(c.volumes[0], "/data");
	assert_string_equal(c.volumes[1], "/var/cache/nginx");
	assert_string_equal(json_string_value(json_object_get(c.labels, "maintainer")), "NGINX");
	assert_string_equal(c.stop_signal, "SIGQUIT");
	assert_int_equal(c.n_diff_ids, 2);
	assert_string_equal(c.diff_ids[0].s, D_L1);
	assert_string_equal(c.diff_ids[1].s, D_L2);
	assert_int_equal(c.n_history, 3);
	assert_false(c.history[0].empty_layer);
	assert_true(c.history[1].empty_layer);
	assert_string_equal(c.history[1].created_by, "/bin/sh -c #(nop)  CMD [\"sh\"]");
	assert_null(c.history[1].comment);
	assert_string_equal(c.history[2].comment, "buildkit.dockerfile.v0");
	assert_true(json_is_object(c.raw));
	sw_oci_config_clear(&c);
	assert_null(c.raw);
}

static void test_oci__config_roundtrip(void **state)
{
	(void)state;
	sw_oci_config a, b;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_config_parse(&a, docker_config, strlen(docker_config), &err), 0);
	size_t l1 = 0, l2 = 0, l3 = 0;
	cleanup_free char *s1 = sw_oci_config_serialize(&a, &l1);
	cleanup_free char *s2 = sw_oci_config_serialize(&a, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(s1, s2, l1);
	assert_int_equal(l1, strlen(s1));

	assert_int_equal(sw_oci_config_parse(&b, s1, l1, &err), 0);
	assert_config_eq(&a, &b);
	cleanup_free char *s3 = sw_oci_config_serialize(&b, &l3);
	assert_int_equal(l1, l3);
	assert_memory_equal(s1, s3, l1);

	/* what slipway does not model survives, canonical (sorted keys, compact) */
	assert_non_null(strstr(s1, "\"docker_version\":\"24.0.7\""));
	assert_non_null(strstr(s1, "\"container_config\":{\"Cmd\":"));
	assert_non_null(strstr(s1, "\"Healthcheck\":{\"Interval\":30000000000,\"Test\":"));
	assert_non_null(strstr(s1, "\"author\":\"someone\",\"created\":\"2024-04-01T00:00:01Z\""));
	assert_non_null(strstr(s1, "\"ExposedPorts\":{\"443/tcp\":{},\"80/tcp\":{}}"));
	assert_non_null(strstr(s1, "\"rootfs\":{\"diff_ids\":[\"" D_L1 "\",\"" D_L2 "\"],"
	                           "\"type\":\"layers\"}"));
	static const char prefix[] = "{\"architecture\":\"arm\",\"author\":";
	assert_int_equal(strncmp(s1, prefix, strlen(prefix)), 0);
	sw_oci_config_clear(&b);

	/* typed changes are stored back; emptied fields disappear */
	free(a.user);
	a.user = NULL;
	sw_strv_free(a.entrypoint);
	a.entrypoint = NULL;
	sw_strv_push(&a.env, "NEW=1");
	json_decref(a.labels);
	a.labels = NULL;
	a.history = sw_xrealloc(a.history, 4 * sizeof(*a.history));
	a.history[3] = (sw_oci_history){ sw_xstrdup("2024-06-01T00:00:00Z"),
		                         sw_xstrdup("ENV NEW=1"), NULL, true };
	a.n_history = 4;
	cleanup_free char *s4 = sw_oci_config_serialize(&a, NULL);
	assert_null(strstr(s4, "\"User\""));
	assert_null(strstr(s4, "\"Entrypoint\""));
	assert_null(strstr(s4, "\"Labels\""));
	assert_non_null(strstr(s4, "\"LANG=C.UTF-8\",\"NEW=1\"]"));
	assert_non_null(strstr(s4, "{\"created\":\"2024-06-01T00:00:00Z\",\"created_by\":\"ENV "
	                           "NEW=1\",\"empty_layer\":true}]"));
	/* the unmodelled "author" of history[1] is still there */
	assert_non_null(strstr(s4, "\"author\":\"someone\""));
	assert_int_equal(sw_oci_config_parse(&b, s4, strlen(s4), &err), 0);
	assert_config_eq(&a, &b);
	sw_oci_config_clear(&b);
	sw_oci_config_clear(&a);
}

static void test_oci__config_from_scratch(void **state)
{
	(void)state;
	sw_oci_config c = { 0 };
	c.architecture = sw_xstrdup("amd64");
	c.os = sw_xstrdup("linux");
	sw_strv_push(&c.env, "PATH=/bin");
	sw_strv_push(&c.cmd, "/bin/sh");
	c.diff_ids = sw_xcalloc(1, sizeof(*c.diff_ids));
	assert_int_equal(sw_oci_digest_parse(&c.diff_ids[0], D_L1, NULL), 0);
	c.n_diff_ids = 1;
	size_t len = 0;
	cleanup_free char *s = sw_oci_config_serialize(&c, &len);
	assert_string_equal(s, "{\"architecture\":\"amd64\",\"config\":{\"Cmd\":[\"/bin/sh\"],"
	                       "\"Env\":[\"PATH=/bin\"]},\"os\":\"linux\",\"rootfs\":{\"diff_ids\":"
	                       "[\"" D_L1 "\"],\"type\":\"layers\"}}");
	assert_int_equal(len, strlen(s));
	sw_oci_config back;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_config_parse(&back, s, len, &err), 0);
	assert_config_eq(&c, &back);
	sw_oci_config_clear(&back);
	sw_oci_config_clear(&c);

	/* with nothing in the "config" section there is none, and no layers is an empty list */
	sw_oci_config e = { 0 };
	e.architecture = sw_xstrdup("arm64");
	e.os = sw_xstrdup("linux");
	cleanup_free char *s2 = sw_oci_config_serialize(&e, NULL);
	assert_string_equal(s2, "{\"architecture\":\"arm64\",\"os\":\"linux\",\"rootfs\":"
	                        "{\"diff_ids\":[],\"type\":\"layers\"}}");
	sw_oci_config_clear(&e);
}

static void test_oci__config_quirks(void **state)
{
	(void)state;
	/* Docker writes nulls for unset lists and accepts a lone string for Cmd */
	static const char doc[] =
	        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":null,"
	        "\"Entrypoint\":null,\"Cmd\":\"/bin/sh\",\"Labels\":null,\"ExposedPorts\":{},"
	        "\"Volumes\":null,\"Entrypoint\":null},"
	        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	sw_oci_config c;
	sw_error *err = NULL;
	/* (that document repeats "Entrypoint", which is refused) */
	assert_int_equal(sw_oci_config_parse(&c, doc, strlen(doc), &err), SW_ERR_INVALID);
	assert_error_contains(err, SW_ERR_INVALID, "config: invalid JSON");
	assert_non_null(strstr(sw_error_msg(err), "duplicate object key"));
	sw_error_clear(&err);

	static const char doc2[] =
	        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":null,"
	        "\"Entrypoint\":[],\"Cmd\":\"/bin/sh\",\"Labels\":null,\"ExposedPorts\":{},"
	        "\"Volumes\":null},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},"
	        "\"history\":[]}";
	assert_int_equal(sw_oci_config_parse(&c, doc2, strlen(doc2), &err), 0);
	assert_null(c.env);
	assert_non_null(c.entrypoint);
	assert_null(c.entrypoint[0]);
	assert_int_equal(sw_strv_len(c.cmd), 1);
	assert_string_equal(c.cmd[0], "/bin/sh");
	assert_null(c.exposed_ports);
	assert_null(c.labels);
	assert_int_equal(c.n_diff_ids, 0);
	assert_int_equal(c.n_history, 0);
	cleanup_free char *s = sw_oci_config_serialize(&c, NULL);
	/* an explicitly empty Entrypoint is kept: it resets the base image's */
	assert_string_equal(s, "{\"architecture\":\"amd64\",\"config\":{\"Cmd\":[\"/bin/sh\"],"
	                       "\"Entrypoint\":[]},\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[],"
	                       "\"type\":\"layers\"}}");
	sw_oci_config_clear(&c);
}

static void test_oci__config_errors(void **state)
{
	(void)state;
	config_fails("{\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
	             "config: architecture: missing");
	config_fails("{\"architecture\":\"\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	             "\"diff_ids\":[]}}",
	             "config: architecture: empty");
	config_fails("{\"architecture\":\"amd64\",\"rootfs\":{\"type\":\"layers\","
	             "\"diff_ids\":[]}}",
	             "config: os: missing");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\"}", "config: rootfs: missing");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"tar\","
	             "\"diff_ids\":[]}}",
	             "config: rootfs.type: expected \"layers\", got \"tar\"");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	             "\"diff_ids\":[\"" D_L1 "\",\"sha256:nope\"]}}",
	             "config: rootfs.diff_ids[1]: digest 'sha256:nope'");
	config_fails(
	        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\"}}",
	        "config: rootfs.diff_ids: missing");
	config_fails(
	        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"A=1\",2]},"
	        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
	        "config: config.Env[1]: expected a string, got an integer");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Labels\":"
	             "{\"a\":true}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
	             "config: config.Labels: 'a': expected a string, got a boolean");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"ExposedPorts\":"
	             "[\"80/tcp\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
	             "config: config.ExposedPorts: expected an object, got an array");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":[],"
	             "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
	             "config: config: expected an object, got an array");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	             "\"diff_ids\":[]},\"history\":[{},{\"empty_layer\":\"yes\"}]}",
	             "config: history[1].empty_layer: expected a boolean, got a string");
	config_fails("{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
	             "\"diff_ids\":[]},\"history\":[1]}",
	             "config: history[0]: expected an object, got an integer");
	config_fails("{\"architecture\":\"amd64\",\"architecture\":\"arm64\"}",
	             "duplicate object key");
	config_fails("{\"architecture\":", "config: invalid JSON");
	config_fails("\"x\"", "config: invalid JSON");
}

/* ---------------------------------------------------------------- media types and sniffing */

static void test_oci__media_types(void **state)
{
	(void)state;
	assert_true(sw_oci_media_type_is_manifest(SW_OCI_MT_MANIFEST));
	assert_true(sw_oci_media_type_is_manifest(SW_DOCKER_MT_MANIFEST));
	assert_false(sw_oci_media_type_is_manifest(SW_OCI_MT_INDEX));
	assert_false(sw_oci_media_type_is_manifest(NULL));
	assert_true(sw_oci_media_type_is_index(SW_OCI_MT_INDEX));
	assert_true(sw_oci_media_type_is_index(SW_DOCKER_MT_LIST));
	assert_false(sw_oci_media_type_is_index(SW_DOCKER_MT_MANIFEST));
	assert_true(sw_oci_media_type_is_layer(SW_OCI_MT_LAYER));
	assert_true(sw_oci_media_type_is_layer(SW_OCI_MT_LAYER_GZIP));
	assert_true(sw_oci_media_type_is_layer(SW_OCI_MT_LAYER_ZSTD));
	assert_true(sw_oci_media_type_is_layer(SW_DOCKER_MT_LAYER_GZIP));
	assert_true(sw_oci_media_type_is_layer(SW_DOCKER_MT_LAYER));
	assert_false(sw_oci_media_type_is_layer(SW_OCI_MT_CONFIG));
	assert_false(sw_oci_media_type_is_layer(SW_OCI_MT_EMPTY));

	assert_string_equal(sw_oci_media_type_sniff(oci_manifest, strlen(oci_manifest)),
	                    SW_OCI_MT_MANIFEST);
	assert_string_equal(sw_oci_media_type_sniff(docker_manifest, strlen(docker_manifest)),
	                    SW_DOCKER_MT_MANIFEST);
	assert_string_equal(sw_oci_media_type_sniff(docker_list, strlen(docker_list)),
	                    SW_DOCKER_MT_LIST);
	assert_string_equal(sw_oci_media_type_sniff(oci_index, strlen(oci_index)), SW_OCI_MT_INDEX);
	static const char shape_index[] = "{\"schemaVersion\":2,\"manifests\":[]}";
	static const char shape_manifest[] = "{\"schemaVersion\":2,\"config\":{},\"layers\":[]}";
	static const char unknown_mt[] = "{\"mediaType\":\"text/plain\",\"manifests\":[]}";
	assert_string_equal(sw_oci_media_type_sniff(shape_index, strlen(shape_index)),
	                    SW_OCI_MT_INDEX);
	assert_string_equal(sw_oci_media_type_sniff(shape_manifest, strlen(shape_manifest)),
	                    SW_OCI_MT_MANIFEST);
	assert_null(sw_oci_media_type_sniff(unknown_mt, strlen(unknown_mt)));
	assert_null(sw_oci_media_type_sniff("{\"config\":{}}", 13));
	assert_null(sw_oci_media_type_sniff("not json", 8));
	assert_null(sw_oci_media_type_sniff(NULL, 0));
}

/* ---------------------------------------------------------------- platforms */

static void test_oci__platform_parse(void **state)
{
	(void)state;
	sw_oci_platform p;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_platform_parse(&p, "linux/amd64", &err), 0);
	assert_string_equal(p.os, "linux");
	assert_string_equal(p.architecture, "amd64");
	assert_null(p.variant);
	cleanup_free char *s1 = sw_oci_platform_str(&p);
	assert_string_equal(s1, "linux/amd64");
	sw_oci_platform_clear(&p);
	assert_null(p.os);

	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm64/v8", &err), 0);
	assert_string_equal(p.variant, "v8");
	cleanup_free char *s2 = sw_oci_platform_str(&p);
	assert_string_equal(s2, "linux/arm64/v8");
	sw_oci_platform_clear(&p);

	/* uname and Debian names are mapped to the names images use */
	assert_int_equal(sw_oci_platform_parse(&p, "linux/x86_64", &err), 0);
	assert_string_equal(p.architecture, "amd64");
	sw_oci_platform_clear(&p);
	assert_int_equal(sw_oci_platform_parse(&p, "linux/aarch64", &err), 0);
	assert_string_equal(p.architecture, "arm64");
	assert_null(p.variant);
	sw_oci_platform_clear(&p);
	assert_int_equal(sw_oci_platform_parse(&p, "linux/armhf", &err), 0);
	cleanup_free char *s3 = sw_oci_platform_str(&p);
	assert_string_equal(s3, "linux/arm/v7");
	sw_oci_platform_clear(&p);
	assert_int_equal(sw_oci_platform_parse(&p, "linux/arm/7", &err), 0);
	assert_string_equal(p.variant, "v7");
	sw_oci_platform_clear(&p);

	static const char *const bad[] = {
		"", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/am d64", "linux//v7"
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		assert_int_equal(sw_oci_platform_parse(&p, bad[i], &err), SW_ERR_INVALID);
		assert_non_null(err);
		assert_non_null(strstr(sw_error_msg(err), "platform"));
		sw_error_clear(&err);
		assert_null(p.os);
	}
	cleanup_free char *s4 = sw_oci_platform_str(NULL);
	assert_string_equal(s4, "unknown");
}

static void test_oci__platform_default_and_match(void **state)
{
	(void)state;
	sw_oci_platform d;
	sw_oci_platform_default(&d);
	assert_string_equal(d.os, "linux");
	assert_non_null(d.architecture);
#if defined(__x86_64__)
	assert_string_equal(d.architecture, "amd64");
	assert_null(d.variant);
#elif defined(__aarch64__)
	assert_string_equal(d.architecture, "arm64");
	assert_string_equal(d.variant, "v8");
#endif
	assert_true(sw_oci_platform_match(&d, &d));
	sw_oci_platform_clear(&d);

	sw_oci_platform arm64 = { (char *)"linux", (char *)"arm64", NULL, NULL };
	sw_oci_platform arm64v8 = { (char *)"linux", (char *)"arm64", (char *)"v8", NULL };
	sw_oci_platform arm64v9 = { (char *)"linux", (char *)"arm64", (char *)"v9", NULL };
	sw_oci_platform armv7 = { (char *)"linux", (char *)"arm", (char *)"v7", NULL };
	sw_oci_platform armv6 = { (char *)"linux", (char *)"arm", (char *)"v6", NULL };
	sw_oci_platform arm = { (char *)"linux", (char *)"arm", NULL, NULL };
	sw_oci_platform amd64 = { (char *)"linux", (char *)"amd64", NULL, NULL };
	sw_oci_platform win = { (char *)"windows", (char *)"amd64", NULL, NULL };
	assert_true(sw_oci_platform_match(&arm64v8, &arm64));
	assert_true(sw_oci_platform_match(&arm64, &arm64v8));
	assert_true(sw_oci_platform_match(&arm64, &arm64v9));
	assert_false(sw_oci_platform_match(&arm64v8, &arm64v9));
	assert_true(sw_oci_platform_match(&armv7, &armv7));
	assert_false(sw_oci_platform_match(&armv7, &armv6));
	assert_false(sw_oci_platform_match(&armv7, &arm));
	assert_true(sw_oci_platform_match(&arm, &armv6));
	assert_false(sw_oci_platform_match(&amd64, &win));
	assert_false(sw_oci_platform_match(&amd64, &arm64));
	assert_true(sw_oci_platform_match(NULL, &amd64));
	assert_false(sw_oci_platform_match(&amd64, NULL));
}

/* ---------------------------------------------------------------- descriptors */

static void test_oci__descriptor_copy_and_annotations(void **state)
{
	(void)state;
	sw_oci_descriptor a = { 0 };
	a.media_type = sw_xstrdup(SW_OCI_MT_MANIFEST);
	assert_int_equal(sw_oci_digest_parse(&a.digest, D_M1, NULL), 0);
	a.size = 42;
	a.platform = sw_xcalloc(1, sizeof(*a.platform));
	assert_int_equal(sw_oci_platform_parse(a.platform, "linux/arm/v7", NULL), 0);
	a.artifact_type = sw_xstrdup("application/x-test");
	assert_null(sw_oci_descriptor_annotation(&a, SW_OCI_ANNOT_REF_NAME));
	sw_oci_descriptor_set_annotation(&a, SW_OCI_ANNOT_REF_NAME, "app:1");
	assert_string_equal(sw_oci_descriptor_annotation(&a, SW_OCI_ANNOT_REF_NAME), "app:1");
	sw_oci_descriptor_set_annotation(&a, SW_OCI_ANNOT_REF_NAME, "app:2");
	assert_string_equal(sw_oci_descriptor_annotation(&a, SW_OCI_ANNOT_REF_NAME), "app:2");

	sw_oci_descriptor b;
	sw_oci_descriptor_copy(&b, &a);
	assert_desc_eq(&a, &b);
	assert_ptr_not_equal(a.platform, b.platform);
	assert_ptr_not_equal(a.annotations, b.annotations);
	/* the copy is independent */
	sw_oci_descriptor_set_annotation(&b, SW_OCI_ANNOT_REF_NAME, "other");
	assert_string_equal(sw_oci_descriptor_annotation(&a, SW_OCI_ANNOT_REF_NAME), "app:2");
	sw_oci_descriptor_clear(&a);
	assert_null(a.media_type);
	assert_null(a.platform);
	assert_string_equal(sw_oci_descriptor_annotation(&b, SW_OCI_ANNOT_REF_NAME), "other");
	assert_string_equal(b.platform->variant, "v7");

	/* removing the last annotation leaves none */
	sw_oci_descriptor_set_annotation(&b, SW_OCI_ANNOT_REF_NAME, NULL);
	assert_null(b.annotations);
	sw_oci_descriptor_set_annotation(&b, "absent", NULL);
	assert_null(b.annotations);
	sw_oci_descriptor_clear(&b);
	sw_oci_descriptor_clear(&b);
}

/* ---------------------------------------------------------------- references */

static void ref_ok(const char *s, const char *registry, const char *repository, const char *tag,
                   const char *digest, const char *str)
{
	sw_oci_ref r;
	sw_error *err = NULL;
	if (sw_oci_ref_parse(&r, s, &err) < 0)
		fail_msg("'%s': %s", s, sw_error_msg(err));
	assert_string_equal(r.registry, registry);
	assert_string_equal(r.repository, repository);
	assert_str_eq_null(r.tag, tag);
	if (digest)
		assert_string_equal(r.digest.s, digest);
	else
		assert_false(sw_oci_digest_is_set(&r.digest));
	cleanup_free char *back = sw_oci_ref_str(&r);
	assert_string_equal(back, str);
	sw_oci_ref_clear(&r);
	assert_null(r.registry);
}

static void ref_bad(const char *s, const char *needle)
{
	sw_oci_ref r;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_ref_parse(&r, s, &err), SW_ERR_INVALID);
	assert_error_contains(err, SW_ERR_INVALID, needle);
	assert_null(r.registry);
	assert_null(r.repository);
	sw_error_free(err);
}

static void test_oci__ref_parse(void **state)
{
	(void)state;
	ref_ok("busybox", "registry-1.docker.io", "library/busybox", "latest", NULL,
	       "registry-1.docker.io/library/busybox:latest");
	ref_ok("busybox:1.36", "registry-1.docker.io", "library/busybox", "1.36", NULL,
	       "registry-1.docker.io/library/busybox:1.36");
	ref_ok("docker.io/library/debian:12", "registry-1.docker.io", "library/debian", "12", NULL,
	       "registry-1.docker.io/library/debian:12");
	ref_ok("docker.io/alpine", "registry-1.docker.io", "library/alpine", "latest", NULL,
	       "registry-1.docker.io/library/alpine:latest");
	ref_ok("index.docker.io/team/app", "registry-1.docker.io", "team/app", "latest", NULL,
	       "registry-1.docker.io/team/app:latest");
	ref_ok("team/app:v2", "registry-1.docker.io", "team/app", "v2", NULL,
	       "registry-1.docker.io/team/app:v2");
	ref_ok("127.0.0.1:5000/a/b:1", "127.0.0.1:5000", "a/b", "1", NULL, "127.0.0.1:5000/a/b:1");
	ref_ok("localhost/x@" D_M1, "localhost", "x", NULL, D_M1, "localhost/x@" D_M1);
	ref_ok("localhost:5000/team/app:1.0@" D_M2, "localhost:5000", "team/app", "1.0", D_M2,
	       "localhost:5000/team/app:1.0@" D_M2);
	ref_ok("registry.example.com/a.b/c_d/e__f/g-h/i---j:_x.Y-z", "registry.example.com",
	       "a.b/c_d/e__f/g-h/i---j", "_x.Y-z", NULL,
	       "registry.example.com/a.b/c_d/e__f/g-h/i---j:_x.Y-z");
	ref_ok("[::1]:5000/app", "[::1]:5000", "app", "latest", NULL, "[::1]:5000/app:latest");
	ref_ok("My-Registry.example.com/app", "My-Registry.example.com", "app", "latest", NULL,
	       "My-Registry.example.com/app:latest");
	/* "localhost" without a path is an image name on Docker Hub, as docker reads it */
	ref_ok("localhost:5000", "registry-1.docker.io", "library/localhost", "5000", NULL,
	       "registry-1.docker.io/library/localhost:5000");

	ref_bad("", "empty image reference");
	ref_bad("Upper/Case", "repository name 'Upper/Case' must be lowercase");
	ref_bad("a/b:bad tag", "tag 'bad tag' is invalid");
	ref_bad("a/b:-x", "tag '-x' is invalid");
	ref_bad("a/b:", "tag '' is invalid");
	char longtag[200];
	memset(longtag, 'a', sizeof(longtag));
	memcpy(longtag, "a:", 2);
	longtag[2 + 129] = '\0';
	ref_bad(longtag, "is invalid");
	ref_bad("a/b@sha256:1234", "after '@': digest 'sha256:1234'");
	ref_bad("a/b@md5:1234", "after '@':");
	ref_bad("@" D_M1, "missing repository name");
	ref_bad("127.0.0.1:5000/", "missing repository name");
	ref_bad("a//b", "component '' is invalid");
	ref_bad("a/b_", "component 'b_' is invalid");
	ref_bad("a/-b", "component '-b' is invalid");
	ref_bad("a/b___c", "component 'b___c' is invalid");
	ref_bad("a/b..c", "component 'b..c' is invalid");
	ref_bad("a b/c", "component 'a b' is invalid");
	ref_bad("host:99999/a", "port '99999'");
	ref_bad("host:x/a", "port 'x'");
	ref_bad("-bad.example.com/a", "registry host '-bad.example.com' is invalid");
	ref_bad("bad..example.com/a", "registry host 'bad..example.com' is invalid");
	ref_bad("[zz]:5000/a", "registry host '[zz]:5000' is invalid");
	char longname[400];
	memset(longname, 'a', sizeof(longname));
	memcpy(longname, "h.io/", 5);
	longname[300] = '\0';
	ref_bad(longname, "longer than 255");
}

int test_oci_model_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oci__manifest_parse_oci),
		cmocka_unit_test(test_oci__manifest_parse_docker),
		cmocka_unit_test(test_oci__manifest_without_media_type),
		cmocka_unit_test(test_oci__manifest_roundtrip),
		cmocka_unit_test(test_oci__manifest_serialize_canonical),
		cmocka_unit_test(test_oci__manifest_errors),
		cmocka_unit_test(test_oci__index_docker_list_select),
		cmocka_unit_test(test_oci__index_oci_attestation),
		cmocka_unit_test(test_oci__index_select_edge_cases),
		cmocka_unit_test(test_oci__index_errors),
		cmocka_unit_test(test_oci__config_parse_all_fields),
		cmocka_unit_test(test_oci__config_roundtrip),
		cmocka_unit_test(test_oci__config_from_scratch),
		cmocka_unit_test(test_oci__config_quirks),
		cmocka_unit_test(test_oci__config_errors),
		cmocka_unit_test(test_oci__media_types),
		cmocka_unit_test(test_oci__platform_parse),
		cmocka_unit_test(test_oci__platform_default_and_match),
		cmocka_unit_test(test_oci__descriptor_copy_and_annotations),
		cmocka_unit_test(test_oci__ref_parse),
	};
	return cmocka_run_group_tests_name("oci_model", tests, NULL, NULL);
}
