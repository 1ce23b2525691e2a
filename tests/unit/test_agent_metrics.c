/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Group "metrics" of the agent's unit test program: the metrics server started on a loopback
 * port the system picks, scraped with libcurl after feeding it a fabricated run output folder
 * (events.jsonl with cached and built steps, a failed step, retried and skipped jobs, pushes,
 * a pull, a malformed line, an over-long line and a torn last line), polls and byte counts; the
 * exact numbers of the exposition are checked, and /healthz, 404, 405, address parsing and
 * counting from many threads at once. Each case works in its own temporary folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agent/agent_internal.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

int test_agent_metrics_run(void);

#define CHECK_OK(expr)                                                \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int check_r_ = (expr);                                \
		if (check_r_ < 0)                                     \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

typedef struct mfix {
	char *tmp;
	sw_metrics *m;
	char base[64]; /* http://127.0.0.1:PORT */
} mfix;

static int setup_metrics(void **state)
{
	mfix *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-agent-metrics-", &err) < 0 ||
	    sw_metrics_start(&f->m, "127.0.0.1:0", NULL, &err) < 0) {
		fprintf(stderr, "setup: %s\n", sw_error_msg(err));
		sw_error_free(err);
		if (f->tmp) {
			sw_error *e2 = NULL;
			if (sw_fs_rm_rf(f->tmp, &e2) < 0)
				sw_error_free(e2);
		}
		free(f->tmp);
		free(f);
		return -1;
	}
	snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%d", sw_metrics_port(f->m));
	*state = f;
	return 0;
}

static int teardown_metrics(void **state)
{
	mfix *f = *state;
	sw_metrics_stop(f->m);
	sw_error *err = NULL;
	if (sw_fs_rm_rf(f->tmp, &err) < 0)
		sw_error_free(err);
	free(f->tmp);
	free(f);
	return 0;
}

static size_t collect(char *data, size_t size, size_t n, void *payload)
{
	sw_buf *b = payload;
	sw_error *e = NULL;
	if (sw_buf_append(b, data, size * n, &e) < 0) {
		sw_error_free(e);
		return 0;
	}
	return size * n;
}

