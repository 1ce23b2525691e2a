/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON-lines event log: each line one object with "time" (RFC 3339 UTC, milliseconds) and
 * "type" first and the caller's fields after; many threads emitting at once (lines longer than
 * a pipe buffer included) give whole, valid lines only, none lost; a NULL log takes every call;
 * a folder that does not exist is an error naming the path.
 */
#include "test_reporters.h"

#include <pthread.h>
#include <regex.h>
#include <string.h>
#include <sys/stat.h>

#define THREADS 8
#define PER_THREAD 300

static char *tmpdir_new(void)
{
	char *dir = NULL;
	CHECK_OK(sw_fs_mkdtemp(&dir, NULL, "sw-reporters-events-", &err));
	return dir;
}

static void tmpdir_free(char *dir)
{
	CHECK_OK(sw_fs_rm_rf(dir, &err));
	free(dir);
}

static void test_reporters__events_lines(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	cleanup_free char *path = sw_path_join(dir, "events.jsonl");
	sw_events *ev = NULL;
	CHECK_OK(sw_events_open(&ev, path, &err));
	sw_events_emit(ev, "job",
	               json_pack("{s:s, s:s, s:s, s:i, s:s}", "state", "passed", "name", "unit",
	                         "stage", "test", "duration_ms", 1234, "type", "not-this"));
	sw_events_emit(ev, "pipeline", NULL);
	sw_events_close(ev);

	cleanup_free char *data = NULL;
	size_t len = 0;
	CHECK_OK(sw_fs_read_file(&data, &len, path, 1 << 20, &err));
	char *nl = strchr(data, '\n');
	assert_non_null(nl);
	/* "time" and "type" come first; the caller cannot override them */
	assert_int_equal(strncmp(data, "{\"time\":\"", 9), 0);
	regex_t re;
	assert_int_equal(
	        regcomp(&re,
	                "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
	                "\\.[0-9]{3}Z\",\"type\":\"job\",\"state\":\"passed\",\"name\":"
	                "\"unit\",\"stage\":\"test\",\"duration_ms\":1234\\}$",
	                REG_EXTENDED),
	        0);
	*nl = '\0';
	if (regexec(&re, data, 0, NULL, 0) != 0)
		fail_msg("line: %s", data);
	regfree(&re);
	assert_string_equal(nl + 1 + strlen(nl + 1) - strlen("\"type\":\"pipeline\"}\n"),
	                    "\"type\":\"pipeline\"}\n");
	tmpdir_free(dir);
}

static void *emitter(void *arg)
{
	sw_events *ev = ((void **)arg)[0];
	int id = (int)(intptr_t)((void **)arg)[1];
	char big[6000];
	memset(big, 'a' + id, sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (int i = 0; i < PER_THREAD; i++)
		sw_events_emit(ev, "job",
		               json_pack("{s:i, s:i, s:s}", "thread", id, "seq", i, "blob",
		                         i % 3 == 0 ? big : "short"));
	return NULL;
}

static void test_reporters__events_concurrent(void **state)
{
	(void)state;
	char *dir = tmpdir_new();
	cleanup_free char *path = sw_path_join(dir, "events.jsonl");
	sw_events *ev = NULL;
	CHECK_OK(sw_events_open(&ev, path, &err));
	pthread_t th[THREADS];
	void *args[THREADS][2];
	for (int i = 0; i < THREADS; i++) {
		args[i][0] = ev;
		args[i][1] = (void *)(intptr_t)i;
		assert_int_equal(pthread_create(&th[i], NULL, emitter, args[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	sw_events_close(ev);

	cleanup_free char *data = NULL;
	size_t len = 0;
	CHECK_OK(sw_fs_read_file(&data, &len, path, 64 << 20, &err));
	int next[THREADS] = { 0 };
	size_t lines = 0;
	char *save = NULL;
	assert_int_equal(data[len - 1], '\n');
	for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t je;
		json_t *o = json_loads(line, 0, &je);
		if (!o)
			fail_msg("line %zu is not JSON: %s", lines + 1, je.text);
		int t = (int)json_integer_value(json_object_get(o, "thread"));
		int seq = (int)json_integer_value(json_object_get(o, "seq"));
		assert_true(t >= 0 && t < THREADS);
		/* each thread's events arrive in order, none lost */
		assert_int_equal(seq, next[t]);
		next[t]++;
		assert_string_equal(json_string_value(json_object_get(o, "type")), "job");
		const char *blob = json_string_value(json_object_get(o, "blob"));
		assert_true(strcmp(blob, "short") == 0 ||
		            (strlen(blob) == 5999 && blob[0] == 'a' + t && blob[5998] == 'a' + t));
		json_decref(o);
		lines++;
	}
	assert_int_equal(lines, THREADS * PER_THREAD);
	tmpdir_free(dir);
}

static void test_reporters__events_null_and_errors(void **state)
{
	(void)state;
	/* no --events: calls are accepted (and the fields freed: the sanitizer build checks) */
	sw_events_emit(NULL, "job", json_pack("{s:s}", "state", "running"));
	sw_events_emit(NULL, "job", NULL);
	sw_events_close(NULL);

	char *dir = tmpdir_new();
	cleanup_free char *path = sw_path_join(dir, "missing/events.jsonl");
	sw_events *ev = (sw_events *)1;
	sw_error *err = NULL;
	assert_true(sw_events_open(&ev, path, &err) < 0);
	assert_null(ev);
	assert_non_null(strstr(sw_error_msg(err), path));
	sw_error_free(err);
	tmpdir_free(dir);
}

int test_reporters_events_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reporters__events_lines),
		cmocka_unit_test(test_reporters__events_concurrent),
		cmocka_unit_test(test_reporters__events_null_and_errors),
	};
	return cmocka_run_group_tests_name("reporters_events", tests, NULL, NULL);
}
