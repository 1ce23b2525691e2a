/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one HTTP layer, over libcurl. A client owns one easy handle, reused across requests so
 * connections are kept alive; it is not thread-safe (one client per thread). sw_http_do sends a
 * request and retries connection errors and 408/429/5xx answers with exponential backoff and
 * full jitter, honouring Retry-After up to the backoff cap; a streamed body is resent only when
 * it can be rewound. Connect and stall (under 1 byte/s) timeouts bound every attempt, TLS peers
 * are always verified, and response headers and body are collected for the final answer only,
 * the body under a size cap. This file is libcurl's adapter to sw_error (source SW_ERRSRC_CURL).
 */
#include "common/common.h"
#include "version.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_STALL_TIMEOUT_S 30L
#define DEFAULT_MAX_RETRIES 4
#define DEFAULT_BACKOFF_BASE_MS 200L
#define DEFAULT_BACKOFF_MAX_MS 10000L
#define MAX_REDIRECTS 10L
#define MAX_HEADERS 500
#define RECV_BUFFER_SIZE (256L * 1024)
#define SEND_BUFFER_SIZE (256L * 1024)

#ifndef CURL_WRITEFUNC_ERROR
#define CURL_WRITEFUNC_ERROR 0
#endif

struct sw_http_client {
	CURL *curl;
	long connect_timeout_ms;
	long stall_timeout_s;
	long backoff_base_ms;
	long backoff_max_ms;
	int max_retries;
	char *ca_file;
	char *client_cert;
	char *client_key;
	char *user_agent;
	uint64_t requests;
	uint64_t rng;
	char errbuf[CURL_ERROR_SIZE];
};

/* The state of one sw_http_do, shared with the curl callbacks. */
struct xfer {
	const sw_http_request *req;
	sw_http_response *resp;
	size_t nheaders;
	size_t upload_off;  /* read position in an in-memory body */
	long status;        /* of the latest status line */
	bool discard_retry; /* another attempt may follow: drop bodies of retryable answers */
	bool too_big;
	bool too_many_headers;
	int cb_error; /* a negative code from a caller's callback */
	const char *cb_what;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static char *dup_or_null(const char *s)
{
	return s ? sw_xstrdup(s) : NULL;
}

int sw_http_client_new(sw_http_client **out, const sw_http_opts *opts, sw_error **err)
{
	*out = NULL;
	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK)
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_CURL, (int)global_rc,
		                    "initialise libcurl: %s", curl_easy_strerror(global_rc));
	sw_http_opts o = { 0 };
	if (opts)
		o = *opts;
	else
		o.max_retries = -1;
	sw_http_client *c = sw_xcalloc(1, sizeof(*c));
	c->curl = curl_easy_init();
	if (!c->curl) {
		free(c);
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_CURL, CURLE_FAILED_INIT,
		                    "create a libcurl handle");
	}
	c->connect_timeout_ms =
	        o.connect_timeout_ms > 0 ? o.connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	c->stall_timeout_s = o.stall_timeout_s > 0 ? o.stall_timeout_s : DEFAULT_STALL_TIMEOUT_S;
	c->max_retries = o.max_retries < 0 ? DEFAULT_MAX_RETRIES : o.max_retries;
	c->backoff_base_ms = o.backoff_base_ms > 0 ? o.backoff_base_ms : DEFAULT_BACKOFF_BASE_MS;
	c->backoff_max_ms = o.backoff_max_ms > 0 ? o.backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
	c->ca_file = dup_or_null(o.ca_file);
	c->client_cert = dup_or_null(o.client_cert);
	c->client_key = dup_or_null(o.client_key);
	c->user_agent = o.user_agent ? sw_xstrdup(o.user_agent) : sw_xstrdup("slipway/" SW_VERSION);
	if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != (ssize_t)sizeof(c->rng)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		c->rng = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec;
	}
	c->rng |= 1;
	*out = c;
	return 0;
}

void sw_http_client_free(sw_http_client *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->curl);
	free(c->ca_file);
	free(c->client_cert);
	free(c->client_key);
	free(c->user_agent);
	free(c);
}

uint64_t sw_http_client_requests(const sw_http_client *c)
{
	return c ? c->requests : 0;
}

