/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Groups "journal" and "sched" of test_agent. The journal: items added once (a second add of
 * the same id changes nothing), updated, listed in queue order and by state, refs remembered,
 * all of it read back from STATE/agent/journal.json by a fresh handle (GitLab payloads never
 * written); the file is parseable at every instant while another thread keeps changing it;
 * recovery queues interrupted git items again and fails them past max_attempts (GitLab items are
 * never re-run). The scheduler, with fake run functions: the concurrency bound and a source's own
 * limit are honoured, sources take turns, drain stops the taking while running work finishes,
 * and cancel_all reaches the running items. Each case has its own temporary state folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agent/agent_internal.h"

#include <dirent.h>
#include <string.h>
#include <time.h>

int test_agent_journal_run(void);

typedef struct jfix {
	char *tmp;
	char *file; /* tmp/agent/journal.json */
} jfix;

static int setup(void **state)
{
	jfix *f = sw_xcalloc(1, sizeof(*f));
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&f->tmp, sw_fs_tmpdir(), "sw-agent-journal-", &e) < 0)
		fail_msg("%s", sw_error_msg(e));
	f->file = sw_path_join(f->tmp, "agent/journal.json");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	jfix *f = *state;
	sw_error *e = NULL;
	if (sw_fs_rm_rf(f->tmp, &e) < 0)
		sw_error_free(e);
	free(f->tmp);
	free(f->file);
	free(f);
	return 0;
}

#define CHECK_OK(expr)                                                \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int check_r_ = (expr);                                \
		if (check_r_ < 0)                                     \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

static sw_work item(const char *id, const char *source, const char *kind)
{
	sw_work w;
	memset(&w, 0, sizeof(w));
	w.id = (char *)id;
	w.source = (char *)source;
	w.kind = (char *)kind;
	w.exit_code = -1;
	return w;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static char *slurp(const char *path)
{
	char *buf = NULL;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, NULL, path, 64 << 20, &e) < 0) {
		sw_error_free(e);
		return NULL;
	}
	return buf;
}

/* ---------------------------------------------------------------- journal */

