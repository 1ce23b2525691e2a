/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry authentication: the WWW-Authenticate challenge parser (RFC 7235 auth-params with
 * quoted strings), Basic credentials, Bearer tokens fetched from the challenge's realm (Docker
 * token auth: GET realm?service=..&scope=.., or the OAuth2 refresh-token form for identity
 * tokens) and cached per scope set until shortly before they expire, and the credential lookup
 * (slipway's own list, then the Docker config file's "auths"). Secrets never reach an error
 * message or a log line.
 */
#include "oci/oci_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

#define AUTH_MAX_CONFIG_BYTES ((size_t)4 << 20)
#define AUTH_MAX_TOKEN_BYTES ((size_t)1 << 20)
#define AUTH_MIN_EXPIRES 60
#define AUTH_MAX_CACHE 32

static void auth_json_decrefp(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define cleanup_jsonp __attribute__((cleanup(auth_json_decrefp)))

/* ---------------------------------------------------------------- challenge parser */

static bool is_tchar(char c)
{
	return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

typedef struct parsed_challenge {
	char *scheme;
	char *realm;
	char *service;
	char *scope;
	char *error;
} parsed_challenge;

static void parsed_clear(parsed_challenge *c)
{
	free(c->scheme);
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/* A quoted-string starting at *pp (on the opening quote); backslash escapes one character. */
static int parse_quoted(char **out, const char **pp, const char *value, sw_error **err)
{
	const char *p = *pp + 1;
	sw_buf b = SW_BUF_INIT(0);
	for (;;) {
		char c = *p;
		if (c == '\0') {
			sw_buf_free(&b);
			return sw_error_set(
			        err, SW_ERR_INVALID,
			        "WWW-Authenticate: unterminated quoted string at offset %zu",
			        (size_t)(*pp - value));
		}
		if (c == '"')
			break;
		if (c == '\\') {
			p++;
			c = *p;
			if (c == '\0')
				continue;
		}
		if (sw_buf_append(&b, &c, 1, err) < 0) {
			sw_buf_free(&b);
			return SW_ERR_INVALID;
		}
		p++;
	}
	*pp = p + 1;
	*out = sw_buf_steal(&b, NULL);
	return 0;
}

static void set_param(parsed_challenge *c, const char *name, size_t name_len, char *value)
{
	char **slot = NULL;
	if (name_len == 5 && strncasecmp(name, "realm", 5) == 0)
		slot = &c->realm;
	else if (name_len == 7 && strncasecmp(name, "service", 7) == 0)
		slot = &c->service;
	else if (name_len == 5 && strncasecmp(name, "scope", 5) == 0)
		slot = &c->scope;
	else if (name_len == 5 && strncasecmp(name, "error", 5) == 0)
		slot = &c->error;
	if (slot && !*slot) /* the first of repeated params wins */
		*slot = value;
	else
		free(value);
}

static sw_oci__auth_scheme scheme_of(const char *s)
{
	if (s && strcasecmp(s, "Bearer") == 0)
		return SW_OCI__AUTH_BEARER;
	if (s && strcasecmp(s, "Basic") == 0)
		return SW_OCI__AUTH_BASIC;
	return SW_OCI__AUTH_NONE;
}

int sw_oci__challenge_parse(sw_oci__challenge *out, const char *value, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!value)
		return sw_error_set(err, SW_ERR_INVALID, "WWW-Authenticate: missing");
	parsed_challenge list[8];
	size_t n = 0;
	int rc = 0;
	memset(list, 0, sizeof(list));
	const char *p = value;
	for (;;) {
		p = skip_ows(p);
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *tok = p;
		while (is_tchar(*p))
			p++;
		size_t tok_len = (size_t)(p - tok);
		if (tok_len == 0) {
			rc = sw_error_set(err, SW_ERR_INVALID,
			                  "WWW-Authenticate: unexpected '%c' at offset %zu", *p,
			                  (size_t)(p - value));
			goto out;
		}
		p = skip_ows(p);
		if (*p != '=') {
			/* a new challenge's scheme */
			if (n == SW_ARRAY_SIZE(list)) {
				rc = sw_error_set(err, SW_ERR_INVALID,
				                  "WWW-Authenticate: too many challenges");
				goto out;
			}
			list[n++].scheme = sw_xstrndup(tok, tok_len);
			continue;
		}
		/* name=value (or a token68 like "abc==", skipped) */
		p = skip_ows(p + 1);
		if (*p == '=') {
			while (*p && *p != ',')
				p++;
			continue;
		}
		if (n == 0) {
			rc = sw_error_set(
			        err, SW_ERR_INVALID,
			        "WWW-Authenticate: parameter before any scheme at offset %zu",
			        (size_t)(tok - value));
			goto out;
		}
		char *v = NULL;
		if (*p == '"') {
			if ((rc = parse_quoted(&v, &p, value, err)) < 0)
				goto out;
		} else {
			const char *vs = p;
			while (*p && *p != ',' && *p != ' ' && *p != '\t' && *p != '"')
				p++;
			v = sw_xstrndup(vs, (size_t)(p - vs));
		}
		set_param(&list[n - 1], tok, tok_len, v);
		p = skip_ows(p);
		if (*p && *p != ',') {
			rc = sw_error_set(
			        err, SW_ERR_INVALID,
			        "WWW-Authenticate: expected ',' at offset %zu, found '%c'",
			        (size_t)(p - value), *p);
			goto out;
		}
	}
	/* Bearer first, then Basic */
	parsed_challenge *pick = NULL;
	for (size_t i = 0; i < n && !pick; i++)
		if (scheme_of(list[i].scheme) == SW_OCI__AUTH_BEARER)
			pick = &list[i];
	for (size_t i = 0; i < n && !pick; i++)
		if (scheme_of(list[i].scheme) == SW_OCI__AUTH_BASIC)
			pick = &list[i];
	if (!pick) {
		rc = sw_error_set(
		        err, SW_ERR_INVALID,
		        n ? "WWW-Authenticate: unsupported scheme '%s' (slipway speaks Basic "
		            "and Bearer)"
		          : "WWW-Authenticate: empty%s",
		        n ? list[0].scheme : "");
		goto out;
	}
	out->scheme = scheme_of(pick->scheme);
	if (out->scheme == SW_OCI__AUTH_BEARER && (!pick->realm || !pick->realm[0])) {
		rc = sw_error_set(err, SW_ERR_INVALID,
		                  "WWW-Authenticate: Bearer challenge without "
		                  "realm");
		goto out;
	}
	out->realm = steal_pointer(&pick->realm);
	out->service = steal_pointer(&pick->service);
	out->scope = steal_pointer(&pick->scope);
	out->error = steal_pointer(&pick->error);
out:
	for (size_t i = 0; i < n; i++)
		parsed_clear(&list[i]);
	if (rc < 0)
		sw_oci__challenge_clear(out);
	return rc;
}

void sw_oci__challenge_clear(sw_oci__challenge *c)
{
	if (!c)
		return;
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------- tokens */

/* "2024-05-01T10:00:00Z", with optional fraction and a Z or +hh:mm offset. -1 when bad. */
static time_t parse_rfc3339(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return (time_t)-1;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;
		if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
			return (time_t)-1;
		off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return (time_t)-1;
	}
	if (*p)
		return (time_t)-1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return t;
	return t - off;
}

int sw_oci__token_parse(sw_oci__token *out, const char *buf, size_t len, time_t now, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	json_error_t jerr;
	cleanup_jsonp json_t *j = json_loadb(buf, len, 0, &jerr);
	if (!j)
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, 0,
		                    "token response: line %d: %s", jerr.line, jerr.text);
	if (!json_is_object(j))
		return sw_error_set(err, SW_ERR_INVALID, "token response: not a JSON object");
	const char *tok = json_string_value(json_object_get(j, "token"));
	if (!tok || !tok[0])
		tok = json_string_value(json_object_get(j, "access_token"));
	if (!tok || !tok[0])
		return sw_error_set(err, SW_ERR_INVALID,
		                    "token response: no \"token\" or \"access_token\"");
	json_int_t expires_in = AUTH_MIN_EXPIRES;
	json_t *e = json_object_get(j, "expires_in");
	if (json_is_integer(e))
		expires_in = json_integer_value(e);
	else if (json_is_real(e))
		expires_in = (json_int_t)json_real_value(e);
	else if (e && !json_is_null(e))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "token response: expires_in: not a number");
	if (expires_in < AUTH_MIN_EXPIRES)
		expires_in = AUTH_MIN_EXPIRES;
	if (expires_in > 366L * 24 * 3600)
		expires_in = 366L * 24 * 3600;
	time_t base = now;
	const char *issued = json_string_value(json_object_get(j, "issued_at"));
	if (issued) {
		time_t t = parse_rfc3339(issued);
		/* trust issued_at only when it makes the token shorter-lived than our own clock
		 * would (a server clock ahead of ours must not extend it), and not expired yet */
		if (t != (time_t)-1 && t <= now && t > now - (time_t)expires_in)
			base = t;
	}
	out->token = sw_xstrdup(tok);
	out->expires_at = base + (time_t)expires_in;
	time_t margin = (time_t)(expires_in / 4);
	if (margin > 30)
		margin = 30;
	out->refresh_at = out->expires_at - margin;
	return 0;
}

