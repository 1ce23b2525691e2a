/* SPDX-License-Identifier: Apache-2.0 */
/*
 * builder internals shared between the build engine (engine*.c) and the build context code
 * (context.c, copy.c): walking and hashing the context with a stat cache, matching COPY/ADD
 * sources, copying files into a mounted rootfs with Docker's COPY semantics, and ADD's
 * downloads and archive extraction.
 */
#ifndef SW_BUILDER_INTERNAL_H
#define SW_BUILDER_INTERNAL_H

#include "builder/builder.h"

#include <sys/stat.h>

/* ---------------------------------------------------------------- the build context */

typedef struct sw_build__context sw_build__context;

/*
 * Open the context folder with its .dockerignore rules (di may be NULL). `statcache_path` (may
 * be NULL) is a file where content digests are remembered by (path, size, mtime, ctime, inode)
 * so an unchanged context is not read again; it is loaded here and saved atomically by
 * sw_build__context_free when it changed.
 */
int sw_build__context_open(sw_build__context **out, const char *dir, const sw_dockerignore *di,
                           const char *statcache_path, sw_error **err) SW_WUR;
void sw_build__context_free(sw_build__context *ctx);
const char *sw_build__context_dir(const sw_build__context *ctx);

/*
 * Resolve COPY/ADD sources (already variable-expanded, relative to the context root; "." and
 * "/" mean the root; wildcards * ? [..] per component) into context-relative paths, ignored
 * files excluded. A source that matches nothing: SW_ERR_NOT_FOUND "\"x\" not found in the build
 * context" (or "excluded by .dockerignore"). *out is NULL-terminated, sorted, owned by caller.
 */
int sw_build__context_match(char ***out, sw_build__context *ctx, char *const *srcs,
                            sw_error **err) SW_WUR;

/*
 * Digest of the inputs of a COPY/ADD from the context: for every file under the matched paths
 * (folders walked, ignored files skipped): the relative path, type, mode, uid, gid, link
 * target, size and content digest; never the mtime. Uses and updates the stat cache.
 */
