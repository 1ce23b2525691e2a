/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline: the `.slipway.yml` file. The model (image build, env, stages of jobs, promotion),
 * the parser (libyaml) with validation whose every error names FILE:LINE:COLUMN, variable
 * expansion (${VAR}, $VAR, ${checksum(PATH)}), `when` conditions (branch and tag patterns,
 * changed paths with ** globs) and the plan: which jobs run, in which order. docs/pipeline.md is
 * the user's reference of every key. Nothing here runs anything; agent/ does.
 */
#ifndef SW_PIPELINE_H
#define SW_PIPELINE_H

#include "common/common.h"

/* Where a node was in the file (1-based), for messages of later phases. */
typedef struct sw_pl_pos {
	int line;
	int column;
} sw_pl_pos;

/* An ordered map of strings (env, build args). Values are kept unexpanded. */
typedef struct sw_pl_kv {
	char *key;
	char *value;
	sw_pl_pos pos;
} sw_pl_kv;

typedef struct sw_pl_kvs {
	sw_pl_kv *v;
	size_t n;
} sw_pl_kvs;

/* A list of strings. */
typedef struct sw_pl_strs {
	char **v;
	size_t n;
} sw_pl_strs;

/*
 * `when:` (all given parts must hold). branch: glob patterns on the branch name
 * ("release/" + "*"); tag: -1 not given, 0 `false` (never on a tag), 1 `true` (also on tags;
 * with no branch patterns: only on tags); changes: path globs ("src/" + "**") matched against
 * the files the commit changed. status: on_success (default: every earlier job not
 * allow_failure passed), on_failure (only when one failed), always.
 */
typedef enum { SW_PL_ON_SUCCESS = 0, SW_PL_ON_FAILURE, SW_PL_ALWAYS } sw_pl_status_when;

typedef struct sw_pl_when {
	bool given;
	sw_pl_strs branch;
	int tag;
	sw_pl_strs changes;
	sw_pl_status_when status;
	sw_pl_pos pos;
} sw_pl_when;

typedef enum { SW_PL_NET_NONE = 0, SW_PL_NET_PRIVATE, SW_PL_NET_HOST } sw_pl_network;

typedef struct sw_pl_ready {
	int tcp;             /* port on 127.0.0.1 in the job's network; 0: none */
	char *run;           /* a command (run by sh -c) that exits 0 when ready; NULL: none */
	int64_t timeout_ms;  /* default 60000 */
	int64_t interval_ms; /* default 100 */
} sw_pl_ready;

typedef struct sw_pl_service {
	char *name;  /* reachable by this name (and 127.0.0.1) */
	char *image; /* required */
	sw_pl_kvs env;
	sw_pl_strs command;    /* replaces the image's Cmd; empty: the image's */
	sw_pl_strs entrypoint; /* replaces the image's Entrypoint; empty: the image's */
	sw_pl_ready ready;
	sw_pl_pos pos;
} sw_pl_service;

typedef struct sw_pl_secret {
	char *name;   /* the variable name; its value comes from the agent (config or env) */
	bool as_file; /* the variable holds the path of a file with the value */
	sw_pl_pos pos;
} sw_pl_secret;

typedef struct sw_pl_artifacts {
	sw_pl_strs paths;       /* globs relative to the workspace */
	sw_pl_status_when when; /* on_success (default), on_failure, always: of this job */
	sw_pl_pos pos;
} sw_pl_artifacts;

typedef enum { SW_PL_CACHE_PULL_PUSH = 0, SW_PL_CACHE_PULL, SW_PL_CACHE_PUSH } sw_pl_cache_policy;

typedef struct sw_pl_cache {
	char *key; /* template; NULL: no cache. Default key: "default" when paths are given */
	sw_pl_strs paths;
	sw_pl_cache_policy policy;
	sw_pl_pos pos;
} sw_pl_cache;

typedef struct sw_pl_job {
	char *name;       /* unique in the pipeline */
	size_t stage;     /* index in sw_pipeline.stages */
	sw_pl_strs run;   /* commands, each run by the image's shell (/bin/sh -c); at least one */
	sw_pl_strs after; /* `after_run`: always run after `run` (even when it failed) */
	char *image;      /* NULL: the commit's image */
	char *workdir;    /* NULL: the workspace (CI_PROJECT_DIR) */
	char *user;       /* NULL: the image's */
	sw_pl_kvs env;
	sw_pl_secret *secrets;
	size_t n_secrets;
	sw_pl_service *services;
	size_t n_services;
	sw_pl_network network;
	int64_t timeout_ms;    /* 0: the default (1 hour) */
	int retry;             /* extra attempts after a failure (0..10) */
	bool retry_on_timeout; /* `retry: {max: N, when: [failure, timeout]}`; int form: failure
	                          only */
	bool allow_failure;
	sw_pl_strs needs; /* job names of earlier stages */
	sw_pl_when when;
	sw_pl_artifacts artifacts;
	sw_pl_strs junit; /* reports.junit: paths/globs of JUnit XML files */
	sw_pl_cache cache;
	sw_pl_pos pos;
} sw_pl_job;