bool sw_oci__token_usable(const sw_oci__token *t, time_t now)
{
	return t && t->token && now < t->refresh_at;
}

void sw_oci__token_clear(sw_oci__token *t)
{
	if (!t)
		return;
	if (t->token) {
		explicit_bzero(t->token, strlen(t->token));
		free(t->token);
	}
	memset(t, 0, sizeof(*t));
}

/* ---------------------------------------------------------------- hosts */

/* Split "host:port", "[v6]:port", "host", "v6" into a malloc'd host name without brackets. */
static char *host_name_only(const char *host)
{
	if (host[0] == '[') {
		const char *end = strchr(host, ']');
		if (!end)
			return sw_xstrdup(host);
		return sw_xstrndup(host + 1, (size_t)(end - host - 1));
	}
	const char *colon = strchr(host, ':');
	if (colon && !strchr(colon + 1, ':'))
		return sw_xstrndup(host, (size_t)(colon - host));
	return sw_xstrdup(host);
}

bool sw_oci__host_plain_http(const char *host, const char *const *insecure)
{
	if (!host || !host[0])
		return false;
	cleanup_free char *name = host_name_only(host);
	if (strcasecmp(name, "localhost") == 0)
		return true;
	struct in_addr a4;
	if (inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127)
		return true;
	struct in6_addr a6;
	if (inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6))
		return true;
	for (size_t i = 0; insecure && insecure[i]; i++) {
		const char *h = insecure[i];
		/* tolerate "http://host/" in the list */
		if (strncasecmp(h, "http://", 7) == 0)
			h += 7;
		else if (strncasecmp(h, "https://", 8) == 0)
			h += 8;
		size_t hl = strcspn(h, "/");
		if (hl == 0)
			continue;
		if ((strlen(host) == hl && strncasecmp(host, h, hl) == 0) ||
		    (strlen(name) == hl && strncasecmp(name, h, hl) == 0))
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------- base64 */

int sw_oci__base64_decode(char **out, size_t *out_len, const char *in, sw_error **err)
{
	size_t n = strlen(in);
	cleanup_free char *clean = sw_xmalloc(n + 4);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c == ' ' || c == '\n' || c == '\r' || c == '\t')
			continue;
		if (!(isalnum((unsigned char)c) || c == '+' || c == '/' || c == '='))
			return sw_error_set(err, SW_ERR_INVALID, "base64: invalid character");
		clean[m++] = c;
	}
	/* tolerate missing padding */
	while (m % 4)
		clean[m++] = '=';
	clean[m] = '\0';
	size_t pad = 0;
	if (m >= 1 && clean[m - 1] == '=')
		pad++;
	if (m >= 2 && clean[m - 2] == '=')
		pad++;
	for (size_t i = 0; i + pad < m; i++)
		if (clean[i] == '=')
			return sw_error_set(err, SW_ERR_INVALID, "base64: misplaced padding");
	unsigned char *buf = sw_xmalloc(m / 4 * 3 + 1);
	int r = m ? EVP_DecodeBlock(buf, (const unsigned char *)clean, (int)m) : 0;
	if (r < 0 || (size_t)r < pad) {
		free(buf);
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_TLS, r, "base64: invalid input");
	}
	size_t len = (size_t)r - pad;
	buf[len] = '\0';
	*out = (char *)buf;
	if (out_len)
		*out_len = len;
	return 0;
}

