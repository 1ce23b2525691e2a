/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry client (OCI distribution API) over the common HTTP layer. Pull: the manifest
 * with an Accept for OCI and Docker types, verified against Docker-Content-Digest and the
 * reference's digest, an index narrowed to one platform, then config and layers streamed into
 * the content store's blob writer with their digests checked; an interrupted download resumes
 * with a Range request (or starts again), a bounded number of times. Push: per blob HEAD (skip
 * when present), a cross-repository mount when the store knows another repository of the same
 * registry holding it, else an upload session (one PUT up to monolithic_max, chunked PATCHes
 * above), restarted from the POST when it fails; layers go up in parallel (three workers, one
 * HTTP client each), the config after them and the manifest last, only when every blob is
 * confirmed. Authentication (anonymous, Basic, Bearer) is in auth.c; every request goes
 * through reg_do, which answers a 401 once.
 */
#include "oci/oci_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define REG_MAX_ERROR_BODY ((size_t)64 << 10)
#define REG_DOWNLOAD_STALLS 5    /* download attempts in a row that bring no new byte */
#define REG_DOWNLOAD_ATTEMPTS 20 /* download attempts in all */
#define REG_UPLOAD_SESSIONS 3
#define REG_PUSH_WORKERS 3
#define REG_PENDING_MAX ((size_t)64 << 10)
#define REG_DEFAULT_CHUNK ((size_t)16 << 20)
#define REG_COPY_BUF ((size_t)1 << 20)

static const char accept_manifests[] = "Accept: " SW_OCI_MT_MANIFEST ", " SW_OCI_MT_INDEX
                                       ", " SW_DOCKER_MT_MANIFEST ", " SW_DOCKER_MT_LIST;

