/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agent internals shared between the files of agent/ (sw_agent__ prefix is not used here: the
 * names carry their area, sw_git_, sw_ws_, sw_run_). Not for other modules. Each section
 * belongs to the files named in its title.
 */
#ifndef SW_AGENT_INTERNAL_H
#define SW_AGENT_INTERNAL_H

#include "agent/agent.h"
#include "common/common.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>

/* ---------------------------------------------------------------- git checkout (git.c) */

/* What a checkout knows of its commit (the SLIPWAY_ and CI_ variables come from it). */
typedef struct sw_git_commit {
	char sha[41];
	char short_sha[9]; /* the first 8 hex digits, as GitLab's CI_COMMIT_SHORT_SHA */
	char *branch;      /* the branch the revision named or HEAD is on; NULL when none */
	char *tag;         /* the tag the revision named (or pointing at the commit); NULL */
	char *ref_name;    /* branch, else tag, else the short sha */
	char *message;     /* full message */
	char *title;       /* first line */
	char *author;      /* "Name <email>" */
	int64_t time;      /* commit time, unix seconds */
	char **changed;    /* paths changed vs the first parent (all files for a root commit),
	                    * NULL-terminated */
} sw_git_commit;

void sw_git_commit_clear(sw_git_commit *c);

/*
 * Check out `rev` (a branch, tag, full or abbreviated sha, or NULL for HEAD) of the repository
 * `repo` (a local path, with or without a work tree, or a URL: file://, git://, http(s)://) into
 * `dest` (created; must not exist or be empty) with libgit2: files only, no .git folder
 * (a clone is fetched into a temporary bare repository under `tmp_dir`, removed afterwards).
 * Errors name the repository and the revision (a URL's password is never in a message).
 */
int sw_git_checkout(sw_git_commit *out, const char *repo, const char *rev, const char *dest,
                    const char *tmp_dir, sw_error **err) SW_WUR;

/* "scheme://user:pass@host/p" -> "scheme://user@host/p", the password in *password_out (or
 * NULL; caller frees both); other forms unchanged. */
char *sw_git_url_safe(const char *url, char **password_out);
/* A message fit for logs: sw_redact, and every occurrence of `secret` (3 characters or more)
 * replaced with "***". Caller frees. */
char *sw_git_scrub(const char *s, const char *secret);

/* ---------------------------------------------------------------- workspaces (workspace.c) */

/*
 * Expand globs (sw_pl_glob_match rules, relative to `root`) to the existing paths they match,
 * relative, sorted, without duplicates; a pattern with no glob characters names one path. A
 * pattern that is absolute or has ".." components is an error naming it. Symlinks are not
 * followed while walking (a symlink itself can match). NULL-terminated; caller frees.
 */
int sw_ws_glob(char ***out, const char *root, const char *const *patterns, size_t n,
               sw_error **err) SW_WUR;

/*
 * Copy `paths` (relative to `root`, as sw_ws_glob gives them; folders recursively) to the same
 * relative places under `dest`, keeping modes and mtimes; symlinks are copied as symlinks and
 * never followed, so nothing outside `root` is read. *bytes (may be NULL) gets the total.
 */
int sw_ws_copy_out(uint64_t *bytes, const char *root, char *const *paths, const char *dest,
                   sw_error **err) SW_WUR;

/* Remove a folder tree without crossing mount points or following symlinks (it refuses a tree
 * with a mount in it). */