static void test_agent__journal_basics(void **state)
{
	jfix *f = *state;
	sw_journal *j = NULL;
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	sw_work a = item("git:app:1111", "app", "git");
	a.sha = "1111";
	a.ref = "refs/heads/main";
	sw_work b = item("gitlab:gl:42", "gl", "gitlab");
	b.payload = "{\"token\":\"job-secret-token\"}";
	sw_work c = item("git:lib:2222", "lib", "git");
	bool added = false;
	CHECK_OK(sw_journal_add(&added, j, &a, &err));
	assert_true(added);
	CHECK_OK(sw_journal_add(&added, j, &b, &err));
	assert_true(added);
	CHECK_OK(sw_journal_add(&added, j, &c, &err));
	assert_true(added);
	/* the same id again: nothing changes */
	sw_work a2 = item("git:app:1111", "other", "git");
	CHECK_OK(sw_journal_add(&added, j, &a2, &err));
	assert_false(added);

	sw_work *v = NULL;
	size_t n = 0;
	CHECK_OK(sw_journal_list(&v, &n, j, -1, &err));
	assert_int_equal(n, 3);
	assert_string_equal(v[0].id, "git:app:1111");
	assert_string_equal(v[0].source, "app");
	assert_string_equal(v[0].ref, "refs/heads/main");
	assert_int_equal(v[0].state, SW_WORK_QUEUED);
	assert_true(v[0].queued_at > 1600000000000LL);
	assert_string_equal(v[1].id, "gitlab:gl:42");
	assert_string_equal(v[1].payload, b.payload); /* in memory */
	assert_string_equal(v[2].id, "git:lib:2222");
	sw_work_list_free(v, n);

	/* update */
	sw_work u = item("git:app:1111", "app", "git");
	u.state = SW_WORK_FAILED;
	u.attempts = 1;
	u.exit_code = 1;
	u.started_at = 5;
	u.finished_at = 6;
	u.output_dir = "/out/1";
	u.message = "a job failed";
	CHECK_OK(sw_journal_update(j, &u, &err));
	sw_work nope = item("git:app:none", "app", "git");
	sw_error *e = NULL;
	assert_int_equal(sw_journal_update(j, &nope, &e), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(e), "git:app:none"));
	sw_error_clear(&e);
	CHECK_OK(sw_journal_list(&v, &n, j, SW_WORK_QUEUED, &err));
	assert_int_equal(n, 2);
	assert_string_equal(v[0].id, "gitlab:gl:42");
	sw_work_list_free(v, n);
	CHECK_OK(sw_journal_list(&v, &n, j, SW_WORK_FAILED, &err));
	assert_int_equal(n, 1);
	assert_int_equal(v[0].exit_code, 1);
	assert_string_equal(v[0].message, "a job failed");
	assert_string_equal(v[0].output_dir, "/out/1");
	sw_work_list_free(v, n);

	/* refs */
	assert_null(sw_journal_ref_get(j, "app", "refs/heads/main"));
	CHECK_OK(sw_journal_ref_set(j, "app", "refs/heads/main", "1111", &err));
	CHECK_OK(sw_journal_ref_set(j, "app", "refs/tags/v1", "1111", &err));
	CHECK_OK(sw_journal_ref_set(j, "lib", "refs/heads/main", "2222", &err));
	CHECK_OK(sw_journal_ref_set(j, "app", "refs/tags/v1", NULL, &err));
	cleanup_free char *r1 = sw_journal_ref_get(j, "app", "refs/heads/main");
	assert_string_equal(r1, "1111");
	assert_null(sw_journal_ref_get(j, "app", "refs/tags/v1"));
	sw_journal_free(j);

	/* a fresh handle reads it all back; the GitLab payload was never written */
	cleanup_free char *text = slurp(f->file);
	assert_non_null(text);
	assert_null(strstr(text, "job-secret-token"));
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	CHECK_OK(sw_journal_list(&v, &n, j, -1, &err));
	assert_int_equal(n, 3);
	assert_string_equal(v[0].id, "git:app:1111");
	assert_int_equal(v[0].state, SW_WORK_FAILED);
	assert_int_equal(v[0].attempts, 1);
	assert_string_equal(v[0].message, "a job failed");
	assert_null(v[1].payload);
	sw_work_list_free(v, n);
	cleanup_free char *r2 = sw_journal_ref_get(j, "lib", "refs/heads/main");
	assert_string_equal(r2, "2222");
	sw_journal_free(j);
	assert_string_equal(sw_work_state_name(SW_WORK_CANCELLED), "cancelled");
	assert_string_equal(sw_work_state_name(SW_WORK_QUEUED), "queued");

	/* a torn or foreign file is refused with its name, not silently emptied */
	assert_int_equal(truncate(f->file, 20), 0);
	assert_true(sw_journal_open(&j, f->tmp, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), f->file));
	assert_non_null(strstr(sw_error_msg(e), "not valid JSON"));
	sw_error_clear(&e);
}

typedef struct writer {
	sw_journal *j;
	int n;
	volatile int done;
} writer;

static void *write_many(void *arg)
{
	writer *w = arg;
	for (int i = 0; i < w->n; i++) {
		char id[32], sha[16];
		snprintf(id, sizeof(id), "git:r:%04d", i);
		snprintf(sha, sizeof(sha), "%04d", i);
		sw_work it = item(id, "r", "git");
		sw_error *e = NULL;
		if (sw_journal_add(NULL, w->j, &it, &e) < 0 ||
		    sw_journal_ref_set(w->j, "r", "refs/heads/main", sha, &e) < 0) {
			fprintf(stderr, "writer: %s\n", sw_error_msg(e));
			sw_error_free(e);
			break;
		}
	}
	w->done = 1;
	return NULL;
}

