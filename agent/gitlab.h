/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GitLab runner's own pieces, shared by agent/gitlab.c (servers, polling, a job's
 * lifecycle), agent/gitlab_job.c (the job payload, the pipeline made of it, artifacts as zip)
 * and agent/gitlab_trace.c (the incremental trace), and by the unit tests. Not for other files:
 * the daemon uses the "GitLab runner" section of agent_internal.h.
 */
#ifndef SW_AGENT_GITLAB_H
#define SW_AGENT_GITLAB_H

#include "agent/agent_internal.h"
#include "pipeline/pipeline.h"

#include <stdint.h>

/* ---------------------------------------------------------------- the job payload */

typedef struct sw_gitlab_var {
	char *key;
	char *value;
	bool masked, file, raw;
} sw_gitlab_var;

typedef struct sw_gitlab_service {
	char *name; /* image */
	char *alias;
	char **entrypoint; /* NULL-terminated or NULL */
	char **command;
} sw_gitlab_service;

typedef struct sw_gitlab_artifact {
	char *name;      /* archive name without extension; default "artifacts" */
	char **paths;    /* NULL-terminated */
	char *when;      /* on_success (default), on_failure, always */
	char *expire_in; /* or NULL */
	char *type;      /* "archive" (default) or a report type */
	char *format;    /* "zip" (default), "gzip", "raw" */
} sw_gitlab_artifact;

typedef struct sw_gitlab_dep {
	int64_t id;
	char *name;
	char *token;
	bool has_file; /* artifacts_file is given */
} sw_gitlab_dep;

typedef struct sw_gitlab_credential {
	char *host; /* from url */
	char *username;
	char *password;
} sw_gitlab_credential;

typedef struct sw_gitlab_job {
	int64_t id;
	char *token;
	char *name;  /* job_info.name */
	char *stage; /* job_info.stage */
	char *project;
	char *repo_url; /* holds the job token: never logged */
	char *ref, *sha, *ref_type;
	int depth;
	int64_t timeout_s; /* runner_info.timeout; 0: none given */
	sw_gitlab_var *vars;
	size_t n_vars;
	char **script; /* the `script` step's lines, NULL-terminated */
	char **after_script;
	int64_t after_timeout_s;
	char *image; /* NULL: none given */
	char **image_entrypoint;
	sw_gitlab_service *services;
	size_t n_services;
	sw_gitlab_artifact *artifacts;
	size_t n_artifacts;
	sw_gitlab_dep *deps;
	size_t n_deps;
	sw_gitlab_credential *creds;
	size_t n_creds;
} sw_gitlab_job;

/* Parse a jobs/request 201 body. Unknown keys are ignored; null or missing optional fields are
 * fine; strings where arrays are expected (entrypoint, command) are taken as one element. */
int sw_gitlab_job_parse(sw_gitlab_job **out, const char *json, size_t len, sw_error **err) SW_WUR;
void sw_gitlab_job_free(sw_gitlab_job *j);
/* The value of variable `key` or NULL. */
const char *sw_gitlab_job_var(const sw_gitlab_job *j, const char *key);

/*
 * The one-stage, one-job pipeline of a GitLab job: image, services (named by alias, else the
 * image's basename without tag), run = script, after = after_script, env = the plain variables
 * (raw ones with '$' escaped), secrets = the masked and the file variables (file ones as files),
 * timeout from runner_info. CI_PROJECT_DIR and CI_BUILDS_DIR are left to the runner. `image`
 * overrides the job's (NULL: the job's). *mask gets the masked values.
 */
