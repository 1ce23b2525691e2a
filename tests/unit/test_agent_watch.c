/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Group "watch" of the agent's unit tests: the git watcher (agent/watch.c) with the real journal
 * and scheduler, over real repositories made with the git command in a temporary folder and
 * watched over file://, over `git daemon` on 127.0.0.1 (git://) and against a python3 HTTP
 * server that refuses every request (401). What is checked is what a user sees: the work items
 * of the journal (ids, refs, order), the bare mirror on disk, the errors reported (URL without
 * password) and the schedule (backoff while a repository fails, prompt stop).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agent/agent_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int test_agent_watch_run(void);

#define OK(expr)                                                      \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int ok_r_ = (expr);                                   \
		if (ok_r_ < 0)                                        \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

/* ---------------------------------------------------------------- fixture */

typedef struct wfix {
	char *tmp;
	char *state;
	sw_agent_config cfg;
	sw_journal *j;
	sw_sched *s;
	sw_watcher *w;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned polls, errors; /* hook calls */
	char *last_error;
	char *error_repo;
	unsigned bad_errors; /* errors of repository "bad" */
	pid_t daemon_pid;
} wfix;

static void sh(const char *dir, const char *script)
{
	cleanup_free char *cmd = sw_xasprintf(
	        "cd '%s' && export GIT_AUTHOR_NAME='Ada Tester' GIT_AUTHOR_EMAIL=ada@example.com "
	        "GIT_COMMITTER_NAME='Ada Tester' GIT_COMMITTER_EMAIL=ada@example.com "
	        "GIT_CONFIG_NOSYSTEM=1 HOME='%s' && set -e && %s",
	        dir, dir, script);
	int st = system(cmd);
	if (st != 0)
		fail_msg("shell failed (%d): %s", st, script);
}

static void sh_out(char *out, size_t len, const char *dir, const char *script)
{
	cleanup_free char *cmd = sw_xasprintf("cd '%s' && %s", dir, script);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
		out[--n] = '\0';
	assert_int_equal(pclose(f), 0);
}

/* The sha of `rev` in the work tree `repo` (relative to the fixture's folder). */
static void rev_of(char out[41], wfix *f, const char *repo, const char *rev)
{
	char buf[128];
	cleanup_free char *dir = sw_path_join(f->tmp, repo);
	cleanup_free char *cmd = sw_xasprintf("git rev-parse '%s^{commit}'", rev);
	sh_out(buf, sizeof(buf), dir, cmd);
	assert_int_equal(strlen(buf), 40);
	memcpy(out, buf, 41);
}

static void hook_polled(const char *repo, unsigned new_work, void *payload)
{
	(void)repo;
	(void)new_work;
	wfix *f = payload;
	pthread_mutex_lock(&f->lock);
	f->polls++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

static void hook_error(const char *repo, const char *message, void *payload)
{
	wfix *f = payload;
	pthread_mutex_lock(&f->lock);
	f->errors++;
	if (strcmp(repo, "bad") == 0)
		f->bad_errors++;
	free(f->last_error);
	f->last_error = sw_xstrdup(message);
	free(f->error_repo);
	f->error_repo = sw_xstrdup(repo);
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

static sw_work_state run_nothing(sw_work *w, volatile sig_atomic_t *cancel, void *payload)
{
	(void)w;
	(void)cancel;
	(void)payload;
	return SW_WORK_PASSED;
}

static int setup_watch(void **state)
{
	wfix *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->tmp, NULL, "sw-watch-test-", &err) < 0) {
		fprintf(stderr, "setup: %s\n", sw_error_msg(err));
		sw_error_free(err);
		free(f);
		return -1;
	}
	f->state = sw_path_join(f->tmp, "state");
	f->cfg.state_dir = f->state;
	f->cfg.concurrency = 1;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	if (sw_fs_mkdir_p(f->state, 0755, &err) < 0 || sw_journal_open(&f->j, f->state, &err) < 0 ||
	    sw_sched_new(&f->s, f->j, 1, run_nothing, NULL, &err) < 0) {
		fprintf(stderr, "setup: %s\n", sw_error_msg(err));
		sw_error_free(err);
		return -1;
	}
	*state = f;
	return 0;
}