char *sw_oci__base64_encode(const void *data, size_t len)
{
	unsigned char *buf = sw_xmalloc((len + 2) / 3 * 4 + 1);
	int n = EVP_EncodeBlock(buf, data, (int)len);
	buf[n < 0 ? 0 : n] = '\0';
	return (char *)buf;
}

/* ---------------------------------------------------------------- credentials */

static bool is_docker_hub(const char *h)
{
	return strcasecmp(h, "docker.io") == 0 || strcasecmp(h, "index.docker.io") == 0 ||
	       strcasecmp(h, "registry-1.docker.io") == 0 ||
	       strcasecmp(h, "registry.hub.docker.com") == 0;
}

/* "https://host:port/v1/" -> "host:port" (malloc'd). */
static char *config_key_host(const char *key)
{
	const char *p = key;
	if (strncasecmp(p, "https://", 8) == 0)
		p += 8;
	else if (strncasecmp(p, "http://", 7) == 0)
		p += 7;
	return sw_xstrndup(p, strcspn(p, "/"));
}

static bool config_key_matches(const char *key, const char *registry)
{
	cleanup_free char *h = config_key_host(key);
	if (strcasecmp(h, registry) == 0)
		return true;
	return is_docker_hub(h) && is_docker_hub(registry);
}

static int creds_from_entry(sw_oci_credentials *out, json_t *entry, const char *path,
                            const char *key, const char *registry, sw_error **err)
{
	if (!json_is_object(entry))
		return sw_error_set(err, SW_ERR_INVALID, "%s: auths.\"%s\": not an object", path,
		                    key);
	const char *ident = json_string_value(json_object_get(entry, "identitytoken"));
	const char *auth = json_string_value(json_object_get(entry, "auth"));
	const char *user = json_string_value(json_object_get(entry, "username"));
	const char *pass = json_string_value(json_object_get(entry, "password"));
	if (ident && ident[0]) {
		out->username = sw_xstrdup("<token>");
		out->password = sw_xstrdup(ident);
	} else if (auth && auth[0]) {
		cleanup_free char *dec = NULL;
		size_t dlen = 0;
		if (sw_oci__base64_decode(&dec, &dlen, auth, err) < 0)
			return sw_error_wrap(err, "%s: auths.\"%s\".auth", path, key);
		char *colon = memchr(dec, ':', dlen);
		if (!colon || colon == dec || memchr(dec, '\0', dlen)) {
			explicit_bzero(dec, dlen);
			return sw_error_set(err, SW_ERR_INVALID,
			                    "%s: auths.\"%s\".auth: not base64 of USER:PASSWORD",
			                    path, key);
		}
		out->username = sw_xstrndup(dec, (size_t)(colon - dec));
		out->password = sw_xstrndup(colon + 1, dlen - (size_t)(colon + 1 - dec));
		explicit_bzero(dec, dlen);
	} else if (user && user[0]) {
		out->username = sw_xstrdup(user);
		out->password = sw_xstrdup(pass ? pass : "");
	} else {
		/* e.g. an entry that only says a credential helper has it */
		SW_LOG(SW_LOG_DEBUG,
		       "%s: auths.\"%s\" holds no credentials (credential helpers are not used)",
		       path, key);
		return 0;
	}
	out->registry = sw_xstrdup(registry);
	return 0;
}

