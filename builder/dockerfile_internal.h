/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals of the Dockerfile frontend shared by the parser (dockerfile.c) and Docker's shell-word
 * lexer (shellwords.c): one lexer with BuildKit's switches (raw quotes, raw escapes, quotes left
 * alone, unset variables kept as written) used for substitution, for word splitting and for
 * recognising heredoc words, plus Go-style quoting of text for error messages.
 */
#ifndef SW_BUILDER_DOCKERFILE_INTERNAL_H
#define SW_BUILDER_DOCKERFILE_INTERNAL_H

#include "builder/builder.h"

typedef struct sw_df__lex_opts {
	char escape;              /* '\\' or '`' */
	bool raw_quotes;          /* keep the quote characters in the result */
	bool raw_escapes;         /* keep the escape characters in the result */
	bool skip_process_quotes; /* quotes are ordinary characters (heredoc bodies) */
	bool skip_unset_env;      /* an unset variable stays as written ("$X", "${X:-y}") */
	sw_df_lookup_cb lookup;   /* NULL: every variable is unset */
	void *payload;
} sw_df__lex_opts;

typedef struct sw_df__lex_result {
	char *word;      /* the whole text substituted (BuildKit's ProcessWord) */
	char **words;    /* split into words, quotes honoured (ProcessWords); NULL-terminated */
	size_t *offsets; /* byte offset in the input where each word began */
	size_t n_words;
	char *error; /* set when the text cannot be processed (Docker's message) */
} sw_df__lex_result;

/*
 * Run Docker's shell lexer (frontend/dockerfile/shell/lex.go) over text[0..len). Returns 0, or
 * -1 with out->error set (and no words). Clear the result with sw_df__lex_result_clear.
 */
int sw_df__lex(sw_df__lex_result *out, const char *text, size_t len,
               const sw_df__lex_opts *opts) SW_WUR;
void sw_df__lex_result_clear(sw_df__lex_result *r);

/* Is `c` at s[0..n) a Unicode white-space character (Go's unicode.IsSpace)? Its length or 0. */
size_t sw_df__space_len(const char *s, size_t n);

/* Quote text as Go's %q does, cut to about `max` bytes with "..." (caller frees). */
char *sw_df__quote(const char *s, size_t len, size_t max);

#endif
