/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cache: what makes rebuilds fast. Unpacked layer snapshots (one folder per layer diff ID, in
 * overlayfs format, used as overlay lower folders), the build cache index (cache key -> the
 * layer a step produced), and size-capped garbage collection, least recently used first.
 * Everything lives under STATE/cache and is written atomically (temporary name, fsync, rename),
 * so two builds at once and a crash at any instant are safe.
 */
#ifndef SW_CACHE_H
#define SW_CACHE_H

#include "common/common.h"
#include "oci/oci.h"

typedef struct sw_cache sw_cache;

/* Open (creating) STATE/cache, working with the content store `store` (kept, not owned). */
int sw_cache_open(sw_cache **out, const char *state_dir, sw_oci_store *store,
                  sw_error **err) SW_WUR;
void sw_cache_free(sw_cache *c);

/* ---------------------------------------------------------------- snapshots */

/*
 * The unpacked snapshot of one layer: STATE/cache/snapshots/<diff_id hex>/, holding the layer
 * applied alone onto an empty folder with overlay-style whiteouts (0/0 char devices, opaque
 * xattrs): ready to be an overlay lower folder. Made on first use from the store's blob
 * `layer` (unpacked into a temporary folder, then renamed), verified against diff_id.
 * *out_path is the caller's to free. Marks it used now.
 */
int sw_cache_snapshot_get(char **out_path, sw_cache *c, const sw_oci_descriptor *layer,
                          const sw_digest *diff_id, sw_error **err) SW_WUR;
/*
 * Adopt an existing folder in overlay format (an overlay upper folder after a step) as the
 * snapshot of diff_id: it is renamed into place (same filesystem), or dropped when that
 * snapshot already exists. `dir` no longer exists afterwards in either case.
 */
int sw_cache_snapshot_adopt(sw_cache *c, const char *dir, const sw_digest *diff_id,
                            sw_error **err) SW_WUR;
bool sw_cache_snapshot_has(sw_cache *c, const sw_digest *diff_id);
/* A fresh empty folder on the cache's filesystem for an overlay upper (caller frees path). */
int sw_cache_scratch_dir(char **out_path, sw_cache *c, const char *prefix, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- build cache index */

typedef struct sw_cache_entry {
	char key[72];           /* "sha256:<hex>" of the step's cache key */
	sw_digest diff_id;      /* the layer's diff ID */
	sw_oci_descriptor blob; /* the layer blob in the store (media type, digest, size) */
	char *created_by;       /* the history text of the step */
	int64_t created;        /* unix seconds */
	int64_t last_used;      /* unix seconds */
} sw_cache_entry;

void sw_cache_entry_clear(sw_cache_entry *e);

/* Find the entry for key; SW_ERR_NOT_FOUND when absent or when its blob is gone from the store
 * (the stale entry is then removed). A hit marks it used now. */
int sw_cache_lookup(sw_cache_entry *out, sw_cache *c, const char *key, sw_error **err) SW_WUR;
/* Record (or replace) an entry; its blob must already be in the store. */
int sw_cache_put(sw_cache *c, const sw_cache_entry *e, sw_error **err) SW_WUR;
/* Every entry, most recently used first. */
int sw_cache_list(sw_cache_entry **out, size_t *n, sw_cache *c, sw_error **err) SW_WUR;
void sw_cache_entries_free(sw_cache_entry *v, size_t n);

typedef struct sw_cache_usage {
	uint64_t entries;
	uint64_t blob_bytes;     /* layer blobs the index refers to */
	uint64_t snapshot_bytes; /* unpacked snapshots */
} sw_cache_usage;

int sw_cache_usage_get(sw_cache_usage *out, sw_cache *c, sw_error **err) SW_WUR;

typedef struct sw_cache_prune_stats {
	uint64_t entries_removed;
	uint64_t blobs_removed;
	uint64_t snapshots_removed;
	uint64_t bytes_freed;
} sw_cache_prune_stats;

/*
 * Remove least recently used entries (with their blobs and snapshots, unless an image tagged
 * in the store or a remaining entry still uses them) until blob + snapshot bytes are at most
 * keep_bytes (0: remove everything that is not in use). Snapshots in use by a running build
 * (a lock held on them) are kept.
 */
int sw_cache_prune(sw_cache_prune_stats *out, sw_cache *c, uint64_t keep_bytes,
                   sw_error **err) SW_WUR;

#endif