static void test_agent__journal_atomic(void **state)
{
	jfix *f = *state;
	writer w = { NULL, 150, 0 };
	CHECK_OK(sw_journal_open(&w.j, f->tmp, &err));
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, write_many, &w), 0);
	/* whenever it is read, the file is a whole journal whose items match its ref */
	int reads = 0, last = -1;
	while (!w.done || reads < 5) {
		char *text = slurp(f->file);
		if (!text) {
			sched_yield();
			continue;
		}
		json_error_t je;
		json_t *root = json_loads(text, 0, &je);
		if (!root)
			fail_msg("torn journal after %d reads: %s", reads, je.text);
		size_t n = json_array_size(json_object_get(root, "items"));
		const char *sha = json_string_value(json_object_get(
		        json_object_get(json_object_get(root, "refs"), "r"), "refs/heads/main"));
		/* a ref is set right after its item: the file has that item or one more */
		if (sha)
			assert_true(n == (size_t)atoi(sha) + 1 || n == (size_t)atoi(sha) + 2);
		assert_true((int)n >= last);
		last = (int)n;
		json_decref(root);
		free(text);
		reads++;
	}
	pthread_join(t, NULL);
	sw_journal_free(w.j);
	/* no temporary files left next to it */
	cleanup_free char *dir = sw_path_join(f->tmp, "agent");
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *de;
	int files = 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		assert_string_equal(de->d_name, "journal.json");
		files++;
	}
	closedir(d);
	assert_int_equal(files, 1);
	cleanup_free char *text = slurp(f->file);
	json_t *root = json_loads(text, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(root, "items")), 150);
	json_decref(root);
}

static void test_agent__journal_recover(void **state)
{
	jfix *f = *state;
	sw_journal *j = NULL;
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	const char *ids[] = { "git:a:1", "git:a:2", "gitlab:gl:7", "git:a:3", "git:a:4" };
	const char *kinds[] = { "git", "git", "gitlab", "git", "git" };
	sw_work_state states[] = { SW_WORK_RUNNING, SW_WORK_RUNNING, SW_WORK_RUNNING,
		                   SW_WORK_PASSED, SW_WORK_QUEUED };
	int attempts[] = { 1, 2, 1, 1, 0 };
	for (size_t i = 0; i < SW_ARRAY_SIZE(ids); i++) {
		sw_work w = item(ids[i], strcmp(kinds[i], "git") == 0 ? "a" : "gl", kinds[i]);
		CHECK_OK(sw_journal_add(NULL, j, &w, &err));
		w.state = states[i];
		w.attempts = attempts[i];
		CHECK_OK(sw_journal_update(j, &w, &err));
	}
	sw_journal_free(j); /* "the agent died" */

	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	unsigned rq = 9, fl = 9;
	CHECK_OK(sw_journal_recover(&rq, &fl, j, 2, &err));
	assert_int_equal(rq, 1);
	assert_int_equal(fl, 2);
	sw_work *v = NULL;
	size_t n = 0;
	CHECK_OK(sw_journal_list(&v, &n, j, -1, &err));
	assert_int_equal(n, 5);
	assert_int_equal(v[0].state, SW_WORK_QUEUED); /* one attempt of 2: again */
	assert_int_equal(v[0].attempts, 1);
	assert_int_equal(v[1].state, SW_WORK_ERROR); /* two attempts of 2: failed */
	assert_string_equal(v[1].message,
	                    "interrupted 2 times (max_attempts 2): the agent stopped while it ran");
	assert_true(v[1].finished_at > 0);
	assert_int_equal(v[2].state, SW_WORK_ERROR); /* GitLab jobs are never re-run */
	assert_string_equal(v[2].message, "the agent stopped while the job ran");
	assert_int_equal(v[3].state, SW_WORK_PASSED); /* finished: untouched */
	assert_int_equal(v[4].state, SW_WORK_QUEUED);
	sw_work_list_free(v, n);
	sw_journal_free(j);
	/* written: a second recovery finds nothing to do */
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	CHECK_OK(sw_journal_recover(&rq, &fl, j, 2, &err));
	assert_int_equal(rq, 0);
	assert_int_equal(fl, 0);
	sw_journal_free(j);
}

/* ---------------------------------------------------------------- scheduler */

typedef struct fake {
	pthread_mutex_t lock;
	int running, max_running, max_per_source_gl, running_gl, runs;
	char order[64][32];
	int sleep_ms;
	volatile int release; /* block_run waits for it */
	int cancel_seen;
} fake;