int sw_oci__docker_config_lookup(sw_oci_credentials *out, const char *buf, size_t len,
                                 const char *path, const char *registry, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	json_error_t jerr;
	cleanup_jsonp json_t *root = json_loadb(buf, len, 0, &jerr);
	if (!root)
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, 0,
		                    "%s: line %d column %d: %s", path, jerr.line, jerr.column,
		                    jerr.text);
	if (!json_is_object(root))
		return sw_error_set(err, SW_ERR_INVALID, "%s: not a JSON object", path);
	json_t *auths = json_object_get(root, "auths");
	if (!auths || json_is_null(auths))
		return 0;
	if (!json_is_object(auths))
		return sw_error_set(err, SW_ERR_INVALID, "%s: auths: not an object", path);
	/* the exact key first, then any spelling of the same host */
	json_t *entry = json_object_get(auths, registry);
	if (entry)
		return creds_from_entry(out, entry, path, registry, registry, err);
	const char *key;
	json_t *v;
	json_object_foreach (auths, key, v) {
		if (config_key_matches(key, registry))
			return creds_from_entry(out, v, path, key, registry, err);
	}
	return 0;
}

static char *docker_config_path(const sw_oci_registry_opts *opts)
{
	if (opts && opts->docker_config && opts->docker_config[0])
		return sw_xstrdup(opts->docker_config);
	const char *d = getenv("DOCKER_CONFIG");
	if (d && d[0])
		return sw_path_join(d, "config.json");
	const char *home = getenv("HOME");
	if (home && home[0])
		return sw_xasprintf("%s/.docker/config.json", home);
	return NULL;
}