static void reg_json_decrefp(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define cleanup_jsonp __attribute__((cleanup(reg_json_decrefp)))

struct sw_oci_registry {
	char *host;
	char *origin;              /* "http://127.0.0.1:5000" */
	char *base;                /* origin + "/v2/" */
	sw_oci_registry_opts opts; /* deep copy: the strings below are ours */
	sw_oci_credentials *creds;
	char **insecure;
	char *docker_config;
	char *ca_file, *client_cert, *client_key, *user_agent;
	sw_http_client *http;
	sw_oci__auth *auth;
	pthread_mutex_t lock; /* stats */
	sw_oci_transfer_stats stats;
};

/* Move *e into *err (the first error wins; *e is freed otherwise). Returns its code. */
static int err_take(sw_error **err, sw_error **e)
{
	int code = *e ? (*e)->code : SW_ERR_GENERIC;
	if (err && !*err)
		*err = *e;
	else
		sw_error_free(*e);
	*e = NULL;
	return code;
}

/* ---------------------------------------------------------------- setup */

static char *dup_or_null(const char *s)
{
	return s ? sw_xstrdup(s) : NULL;
}

int sw_oci_registry_new(sw_oci_registry **out, const char *host, const sw_oci_registry_opts *opts,
                        sw_error **err)
{
	*out = NULL;
	if (!host || !host[0] || strpbrk(host, "/?#@ \t\r\n"))
		return sw_error_set(err, SW_ERR_INVALID, "registry host '%s': expected HOST[:PORT]",
		                    host ? host : "");
	sw_oci_registry *r = sw_xcalloc(1, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->host = sw_xstrdup(host);
	if (opts)
		r->opts = *opts;
	/* deep copy of everything opts points at */
	if (opts && opts->credentials && opts->n_credentials) {
		r->creds = sw_xcalloc(opts->n_credentials, sizeof(*r->creds));
		for (size_t i = 0; i < opts->n_credentials; i++) {
			r->creds[i].registry = dup_or_null(opts->credentials[i].registry);
			r->creds[i].username = dup_or_null(opts->credentials[i].username);
			r->creds[i].password = dup_or_null(opts->credentials[i].password);
		}
	}
	r->opts.credentials = r->creds;
	r->opts.n_credentials = r->creds ? opts->n_credentials : 0;
	r->insecure = opts ? sw_strv_dup((char *const *)opts->insecure) : NULL;
	r->opts.insecure = (const char *const *)r->insecure;
	r->docker_config = dup_or_null(opts ? opts->docker_config : NULL);
	r->opts.docker_config = r->docker_config;
	r->ca_file = dup_or_null(r->opts.http.ca_file);
	r->client_cert = dup_or_null(r->opts.http.client_cert);
	r->client_key = dup_or_null(r->opts.http.client_key);
	r->user_agent = dup_or_null(r->opts.http.user_agent);
	r->opts.http.ca_file = r->ca_file;
	r->opts.http.client_cert = r->client_cert;
	r->opts.http.client_key = r->client_key;
	r->opts.http.user_agent = r->user_agent;
	if (!r->opts.chunk_size)
		r->opts.chunk_size = REG_DEFAULT_CHUNK;
	if (!r->opts.monolithic_max)
		r->opts.monolithic_max = REG_DEFAULT_CHUNK;

	const char *scheme = sw_oci__host_plain_http(host, r->opts.insecure) ? "http" : "https";
	r->origin = sw_xasprintf("%s://%s", scheme, host);
	r->base = sw_xasprintf("%s/v2/", r->origin);
	r->auth = sw_oci__auth_new(host, &r->opts);
	if (sw_http_client_new(&r->http, &r->opts.http, err) < 0) {
		sw_oci_registry_free(r);
		return sw_error_wrap(err, "registry %s", host);
	}
	SW_LOG(SW_LOG_DEBUG, "registry %s: base URL %s", host, r->base);
	*out = r;
	return 0;
}

void sw_oci_registry_free(sw_oci_registry *r)
{
	if (!r)
		return;
	sw_http_client_free(r->http);
	sw_oci__auth_free(r->auth);
	for (size_t i = 0; r->creds && i < r->opts.n_credentials; i++)
		sw_oci_credentials_clear(&r->creds[i]);
	free(r->creds);
	sw_strv_free(r->insecure);
	free(r->docker_config);
	free(r->ca_file);
	free(r->client_cert);
	free(r->client_key);
	free(r->user_agent);
	free(r->host);
	free(r->origin);
	free(r->base);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

const sw_oci_transfer_stats *sw_oci_registry_stats(const sw_oci_registry *r)
{
	return &r->stats;
}

/* Add to one stats counter (several threads push at once). */
static void stat_add(sw_oci_registry *r, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&r->lock);
	*field += n;
	pthread_mutex_unlock(&r->lock);
}

/* ---------------------------------------------------------------- URLs and messages */

/* "repo:tag", "repo@digest" for messages. */
static char *ref_msg(const sw_oci_registry *r, const sw_oci_ref *ref)
{
	if (ref->tag)
		return sw_xasprintf("%s/%s:%s", r->host, ref->repository, ref->tag);
	return sw_xasprintf("%s/%s@%s", r->host, ref->repository, ref->digest.s);
}

static char *url_join_query(const char *url, const char *query)
{
	return sw_xasprintf("%s%s%s", url, strchr(url, '?') ? "&" : "?", query);
}

/* A Location header made absolute: it may be absolute, host-relative or path-relative. */
static char *resolve_location(const sw_oci_registry *r, const char *req_url, const char *loc)
{
	if (strncasecmp(loc, "http://", 7) == 0 || strncasecmp(loc, "https://", 8) == 0)
		return sw_xstrdup(loc);
	if (loc[0] == '/' && loc[1] == '/')
		return sw_xasprintf("%.*s:%s", (int)strcspn(r->origin, ":"), r->origin, loc);
	if (loc[0] == '/')
		return sw_xasprintf("%s%s", r->origin, loc);
	size_t q = strcspn(req_url, "?#");
	size_t dir = q;
	while (dir > 0 && req_url[dir - 1] != '/')
		dir--;
	return sw_xasprintf("%.*s%s", (int)dir, req_url, loc);
}

/* Is `url` on the registry's own origin (where credentials may go)? */
static bool same_origin(const sw_oci_registry *r, const char *url)
{
	size_t n = strlen(r->origin);
	return strncasecmp(url, r->origin, n) == 0 &&
	       (url[n] == '/' || url[n] == '\0' || url[n] == '?');
}

static int code_for_status(long st)
{
	if (st == 401 || st == 403)
		return SW_ERR_AUTH;
	if (st == 404)
		return SW_ERR_NOT_FOUND;
	if (st == 400 || st == 413 || st == 416)
		return SW_ERR_INVALID;
	if (st == 409)
		return SW_ERR_CONFLICT;
	if (st == 408 || st == 504)
		return SW_ERR_TIMEOUT;
	return SW_ERR_GENERIC;
}

/* ": CODE: message[; CODE: message]" from a registry error body, or "" (malloc'd). */
static char *registry_errors(const sw_http_response *resp)
{
	if (!resp->body.len || !resp->body.data)
		return sw_xstrdup("");
	json_error_t jerr;
	cleanup_jsonp json_t *j = json_loadb(resp->body.data, resp->body.len, 0, &jerr);
	json_t *errs = j ? json_object_get(j, "errors") : NULL;
	if (!json_is_array(errs) || json_array_size(errs) == 0)
		return sw_xstrdup("");
	sw_buf b = SW_BUF_INIT(4096);
	size_t i;
	json_t *e;
	json_array_foreach (errs, i, e) {
		if (i >= 3)
			break;
		const char *code = json_string_value(json_object_get(e, "code"));
		const char *msg = json_string_value(json_object_get(e, "message"));
		if (!code && !msg)
			continue;
		if (sw_buf_printf(&b, NULL, "%s%.64s%s%.200s", i ? "; " : ": ", code ? code : "",
		                  code && msg ? ": " : "", msg ? msg : "") < 0)
			break;
	}
	return sw_buf_steal(&b, NULL);
}

/* An error for an unexpected HTTP answer: "CTX: HTTP 503 after 5 attempts: CODE: msg". */
static int http_fail(sw_error **err, const sw_http_response *resp, const char *fmt, ...)
        SW_PRINTF(3, 4);
static int http_fail(sw_error **err, const sw_http_response *resp, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *ctx = sw_xvasprintf(fmt, ap);
	va_end(ap);
	cleanup_free char *detail = registry_errors(resp);
	cleanup_free char *tries = resp->attempts > 1
	                                   ? sw_xasprintf(" after %d attempts", resp->attempts)
	                                   : sw_xstrdup("");
	return sw_error_lib(err, code_for_status(resp->status), SW_ERRSRC_HTTP, (int)resp->status,
	                    "%s: HTTP %ld%s%s", ctx, resp->status, tries, detail);
}

/* ---------------------------------------------------------------- requests with auth */

typedef struct reg_call {
	sw_http_request req;           /* without Authorization */
	const char *scope;             /* "repository:team/app:pull[,push][ repository:x:pull]" */
	const char *repo;              /* for messages */
	int (*restart)(void *payload); /* before a request is sent again after a 401 */
	void *restart_payload;
	bool keep_failed; /* keep the response (headers of a cut answer) when no answer came */
} reg_call;

/*
 * Send a request to the registry; a 401 is answered once (credentials or a token for the
 * challenge), a 401 for what we just presented, or a 403, is SW_ERR_AUTH. Returns 0 with the
 * response for every other status.
 */
static int reg_do(sw_http_response *out, sw_oci_registry *r, sw_http_client *http,
                  const reg_call *call, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	bool mine = same_origin(r, call->req.url);
	cleanup_free char *extra = NULL;
	for (int attempt = 0;; attempt++) {
		cleanup_free char *authz = NULL;
		bool fresh = false;
		uint64_t token_reqs = 0;
		int rc = 0;
		if (mine)
			rc = sw_oci__auth_header(&authz, &fresh, r->auth, http, call->scope, extra,
			                         attempt > 0, &token_reqs, err);
		if (token_reqs)
			stat_add(r, &r->stats.requests, token_reqs);
		if (rc < 0)
			return rc;
		if (attempt > 0 && call->restart && call->restart(call->restart_payload) < 0)
			return sw_error_set(
			        err, SW_ERR_GENERIC, "%s %s: cannot send the request body again",
			        call->req.method ? call->req.method : "GET", call->req.url);
		size_t nh = 0;
		while (call->req.headers && call->req.headers[nh])
			nh++;
		const char **hdrs = sw_xcalloc(nh + 2, sizeof(char *));
		for (size_t i = 0; i < nh; i++)
			hdrs[i] = call->req.headers[i];
		if (authz)
			hdrs[nh++] = authz;
		sw_http_request req = call->req;
		req.headers = hdrs;
		rc = sw_http_do(out, http, &req, err);
		free(hdrs);
		if (authz)
			explicit_bzero(authz, strlen(authz));
		stat_add(r, &r->stats.requests, (uint64_t)(out->attempts > 0 ? out->attempts : 1));
		if (rc < 0) {
			if (!call->keep_failed)
				sw_http_response_free(out);
			return rc;
		}
		if (out->status == 401 && mine) {
			long st = out->status;
			if (attempt > 0 || fresh) {
				bool have = false;
				sw_error *e2 = NULL;
				if (sw_oci__auth_have_credentials(&have, r->auth, &e2) < 0)
					sw_error_free(e2);
				cleanup_free char *d = registry_errors(out);
				sw_http_response_free(out);
				if (!have)
					return sw_error_lib(
					        err, SW_ERR_AUTH, SW_ERRSRC_HTTP, (int)st,
					        "%s: authentication required for repository %s (HTTP "
					        "%ld)%s: no credentials found for this registry (docker "
					        "config or slipway's own)",
					        r->host, call->repo, st, d);
				return sw_error_lib(
				        err, SW_ERR_AUTH, SW_ERRSRC_HTTP, (int)st,
				        "%s: authentication failed for repository %s (HTTP "
				        "%ld)%s: check the credentials for this registry",
				        r->host, call->repo, st, d);
			}
			const char *www = sw_http_response_header(out, "WWW-Authenticate");
			if (!www) {
				sw_http_response_free(out);
				return sw_error_lib(err, SW_ERR_AUTH, SW_ERRSRC_HTTP, 401,
				                    "%s: HTTP 401 for repository %s without a "
				                    "WWW-Authenticate challenge",
				                    r->host, call->repo);
			}
			free(extra);
			extra = NULL;
			rc = sw_oci__auth_challenged(&extra, r->auth, www, err);
			sw_http_response_free(out);
			if (rc < 0)
				return rc;
			continue;
		}
		if (out->status == 403 && mine) {
			cleanup_free char *d = registry_errors(out);
			sw_http_response_free(out);
			return sw_error_lib(err, SW_ERR_AUTH, SW_ERRSRC_HTTP, 403,
			                    "%s: access to repository %s denied (HTTP 403)%s",
			                    r->host, call->repo, d);
		}
		return 0;
	}
}

static char *scope_for(const char *repo, bool push, const char *mount_from)
{
	if (mount_from)
		return sw_xasprintf("repository:%s:pull,push repository:%s:pull", repo, mount_from);
	return sw_xasprintf("repository:%s:%s", repo, push ? "pull,push" : "pull");
}

/* ---------------------------------------------------------------- manifests */

/* The media type of a Content-Type value without parameters (malloc'd), or NULL. */
static char *content_type_of(const sw_http_response *resp)
{
	const char *ct = sw_http_response_header(resp, "Content-Type");
	if (!ct)
		return NULL;
	size_t n = strcspn(ct, "; \t");
	return n ? sw_xstrndup(ct, n) : NULL;
}

/*
 * GET /v2/REPO/manifests/REFERENCE: verified against Docker-Content-Digest, `expect` (may be
 * NULL) and `expect_size` (-1: any), and parsed (manifest or index) for validation.
 */
static int fetch_manifest(char **out, size_t *out_len, sw_oci_descriptor *out_desc,
                          sw_oci_registry *r, const char *repo, const char *reference,
                          const sw_digest *expect, int64_t expect_size, sw_error **err)
{
	*out = NULL;
	memset(out_desc, 0, sizeof(*out_desc));
	cleanup_free char *url = sw_xasprintf("%s%s/manifests/%s", r->base, repo, reference);
	cleanup_free char *scope = scope_for(repo, false, NULL);
	const char *hdrs[] = { accept_manifests, NULL };
	reg_call call;
	memset(&call, 0, sizeof(call));
	call.req.method = "GET";
	call.req.url = url;
	call.req.headers = hdrs;
	call.req.max_body = SW_OCI_MAX_MANIFEST_BYTES;
	call.req.follow_redirects = true;
	call.scope = scope;
	call.repo = repo;
	sw_http_response resp;
	int rc = reg_do(&resp, r, r->http, &call, err);
	if (rc < 0)
		return sw_error_wrap(err, "manifest %s", reference);
	if (resp.status == 404) {
		rc = http_fail(err, &resp, "manifest %s not found", reference);
		sw_http_response_free(&resp);
		return rc;
	}
	if (resp.status != 200) {
		rc = http_fail(err, &resp, "GET manifest %s", reference);
		sw_http_response_free(&resp);
		return rc;
	}
	size_t len = 0;
	cleanup_free char *ct = content_type_of(&resp);
	cleanup_free char *dcd =
	        dup_or_null(sw_http_response_header(&resp, "Docker-Content-Digest"));
	cleanup_free char *buf = sw_buf_steal(&resp.body, &len);
	sw_http_response_free(&resp);

	sw_digest got;
	sw_oci_digest_bytes(&got, buf, len);
	if (dcd && strncmp(dcd, "sha256:", 7) == 0) {
		sw_digest claimed;
		if (sw_oci_digest_parse(&claimed, dcd, err) < 0)
			return sw_error_wrap(err, "manifest %s: Docker-Content-Digest", reference);
		if (!sw_oci_digest_eq(&claimed, &got))
			return sw_error_set(
			        err, SW_ERR_INVALID,
			        "manifest %s: the registry says its digest is %s but the "
			        "content received hashes to %s",
			        reference, claimed.s, got.s);
	}
	if (expect && sw_oci_digest_is_set(expect) && !sw_oci_digest_eq(expect, &got))
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "manifest %s: content received hashes to %s, not the digest asked "
		        "for",
		        reference, got.s);
	if (expect_size >= 0 && (int64_t)len != expect_size)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "manifest %s: %zu bytes received, the index says %lld",
		                    reference, len, (long long)expect_size);
	const char *mt = sw_oci_media_type_sniff(buf, len);
	if (!mt && ct && (sw_oci_media_type_is_index(ct) || sw_oci_media_type_is_manifest(ct)))
		mt = ct;
	if (!mt)
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "manifest %s: unsupported media type '%s' (slipway reads OCI and "
		        "Docker schema 2 manifests and indexes)",
		        reference, ct ? ct : "none");
	if (sw_oci_media_type_is_index(mt)) {
		sw_oci_index ix;
		if (sw_oci_index_parse(&ix, buf, len, NULL, err) < 0)
			return sw_error_wrap(err, "%s/%s@%s", r->host, repo, got.s);
		sw_oci_index_clear(&ix);
	} else {
		sw_oci_manifest m;
		if (sw_oci_manifest_parse(&m, buf, len, NULL, err) < 0)
			return sw_error_wrap(err, "%s/%s@%s", r->host, repo, got.s);
		sw_oci_manifest_clear(&m);
	}
	out_desc->media_type = sw_xstrdup(mt);
	out_desc->digest = got;
	out_desc->size = (int64_t)len;
	*out_len = len;
	*out = steal_pointer(&buf);
	return 0;
}