static bool retryable_status(long status)
{
	return status == 408 || status == 429 || (status >= 500 && status <= 599);
}

static bool retryable_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_PARTIAL_FILE:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_HTTP3:
	case CURLE_QUIC_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

/* ---------------------------------------------------------------- curl callbacks */

static void reset_answer(struct xfer *x)
{
	sw_strv_free(x->resp->headers);
	x->resp->headers = NULL;
	x->nheaders = 0;
	sw_buf_reset(&x->resp->body);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t total = size * nitems, len = total;
	while (len && (buf[len - 1] == '\r' || buf[len - 1] == '\n' || buf[len - 1] == ' ' ||
	               buf[len - 1] == '\t'))
		len--;
	if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
		/* a new answer (after a redirect, a 1xx or a reconnect): start over */
		reset_answer(x);
		const char *p = memchr(buf, ' ', len);
		long status = 0;
		for (p = p ? p + 1 : buf + len; p < buf + len && *p >= '0' && *p <= '9'; p++)
			status = status * 10 + (*p - '0');
		x->status = status;
		return total;
	}
	if (len == 0)
		return total;
	char **h = x->resp->headers;
	if ((buf[0] == ' ' || buf[0] == '\t') && x->nheaders) {
		/* an obsolete folded line continues the previous header */
		size_t skip = strspn(buf, " \t");
		char *prev = h[x->nheaders - 1];
		h[x->nheaders - 1] = sw_xasprintf("%s %.*s", prev,
		                                  (int)(len > skip ? len - skip : 0), buf + skip);
		free(prev);
		return total;
	}
	if (x->nheaders >= MAX_HEADERS) {
		x->too_many_headers = true;
		return 0;
	}
	h = sw_xrealloc(h, (x->nheaders + 2) * sizeof(char *));
	h[x->nheaders++] = sw_xstrndup(buf, len);
	h[x->nheaders] = NULL;
	x->resp->headers = h;
	return total;
}

static size_t on_body(char *data, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	size_t len = size * nitems;
	if (x->discard_retry && retryable_status(x->status))
		return len;
	if (x->req->write_cb) {
		int r = x->req->write_cb(data, len, x->req->write_payload);
		if (r < 0) {
			x->cb_error = r;
			x->cb_what = "handling the response body";
			return CURL_WRITEFUNC_ERROR;
		}
		return len;
	}
	if (sw_buf_append(&x->resp->body, data, len, NULL) < 0) {
		x->too_big = true;
		return CURL_WRITEFUNC_ERROR;
	}
	return len;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct xfer *x = ud;
	const sw_http_request *req = x->req;
	size_t cap = size * nitems;
	if (req->read_cb) {
		ssize_t n = req->read_cb(buf, cap, req->read_payload);
		if (n < 0 || (size_t)n > cap) {
			x->cb_error = n < 0 && n >= INT_MIN ? (int)n : SW_ERR_INVALID;
			x->cb_what = "reading the request body";
			return CURL_READFUNC_ABORT;
		}
		return (size_t)n;
	}
	size_t left = req->body_len - x->upload_off;
	size_t n = left < cap ? left : cap;
	if (n)
		memcpy(buf, (const char *)req->body + x->upload_off, n);
	x->upload_off += n;
	return n;
}

/* curl rewinds the upload itself on redirects and when a reused connection died. */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
	struct xfer *x = ud;
	const sw_http_request *req = x->req;
	if (origin != SEEK_SET || offset < 0)
		return CURL_SEEKFUNC_CANTSEEK;
	if (req->read_cb) {
		if (offset != 0 || !req->rewind_cb)
			return CURL_SEEKFUNC_CANTSEEK;
		return req->rewind_cb(req->read_payload) == 0 ? CURL_SEEKFUNC_OK
		                                              : CURL_SEEKFUNC_FAIL;
	}
	if ((uint64_t)offset > req->body_len)
		return CURL_SEEKFUNC_FAIL;
	x->upload_off = (size_t)offset;
	return CURL_SEEKFUNC_OK;
}

/* ---------------------------------------------------------------- request set-up */

static struct curl_slist *slist_add(struct curl_slist *l, const char *s)
{
	struct curl_slist *n = curl_slist_append(l, s);
	if (!n) {
		fputs("slipway: out of memory\n", stderr);
		abort();
	}
	return n;
}