static void cfg_repos_free(sw_agent_config *c)
{
	for (size_t i = 0; i < c->n_repos; i++) {
		sw_agent_repo *r = &c->repos[i];
		free(r->name);
		free(r->url);
		sw_strv_free(r->branches);
		sw_strv_free(r->tags);
		free(r->username);
		free(r->password);
		free(r->token);
	}
	free(c->repos);
	c->repos = NULL;
	c->n_repos = 0;
}

static int teardown_watch(void **state)
{
	wfix *f = *state;
	sw_watcher_stop(f->w);
	if (f->s) {
		sw_sched_drain(f->s);
		(void)sw_sched_wait_idle(f->s, 10000);
		sw_sched_free(f->s);
	}
	sw_journal_free(f->j);
	if (f->daemon_pid > 0) {
		kill(f->daemon_pid, SIGTERM);
		waitpid(f->daemon_pid, NULL, 0);
	}
	cfg_repos_free(&f->cfg);
	sw_error *err = NULL;
	if (sw_fs_rm_rf(f->tmp, &err) < 0)
		sw_error_free(err);
	free(f->tmp);
	free(f->state);
	free(f->last_error);
	free(f->error_repo);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	free(f);
	return 0;
}

/* A repository in the config (patterns: NULL-terminated lists of literals). */
static sw_agent_repo *add_repo(wfix *f, const char *name, const char *url, const char *branches,
                               const char *tags)
{
	f->cfg.repos = sw_xrealloc(f->cfg.repos, (f->cfg.n_repos + 1) * sizeof(*f->cfg.repos));
	sw_agent_repo *r = &f->cfg.repos[f->cfg.n_repos++];
	memset(r, 0, sizeof(*r));
	r->name = sw_xstrdup(name);
	r->url = sw_xstrdup(url);
	r->poll_ms = 3600 * 1000; /* tests poll by hand */
	for (const char *p = branches; p && *p;) {
		size_t n = strcspn(p, ",");
		char *one = sw_xstrndup(p, n);
		sw_strv_push(&r->branches, one);
		free(one);
		p += n + (p[n] == ',');
	}
	for (const char *p = tags; p && *p;) {
		size_t n = strcspn(p, ",");
		char *one = sw_xstrndup(p, n);
		sw_strv_push(&r->tags, one);
		free(one);
		p += n + (p[n] == ',');
	}
	return r;
}

static void start(wfix *f)
{
	sw_watch_hooks hooks = { .poll_error = hook_error, .polled = hook_polled, .payload = f };
	OK(sw_watcher_start(&f->w, &f->cfg, f->j, f->s, &hooks, &err));
}

/* Wait until `n` more polls (ok or failed) than `since` were reported. */
static void wait_polls(wfix *f, unsigned since, unsigned n)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 30;
	pthread_mutex_lock(&f->lock);
	while (f->polls + f->errors < since + n) {
		if (pthread_cond_timedwait(&f->cond, &f->lock, &ts) == ETIMEDOUT) {
			pthread_mutex_unlock(&f->lock);
			fail_msg("no poll reported within 30 s");
		}
	}
	pthread_mutex_unlock(&f->lock);
}

/* Poll every repository now and wait for all of them. */
static void poll_all(wfix *f)
{
	pthread_mutex_lock(&f->lock);
	unsigned since = f->polls + f->errors;
	pthread_mutex_unlock(&f->lock);
	sw_watcher_poll_now(f->w);
	wait_polls(f, since, (unsigned)f->cfg.n_repos);
}

/* The ids of the journal's items (all states, queue order), "," separated, with the repo
 * name prefix "git:NAME:" removed and shas shortened to 7 for readable failures. */
static char *items(wfix *f)
{
	sw_work *v = NULL;
	size_t n = 0;
	OK(sw_journal_list(&v, &n, f->j, -1, &err));
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; i < n; i++) {
		if (i && sw_buf_puts(&b, ",", NULL) < 0)
			fail();
		if (sw_buf_puts(&b, v[i].id, NULL) < 0 || sw_buf_puts(&b, "@", NULL) < 0 ||
		    sw_buf_puts(&b, v[i].ref ? v[i].ref : "-", NULL) < 0)
			fail();
	}
	sw_work_list_free(v, n);
	char *s = sw_buf_steal(&b, NULL);
	return s ? s : sw_xstrdup("");
}

