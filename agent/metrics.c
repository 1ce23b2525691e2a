/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's metrics: thread-safe counters, gauges and histograms kept in memory, served in
 * Prometheus' text exposition format (0.0.4) on GET /metrics and as "ok" on GET /healthz by
 * libmicrohttpd's own polling thread, bound only to the configured loopback (or other numeric)
 * address. Finished pipeline runs are accounted from their OUT/events.jsonl (build steps and
 * their cache hits, job durations, bytes pushed by promotions and pulled for job images), read
 * line by line with bounds on line length, line count and total size.
 */
#include "agent/agent_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <microhttpd.h>

/* Upper bounds in seconds; +Inf is implicit. Cached build steps take ~0 s, pipelines minutes. */
static const double buckets[] = { 0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,   10,
	                          30,   60,  120,  300, 600, 1800, 3600 };
#define N_BUCKETS SW_ARRAY_SIZE(buckets)

/* events.jsonl bounds: longer lines are skipped, the rest of a huge file is ignored. */
#define EVENTS_MAX_LINE ((size_t)1 << 20)
#define EVENTS_MAX_LINES 200000
#define EVENTS_MAX_BYTES ((uint64_t)256 << 20)
/* Distinct label values kept (sources, results); more are folded into "other". */
#define MAX_SERIES 1024

typedef struct histogram {
	uint64_t counts[N_BUCKETS]; /* per bucket (not cumulative) */
	uint64_t count;
	double sum;
} histogram;

typedef struct series {
	char *a; /* first label value (source) */
	char *b; /* second label value (result), or NULL */
	uint64_t value;
} series;

typedef struct series_set {
	series *v;
	size_t n;
} series_set;

struct sw_metrics {
	struct MHD_Daemon *daemon;
	sw_sched *sched;
	int port;
	pthread_mutex_t lock;
	series_set pipelines; /* {source, result} */
	series_set polls;     /* {source} */
	series_set poll_errors;
	histogram pipeline_seconds;
	histogram build_step_seconds;
	histogram job_seconds;
	uint64_t cache_hits, cache_misses;
	uint64_t bytes_pulled, bytes_pushed;
};

/* ---------------------------------------------------------------- counters */

static void histogram_observe(histogram *h, double v)
{
	if (!(v >= 0)) /* NaN, negative */
		v = 0;
	for (size_t i = 0; i < N_BUCKETS; i++) {
		if (v <= buckets[i]) {
			h->counts[i]++;
			break;
		}
	}
	h->count++;
	h->sum += v;
}

static bool str_eq(const char *x, const char *y)
{
	if (!x || !y)
		return x == y;
	return strcmp(x, y) == 0;
}

/* Add `by` to the series with labels (a, b); called with the lock held. */
static void series_add(series_set *s, const char *a, const char *b, uint64_t by)
{
	for (size_t i = 0; i < s->n; i++) {
		if (str_eq(s->v[i].a, a) && str_eq(s->v[i].b, b)) {
			s->v[i].value += by;
			return;
		}
	}
	if (s->n >= MAX_SERIES) {
		a = "other";
		for (size_t i = 0; i < s->n; i++) {
			if (str_eq(s->v[i].a, a) && str_eq(s->v[i].b, b)) {
				s->v[i].value += by;
				return;
			}
		}
	}
	s->v = sw_xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
	s->v[s->n].a = sw_xstrdup(a);
	s->v[s->n].b = b ? sw_xstrdup(b) : NULL;
	s->v[s->n].value = by;
	s->n++;
}

static void series_clear(series_set *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].a);
		free(s->v[i].b);
	}
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

void sw_metrics_poll(sw_metrics *m, const char *source, bool ok)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	series_add(&m->polls, source ? source : "", NULL, 1);
	if (!ok)
		series_add(&m->poll_errors, source ? source : "", NULL, 1);
	else
		series_add(&m->poll_errors, source ? source : "", NULL, 0);
	pthread_mutex_unlock(&m->lock);
}