int sw_gitlab_pipeline(sw_pipeline **out, char ***secret_args, char ***mask, const sw_gitlab_job *j,
                       const char *image, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- small protocol helpers */

/* "crc32:%08x" of data (zlib's IEEE CRC-32); out has 15 bytes at least. */
void sw_gitlab_checksum(char out[16], uint32_t crc);
/* The "Content-Range" value of a PATCH: "start-end" with end inclusive (len > 0). */
void sw_gitlab_content_range(char out[48], uint64_t start, size_t len);
/* The end (second number) of a "Range: 0-N" answer; false when the value is malformed. */
bool sw_gitlab_range_end(const char *value, uint64_t *end);
/* `url` without a trailing "/" or "/ci", plus "/api/v4/" + path. Caller frees. */
char *sw_gitlab_api_url(const char *url, const char *path);
/* The URL without the user and password part (for messages). Caller frees. */
char *sw_gitlab_url_safe(const char *url);

/* ---------------------------------------------------------------- artifacts (zip) */

/* Write a zip of `paths` (relative to root, as sw_ws_glob gives them; folders recursively;
 * symlinks stored as symlinks) to `dest`; *n_files gets how many entries. */
int sw_gitlab_zip_create(const char *dest, const char *root, char *const *paths, size_t *n_entries,
                         sw_error **err) SW_WUR;
/* Unpack a zip into `root`: entries with absolute paths or ".." are refused, symlinks in the
 * way are never followed. */
int sw_gitlab_zip_extract(const char *zip, const char *root, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- the trace */

typedef struct sw_gitlab_trace sw_gitlab_trace;

/* How the trace talks to its server. */
typedef struct sw_gitlab_trace_opts {
	const char *url; /* the server's base URL */
	int64_t job_id;
	const char *token; /* the job token */
	const sw_http_opts *http;
	int64_t interval_ms;           /* default 3000 */
	size_t limit;                  /* bytes kept; default 4 MiB */
	volatile sig_atomic_t *cancel; /* set to 1 (canceling) or 2 (canceled, abort) */
} sw_gitlab_trace_opts;

int sw_gitlab_trace_new(sw_gitlab_trace **out, const sw_gitlab_trace_opts *o,
                        sw_error **err) SW_WUR;
/* Append bytes (thread-safe). */
void sw_gitlab_trace_write(sw_gitlab_trace *t, const char *data, size_t len);
void sw_gitlab_trace_printf(sw_gitlab_trace *t, const char *fmt, ...) SW_PRINTF(2, 3);
/* Start the thread that PATCHes new bytes every interval and keeps the job alive. */
int sw_gitlab_trace_start(sw_gitlab_trace *t, sw_error **err) SW_WUR;
/*
 * Stop the thread, send every byte left, then the final PUT: state "success" or "failed"
 * (with failure_reason and exit_code), checksum and bytesize; 202 and 412 handled as the spec
 * says, other failures retried (at most 10 times). 0 when the server took it.
 */
int sw_gitlab_trace_finish(sw_gitlab_trace *t, const char *state, const char *failure_reason,
                           int exit_code, sw_error **err) SW_WUR;
/* PUT state=running (the acceptance and keep-alive): the HTTP status, 0 without an answer;
 * *abort when the server does not want the job run (any more). */
long sw_gitlab_trace_put_running(sw_gitlab_trace *t, bool *abort);
/* Was the job aborted by its server (canceled, failed, 403, 404)? */
bool sw_gitlab_trace_aborted(const sw_gitlab_trace *t);
void sw_gitlab_trace_free(sw_gitlab_trace *t);

/* The running CRC and size (tests). */
void sw_gitlab_trace_sum(sw_gitlab_trace *t, uint32_t *crc, uint64_t *size);

/* ---------------------------------------------------------------- a job end to end */

/* What running a job needs from its server. */
typedef struct sw_gitlab_ctx {
	const char *url; /* the server's base URL */
	const char *name;
	const sw_agent_config *cfg;
	volatile sig_atomic_t *cancel; /* the scheduler's flag (may be NULL) */
} sw_gitlab_ctx;

/* Accept, run and report one job (its jobs/request body). Returns the final work state. */
sw_work_state sw_gitlab_job_run(const sw_gitlab_ctx *ctx, const char *payload, size_t len);

/* The state folder: the config's, else --state-dir, $SLIPWAY_STATE_DIR or the default.
 * Caller frees. */
char *sw_gitlab_state_dir(const sw_agent_config *cfg);

/* The runner's "info" object of requests (features match what is implemented). */
json_t *sw_gitlab_info(void);

#endif