static void assert_items(wfix *f, const char *want)
{
	cleanup_free char *got = items(f);
	if (strcmp(got, want) != 0)
		fail_msg("journal items:\n  got  %s\n  want %s", got, want);
}

/* "git:r:SHA@refs/heads/main" */
static char *item(const char *repo, const char *sha, const char *ref)
{
	return sw_xasprintf("git:%s:%s@%s", repo, sha, ref);
}

static char *item_tag(const char *repo, const char *sha, const char *tag)
{
	return sw_xasprintf("git:%s:%s:tag:%s@refs/tags/%s", repo, sha, tag, tag);
}

/* A work tree "NAME" with one commit on main. */
static void make_repo(wfix *f, const char *name)
{
	cleanup_free char *s = sw_xasprintf("git init -q -b main %s && cd %s && echo one > f && "
	                                    "git add f && git commit -q -m one",
	                                    name, name);
	sh(f->tmp, s);
}

static void commit(wfix *f, const char *repo, const char *msg)
{
	cleanup_free char *dir = sw_path_join(f->tmp, repo);
	cleanup_free char *s = sw_xasprintf("echo '%s' >> f && git commit -q -am '%s'", msg, msg);
	sh(dir, s);
}

static char *file_url(wfix *f, const char *repo)
{
	return sw_xasprintf("file://%s/%s", f->tmp, repo);
}

/* ---------------------------------------------------------------- cases */

