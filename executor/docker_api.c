/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The docker backend's HTTP client: the Docker Engine API (v1.41) over the daemon's unix socket
 * with libcurl (CURLOPT_UNIX_SOCKET_PATH; the URL's host is a placeholder, nothing goes to the
 * network), small JSON calls with a capped answer, and the mapping of curl and daemon errors
 * onto sw_error (404 is not found, 409 a conflict).
 */
#include "executor/docker_internal.h"

#include <pthread.h>
#include <string.h>

#define ANSWER_MAX ((size_t)16 << 20)
#define DEFAULT_SOCKET "unix:///var/run/docker.sock"

static void curl_init(void)
{
	(void)curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void curl_init_once(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	(void)pthread_once(&once, curl_init);
}

int sw_exec__dk_init(sw_exec__dk *out, const char *docker_host, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!docker_host || !*docker_host)
		docker_host = getenv("DOCKER_HOST");
	if (!docker_host || !*docker_host)
		docker_host = DEFAULT_SOCKET;
	const char *path = NULL;
	if (strncmp(docker_host, "unix://", 7) == 0)
		path = docker_host + 7;
	else if (docker_host[0] == '/')
		path = docker_host;
	if (!path || path[0] != '/')
		return sw_error_set(err, SW_ERR_INVALID,
		                    "docker host '%s': only unix:///path sockets are supported",
		                    docker_host);
	curl_init_once();
	out->host = docker_host[0] == '/' ? sw_xasprintf("unix://%s", docker_host)
	                                  : sw_xstrdup(docker_host);
	out->socket = sw_xstrdup(path);
	return 0;
}

void sw_exec__dk_clear(sw_exec__dk *dk)
{
	free(dk->host);
	free(dk->socket);
	memset(dk, 0, sizeof(*dk));
}

CURL *sw_exec__dk_handle(const sw_exec__dk *dk, const char *method, const char *path)
{
	CURL *h = curl_easy_init();
	if (!h)
		abort(); /* out of memory, as sw_xmalloc */
	cleanup_free char *url = sw_xasprintf("http://localhost/" SW_EXEC__DOCKER_API "%s", path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, dk->socket);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "POST") == 0) {
		/* an empty body unless the caller sets one */
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
	}
	return h;
}

static size_t write_buf(char *data, size_t size, size_t n, void *payload)
{
	sw_buf *b = payload;
	sw_error *e = NULL;
	if (sw_buf_append(b, data, size * n, &e) < 0) {
		sw_error_free(e);
		return 0;
	}
	return size * n;
}

int sw_exec__dk_curl_error(sw_error **err, const sw_exec__dk *dk, CURLcode rc, const char *what,
                           const char *errbuf)
{
	int code = rc == CURLE_OPERATION_TIMEDOUT ? SW_ERR_TIMEOUT : SW_ERR_GENERIC;
	return sw_error_lib(err, code, SW_ERRSRC_CURL, (int)rc, "docker (%s): %s: %s", dk->host,
	                    what, errbuf && *errbuf ? errbuf : curl_easy_strerror(rc));
}

int sw_exec__dk_call(long *status, json_t **out, const sw_exec__dk *dk, const char *method,
                     const char *path, json_t *body, long timeout_ms, sw_error **err)
{
	*status = 0;
	if (out)
		*out = NULL;
	CURL *h = sw_exec__dk_handle(dk, method, path);
	struct curl_slist *headers = NULL;
	cleanup_free char *text = NULL;
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			abort();
		headers = curl_slist_append(headers, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, text);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
	}
	sw_buf answer = SW_BUF_INIT(ANSWER_MAX);
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_buf);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
	CURLcode rc = curl_easy_perform(h);
	int r = 0;
	if (rc != CURLE_OK) {
		cleanup_free char *what = sw_xasprintf("%s %s", method, path);
		r = sw_exec__dk_curl_error(err, dk, rc, what, errbuf);
	} else {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
		if (out && answer.len > 0)
			*out = json_loadb(answer.data, answer.len, JSON_DECODE_ANY, NULL);
	}
	sw_buf_free(&answer);
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	return r;
}

const char *sw_exec__dk_message(json_t *body)
{
	const char *m = json_string_value(json_object_get(body, "message"));
	return m ? m : "";
}

int sw_exec__dk_status_error(sw_error **err, long status, json_t *body, const char *what)
{
	int code = status == 404   ? SW_ERR_NOT_FOUND
	           : status == 409 ? SW_ERR_CONFLICT
	                           : SW_ERR_GENERIC;
	const char *m = sw_exec__dk_message(body);
	return sw_error_lib(err, code, SW_ERRSRC_HTTP, (int)status, "%s: HTTP %ld%s%s", what,
	                    status, *m ? ": " : "", m);
}
