/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline internals shared by the module's files: the list of problems a parse collects (each
 * with its 1-based position, sorted by position at the end), the "did you mean" helper, the
 * name rules, and the cross-checks of validate.c that run on the finished model (duplicate
 * names, `needs` that must point to earlier stages).
 */
#ifndef SW_PIPELINE_INTERNAL_H
#define SW_PIPELINE_INTERNAL_H

#include "pipeline/pipeline.h"

typedef struct sw_pl__problem {
	sw_pl_pos pos;
	char *msg;
} sw_pl__problem;

typedef struct sw_pl__problems {
	sw_pl__problem *v;
	size_t n;
} sw_pl__problems;

/* Add one problem (the message without the position). */
void sw_pl__problem_add(sw_pl__problems *ps, sw_pl_pos pos, const char *fmt, ...) SW_PRINTF(3, 4);
void sw_pl__problems_clear(sw_pl__problems *ps);

/* The candidate closest to `word` (typos: edit distance 1-2, or a case difference), or NULL. */
const char *sw_pl__nearest(const char *word, const char *const *cands, size_t n);

/* Job and stage names: letters, digits, '.', '_', '-' (1..100 characters). */
bool sw_pl__name_valid(const char *s);
/* Service names become host names: letters, digits, '-', '.'; starting and ending with a letter
 * or digit; at most 63 characters. */
bool sw_pl__hostname_valid(const char *s);
/* Environment variable names: [A-Za-z_][A-Za-z0-9_]*. */
bool sw_pl__varname_valid(const char *s);
/* A registry repository HOST[:PORT]/PATH without tag or digest. */
bool sw_pl__repo_valid(const char *s);
/* A literal image tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}. */
bool sw_pl__tag_valid(const char *s);

/*
 * Cross-checks on the model: duplicate stage and job names, `needs` (unknown, self, same or later
 * stage, with the cycle it makes spelled out). needs_pos[j][k] is where p->jobs[j].needs.v[k]
 * was written.
 */
void sw_pl__validate(const sw_pipeline *p, sw_pl_pos *const *needs_pos, sw_pl__problems *ps);

#endif
