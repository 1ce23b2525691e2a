/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway agent -c agent.yml [--once]`: the long-running daemon. It loads the configuration,
 * takes the state folder's lock (STATE/agent/agent.pid: one agent per state folder), recovers
 * the journal after a crash, sweeps what dead slipway processes left, then runs the scheduler
 * with the git watcher, the GitLab poller and the metrics server as configured. Work items run
 * through sw_run_pipeline ("git") or sw_gitlab_run_job ("gitlab"). Signals only set flags and
 * write to a self-pipe; the main loop acts on them: SIGHUP reloads the configuration (a broken
 * one is refused, the old one stays), SIGTERM/SIGQUIT drain, SIGINT cancels at once (with the
 * grace period), a second SIGINT/SIGTERM cancels without grace, SIGUSR1 polls now.
 */
#include "agent/agent_internal.h"
#include "cache/cache.h"
#include "executor/executor.h"
#include "reporters/reporters.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

static const char agent_usage[] =
        "usage: slipway agent -c FILE [--once]\n"
        "\n"
        "Run the agent: watch the git repositories and poll the GitLab servers of the\n"
        "configuration file, and run the pipelines and jobs they bring, at most `concurrency`\n"
        "at once. State (journal, mirrors, run outputs) lives in STATE/agent/; see\n"
        "docs/agent.md for the file's keys.\n"
        "\n"
        "options:\n"
        "  -c, --config FILE  the configuration file (agent.yml)\n"
        "  --once             poll every repository once, run what was found, then exit\n"
        "  -h, --help         show this help\n"
        "\n"
        "signals: SIGHUP reloads the configuration, SIGTERM and SIGQUIT drain (running work\n"
        "finishes, nothing new starts), SIGINT cancels running work, a second SIGINT or\n"
        "SIGTERM cancels without grace, SIGUSR1 polls every repository now.\n"
        "\n"
        "exit status: 0 after a clean drain, 1 when the configuration cannot be loaded or\n"
        "the state folder is in use, 2 usage, 128+N when running work had to be cancelled\n"
        "after signal N.\n";

typedef struct agent {
	pthread_mutex_t lock;  /* cfg, old, polled */
	sw_agent_config *cfg;  /* in use */
	sw_agent_config **old; /* replaced by reloads; kept until exit (runs may point in) */
	size_t n_old;
	char *state_dir;
	bool once;
	char **polled; /* --once: repositories polled (or failed) once */
	sw_journal *j;
	sw_sched *s;
	sw_watcher *w;
	sw_gitlab *g;
	sw_metrics *m;
	pthread_mutex_t cache_lock;
	volatile sig_atomic_t cancel_signal; /* what cancelled runs report (128 + it) */
} agent;

static int sig_pipe[2] = { -1, -1 };
static volatile sig_atomic_t got_hup, got_term, got_int, got_usr1;

static void on_signal(int sig)
{
	int saved = errno;
	switch (sig) {
	case SIGHUP:
		got_hup = 1;
		break;
	case SIGTERM:
	case SIGQUIT:
		got_term = sig;
		break;
	case SIGINT:
		got_int = 1;
		break;
	case SIGUSR1:
		got_usr1 = 1;
		break;
	}
	if (sig_pipe[1] >= 0)
		(void)!write(sig_pipe[1], "s", 1);
	errno = saved;
}

static const char *sig_name(int sig)
{
	switch (sig) {
	case SIGTERM:
		return "SIGTERM";
	case SIGQUIT:
		return "SIGQUIT";
	case SIGINT:
		return "SIGINT";
	default:
		return "signal";
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static sw_agent_config *cfg_get(agent *a)
{
	pthread_mutex_lock(&a->lock);
	sw_agent_config *c = a->cfg;
	pthread_mutex_unlock(&a->lock);
	return c;
}

static void apply_log(const sw_agent_config *c)
{
	if (c->log_level >= 0)
		sw_log_set_level((sw_log_level)c->log_level);
	if (c->log_format == 1)
		sw_log_set_sink(sw_log_sink_json, NULL);
	else if (c->log_format == 0)
		sw_log_set_sink(NULL, NULL);
}

static const char *docker_host_of(const sw_agent_config *c)
{
	if (c->backend != SW_EXEC_BACKEND_DOCKER)
		return NULL;
	if (c->docker_host)
		return c->docker_host;
	const char *env = getenv("DOCKER_HOST");
	return env && *env ? env : "unix:///var/run/docker.sock";
}

/* Remove what dead slipway processes left: containers, mounts, namespaces, secret folders
 * (runs started by the agent do not sweep: this does, at start and every sweep_interval). */
static void sweep(agent *a)
{
	sw_agent_config *c = cfg_get(a);
	sw_run_sweep(a->state_dir, c->runtime, docker_host_of(c));
}

/* The build cache cap, after a run (a handle of our own: other runs keep theirs). */
static void enforce_cache_cap(agent *a, uint64_t cap)
{
	if (!cap)
		return;
	pthread_mutex_lock(&a->cache_lock);
	sw_error *err = NULL;
	sw_oci_store *store = NULL;
	sw_cache *cache = NULL;
	cleanup_free char *store_dir = sw_path_join(a->state_dir, "store");
	if (sw_oci_store_open(&store, store_dir, true, &err) < 0 ||
	    sw_cache_open(&cache, a->state_dir, store, &err) < 0 ||
	    sw_cache_enforce_cap(cache, cap, &err) < 0) {
		SW_LOG(SW_LOG_WARN, "cache cap: %s", sw_error_msg(err));
		sw_error_free(err);
	}
	sw_cache_free(cache);
	sw_oci_store_free(store);
	pthread_mutex_unlock(&a->cache_lock);
}

/* ---------------------------------------------------------------- running work */

static sw_work_state run_git(agent *a, sw_work *w, volatile sig_atomic_t *cancel)
{
	sw_agent_config *c = cfg_get(a);
	const sw_agent_repo *repo = NULL;
	for (size_t i = 0; i < c->n_repos; i++)
		if (strcmp(c->repos[i].name, w->source) == 0)
			repo = &c->repos[i];
	if (!repo) {
		free(w->message);
		w->message = sw_xstrdup("the repository is no longer in the configuration");
		SW_LOG(SW_LOG_WARN, "%s: not run: %s", w->id, w->message);
		return SW_WORK_CANCELLED;
	}
	cleanup_free char *mirror = sw_watcher_mirror_path(a->state_dir, repo->name);
	cleanup_free char *id = sw_xstrdup(w->id);
	for (char *p = id; *p; p++)
		if (*p == ':' || *p == '/')
			*p = '_';
	cleanup_free char *rel = sw_xasprintf("agent/runs/%s/%d", id, w->attempts);
	free(w->output_dir);
	w->output_dir = sw_path_join(a->state_dir, rel);
	sw_error *err = NULL;
	if (sw_fs_rm_rf(w->output_dir, &err) < 0) /* a crashed attempt's leftovers */
		sw_error_clear(&err);

	sw_run_opts o;
	memset(&o, 0, sizeof(o));
	o.repo = mirror;
	o.rev = w->sha;
	/* the ref the watcher saw: a commit can be on several branches and tags at once */
	if (w->ref && strncmp(w->ref, "refs/heads/", 11) == 0)
		o.branch_hint = w->ref + 11;
	else if (w->ref && strncmp(w->ref, "refs/tags/", 10) == 0)
		o.tag_hint = w->ref + 10;
	o.file = repo->pipeline_file;
	o.output_dir = w->output_dir;
	o.backend = c->backend;
	o.runtime = c->runtime;
	o.docker_host = c->docker_host;
	o.secret_args = c->secrets;
	o.vars = repo->vars;
	o.registry = sw_agent_config_registry(c);
	o.memory_limit = c->memory_limit;
	o.pids_limit = c->pids_limit;
	o.cpu_millis = c->cpu_millis;
	o.progress = SW_CONSOLE_PLAIN;
	o.kill_grace_ms = c->kill_grace_ms;
	o.no_sweep = true;
	/* the run's console goes to OUT/console.log, not into the agent's log */
	cleanup_free char *console_path = sw_path_join(w->output_dir, "console.log");
	FILE *console = NULL;
	if (sw_fs_mkdir_p(w->output_dir, 0755, &err) < 0)
		sw_error_clear(&err);
	else
		console = fopen(console_path, "we");
	o.console_out = console ? console : stderr;
	o.cancel = cancel;
	o.cancel_signal = &a->cancel_signal;

	SW_LOG(SW_LOG_INFO, "%s: running the pipeline of %s (%s), attempt %d", w->id, w->sha,
	       w->ref ? w->ref : "-", w->attempts);
	int64_t t0 = mono_ms();
	int rc = sw_run_pipeline(&o);
	if (console)
		fclose(console);
	double secs = (double)(mono_ms() - t0) / 1000.0;
	w->exit_code = rc;
	sw_work_state st;
	const char *what;
	if (rc == SW_RUN_EXIT_OK) {
		st = SW_WORK_PASSED;
		what = NULL;
	} else if (rc == SW_RUN_EXIT_FAILED) {
		st = SW_WORK_FAILED;
		what = "a job failed";
	} else if (rc == SW_RUN_EXIT_PIPELINE) {
		st = SW_WORK_FAILED;
		what = "the pipeline file is wrong";
	} else if (rc >= 128) {
		st = SW_WORK_CANCELLED;
		what = "cancelled";
	} else {
		st = SW_WORK_ERROR;
		what = "infrastructure error";
	}
	free(w->message);
	w->message = what ? sw_xasprintf("%s (exit code %d)", what, rc) : NULL;
	SW_LOG(st == SW_WORK_PASSED ? SW_LOG_INFO : SW_LOG_WARN, "%s: %s in %.1fs%s%s, output %s",
	       w->id, sw_work_state_name(st), secs, what ? ": " : "", what ? w->message : "",
	       w->output_dir);
	sw_metrics_run_done(a->m, w->source, sw_work_state_name(st), secs, w->output_dir);
	enforce_cache_cap(a, c->cache_max_bytes);
	return st;
}

static sw_work_state run_work(sw_work *w, volatile sig_atomic_t *cancel, void *payload)
{
	agent *a = payload;
	if (strcmp(w->kind, "git") == 0)
		return run_git(a, w, cancel);
	if (strcmp(w->kind, "gitlab") == 0 && a->g) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		sw_work_state st = sw_gitlab_run_job(a->g, w, cancel);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double secs =
		        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		sw_metrics_run_done(a->m, w->source, sw_work_state_name(st), secs, w->output_dir);
		return st;
	}
	free(w->message);
	w->message = sw_xasprintf("no runner for work of kind '%s'", w->kind);
	SW_LOG(SW_LOG_ERROR, "%s: %s", w->id, w->message);
	return SW_WORK_ERROR;
}

/* ---------------------------------------------------------------- watcher hooks */

static void mark_polled(agent *a, const char *repo)
{
	pthread_mutex_lock(&a->lock);
	bool seen = false;
	for (char **p = a->polled; p && *p; p++)
		seen = seen || strcmp(*p, repo) == 0;
	if (!seen)
		sw_strv_push(&a->polled, repo);
	pthread_mutex_unlock(&a->lock);
	if (sig_pipe[1] >= 0)
		(void)!write(sig_pipe[1], "p", 1);
}

static void hook_poll_error(const char *repo, const char *message, void *payload)
{
	agent *a = payload;
	(void)message;
	sw_metrics_poll(a->m, repo, false);
	mark_polled(a, repo);
}

static void hook_polled(const char *repo, unsigned new_work, void *payload)
{
	agent *a = payload;
	sw_metrics_poll(a->m, repo, true);
	if (new_work)
		sw_sched_kick(a->s);
	mark_polled(a, repo);
}

static bool all_polled(agent *a)
{
	pthread_mutex_lock(&a->lock);
	bool all = true;
	for (size_t i = 0; all && i < a->cfg->n_repos; i++) {
		bool seen = false;
		for (char **p = a->polled; !seen && p && *p; p++)
			seen = strcmp(*p, a->cfg->repos[i].name) == 0;
		all = seen;
	}
	pthread_mutex_unlock(&a->lock);
	return all;
}

static int start_watcher(agent *a, const sw_agent_config *c, sw_error **err)
{
	sw_watch_hooks hooks = { hook_poll_error, hook_polled, a };
	return sw_watcher_start(&a->w, c, a->j, a->s, &hooks, err);
}

static void set_limits(agent *a, const sw_agent_config *c)
{
	sw_sched_set_concurrency(a->s, c->concurrency);
	for (size_t i = 0; i < c->n_gitlab; i++)
		sw_sched_set_source_limit(a->s, c->gitlab[i].name, c->gitlab[i].limit);
}

/* ---------------------------------------------------------------- reload (SIGHUP) */

static void reload(agent *a, bool draining)
{
	sw_agent_config *cur = cfg_get(a);
	sw_agent_config *nc = NULL;
	sw_error *err = NULL;
	SW_LOG(SW_LOG_INFO, "SIGHUP: reloading %s", cur->file);
	if (sw_agent_config_load(&nc, cur->file, &err) < 0) {
		SW_LOG(SW_LOG_ERROR, "reload refused, the configuration in use stays: %s",
		       sw_error_msg(err));
		sw_error_free(err);
		return;
	}
	if (strcmp(nc->state_dir, cur->state_dir) != 0) {
		SW_LOG(SW_LOG_WARN, "reload: 'state_dir' changes need a restart; still using %s",
		       cur->state_dir);
		free(nc->state_dir);
		nc->state_dir = sw_xstrdup(cur->state_dir);
	}
	if (strcmp(nc->metrics_addr, cur->metrics_addr) != 0)
		SW_LOG(SW_LOG_WARN, "reload: 'metrics' changes need a restart; still serving on %s",
		       *cur->metrics_addr ? cur->metrics_addr : "(off)");
	if (nc->max_attempts != cur->max_attempts)
		SW_LOG(SW_LOG_WARN, "reload: 'max_attempts' is read at start; it applies after a "
		                    "restart");
	pthread_mutex_lock(&a->lock);
	a->old = sw_xrealloc(a->old, (a->n_old + 1) * sizeof(*a->old));
	a->old[a->n_old++] = a->cfg;
	a->cfg = nc;
	pthread_mutex_unlock(&a->lock);
	apply_log(nc);
	set_limits(a, nc);
	if (a->w) {
		if (sw_watcher_reload(a->w, nc, &err) < 0) {
			SW_LOG(SW_LOG_ERROR, "reload: repositories: %s", sw_error_msg(err));
			sw_error_clear(&err);
		}
	} else if (nc->n_repos > 0 && !draining && !a->once) {
		if (start_watcher(a, nc, &err) < 0) {
			SW_LOG(SW_LOG_ERROR, "reload: repositories: %s", sw_error_msg(err));
			sw_error_clear(&err);
		}
	}
	if (a->g) {
		if (sw_gitlab_reload(a->g, nc, &err) < 0) {
			SW_LOG(SW_LOG_ERROR, "reload: GitLab: %s", sw_error_msg(err));
			sw_error_clear(&err);
		}
	} else if (nc->n_gitlab > 0 && !draining && !a->once) {
		if (sw_gitlab_start(&a->g, nc, a->j, a->s, &err) < 0) {
			SW_LOG(SW_LOG_ERROR, "reload: GitLab: %s", sw_error_msg(err));
			sw_error_clear(&err);
		}
	}
	SW_LOG(SW_LOG_INFO, "reloaded %s: %zu repositor%s, %zu GitLab server%s, concurrency %d",
	       nc->file, nc->n_repos, nc->n_repos == 1 ? "y" : "ies", nc->n_gitlab,
	       nc->n_gitlab == 1 ? "" : "s", nc->concurrency);
}

/* ---------------------------------------------------------------- start */

/* flock STATE/agent/agent.pid (kept open until exit) and write our pid in it. */
static int lock_state(int *out_fd, const char *state_dir, sw_error **err)
{
	cleanup_free char *dir = sw_path_join(state_dir, "agent");
	if (sw_fs_mkdir_p(dir, 0700, err) < 0)
		return SW_ERR_GENERIC;
	cleanup_free char *path = sw_path_join(dir, "agent.pid");
	cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return sw_error_os(err, errno, "open %s", path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return sw_error_os(err, errno, "lock %s", path);
		char buf[32] = { 0 };
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
		char who[48] = "";
		if (pid > 0)
			snprintf(who, sizeof(who), " (pid %ld)", pid);
		return sw_error_set(err, SW_ERR_CONFLICT,
		                    "another slipway agent%s is running on the state folder %s "
		                    "(%s is locked)",
		                    who, state_dir, path);
	}
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
		return sw_error_os(err, errno, "write %s", path);
	*out_fd = steal_fd(&fd);
	return 0;
}

static void install_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	int sigs[] = { SIGHUP, SIGTERM, SIGQUIT, SIGINT, SIGUSR1 };
	for (size_t i = 0; i < SW_ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int usage_error(const char *fmt, ...) SW_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "slipway: error: agent: %s\nRun 'slipway agent --help' for usage.\n", m);
	return 2;
}

static int fail(const char *what, sw_error *err)
{
	fprintf(stderr, "slipway: error: agent: %s%s%s\n", what ? what : "", what ? ": " : "",
	        sw_error_msg(err));
	sw_error_free(err);
	return 1;
}

int sw_cmd_agent(int argc, char **argv)
{
	enum { O_ONCE = 256 };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "once", no_argument, NULL, O_ONCE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL;
	bool once = false;
	int ch;
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+:c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case O_ONCE:
			once = true;
			break;
		case 'h':
			fputs(agent_usage, stdout);
			return 0;
		default:
			if (ch == ':')
				return usage_error("option '%s' needs a value", argv[optind - 1]);
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!config_path)
		return usage_error("the configuration file is missing (-c FILE)");

	agent a;
	memset(&a, 0, sizeof(a));
	pthread_mutex_init(&a.lock, NULL);
	pthread_mutex_init(&a.cache_lock, NULL);
	a.once = once;
	sw_error *err = NULL;
	int exit_code = 1;
	cleanup_close int pid_fd = -1;
	sw_work *lost = NULL;
	size_t n_lost = 0;

	if (sw_agent_config_load(&a.cfg, config_path, &err) < 0)
		return fail(NULL, err);
	apply_log(a.cfg);
	a.state_dir = sw_xstrdup(a.cfg->state_dir);
	sw_cli.state_dir = a.state_dir; /* sw_run_pipeline's state folder */
	setenv("SLIPWAY_STATE_DIR", a.state_dir, 1);
	if (sw_fs_mkdir_p(a.state_dir, 0755, &err) < 0) {
		exit_code = fail("state folder", err);
		goto out;
	}
	if (lock_state(&pid_fd, a.state_dir, &err) < 0) {
		exit_code = fail(NULL, err);
		goto out;
	}
	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		sw_error_os(&err, errno, "pipe");
		exit_code = fail(NULL, err);
		goto out;
	}
	install_signals();

	/* the journal, and what a crash left in it */
	if (sw_journal_open(&a.j, a.state_dir, &err) < 0) {
		exit_code = fail(NULL, err);
		goto out;
	}
	{
		sw_work *all = NULL;
		size_t n = 0;
		if (sw_journal_list(&all, &n, a.j, -1, &err) < 0) {
			exit_code = fail("journal", err);
			goto out;
		}
		lost = sw_xcalloc(n ? n : 1, sizeof(*lost));
		for (size_t i = 0; i < n; i++) {
			if (strcmp(all[i].kind, "gitlab") == 0 &&
			    (all[i].state == SW_WORK_RUNNING || all[i].state == SW_WORK_QUEUED)) {
				lost[n_lost++] = all[i];
				memset(&all[i], 0, sizeof(all[i]));
			}
		}
		sw_work_list_free(all, n);
	}
	unsigned requeued = 0, failed = 0;
	if (sw_journal_recover(&requeued, &failed, a.j, a.cfg->max_attempts, &err) < 0) {
		exit_code = fail("journal", err);
		goto out;
	}
	if (requeued || failed)
		SW_LOG(SW_LOG_WARN,
		       "recovery: %u interrupted item%s queued again, %u reported failed", requeued,
		       requeued == 1 ? "" : "s", failed);
	sweep(&a);

	if (sw_sched_new(&a.s, a.j, a.cfg->concurrency, run_work, &a, &err) < 0) {
		exit_code = fail(NULL, err);
		goto out;
	}
	set_limits(&a, a.cfg);
	if (!once && *a.cfg->metrics_addr &&
	    sw_metrics_start(&a.m, a.cfg->metrics_addr, a.s, &err) < 0) {
		exit_code = fail("metrics", err);
		goto stop;
	}
	if (a.cfg->n_gitlab > 0 && !once) {
		if (sw_gitlab_start(&a.g, a.cfg, a.j, a.s, &err) < 0) {
			exit_code = fail("GitLab", err);
			goto stop;
		}
	}
	if (a.g && n_lost)
		sw_gitlab_recover(a.g, lost, n_lost);
	if (once && a.cfg->n_gitlab > 0)
		SW_LOG(SW_LOG_WARN, "--once polls git repositories only; GitLab servers are not "
		                    "polled");
	if (a.cfg->n_repos > 0 && start_watcher(&a, a.cfg, &err) < 0) {
		exit_code = fail("repositories", err);
		goto stop;
	}
	SW_LOG(SW_LOG_INFO,
	       "agent started (pid %ld): state %s, %zu repositor%s, %zu GitLab server%s, "
	       "concurrency %d%s%s",
	       (long)getpid(), a.state_dir, a.cfg->n_repos, a.cfg->n_repos == 1 ? "y" : "ies",
	       a.cfg->n_gitlab, a.cfg->n_gitlab == 1 ? "" : "s", a.cfg->concurrency,
	       a.m ? ", metrics on " : "", a.m ? a.cfg->metrics_addr : "");

	/* the main loop */
	bool draining = false, cancelled = false, once_done = false;
	int first_signal = 0;
	int64_t drain_deadline = 0;
	int64_t next_sweep = mono_ms() + a.cfg->sweep_interval_ms;
	for (;;) {
		struct pollfd pfd = { sig_pipe[0], POLLIN, 0 };
		(void)poll(&pfd, 1, 500);
		char drainbuf[64];
		while (read(sig_pipe[0], drainbuf, sizeof(drainbuf)) > 0)
			;
		if (got_usr1) {
			got_usr1 = 0;
			if (a.w && !draining) {
				SW_LOG(SW_LOG_INFO, "SIGUSR1: polling every repository now");
				sw_watcher_poll_now(a.w);
			}
		}
		if (got_hup) {
			got_hup = 0;
			reload(&a, draining);
		}
		int stop_sig = 0;
		bool hard = false;
		if (got_term) {
			stop_sig = got_term;
			got_term = 0;
		}
		if (got_int) {
			got_int = 0;
			stop_sig = SIGINT;
			hard = true;
		}
		if (stop_sig) {
			sw_agent_config *c = cfg_get(&a);
			if (!draining) {
				first_signal = stop_sig;
				a.cancel_signal = stop_sig;
				draining = true;
				sw_sched_drain(a.s);
				drain_deadline = mono_ms() + c->shutdown_timeout_ms;
				if (hard) {
					SW_LOG(SW_LOG_INFO, "SIGINT: cancelling running work");
					sw_sched_cancel_all(a.s, 1);
					cancelled = true;
				} else {
					SW_LOG(SW_LOG_INFO,
					       "%s: draining: running work finishes (at most %llds), "
					       "nothing new starts",
					       sig_name(stop_sig),
					       (long long)(c->shutdown_timeout_ms / 1000));
				}
				if (a.w) {
					sw_watcher_stop(a.w);
					a.w = NULL;
				}
			} else {
				SW_LOG(SW_LOG_WARN, "%s again: killing running work without grace",
				       sig_name(stop_sig));
				sw_sched_cancel_all(a.s, 2);
				cancelled = true;
			}
		}
		int64_t now = mono_ms();
		if (draining && !cancelled && now >= drain_deadline) {
			unsigned running = 0;
			sw_sched_counts(a.s, &running, NULL);
			if (running) {
				SW_LOG(SW_LOG_WARN,
				       "the shutdown timeout passed: cancelling %u running "
				       "item%s",
				       running, running == 1 ? "" : "s");
				sw_sched_cancel_all(a.s, 1);
				cancelled = true;
			}
		}
		if (once && !draining && !once_done && all_polled(&a)) {
			once_done = true;
			SW_LOG(SW_LOG_INFO,
			       "--once: every repository polled; running what was found");
			if (a.w) {
				sw_watcher_stop(a.w);
				a.w = NULL;
			}
		}
		if (once_done && !draining) {
			unsigned running = 0, queued = 0;
			sw_sched_counts(a.s, NULL, &queued); /* queued first: see sched.c */
			sw_sched_counts(a.s, &running, NULL);
			if (!queued && !running) {
				draining = true;
				sw_sched_drain(a.s);
			}
		}
		if (draining && sw_sched_wait_idle(a.s, 0))
			break;
		if (!draining && now >= next_sweep) {
			sweep(&a);
			next_sweep = now + cfg_get(&a)->sweep_interval_ms;
		}
	}
	exit_code = cancelled ? 128 + (first_signal ? first_signal : SIGTERM) : 0;
	SW_LOG(SW_LOG_INFO, "agent stopped%s", cancelled ? " (running work was cancelled)" : "");

stop:
	if (a.w)
		sw_watcher_stop(a.w);
	if (a.s) {
		sw_sched_drain(a.s);
		if (exit_code != 0 && !sw_sched_wait_idle(a.s, 0))
			sw_sched_cancel_all(a.s, 1);
		(void)sw_sched_wait_idle(a.s, -1);
	}
	if (a.g)
		sw_gitlab_stop(a.g);
	if (a.m)
		sw_metrics_stop(a.m);
	sw_sched_free(a.s);
out:
	sw_work_list_free(lost, n_lost);
	sw_journal_free(a.j);
	if (sig_pipe[0] >= 0) {
		signal(SIGHUP, SIG_DFL);
		signal(SIGUSR1, SIG_DFL);
		close(sig_pipe[0]);
		close(sig_pipe[1]);
		sig_pipe[0] = sig_pipe[1] = -1;
	}
	for (size_t i = 0; i < a.n_old; i++)
		sw_agent_config_free(a.old[i]);
	free(a.old);
	sw_agent_config_free(a.cfg);
	sw_strv_free(a.polled);
	free(a.state_dir);
	sw_cli.state_dir = NULL;
	pthread_mutex_destroy(&a.lock);
	pthread_mutex_destroy(&a.cache_lock);
	return exit_code;
}