static bool header_named(const char *h, const char *name)
{
	size_t n = strlen(name);
	return strncasecmp(h, name, n) == 0 && (h[n] == ':' || h[n] == ';');
}

#define SET(opt, val)                                       \
	do {                                                \
		if (rc == CURLE_OK)                         \
			rc = curl_easy_setopt(h, opt, val); \
	} while (0)

static int setup(sw_http_client *c, struct xfer *x, const char *method, struct curl_slist **hdrs,
                 sw_error **err)
{
	const sw_http_request *req = x->req;
	CURL *h = c->curl;
	CURLcode rc = CURLE_OK;
	bool has_body = req->body != NULL || req->read_cb != NULL;
	bool is_post = strcmp(method, "POST") == 0;

	bool has_expect = false, has_ctype = false;
	for (size_t i = 0; req->headers && req->headers[i]; i++) {
		if (strpbrk(req->headers[i], "\r\n"))
			return sw_error_set(err, SW_ERR_INVALID, "HTTP header with a line break");
		has_expect |= header_named(req->headers[i], "Expect");
		has_ctype |= header_named(req->headers[i], "Content-Type");
		*hdrs = slist_add(*hdrs, req->headers[i]);
	}
	/* no "100-continue" round trip before bodies */
	if (!has_expect)
		*hdrs = slist_add(*hdrs, "Expect:");
	/* a POST gets no made-up "application/x-www-form-urlencoded" type */
	if (is_post && !has_ctype)
		*hdrs = slist_add(*hdrs, "Content-Type:");

	curl_easy_reset(h);
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_ERRORBUFFER, c->errbuf);
	SET(CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	SET(CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
	SET(CURLOPT_MAXREDIRS, MAX_REDIRECTS);
	SET(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
	SET(CURLOPT_LOW_SPEED_TIME, c->stall_timeout_s);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		SET(CURLOPT_CAINFO, c->ca_file);
	if (c->client_cert) {
		SET(CURLOPT_SSLCERT, c->client_cert);
		SET(CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (c->client_key) {
		SET(CURLOPT_SSLKEY, c->client_key);
		SET(CURLOPT_SSLKEYTYPE, "PEM");
	}
	SET(CURLOPT_USERAGENT, c->user_agent);
	SET(CURLOPT_HTTPHEADER, *hdrs);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, x);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, x);
	SET(CURLOPT_BUFFERSIZE, RECV_BUFFER_SIZE);

	if (strcmp(method, "HEAD") == 0) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "GET") == 0 && !has_body) {
		SET(CURLOPT_HTTPGET, 1L);
	} else if (is_post) {
		SET(CURLOPT_POST, 1L);
		if (req->read_cb) {
			SET(CURLOPT_READFUNCTION, on_read);
			SET(CURLOPT_READDATA, x);
			SET(CURLOPT_SEEKFUNCTION, on_seek);
			SET(CURLOPT_SEEKDATA, x);
			SET(CURLOPT_UPLOAD_BUFFERSIZE, SEND_BUFFER_SIZE);
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_size);
		} else {
			SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
			SET(CURLOPT_POSTFIELDS, req->body ? (const char *)req->body : "");
		}
	} else if (has_body || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0) {
		/* an upload: Content-Length from the size (0 for an empty body), chunked when
		 * a streamed body has no known size */
		SET(CURLOPT_UPLOAD, 1L);
		SET(CURLOPT_READFUNCTION, on_read);
		SET(CURLOPT_READDATA, x);
		SET(CURLOPT_SEEKFUNCTION, on_seek);
		SET(CURLOPT_SEEKDATA, x);
		SET(CURLOPT_UPLOAD_BUFFERSIZE, SEND_BUFFER_SIZE);
		SET(CURLOPT_INFILESIZE_LARGE,
		    (curl_off_t)(req->read_cb ? req->body_size : (int64_t)req->body_len));
		if (strcmp(method, "PUT") != 0)
			SET(CURLOPT_CUSTOMREQUEST, method);
	} else {
		SET(CURLOPT_CUSTOMREQUEST, method);
	}
	if (rc != CURLE_OK)
		return sw_error_lib(err, SW_ERR_GENERIC, SW_ERRSRC_CURL, (int)rc,
		                    "set up the request: %s", curl_easy_strerror(rc));
	return 0;
}