static void test_agent__watch_branches_and_tags(void **state)
{
	wfix *f = *state;
	make_repo(f, "r");
	sh(f->tmp, "cd r && git tag v0.9 && git branch rel/1 && git branch other && "
	           "git checkout -q rel/1 && echo rel >> f && git commit -q -am rel && "
	           "git checkout -q main");
	cleanup_free char *url = file_url(f, "r");
	add_repo(f, "r", url, "main,rel/*", "v*");
	start(f);
	poll_all(f);
	char main1[41], rel1[41];
	rev_of(main1, f, "r", "main");
	rev_of(rel1, f, "r", "rel/1");
	/* the first poll starts the head of each matching branch; old tags and "other" nothing */
	cleanup_free char *i1 = item("r", main1, "refs/heads/main");
	cleanup_free char *i2 = item("r", rel1, "refs/heads/rel/1");
	cleanup_free char *want = sw_xasprintf("%s,%s", i1, i2);
	assert_items(f, want);

	/* the bare mirror, with every branch and tag */
	cleanup_free char *mirror = sw_watcher_mirror_path(f->state, "r");
	cleanup_free char *expect_mirror = sw_path_join(f->state, "agent/mirrors/r.git");
	assert_string_equal(mirror, expect_mirror);
	char out[256];
	sh_out(out, sizeof(out), mirror,
	       "git rev-parse --is-bare-repository && git for-each-ref --format='%(refname)' | "
	       "tr '\\n' ' '");
	assert_string_equal(out, "true\nrefs/heads/main refs/heads/other refs/heads/rel/1 "
	                         "refs/tags/v0.9");

	/* nothing new: nothing added */
	poll_all(f);
	assert_items(f, want);

	/* a new commit: one item; three at once: the newest only */
	commit(f, "r", "two");
	poll_all(f);
	char main2[41];
	rev_of(main2, f, "r", "main");
	cleanup_free char *i3 = item("r", main2, "refs/heads/main");
	free(want);
	want = sw_xasprintf("%s,%s,%s", i1, i2, i3);
	assert_items(f, want);
	commit(f, "r", "three");
	commit(f, "r", "four");
	commit(f, "r", "five");
	poll_all(f);
	char main5[41];
	rev_of(main5, f, "r", "main");
	cleanup_free char *i4 = item("r", main5, "refs/heads/main");
	free(want);
	want = sw_xasprintf("%s,%s,%s,%s", i1, i2, i3, i4);
	assert_items(f, want);

	/* a branch that does not match: nothing; a commit on it neither */
	sh(f->tmp, "cd r && git checkout -q other && echo o >> f && git commit -q -am o && "
	           "git checkout -q main");
	poll_all(f);
	assert_items(f, want);

	/* a force-push: the new head only (not the commits it replaced) */
	sh(f->tmp, "cd r && git reset -q --hard HEAD~2 && echo forced >> f && "
	           "git commit -q -am forced1 && echo forced2 >> f && git commit -q -am forced2");
	poll_all(f);
	char forced[41];
	rev_of(forced, f, "r", "main");
	cleanup_free char *i5 = item("r", forced, "refs/heads/main");
	free(want);
	want = sw_xasprintf("%s,%s,%s,%s,%s", i1, i2, i3, i4, i5);
	assert_items(f, want);

	/* a new tag that matches: an item with the tag in its id; one that does not: nothing */
	sh(f->tmp, "cd r && git tag -a v1 -m 'release 1' && git tag nope");
	poll_all(f);
	cleanup_free char *i6 = item_tag("r", forced, "v1");
	free(want);
	want = sw_xasprintf("%s,%s,%s,%s,%s,%s", i1, i2, i3, i4, i5, i6);
	assert_items(f, want);
	cleanup_free char *tagref = sw_journal_ref_get(f->j, "r", "refs/tags/v1");
	assert_non_null(tagref);
	assert_string_equal(tagref, forced); /* the annotated tag peeled to its commit */

	/* a new branch: its head (here a commit main already had: the same id, not twice) */
	sh(f->tmp, "cd r && git branch rel/2 && git checkout -q -b rel/3 && echo r3 >> f && "
	           "git commit -q -am r3 && git checkout -q main");
	poll_all(f);
	char rel3[41];
	rev_of(rel3, f, "r", "rel/3");
	cleanup_free char *i7 = item("r", rel3, "refs/heads/rel/3");
	free(want);
	want = sw_xasprintf("%s,%s,%s,%s,%s,%s,%s", i1, i2, i3, i4, i5, i6, i7);
	assert_items(f, want);

	/* a deleted branch is forgotten by the journal */
	sh(f->tmp, "cd r && git branch -q -D rel/2");
	poll_all(f);
	cleanup_free char *gone = sw_journal_ref_get(f->j, "r", "refs/heads/rel/2");
	assert_null(gone);
	cleanup_free char *kept = sw_journal_ref_get(f->j, "r", "refs/heads/main");
	assert_non_null(kept);
	assert_string_equal(kept, forced);

	/* the run's checkout works from the mirror at a sha */
	cleanup_free char *dest = sw_path_join(f->tmp, "co");
	sw_git_commit c;
	OK(sw_git_checkout(&c, mirror, main2, dest, f->tmp, &err));
	assert_string_equal(c.sha, main2);
	cleanup_free char *fpath = sw_path_join(dest, "f");
	cleanup_free char *content = NULL;
	OK(sw_fs_read_file(&content, NULL, fpath, 4096, &err));
	assert_string_equal(content, "one\ntwo\n");
	sw_git_commit_clear(&c);
	assert_int_equal(f->errors, 0);
}

static void test_agent__watch_every_commit(void **state)
{
	wfix *f = *state;
	make_repo(f, "r");
	cleanup_free char *url = file_url(f, "r");
	sw_agent_repo *r = add_repo(f, "r", url, NULL, NULL); /* branches: default "*" */
	r->every_commit = true;
	start(f);
	poll_all(f);
	char c1[41], c2[41], c3[41], c4[41];
	rev_of(c1, f, "r", "main");
	commit(f, "r", "two");
	commit(f, "r", "three");
	commit(f, "r", "four");
	rev_of(c2, f, "r", "main~2");
	rev_of(c3, f, "r", "main~1");
	rev_of(c4, f, "r", "main");
	poll_all(f);
	cleanup_free char *i1 = item("r", c1, "refs/heads/main");
	cleanup_free char *i2 = item("r", c2, "refs/heads/main");
	cleanup_free char *i3 = item("r", c3, "refs/heads/main");
	cleanup_free char *i4 = item("r", c4, "refs/heads/main");
	cleanup_free char *want = sw_xasprintf("%s,%s,%s,%s", i1, i2, i3, i4); /* oldest first */
	assert_items(f, want);

	/* a force-push with every_commit: still the new head only */
	sh(f->tmp, "cd r && git reset -q --hard HEAD~1 && echo x >> f && git commit -q -am x && "
	           "echo y >> f && git commit -q -am y");
	poll_all(f);
	char c5[41];
	rev_of(c5, f, "r", "main");
	cleanup_free char *i5 = item("r", c5, "refs/heads/main");
	free(want);
	want = sw_xasprintf("%s,%s,%s,%s,%s", i1, i2, i3, i4, i5);
	assert_items(f, want);
}

