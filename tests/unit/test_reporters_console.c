/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The console: PLAIN output compared byte for byte with a fixed clock (prefixed lines, partial
 * lines held until their newline or the job's end, CRLF, lines cut into 4 KiB pieces, state
 * lines with durations and details, retries counted as attempts, free lines, the summary table
 * and the build line); QUIET prints the summary and the held free lines only; TTY draws a live
 * view (no line wider than the terminal) from its own thread and finishes with the table;
 * threads writing at once give whole lines; the state names.
 */
#include "test_reporters.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

static int64_t fake_now;

static int64_t fake_clock(void *payload)
{
	(void)payload;
	return fake_now;
}

typedef struct mem {
	char *buf;
	size_t len;
	FILE *f;
} mem;

static void mem_open(mem *m)
{
	m->buf = NULL;
	m->len = 0;
	m->f = open_memstream(&m->buf, &m->len);
	assert_non_null(m->f);
}

static void mem_close(mem *m)
{
	fclose(m->f);
	m->f = NULL;
}

static void test_reporters__console_plain(void **state)
{
	(void)state;
	mem m;
	mem_open(&m);
	sw_console *c = sw_console_new(SW_CONSOLE_PLAIN, m.f);
	fake_now = 1000;
	sw_console__set_clock(c, fake_clock, NULL);
	size_t unit = sw_console_add_job(c, "test", "unit");
	size_t lint = sw_console_add_job(c, "test", "lint");
	size_t ship = sw_console_add_job(c, "deploy", "ship-it");
	assert_int_equal(unit, 0);
	assert_int_equal(ship, 2);

	sw_console_line(c, "building image %s", "app");
	sw_console_job_state(c, unit, SW_JOB_PENDING, NULL);
	sw_console_job_state(c, unit, SW_JOB_RUNNING, NULL);
	sw_console_job_output(c, unit, "hello\nwor", 9);
	sw_console_job_output(c, unit, "ld\r\n", 4);
	sw_console_job_output(c, unit, "", 0);
	sw_console_job_state(c, lint, SW_JOB_RUNNING, NULL);
	sw_console_job_output(c, lint, "partial", 7);
	fake_now += 1500;
	sw_console_job_state(c, lint, SW_JOB_FAILED, "exit code 2");
	fake_now += 100;
	sw_console_job_state(c, lint, SW_JOB_RUNNING, "retry 1");
	sw_console_job_output(c, lint, "\n\nsecond\n", 9);
	fake_now += 400;
	sw_console_job_state(c, lint, SW_JOB_ALLOWED_FAILURE, "exit code 2");
	sw_console_job_output(c, unit, "tail without newline", 20);
	sw_console_job_state(c, unit, SW_JOB_PASSED, NULL);
	sw_console_job_state(c, ship, SW_JOB_SKIPPED, "an earlier stage failed");
	sw_console_line(c, "promoting %s", "127.0.0.1:5000/app:latest");
	sw_console_build_stats(c, 5, 4, 1.234);
	sw_console_finish(c);
	sw_console_finish(c); /* twice is harmless */
	sw_console_free(c);
	mem_close(&m);
	const char *want = "building image app\n"
	                   "[test/unit] running\n"
	                   "[test/unit] hello\n"
	                   "[test/unit] world\n"
	                   "[test/lint] running\n"
	                   "[test/lint] partial\n"
	                   "[test/lint] failed in 1.5s: exit code 2\n"
	                   "[test/lint] running: retry 1\n"
	                   "[test/lint]\n"
	                   "[test/lint]\n"
	                   "[test/lint] second\n"
	                   "[test/lint] allowed failure in 2.0s: exit code 2\n"
	                   "[test/unit] tail without newline\n"
	                   "[test/unit] passed in 2.0s\n"
	                   "[deploy/ship-it] skipped: an earlier stage failed\n"
	                   "promoting 127.0.0.1:5000/app:latest\n"
	                   "\n"
	                   "JOB      STAGE   RESULT           DURATION  ATTEMPTS\n"
	                   "unit     test    passed           2.0s      1\n"
	                   "lint     test    allowed failure  2.0s      2\n"
	                   "ship-it  deploy  skipped          -         0\n"
	                   "build: 5 steps, 4 cached (80%), 1.2s\n";
	assert_string_equal(m.buf, want);
	free(m.buf);
}