static sw_work_state sleepy_run(sw_work *w, volatile sig_atomic_t *cancel, void *payload)
{
	(void)cancel;
	fake *fk = payload;
	pthread_mutex_lock(&fk->lock);
	if (fk->runs < 64)
		snprintf(fk->order[fk->runs], sizeof(fk->order[0]), "%s", w->id);
	fk->runs++;
	fk->running++;
	if (fk->running > fk->max_running)
		fk->max_running = fk->running;
	if (strcmp(w->source, "gl") == 0 && ++fk->running_gl > fk->max_per_source_gl)
		fk->max_per_source_gl = fk->running_gl;
	pthread_mutex_unlock(&fk->lock);
	sleep_ms(fk->sleep_ms);
	pthread_mutex_lock(&fk->lock);
	fk->running--;
	if (strcmp(w->source, "gl") == 0)
		fk->running_gl--;
	pthread_mutex_unlock(&fk->lock);
	w->exit_code = 0;
	return SW_WORK_PASSED;
}

static sw_work_state block_run(sw_work *w, volatile sig_atomic_t *cancel, void *payload)
{
	fake *fk = payload;
	pthread_mutex_lock(&fk->lock);
	fk->runs++;
	fk->running++;
	pthread_mutex_unlock(&fk->lock);
	while (!fk->release && !*cancel)
		sleep_ms(5);
	pthread_mutex_lock(&fk->lock);
	fk->running--;
	fk->cancel_seen = *cancel;
	pthread_mutex_unlock(&fk->lock);
	(void)w;
	return *cancel ? SW_WORK_CANCELLED : SW_WORK_PASSED;
}

static void add_items(sw_journal *j, const char *source, int n)
{
	for (int i = 0; i < n; i++) {
		char id[64];
		snprintf(id, sizeof(id), "git:%s:%d", source, i);
		sw_work w = item(id, source, "git");
		CHECK_OK(sw_journal_add(NULL, j, &w, &err));
	}
}

static size_t count_state(sw_journal *j, int state)
{
	sw_work *v = NULL;
	size_t n = 0;
	CHECK_OK(sw_journal_list(&v, &n, j, state, &err));
	sw_work_list_free(v, n);
	return n;
}

/* Wait until nothing is queued or running (at most 10 s). */
static void wait_all_done(sw_sched *s)
{
	for (int i = 0; i < 1000; i++) {
		unsigned r = 0, q = 0;
		sw_sched_counts(s, NULL, &q);
		sw_sched_counts(s, &r, NULL);
		if (!r && !q)
			return;
		sleep_ms(10);
	}
	fail_msg("the scheduler did not finish its work");
}

static void test_agent__sched_concurrency(void **state)
{
	jfix *f = *state;
	sw_journal *j = NULL;
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	fake fk;
	memset(&fk, 0, sizeof(fk));
	pthread_mutex_init(&fk.lock, NULL);
	fk.sleep_ms = 60;
	sw_sched *s = NULL;
	CHECK_OK(sw_sched_new(&s, j, 3, sleepy_run, &fk, &err));
	sw_sched_set_source_limit(s, "gl", 1);
	add_items(j, "a", 6);
	add_items(j, "b", 4);
	add_items(j, "gl", 4);
	sw_sched_kick(s);
	wait_all_done(s);
	assert_true(sw_sched_wait_idle(s, 5000));
	assert_int_equal(fk.runs, 14);
	assert_int_equal(fk.max_running, 3);       /* never more than the bound ... */
	assert_int_equal(fk.max_per_source_gl, 1); /* ... nor a source's own limit */
	assert_int_equal(count_state(j, SW_WORK_PASSED), 14);
	sw_work *v = NULL;
	size_t n = 0;
	CHECK_OK(sw_journal_list(&v, &n, j, -1, &err));
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(v[i].attempts, 1);
		assert_true(v[i].started_at > 0 && v[i].finished_at >= v[i].started_at);
		assert_int_equal(v[i].exit_code, 0);
	}
	sw_work_list_free(v, n);
	/* a new bound applies to what starts next */
	sw_sched_set_concurrency(s, 1);
	fk.max_running = 0;
	add_items(j, "c", 3);
	sw_sched_kick(s);
	wait_all_done(s);
	assert_true(sw_sched_wait_idle(s, 5000));
	assert_int_equal(fk.max_running, 1);
	sw_sched_drain(s);
	sw_sched_free(s);
	sw_journal_free(j);
	pthread_mutex_destroy(&fk.lock);
}