#undef SET

/* ---------------------------------------------------------------- retries */

static uint64_t next_random(sw_http_client *c)
{
	/* xorshift64*: plenty for jitter */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 0x2545F4914F6CDD1Dull;
}

/* Full jitter: a uniform wait in [0, min(max, base * 2^(attempt-1))]. */
static long backoff_ms(sw_http_client *c, int attempt)
{
	long cap = c->backoff_base_ms;
	for (int i = 1; i < attempt && cap < c->backoff_max_ms; i++)
		cap = cap > LONG_MAX / 2 ? LONG_MAX : cap * 2;
	if (cap > c->backoff_max_ms)
		cap = c->backoff_max_ms;
	return (long)(next_random(c) % ((uint64_t)cap + 1));
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void sw_http_client_backoff(sw_http_client *c, int attempt, long retry_after_ms)
{
	long wait = retry_after_ms;
	if (wait > c->backoff_max_ms)
		wait = c->backoff_max_ms;
	if (wait < 0)
		wait = backoff_ms(c, attempt);
	sleep_ms(wait);
}

static int curl_fail(sw_error **err, CURLcode cc, const char *method, const char *url,
                     const char *errbuf, int attempts)
{
	const char *text = errbuf[0] ? errbuf : curl_easy_strerror(cc);
	int code = cc == CURLE_OPERATION_TIMEDOUT ? SW_ERR_TIMEOUT : SW_ERR_GENERIC;
	if (attempts > 1)
		return sw_error_lib(err, code, SW_ERRSRC_CURL, (int)cc,
		                    "%s %s: %s (after %d attempts)", method, url, text, attempts);
	return sw_error_lib(err, code, SW_ERRSRC_CURL, (int)cc, "%s %s: %s", method, url, text);
}

int sw_http_do(sw_http_response *out, sw_http_client *c, const sw_http_request *req, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	sw_buf_init(&out->body, req->max_body);
	if (req->url == NULL || *req->url == '\0')
		return sw_error_set(err, SW_ERR_INVALID, "HTTP request without a URL");
	const char *method = req->method ? req->method : "GET";
	if (*method == '\0' || strpbrk(method, " \t\r\n"))
		return sw_error_set(err, SW_ERR_INVALID, "bad HTTP method '%s'", method);
	cleanup_free char *shown = sw_redact(req->url);

	struct xfer x = { .req = req, .resp = out };
	struct curl_slist *hdrs = NULL;
	int r = setup(c, &x, method, &hdrs, err);
	if (r < 0) {
		sw_error_wrap(err, "%s %s", method, shown);
		goto out;
	}

	int max_retries = req->no_retry ? 0 : c->max_retries;
	/* a streamed body is sent again only when it can be rewound */
	bool can_resend = req->read_cb == NULL || req->rewind_cb != NULL;
	for (int attempt = 1;; attempt++) {
		bool more = attempt <= max_retries && can_resend;
		reset_answer(&x);
		x.upload_off = 0;
		x.status = 0;
		x.discard_retry = more;
		c->errbuf[0] = '\0';
		SW_LOG(SW_LOG_DEBUG, "%s %s (attempt %d)", method, shown, attempt);
		CURLcode cc = curl_easy_perform(c->curl);
		out->attempts = attempt;

		long reqsize = 0, redirects = 0;
		char *eff = NULL;
		curl_easy_getinfo(c->curl, CURLINFO_REQUEST_SIZE, &reqsize);
		curl_easy_getinfo(c->curl, CURLINFO_REDIRECT_COUNT, &redirects);
		if (reqsize > 0)
			c->requests += 1 + (uint64_t)(redirects > 0 ? redirects : 0);
		if (curl_easy_getinfo(c->curl, CURLINFO_EFFECTIVE_URL, &eff) == CURLE_OK && eff) {
			free(out->effective_url);
			out->effective_url = sw_xstrdup(eff);
		}

		if (x.too_big) {
			r = sw_error_set(err, SW_ERR_INVALID,
			                 "%s %s: response body exceeds the limit of %zu bytes",
			                 method, shown,
			                 out->body.max ? out->body.max : SW_BUF_DEFAULT_MAX);
			break;
		}
		if (x.too_many_headers) {
			r = sw_error_set(err, SW_ERR_INVALID,
			                 "%s %s: more than %d response headers", method, shown,
			                 MAX_HEADERS);
			break;
		}
		if (x.cb_error < 0) {
			r = sw_error_set(err, x.cb_error, "%s %s: %s failed", method, shown,
			                 x.cb_what);
			break;
		}

		bool answered = cc == CURLE_OK;
		/* a transfer cut after the status line keeps that status (and its headers), so a
		 * caller resuming a download knows what the partial answer was */
		out->status = x.status;
		if (answered)
			curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &out->status);
		bool retry =
		        more && (answered ? retryable_status(out->status) : retryable_curl(cc));
		if (retry && req->read_cb && req->rewind_cb(req->read_payload) < 0) {
			SW_LOG(SW_LOG_DEBUG, "%s %s: the request body cannot be rewound; no retry",
			       method, shown);
			retry = false;
		}
		if (!retry) {
			r = answered ? 0 : curl_fail(err, cc, method, shown, c->errbuf, attempt);
			break;
		}

		long wait = -1;
		char reason[CURL_ERROR_SIZE + 32];
		if (answered) {
			snprintf(reason, sizeof(reason), "HTTP %ld", out->status);
			wait = sw_http_retry_after_ms(sw_http_response_header(out, "Retry-After"));
			if (wait > c->backoff_max_ms)
				wait = c->backoff_max_ms;
		} else {
			snprintf(reason, sizeof(reason), "%s",
			         c->errbuf[0] ? c->errbuf : curl_easy_strerror(cc));
		}
		if (wait < 0)
			wait = backoff_ms(c, attempt);
		SW_LOG(SW_LOG_INFO, "%s %s: %s; retry %d of %d in %ld ms", method, shown, reason,
		       attempt, max_retries, wait);
		sleep_ms(wait);
	}

out:
	/* drop the handle's pointers to this call's header list and state; connections stay */
	curl_easy_reset(c->curl);
	curl_slist_free_all(hdrs);
	return r;
}