int sw_oci_registry_get_manifest(char **out, size_t *out_len, sw_oci_descriptor *out_desc,
                                 sw_oci_registry *r, const sw_oci_ref *ref, sw_error **err)
{
	const char *reference = sw_oci_digest_is_set(&ref->digest) ? ref->digest.s : ref->tag;
	if (!reference)
		return sw_error_set(err, SW_ERR_INVALID, "reference without tag or digest");
	if (fetch_manifest(out, out_len, out_desc, r, ref->repository, reference, &ref->digest, -1,
	                   err) < 0) {
		cleanup_free char *m = ref_msg(r, ref);
		return sw_error_wrap(err, "get %s", m);
	}
	return 0;
}

/* ---------------------------------------------------------------- blob downloads */

typedef struct dl_ctx {
	sw_oci_registry *r;
	sw_oci_store *s;
	sw_oci_blob_writer *w;
	int64_t expected;
	int side_fd; /* a resumed attempt's body goes here until its status is known */
	int64_t side_len;
	bool to_side;
	sw_buf pending; /* the first bytes of an attempt, held until its status is known */
	bool streaming;
	sw_error *fatal;
} dl_ctx;

static int dl_sink(dl_ctx *c, const void *data, size_t len)
{
	if (!len)
		return 0;
	if (c->to_side) {
		if (c->side_len + (int64_t)len > c->expected) {
			sw_error_set(&c->fatal, SW_ERR_INVALID,
			             "the registry sent more than the %lld bytes of the descriptor",
			             (long long)c->expected);
			return SW_ERR_INVALID;
		}
		sw_error *e = NULL;
		if (sw_fs_write_all(c->side_fd, data, len, &e) < 0) {
			c->fatal = e;
			return sw_error_code_of(e);
		}
		c->side_len += (int64_t)len;
	} else {
		if (sw_oci_blob_writer_size(c->w) + (int64_t)len > c->expected) {
			sw_error_set(&c->fatal, SW_ERR_INVALID,
			             "the registry sent more than the %lld bytes of the descriptor",
			             (long long)c->expected);
			return SW_ERR_INVALID;
		}
		if (sw_oci_blob_writer_write(c->w, data, len, &c->fatal) < 0)
			return sw_error_code_of(c->fatal);
	}
	stat_add(c->r, &c->r->stats.bytes_down, len);
	return 0;
}

