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

/* ---------------------------------------------------------------- git checkout (git.c) */

/* What a checkout knows of its commit (the SLIPWAY_ and CI_ variables come from it). */
typedef struct sw_git_commit {
	char sha[41];
	char short_sha[9];  /* the first 8 hex digits, as GitLab's CI_COMMIT_SHORT_SHA */
	char *branch;       /* the branch the revision named or HEAD is on; NULL when none */
	char *tag;          /* the tag the revision named (or pointing at the commit); NULL */
	char *ref_name;     /* branch, else tag, else the short sha */
	char *message;      /* full message */
	char *title;        /* first line */
	char *author;       /* "Name <email>" */
	int64_t time;       /* commit time, unix seconds */
	char **changed;     /* paths changed vs the first parent (all files for a root commit),
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
	SW_RUN_EXIT_FAILED = 1, /* a job failed (that was not allow_failure) */
	SW_RUN_EXIT_PIPELINE = 2, /* the pipeline file or the command line is wrong */
	SW_RUN_EXIT_INFRA = 3,  /* registry down, runtime missing, checkout impossible */
};

#endif
