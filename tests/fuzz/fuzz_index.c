/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the image index / manifest list parser and platform selection: whatever
 * parses must round-trip through canonical OCI JSON to the same bytes, and selection must only
 * ever return a manifest entry of the index. Any broken promise aborts.
 */
#include "oci/oci.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_select(const sw_oci_index *ix, const char *platform)
{
	sw_oci_platform p;
	sw_oci_platform *want = NULL;
	if (platform) {
		if (sw_oci_platform_parse(&p, platform, NULL) < 0)
			abort();
		want = &p;
	}
	const sw_oci_descriptor *d = NULL;
	sw_error *err = NULL;
	int r = sw_oci_index_select(&d, ix, want, &err);
	if (r == 0) {
		if (err || !d || d < ix->manifests || d >= ix->manifests + ix->n_manifests ||
		    !sw_oci_media_type_is_manifest(d->media_type))
			abort();
	} else {
		if (r != SW_ERR_NOT_FOUND || d || !err || !strstr(err->msg, "no manifest for"))
			abort();
		sw_error_free(err);
	}
	if (want)
		sw_oci_platform_clear(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	sw_oci_index ix;
	sw_error *err = NULL;
	if (sw_oci_index_parse(&ix, buf, size, NULL, &err) < 0) {
		if (!err || !err->msg || !*err->msg || err->code != SW_ERR_INVALID || ix.manifests)
			abort();
		sw_error_free(err);
		return 0;
	}
	if (err || !sw_oci_media_type_is_index(ix.media_type))
		abort();
	check_select(&ix, NULL);
	check_select(&ix, "linux/arm64/v8");
	check_select(&ix, "linux/arm/v7");
	check_select(&ix, "windows/amd64");

	size_t l1 = 0, l2 = 0;
	char *s1 = sw_oci_index_serialize(&ix, &l1);
	if (l1 != strlen(s1))
		abort();
	const char *mt = sw_oci_media_type_sniff(s1, l1);
	if (!mt || strcmp(mt, SW_OCI_MT_INDEX) != 0)
		abort();
	sw_oci_index ix2;
	if (sw_oci_index_parse(&ix2, s1, l1, SW_OCI_MT_INDEX, &err) < 0)
		abort();
	if (ix2.n_manifests != ix.n_manifests)
		abort();
	for (size_t i = 0; i < ix.n_manifests; i++) {
		const sw_oci_descriptor *a = &ix.manifests[i], *b = &ix2.manifests[i];
		if (!sw_oci_digest_eq(&a->digest, &b->digest) || a->size != b->size ||
		    !a->platform != !b->platform)
			abort();
		if (a->platform && (sw_oci_platform_match(a->platform, b->platform) !=
		                    sw_oci_platform_match(b->platform, a->platform)))
			abort();
	}
	char *s2 = sw_oci_index_serialize(&ix2, &l2);
	if (l1 != l2 || memcmp(s1, s2, l1) != 0)
		abort();

	free(s1);
	free(s2);
	sw_oci_index_clear(&ix2);
	sw_oci_index_clear(&ix);
	return 0;
}
