/* SPDX-License-Identifier: Apache-2.0 */
/*
 * builder: Dockerfile to OCI image with no daemon. The frontend parses a Dockerfile (parser
 * directives, continuations, heredocs, exec and shell forms, Docker's substitution rules) and
 * `.dockerignore`; the engine computes every step's cache key first, reuses cached layers, runs
 * RUN steps in containers (executor/) over overlayfs, writes layers from the overlay upper
 * folders, and assembles, stores, exports and pushes the image.
 */
#ifndef SW_BUILDER_H
#define SW_BUILDER_H

#include "common/common.h"
#include "oci/oci.h"

#include <signal.h>

/* ================================================================ the Dockerfile frontend */

typedef enum {
	SW_DF_FROM,
	SW_DF_RUN,
	SW_DF_CMD,
	SW_DF_LABEL,
	SW_DF_MAINTAINER,
	SW_DF_EXPOSE,
	SW_DF_ENV,
	SW_DF_ADD,
	SW_DF_COPY,
	SW_DF_ENTRYPOINT,
	SW_DF_VOLUME,
	SW_DF_USER,
	SW_DF_WORKDIR,
	SW_DF_ARG,
	SW_DF_ONBUILD,
	SW_DF_STOPSIGNAL,
	SW_DF_HEALTHCHECK,
	SW_DF_SHELL,
} sw_df_kind;

/*
 * "--name=value" flags of an instruction, in their order, checked against the ones Docker knows
 * for it (quotes removed, values not yet substituted). Boolean flags: value NULL for a bare
 * "--link", else "true" or "false".
 */
typedef struct sw_df_flag {
	char *name;
	char *value;
	int line, column;
} sw_df_flag;

typedef struct sw_df_heredoc {
	char *name;    /* the delimiter word */
	char *content; /* the body, with a final newline; leading tabs removed for "<<-" */
	bool expand;   /* false when the delimiter was quoted ('EOF' or "EOF") */
	bool strip_tabs;
} sw_df_heredoc;

typedef struct sw_df_instruction {
	sw_df_kind kind;
	char *keyword;  /* as written ("run", "RUN") */
	char *original; /* the whole instruction text after continuations were joined */
	int line;       /* 1-based line of the keyword */
	int column;     /* 1-based column of the keyword */
	sw_df_flag *flags;
	size_t n_flags;
	bool json_form; /* exec form: args are the JSON array's strings */
	char **args;    /* NULL-terminated, never NULL; as Docker's parser leaves them, quotes
	                 * and escapes still in (sw_df_expand removes them):
	                 * - RUN CMD ENTRYPOINT SHELL shell form: args[0] is the rest of the line
	                 *   ("" when nothing follows: Docker then runs `sh -c ""`); exec form:
	                 *   the JSON strings (SHELL must have them)
	                 * - COPY ADD VOLUME: the JSON strings, or the whitespace-split words
	                 *   (sources then destination; "<<EOF" words are heredoc sources, see
	                 *   sw_df_heredoc_for_arg); FROM EXPOSE: whitespace-split words
	                 * - WORKDIR USER STOPSIGNAL MAINTAINER: args[0], the rest of the line
	                 * - ENV LABEL: "key=value" words (split key at the first "=" and expand
	                 *   each part); the legacy "ENV k v w" is normalised to "k=v w"
	                 * - ARG: "name" or "name=default" words
	                 * - HEALTHCHECK: args[0] "CMD" or "NONE" as written, then the command
	                 *   (one shell-form string or the JSON strings)
	                 * - ONBUILD: args[0] the trigger as written (heredocs appended as
	                 *   Docker records them), parsed in `onbuild` */
	sw_df_heredoc *heredocs;
	size_t n_heredocs;
	struct sw_df_instruction *onbuild; /* ONBUILD's trigger, parsed and checked; NULL when
	                                    * Docker would only find it wrong in a child build
	                                    * (unknown instruction, bad arguments) */
} sw_df_instruction;

typedef struct sw_dockerfile {
	char *filename; /* for messages */
	char escape;    /* '\\' or '`' (the escape= directive) */
	char *syntax;   /* the syntax= directive, recorded only */
	sw_df_instruction *instructions;
	size_t n_instructions;
} sw_dockerfile;

/*
 * Parse a Dockerfile from memory (capped at 1 MiB). Errors name FILE:LINE:COLUMN, quote the
 * offending text, and for an unknown instruction suggest the nearest known one ("did you mean
 * COPY?"). Checks the structure of each instruction (flags known for it, argument counts, JSON
 * arrays well formed, heredocs terminated, ARG/FROM order); values are substituted later.
 */
int sw_df_parse(sw_dockerfile **out, const char *buf, size_t len, const char *filename,
                sw_error **err) SW_WUR;
void sw_df_free(sw_dockerfile *df);
const char *sw_df_kind_name(sw_df_kind kind);

/* Variable lookup for substitution: returns the value or NULL when unset. */
typedef const char *(*sw_df_lookup_cb)(const char *name, void *payload);

/*
 * Docker's word substitution (BuildKit's ProcessWord): $V, ${V}, ${V:-word}, ${V-word},
 * ${V:+word}, ${V+word}, ${V:?msg}, ${V?msg}, ${V#pat}, ${V##pat}, ${V%pat}, ${V%%pat},
 * ${V/pat/repl}, ${V//pat/repl}, escapes with the file's escape character, quotes removed
 * (single quotes literal). With `words` non-NULL, the result is also split into words as
 * ProcessWords does (quoted text never splits; EXPOSE). Either of out and words may be NULL;
 * what they receive is the caller's (free, sw_strv_free). Errors name the place
 * (file:line:column of the instruction) and Docker's reason ("V: msg" for ${V:?msg}).
 */