/* GET (or `method`) base+path; the body (caller frees) and the status. */
static char *fetch(long *status, const mfix *f, const char *method, const char *path)
{
	cleanup_free char *url = sw_xasprintf("%s%s", f->base, path);
	sw_buf b = SW_BUF_INIT(1 << 20);
	CURL *c = curl_easy_init();
	assert_non_null(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	if (method && strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "x=1");
	CURLcode rc = curl_easy_perform(c);
	if (rc != CURLE_OK)
		fail_msg("GET %s: %s", url, curl_easy_strerror(rc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(c);
	return sw_buf_steal(&b, NULL);
}

/* The value of the sample line that starts with `series` + ' '; fails when absent. */
static const char *sample(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			static char val[64];
			const char *e = strchr(p + n + 1, '\n');
			size_t l = e ? (size_t)(e - (p + n + 1)) : strlen(p + n + 1);
			if (l >= sizeof(val))
				l = sizeof(val) - 1;
			memcpy(val, p + n + 1, l);
			val[l] = 0;
			return val;
		}
	}
	fail_msg("no sample '%s' in:\n%s", series, text);
	return NULL;
}

#define assert_sample(text, series, value) assert_string_equal(sample(text, series), value)

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *fp = fopen(path, "we");
	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

static void test_agent__metrics_scrape(void **state)
{
	mfix *f = *state;
	long st = 0;
	/* before anything happened */
	cleanup_free char *t0 = fetch(&st, f, NULL, "/metrics");
	assert_int_equal(st, 200);
	assert_sample(t0, "slipway_jobs_running", "0");
	assert_sample(t0, "slipway_jobs_queued", "0");
	assert_sample(t0, "slipway_cache_hits_total", "0");
	assert_sample(t0, "slipway_pipeline_duration_seconds_count", "0");
	assert_non_null(strstr(t0, "# TYPE slipway_pipelines_total counter\n"));
	assert_non_null(strstr(t0, "# TYPE slipway_pipeline_duration_seconds histogram\n"));
	assert_non_null(strstr(t0, "# HELP slipway_jobs_running "));

	/* a run's events: 2 cached steps, 1 built (1.5 s), 1 failed (0.2 s); a job retried once
	 * then passed (2 s), one skipped; a push of 1000 bytes and a tag of 50, one skipped; a pull
	 * of 777 bytes; then junk, a line over the 1 MiB cap and a torn last line */
	cleanup_free char *out = sw_path_join(f->tmp, "run1");
	CHECK_OK(sw_fs_mkdir_p(out, 0755, &err));
	sw_buf ev = SW_BUF_INIT(8 << 20);
	const char *lines =
	        "{\"time\":\"t\",\"type\":\"pipeline\",\"state\":\"started\"}\n"
	        "{\"type\":\"build\",\"state\":\"started\",\"tag\":\"app:1\"}\n"
	        "{\"type\":\"build_step\",\"step\":1,\"state\":\"started\",\"cached\":true}\n"
	        "{\"type\":\"build_step\",\"step\":1,\"state\":\"done\",\"cached\":true,"
	        "\"duration_ms\":0}\n"
	        "{\"type\":\"build_step\",\"step\":2,\"state\":\"done\",\"cached\":true,"
	        "\"duration_ms\":0}\n"
	        "{\"type\":\"build_step\",\"step\":3,\"state\":\"started\",\"cached\":false}\n"
	        "{\"type\":\"build_step\",\"step\":3,\"state\":\"done\",\"cached\":false,"
	        "\"duration_ms\":1500}\n"
	        "{\"type\":\"build_step\",\"step\":4,\"state\":\"failed\",\"cached\":false,"
	        "\"duration_ms\":200,\"exit_code\":1}\n"
	        "{\"type\":\"job\",\"name\":\"test\",\"state\":\"running\",\"attempt\":1}\n"
	        "{\"type\":\"job\",\"name\":\"test\",\"state\":\"retrying\",\"attempt\":1,"
	        "\"duration_ms\":300}\n"
	        "{\"type\":\"job\",\"name\":\"test\",\"state\":\"passed\",\"attempt\":2,"
	        "\"duration_ms\":2000}\n"
	        "{\"type\":\"job\",\"name\":\"lint\",\"state\":\"skipped\",\"reason\":\"when\"}\n"
	        "{\"type\":\"pull\",\"image\":\"r/x:1\",\"state\":\"done\",\"bytes\":777}\n"
	        "{\"type\":\"promotion\",\"to\":\"r/app\",\"state\":\"pushed\",\"bytes\":1000}\n"
	        "{\"type\":\"promotion\",\"to\":\"r/app\",\"state\":\"pushed\",\"bytes\":50}\n"
	        "{\"type\":\"promotion\",\"to\":\"r/b\",\"state\":\"skipped\"}\n"
	        "{\"type\":\"promotion\",\"to\":\"r/c\",\"state\":\"failed\",\"bytes\":9999}\n"
	        "not json at all\n"
	        "[1,2,3]\n";
	assert_int_equal(sw_buf_puts(&ev, lines, NULL), 0);
	/* an over-long line that would count as a cached step if it were read */
	assert_int_equal(sw_buf_puts(&ev,
	                             "{\"type\":\"build_step\",\"state\":\"done\",\"cached\":true,"
	                             "\"pad\":\"",
	                             NULL),
	                 0);
	for (int i = 0; i < (1 << 20) / 64 + 1; i++)
		assert_int_equal(sw_buf_puts(&ev,
		                             "0123456789abcdef0123456789abcdef"
		                             "0123456789abcdef0123456789abcdef",
		                             NULL),
		                 0);
	assert_int_equal(sw_buf_puts(&ev, "\"}\n", NULL), 0);
	/* a step after the long line still counts */
	assert_int_equal(sw_buf_puts(&ev,
	                             "{\"type\":\"build_step\",\"step\":5,\"state\":\"done\","
	                             "\"cached\":true,\"duration_ms\":0}\n",
	                             NULL),
	                 0);
	/* torn: the run died while writing it */
	assert_int_equal(
	        sw_buf_puts(&ev, "{\"type\":\"build_step\",\"state\":\"done\",\"cached\"", NULL),
	        0);
	cleanup_free char *evp = sw_path_join(out, "events.jsonl");
	write_file(evp, ev.data, ev.len);
	sw_buf_free(&ev);

	sw_metrics_run_done(f->m, "app", "passed", 12.5, out);
	sw_metrics_run_done(f->m, "app", "failed", 0.375, NULL);
	sw_metrics_run_done(f->m, "lib", "passed", 4000, "/nonexistent/folder");
	sw_metrics_poll(f->m, "app", true);
	sw_metrics_poll(f->m, "app", false);
	sw_metrics_poll(f->m, "we\"ird\\name", true);
	sw_metrics_bytes(f->m, 10, 20);

	cleanup_free char *t = fetch(&st, f, NULL, "/metrics");
	assert_int_equal(st, 200);
	assert_sample(t, "slipway_pipelines_total{source=\"app\",result=\"passed\"}", "1");
	assert_sample(t, "slipway_pipelines_total{source=\"app\",result=\"failed\"}", "1");
	assert_sample(t, "slipway_pipelines_total{source=\"lib\",result=\"passed\"}", "1");
	assert_sample(t, "slipway_pipeline_duration_seconds_bucket{le=\"0.25\"}", "0");
	assert_sample(t, "slipway_pipeline_duration_seconds_bucket{le=\"0.5\"}", "1");
	assert_sample(t, "slipway_pipeline_duration_seconds_bucket{le=\"10\"}", "1");
	assert_sample(t, "slipway_pipeline_duration_seconds_bucket{le=\"30\"}", "2");
	assert_sample(t, "slipway_pipeline_duration_seconds_bucket{le=\"3600\"}", "2");
	assert_sample(t, "slipway_pipeline_duration_seconds_bucket{le=\"+Inf\"}", "3");
	assert_sample(t, "slipway_pipeline_duration_seconds_sum", "4012.875");
	assert_sample(t, "slipway_pipeline_duration_seconds_count", "3");
	/* build steps: 0, 0, 0 (cached), 1.5, 0.2 */
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"build\",le=\"0.05\"}", "3");
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"build\",le=\"0.25\"}", "4");
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"build\",le=\"1\"}", "4");
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"build\",le=\"2.5\"}", "5");
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"build\",le=\"+Inf\"}", "5");
	assert_sample(t, "slipway_step_duration_seconds_sum{kind=\"build\"}", "1.7");
	assert_sample(t, "slipway_step_duration_seconds_count{kind=\"build\"}", "5");
	/* jobs: the final event only */
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"job\",le=\"1\"}", "0");
	assert_sample(t, "slipway_step_duration_seconds_bucket{kind=\"job\",le=\"2.5\"}", "1");
	assert_sample(t, "slipway_step_duration_seconds_sum{kind=\"job\"}", "2");
	assert_sample(t, "slipway_step_duration_seconds_count{kind=\"job\"}", "1");
	assert_sample(t, "slipway_cache_hits_total", "3");
	assert_sample(t, "slipway_cache_misses_total", "2");
	assert_sample(t, "slipway_registry_bytes_pulled_total", "787");
	assert_sample(t, "slipway_registry_bytes_pushed_total", "1070");
	assert_sample(t, "slipway_polls_total{source=\"app\"}", "2");
	assert_sample(t, "slipway_poll_errors_total{source=\"app\"}", "1");
	assert_sample(t, "slipway_polls_total{source=\"we\\\"ird\\\\name\"}", "1");
	assert_sample(t, "slipway_poll_errors_total{source=\"we\\\"ird\\\\name\"}", "0");
	assert_sample(t, "slipway_jobs_running", "0");
	/* one HELP and one TYPE per family, before its samples */
	const char *th = strstr(t, "# TYPE slipway_step_duration_seconds histogram\n");
	assert_non_null(th);
	assert_true(th < strstr(t, "slipway_step_duration_seconds_bucket"));
	assert_null(strstr(th + 1, "# TYPE slipway_step_duration_seconds "));
	assert_int_equal(t[strlen(t) - 1], '\n');
}