static int dl_write_cb(const void *data, size_t len, void *payload)
{
	dl_ctx *c = payload;
	if (!c->to_side && !c->streaming) {
		if (c->pending.len + len <= REG_PENDING_MAX)
			return sw_buf_append(&c->pending, data, len, NULL);
		c->streaming = true;
		int rc = dl_sink(c, c->pending.data, c->pending.len);
		sw_buf_reset(&c->pending);
		if (rc < 0)
			return rc;
	}
	return dl_sink(c, data, len);
}

/* Empty the side file for the next attempt. */
static int dl_side_reset(dl_ctx *c)
{
	if (ftruncate(c->side_fd, 0) < 0 || lseek(c->side_fd, 0, SEEK_SET) < 0)
		return -1;
	c->side_len = 0;
	return 0;
}

static int dl_restart(void *payload)
{
	dl_ctx *c = payload;
	if (c->streaming && !c->to_side)
		return -1; /* bytes of a 401 answer reached the writer: start over */
	sw_buf_reset(&c->pending);
	if (c->to_side)
		return dl_side_reset(c);
	return 0;
}

/* Copy the side file into the writer. */
static int dl_side_to_writer(dl_ctx *c, sw_error **err)
{
	if (lseek(c->side_fd, 0, SEEK_SET) < 0)
		return sw_error_os(err, errno, "resumed download: seek");
	cleanup_free char *buf = sw_xmalloc(REG_COPY_BUF);
	int64_t left = c->side_len;
	while (left > 0) {
		ssize_t n = read(c->side_fd, buf,
		                 left < (int64_t)REG_COPY_BUF ? (size_t)left : REG_COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return sw_error_os(err, n < 0 ? errno : EIO, "resumed download: read");
		if (sw_oci_blob_writer_size(c->w) + n > c->expected)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "the registry sent more than the %lld bytes of the "
			                    "descriptor",
			                    (long long)c->expected);
		if (sw_oci_blob_writer_write(c->w, buf, (size_t)n, err) < 0)
			return sw_error_code_of(*err);
		left -= n;
	}
	if (dl_side_reset(c) < 0)
		return sw_error_os(err, errno, "resumed download: truncate");
	return 0;
}

static int open_side_file(int *out, sw_oci_store *s, sw_error **err)
{
	const char *dir = sw_oci_store_dir(s);
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0) {
		*out = fd;
		return 0;
	}
	cleanup_free char *tmpl = sw_xasprintf("%s/.slipway-resume-XXXXXX", dir);
	fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "create %s", tmpl);
	unlink(tmpl);
	*out = fd;
	return 0;
}

/* "bytes START-END/TOTAL" -> START, or -1. */
static int64_t content_range_start(const char *v)
{
	if (!v)
		return -1;
	while (*v == ' ')
		v++;
	if (strncasecmp(v, "bytes", 5) == 0)
		v += 5;
	while (*v == ' ' || *v == '=')
		v++;
	char *end = NULL;
	errno = 0;
	long long s = strtoll(v, &end, 10);
	if (errno || end == v || *end != '-')
		return -1;
	return s;
}

/* Download one blob into the store, verified; resumed or restarted when interrupted. */
static int download_blob(sw_oci_registry *r, sw_http_client *http, sw_oci_store *s,
                         const char *repo, const sw_oci_descriptor *desc, sw_error **err)
{
	cleanup_free char *url = sw_xasprintf("%s%s/blobs/%s", r->base, repo, desc->digest.s);
	cleanup_free char *scope = scope_for(repo, false, NULL);
	dl_ctx c;
	memset(&c, 0, sizeof(c));
	c.r = r;
	c.s = s;
	c.expected = desc->size;
	c.side_fd = -1;
	sw_buf_init(&c.pending, REG_PENDING_MAX);
	int rc = 0;
	sw_error *last = NULL;
	if ((rc = sw_oci_store_blob_begin(&c.w, s, err)) < 0)
		goto out;
	int stalls = 0;
	for (int attempt = 1;; attempt++) {
		int64_t offset = sw_oci_blob_writer_size(c.w);
		if (offset == c.expected && attempt > 1)
			break;
		c.to_side = offset > 0;
		c.streaming = false;
		sw_buf_reset(&c.pending);
		if (c.to_side && c.side_fd < 0 && (rc = open_side_file(&c.side_fd, s, err)) < 0)
			goto out;
		cleanup_free char *range =
		        offset > 0 ? sw_xasprintf("Range: bytes=%lld-", (long long)offset) : NULL;
		const char *hdrs[] = { range, NULL };
		reg_call call;
		memset(&call, 0, sizeof(call));
		call.req.method = "GET";
		call.req.url = url;
		call.req.headers = hdrs;
		call.req.write_cb = dl_write_cb;
		call.req.write_payload = &c;
		call.req.follow_redirects = true;
		call.req.no_retry = true; /* retried here, resuming where it stopped */
		call.scope = scope;
		call.repo = repo;
		call.restart = dl_restart;
		call.restart_payload = &c;
		call.keep_failed = true;
		sw_http_response resp;
		long retry_after = -1;
		sw_error_clear(&last);
		rc = reg_do(&resp, r, http, &call, &last);
		if (c.fatal) {
			sw_http_response_free(&resp);
			rc = err_take(err, &c.fatal);
			goto out;
		}
		if (rc == SW_ERR_AUTH) {
			sw_http_response_free(&resp);
			rc = err_take(err, &last);
			goto out;
		}
		/* a cut transfer keeps the status of its answer (0: none came) */
		long st = resp.status;
		bool ok = st == 200 || st == 206;
		if (c.to_side) {
			/* where the body started decides what to do with it */
			int64_t start = st == 206 ? content_range_start(sw_http_response_header(
			                                    &resp, "Content-Range"))
			                          : -1;
			int r2 = 0;
			if (st == 206 && start == offset) {
				r2 = dl_side_to_writer(&c, err);
			} else if (st == 200) {
				/* no Range support: the body is the blob from its start */
				sw_oci_blob_writer_abort(c.w);
				c.w = NULL;
				r2 = sw_oci_store_blob_begin(&c.w, s, err);
				if (r2 == 0)
					r2 = dl_side_to_writer(&c, err);
			} else if (dl_side_reset(&c) < 0) {
				r2 = sw_error_os(err, errno, "resumed download: truncate");
			}
			if (r2 < 0) {
				sw_http_response_free(&resp);
				rc = r2;
				goto out;
			}
		} else if (ok) {
			if (dl_sink(&c, c.pending.data, c.pending.len) < 0) {
				sw_http_response_free(&resp);
				rc = err_take(err, &c.fatal);
				goto out;
			}
		} else if (c.streaming && st != 0) {
			/* a long error answer went into the writer: start again */
			sw_oci_blob_writer_abort(c.w);
			c.w = NULL;
			if ((rc = sw_oci_store_blob_begin(&c.w, s, err)) < 0) {
				sw_http_response_free(&resp);
				goto out;
			}
		}
		sw_buf_reset(&c.pending);
		if (rc == 0 && !ok) {
			bool retryable = st == 408 || st == 429 || st >= 500;
			if (!retryable) {
				rc = http_fail(err, &resp, "GET blob");
				sw_http_response_free(&resp);
				goto out;
			}
			http_fail(&last, &resp, "GET blob");
			retry_after = sw_http_retry_after_ms(
			        sw_http_response_header(&resp, "Retry-After"));
		}
		sw_http_response_free(&resp);
		int64_t have = sw_oci_blob_writer_size(c.w);
		if (rc == 0 && ok && have == c.expected)
			break;
		if (rc == 0 && ok)
			sw_error_set(&last, SW_ERR_GENERIC,
			             "the answer ended after %lld of %lld bytes", (long long)have,
			             (long long)c.expected);
		stalls = have > offset ? 0 : stalls + 1;
		if (attempt >= REG_DOWNLOAD_ATTEMPTS || stalls >= REG_DOWNLOAD_STALLS) {
			rc = err_take(err, &last);
			rc = sw_error_wrap(err, "gave up after %d attempts", attempt);
			goto out;
		}
		SW_LOG(SW_LOG_DEBUG, "%s/%s: blob %s: attempt %d: %s; again from byte %lld",
		       r->host, repo, desc->digest.s, attempt, sw_error_msg(last), (long long)have);
		rc = 0;
		sw_http_client_backoff(http, stalls > 0 ? stalls : 1, retry_after);
	}
	sw_digest got;
	int64_t size = 0;
	rc = sw_oci_blob_writer_commit(&got, &size, c.w, &desc->digest, err);
	c.w = NULL;
	if (rc < 0)
		goto out;
	stat_add(r, &r->stats.blobs_downloaded, 1);
out:
	if (c.w)
		sw_oci_blob_writer_abort(c.w);
	if (c.side_fd >= 0)
		close(c.side_fd);
	sw_buf_free(&c.pending);
	sw_error_free(last);
	sw_error_free(c.fatal);
	if (rc < 0)
		return sw_error_wrap(err, "blob %s", desc->digest.s);
	return 0;
}