int sw_df_expand(char **out, char ***words, const sw_dockerfile *df, const sw_df_instruction *ins,
                 const char *text, sw_df_lookup_cb lookup, void *payload, sw_error **err) SW_WUR;
/*
 * The body of a COPY/ADD heredoc as Docker writes it: substituted (quotes left alone, "\" as
 * escape) unless the delimiter was quoted, else a copy. *out is the caller's.
 */
int sw_df_expand_heredoc(char **out, const sw_dockerfile *df, const sw_df_instruction *ins,
                         const sw_df_heredoc *hd, sw_df_lookup_cb lookup, void *payload,
                         sw_error **err) SW_WUR;
/* Does Docker substitute variables in this instruction's arguments? (list in shellwords.c) */
bool sw_df_kind_expands(sw_df_kind kind);
/* The heredoc a COPY/ADD source word ("<<EOF", "<<-'EOF'") stands for, or NULL for a path. */
const sw_df_heredoc *sw_df_heredoc_for_arg(const sw_df_instruction *ins, const char *arg);

/* ---------------------------------------------------------------- .dockerignore */

typedef struct sw_dockerignore sw_dockerignore;

/* Parse patterns (comments, blank lines, "!" exceptions, "**", root-anchored, cleaned). */
int sw_dockerignore_parse(sw_dockerignore **out, const char *buf, size_t len, const char *filename,
                          sw_error **err) SW_WUR;
/*
 * Load <Dockerfile path>.dockerignore (beside the Dockerfile) when it exists, else
 * CONTEXT/.dockerignore, else an empty set. `dockerfile` is the Dockerfile path as given (NULL:
 * CONTEXT/Dockerfile).
 */
int sw_dockerignore_load(sw_dockerignore **out, const char *context_dir, const char *dockerfile,
                         sw_error **err) SW_WUR;
/* Is the context-relative path ("a/b.txt", no leading "/") excluded? The last match wins. */
bool sw_dockerignore_match(const sw_dockerignore *di, const char *path);
/* Could anything under folder `path` be re-included by a "!" pattern? (to skip walking) */
bool sw_dockerignore_may_include_under(const sw_dockerignore *di, const char *path);
void sw_dockerignore_free(sw_dockerignore *di);

/* ================================================================ the build */

typedef enum {
	SW_BUILD_EV_STEP_START,  /* a step begins (cached: true when it is a cache hit) */
	SW_BUILD_EV_STEP_OUTPUT, /* output of a running step (text, len) */
	SW_BUILD_EV_STEP_DONE,   /* a step ended (failed: exit code in `code`) */
	SW_BUILD_EV_LOG,         /* a message of the builder's own (pulling, pushing, ...) */
} sw_build_event_kind;

typedef struct sw_build_event {
	sw_build_event_kind kind;
	int step;          /* 1-based step number across the stages built */
	int n_steps;       /* total steps */
	const char *stage; /* stage name or index as text */
	const char *title; /* "[stage 2/5] RUN make" */
	bool cached;
	bool failed;
	int code;
	int64_t elapsed_ms;
	const char *text; /* output bytes or log message */
	size_t len;
} sw_build_event;

typedef void (*sw_build_event_cb)(const sw_build_event *ev, void *payload);

typedef struct sw_build_secret {
	const char *id;
	const char *src; /* a file on the host */
} sw_build_secret;

typedef struct sw_build_opts {
	const char *context_dir;
	const char *dockerfile;        /* path; NULL: CONTEXT/Dockerfile */
	const char *const *tags;       /* store names ("app:dev"), NULL-terminated or NULL */
	const char *const *build_args; /* "K=V" (or "K" to take it from the environment) */
	const char *target;            /* stage name; NULL: the last stage */
	bool no_cache;
	const char *const *cache_from; /* registry cache repositories */
	const char *cache_to;          /* registry cache repository, or NULL */
	const sw_build_secret *secrets;
	size_t n_secrets;
	const char *network; /* default for RUN: "none" (default) | "host" | "default" */
	const sw_oci_platform *platform; /* NULL: this machine's */
	const char *output;              /* "oci:DIR[:TAG]" or NULL */
	const char *const *push;         /* registry references to push to, NULL-terminated */
	const char *state_dir;           /* NULL: the default state folder */
	const char *runtime;             /* "runc" (default) or "crun" or a path */
	int64_t source_date_epoch;       /* < 0: unset (then $SOURCE_DATE_EPOCH if set) */
	sw_oci_compression compression;
	const sw_oci_registry_opts *registry; /* for pulls, pushes and the registry cache */
	sw_build_event_cb on_event;
	void *payload;
	volatile sig_atomic_t *cancel;
} sw_build_opts;

typedef struct sw_build_result {
	sw_oci_descriptor manifest; /* the image's manifest descriptor */
	sw_digest config_digest;
	unsigned steps;
	unsigned cached_steps;
} sw_build_result;

/* Build the image. The result is the caller's to clear with sw_build_result_clear. */
int sw_build_run(sw_build_result *out, const sw_build_opts *opts, sw_error **err) SW_WUR;
void sw_build_result_clear(sw_build_result *r);

#endif