static void test_reporters__console_long_lines(void **state)
{
	(void)state;
	mem m;
	mem_open(&m);
	sw_console *c = sw_console_new(SW_CONSOLE_PLAIN, m.f);
	size_t j = sw_console_add_job(c, "s", "j");
	char *big = sw_xmalloc(10000);
	memset(big, 'a', 10000);
	/* 10000 bytes in three uneven pieces, then a newline: 4096 + 4096 + 1808 */
	sw_console_job_output(c, j, big, 3000);
	sw_console_job_output(c, j, big, 5000);
	sw_console_job_output(c, j, big, 2000);
	sw_console_job_output(c, j, "\n", 1);
	/* exactly two pieces: no empty third line after the newline */
	sw_console_job_output(c, j, big, 8192);
	sw_console_job_output(c, j, "\nend\n", 5);
	sw_console_free(c); /* no finish: no summary */
	mem_close(&m);
	size_t lens[8], n = 0;
	for (char *p = m.buf, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		assert_int_equal(strncmp(p, "[s/j] ", 6), 0);
		assert_true(n < 8);
		lens[n++] = (size_t)(nl - p) - 6;
	}
	assert_int_equal(n, 6);
	assert_int_equal(lens[0], 4096);
	assert_int_equal(lens[1], 4096);
	assert_int_equal(lens[2], 1808);
	assert_int_equal(lens[3], 4096);
	assert_int_equal(lens[4], 4096);
	assert_int_equal(lens[5], 3);
	free(big);
	free(m.buf);
}

static void test_reporters__console_durations_and_quiet(void **state)
{
	(void)state;
	mem m;
	mem_open(&m);
	sw_console *c = sw_console_new(SW_CONSOLE_QUIET, m.f);
	fake_now = 0;
	sw_console__set_clock(c, fake_clock, NULL);
	size_t a = sw_console_add_job(c, "test", "a");
	size_t b = sw_console_add_job(c, "test", "bb");
	size_t d = sw_console_add_job(c, "test", "c");
	sw_console_job_state(c, a, SW_JOB_RUNNING, NULL);
	sw_console_job_state(c, b, SW_JOB_RUNNING, NULL);
	sw_console_job_state(c, d, SW_JOB_RUNNING, NULL);
	sw_console_job_output(c, a, "not shown\n", 10);
	sw_console_line(c, "pushed %s", "sha256:abc");
	fake_now = 125000;
	sw_console_job_state(c, a, SW_JOB_TIMED_OUT, "after 2m");
	fake_now = 3723000;
	sw_console_job_state(c, b, SW_JOB_CANCELLED, NULL);
	sw_console_job_state(c, d, SW_JOB_ERROR, "image missing");
	sw_console_finish(c);
	sw_console_free(c);
	mem_close(&m);
	assert_string_equal(m.buf, "JOB  STAGE  RESULT     DURATION  ATTEMPTS\n"
	                           "a    test   timed out  2m05s     1\n"
	                           "bb   test   cancelled  1h02m03s  1\n"
	                           "c    test   error      1h02m03s  1\n"
	                           "pushed sha256:abc\n");
	free(m.buf);
}

/* Drop ANSI escape sequences. */
static char *strip_ansi(const char *s)
{
	char *o = sw_xmalloc(strlen(s) + 1), *w = o;
	while (*s) {
		if (*s == '\033' && s[1] == '[') {
			s += 2;
			while (*s && !(*s >= 0x40 && *s <= 0x7e))
				s++;
			if (*s)
				s++;
			continue;
		}
		*w++ = *s++;
	}
	*w = '\0';
	return o;
}