int sw_oci_credentials_lookup(sw_oci_credentials *out, const sw_oci_registry_opts *opts,
                              const char *registry, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!registry || !registry[0])
		return sw_error_set(err, SW_ERR_INVALID, "credentials: empty registry name");
	for (size_t i = 0; opts && opts->credentials && i < opts->n_credentials; i++) {
		const sw_oci_credentials *c = &opts->credentials[i];
		if (c->registry && c->username && strcasecmp(c->registry, registry) == 0) {
			out->registry = sw_xstrdup(registry);
			out->username = sw_xstrdup(c->username);
			out->password = sw_xstrdup(c->password ? c->password : "");
			return 0;
		}
	}
	cleanup_free char *path = docker_config_path(opts);
	if (!path)
		return 0;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, path, AUTH_MAX_CONFIG_BYTES, &e) < 0) {
		if (sw_error_code_of(e) == SW_ERR_NOT_FOUND ||
		    (e->source == SW_ERRSRC_OS && e->sys == ENOENT)) {
			sw_error_free(e);
			return 0;
		}
		if (err && !*err)
			*err = e;
		else
			sw_error_free(e);
		return sw_error_wrap(err, "docker config %s", path);
	}
	int rc = sw_oci__docker_config_lookup(out, buf, len, path, registry, err);
	explicit_bzero(buf, len);
	if (rc < 0)
		return sw_error_wrap(err, "docker config");
	return 0;
}

void sw_oci_credentials_clear(sw_oci_credentials *c)
{
	if (!c)
		return;
	free(c->registry);
	free(c->username);
	if (c->password) {
		explicit_bzero(c->password, strlen(c->password));
		free(c->password);
	}
	memset(c, 0, sizeof(*c));
}

/* ---------------------------------------------------------------- auth state */

typedef struct token_entry {
	char *scope;
	sw_oci__token tok;
} token_entry;

struct sw_oci__auth {
	pthread_mutex_t lock;
	char *host;
	const sw_oci_registry_opts *opts;
	sw_oci__auth_scheme scheme;
	char *realm;
	char *service;
	bool creds_loaded;
	sw_oci_credentials creds; /* username NULL: none */
	token_entry cache[AUTH_MAX_CACHE];
	size_t n_cache;
};