int sw_oci_registry_get_blob(char **out, size_t *out_len, sw_oci_registry *r, const sw_oci_ref *ref,
                             const sw_oci_descriptor *desc, size_t max, sw_error **err)
{
	*out = NULL;
	if (desc->size < 0 || (uint64_t)desc->size > max)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "blob %s: %lld bytes is more than the %zu allowed",
		                    desc->digest.s, (long long)desc->size, max);
	cleanup_free char *url =
	        sw_xasprintf("%s%s/blobs/%s", r->base, ref->repository, desc->digest.s);
	cleanup_free char *scope = scope_for(ref->repository, false, NULL);
	reg_call call;
	memset(&call, 0, sizeof(call));
	call.req.method = "GET";
	call.req.url = url;
	call.req.max_body = max > 0 ? max : 1;
	call.req.follow_redirects = true;
	call.scope = scope;
	call.repo = ref->repository;
	sw_http_response resp;
	int rc = reg_do(&resp, r, r->http, &call, err);
	if (rc < 0)
		return sw_error_wrap(err, "blob %s", desc->digest.s);
	if (resp.status != 200) {
		rc = http_fail(err, &resp, "GET blob %s", desc->digest.s);
		sw_http_response_free(&resp);
		return rc;
	}
	size_t len = 0;
	char *buf = sw_buf_steal(&resp.body, &len);
	sw_http_response_free(&resp);
	sw_digest got;
	sw_oci_digest_bytes(&got, buf, len);
	if ((int64_t)len != desc->size || !sw_oci_digest_eq(&got, &desc->digest)) {
		free(buf);
		return sw_error_set(err, SW_ERR_INVALID,
		                    "blob %s: the registry sent %zu bytes hashing to %s",
		                    desc->digest.s, len, got.s);
	}
	stat_add(r, &r->stats.blobs_downloaded, 1);
	stat_add(r, &r->stats.bytes_down, len);
	*out = buf;
	if (out_len)
		*out_len = len;
	return 0;
}

/* ---------------------------------------------------------------- pull */

static int pull_blob(sw_oci_registry *r, sw_oci_store *s, const char *repo,
                     const sw_oci_descriptor *d, sw_error **err)
{
	if (!sw_oci_store_has_blob(s, &d->digest)) {
		SW_LOG(SW_LOG_DEBUG, "%s/%s: download %s (%lld bytes)", r->host, repo, d->digest.s,
		       (long long)d->size);
		if (download_blob(r, r->http, s, repo, d, err) < 0)
			return sw_error_code_of(*err);
	}
	/* the registry holds it in this repository: a later push elsewhere can mount it */
	sw_error *e = NULL;
	if (sw_oci_store_note_source(s, &d->digest, r->host, repo, &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "note source of %s: %s", d->digest.s, sw_error_msg(e));
		sw_error_free(e);
	}
	return 0;
}

int sw_oci_registry_pull(sw_oci_descriptor *out, sw_oci_registry *r, sw_oci_store *s,
                         const sw_oci_ref *ref, const sw_oci_platform *want, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	cleanup_free char *what = ref_msg(r, ref);
	const char *repo = ref->repository;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	sw_oci_manifest m;
	memset(&m, 0, sizeof(m));
	const char *reference = sw_oci_digest_is_set(&ref->digest) ? ref->digest.s : ref->tag;
	if (!reference)
		return sw_error_set(err, SW_ERR_INVALID, "pull %s: no tag or digest", what);
	int rc = fetch_manifest(&buf, &len, &desc, r, repo, reference, &ref->digest, -1, err);
	if (rc < 0)
		return sw_error_wrap(err, "pull %s", what);
	if (sw_oci_media_type_is_index(desc.media_type)) {
		sw_oci_index ix;
		const sw_oci_descriptor *pick = NULL;
		if ((rc = sw_oci_index_parse(&ix, buf, len, NULL, err)) < 0)
			goto fail;
		if ((rc = sw_oci_index_select(&pick, &ix, want, err)) < 0) {
			sw_oci_index_clear(&ix);
			goto fail;
		}
		sw_oci_descriptor child;
		sw_oci_descriptor_copy(&child, pick);
		sw_oci_index_clear(&ix);
		free(buf);
		buf = NULL;
		sw_oci_descriptor_clear(&desc);
		rc = fetch_manifest(&buf, &len, &desc, r, repo, child.digest.s, &child.digest,
		                    child.size, err);
		sw_oci_descriptor_clear(&child);
		if (rc < 0)
			goto fail;
		if (!sw_oci_media_type_is_manifest(desc.media_type)) {
			rc = sw_error_set(err, SW_ERR_INVALID,
			                  "manifest %s of the index is a %s, not an image manifest",
			                  desc.digest.s, desc.media_type);
			goto fail;
		}
	}
	if ((rc = sw_oci_manifest_parse(&m, buf, len, NULL, err)) < 0)
		goto fail;
	if ((rc = pull_blob(r, s, repo, &m.config, err)) < 0)
		goto fail;
	for (size_t i = 0; i < m.n_layers; i++)
		if ((rc = pull_blob(r, s, repo, &m.layers[i], err)) < 0)
			goto fail;
	/* the manifest last, as it came: its bytes keep their digest */
	sw_digest stored;
	if ((rc = sw_oci_store_put_blob(&stored, s, buf, len, err)) < 0)
		goto fail;
	if (!sw_oci_digest_eq(&stored, &desc.digest)) {
		rc = sw_error_set(err, SW_ERR_INVALID, "manifest stored as %s, expected %s",
		                  stored.s, desc.digest.s);
		goto fail;
	}
	sw_oci_manifest_clear(&m);
	*out = desc;
	return 0;
fail:
	sw_oci_manifest_clear(&m);
	sw_oci_descriptor_clear(&desc);
	return sw_error_wrap(err, "pull %s", what);
}

/* ---------------------------------------------------------------- blob uploads */

typedef struct up_src {
	int fd;
	int64_t start;
	int64_t len;
	int64_t pos;
} up_src;