int sw_ws_remove_tree(const char *path, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- running pipelines (run*.c) */

/* The exit codes of `slipway run`. */
enum {
	SW_RUN_EXIT_OK = 0,
	SW_RUN_EXIT_FAILED = 1,   /* a job failed (that was not allow_failure) */
	SW_RUN_EXIT_PIPELINE = 2, /* the pipeline file or the command line is wrong */
	SW_RUN_EXIT_INFRA = 3,    /* registry down, runtime missing, checkout impossible */
};

/* What `slipway run` was asked (agent/cmd_run.c fills it; agent/run.c runs it). */
typedef struct sw_run_opts {
	const char *repo; /* path or URL; default "." */
	const char *rev;  /* NULL: HEAD */
	/* The branch or tag the commit was found on (the agent's git watcher: rev is a sha of its
	 * mirror, whose branch may have moved since); when given it wins over what the checkout
	 * finds: a branch hint makes a branch pipeline (no tag), a tag hint a tag pipeline. */
	const char *branch_hint;
	const char *tag_hint;
	const char *file; /* pipeline file relative to the checkout; default .slipway.yml */
	bool no_promote;
	const char *events_path; /* --events, or NULL */
	const char *junit_path;  /* --junit, or NULL */
	const char *output_dir;  /* --output, or NULL: STATE/runs/<id> */
	int backend;             /* an sw_exec_backend_kind */
	const char *runtime;     /* NULL: runc */
	const char *docker_host; /* NULL: $DOCKER_HOST or the default socket */
	char **secret_args;      /* --secret NAME[=VALUE], in order, NULL-terminated or NULL */
	char **secret_files;     /* --secret-file NAME=PATH, in order, NULL-terminated or NULL */
	char **vars;             /* --var NAME=VALUE, in order, NULL-terminated or NULL */
	const sw_oci_registry_opts *registry; /* NULL: sw_cli_registry_opts() (environment) */
	FILE *console_out;     /* where the console and the run's own lines go; NULL: stderr, and
	                        * the output folder is printed on stdout at the end */
	int64_t kill_grace_ms; /* cancel: SIGTERM, then SIGKILL after this; 0: 10000 */
	bool no_sweep;         /* the caller sweeps (sw_run_sweep) on its own schedule */
	uint64_t memory_limit; /* per container; 0: none */
	uint64_t pids_limit;
	uint32_t cpu_millis;
	int progress; /* an sw_console_mode */
	int max_jobs; /* jobs at once; <= 0: 4 */
	/* Set by the signal handlers: 1 at the first SIGINT/SIGTERM (cancel with grace), 2 at the
	 * second (no grace); cancel_signal is the first signal's number. */
	volatile sig_atomic_t *cancel;
	volatile sig_atomic_t *cancel_signal;
	/* GitLab jobs (issue 5, agent/gitlab*.c); all zero for `slipway run`: */
	const struct sw_pipeline *pipeline; /* run this (borrowed) instead of loading `file` */
	const char *checkout_dir;    /* files already checked out (borrowed, kept): no checkout */
	const sw_git_commit *commit; /* with checkout_dir: its commit (copied) */
	bool no_build;               /* never build the commit's image */
	char *const *mask_values;    /* with `pipeline`: the values to mask (not the secrets') */
	/* every masked byte of a job's output (its log), called from the job's thread */
	void (*on_output)(const char *data, size_t len, void *payload);
	/* after a job's commands and after_run, before its workspace is removed: ws is the
	 * workspace (host path), state an sw_job_state (PASSED, FAILED or TIMED_OUT) */
	void (*on_job_end)(const char *job, const char *ws, int state, int exit_code,
	                   void *payload);
	void *hook_payload;
} sw_run_opts;

/* Run a pipeline as described in docs/cli.md and return the process exit code (SW_RUN_EXIT_*,
 * 128 + signal when cancelled). Prints on stderr (console, errors) and stdout (the output
 * folder at the end). */
int sw_run_pipeline(const sw_run_opts *o);
/* Remove what dead slipway processes left: runtime containers, mounts and boxes (sw_exec_sweep),
 * network namespaces and slirp4netns (and docker containers when docker_host is given), file
 * secret folders in /dev/shm. Problems are logged. */
void sw_run_sweep(const char *state_dir, const char *runtime, const char *docker_host);

/* One job of a run, as the scheduler (run.c) and the job runner (run_job.c) share it. */
struct sw_run;
typedef struct sw_run_job {
	size_t index;         /* in sw_pipeline.jobs */
	size_t console_id;    /* handle in the console */
	int state;            /* an sw_job_state */
	bool upstream_failed; /* skipped because a job it depends on failed */
	bool started, done;
	int attempts;
	int exit_code; /* of the last attempt; -1 when it never ran */
	int64_t duration_ms;
	char *message;  /* why it failed or was skipped (masked), or NULL */
	char *log_tail; /* the last lines of its output (masked), or NULL */
} sw_run_job;

/* A pipeline run in progress (run.c owns it; run_job.c reads it from the job threads). */
typedef struct sw_run {
	const sw_run_opts *o;
	char *state_dir; /* resolved STATE */
	struct sw_oci_store *store;
	struct sw_cache *cache;
	struct sw_exec_backend_opts *backend;
	struct sw_pipeline *pl;
	sw_git_commit commit;
	const char *const *changed; /* commit.changed, for `when` */
	char *checkout;             /* the checked-out files (overlay lower of every job) */
	char *project;              /* SLIPWAY_PROJECT */
	char *workspace;            /* CI_PROJECT_DIR: /builds/<project> */
	unsigned long pipeline_id;
	char *image;      /* the commit image's manifest digest, or NULL */
	char *out_dir;    /* the output folder */
	char *secret_dir; /* private tmpfs folder for file secrets, made on use */
	char **mask;      /* every secret value known (to mask), NULL-terminated */
	char **vars;      /* "K=V": the variables every job sees */
	struct sw_console *console;
	struct sw_events *events;     /* --events (may be NULL) */
	struct sw_events *events_out; /* OUT/events.jsonl */
	struct sw_junit *junit;
	sw_run_job *jobs;
	pthread_mutex_t lock; /* image pulls, secret_dir */
	/* what the jobs watch: a copy of *o->cancel, or 1 once the pipeline's timeout passed */
	volatile sig_atomic_t cancel;
	bool timed_out; /* the pipeline's timeout passed */
} sw_run;

/* Run one job (every attempt) to its end and fill j's state, attempts, exit_code, duration,
 * message and log_tail (run_job.c). Called from a job thread. */
void sw_run_job_execute(sw_run *r, sw_run_job *j);

/* Helpers of run.c for run_job.c. Events go to --events and OUT/events.jsonl (fields stolen). */
void sw_run_emit(sw_run *r, const char *type, json_t *fields);
/* "K=V" lists: set (replacing) and get (NULL when unset). */
void sw_run_env_set(char ***env, const char *key, const char *value);
const char *sw_run_env_get(char *const *env, const char *key);
/* An sw_pl_lookup_fn over a "K=V" list (payload: char *const *). */
const char *sw_run_env_lookup(const char *name, void *payload);
/* The value of secret `name` (see docs/cli.md), or NULL when nobody gave it. Caller frees. */
char *sw_run_secret_value(const sw_run *r, const char *name);
/* The private folder (tmpfs, mode 0700) for this run's file secrets, made on first use; NULL
 * with *err on failure. Caller frees the string. */
char *sw_run_secret_dir(sw_run *r, sw_error **err);
/* The manifest digest and config of a job's or service's image: a store name, pulled from its
 * registry when it is not in the store. *out_digest is the caller's. */
int sw_run_image_get(char **out_digest, struct sw_oci_config *cfg, sw_run *r, const char *name,
                     sw_error **err) SW_WUR;

/* ================================================================ the agent (issue 5) */

/* ---------------------------------------------------------------- agent config (config.c) */

/* One git repository the agent watches (`repos:` in agent.yml). */
typedef struct sw_agent_repo {
	char *name;        /* unique; default: the URL's basename without .git */
	char *url;         /* file://, git://, http(s)://, ssh:// (or scp-like), or a local path */
	char **branches;   /* glob patterns (sw_pl_glob_match), NULL-terminated; default: "*" */
	char **tags;       /* glob patterns for tags; NULL: tags start nothing */
	int64_t poll_ms;   /* default 60000; jittered +-10% */
	bool every_commit; /* false (default): only the newest commit of a push */
	char *pipeline_file; /* default ".slipway.yml" */
	char *username;      /* http(s): user (with password), or NULL */
	char *password;      /* the value, resolved from password_env/password_file at load */
	char *token;         /* http(s): a token (sent as the password of user "oauth2"), or NULL */
	char *ssh_key;       /* ssh: private key file; NULL: ~/.ssh/id_* through an agent */
	char **vars;         /* "K=V" given to every pipeline of this repository (--var) */
	int line, column;    /* where it is in the file */
} sw_agent_repo;

/* One GitLab server the agent polls as a runner (`gitlab:` in agent.yml). */
typedef struct sw_agent_gitlab {
	char *name;  /* unique; default: the URL's host */
	char *url;   /* https://gitlab.example.com (http only for 127.0.0.0/8) */
	char *token; /* the runner authentication token, "glrt-..." (from token_env/token_file) */
	int limit;   /* jobs of this server at once; default: the agent's concurrency */
	int64_t poll_ms; /* wait between two empty job requests; default 3000 */
	char *ca_file;   /* extra CA bundle, or NULL */
	int line, column;
} sw_agent_gitlab;

typedef struct sw_agent_config {
	char *file;        /* the path it was read from */
	int concurrency;   /* pipelines/jobs at once over all sources; default 2 */
	char *state_dir;   /* default: the default state folder */
	int backend;       /* sw_exec_backend_kind; default oci */
	char *runtime;     /* default "runc" */
	char *docker_host; /* docker backend; NULL: $DOCKER_HOST or the default socket */
	sw_oci_credentials *credentials; /* registries: host, username, password (resolved) */
	size_t n_credentials;
	char *docker_config;        /* a Docker config.json for more credentials, or NULL */
	char **insecure_registries; /* hosts allowed over plain http (beyond 127.0.0.0/8) */
	char **secrets;        /* "NAME=VALUE", resolved from env:/file: at load; never logged */
	uint64_t memory_limit; /* per container; 0: none */
	uint64_t pids_limit;
	uint32_t cpu_millis;
	uint64_t cache_max_bytes;    /* build cache cap; 0: none */
	int log_format;              /* 0 text, 1 json; -1: not in the file (keep the CLI's) */
	int log_level;               /* an sw_log_level; -1: not in the file (keep the CLI's) */
	char *metrics_addr;          /* "127.0.0.1:9252" (default); "" turns it off */
	int64_t shutdown_timeout_ms; /* drain: how long running work may go on; default 600000 */
	int64_t kill_grace_ms;       /* cancel: SIGTERM then SIGKILL after; default 10000 */
	int64_t sweep_interval_ms;   /* default 300000 */
	int max_attempts;            /* work interrupted by a crash is run again up to this many
	                              * times in all, then reported failed; default 2 */
	sw_agent_repo *repos;
	size_t n_repos;
	sw_agent_gitlab *gitlab;
	size_t n_gitlab;
} sw_agent_config;

/*
 * Read and validate agent.yml (libyaml). Every problem is "FILE:LINE:COLUMN: message" (unknown
 * keys with a hint, wrong types, bad durations and sizes, duplicate names, a secret whose
 * variable or file is missing, no repository and no GitLab server). Values given as
 * `{env: NAME}` or `{file: PATH}` are resolved here. docs/agent.md is the reference.
 */
int sw_agent_config_load(sw_agent_config **out, const char *path, sw_error **err) SW_WUR;
void sw_agent_config_free(sw_agent_config *c);
/* The registry options the config describes (credentials first, then docker_config); valid as
 * long as the config lives. */
const sw_oci_registry_opts *sw_agent_config_registry(const sw_agent_config *c);

/* ---------------------------------------------------------------- the work journal (journal.c) */

typedef enum {
	SW_WORK_QUEUED = 0,
	SW_WORK_RUNNING,
	SW_WORK_PASSED,
	SW_WORK_FAILED, /* a job failed (exit 1), or the pipeline file was wrong (2) */
	SW_WORK_ERROR,  /* infrastructure (3), or interrupted too many times */
	SW_WORK_CANCELLED,
} sw_work_state;

const char *sw_work_state_name(sw_work_state s); /* "queued", "running", ... */

/* One unit of work: a pipeline of one commit of a watched repository, or one GitLab job. */
typedef struct sw_work {
	char *id;      /* unique and stable: "git:<repo>:<sha>" (a tag: "git:<repo>:<sha>:tag:<t>"),
	                * "gitlab:<server>:<job id>" */
	char *source;  /* the repo or server name (fairness, metrics) */
	char *kind;    /* "git" or "gitlab" */
	char *sha;     /* git: the commit */
	char *ref;     /* git: "refs/heads/main" or "refs/tags/v1" */
	char *payload; /* gitlab: the job's JSON, in memory only (never journaled: it holds
	                * secrets) */
	sw_work_state state;
	int attempts;                               /* started this many times */
	int exit_code;                              /* of the last finished attempt; -1 */
	int64_t queued_at, started_at, finished_at; /* unix ms; 0: not yet */
	char *output_dir;                           /* the run's output folder once started */
	char *message;                              /* why it failed, or NULL */
} sw_work;

/*
 * The durable journal STATE/agent/journal.json: every work item not yet forgotten (finished ones
 * are kept for a while: the last 1000) and, per watched repository, the last commit seen on each
 * ref (so a restart neither misses nor repeats commits). Every change rewrites it atomically
 * (temporary file, fsync, rename, fsync of the folder) under a mutex: a crash at any instant
 * leaves the old or the new journal. GitLab jobs are journaled by id only (their payload holds
 * secrets and is never written); after a crash, a GitLab job that was running is reported failed
 * to its server (runner_system_failure) if the server still knows it, never re-run.
 */
typedef struct sw_journal sw_journal;
int sw_journal_open(sw_journal **out, const char *state_dir, sw_error **err) SW_WUR;
void sw_journal_free(sw_journal *j);
/* Add a work item (copied) unless one with its id exists: *added says which. */
int sw_journal_add(bool *added, sw_journal *j, const sw_work *w, sw_error **err) SW_WUR;
/* Change an item's state (and attempts/exit_code/times/output_dir/message as given in *w). */
int sw_journal_update(sw_journal *j, const sw_work *w, sw_error **err) SW_WUR;
/* Copies of items (caller frees with sw_work_list_free), in queue order. state < 0: all. */
int sw_journal_list(sw_work **out, size_t *n, sw_journal *j, int state, sw_error **err) SW_WUR;
void sw_work_clear(sw_work *w);
void sw_work_list_free(sw_work *v, size_t n);
/* The last commit seen on `ref` of repository `repo` (NULL: none; caller frees), and setting it
 * (sha NULL: the ref is gone). */
char *sw_journal_ref_get(sw_journal *j, const char *repo, const char *ref);
int sw_journal_ref_set(sw_journal *j, const char *repo, const char *ref, const char *sha,
                       sw_error **err) SW_WUR;
/* After a restart: items found RUNNING are queued again (attempts < max_attempts) or set to
 * ERROR with a message; returns how many of each in *requeued / *failed. */
int sw_journal_recover(unsigned *requeued, unsigned *failed, sw_journal *j, int max_attempts,
                       sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- the scheduler (sched.c) */

/* How a unit of work is run; called on a worker thread. Returns the final state. */
typedef sw_work_state (*sw_sched_run_fn)(sw_work *w, volatile sig_atomic_t *cancel, void *payload);

/*
 * Bounded concurrency over all sources (config->concurrency), fair between sources: the next
 * item is taken round-robin over the sources that have queued work, oldest first within one.
 * Items come from the journal (state QUEUED); a worker marks an item RUNNING (attempts + 1)
 * before it starts and its final state after. A source may also have a limit of its own
 * (GitLab `limit`).
 */
typedef struct sw_sched sw_sched;
int sw_sched_new(sw_sched **out, sw_journal *j, int concurrency, sw_sched_run_fn run, void *payload,
                 sw_error **err) SW_WUR;
/* Wake the workers: new items were added to the journal. */
void sw_sched_kick(sw_sched *s);
void sw_sched_set_concurrency(sw_sched *s, int concurrency);
void sw_sched_set_source_limit(sw_sched *s, const char *source, int limit);
/* Counts for metrics. */
void sw_sched_counts(sw_sched *s, unsigned *running, unsigned *queued);
/* Stop taking new items (drain); running ones go on. */
void sw_sched_drain(sw_sched *s);
/* Whether sw_sched_drain was called (sources should stop fetching work then). */
bool sw_sched_draining(sw_sched *s);
/* Cancel running items (their cancel flag: 1 with grace, 2 without). */
void sw_sched_cancel_all(sw_sched *s, int how);
/* Wait until no item runs, at most timeout_ms (< 0: forever); true when none runs. */
bool sw_sched_wait_idle(sw_sched *s, int64_t timeout_ms);
void sw_sched_free(sw_sched *s); /* after drain + wait_idle */

/* ---------------------------------------------------------------- git watcher (watch.c) */

/*
 * Watch the configured repositories: a bare mirror per repository under
 * STATE/agent/mirrors/<name>.git, fetched incrementally (libgit2; credentials from the config;
 * URL passwords never logged), every poll_ms with jitter, backing off (doubling, up to 10
 * minutes) while a repository fails (unreachable, gone, wrong credentials: reported and retried;
 * other repositories go on). For each branch matching the patterns: new commits since the last
 * one seen (journal refs) become work items: the newest only, or every commit (oldest first)
 * with every_commit; a force-push (the old head is not an ancestor) starts the new head only; a
 * new branch starts its head. New tags matching the tag patterns start their commit. The first
 * poll of a repository never seen before starts the head of each matching branch.
 */
typedef struct sw_watcher sw_watcher;
/* Callbacks the watcher reports through (any may be NULL). */
typedef struct sw_watch_hooks {
	void (*poll_error)(const char *repo, const char *message, void *payload); /* metrics */
	void (*polled)(const char *repo, unsigned new_work, void *payload);
	void *payload;
} sw_watch_hooks;
int sw_watcher_start(sw_watcher **out, const sw_agent_config *cfg, sw_journal *j, sw_sched *s,
                     const sw_watch_hooks *hooks, sw_error **err) SW_WUR;
/* Take a new config (SIGHUP): repositories added, removed or changed; mirrors kept. */
int sw_watcher_reload(sw_watcher *w, const sw_agent_config *cfg, sw_error **err) SW_WUR;
/* Poll every repository now (tests, SIGUSR1). */
void sw_watcher_poll_now(sw_watcher *w);
void sw_watcher_stop(sw_watcher *w); /* joins its thread and frees */
/* The mirror folder of repository `name` (caller frees). */
char *sw_watcher_mirror_path(const char *state_dir, const char *name);

/* ---------------------------------------------------------------- GitLab runner (gitlab*.c) */

/*
 * Poll GitLab servers as a runner (../shared/specs/gitlab-runner-api.md): verify the token at
 * start, long-poll POST /api/v4/jobs/request with last_update, one request loop per server
 * while it is below its limit and the scheduler has room; each job received becomes a work item
 * (kind "gitlab") that the scheduler runs through sw_gitlab_run_job.
 */
typedef struct sw_gitlab sw_gitlab;
int sw_gitlab_start(sw_gitlab **out, const sw_agent_config *cfg, sw_journal *j, sw_sched *s,
                    sw_error **err) SW_WUR;
int sw_gitlab_reload(sw_gitlab *g, const sw_agent_config *cfg, sw_error **err) SW_WUR;
/* Run one received GitLab job (a scheduler run function for kind "gitlab"). */
sw_work_state sw_gitlab_run_job(sw_gitlab *g, sw_work *w, volatile sig_atomic_t *cancel);
/* After a restart: tell servers about jobs that were running when slipway died (failed,
 * runner_system_failure). */
void sw_gitlab_recover(sw_gitlab *g, const sw_work *items, size_t n);
void sw_gitlab_stop(sw_gitlab *g);

/* ---------------------------------------------------------------- metrics (metrics.c) */

/*
 * Prometheus text format on GET /metrics and "ok" on GET /healthz (libmicrohttpd, one thread),
 * on cfg->metrics_addr. Metrics (all prefixed slipway_): jobs_running, jobs_queued (gauges from
 * sw_sched_counts), pipelines_total{source,result}, pipeline_duration_seconds (histogram),
 * step_duration_seconds{kind="build"|"job"} (histogram), cache_hits_total, cache_misses_total
 * (build steps), registry_bytes_pulled_total, registry_bytes_pushed_total, poll_errors_total
 * {source}, polls_total{source}.
 */
typedef struct sw_metrics sw_metrics;
int sw_metrics_start(sw_metrics **out, const char *addr, sw_sched *s, sw_error **err) SW_WUR;
void sw_metrics_stop(sw_metrics *m);
/* The port it listens on (the one chosen by the system when the address asked for port 0). */
int sw_metrics_port(const sw_metrics *m);
/* Account a finished pipeline run from its output folder (reads OUT/events.jsonl: build steps
 * and cache hits, job durations, promotion bytes). */
void sw_metrics_run_done(sw_metrics *m, const char *source, const char *result, double seconds,
                         const char *output_dir);
void sw_metrics_poll(sw_metrics *m, const char *source, bool ok);
void sw_metrics_bytes(sw_metrics *m, uint64_t pulled, uint64_t pushed);

/* ---------------------------------------------------------------- `slipway agent` (cmd_agent.c) */

int sw_cmd_agent(int argc, char **argv);

#endif