/* A repository that disappears: reported (hook, URL), retried with a growing delay, while
 * another repository goes on; reload adds and removes repositories, mirrors stay. */
static void test_agent__watch_errors_and_reload(void **state)
{
	wfix *f = *state;
	make_repo(f, "good");
	make_repo(f, "gone");
	cleanup_free char *u1 = file_url(f, "good");
	cleanup_free char *u2 = file_url(f, "gone");
	add_repo(f, "good", u1, "main", NULL);
	add_repo(f, "bad", u2, "main", NULL);
	start(f);
	poll_all(f);
	assert_int_equal(f->errors, 0);
	char g1[41], b1[41];
	rev_of(g1, f, "good", "main");
	rev_of(b1, f, "gone", "main");

	/* the second one disappears */
	cleanup_free char *gone = sw_path_join(f->tmp, "gone");
	OK(sw_fs_rm_rf(gone, &err));
	commit(f, "good", "two");
	poll_all(f);
	assert_true(f->bad_errors >= 1); /* one poll or two (the first poll and poll_now) */
	assert_string_equal(f->error_repo, "bad");
	assert_non_null(strstr(f->last_error, u2));
	char g2[41];
	rev_of(g2, f, "good", "main");
	cleanup_free char *i1 = item("good", g1, "refs/heads/main");
	cleanup_free char *i2 = item("bad", b1, "refs/heads/main");
	cleanup_free char *i3 = item("good", g2, "refs/heads/main");
	cleanup_free char *want = sw_xasprintf("%s,%s,%s", i1, i2, i3);
	assert_items(f, want);

	/* short intervals now: the good one is polled every ~100 ms, the bad one backs off
	 * (200, 400, 800, 1600 ms...) */
	for (size_t i = 0; i < f->cfg.n_repos; i++)
		f->cfg.repos[i].poll_ms = 100;
	OK(sw_watcher_reload(f->w, &f->cfg, &err));
	pthread_mutex_lock(&f->lock);
	unsigned polls0 = f->polls, bad0 = f->bad_errors;
	pthread_mutex_unlock(&f->lock);
	usleep(2500 * 1000);
	pthread_mutex_lock(&f->lock);
	unsigned polls = f->polls - polls0, bad = f->bad_errors - bad0;
	pthread_mutex_unlock(&f->lock);
	if (polls < 12 || bad < 2 || bad > 6)
		fail_msg("in 2.5 s: %u polls of the good repository, %u errors of the bad one",
		         polls, bad);
	/* the good one still works */
	commit(f, "good", "three");
	char g3[41];
	rev_of(g3, f, "good", "main");
	cleanup_free char *i4 = item("good", g3, "refs/heads/main");
	free(want);
	want = sw_xasprintf("%s,%s,%s,%s", i1, i2, i3, i4);
	for (int k = 0; k < 100; k++) {
		cleanup_free char *got = items(f);
		if (strcmp(got, want) == 0)
			break;
		usleep(50 * 1000);
	}
	assert_items(f, want);

	/* reload: "bad" removed (its mirror stays), "new" added and polled at once */
	cfg_repos_free(&f->cfg);
	make_repo(f, "new");
	cleanup_free char *u3 = file_url(f, "new");
	add_repo(f, "good", u1, "main", NULL);
	add_repo(f, "new", u3, "main", NULL);
	pthread_mutex_lock(&f->lock);
	unsigned since = f->polls + f->errors;
	pthread_mutex_unlock(&f->lock);
	OK(sw_watcher_reload(f->w, &f->cfg, &err));
	wait_polls(f, since, 1);
	pthread_mutex_lock(&f->lock);
	bad0 = f->bad_errors;
	pthread_mutex_unlock(&f->lock);
	poll_all(f);
	char n1[41];
	rev_of(n1, f, "new", "main");
	cleanup_free char *i5 = item("new", n1, "refs/heads/main");
	cleanup_free char *got = items(f);
	assert_non_null(strstr(got, i5));
	assert_int_equal(f->bad_errors, bad0); /* no longer polled */
	cleanup_free char *mirror = sw_watcher_mirror_path(f->state, "bad");
	struct stat st;
	assert_int_equal(stat(mirror, &st), 0);

	/* stop is prompt even with polls due every 100 ms */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sw_watcher_stop(f->w);
	f->w = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (secs > 2.0)
		fail_msg("sw_watcher_stop took %.1f s", secs);
}