void sw_metrics_bytes(sw_metrics *m, uint64_t pulled, uint64_t pushed)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	m->bytes_pulled += pulled;
	m->bytes_pushed += pushed;
	pthread_mutex_unlock(&m->lock);
}

/* ---------------------------------------------------------------- events.jsonl */

typedef struct run_tally {
	uint64_t hits, misses, pulled, pushed;
	double build_steps[64]; /* durations, flushed into the histogram when full */
	size_t n_build;
	double jobs[64];
	size_t n_jobs;
} run_tally;

static int64_t int_field(json_t *o, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? (int64_t)json_integer_value(v) : dflt;
}

static const char *str_field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static void tally_flush(sw_metrics *m, run_tally *t)
{
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < t->n_build; i++)
		histogram_observe(&m->build_step_seconds, t->build_steps[i]);
	for (size_t i = 0; i < t->n_jobs; i++)
		histogram_observe(&m->job_seconds, t->jobs[i]);
	m->cache_hits += t->hits;
	m->cache_misses += t->misses;
	m->bytes_pulled += t->pulled;
	m->bytes_pushed += t->pushed;
	pthread_mutex_unlock(&m->lock);
	memset(t, 0, sizeof(*t));
}

/* One event line. A build step counts once, at its end ("done" or "failed"); a job at its final
 * event (not "running" nor "retrying") when it ran (it has a duration). */
static void tally_event(sw_metrics *m, run_tally *t, const char *line, size_t len)
{
	json_t *o = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	const char *type = str_field(o, "type");
	const char *state = str_field(o, "state");
	if (!type || !state) {
		json_decref(o);
		return;
	}
	if (strcmp(type, "build_step") == 0 &&
	    (strcmp(state, "done") == 0 || strcmp(state, "failed") == 0)) {
		if (json_is_true(json_object_get(o, "cached")))
			t->hits++;
		else
			t->misses++;
		int64_t ms = int_field(o, "duration_ms", 0);
		if (t->n_build == SW_ARRAY_SIZE(t->build_steps))
			tally_flush(m, t);
		t->build_steps[t->n_build++] = ms > 0 ? (double)ms / 1000.0 : 0.0;
	} else if (strcmp(type, "job") == 0 && strcmp(state, "running") != 0 &&
	           strcmp(state, "retrying") != 0) {
		int64_t ms = int_field(o, "duration_ms", -1);
		if (ms >= 0) {
			if (t->n_jobs == SW_ARRAY_SIZE(t->jobs))
				tally_flush(m, t);
			t->jobs[t->n_jobs++] = (double)ms / 1000.0;
		}
	} else if (strcmp(type, "promotion") == 0 && strcmp(state, "pushed") == 0) {
		int64_t b = int_field(o, "bytes", 0);
		if (b > 0)
			t->pushed += (uint64_t)b;
	} else if (strcmp(type, "pull") == 0 && strcmp(state, "done") == 0) {
		int64_t b = int_field(o, "bytes", 0);
		if (b > 0)
			t->pulled += (uint64_t)b;
	}
	json_decref(o);
}

static void tally_file(sw_metrics *m, const char *output_dir)
{
	cleanup_free char *path = sw_path_join(output_dir, "events.jsonl");
	cleanup_file FILE *f = fopen(path, "re");
	if (!f) {
		SW_LOG(SW_LOG_DEBUG, "metrics: %s: %s", path, strerror(errno));
		return;
	}
	run_tally t;
	memset(&t, 0, sizeof(t));
	cleanup_free char *line = sw_xmalloc(EVENTS_MAX_LINE + 2);
	uint64_t total = 0;
	unsigned lines = 0;
	bool skipping = false; /* inside a line longer than the cap */
	while (lines < EVENTS_MAX_LINES && total < EVENTS_MAX_BYTES &&
	       fgets(line, (int)EVENTS_MAX_LINE + 2, f)) {
		size_t len = strlen(line);
		total += len;
		bool complete = len > 0 && line[len - 1] == '\n';
		if (skipping || !complete) {
			/* a line past the cap is skipped whole; a last line without '\n' is torn
			 * (the run died while writing it) */
			skipping = !complete;
			continue;
		}
		lines++;
		tally_event(m, &t, line, len - 1);
	}
	tally_flush(m, &t);
}

