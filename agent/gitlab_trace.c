/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A GitLab job's trace (../shared/specs/gitlab-runner-api.md section 5): the output is kept in
 * memory (up to the log limit, then a notice, as gitlab-runner does) with a running CRC-32; a
 * thread PATCHes the bytes not yet sent every update interval (Content-Range, at most 1 MiB at
 * a time, resuming from the server's Range after a 416; 5xx are retried by the HTTP layer with
 * backoff), keeps the job alive with PUT state=running when nothing went through for 30 s, and
 * reads Job-Status (canceling: graceful cancel; canceled, failed, 403: abort). The final update
 * sends the rest and the final PUT with checksum and byte size, handling 202, 412 and retries.
 */
#include "agent/gitlab.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define MAX_PATCH (1u << 20)
#define FORCE_SEND_MS 30000
#define MAX_INTERVAL_MS (15 * 60 * 1000)
#define FINAL_TRIES 10

struct sw_gitlab_trace {
	char *url;
	char *token;
	int64_t job_id;
	sw_http_opts http_opts;
	sw_http_client *http;
	volatile sig_atomic_t *cancel;
	size_t limit;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *data;
	size_t len, cap;
	bool truncated;
	uint32_t crc;
	uint64_t sent;
	int64_t interval_ms;
	int64_t last_ok_ms;
	bool stop, started, aborted;
	bool final_sent; /* the final PUT went out: its Job-Status is ours */
	pthread_t tid;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int sw_gitlab_trace_new(sw_gitlab_trace **out, const sw_gitlab_trace_opts *o, sw_error **err)
{
	sw_gitlab_trace *t = sw_xcalloc(1, sizeof(*t));
	t->url = sw_xstrdup(o->url);
	t->token = sw_xstrdup(o->token);
	t->job_id = o->job_id;
	if (o->http)
		t->http_opts = *o->http;
	if (t->http_opts.max_retries == 0)
		t->http_opts.max_retries = 4;
	if (t->http_opts.backoff_base_ms == 0)
		t->http_opts.backoff_base_ms = 100;
	t->cancel = o->cancel;
	t->limit = o->limit ? o->limit : (size_t)4 << 20;
	t->interval_ms = o->interval_ms > 0 ? o->interval_ms : 3000;
	t->last_ok_ms = now_ms();
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	if (sw_http_client_new(&t->http, &t->http_opts, err) < 0) {
		sw_gitlab_trace_free(t);
		return sw_error_wrap(err, "job %" PRId64 ": trace", o->job_id);
	}
	*out = t;
	return 0;
}

static void append_locked(sw_gitlab_trace *t, const char *data, size_t len)
{
	if (t->len + len > t->cap) {
		size_t cap = t->cap ? t->cap : 65536;
		while (cap < t->len + len)
			cap *= 2;
		t->data = sw_xrealloc(t->data, cap);
		t->cap = cap;
	}
	memcpy(t->data + t->len, data, len);
	t->len += len;
	t->crc = (uint32_t)crc32(t->crc, (const Bytef *)data, (uInt)len);
}

void sw_gitlab_trace_write(sw_gitlab_trace *t, const char *data, size_t len)
{
	pthread_mutex_lock(&t->lock);
	if (!t->truncated) {
		size_t room = t->limit > t->len ? t->limit - t->len : 0;
		if (len <= room) {
			append_locked(t, data, len);
		} else {
			append_locked(t, data, room);
			char note[160];
			int n = snprintf(note, sizeof(note),
			                 "\nJob's log exceeded limit of %zu bytes.\n"
			                 "Job execution will continue but no more output will be "
			                 "collected.\n",
			                 t->limit);
			append_locked(t, note, (size_t)n);
			t->truncated = true;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

void sw_gitlab_trace_printf(sw_gitlab_trace *t, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *s = sw_xvasprintf(fmt, ap);
	va_end(ap);
	sw_gitlab_trace_write(t, s, strlen(s));
}

void sw_gitlab_trace_sum(sw_gitlab_trace *t, uint32_t *crc, uint64_t *size)
{
	pthread_mutex_lock(&t->lock);
	*crc = t->crc;
	*size = t->len;
	pthread_mutex_unlock(&t->lock);
}

bool sw_gitlab_trace_aborted(const sw_gitlab_trace *t)
{
	return __atomic_load_n(&t->aborted, __ATOMIC_ACQUIRE);
}

static void set_aborted(sw_gitlab_trace *t)
{
	__atomic_store_n(&t->aborted, true, __ATOMIC_RELEASE);
	if (t->cancel)
		*t->cancel = 2;
}

/* Job-Status and the update interval of an answer. Returns true when the job must stop. */
static bool read_state(sw_gitlab_trace *t, const sw_http_response *res)
{
	const char *iv = sw_http_response_header(res, "X-GitLab-Trace-Update-Interval");
	if (iv) {
		long s = strtol(iv, NULL, 10);
		if (s > 0) {
			int64_t ms = (int64_t)s * 1000;
			pthread_mutex_lock(&t->lock);
			t->interval_ms = ms > MAX_INTERVAL_MS ? MAX_INTERVAL_MS : ms;
			pthread_mutex_unlock(&t->lock);
		}
	}
	const char *st = sw_http_response_header(res, "Job-Status");
	if (t->final_sent)
		return false; /* the answer to our own final state */
	if (res->status == 403 ||
	    (st && (strcmp(st, "canceled") == 0 || strcmp(st, "failed") == 0))) {
		SW_LOG(SW_LOG_INFO, "gitlab job %" PRId64 ": the server ended it (%s%s%ld)",
		       t->job_id, st ? st : "", st ? ", HTTP " : "HTTP ", res->status);
		set_aborted(t);
		return true;
	}
	if (st && strcmp(st, "canceling") == 0 && t->cancel && !*t->cancel) {
		SW_LOG(SW_LOG_INFO, "gitlab job %" PRId64 ": cancel requested", t->job_id);
		*t->cancel = 1;
	}
	return false;
}

typedef enum { P_NOTHING, P_SENT, P_RANGE, P_ABORT, P_FAILED } patch_result;

/* PATCH the next chunk. */
static patch_result patch_once(sw_gitlab_trace *t)
{
	pthread_mutex_lock(&t->lock);
	uint64_t start = t->sent;
	size_t n = t->len > start ? (size_t)(t->len - start) : 0;
	if (n > MAX_PATCH)
		n = MAX_PATCH;
	char *chunk = n ? sw_xmalloc(n) : NULL;
	if (n)
		memcpy(chunk, t->data + start, n);
	pthread_mutex_unlock(&t->lock);
	if (!n)
		return P_NOTHING;
	char range[48];
	sw_gitlab_content_range(range, start, n);
	cleanup_free char *path =
	        sw_xasprintf("jobs/%" PRId64 "/trace?debug_trace=false", t->job_id);
	cleanup_free char *url = sw_gitlab_api_url(t->url, path);
	cleanup_free char *h_tok = sw_xasprintf("JOB-TOKEN: %s", t->token);
	cleanup_free char *h_range = sw_xasprintf("Content-Range: %s", range);
	const char *headers[] = { h_tok, h_range, "Content-Type: text/plain", NULL };
	sw_http_request req = {
		.method = "PATCH",
		.url = url,
		.headers = headers,
		.body = chunk,
		.body_len = n,
	};
	sw_http_response res;
	memset(&res, 0, sizeof(res));
	sw_error *e = NULL;
	patch_result pr = P_FAILED;
	if (sw_http_do(&res, t->http, &req, &e) < 0) {
		SW_LOG(SW_LOG_WARN, "gitlab job %" PRId64 ": trace: %s", t->job_id,
		       sw_error_msg(e));
		sw_error_free(e);
		goto out;
	}
	if (read_state(t, &res)) {
		pr = P_ABORT;
		goto out;
	}
	uint64_t end = 0;
	bool has_end = sw_gitlab_range_end(sw_http_response_header(&res, "Range"), &end);
	if (res.status == 202 || res.status == 200) {
		pthread_mutex_lock(&t->lock);
		t->sent = has_end && end <= t->len ? end : start + n;
		t->last_ok_ms = now_ms();
		pthread_mutex_unlock(&t->lock);
		pr = P_SENT;
	} else if (res.status == 416) {
		pthread_mutex_lock(&t->lock);
		t->sent = has_end && end <= t->len ? end : 0;
		pthread_mutex_unlock(&t->lock);
		SW_LOG(SW_LOG_INFO, "gitlab job %" PRId64 ": trace: 416, resuming at %" PRIu64,
		       t->job_id, has_end ? end : 0);
		pr = P_RANGE;
	} else if (res.status == 404) {
		set_aborted(t);
		pr = P_ABORT;
	} else {
		SW_LOG(SW_LOG_WARN, "gitlab job %" PRId64 ": trace: HTTP %ld", t->job_id,
		       res.status);
	}
out:
	sw_http_response_free(&res);
	free(chunk);
	return pr;
}

/* PUT jobs/:id. Returns the HTTP status (0: no answer); *abort when the job must stop. */
static long put_state(sw_gitlab_trace *t, const char *state, const char *reason, int exit_code,
                      bool with_sum, bool *abort, int64_t *retry_ms)
{
	uint32_t crc;
	uint64_t size;
	sw_gitlab_trace_sum(t, &crc, &size);
	char sum[16];
	sw_gitlab_checksum(sum, crc);
	json_t *body = json_pack("{s:o, s:s, s:s}", "info", sw_gitlab_info(), "token", t->token,
	                         "state", state);
	json_t *output = json_object();
	if (with_sum) {
		json_object_set_new(body, "checksum", json_string(sum));
		json_object_set_new(output, "checksum", json_string(sum));
		json_object_set_new(output, "bytesize", json_integer((json_int_t)size));
	}
	json_object_set_new(body, "output", output);
	if (reason) {
		json_object_set_new(body, "failure_reason", json_string(reason));
		json_object_set_new(body, "exit_code", json_integer(exit_code));
	}
	cleanup_free char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	cleanup_free char *path = sw_xasprintf("jobs/%" PRId64, t->job_id);
	cleanup_free char *url = sw_gitlab_api_url(t->url, path);
	cleanup_free char *h_tok = sw_xasprintf("JOB-TOKEN: %s", t->token);
	const char *headers[] = { h_tok, "Content-Type: application/json", NULL };
	sw_http_request req = {
		.method = "PUT",
		.url = url,
		.headers = headers,
		.body = text,
		.body_len = strlen(text),
	};
	sw_http_response res;
	memset(&res, 0, sizeof(res));
	sw_error *e = NULL;
	long status = 0;
	*abort = false;
	*retry_ms = -1;
	if (sw_http_do(&res, t->http, &req, &e) < 0) {
		SW_LOG(SW_LOG_WARN, "gitlab job %" PRId64 ": update: %s", t->job_id,
		       sw_error_msg(e));
		sw_error_free(e);
	} else {
		status = res.status;
		*abort = read_state(t, &res) || status == 404;
		const char *iv = sw_http_response_header(&res, "X-GitLab-Trace-Update-Interval");
		if (iv && strtol(iv, NULL, 10) > 0)
			*retry_ms = strtol(iv, NULL, 10) * 1000;
		if (status >= 200 && status < 300) {
			pthread_mutex_lock(&t->lock);
			t->last_ok_ms = now_ms();
			pthread_mutex_unlock(&t->lock);
		}
	}
	sw_http_response_free(&res);
	return status;
}

long sw_gitlab_trace_put_running(sw_gitlab_trace *t, bool *abort)
{
	int64_t retry = 0;
	return put_state(t, "running", NULL, 0, false, abort, &retry);
}

static void *trace_main(void *arg)
{
	sw_gitlab_trace *t = arg;
	pthread_mutex_lock(&t->lock);
	while (!t->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t iv = t->interval_ms;
		ts.tv_sec += iv / 1000;
		ts.tv_nsec += (iv % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t->cond, &t->lock, &ts);
		if (t->stop)
			break;
		pthread_mutex_unlock(&t->lock);
		patch_result pr = patch_once(t);
		if (pr != P_ABORT && !sw_gitlab_trace_aborted(t)) {
			pthread_mutex_lock(&t->lock);
			bool touch = now_ms() - t->last_ok_ms >= FORCE_SEND_MS;
			pthread_mutex_unlock(&t->lock);
			if (touch) {
				bool abort = false;
				int64_t retry = 0;
				(void)put_state(t, "running", NULL, 0, true, &abort, &retry);
			}
		}
		pthread_mutex_lock(&t->lock);
		if (sw_gitlab_trace_aborted(t))
			break;
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int sw_gitlab_trace_start(sw_gitlab_trace *t, sw_error **err)
{
	if (pthread_create(&t->tid, NULL, trace_main, t) != 0)
		return sw_error_set(err, SW_ERR_GENERIC, "job %" PRId64 ": no trace thread",
		                    t->job_id);
	t->started = true;
	return 0;
}

static void trace_stop(sw_gitlab_trace *t)
{
	if (!t->started)
		return;
	pthread_mutex_lock(&t->lock);
	t->stop = true;
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
	pthread_join(t->tid, NULL);
	t->started = false;
}

int sw_gitlab_trace_finish(sw_gitlab_trace *t, const char *state, const char *failure_reason,
                           int exit_code, sw_error **err)
{
	trace_stop(t);
	if (sw_gitlab_trace_aborted(t))
		return 0; /* the server ended the job: no more updates */
	for (int attempt = 1; attempt <= FINAL_TRIES; attempt++) {
		bool failed = false;
		for (int rounds = 0; rounds < 200; rounds++) {
			/* every byte left, then the state */
			for (;;) {
				patch_result pr = patch_once(t);
				if (pr == P_NOTHING || pr == P_ABORT)
					break;
				if (pr == P_FAILED) {
					failed = true;
					break;
				}
				if (pr == P_RANGE) {
					pthread_mutex_lock(&t->lock);
					int64_t iv = t->interval_ms < 3000 ? t->interval_ms : 3000;
					pthread_mutex_unlock(&t->lock);
					sleep_ms(iv);
				}
			}
			if (sw_gitlab_trace_aborted(t))
				return 0;
			if (failed)
				break;
			bool abort = false;
			int64_t retry_ms = -1;
			t->final_sent = true;
			long st = put_state(t, state, failure_reason, exit_code, true, &abort,
			                    &retry_ms);
			t->final_sent = false;
			if (abort || st == 200 || st == 201 || st == 204 || st == 403 || st == 404)
				return 0;
			if (st == 202) { /* the server is still persisting the trace */
				sleep_ms(retry_ms > 0 ? (retry_ms > 60000 ? 60000 : retry_ms)
				                      : 1000);
				continue;
			}
			if (st == 412) { /* trace validation failed: send it all again */
				pthread_mutex_lock(&t->lock);
				t->sent = 0;
				pthread_mutex_unlock(&t->lock);
				continue;
			}
			failed = true;
			break;
		}
		if (attempt < FINAL_TRIES) {
			int64_t back = (int64_t)1000 << (attempt - 1 < 6 ? attempt - 1 : 6);
			SW_LOG(SW_LOG_WARN,
			       "gitlab job %" PRId64 ": final update failed, retrying in %" PRId64
			       " ms",
			       t->job_id, back);
			sleep_ms(back);
		}
	}
	return sw_error_set(err, SW_ERR_GENERIC,
	                    "job %" PRId64 ": the server did not take the final state after %d "
	                    "tries",
	                    t->job_id, FINAL_TRIES);
}

void sw_gitlab_trace_free(sw_gitlab_trace *t)
{
	if (!t)
		return;
	trace_stop(t);
	sw_http_client_free(t->http);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	free(t->data);
	free(t->url);
	free(t->token);
	free(t);
}