sw_oci__auth *sw_oci__auth_new(const char *host, const sw_oci_registry_opts *opts)
{
	sw_oci__auth *a = sw_xcalloc(1, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->host = sw_xstrdup(host);
	a->opts = opts;
	return a;
}

void sw_oci__auth_free(sw_oci__auth *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n_cache; i++) {
		free(a->cache[i].scope);
		sw_oci__token_clear(&a->cache[i].tok);
	}
	sw_oci_credentials_clear(&a->creds);
	free(a->host);
	free(a->realm);
	free(a->service);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

/* Under the lock. */
static int load_creds(sw_oci__auth *a, sw_error **err)
{
	if (a->creds_loaded)
		return 0;
	if (sw_oci_credentials_lookup(&a->creds, a->opts, a->host, err) < 0)
		return sw_error_code_of(*err);
	a->creds_loaded = true;
	return 0;
}

int sw_oci__auth_have_credentials(bool *out, sw_oci__auth *a, sw_error **err)
{
	pthread_mutex_lock(&a->lock);
	int rc = load_creds(a, err);
	*out = a->creds.username != NULL;
	pthread_mutex_unlock(&a->lock);
	return rc;
}

static char *basic_header(const sw_oci_credentials *c)
{
	cleanup_free char *up = sw_xasprintf("%s:%s", c->username, c->password ? c->password : "");
	cleanup_free char *b64 = sw_oci__base64_encode(up, strlen(up));
	explicit_bzero(up, strlen(up));
	char *h = sw_xasprintf("Authorization: Basic %s", b64);
	explicit_bzero(b64, strlen(b64));
	return h;
}

/* Split a space-separated scope list, merge actions of the same resource, sort, join. */
static char *scope_normalize(const char *first, const char *second)
{
	char **res = NULL;  /* "repository:team/app" */
	char **acts = NULL; /* "pull,push" */
	const char *parts[2] = { first, second };
	for (size_t k = 0; k < 2; k++) {
		if (!parts[k])
			continue;
		cleanup_free char *copy = sw_xstrdup(parts[k]);
		char *save = NULL;
		for (char *s = strtok_r(copy, " ", &save); s; s = strtok_r(NULL, " ", &save)) {
			char *colon = strrchr(s, ':');
			if (!colon || colon == s)
				continue;
			*colon = '\0';
			const char *actions = colon + 1;
			size_t i = 0;
			for (; res && res[i]; i++)
				if (strcmp(res[i], s) == 0)
					break;
			if (!res || !res[i]) {
				sw_strv_push(&res, s);
				sw_strv_push(&acts, "");
			}
			/* add each action not yet there */
			cleanup_free char *ac = sw_xstrdup(actions);
			char *s2 = NULL;
			for (char *x = strtok_r(ac, ",", &s2); x; x = strtok_r(NULL, ",", &s2)) {
				bool have = false;
				cleanup_free char *cur = sw_xstrdup(acts[i]);
				char *s3 = NULL;
				for (char *y = strtok_r(cur, ",", &s3); y;
				     y = strtok_r(NULL, ",", &s3))
					have = have || strcmp(x, y) == 0;
				if (!have) {
					char *n = acts[i][0] ? sw_xasprintf("%s,%s", acts[i], x)
					                     : sw_xstrdup(x);
					free(acts[i]);
					acts[i] = n;
				}
			}
		}
	}
	size_t n = sw_strv_len(res);
	/* sort resources (insertion sort; lists are tiny) with their actions */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(res[j - 1], res[j]) > 0; j--) {
			char *t = res[j];
			res[j] = res[j - 1];
			res[j - 1] = t;
			t = acts[j];
			acts[j] = acts[j - 1];
			acts[j - 1] = t;
		}
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; i < n; i++) {
		/* sort actions too: "push,pull" and "pull,push" are one scope */
		char **al = NULL;
		char *s3 = NULL;
		for (char *y = strtok_r(acts[i], ",", &s3); y; y = strtok_r(NULL, ",", &s3))
			sw_strv_push(&al, y);
		size_t an = sw_strv_len(al);
		for (size_t x = 1; x < an; x++)
			for (size_t y = x; y > 0 && strcmp(al[y - 1], al[y]) > 0; y--) {
				char *t = al[y];
				al[y] = al[y - 1];
				al[y - 1] = t;
			}
		if (sw_buf_printf(&b, NULL, "%s%s:", i ? " " : "", res[i]) < 0)
			abort();
		for (size_t x = 0; x < an; x++)
			if (sw_buf_printf(&b, NULL, "%s%s", x ? "," : "", al[x]) < 0)
				abort();
		sw_strv_free(al);
	}
	sw_strv_free(res);
	sw_strv_free(acts);
	return sw_buf_steal(&b, NULL);
}

static token_entry *cache_find(sw_oci__auth *a, const char *scope)
{
	for (size_t i = 0; i < a->n_cache; i++)
		if (strcmp(a->cache[i].scope, scope) == 0)
			return &a->cache[i];
	return NULL;
}

static void cache_put(sw_oci__auth *a, const char *scope, sw_oci__token *tok)
{
	token_entry *e = cache_find(a, scope);
	if (!e) {
		if (a->n_cache == AUTH_MAX_CACHE) {
			/* drop the oldest */
			free(a->cache[0].scope);
			sw_oci__token_clear(&a->cache[0].tok);
			memmove(&a->cache[0], &a->cache[1],
			        (AUTH_MAX_CACHE - 1) * sizeof(a->cache[0]));
			a->n_cache--;
		}
		e = &a->cache[a->n_cache++];
		memset(e, 0, sizeof(*e));
		e->scope = sw_xstrdup(scope);
	}
	sw_oci__token_clear(&e->tok);
	e->tok = *tok;
	memset(tok, 0, sizeof(*tok));
}