typedef struct sw_pl_stage {
	char *name;
	size_t *jobs; /* indexes in sw_pipeline.jobs, in file order */
	size_t n_jobs;
	sw_pl_pos pos;
} sw_pl_stage;

typedef struct sw_pl_image {
	char *dockerfile; /* default "Dockerfile" (relative to the checkout) */
	char *context;    /* default "." */
	char *target;     /* NULL: the last stage */
	sw_pl_kvs args;
	bool given;
} sw_pl_image;

typedef struct sw_pl_promote {
	char *to;        /* registry repository: HOST[:PORT]/PATH (no tag) */
	sw_pl_strs tags; /* templates; at least one */
	sw_pl_when when;
	sw_pl_pos pos;
} sw_pl_promote;

typedef struct sw_pipeline {
	char *file; /* the name used in messages */
	sw_pl_image image;
	sw_pl_kvs env;
	sw_pl_stage *stages;
	size_t n_stages;
	sw_pl_job *jobs; /* every job, stage after stage, in file order */
	size_t n_jobs;
	sw_pl_promote *promote;
	size_t n_promote;
	int64_t timeout_ms; /* whole pipeline; 0: none */
} sw_pipeline;

/*
 * Parse and validate. Every error is one message "FILE:LINE:COLUMN: what" (the first found;
 * with `all` in sw_pipeline_lint, every one): YAML syntax, unknown keys (with the nearest
 * known key as a hint), wrong types, bad durations ("10m", "1h30m", "45s", "500ms"), empty
 * `run`, duplicate job names, unknown `needs`, `needs` of a job of the same or a later stage,
 * cycles, bad network, bad service, promote without `to` or tags, bad names. SW_ERR_INVALID.
 * `file` is the name put in messages.
 */
int sw_pipeline_parse(sw_pipeline **out, const char *buf, size_t len, const char *file,
                      sw_error **err) SW_WUR;
int sw_pipeline_load(sw_pipeline **out, const char *path, sw_error **err) SW_WUR;
void sw_pipeline_free(sw_pipeline *p);

/* Every problem of a file, one "FILE:LINE:COLUMN: message" per element (caller frees with
 * sw_strv_free); 0 with an empty list when the file is good. Errors only for I/O. */
int sw_pipeline_lint(char ***problems, const char *buf, size_t len, const char *file,
                     sw_error **err) SW_WUR;

/* Duration text as in the file ("1h30m", "10m", "45s", "500ms", a bare number = seconds). */
int sw_pl_duration_parse(int64_t *out_ms, const char *s);

/* The job with this name, or -1. */
ssize_t sw_pipeline_job_find(const sw_pipeline *p, const char *name);

/* ---------------------------------------------------------------- variables */

/* Variable lookup for expansion: returns the value (borrowed) or NULL when unset. */
typedef const char *(*sw_pl_lookup_fn)(const char *name, void *payload);
/* ${checksum(PATH)}: the hex sha256 of the file PATH (relative to the checkout), or an error. */
typedef int (*sw_pl_checksum_fn)(char **out_hex, const char *path, void *payload, sw_error **err);

/*
 * Expand ${NAME}, $NAME, ${NAME:-default} and ${checksum(PATH)} (only when `checksum` is not
 * NULL); "$$" is a literal "$". An unset variable expands to "". *out is the caller's.
 */
int sw_pl_expand(char **out, const char *tmpl, sw_pl_lookup_fn lookup, sw_pl_checksum_fn checksum,
                 void *payload, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- conditions */

/* What is known about the commit when deciding `when`. */
typedef struct sw_pl_commit_info {
	const char *branch;         /* NULL when not on a branch */
	const char *tag;            /* NULL when not a tag */
	const char *const *changed; /* paths changed by the commit (vs its first parent),
	                             * NULL-terminated; NULL: unknown (changes: then holds) */
} sw_pl_commit_info;

/* Glob match: `*` does not cross '/', `**` does, `?` one character, [abc] classes. */
bool sw_pl_glob_match(const char *pattern, const char *path);
/* Does `when` hold for this commit (the status part is the runner's business)? */
bool sw_pl_when_matches(const sw_pl_when *w, const sw_pl_commit_info *ci);

#endif
