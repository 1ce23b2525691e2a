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
	uint64_t memory_limit;   /* per container; 0: none */
	uint64_t pids_limit;
	uint32_t cpu_millis;
	int progress; /* an sw_console_mode */
	int max_jobs; /* jobs at once; <= 0: 4 */
	/* Set by the signal handlers: 1 at the first SIGINT/SIGTERM (cancel with grace), 2 at the
	 * second (no grace); cancel_signal is the first signal's number. */
	volatile sig_atomic_t *cancel;
	volatile sig_atomic_t *cancel_signal;
} sw_run_opts;

/* Run a pipeline as described in docs/cli.md and return the process exit code (SW_RUN_EXIT_*,
 * 128 + signal when cancelled). Prints on stderr (console, errors) and stdout (the output
 * folder at the end). */
int sw_run_pipeline(const sw_run_opts *o);

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

#endif