/* The registry's error text from a JSON answer, or "" (malloc'd). */
static char *answer_detail(const sw_http_response *resp)
{
	if (!resp->body.len)
		return sw_xstrdup("");
	json_error_t jerr;
	cleanup_jsonp json_t *j = json_loadb(resp->body.data, resp->body.len, 0, &jerr);
	const char *m = NULL;
	if (j) {
		m = json_string_value(json_object_get(j, "details"));
		if (!m)
			m = json_string_value(json_object_get(j, "error_description"));
		if (!m)
			m = json_string_value(json_object_get(j, "error"));
		if (!m)
			m = json_string_value(json_object_get(
			        json_array_get(json_object_get(j, "errors"), 0), "message"));
	}
	if (!m || !m[0])
		return sw_xstrdup("");
	return sw_xasprintf(": %.200s", m);
}

/* The realm without its query (for messages). */
static char *realm_for_msg(const char *realm)
{
	return sw_xstrndup(realm, strcspn(realm, "?#"));
}

/* Under the lock: ask the realm for a token for `scope` (already normalized). */
static int fetch_token(sw_oci__token *out, sw_oci__auth *a, sw_http_client *http, const char *scope,
                       uint64_t *requests, sw_error **err)
{
	int rc = load_creds(a, err);
	if (rc < 0)
		return rc;
	const sw_oci_credentials *c = a->creds.username ? &a->creds : NULL;
	bool identity = c && strcmp(c->username, "<token>") == 0;
	cleanup_free char *rmsg = realm_for_msg(a->realm);
	if (strncasecmp(a->realm, "https://", 8) != 0) {
		if (strncasecmp(a->realm, "http://", 7) != 0)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "%s: token realm '%s' is not an http(s) URL", a->host,
			                    rmsg);
		cleanup_free char *rhost = config_key_host(a->realm);
		if (c && !sw_oci__host_plain_http(rhost, a->opts ? a->opts->insecure : NULL))
			return sw_error_set(err, SW_ERR_AUTH,
			                    "%s: token realm %s is plain http: refusing to send "
			                    "credentials over it",
			                    a->host, rmsg);
	}
	sw_buf q = SW_BUF_INIT(0);
	cleanup_strv char **scopes = NULL;
	{
		cleanup_free char *copy = sw_xstrdup(scope);
		char *save = NULL;
		for (char *s = strtok_r(copy, " ", &save); s; s = strtok_r(NULL, " ", &save))
			sw_strv_push(&scopes, s);
	}
	if (a->service) {
		cleanup_free char *e = sw_url_escape(a->service);
		if (sw_buf_printf(&q, NULL, "service=%s", e) < 0)
			abort();
	}
	for (size_t i = 0; scopes && scopes[i]; i++) {
		cleanup_free char *e = sw_url_escape(scopes[i]);
		if (sw_buf_printf(&q, NULL, "%sscope=%s", q.len ? "&" : "", e) < 0)
			abort();
	}
	cleanup_free char *query = sw_buf_steal(&q, NULL);
	cleanup_free char *url = NULL;
	cleanup_free char *body = NULL;
	cleanup_free char *authz = NULL;
	const char *headers[3] = { NULL, NULL, NULL };
	sw_http_request req;
	memset(&req, 0, sizeof(req));
	req.max_body = AUTH_MAX_TOKEN_BYTES;
	if (identity) {
		/* OAuth2: trade the identity (refresh) token for an access token */
		cleanup_free char *rt = sw_url_escape(c->password);
		url = sw_xstrdup(a->realm);
		body = sw_xasprintf(
		        "grant_type=refresh_token&refresh_token=%s&client_id=slipway%s%s", rt,
		        query[0] ? "&" : "", query);
		explicit_bzero(rt, strlen(rt));
		headers[0] = "Content-Type: application/x-www-form-urlencoded";
		req.method = "POST";
		req.body = body;
		req.body_len = strlen(body);
	} else {
		const char *sep = strchr(a->realm, '?') ? "&" : "?";
		if (c) {
			cleanup_free char *acc = sw_url_escape(c->username);
			url = sw_xasprintf("%s%s%s%saccount=%s", a->realm, query[0] ? sep : "",
			                   query, query[0] ? "&" : sep, acc);
			authz = basic_header(c);
			headers[0] = authz;
		} else {
			url = sw_xasprintf("%s%s%s", a->realm, query[0] ? sep : "", query);
		}
		req.method = "GET";
	}
	req.url = url;
	req.headers = headers;
	sw_http_response resp;
	memset(&resp, 0, sizeof(resp));
	rc = sw_http_do(&resp, http, &req, err);
	if (requests)
		*requests += (uint64_t)(resp.attempts > 0 ? resp.attempts : 1);
	if (body)
		explicit_bzero(body, strlen(body));
	if (authz)
		explicit_bzero(authz, strlen(authz));
	if (rc < 0) {
		sw_http_response_free(&resp);
		return sw_error_wrap(err, "%s: token request to %s", a->host, rmsg);
	}
	if (resp.status == 401 || resp.status == 403) {
		cleanup_free char *d = answer_detail(&resp);
		long st = resp.status;
		sw_http_response_free(&resp);
		if (!c)
			return sw_error_lib(
			        err, SW_ERR_AUTH, SW_ERRSRC_HTTP, (int)st,
			        "%s: authentication required: the token server %s "
			        "refused an anonymous request (HTTP %ld)%s: no credentials "
			        "found for this registry",
			        a->host, rmsg, st, d);
		return sw_error_lib(err, SW_ERR_AUTH, SW_ERRSRC_HTTP, (int)st,
		                    "%s: authentication failed for %s (HTTP %ld from the token "
		                    "server %s)%s: check the credentials for this registry",
		                    a->host, scope, st, rmsg, d);
	}
	if (resp.status < 200 || resp.status > 299) {
		cleanup_free char *d = answer_detail(&resp);
		long st = resp.status;
		sw_http_response_free(&resp);
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_HTTP, (int)st,
		                    "%s: token request to %s: HTTP %ld%s", a->host, rmsg, st, d);
	}
	rc = sw_oci__token_parse(out, resp.body.data, resp.body.len, time(NULL), err);
	explicit_bzero(resp.body.data ? resp.body.data : (char *)"", resp.body.len);
	sw_http_response_free(&resp);
	if (rc < 0)
		return sw_error_wrap(err, "%s: token from %s", a->host, rmsg);
	return 0;
}