static void test_agent__sched_fair(void **state)
{
	jfix *f = *state;
	sw_journal *j = NULL;
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	/* source "app" queued three before "lib" queued two: they still take turns */
	add_items(j, "app", 3);
	add_items(j, "lib", 2);
	fake fk;
	memset(&fk, 0, sizeof(fk));
	pthread_mutex_init(&fk.lock, NULL);
	fk.sleep_ms = 1;
	sw_sched *s = NULL;
	CHECK_OK(sw_sched_new(&s, j, 1, sleepy_run, &fk, &err));
	wait_all_done(s);
	assert_true(sw_sched_wait_idle(s, 5000));
	assert_int_equal(fk.runs, 5);
	const char *want[] = { "git:app:0", "git:lib:0", "git:app:1", "git:lib:1", "git:app:2" };
	for (size_t i = 0; i < SW_ARRAY_SIZE(want); i++)
		assert_string_equal(fk.order[i], want[i]);
	sw_sched_drain(s);
	sw_sched_free(s);
	sw_journal_free(j);
	pthread_mutex_destroy(&fk.lock);
}

static void test_agent__sched_drain(void **state)
{
	jfix *f = *state;
	sw_journal *j = NULL;
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	fake fk;
	memset(&fk, 0, sizeof(fk));
	pthread_mutex_init(&fk.lock, NULL);
	sw_sched *s = NULL;
	CHECK_OK(sw_sched_new(&s, j, 1, block_run, &fk, &err));
	add_items(j, "a", 3);
	sw_sched_kick(s);
	for (int i = 0; i < 500 && count_state(j, SW_WORK_RUNNING) == 0; i++)
		sleep_ms(10);
	assert_int_equal(count_state(j, SW_WORK_RUNNING), 1);
	sw_sched_drain(s);
	assert_true(sw_sched_draining(s));
	assert_false(sw_sched_wait_idle(s, 100)); /* the running one goes on */
	unsigned r = 0, q = 0;
	sw_sched_counts(s, &r, &q);
	assert_int_equal(r, 1);
	assert_int_equal(q, 2);
	fk.release = 1;
	assert_true(sw_sched_wait_idle(s, 5000));
	sleep_ms(100); /* nothing new starts after a drain */
	assert_int_equal(fk.runs, 1);
	assert_int_equal(count_state(j, SW_WORK_PASSED), 1);
	assert_int_equal(count_state(j, SW_WORK_QUEUED), 2);
	assert_int_equal(fk.cancel_seen, 0);
	sw_sched_free(s);
	sw_journal_free(j);
	pthread_mutex_destroy(&fk.lock);
}

static void test_agent__sched_cancel(void **state)
{
	jfix *f = *state;
	sw_journal *j = NULL;
	CHECK_OK(sw_journal_open(&j, f->tmp, &err));
	fake fk;
	memset(&fk, 0, sizeof(fk));
	pthread_mutex_init(&fk.lock, NULL);
	sw_sched *s = NULL;
	CHECK_OK(sw_sched_new(&s, j, 2, block_run, &fk, &err));
	add_items(j, "a", 2);
	sw_sched_kick(s);
	for (int i = 0; i < 500 && count_state(j, SW_WORK_RUNNING) < 2; i++)
		sleep_ms(10);
	assert_int_equal(count_state(j, SW_WORK_RUNNING), 2);
	sw_sched_drain(s);
	sw_sched_cancel_all(s, 2);
	assert_true(sw_sched_wait_idle(s, 5000));
	assert_int_equal(fk.cancel_seen, 2);
	assert_int_equal(count_state(j, SW_WORK_CANCELLED), 2);
	sw_sched_free(s);
	sw_journal_free(j);
	pthread_mutex_destroy(&fk.lock);
}

int test_agent_journal_run(void)
{
	const struct CMUnitTest journal[] = {
		cmocka_unit_test_setup_teardown(test_agent__journal_basics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__journal_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__journal_recover, setup, teardown),
	};
	const struct CMUnitTest sched[] = {
		cmocka_unit_test_setup_teardown(test_agent__sched_concurrency, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__sched_fair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__sched_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__sched_cancel, setup, teardown),
	};
	int failed = cmocka_run_group_tests_name("journal", journal, NULL, NULL);
	failed += cmocka_run_group_tests_name("sched", sched, NULL, NULL);
	return failed;
}
