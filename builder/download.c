/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ADD <url>: download one http(s) URL into a folder through common's HTTP layer. The body is
 * streamed to a temporary file while it is hashed and counted (at most 1 GiB); transient
 * failures (connection errors, 408, 429, 5xx) are retried from the start with the client's
 * backoff. The file is named after the URL's last path component (else Content-Disposition,
 * else "download"), gets mode 0600 and the Last-Modified time, and `--checksum` is verified
 * before it is renamed into place.
 */
#include "builder/builder_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#define DOWNLOAD_MAX_BYTES ((uint64_t)1 << 30)
#define DOWNLOAD_ATTEMPTS 5

typedef struct sink {
	int fd;
	sw_oci_hasher *h;
	uint64_t bytes;
	bool too_big;
} sink;

static int on_body(const void *data, size_t len, void *payload)
{
	sink *s = payload;
	if (s->bytes + len > DOWNLOAD_MAX_BYTES) {
		s->too_big = true;
		return SW_ERR_INVALID;
	}
	sw_oci_hasher_update(s->h, data, len);
	s->bytes += len;
	if (sw_fs_write_all(s->fd, data, len, NULL) < 0)
		return SW_ERR_GENERIC;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decode (in place). */
static void unescape(char *s)
{
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
			*w++ = (char)(hexval(r[1]) * 16 + hexval(r[2]));
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* A usable file name, or NULL: no "/", not "." or "..", not empty, no NUL inside. */
static char *name_ok(char *s)
{
	if (!s || !*s || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
		free(s);
		return NULL;
	}
	return s;
}

/* The last component of the URL's path ("http://h/a/b.tgz?x" -> "b.tgz"), or NULL. */
static char *url_base(const char *url)
{
	const char *p = strstr(url, "://");
	p = p ? p + 3 : url;
	p = p + strcspn(p, "/?#");
	if (*p != '/')
		return NULL;
	size_t n = strcspn(p, "?#");
	cleanup_free char *path = sw_xstrndup(p, n);
	size_t l = strlen(path);
	if (l == 0 || path[l - 1] == '/')
		return NULL;
	char *slash = strrchr(path, '/');
	char *base = sw_xstrdup(slash + 1);
	unescape(base);
	return name_ok(base);
}

/* filename="x" or filename=x of a Content-Disposition value, or NULL. */
static char *disposition_name(const char *v)
{
	if (!v)
		return NULL;
	const char *p = v;
	while ((p = strcasestr(p, "filename")) != NULL) {
		const char *q = p + 8;
		if (*q == '*') { /* RFC 5987 filename*=UTF-8''name */
			q++;
			while (*q == ' ')
				q++;
			if (*q++ != '=')
				goto next;
			const char *quote = strstr(q, "''");
			if (quote)
				q = quote + 2;
			char *s = sw_xstrndup(q, strcspn(q, ";"));
			unescape(s);
			char *slash = strrchr(s, '/');
			if (slash) {
				char *t = sw_xstrdup(slash + 1);
				free(s);
				s = t;
			}
			return name_ok(s);
		}
		while (*q == ' ')
			q++;
		if (*q != '=')
			goto next;
		q++;
		while (*q == ' ')
			q++;
		char *s;
		if (*q == '"') {
			q++;
			s = sw_xstrndup(q, strcspn(q, "\""));
		} else {
			s = sw_xstrndup(q, strcspn(q, "; \t"));
		}
		char *slash = strrchr(s, '/');
		if (slash) {
			char *t = sw_xstrdup(slash + 1);
			free(s);
			s = t;
		}
		return name_ok(s);
next:
		p += 8;
	}
	return NULL;
}

static bool retryable(long status)
{
	return status == 408 || status == 429 || status >= 500;
}

int sw_build__download(char **out_path, const char *url, const char *checksum, const char *tmpdir,
                       sw_error **err)
{
	*out_path = NULL;
	if (!url || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "ADD %s: only http:// and https:// URLs can be downloaded",
		                    url ? url : "");
	cleanup_free char *shown = sw_redact(url);
	sw_digest want;
	memset(&want, 0, sizeof(want));
	if (checksum && *checksum) {
		if (strncmp(checksum, "sha256:", 7) != 0)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "ADD %s: unsupported checksum '%s' (only sha256:...)",
			                    shown, checksum);
		int r = sw_oci_digest_parse(&want, checksum, err);
		if (r < 0)
			return sw_error_wrap(err, "ADD %s: --checksum", shown);
	}

	cleanup_free char *tmp = sw_xasprintf("%s/.download-XXXXXX", tmpdir);
	cleanup_close int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return sw_error_os(err, errno, "ADD %s: create a file in '%s'", shown, tmpdir);
	if (fchmod(fd, 0600) < 0) {
		int e = errno;
		unlink(tmp);
		return sw_error_os(err, e, "ADD %s: chmod", shown);
	}

	sw_http_client *client = NULL;
	sw_http_opts hopts = { .max_retries = 0 };
	int r = sw_http_client_new(&client, &hopts, err);
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	sink s = { .fd = fd };
	sw_http_response resp;
	memset(&resp, 0, sizeof(resp));
	for (int attempt = 1;; attempt++) {
		sw_http_response_free(&resp);
		memset(&resp, 0, sizeof(resp));
		if (s.h)
			sw_oci_hasher_free(s.h);
		s.h = sw_oci_hasher_new();
		s.bytes = 0;
		s.too_big = false;
		if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
			r = sw_error_os(err, errno, "ADD %s: truncate", shown);
			break;
		}
		sw_http_request req = {
			.url = url,
			.write_cb = on_body,
			.write_payload = &s,
			.no_retry = true,
			.follow_redirects = true,
		};
		sw_error *e2 = NULL;
		r = sw_http_do(&resp, client, &req, &e2);
		bool more = attempt < DOWNLOAD_ATTEMPTS;
		if (r < 0) {
			if (s.too_big) {
				sw_error_free(e2);
				r = sw_error_set(err, SW_ERR_INVALID,
				                 "ADD %s: the download exceeds %llu bytes", shown,
				                 (unsigned long long)DOWNLOAD_MAX_BYTES);
				break;
			}
			if (more && (r == SW_ERR_TIMEOUT || r == SW_ERR_GENERIC) &&
			    sw_error_code_of(e2) != SW_ERR_INVALID) {
				SW_LOG(SW_LOG_INFO, "ADD %s: %s; retrying", shown,
				       sw_error_msg(e2));
				sw_error_free(e2);
				sw_http_client_backoff(client, attempt, -1);
				continue;
			}
			if (err && !*err)
				*err = e2;
			else
				sw_error_free(e2);
			sw_error_wrap(err, "ADD %s", shown);
			break;
		}
		if (resp.status >= 200 && resp.status < 300)
			break;
		if (more && retryable(resp.status)) {
			SW_LOG(SW_LOG_INFO, "ADD %s: HTTP %ld; retrying", shown, resp.status);
			sw_http_client_backoff(client, attempt,
			                       sw_http_retry_after_ms(sw_http_response_header(
			                               &resp, "Retry-After")));
			continue;
		}
		r = sw_error_lib(err, resp.status == 404 ? SW_ERR_NOT_FOUND : SW_ERR_GENERIC,
		                 SW_ERRSRC_HTTP, (int)resp.status, "ADD %s: HTTP %ld", shown,
		                 resp.status);
		break;
	}
	sw_http_client_free(client);

	cleanup_free char *name = NULL;
	sw_digest got;
	if (r == 0) {
		sw_oci_hasher_final(s.h, &got);
		if (sw_oci_digest_is_set(&want) && !sw_oci_digest_eq(&want, &got))
			r = sw_error_set(err, SW_ERR_INVALID,
			                 "ADD %s: checksum mismatch: expected %s, got %s", shown,
			                 want.s, got.s);
	}
	if (r == 0) {
		name = url_base(url);
		if (!name)
			name = disposition_name(
			        sw_http_response_header(&resp, "Content-Disposition"));
		if (!name)
			name = sw_xstrdup("download");
		const char *lm = sw_http_response_header(&resp, "Last-Modified");
		struct tm tm;
		memset(&tm, 0, sizeof(tm));
		if (lm && strptime(lm, "%a, %d %b %Y %H:%M:%S", &tm)) {
			struct timespec ts[2];
			ts[0].tv_sec = ts[1].tv_sec = timegm(&tm);
			ts[0].tv_nsec = ts[1].tv_nsec = 0;
			if (futimens(fd, ts) < 0)
				r = sw_error_os(err, errno, "ADD %s: set the time", shown);
		}
	}
	if (r == 0 && fsync(fd) < 0)
		r = sw_error_os(err, errno, "ADD %s: write", shown);
	cleanup_free char *path = r == 0 ? sw_path_join(tmpdir, name) : NULL;
	if (r == 0 && rename(tmp, path) < 0)
		r = sw_error_os(err, errno, "ADD %s: rename into '%s'", shown, path);
	if (r < 0)
		unlink(tmp);
	if (s.h)
		sw_oci_hasher_free(s.h);
	sw_http_response_free(&resp);
	if (r < 0)
		return r;
	*out_path = steal_pointer(&path);
	return 0;
}