static ssize_t up_read_cb(void *buf, size_t len, void *payload)
{
	up_src *u = payload;
	int64_t left = u->len - u->pos;
	if (left <= 0)
		return 0;
	if ((int64_t)len > left)
		len = (size_t)left;
	for (;;) {
		ssize_t n = pread(u->fd, buf, len, (off_t)(u->start + u->pos));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			return -1; /* the file is shorter than it said */
		u->pos += n;
		return n;
	}
}

static int up_rewind_cb(void *payload)
{
	up_src *u = payload;
	u->pos = 0;
	return 0;
}

typedef struct push_ctx {
	sw_oci_registry *r;
	sw_oci_store *s;
	const char *repo;
	const char *scope; /* pull,push on repo */
} push_ctx;

typedef enum { BLOB_UPLOADED, BLOB_SKIPPED, BLOB_MOUNTED } blob_outcome;

/* HEAD /v2/REPO/blobs/DIGEST: *out true when the registry has it. */
static int blob_exists(bool *out, const push_ctx *p, sw_http_client *http,
                       const sw_oci_descriptor *d, sw_error **err)
{
	*out = false;
	cleanup_free char *url = sw_xasprintf("%s%s/blobs/%s", p->r->base, p->repo, d->digest.s);
	reg_call call;
	memset(&call, 0, sizeof(call));
	call.req.method = "HEAD";
	call.req.url = url;
	call.req.follow_redirects = true;
	call.req.max_body = REG_MAX_ERROR_BODY;
	call.scope = p->scope;
	call.repo = p->repo;
	sw_http_response resp;
	int rc = reg_do(&resp, p->r, http, &call, err);
	if (rc < 0)
		return sw_error_wrap(err, "HEAD blob");
	if (resp.status == 200) {
		*out = true;
	} else if (resp.status != 404) {
		rc = http_fail(err, &resp, "HEAD blob");
	}
	sw_http_response_free(&resp);
	return rc;
}

/* POST an upload session (or a mount). *out_location NULL with *out_mounted on a 201 mount. */
static int start_upload(char **out_location, bool *out_mounted, const push_ctx *p,
                        sw_http_client *http, const sw_oci_descriptor *d, const char *from,
                        sw_error **err)
{
	*out_location = NULL;
	*out_mounted = false;
	cleanup_free char *url = NULL;
	cleanup_free char *scope = NULL;
	if (from) {
		cleanup_free char *dq = sw_url_escape(d->digest.s);
		cleanup_free char *fq = sw_url_escape(from);
		url = sw_xasprintf("%s%s/blobs/uploads/?mount=%s&from=%s", p->r->base, p->repo, dq,
		                   fq);
		scope = scope_for(p->repo, true, from);
	} else {
		url = sw_xasprintf("%s%s/blobs/uploads/", p->r->base, p->repo);
	}
	const char *hdrs[] = { "Content-Type: application/octet-stream", NULL };
	reg_call call;
	memset(&call, 0, sizeof(call));
	call.req.method = "POST";
	call.req.url = url;
	call.req.headers = hdrs;
	call.req.body = "";
	call.req.body_len = 0;
	call.req.max_body = REG_MAX_ERROR_BODY;
	call.scope = scope ? scope : p->scope;
	call.repo = p->repo;
	sw_http_response resp;
	int rc = reg_do(&resp, p->r, http, &call, err);
	if (rc < 0)
		return sw_error_wrap(err, "POST upload");
	if (from && resp.status == 201) {
		*out_mounted = true;
		sw_http_response_free(&resp);
		return 0;
	}
	const char *loc = sw_http_response_header(&resp, "Location");
	if (resp.status != 202 || !loc || !loc[0]) {
		rc = resp.status == 202 ? sw_error_set(err, SW_ERR_GENERIC,
		                                       "POST upload: HTTP 202 without a Location")
		                        : http_fail(err, &resp, "POST upload");
		sw_http_response_free(&resp);
		return rc;
	}
	*out_location = resolve_location(p->r, url, loc);
	sw_http_response_free(&resp);
	return 0;
}

/* Upload the blob's bytes into the session at *location (updated as the registry moves it). */
static int send_blob(const push_ctx *p, sw_http_client *http, const sw_oci_descriptor *d, int fd,
                     char **location, sw_error **err)
{
	sw_oci_registry *r = p->r;
	cleanup_free char *dq = sw_url_escape(d->digest.s);
	cleanup_free char *dparam = sw_xasprintf("digest=%s", dq);
	sw_http_response resp;
	int rc;
	if ((uint64_t)d->size > (uint64_t)r->opts.monolithic_max) {
		/* chunked: PATCH each piece, following the Location each answer gives */
		for (int64_t off = 0; off < d->size;) {
			int64_t n = d->size - off;
			if (n > (int64_t)r->opts.chunk_size)
				n = (int64_t)r->opts.chunk_size;
			cleanup_free char *cr =
			        sw_xasprintf("Content-Range: %lld-%lld", (long long)off,
			                     (long long)(off + n - 1));
			const char *hdrs[] = { "Content-Type: application/octet-stream", cr, NULL };
			up_src src = { .fd = fd, .start = off, .len = n, .pos = 0 };
			reg_call call;
			memset(&call, 0, sizeof(call));
			call.req.method = "PATCH";
			call.req.url = *location;
			call.req.headers = hdrs;
			call.req.read_cb = up_read_cb;
			call.req.rewind_cb = up_rewind_cb;
			call.req.read_payload = &src;
			call.req.body_size = n;
			call.req.max_body = REG_MAX_ERROR_BODY;
			/* a cut PATCH may have been half applied: the session starts over */
			call.req.no_retry = true;
			call.scope = p->scope;
			call.repo = p->repo;
			call.restart = up_rewind_cb;
			call.restart_payload = &src;
			if ((rc = reg_do(&resp, r, http, &call, err)) < 0)
				return sw_error_wrap(err, "PATCH bytes %lld-%lld", (long long)off,
				                     (long long)(off + n - 1));
			const char *loc = sw_http_response_header(&resp, "Location");
			if (resp.status != 202) {
				rc = http_fail(err, &resp, "PATCH bytes %lld-%lld", (long long)off,
				               (long long)(off + n - 1));
				sw_http_response_free(&resp);
				return rc;
			}
			if (loc && loc[0]) {
				char *nl = resolve_location(r, *location, loc);
				free(*location);
				*location = nl;
			}
			sw_http_response_free(&resp);
			off += n;
		}
		cleanup_free char *url = url_join_query(*location, dparam);
		const char *hdrs[] = { "Content-Type: application/octet-stream", NULL };
		reg_call call;
		memset(&call, 0, sizeof(call));
		call.req.method = "PUT";
		call.req.url = url;
		call.req.headers = hdrs;
		call.req.body = "";
		call.req.body_len = 0;
		call.req.max_body = REG_MAX_ERROR_BODY;
		call.scope = p->scope;
		call.repo = p->repo;
		if ((rc = reg_do(&resp, r, http, &call, err)) < 0)
			return sw_error_wrap(err, "PUT (close upload)");
	} else {
		cleanup_free char *url = url_join_query(*location, dparam);
		const char *hdrs[] = { "Content-Type: application/octet-stream", NULL };
		up_src src = { .fd = fd, .start = 0, .len = d->size, .pos = 0 };
		reg_call call;
		memset(&call, 0, sizeof(call));
		call.req.method = "PUT";
		call.req.url = url;
		call.req.headers = hdrs;
		if (d->size > 0) {
			call.req.read_cb = up_read_cb;
			call.req.rewind_cb = up_rewind_cb;
			call.req.read_payload = &src;
			call.req.body_size = d->size;
		} else {
			call.req.body = "";
			call.req.body_len = 0;
		}
		call.req.max_body = REG_MAX_ERROR_BODY;
		call.scope = p->scope;
		call.repo = p->repo;
		call.restart = up_rewind_cb;
		call.restart_payload = &src;
		if ((rc = reg_do(&resp, r, http, &call, err)) < 0)
			return sw_error_wrap(err, "PUT");
	}
	if (resp.status != 201 && resp.status != 204 && resp.status != 200) {
		rc = http_fail(err, &resp, "PUT");
		sw_http_response_free(&resp);
		return rc;
	}
	const char *dcd = sw_http_response_header(&resp, "Docker-Content-Digest");
	if (dcd && strncmp(dcd, "sha256:", 7) == 0 && strcmp(dcd, d->digest.s) != 0) {
		rc = sw_error_set(err, SW_ERR_INVALID, "PUT: the registry stored the blob as %.80s",
		                  dcd);
		sw_http_response_free(&resp);
		return rc;
	}
	sw_http_response_free(&resp);
	return 0;
}

