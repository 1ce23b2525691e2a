/* SPDX-License-Identifier: Apache-2.0 */
/* SHA-256 digests: syntax checks and streaming hashing through OpenSSL EVP. */
#include "oci/oci.h"

#include <openssl/evp.h>
#include <string.h>

struct sw_oci_hasher {
	EVP_MD_CTX *ctx;
};

int sw_oci_digest_parse(sw_digest *out, const char *s, sw_error **err)
{
	if (out)
		memset(out, 0, sizeof(*out));
	if (!s || strncmp(s, "sha256:", 7) != 0) {
		if (s && strchr(s, ':') && strncmp(s, "sha512:", 7) == 0)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "digest '%.80s': only sha256 is supported", s);
		return sw_error_set(err, SW_ERR_INVALID,
		                    "'%.80s' is not a digest (expected sha256:<64 hex digits>)",
		                    s ? s : "(null)");
	}
	size_t n = strlen(s + 7);
	if (n != 64)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "digest '%.80s': expected 64 hex digits, got %zu", s, n);
	for (size_t i = 7; i < 71; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return sw_error_set(err, SW_ERR_INVALID,
			                    "digest '%.80s': '%c' is not a lowercase hex digit", s,
			                    c);
	}
	if (out)
		memcpy(out->s, s, 71);
	return 0;
}

bool sw_oci_digest_is_set(const sw_digest *d)
{
	return d && d->s[0] != '\0';
}

bool sw_oci_digest_eq(const sw_digest *a, const sw_digest *b)
{
	return strcmp(a->s, b->s) == 0;
}

const char *sw_oci_digest_hex(const sw_digest *d)
{
	return strncmp(d->s, "sha256:", 7) == 0 ? d->s + 7 : d->s;
}

sw_oci_hasher *sw_oci_hasher_new(void)
{
	sw_oci_hasher *h = sw_xcalloc(1, sizeof(*h));
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
		abort();
	return h;
}

void sw_oci_hasher_update(sw_oci_hasher *h, const void *data, size_t len)
{
	if (len && EVP_DigestUpdate(h->ctx, data, len) != 1)
		abort();
}

void sw_oci_hasher_final(sw_oci_hasher *h, sw_digest *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (EVP_DigestFinal_ex(h->ctx, md, &n) != 1 || n != 32)
		abort();
	memcpy(out->s, "sha256:", 7);
	for (unsigned int i = 0; i < n; i++) {
		out->s[7 + 2 * i] = hex[md[i] >> 4];
		out->s[8 + 2 * i] = hex[md[i] & 15];
	}
	out->s[71] = '\0';
}

void sw_oci_hasher_reset(sw_oci_hasher *h)
{
	if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
		abort();
}

void sw_oci_hasher_free(sw_oci_hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void sw_oci_digest_bytes(sw_digest *out, const void *data, size_t len)
{
	sw_oci_hasher *h = sw_oci_hasher_new();
	sw_oci_hasher_update(h, data, len);
	sw_oci_hasher_final(h, out);
	sw_oci_hasher_free(h);
}