static int free_port(void)
{
	char buf[32];
	sh_out(buf, sizeof(buf), "/",
	       "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); "
	       "print(s.getsockname()[1])'");
	return atoi(buf);
}

/* Wait until 127.0.0.1:port accepts connections. */
static void wait_port(int port)
{
	cleanup_free char *cmd = sw_xasprintf(
	        "python3 -c 'import socket,time,sys\n"
	        "for i in range(200):\n"
	        "  try:\n"
	        "    socket.create_connection((\"127.0.0.1\", %d), 1).close(); sys.exit(0)\n"
	        "  except OSError: time.sleep(0.05)\n"
	        "sys.exit(1)'",
	        port);
	if (system(cmd) != 0)
		fail_msg("nothing listens on port %d", port);
}

static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static void test_agent__watch_git_daemon(void **state)
{
	wfix *f = *state;
	sh(f->tmp, "mkdir srv && git init -q -b main srv/w && cd srv/w && echo 1 > f && "
	           "git add f && git commit -q -m 1 && git clone -q --bare . ../app.git");
	int port = free_port();
	cleanup_free char *base = sw_path_join(f->tmp, "srv");
	cleanup_free char *bp = sw_xasprintf("--base-path=%s", base);
	cleanup_free char *pp = sw_xasprintf("--port=%d", port);
	char *argv[] = { "git",          "daemon", "--reuseaddr",        bp,
		         "--export-all", pp,       "--listen=127.0.0.1", NULL };
	f->daemon_pid = spawn(argv);
	wait_port(port);
	cleanup_free char *url = sw_xasprintf("git://127.0.0.1:%d/app.git", port);
	add_repo(f, "app", url, "main", "v*");
	start(f);
	poll_all(f);
	assert_int_equal(f->errors, 0);
	char s1[41];
	rev_of(s1, f, "srv/w", "main");
	cleanup_free char *i1 = item("app", s1, "refs/heads/main");
	assert_items(f, i1);
	sh(f->tmp, "cd srv/w && echo 2 >> f && git commit -q -am 2 && git tag v2 && "
	           "git push -q ../app.git main v2");
	poll_all(f);
	char s2[41];
	rev_of(s2, f, "srv/w", "main");
	cleanup_free char *i2 = item("app", s2, "refs/heads/main");
	cleanup_free char *i3 = item_tag("app", s2, "v2");
	cleanup_free char *want = sw_xasprintf("%s,%s,%s", i1, i2, i3);
	assert_items(f, want);
	assert_int_equal(f->errors, 0);
}

/* A python3 HTTP server that answers 401 to everything and counts the requests in a file. */
static pid_t start_refuser(wfix *f, int port, const char *count_file)
{
	cleanup_free char *script = sw_xasprintf(
	        "import http.server,sys\n"
	        "n=0\n"
	        "class H(http.server.BaseHTTPRequestHandler):\n"
	        "  def do_GET(self):\n"
	        "    global n; n+=1; open(sys.argv[2],'w').write(str(n))\n"
	        "    self.send_response(401)\n"
	        "    self.send_header('WWW-Authenticate','Basic realm=\"git\"')\n"
	        "    self.send_header('Content-Length','0'); self.end_headers()\n"
	        "  do_POST=do_GET\n"
	        "  def log_message(self,*a): pass\n"
	        "http.server.HTTPServer(('127.0.0.1',int(sys.argv[1])),H).serve_forever()\n");
	cleanup_free char *py = sw_path_join(f->tmp, "refuse.py");
	OK(sw_fs_write_atomic(py, script, strlen(script), 0644, &err));
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	char *argv[] = { "python3", py, portbuf, (char *)count_file, NULL };
	pid_t pid = spawn(argv);
	wait_port(port);
	return pid;
}