static void test_agent__metrics_endpoints(void **state)
{
	mfix *f = *state;
	long st = 0;
	cleanup_free char *h = fetch(&st, f, NULL, "/healthz");
	assert_int_equal(st, 200);
	assert_string_equal(h, "ok\n");
	cleanup_free char *nf = fetch(&st, f, NULL, "/");
	assert_int_equal(st, 404);
	assert_string_equal(nf, "not found\n");
	cleanup_free char *nf2 = fetch(&st, f, NULL, "/metrics/x");
	assert_int_equal(st, 404);
	assert_string_equal(nf2, "not found\n");
	cleanup_free char *post = fetch(&st, f, "POST", "/metrics");
	assert_int_equal(st, 405);
	assert_string_equal(post, "method not allowed\n");
	/* the system chose the port (port 0 asked) */
	assert_true(sw_metrics_port(f->m) > 0);
}

static void test_agent__metrics_addresses(void **state)
{
	(void)state;
	const char *bad[] = { "example.com:9252", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999",
		              "127.0.0.1:9x",     ":9252",     "[::1]9252",  "0.0.0.0.0:1" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		sw_metrics *m = NULL;
		sw_error *err = NULL;
		assert_true(sw_metrics_start(&m, bad[i], NULL, &err) < 0);
		assert_null(m);
		assert_non_null(strstr(sw_error_msg(err), bad[i]));
		sw_error_free(err);
	}
	/* localhost is 127.0.0.1; a taken port is an error naming the address */
	sw_metrics *m = NULL;
	CHECK_OK(sw_metrics_start(&m, "localhost:0", NULL, &err));
	int port = sw_metrics_port(m);
	assert_true(port > 0);
	cleanup_free char *same = sw_xasprintf("127.0.0.1:%d", port);
	sw_metrics *m2 = NULL;
	sw_error *err = NULL;
	assert_true(sw_metrics_start(&m2, same, NULL, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), same));
	sw_error_free(err);
	sw_metrics_stop(m);
	sw_metrics_stop(NULL);
}

