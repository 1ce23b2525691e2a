/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the image manifest parser: whatever parses must serialize to canonical OCI
 * JSON that parses again to the same model and serializes to the very same bytes; whatever
 * fails must say why. Any broken promise aborts.
 */
#include "oci/oci.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_same_descriptor(const sw_oci_descriptor *a, const sw_oci_descriptor *b)
{
	if (strcmp(a->media_type, b->media_type) != 0 ||
	    !sw_oci_digest_eq(&a->digest, &b->digest) || a->size != b->size ||
	    !a->annotations != !b->annotations ||
	    (a->annotations && !json_equal(a->annotations, b->annotations)) ||
	    !a->platform != !b->platform)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	const char *sniffed = sw_oci_media_type_sniff(buf, size);
	if (sniffed && !sw_oci_media_type_is_manifest(sniffed) &&
	    !sw_oci_media_type_is_index(sniffed))
		abort();

	sw_oci_manifest m;
	sw_error *err = NULL;
	if (sw_oci_manifest_parse(&m, buf, size, NULL, &err) < 0) {
		if (!err || !err->msg || !*err->msg || err->code != SW_ERR_INVALID ||
		    m.media_type || m.layers)
			abort();
		sw_error_free(err);
		return 0;
	}
	if (err || !sw_oci_media_type_is_manifest(m.media_type))
		abort();

	size_t l1 = 0, l2 = 0;
	char *s1 = sw_oci_manifest_serialize(&m, &l1);
	if (l1 != strlen(s1))
		abort();
	const char *mt = sw_oci_media_type_sniff(s1, l1);
	if (!mt || strcmp(mt, SW_OCI_MT_MANIFEST) != 0)
		abort();
	sw_oci_manifest m2;
	if (sw_oci_manifest_parse(&m2, s1, l1, SW_OCI_MT_MANIFEST, &err) < 0)
		abort();
	check_same_descriptor(&m.config, &m2.config);
	if (m.n_layers != m2.n_layers)
		abort();
	for (size_t i = 0; i < m.n_layers; i++)
		check_same_descriptor(&m.layers[i], &m2.layers[i]);
	char *s2 = sw_oci_manifest_serialize(&m2, &l2);
	if (l1 != l2 || memcmp(s1, s2, l1) != 0)
		abort();

	free(s1);
	free(s2);
	sw_oci_manifest_clear(&m2);
	sw_oci_manifest_clear(&m);
	return 0;
}