int sw_oci__auth_header(char **out, bool *out_fresh, sw_oci__auth *a, sw_http_client *http,
                        const char *scope, const char *extra_scope, bool fresh, uint64_t *requests,
                        sw_error **err)
{
	*out = NULL;
	*out_fresh = false;
	int rc = 0;
	pthread_mutex_lock(&a->lock);
	switch (a->scheme) {
	case SW_OCI__AUTH_NONE:
		break;
	case SW_OCI__AUTH_BASIC:
		if ((rc = load_creds(a, err)) < 0)
			break;
		if (a->creds.username) {
			*out = basic_header(&a->creds);
			*out_fresh = true;
		}
		break;
	case SW_OCI__AUTH_BEARER: {
		cleanup_free char *key = scope_normalize(scope, NULL);
		token_entry *e = cache_find(a, key);
		if (e && !fresh && sw_oci__token_usable(&e->tok, time(NULL))) {
			*out = sw_xasprintf("Authorization: Bearer %s", e->tok.token);
			break;
		}
		cleanup_free char *ask = scope_normalize(scope, extra_scope);
		sw_oci__token tok;
		if ((rc = fetch_token(&tok, a, http, ask, requests, err)) < 0)
			break;
		*out = sw_xasprintf("Authorization: Bearer %s", tok.token);
		*out_fresh = true;
		cache_put(a, key, &tok);
		break;
	}
	}
	pthread_mutex_unlock(&a->lock);
	return rc;
}

int sw_oci__auth_challenged(char **out_extra_scope, sw_oci__auth *a, const char *www_authenticate,
                            sw_error **err)
{
	*out_extra_scope = NULL;
	sw_oci__challenge ch;
	if (sw_oci__challenge_parse(&ch, www_authenticate, err) < 0)
		return sw_error_wrap(err, "%s: 401 answer", a->host);
	pthread_mutex_lock(&a->lock);
	a->scheme = ch.scheme;
	if (ch.realm) {
		free(a->realm);
		a->realm = steal_pointer(&ch.realm);
	}
	if (ch.service) {
		free(a->service);
		a->service = steal_pointer(&ch.service);
	}
	pthread_mutex_unlock(&a->lock);
	*out_extra_scope = steal_pointer(&ch.scope);
	sw_oci__challenge_clear(&ch);
	return 0;
}