/* A local failure (the store) or an auth failure is final; the rest gets a new session. */
static bool session_error_final(const sw_error *e)
{
	if (!e)
		return false;
	if (e->code == SW_ERR_AUTH)
		return true;
	return e->source == SW_ERRSRC_OS;
}

/* One blob: HEAD, mount, or upload (restarting the session a bounded number of times). */
static int push_blob(blob_outcome *out, const push_ctx *p, sw_http_client *http,
                     const sw_oci_descriptor *d, const char *from, sw_error **err)
{
	sw_oci_registry *r = p->r;
	bool exists = false;
	if (blob_exists(&exists, p, http, d, err) < 0)
		return sw_error_code_of(*err);
	if (exists) {
		*out = BLOB_SKIPPED;
		return 0;
	}
	cleanup_close int fd = -1;
	int64_t size = 0;
	if (sw_oci_store_open_blob(&fd, &size, p->s, &d->digest, err) < 0)
		return sw_error_wrap(err, "read from the store");
	if (size != d->size)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "the store's file has %lld bytes, the descriptor says %lld",
		                    (long long)size, (long long)d->size);
	sw_error *last = NULL;
	for (int session = 1;; session++) {
		cleanup_free char *loc = NULL;
		bool mounted = false;
		const char *mount = session == 1 ? from : NULL;
		int rc = start_upload(&loc, &mounted, p, http, d, mount, &last);
		if (rc == SW_ERR_AUTH && mount) {
			/* no pull right on the other repository: upload instead */
			SW_LOG(SW_LOG_DEBUG, "%s/%s: mount of %s from %s refused: %s", r->host,
			       p->repo, d->digest.s, mount, sw_error_msg(last));
			sw_error_clear(&last);
			rc = start_upload(&loc, &mounted, p, http, d, NULL, &last);
		}
		if (rc == 0 && mounted) {
			SW_LOG(SW_LOG_DEBUG, "%s/%s: mounted %s from %s", r->host, p->repo,
			       d->digest.s, from);
			*out = BLOB_MOUNTED;
			return 0;
		}
		if (rc == 0)
			rc = send_blob(p, http, d, fd, &loc, &last);
		if (rc == 0) {
			*out = BLOB_UPLOADED;
			return 0;
		}
		if (session_error_final(last) || session >= REG_UPLOAD_SESSIONS) {
			err_take(err, &last);
			if (session > 1)
				return sw_error_wrap(err, "after %d upload sessions", session);
			return sw_error_code_of(*err);
		}
		SW_LOG(SW_LOG_DEBUG, "%s/%s: upload of %s failed (%s); new session", r->host,
		       p->repo, d->digest.s, sw_error_msg(last));
		sw_error_clear(&last);
		sw_http_client_backoff(http, session, -1);
	}
}

typedef struct blob_job {
	const sw_oci_descriptor *desc;
	char *from;
	blob_outcome outcome;
	int rc;
	sw_error *err;
	bool done;
} blob_job;

typedef struct job_queue {
	const push_ctx *p;
	blob_job *jobs;
	size_t n;
	size_t next;
	bool failed;
	pthread_mutex_t lock;
} job_queue;

typedef struct worker {
	job_queue *q;
	sw_http_client *http;
	pthread_t thread;
} worker;

static void run_job(const push_ctx *p, sw_http_client *http, blob_job *j)
{
	j->rc = push_blob(&j->outcome, p, http, j->desc, j->from, &j->err);
	if (j->rc < 0)
		sw_error_wrap(&j->err, "upload blob %s", j->desc->digest.s);
	j->done = true;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	job_queue *q = w->q;
	for (;;) {
		pthread_mutex_lock(&q->lock);
		if (q->failed || q->next >= q->n) {
			pthread_mutex_unlock(&q->lock);
			return NULL;
		}
		blob_job *j = &q->jobs[q->next++];
		pthread_mutex_unlock(&q->lock);
		run_job(q->p, w->http, j);
		if (j->rc < 0) {
			pthread_mutex_lock(&q->lock);
			q->failed = true;
			pthread_mutex_unlock(&q->lock);
		}
	}
}

/* Push a set of blobs, up to REG_PUSH_WORKERS at once. Fails unless every one is confirmed. */
static int push_blob_set(const push_ctx *p, const sw_oci_descriptor *const *descs, size_t n,
                         sw_error **err)
{
	sw_oci_registry *r = p->r;
	if (n == 0)
		return 0;
	blob_job *jobs = sw_xcalloc(n, sizeof(*jobs));
	for (size_t i = 0; i < n; i++) {
		jobs[i].desc = descs[i];
		jobs[i].from = sw_oci_store_find_source(p->s, &descs[i]->digest, r->host, p->repo);
	}
	job_queue q = { .p = p, .jobs = jobs, .n = n };
	pthread_mutex_init(&q.lock, NULL);
	size_t nw = n < REG_PUSH_WORKERS ? n : REG_PUSH_WORKERS;
	int rc = 0;
	if (nw <= 1) {
		for (size_t i = 0; i < n && rc == 0; i++) {
			run_job(p, r->http, &jobs[i]);
			rc = jobs[i].rc;
		}
	} else {
		worker ws[REG_PUSH_WORKERS];
		size_t started = 0;
		memset(ws, 0, sizeof(ws));
		for (size_t i = 0; i < nw; i++) {
			ws[i].q = &q;
			if (i == 0) {
				ws[i].http = r->http;
			} else if (sw_http_client_new(&ws[i].http, &r->opts.http, err) < 0) {
				rc = sw_error_code_of(*err);
				break;
			}
		}
		for (size_t i = 0; rc == 0 && i < nw; i++) {
			if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
				rc = sw_error_os(err, errno, "start an upload thread");
				pthread_mutex_lock(&q.lock);
				q.failed = true;
				pthread_mutex_unlock(&q.lock);
				break;
			}
			started++;
		}
		for (size_t i = 0; i < started; i++)
			pthread_join(ws[i].thread, NULL);
		for (size_t i = 1; i < nw; i++)
			sw_http_client_free(ws[i].http);
	}
	/* the first failure in blob order is the one reported */
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].done && jobs[i].rc < 0) {
			if (rc == 0)
				rc = jobs[i].rc;
			err_take(err, &jobs[i].err);
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (rc == 0 && !jobs[i].done)
			rc = sw_error_set(err, SW_ERR_GENERIC, "blob %s was not pushed",
			                  jobs[i].desc->digest.s);
		if (jobs[i].done && jobs[i].rc == 0) {
			switch (jobs[i].outcome) {
			case BLOB_UPLOADED:
				stat_add(r, &r->stats.blobs_uploaded, 1);
				stat_add(r, &r->stats.bytes_up, (uint64_t)jobs[i].desc->size);
				break;
			case BLOB_SKIPPED:
				stat_add(r, &r->stats.blobs_skipped, 1);
				break;
			case BLOB_MOUNTED:
				stat_add(r, &r->stats.blobs_mounted, 1);
				break;
			}
			sw_error *e = NULL;
			if (sw_oci_store_note_source(p->s, &jobs[i].desc->digest, r->host, p->repo,
			                             &e) < 0) {
				SW_LOG(SW_LOG_DEBUG, "note source: %s", sw_error_msg(e));
				sw_error_free(e);
			}
		}
		free(jobs[i].from);
		sw_error_free(jobs[i].err);
	}
	pthread_mutex_destroy(&q.lock);
	free(jobs);
	return rc;
}