void sw_metrics_run_done(sw_metrics *m, const char *source, const char *result, double seconds,
                         const char *output_dir)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	series_add(&m->pipelines, source ? source : "", result ? result : "unknown", 1);
	histogram_observe(&m->pipeline_seconds, seconds);
	pthread_mutex_unlock(&m->lock);
	if (output_dir)
		tally_file(m, output_dir);
}

/* ---------------------------------------------------------------- exposition */

static int put_label_value(sw_buf *b, const char *v, sw_error **err)
{
	for (const char *p = v; *p; p++) {
		int rc;
		if (*p == '\\')
			rc = sw_buf_puts(b, "\\\\", err);
		else if (*p == '"')
			rc = sw_buf_puts(b, "\\\"", err);
		else if (*p == '\n')
			rc = sw_buf_puts(b, "\\n", err);
		else
			rc = sw_buf_append(b, p, 1, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int put_head(sw_buf *b, const char *name, const char *type, const char *help, sw_error **err)
{
	return sw_buf_printf(b, err, "# HELP slipway_%s %s\n# TYPE slipway_%s %s\n", name, help,
	                     name, type);
}

/* A float the way Prometheus writes them: shortest form that reads back. */
static void fmt_float(char *out, size_t n, double v)
{
	if (v == (double)(int64_t)v && v > -1e15 && v < 1e15) {
		snprintf(out, n, "%.0f", v);
		return;
	}
	snprintf(out, n, "%.17g", v);
	/* prefer a short form when it is exact */
	for (int prec = 1; prec < 17; prec++) {
		char tmp[64];
		snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (strtod(tmp, NULL) == v) {
			snprintf(out, n, "%s", tmp);
			return;
		}
	}
}

static int put_histogram(sw_buf *b, const char *name, const char *labels, const histogram *h,
                         sw_error **err)
{
	uint64_t cum = 0;
	const char *sep = labels[0] ? "," : "";
	for (size_t i = 0; i < N_BUCKETS; i++) {
		cum += h->counts[i];
		char le[64];
		fmt_float(le, sizeof(le), buckets[i]);
		if (sw_buf_printf(b, err, "slipway_%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name,
		                  labels, sep, le, cum) < 0)
			return -1;
	}
	char sum[64];
	fmt_float(sum, sizeof(sum), h->sum);
	const char *open = labels[0] ? "{" : "";
	const char *close = labels[0] ? "}" : "";
	if (sw_buf_printf(b, err,
	                  "slipway_%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n"
	                  "slipway_%s_sum%s%s%s %s\n"
	                  "slipway_%s_count%s%s%s %" PRIu64 "\n",
	                  name, labels, sep, h->count, name, open, labels, close, sum, name, open,
	                  labels, close, h->count) < 0)
		return -1;
	return 0;
}

static int put_series(sw_buf *b, const char *name, const char *la, const char *lb,
                      const series_set *s, sw_error **err)
{
	for (size_t i = 0; i < s->n; i++) {
		if (sw_buf_printf(b, err, "slipway_%s{%s=\"", name, la) < 0 ||
		    put_label_value(b, s->v[i].a, err) < 0)
			return -1;
		if (lb && s->v[i].b &&
		    (sw_buf_printf(b, err, "\",%s=\"", lb) < 0 ||
		     put_label_value(b, s->v[i].b, err) < 0))
			return -1;
		if (sw_buf_printf(b, err, "\"} %" PRIu64 "\n", s->v[i].value) < 0)
			return -1;
	}
	return 0;
}

/* The whole exposition; called with the lock held. */
static int render(sw_buf *b, sw_metrics *m, unsigned running, unsigned queued, sw_error **err)
{
	if (put_head(b, "jobs_running", "gauge", "Pipelines and jobs running now.", err) < 0 ||
	    sw_buf_printf(b, err, "slipway_jobs_running %u\n", running) < 0 ||
	    put_head(b, "jobs_queued", "gauge", "Pipelines and jobs waiting for a worker.", err) <
	            0 ||
	    sw_buf_printf(b, err, "slipway_jobs_queued %u\n", queued) < 0)
		return -1;
	if (put_head(b, "pipelines_total", "counter", "Pipelines finished, by source and result.",
	             err) < 0 ||
	    put_series(b, "pipelines_total", "source", "result", &m->pipelines, err) < 0)
		return -1;
	if (put_head(b, "pipeline_duration_seconds", "histogram",
	             "Time from the start of a pipeline to its end.", err) < 0 ||
	    put_histogram(b, "pipeline_duration_seconds", "", &m->pipeline_seconds, err) < 0)
		return -1;
	if (put_head(b, "step_duration_seconds", "histogram",
	             "Duration of build steps (cached ones too) and of jobs.", err) < 0 ||
	    put_histogram(b, "step_duration_seconds", "kind=\"build\"", &m->build_step_seconds,
	                  err) < 0 ||
	    put_histogram(b, "step_duration_seconds", "kind=\"job\"", &m->job_seconds, err) < 0)
		return -1;
	if (put_head(b, "cache_hits_total", "counter", "Build steps taken from the build cache.",
	             err) < 0 ||
	    sw_buf_printf(b, err, "slipway_cache_hits_total %" PRIu64 "\n", m->cache_hits) < 0 ||
	    put_head(b, "cache_misses_total", "counter", "Build steps that had to run.", err) < 0 ||
	    sw_buf_printf(b, err, "slipway_cache_misses_total %" PRIu64 "\n", m->cache_misses) < 0)
		return -1;
	if (put_head(b, "registry_bytes_pulled_total", "counter",
	             "Bytes downloaded from registries for job images.", err) < 0 ||
	    sw_buf_printf(b, err, "slipway_registry_bytes_pulled_total %" PRIu64 "\n",
	                  m->bytes_pulled) < 0 ||
	    put_head(b, "registry_bytes_pushed_total", "counter",
	             "Bytes uploaded to registries by promotions.", err) < 0 ||
	    sw_buf_printf(b, err, "slipway_registry_bytes_pushed_total %" PRIu64 "\n",
	                  m->bytes_pushed) < 0)
		return -1;
	if (put_head(b, "polls_total", "counter", "Polls of watched repositories, by source.",
	             err) < 0 ||
	    put_series(b, "polls_total", "source", NULL, &m->polls, err) < 0 ||
	    put_head(b, "poll_errors_total", "counter",
	             "Polls of watched repositories that failed, by source.", err) < 0 ||
	    put_series(b, "poll_errors_total", "source", NULL, &m->poll_errors, err) < 0)
		return -1;
	return 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
	(void)version;
	(void)upload_data;
	sw_metrics *m = cls;
	/* first call: headers only; answer on the second, after any body (ignored) */
	static int marker;
	if (*con_cls != &marker) {
		*con_cls = &marker;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	const char *text = "text/plain; charset=utf-8";
	bool is_metrics = strcmp(url, "/metrics") == 0;
	bool is_health = strcmp(url, "/healthz") == 0;
	if (!is_metrics && !is_health)
		return reply(c, MHD_HTTP_NOT_FOUND, text, sw_xstrdup("not found\n"), 10);
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text,
		             sw_xstrdup("method not allowed\n"), 19);
	if (is_health)
		return reply(c, MHD_HTTP_OK, text, sw_xstrdup("ok\n"), 3);
	unsigned running = 0, queued = 0;
	if (m->sched)
		sw_sched_counts(m->sched, &running, &queued);
	sw_buf b = SW_BUF_INIT(16 << 20);
	sw_error *err = NULL;
	pthread_mutex_lock(&m->lock);
	int rc = render(&b, m, running, queued, &err);
	pthread_mutex_unlock(&m->lock);
	if (rc < 0) {
		SW_LOG(SW_LOG_WARN, "metrics: %s", sw_error_msg(err));
		sw_error_free(err);
		sw_buf_free(&b);
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, sw_xstrdup("error\n"), 6);
	}
	size_t len = 0;
	char *body = sw_buf_steal(&b, &len);
	return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) SW_PRINTF(2, 0);
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	if (SW_LOG_DEBUG > sw_log_current_level)
		return;
	cleanup_free char *msg = sw_xvasprintf(fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = 0;
	SW_LOG(SW_LOG_DEBUG, "metrics: %s", msg);
}

/* ---------------------------------------------------------------- the server */

/* "HOST:PORT" with HOST an IPv4 address, "[IPv6]" or "localhost"; other names are refused so
 * that the listening address is never decided by name resolution. */
static int parse_addr(struct sockaddr_storage *ss, socklen_t *len, const char *addr, sw_error **err)
{
	memset(ss, 0, sizeof(*ss));
	const char *colon;
	cleanup_free char *host = NULL;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return sw_error_set(err, SW_ERR_INVALID,
			                    "metrics address '%s': expected [IPV6]:PORT", addr);
		host = sw_xstrndup(addr + 1, (size_t)(end - addr - 1));
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || colon == addr)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "metrics address '%s': expected HOST:PORT (for example "
			                    "127.0.0.1:9252)",
			                    addr);
		host = sw_xstrndup(addr, (size_t)(colon - addr));
	}
	const char *ps = colon + 1;
	char *pend = NULL;
	errno = 0;
	long port = strtol(ps, &pend, 10);
	if (!*ps || *pend || errno || port < 0 || port > 65535)
		return sw_error_set(err, SW_ERR_INVALID, "metrics address '%s': bad port '%s'",
		                    addr, ps);
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "localhost") == 0) {
		in4->sin_family = AF_INET;
		in4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		in4->sin_port = htons((uint16_t)port);
		*len = sizeof(*in4);
	} else if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*len = sizeof(*in4);
	} else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
	} else {
		return sw_error_set(err, SW_ERR_INVALID,
		                    "metrics address '%s': the host must be an IP address or "
		                    "'localhost'",
		                    addr);
	}
	return 0;
}