const char *sw_http_response_header(const sw_http_response *r, const char *name)
{
	if (!r || !r->headers || !name)
		return NULL;
	size_t n = strlen(name);
	for (size_t i = 0; r->headers[i]; i++) {
		const char *h = r->headers[i];
		if (strncasecmp(h, name, n) == 0 && h[n] == ':')
			return h + n + 1 + strspn(h + n + 1, " \t");
	}
	return NULL;
}

void sw_http_response_free(sw_http_response *r)
{
	if (!r)
		return;
	sw_buf_free(&r->body);
	sw_strv_free(r->headers);
	free(r->effective_url);
	r->headers = NULL;
	r->effective_url = NULL;
	r->status = 0;
	r->attempts = 0;
}

char *sw_url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!s)
		s = "";
	char *out = sw_xmalloc(strlen(s) * 3 + 1);
	char *w = out;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			*w++ = (char)*p;
		} else {
			*w++ = '%';
			*w++ = hex[*p >> 4];
			*w++ = hex[*p & 15];
		}
	}
	*w = '\0';
	return out;
}

long sw_http_retry_after_ms(const char *value)
{
	if (!value)
		return -1;
	value += strspn(value, " \t");
	size_t len = strlen(value);
	while (len && (value[len - 1] == ' ' || value[len - 1] == '\t' || value[len - 1] == '\r' ||
	               value[len - 1] == '\n'))
		len--;
	if (len == 0)
		return -1;
	cleanup_free char *v = sw_xstrndup(value, len);
	if (strspn(v, "0123456789") == len) {
		errno = 0;
		unsigned long long secs = strtoull(v, NULL, 10);
		if (errno == ERANGE || secs > (unsigned long long)(LONG_MAX / 1000))
			return LONG_MAX;
		return (long)secs * 1000;
	}
	time_t t = curl_getdate(v, NULL);
	if (t < 0)
		return -1;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	long long ms = ((long long)t - (long long)now.tv_sec) * 1000 - now.tv_nsec / 1000000;
	if (ms < 0)
		return 0;
	return ms > LONG_MAX ? LONG_MAX : (long)ms;
}