typedef struct hammer {
	sw_metrics *m;
	const char *out;
	int n;
} hammer;

static void *hammer_main(void *arg)
{
	hammer *h = arg;
	for (int i = 0; i < h->n; i++) {
		sw_metrics_poll(h->m, i % 2 ? "a" : "b", i % 4 != 0);
		sw_metrics_run_done(h->m, "a", "passed", 1.0, h->out);
		sw_metrics_bytes(h->m, 1, 2);
	}
	return NULL;
}

static void test_agent__metrics_threads(void **state)
{
	mfix *f = *state;
	cleanup_free char *out = sw_path_join(f->tmp, "run");
	CHECK_OK(sw_fs_mkdir_p(out, 0755, &err));
	cleanup_free char *evp = sw_path_join(out, "events.jsonl");
	const char *ev = "{\"type\":\"build_step\",\"state\":\"done\",\"cached\":true}\n"
	                 "{\"type\":\"build_step\",\"state\":\"done\",\"cached\":false,"
	                 "\"duration_ms\":10}\n";
	write_file(evp, ev, strlen(ev));
	enum { N_THREADS = 4, N_EACH = 200 };
	pthread_t th[N_THREADS];
	hammer h = { .m = f->m, .out = out, .n = N_EACH };
	for (int i = 0; i < N_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h), 0);
	/* scrape while they count */
	for (int i = 0; i < 5; i++) {
		long st = 0;
		cleanup_free char *t = fetch(&st, f, NULL, "/metrics");
		assert_int_equal(st, 200);
		assert_non_null(strstr(t, "\nslipway_cache_hits_total "));
	}
	for (int i = 0; i < N_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	long st = 0;
	cleanup_free char *t = fetch(&st, f, NULL, "/metrics");
	assert_sample(t, "slipway_pipelines_total{source=\"a\",result=\"passed\"}", "800");
	assert_sample(t, "slipway_pipeline_duration_seconds_count", "800");
	assert_sample(t, "slipway_pipeline_duration_seconds_sum", "800");
	assert_sample(t, "slipway_cache_hits_total", "800");
	assert_sample(t, "slipway_cache_misses_total", "800");
	assert_sample(t, "slipway_step_duration_seconds_count{kind=\"build\"}", "1600");
	assert_sample(t, "slipway_polls_total{source=\"a\"}", "400");
	assert_sample(t, "slipway_polls_total{source=\"b\"}", "400");
	assert_sample(t, "slipway_poll_errors_total{source=\"a\"}", "0");
	assert_sample(t, "slipway_poll_errors_total{source=\"b\"}", "200");
	assert_sample(t, "slipway_registry_bytes_pulled_total", "800");
	assert_sample(t, "slipway_registry_bytes_pushed_total", "1600");
}

int test_agent_metrics_run(void)
{
	const struct CMUnitTest metrics[] = {
		cmocka_unit_test_setup_teardown(test_agent__metrics_scrape, setup_metrics,
		                                teardown_metrics),
		cmocka_unit_test_setup_teardown(test_agent__metrics_endpoints, setup_metrics,
		                                teardown_metrics),
		cmocka_unit_test(test_agent__metrics_addresses),
		cmocka_unit_test_setup_teardown(test_agent__metrics_threads, setup_metrics,
		                                teardown_metrics),
	};
	return cmocka_run_group_tests_name("metrics", metrics, NULL, NULL);
}