/* ---------------------------------------------------------------- push */

static int put_manifest(const push_ctx *p, const char *reference, const char *media_type,
                        const char *buf, size_t len, const sw_digest *digest, sw_error **err)
{
	cleanup_free char *url = sw_xasprintf("%s%s/manifests/%s", p->r->base, p->repo, reference);
	cleanup_free char *ct = sw_xasprintf("Content-Type: %s", media_type);
	const char *hdrs[] = { ct, NULL };
	reg_call call;
	memset(&call, 0, sizeof(call));
	call.req.method = "PUT";
	call.req.url = url;
	call.req.headers = hdrs;
	call.req.body = buf;
	call.req.body_len = len;
	call.req.max_body = REG_MAX_ERROR_BODY;
	call.scope = p->scope;
	call.repo = p->repo;
	sw_http_response resp;
	int rc = reg_do(&resp, p->r, p->r->http, &call, err);
	if (rc < 0)
		return sw_error_wrap(err, "put manifest %s", digest->s);
	if (resp.status != 201 && resp.status != 200 && resp.status != 204) {
		rc = http_fail(err, &resp, "put manifest %s", digest->s);
		sw_http_response_free(&resp);
		return rc;
	}
	const char *dcd = sw_http_response_header(&resp, "Docker-Content-Digest");
	if (dcd && strncmp(dcd, "sha256:", 7) == 0 && strcmp(dcd, digest->s) != 0) {
		rc = sw_error_set(err, SW_ERR_INVALID,
		                  "put manifest %s: the registry stored it as %.80s", digest->s,
		                  dcd);
		sw_http_response_free(&resp);
		return rc;
	}
	sw_http_response_free(&resp);
	return 0;
}

static int push_manifest_image(const push_ctx *p, const sw_oci_descriptor *desc,
                               const char *reference, sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (sw_oci_store_read_blob(&buf, &len, p->s, &desc->digest, SW_OCI_MAX_MANIFEST_BYTES,
	                           err) < 0)
		return sw_error_wrap(err, "manifest %s", desc->digest.s);
	const char *mt = desc->media_type ? desc->media_type : sw_oci_media_type_sniff(buf, len);
	if (!mt)
		mt = SW_OCI_MT_MANIFEST;
	sw_oci_manifest m;
	if (sw_oci_manifest_parse(&m, buf, len, NULL, err) < 0)
		return sw_error_wrap(err, "manifest %s", desc->digest.s);
	/* layers first (in parallel), then the config, then the manifest */
	const sw_oci_descriptor **descs = sw_xcalloc(m.n_layers + 1, sizeof(*descs));
	size_t n = 0;
	for (size_t i = 0; i < m.n_layers; i++) {
		bool dup = false;
		for (size_t k = 0; k < n; k++)
			dup = dup || sw_oci_digest_eq(&descs[k]->digest, &m.layers[i].digest);
		if (!dup)
			descs[n++] = &m.layers[i];
	}
	int rc = push_blob_set(p, descs, n, err);
	if (rc == 0) {
		bool dup = false;
		for (size_t k = 0; k < n; k++)
			dup = dup || sw_oci_digest_eq(&descs[k]->digest, &m.config.digest);
		const sw_oci_descriptor *cfg = &m.config;
		if (!dup)
			rc = push_blob_set(p, &cfg, 1, err);
	}
	free(descs);
	if (rc == 0)
		rc = put_manifest(p, reference ? reference : desc->digest.s, mt, buf, len,
		                  &desc->digest, err);
	sw_oci_manifest_clear(&m);
	return rc;
}

static int push_any(const push_ctx *p, const sw_oci_descriptor *desc, const char *reference,
                    int depth, sw_error **err)
{
	if (!desc->media_type || !sw_oci_media_type_is_index(desc->media_type))
		return push_manifest_image(p, desc, reference, err);
	if (depth > 2)
		return sw_error_set(err, SW_ERR_INVALID, "index %s: nested too deep",
		                    desc->digest.s);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (sw_oci_store_read_blob(&buf, &len, p->s, &desc->digest, SW_OCI_MAX_MANIFEST_BYTES,
	                           err) < 0)
		return sw_error_wrap(err, "index %s", desc->digest.s);
	sw_oci_index ix;
	if (sw_oci_index_parse(&ix, buf, len, NULL, err) < 0)
		return sw_error_wrap(err, "index %s", desc->digest.s);
	int rc = 0;
	for (size_t i = 0; i < ix.n_manifests && rc == 0; i++) {
		const sw_oci_descriptor *c = &ix.manifests[i];
		if (!sw_oci_store_has_blob(p->s, &c->digest)) {
			rc = sw_error_set(err, SW_ERR_NOT_FOUND,
			                  "index %s: manifest %s is not in the store (was only one "
			                  "platform pulled?)",
			                  desc->digest.s, c->digest.s);
			break;
		}
		rc = push_any(p, c, NULL, depth + 1, err);
	}
	if (rc == 0)
		rc = put_manifest(p, reference ? reference : desc->digest.s, desc->media_type, buf,
		                  len, &desc->digest, err);
	sw_oci_index_clear(&ix);
	return rc;
}

int sw_oci_registry_push(sw_oci_registry *r, sw_oci_store *s, const sw_oci_descriptor *desc,
                         const sw_oci_ref *ref, sw_error **err)
{
	cleanup_free char *what = ref_msg(r, ref);
	if (ref->tag == NULL && !sw_oci_digest_is_set(&ref->digest))
		return sw_error_set(err, SW_ERR_INVALID, "push %s: no tag or digest", what);
	if (sw_oci_digest_is_set(&ref->digest) && !sw_oci_digest_eq(&ref->digest, &desc->digest))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "push %s: the image's digest is %s, not the one named", what,
		                    desc->digest.s);
	cleanup_free char *scope = scope_for(ref->repository, true, NULL);
	push_ctx p = { .r = r, .s = s, .repo = ref->repository, .scope = scope };
	if (push_any(&p, desc, ref->tag ? ref->tag : desc->digest.s, 0, err) < 0)
		return sw_error_wrap(err, "push %s", what);
	return 0;
}
