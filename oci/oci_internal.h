/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oci internals: helpers shared between the files of the oci module (sw_oci__ prefix). Not for
 * other modules. Each section belongs to the file named in its title.
 */
#ifndef SW_OCI_INTERNAL_H
#define SW_OCI_INTERNAL_H

#include "oci/oci.h"

#include <locale.h>
#include <pthread.h>
#include <time.h>

/* ---------------------------------------------------------------- registry auth (auth.c) */

typedef enum {
	SW_OCI__AUTH_NONE = 0,
	SW_OCI__AUTH_BASIC,
	SW_OCI__AUTH_BEARER,
} sw_oci__auth_scheme;

/* One parsed WWW-Authenticate challenge (the one slipway will answer). */
typedef struct sw_oci__challenge {
	sw_oci__auth_scheme scheme;
	char *realm;   /* NULL when absent (Basic may omit it) */
	char *service; /* NULL when absent */
	char *scope;   /* space-separated scopes, NULL when absent */
	char *error;   /* "insufficient_scope", "invalid_token"..., NULL when absent */
} sw_oci__challenge;

/*
 * Parse a WWW-Authenticate value (RFC 7235: schemes, auth-params with tokens or quoted strings,
 * commas inside quotes, any spacing, unknown params ignored). With several challenges Bearer
 * wins over Basic. SW_ERR_INVALID for malformed text, a Bearer without realm, or only unknown
 * schemes.
 */
int sw_oci__challenge_parse(sw_oci__challenge *out, const char *value, sw_error **err) SW_WUR;
void sw_oci__challenge_clear(sw_oci__challenge *c);

/* A Bearer token and when to stop using it (wall-clock seconds). */
typedef struct sw_oci__token {
	char *token;
	time_t expires_at;
	time_t refresh_at; /* shortly before expires_at: a new token is fetched after this */
} sw_oci__token;

/*
 * Parse a token server answer {"token"|"access_token", "expires_in" (default and minimum 60),
 * "issued_at" (RFC 3339)} received at `now`.
 */
int sw_oci__token_parse(sw_oci__token *out, const char *buf, size_t len, time_t now,
                        sw_error **err) SW_WUR;
bool sw_oci__token_usable(const sw_oci__token *t, time_t now);
void sw_oci__token_clear(sw_oci__token *t);

/* True when `host` ([host]:port, host:port or host) may be spoken to over plain http:
 * 127.0.0.0/8, ::1, localhost, or listed in `insecure` (with or without its port). */
bool sw_oci__host_plain_http(const char *host, const char *const *insecure);

/* Base64 (standard alphabet, padded). decode fails with SW_ERR_INVALID on bad input. */
int sw_oci__base64_decode(char **out, size_t *out_len, const char *in, sw_error **err) SW_WUR;
char *sw_oci__base64_encode(const void *data, size_t len);

/*
 * Credentials for `registry` from the text of a Docker config file (`path` is only used in
 * messages). out->username stays NULL when the file has none for it.
 */
int sw_oci__docker_config_lookup(sw_oci_credentials *out, const char *buf, size_t len,
                                 const char *path, const char *registry, sw_error **err) SW_WUR;

/*
 * The per-registry auth state: the scheme learned from the last challenge, credentials
 * (looked up once, when first needed) and the Bearer token cache (per scope set). Safe to
 * use from several threads.
 */
typedef struct sw_oci__auth sw_oci__auth;

/* `opts` must outlive the auth state. */
sw_oci__auth *sw_oci__auth_new(const char *host, const sw_oci_registry_opts *opts);
void sw_oci__auth_free(sw_oci__auth *a);

/*
 * The "Authorization: ..." header line to send for `scope` (e.g. "repository:team/app:pull"
 * plus any more, space-separated), or *out = NULL for an anonymous request. Bearer tokens come
 * from the cache or are fetched with `http` (scopes in `extra_scope` are asked too); `fresh`
 * drops a cached token first. *out_fresh tells whether what was sent was just obtained (a new
 * token or Basic credentials), so that a 401 for it is final. Token requests are added to
 * *requests.
 */
int sw_oci__auth_header(char **out, bool *out_fresh, sw_oci__auth *a, sw_http_client *http,
                        const char *scope, const char *extra_scope, bool fresh, uint64_t *requests,
                        sw_error **err) SW_WUR;
/*
 * Learn from a 401 answer's WWW-Authenticate value. The challenge's scope is copied to
 * *out_extra_scope (caller frees; may be NULL).
 */
int sw_oci__auth_challenged(char **out_extra_scope, sw_oci__auth *a, const char *www_authenticate,
                            sw_error **err) SW_WUR;
/* Whether credentials exist for this registry (looked up on first call). */
int sw_oci__auth_have_credentials(bool *out, sw_oci__auth *a, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- layers (layer_write.c) */

struct archive;

/* I/O buffer size of the layer writer and applier (file reads, compressed output). */
#define SW_OCI__LAYER_BUF ((size_t)256 << 10)

/*
 * Normalise the name of a layer entry: leading "./", empty and "." components and a trailing
 * "/" go. Absolute paths and ".." components are refused with SW_ERR_INVALID naming the entry
 * (`what` names the field: "layer entry", "hard link target"). *out is "" for the root itself;
 * the caller frees it.
 */
int sw_oci__layer_path_clean(char **out, const char *name, const char *what, sw_error **err) SW_WUR;
/* Whether an xattr read from a tree or a layer is kept: overlayfs' own (trusted.overlay.*,
 * user.overlay.*), system.* and security.* other than security.capability are dropped. */
bool sw_oci__layer_xattr_keep(const char *name);
/* A tar reader (all tar flavours, an empty input, and the built-in decompressors only: never an
 * external program). The caller frees it with archive_read_free. */
struct archive *sw_oci__layer_reader_new(void);
/* The "C" locale, so libarchive's name conversions do not depend on the caller's locale
 * (use with uselocale around archive work). */
locale_t sw_oci__c_locale(void);

#endif
