/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the image config parser: whatever parses must serialize (twice to the same
 * bytes), parse again with the same typed view, and serialize to the very same bytes again;
 * whatever fails must say why. Any broken promise aborts.
 */
#include "oci/oci.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	sw_oci_config c;
	sw_error *err = NULL;
	if (sw_oci_config_parse(&c, buf, size, &err) < 0) {
		if (!err || !err->msg || !*err->msg || err->code != SW_ERR_INVALID || c.raw)
			abort();
		sw_error_free(err);
		return 0;
	}
	if (err || !c.architecture || !c.os || !json_is_object(c.raw))
		abort();

	size_t l1 = 0, l1b = 0, l2 = 0;
	char *s1 = sw_oci_config_serialize(&c, &l1);
	char *s1b = sw_oci_config_serialize(&c, &l1b);
	if (l1 != strlen(s1) || l1 != l1b || memcmp(s1, s1b, l1) != 0)
		abort();
	sw_oci_config c2;
	if (sw_oci_config_parse(&c2, s1, l1, &err) < 0)
		abort();
	if (!same_str(c.architecture, c2.architecture) || !same_str(c.os, c2.os) ||
	    c.n_diff_ids != c2.n_diff_ids || sw_strv_len(c.cmd) != sw_strv_len(c2.cmd) ||
	    !c.entrypoint != !c2.entrypoint || sw_strv_len(c.env) != sw_strv_len(c2.env))
		abort();
	for (size_t i = 0; i < c.n_diff_ids; i++)
		if (!sw_oci_digest_eq(&c.diff_ids[i], &c2.diff_ids[i]))
			abort();
	char *s2 = sw_oci_config_serialize(&c2, &l2);
	if (l1 != l2 || memcmp(s1, s2, l1) != 0)
		abort();

	free(s1);
	free(s1b);
	free(s2);
	sw_oci_config_clear(&c2);
	sw_oci_config_clear(&c);
	return 0;
}
