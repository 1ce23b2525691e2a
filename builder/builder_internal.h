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
	bool chown; /* set owner of everything copied to uid:gid (else keep the source's for
	             * --from sources and 0:0 for the context, as Docker does) */
	uid_t uid;
	gid_t gid;
	bool chmod; /* set the mode of copied files and folders */
	mode_t mode;
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

#endif