static void test_agent__watch_credentials_refused(void **state)
{
	wfix *f = *state;
	int port = free_port();
	cleanup_free char *count = sw_path_join(f->tmp, "count");
	f->daemon_pid = start_refuser(f, port, count);
	make_repo(f, "good");
	cleanup_free char *u1 = file_url(f, "good");
	add_repo(f, "good", u1, "main", NULL);
	cleanup_free char *url = sw_xasprintf("http://127.0.0.1:%d/team/app.git", port);
	sw_agent_repo *r = add_repo(f, "bad", url, "main", NULL);
	r->username = sw_xstrdup("ci");
	r->password = sw_xstrdup("s3cret-pw");
	/* the first poll of a new repository and the poll_now may be one poll or two: each
	 * phase asserts that errors were reported, not how many polls it took */
	unsigned bad0 = f->bad_errors;
	start(f);
	poll_all(f);
	assert_true(f->bad_errors > bad0);
	cleanup_free char *want =
	        sw_xasprintf("credentials refused for http://127.0.0.1:%d/team/app.git", port);
	if (!strstr(f->last_error, want))
		fail_msg("error: %s", f->last_error);
	assert_null(strstr(f->last_error, "s3cret-pw"));
	cleanup_free char *n = NULL;
	OK(sw_fs_read_file(&n, NULL, count, 64, &err));
	if (atoi(n) > 6)
		fail_msg("%s requests for one poll", n);
	/* the other repository went on */
	char g1[41];
	rev_of(g1, f, "good", "main");
	cleanup_free char *i1 = item("good", g1, "refs/heads/main");
	assert_items(f, i1);

	/* a password in the URL and a token: never in the message; the token's user oauth2 */
	sw_watcher_stop(f->w);
	f->w = NULL;
	free(r->url);
	r->url = sw_xasprintf("http://me:url-pw-123@127.0.0.1:%d/team/app.git", port);
	free(r->username);
	r->username = NULL;
	free(r->password);
	r->password = NULL;
	r->token = sw_xstrdup("glpat-token-xyz");
	bad0 = f->bad_errors;
	start(f);
	poll_all(f);
	assert_true(f->bad_errors > bad0);
	assert_non_null(strstr(f->last_error, "credentials refused for http://me@127.0.0.1"));
	assert_null(strstr(f->last_error, "url-pw-123"));
	assert_null(strstr(f->last_error, "glpat-token-xyz"));

	/* nothing configured */
	sw_watcher_stop(f->w);
	f->w = NULL;
	free(r->url);
	r->url = sw_xstrdup(url);
	free(r->token);
	r->token = NULL;
	bad0 = f->bad_errors;
	start(f);
	poll_all(f);
	assert_true(f->bad_errors > bad0);
	if (!strstr(f->last_error, want) || !strstr(f->last_error, "none configured"))
		fail_msg("error: %s", f->last_error);
}

int test_agent_watch_run(void)
{
	const struct CMUnitTest watch[] = {
		cmocka_unit_test_setup_teardown(test_agent__watch_branches_and_tags, setup_watch,
		                                teardown_watch),
		cmocka_unit_test_setup_teardown(test_agent__watch_every_commit, setup_watch,
		                                teardown_watch),
		cmocka_unit_test_setup_teardown(test_agent__watch_errors_and_reload, setup_watch,
		                                teardown_watch),
		cmocka_unit_test_setup_teardown(test_agent__watch_git_daemon, setup_watch,
		                                teardown_watch),
		cmocka_unit_test_setup_teardown(test_agent__watch_credentials_refused, setup_watch,
		                                teardown_watch),
	};
	return cmocka_run_group_tests_name("watch", watch, NULL, NULL);
}