int sw_build__context_digest(sw_digest *out, sw_build__context *ctx, char *const *paths,
                             sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- copying */

typedef struct sw_build__copy_opts {
	bool chown; /* set owner of everything copied to uid:gid (else the source's with
	             * keep_owners, for --from sources, and 0:0 without, for the context, as
	             * Docker does) */
	uid_t uid;
	gid_t gid;
	bool chmod; /* set the mode of copied files and folders */
	mode_t mode;
	bool keep_owners;   /* no chown: keep the sources' owners (--from sources); else 0:0 */
	bool add_semantics; /* ADD: a local tar archive (any compression) is extracted at dest */
	const sw_dockerignore *ignore; /* skip ignored files (context sources) or NULL */
	int64_t source_date_epoch;     /* clamp mtimes when >= 0 */
} sw_build__copy_opts;

typedef struct sw_build__copy_stats {
	uint64_t files;
	uint64_t bytes;
} sw_build__copy_stats;

/*
 * Copy `srcs` (paths relative to src_root, already matched) into the rootfs mounted at
 * dst_root, to `dest` (absolute in the image; the caller resolved WORKDIR). Docker's rules:
 * several sources or a dest ending in "/" mean dest is a folder (created with parents, owned
 * 0:0 or the chown user for the created ones); a source folder copies its contents, not
 * itself; symlinks are copied as symlinks (a source given by name that is a symlink is
 * followed, as Docker does); hard links inside one copy are kept. Every write goes through
 * sw_path_open_in_root semantics on dst_root: nothing can land outside it, even through
 * symlinks already in the image. stats may be NULL.
 */
int sw_build__copy(sw_build__copy_stats *stats, const char *dst_root, const char *dest,
                   const char *src_root, char *const *srcs, const sw_build__copy_opts *opts,
                   sw_error **err) SW_WUR;

/*
 * ADD <url>: download into the folder `tmpdir` through the HTTP layer (retries, timeouts),
 * verify `checksum` ("sha256:..." or NULL), name the file after the URL's last path part (or
 * Content-Disposition). *out_path is the downloaded file (caller frees). Only http(s).
 */
int sw_build__download(char **out_path, const char *url, const char *checksum, const char *tmpdir,
                       sw_error **err) SW_WUR;

/* Digest a folder tree the way sw_build__context_digest does (for sources outside the context). */
int sw_build__tree_digest(sw_digest *out, const char *root, char *const *paths,
                          sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- walking (context.c, copy.c) */

/* One entry of a walk; `rel` is relative to the walk's start ("" for the start itself). */
typedef struct sw_build__walk_entry {
	char *rel;
	struct stat st;
	char *link; /* symlink target, else NULL */
} sw_build__walk_entry;

typedef struct sw_build__walk {
	sw_build__walk_entry *v;
	size_t n, cap;
} sw_build__walk;

/*
 * Walk the tree at `start` (root-relative and already resolved, "" for the root) under the
 * folder fd `rootfd`, never following a symlink: the start first, then each folder's entries
 * sorted bytewise, depth first (a folder before its content). Paths that `di` ignores (matched
 * root-relative; di may be NULL) are left out: an ignored folder is entered only when a "!"
 * pattern may re-include something under it, and kept only when something was.
 */
int sw_build__walk_tree(sw_build__walk *out, int rootfd, const char *start,
                        const sw_dockerignore *di, sw_error **err) SW_WUR;
void sw_build__walk_clear(sw_build__walk *w);

/*
 * Resolve a source named in COPY/ADD inside `rootfd`, following symlinks inside the root as
 * Docker does for a source given by name: *out_rel is the root-relative result ("" for the
 * root, caller frees) and *st its lstat. SW_ERR_NOT_FOUND when it does not exist.
 */
int sw_build__source_resolve(char **out_rel, struct stat *st, int rootfd, const char *path,
                             sw_error **err) SW_WUR;

/*
 * Open `rel` below the folder `dirfd` without following any symlink and without leaving it
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or a component walk with O_NOFOLLOW).
 * Returns the fd, or -1 with errno set.
 */
int sw_build__open_beneath(int dirfd, const char *rel, int oflags, mode_t mode);

/* ================================================================ the build engine (engine*.c)
 *
 * Owned by the engine files. The plan is everything known before anything runs: the stages the
 * target needs, every instruction expanded, every step's cache key and each stage's replayed
 * image config. It is exposed here so unit tests can check keys, config replay and stage
 * selection without images, a store or containers (the hooks stand in for those).
 */

typedef enum {
	SW_BUILD__BASE_SCRATCH,
	SW_BUILD__BASE_IMAGE, /* plan->images[base] */
	SW_BUILD__BASE_STAGE, /* plan->stages[base] */
} sw_build__base_kind;

/* Where COPY/ADD sources or a RUN bind mount come from. */
typedef enum {
	SW_BUILD__SRC_CONTEXT,
	SW_BUILD__SRC_STAGE,   /* plan->stages[src] */
	SW_BUILD__SRC_IMAGE,   /* plan->images[src] */
	SW_BUILD__SRC_HEREDOC, /* COPY <<EOF: the bodies are the files */
	SW_BUILD__SRC_URL,     /* ADD https://... */
} sw_build__src_kind;

typedef enum {
	SW_BUILD__MOUNT_BIND,
	SW_BUILD__MOUNT_CACHE,
	SW_BUILD__MOUNT_SECRET,
	SW_BUILD__MOUNT_TMPFS,
} sw_build__mount_type;

typedef enum {
	SW_BUILD__SHARING_SHARED,
	SW_BUILD__SHARING_PRIVATE,
	SW_BUILD__SHARING_LOCKED,
} sw_build__sharing;

/* One RUN --mount=..., options expanded and checked. */
typedef struct sw_build__mount {
	sw_build__mount_type type;
	char *target;                 /* absolute in the container */
	char *source;                 /* bind: path in the source ("/" default) */
	sw_build__src_kind from_kind; /* bind: CONTEXT, STAGE or IMAGE */
	int from;                     /* stage or image index */
	char **matched;               /* bind from the context: the matched paths */
	char *id;                     /* cache and secret ids (secret: the --secret id) */
	bool readonly;                /* bind: true unless rw */
	bool required;                /* secret */
	sw_build__sharing sharing;    /* cache */
	mode_t mode;                  /* cache: folder mode (0755); secret: file mode (0400) */
	uid_t uid;
	gid_t gid;
	uint64_t size; /* tmpfs size in bytes, 0: default */
} sw_build__mount;

/* One instruction of a stage after FROM. */
typedef struct sw_build__step {
	const sw_df_instruction *ins;
	sw_df_kind kind;
	bool layer;       /* makes a layer: RUN, COPY, ADD, WORKDIR (except "/") */
	int number;       /* layer steps: position in the stage's progress count (FROM is 1) */
	char key[72];     /* "sha256:<hex>" cache key */
	char *created_by; /* the history text */
	char *title;      /* "[2/5] RUN make" (layer steps) */

	/* RUN: the process, and for WORKDIR the user owning created folders */
	char **argv;
	char **env;
	char *user; /* NULL: root */
	char *cwd;
	bool net_host;
	sw_build__mount *mounts;
	size_t n_mounts;
	char *script_name; /* RUN <<EOF with a "#!" body: run /dev/pipes/NAME */
	char *script;

	/* COPY / ADD */
	sw_build__src_kind src_kind;
	int src;        /* stage or image index */
	char **srcs;    /* expanded sources (URLs for SRC_URL, heredoc names for HEREDOC) */
	char **matched; /* SRC_CONTEXT: matched context-relative paths */
	char **bodies;  /* SRC_HEREDOC: file contents, parallel to srcs */
	char *dest;     /* absolute, a trailing "/" kept */
	char *chown;    /* --chown value or NULL */
	bool chmod;
	mode_t mode;
	bool add;       /* ADD semantics (local tar archives extracted) */
	char *checksum; /* ADD --checksum */

	/* WORKDIR: the folder to create (absolute); `user` owns created folders */
	char *workdir;
} sw_build__step;

/* An image used by FROM, COPY --from=IMAGE or RUN --mount=from=IMAGE. */
typedef struct sw_build__image {
	char *name; /* as written (expanded) */
	sw_oci_platform platform;
	sw_oci_descriptor desc; /* the platform manifest's descriptor */
	sw_oci_manifest manifest;
	sw_oci_config config;
	bool pulled; /* it was not in the local store */
} sw_build__image;

typedef struct sw_build__stage {
	int index;
	char *name;  /* lowercased AS name, or NULL */
	char *label; /* name, or the index as text */
	const sw_df_instruction *from;
	char *base_name; /* the expanded FROM argument */
	sw_build__base_kind base_kind;
	int base;
	sw_oci_platform platform;
	char *platform_str;
	bool needed; /* the target needs it (itself, a base or a --from source) */
	sw_build__step *steps;
	size_t n_steps;
	int n_progress; /* FROM (image bases) + layer steps: the N of "[i/N]" */
	char key0[72];
	char key[72]; /* the last step's key (key0 without steps) */
	/* replayed config: base config + instructions (rootfs and history are set at the end) */
	sw_oci_config config;
	char **shell; /* SHELL in effect at the end */
	/* the base's ONBUILD triggers, parsed: they own the instructions of the first steps */
	sw_dockerfile **triggers;
	size_t n_triggers;
} sw_build__stage;

/* What the plan needs from outside; the engine gives the store, registry and context. */
typedef struct sw_build__hooks {
	/* Fill img->desc, manifest, config (and pulled) for img->name and img->platform. */
	int (*image)(sw_build__image *img, void *payload, sw_error **err);
	/* COPY/ADD/bind sources from the context: the matched paths and their digest. */
	int (*context)(sw_digest *out, char ***matched, char *const *srcs, void *payload,
	               sw_error **err);
	/* ADD URL: fetch (or take from this build's downloads) and digest the content. */
	int (*url)(sw_digest *out, const char *url, const char *checksum, void *payload,
	           sw_error **err);
	/* A warning (unused build argument, ...). May be NULL. */
	void (*warn)(const char *msg, void *payload);
	void *payload;
} sw_build__hooks;

typedef struct sw_build__plan_opts {
	const char *const *build_args;   /* "K=V" or "K" (from the environment) */
	const char *target;              /* NULL: the last stage */
	const sw_oci_platform *platform; /* NULL: this machine's */
	const char *network;             /* "none" (NULL), "host" or "default" (= none) */
	const sw_build_secret *secrets;
	size_t n_secrets;
} sw_build__plan_opts;

typedef struct sw_build__plan {
	const sw_dockerfile *df;
	sw_build__stage *stages;
	size_t n_stages;
	int target;
	sw_build__image *images;
	size_t n_images;
} sw_build__plan;

/*
 * Make the plan: global ARGs, stages and their selection for the target, base images (through
 * hooks->image), every instruction expanded in its scope, config replayed, and every cache key
 * computed. Errors name Dockerfile:LINE:COLUMN.
 */
int sw_build__plan_new(sw_build__plan **out, const sw_dockerfile *df,
                       const sw_build__plan_opts *opts, const sw_build__hooks *hooks,
                       sw_error **err) SW_WUR;
void sw_build__plan_free(sw_build__plan *p);

/* The stage named `name` (case-insensitive) or with that index; -1 when there is none. */
int sw_build__plan_stage_find(const sw_build__plan *p, const char *name);

/* RFC 3339 UTC text of a unix time ("2023-11-14T22:13:20Z"); caller frees. */
char *sw_build__time_str(int64_t t);

/* Parse a Go duration ("30s", "1m30s", "500ms") into nanoseconds. */
int sw_build__duration_parse(int64_t *out, const char *s);

#endif