static void test_reporters__console_tty(void **state)
{
	(void)state;
	mem m;
	mem_open(&m);
	sw_console *c = sw_console_new(SW_CONSOLE_TTY, m.f);
	sw_console__set_width(c, 60);
	size_t a = sw_console_add_job(c, "test", "unit");
	size_t b = sw_console_add_job(c, "test", "integration");
	size_t d = sw_console_add_job(c, "deploy", "ship");
	sw_console_job_state(c, a, SW_JOB_RUNNING, NULL);
	sw_console_job_state(c, b, SW_JOB_RUNNING, NULL);
	char longline[500];
	memset(longline, 'x', sizeof(longline));
	sw_console_job_output(c, a, "first line\n", 11);
	sw_console_job_output(c, b, longline, sizeof(longline));
	sw_console_job_output(c, b, "\n", 1);
	struct timespec ts = { 0, 250 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	sw_console_line(c, "a free line");
	sw_console_job_output(c, a, "LAST-OF-UNIT\n", 13);
	sw_console_job_state(c, a, SW_JOB_PASSED, NULL);
	sw_console_job_state(c, b, SW_JOB_FAILED, "exit code 1");
	sw_console_job_state(c, d, SW_JOB_SKIPPED, NULL);
	nanosleep(&ts, NULL);
	sw_console_build_stats(c, 3, 0, 0.5);
	sw_console_finish(c);
	sw_console_free(c);
	mem_close(&m);

	assert_non_null(strstr(m.buf, "\033["));
	cleanup_free char *plain = strip_ansi(m.buf);
	assert_non_null(strstr(plain, "[+] Pipeline"));
	assert_non_null(strstr(plain, "LAST-OF-UNIT"));
	assert_non_null(strstr(plain, "a free line\n"));
	/* no drawn line wider than the terminal */
	for (char *p = plain, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		char *cr = memrchr(p, '\r', (size_t)(nl - p));
		char *start = cr ? cr + 1 : p;
		if (nl - start > 60)
			fail_msg("line of %d columns: %.*s", (int)(nl - start), (int)(nl - start),
			         start);
	}
	/* it ends with the table and the build line */
	const char *tail = "JOB          STAGE   RESULT   DURATION  ATTEMPTS\n";
	const char *t = strstr(plain, tail);
	assert_non_null(t);
	assert_non_null(strstr(t, "\nunit         test    passed   "));
	assert_non_null(strstr(t, "\nintegration  test    failed   "));
	assert_non_null(strstr(t, "\nship         deploy  skipped  -         0\n"));
	size_t pl = strlen(plain);
	const char *bl = "build: 3 steps, 0 cached (0%), 0.5s\n";
	assert_true(pl > strlen(bl));
	assert_string_equal(plain + pl - strlen(bl), bl);
	free(m.buf);
}

static void *writer(void *arg)
{
	sw_console *c = ((void **)arg)[0];
	size_t job = (size_t)(uintptr_t)((void **)arg)[1];
	for (int i = 0; i < 200; i++) {
		char line[64];
		int n = snprintf(line, sizeof(line), "line %d of job %zu\n", i, job);
		/* in two pieces, so partial lines are held while others write */
		sw_console_job_output(c, job, line, 5);
		sw_console_job_output(c, job, line + 5, (size_t)n - 5);
	}
	sw_console_job_state(c, job, SW_JOB_PASSED, NULL);
	return NULL;
}

static void test_reporters__console_threads(void **state)
{
	(void)state;
	mem m;
	mem_open(&m);
	sw_console *c = sw_console_new(SW_CONSOLE_AUTO, m.f); /* not a terminal: PLAIN */
	pthread_t th[4];
	void *args[4][2];
	for (size_t i = 0; i < 4; i++) {
		char name[8];
		snprintf(name, sizeof(name), "j%zu", i);
		args[i][0] = c;
		args[i][1] = (void *)(uintptr_t)sw_console_add_job(c, "s", name);
		sw_console_job_state(c, i, SW_JOB_RUNNING, NULL);
	}
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer, args[i]), 0);
	for (size_t i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	sw_console_free(c);
	mem_close(&m);
	int next[4] = { 0 };
	size_t n = 0;
	for (char *p = m.buf, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
		*nl = '\0';
		unsigned job;
		int i;
		char tail[32];
		if (sscanf(p, "[s/j%u] line %d of job %u", &job, &i, &job) == 3) {
			assert_true(job < 4);
			assert_int_equal(i, next[job]);
			next[job]++;
		} else if (sscanf(p, "[s/j%u] %31s", &job, tail) == 2) {
			assert_true(strcmp(tail, "running") == 0 || strcmp(tail, "passed") == 0);
		} else {
			fail_msg("stray line: %s", p);
		}
		n++;
	}
	assert_int_equal(n, 4 * 200 + 8);
	free(m.buf);
}

static void test_reporters__console_state_names(void **state)
{
	(void)state;
	const char *want[] = { "pending",   "running", "passed",    "failed", "allowed failure",
		               "timed out", "skipped", "cancelled", "error" };
	for (int s = SW_JOB_PENDING; s <= SW_JOB_ERROR; s++)
		assert_string_equal(sw_job_state_name((sw_job_state)s), want[s]);
	/* NULL console takes calls */
	sw_console_job_state(NULL, 0, SW_JOB_RUNNING, NULL);
	sw_console_job_output(NULL, 0, "x", 1);
	sw_console_line(NULL, "x");
	sw_console_finish(NULL);
	sw_console_free(NULL);
}

int test_reporters_console_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reporters__console_plain),
		cmocka_unit_test(test_reporters__console_long_lines),
		cmocka_unit_test(test_reporters__console_durations_and_quiet),
		cmocka_unit_test(test_reporters__console_tty),
		cmocka_unit_test(test_reporters__console_threads),
		cmocka_unit_test(test_reporters__console_state_names),
	};
	return cmocka_run_group_tests_name("reporters_console", tests, NULL, NULL);
}