int sw_metrics_start(sw_metrics **out, const char *addr, sw_sched *s, sw_error **err)
{
	*out = NULL;
	if (!addr || !*addr)
		return sw_error_set(err, SW_ERR_INVALID, "metrics: no address");
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	if (parse_addr(&ss, &sslen, addr, err) < 0)
		return sw_error_code_of(*err);
	sw_metrics *m = sw_xcalloc(1, sizeof(*m));
	m->sched = s;
	pthread_mutex_init(&m->lock, NULL);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
#if MHD_VERSION >= 0x00095300
	flags |= MHD_USE_AUTO;
#endif
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	uint16_t port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
	                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	errno = 0;
	m->daemon = MHD_start_daemon(flags, port, NULL, NULL, handle, m, MHD_OPTION_SOCK_ADDR,
	                             (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
	                             (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
	                             MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024,
	                             MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
	if (!m->daemon) {
		int e = errno ? errno : EADDRINUSE;
		pthread_mutex_destroy(&m->lock);
		free(m);
		return sw_error_os(err, e, "metrics: listen on %s", addr);
	}
	const union MHD_DaemonInfo *info =
	        MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
	m->port = info ? (int)info->port : (int)port;
	SW_LOG(SW_LOG_DEBUG, "metrics: listening on %s (port %d)", addr, m->port);
	*out = m;
	return 0;
}

int sw_metrics_port(const sw_metrics *m)
{
	return m ? m->port : -1;
}

void sw_metrics_stop(sw_metrics *m)
{
	if (!m)
		return;
	if (m->daemon)
		MHD_stop_daemon(m->daemon);
	series_clear(&m->pipelines);
	series_clear(&m->polls);
	series_clear(&m->poll_errors);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
