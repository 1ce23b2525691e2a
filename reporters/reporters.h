/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reporters: what a pipeline run tells the world. Secret masking of output streams (values
 * split across chunks and their base64 forms included), the JSON-lines event log, JUnit XML
 * (the pipeline as test cases, with the jobs' own JUnit files merged in, read with libxml2) and
 * the console (a live view of stages and jobs on a terminal, prefixed lines elsewhere, a summary
 * table at the end). Every function here may be called from several job threads at once.
 */
#ifndef SW_REPORTERS_H
#define SW_REPORTERS_H

#include "common/common.h"

#include <jansson.h>
#include <stdio.h>

/* ---------------------------------------------------------------- masking */

/*
 * A masking filter for one output stream. Every occurrence of a secret value (values shorter
 * than 4 bytes are not masked, as GitLab does: too many false hits) and of its standard base64
 * form (and the base64 forms it takes at the two other alignments inside a longer base64 text)
 * becomes "[MASKED]". The filter holds back at most (longest pattern - 1) bytes so a value split
 * across two feeds is still caught; sw_mask_flush emits what is held back.
 */
typedef struct sw_mask sw_mask;
typedef void (*sw_mask_out_fn)(const char *data, size_t len, void *payload);

sw_mask *sw_mask_new(const char *const *secrets, size_t n, sw_mask_out_fn out, void *payload);
void sw_mask_feed(sw_mask *m, const char *data, size_t len);
void sw_mask_flush(sw_mask *m);
void sw_mask_free(sw_mask *m);
/* Mask a whole string at once (for messages, event fields, file names); caller frees. */
char *sw_mask_string(const char *const *secrets, size_t n, const char *s);

/* ---------------------------------------------------------------- events */

/*
 * JSON lines, one object per state change, each with "time" (RFC 3339 UTC with milliseconds)
 * and "type": pipeline, build_step, job, service, promotion, ... and the caller's fields
 * (state, name, stage, duration_ms, exit_code, ...). Lines are written whole under a lock and
 * flushed. A NULL sw_events (no --events) accepts every call and does nothing.
 */
typedef struct sw_events sw_events;
int sw_events_open(sw_events **out, const char *path, sw_error **err) SW_WUR;
/* `fields` is stolen (json_decref'd); "time" and "type" are added. */
void sw_events_emit(sw_events *ev, const char *type, json_t *fields);
void sw_events_close(sw_events *ev);

/* ---------------------------------------------------------------- JUnit */

typedef enum {
	SW_JUNIT_PASSED = 0,
	SW_JUNIT_FAILED,
	SW_JUNIT_ERROR, /* infrastructure error, timeout */
	SW_JUNIT_SKIPPED,
} sw_junit_result;

typedef struct sw_junit sw_junit;
sw_junit *sw_junit_new(const char *pipeline_name);
/* One testcase per job: classname = stage, name = job; message and the log's tail (masked by
 * the caller) go into <failure>/<error>. */
void sw_junit_add_job(sw_junit *j, const char *stage, const char *job, sw_junit_result r,
                      double seconds, const char *message, const char *log_tail);
/*
 * Merge a job's own JUnit file: its <testsuite> elements (from a <testsuites> root or a single
 * <testsuite> root) are added to the report, their names prefixed "JOB: ". A file that is not
 * well-formed XML or not JUnit is an error naming the file and the line (the caller reports it
 * and goes on); files over 64 MiB are refused.
 */
int sw_junit_merge_file(sw_junit *j, const char *job, const char *path, sw_error **err) SW_WUR;
/* Totals of the merged suites plus the job cases. */
void sw_junit_counts(const sw_junit *j, unsigned *tests, unsigned *failures, unsigned *errors,
                     unsigned *skipped);
/* Write <testsuites> (the pipeline suite first, then the merged suites), atomically. */
int sw_junit_write(const sw_junit *j, const char *path, sw_error **err) SW_WUR;
void sw_junit_free(sw_junit *j);

/* ---------------------------------------------------------------- console */

typedef enum {
	SW_CONSOLE_AUTO = 0, /* TTY when the stream is a terminal */
	SW_CONSOLE_TTY,      /* live view, redrawn at most 10 times a second */
	SW_CONSOLE_PLAIN,    /* "[stage/job] line" per output line, state changes as lines */
	SW_CONSOLE_QUIET,    /* the summary only */
} sw_console_mode;

typedef enum {
	SW_JOB_PENDING = 0,
	SW_JOB_RUNNING,
	SW_JOB_PASSED,
	SW_JOB_FAILED,
	SW_JOB_ALLOWED_FAILURE, /* failed, allow_failure */
	SW_JOB_TIMED_OUT,
	SW_JOB_SKIPPED, /* `when` did not hold, or an earlier stage failed */
	SW_JOB_CANCELLED,
	SW_JOB_ERROR, /* infrastructure: image, runtime, service never ready */
} sw_job_state;

const char *sw_job_state_name(sw_job_state s); /* "passed", "failed", "timed out", ... */

typedef struct sw_console sw_console;
sw_console *sw_console_new(sw_console_mode mode, FILE *out);
/* Register the jobs up front (in display order); returns the job's handle (0, 1, ...). */
size_t sw_console_add_job(sw_console *c, const char *stage, const char *job);
void sw_console_job_state(sw_console *c, size_t job, sw_job_state s, const char *detail);
/* Output of a job (already masked), any chunking: whole lines are printed (PLAIN) or the last
 * complete line is shown beside the job (TTY). Attempts: "retry 1" as a detail line. */
void sw_console_job_output(sw_console *c, size_t job, const char *data, size_t len);
/* A free-form line ("building image", "promoting ...", a build step line). */
void sw_console_line(sw_console *c, const char *fmt, ...) SW_PRINTF(2, 3);
/* The build's cache figures for the summary. */
void sw_console_build_stats(sw_console *c, unsigned steps, unsigned cached, double seconds);
/* Stop the live view and print the table: job, stage, result, duration, attempts; then the
 * build's cache hits and the promotion lines given with sw_console_line. */
void sw_console_finish(sw_console *c);
void sw_console_free(sw_console *c);

#endif
