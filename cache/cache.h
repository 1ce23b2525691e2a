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

/*
 * Layout of STATE/cache:
 *   snapshots/<diff_id hex>/      an unpacked layer (overlay lower folder), immutable
 *   snapshots/<diff_id hex>.info  its size on disk ({"size":N}, measured once); its mtime is
 *                                 the snapshot's last use (touched by every get)
 *   index/<key hex>.json          one build cache entry
 *   jobs/<key digest hex>.tar     one pipeline job cache (see "job caches" below)
 *   tmp/<pid>-<start>.<prefix>XXXXXX  scratch folders (unpack targets, overlay uppers, trash);
 *                                 the name records the owning process (pid and its start
 *                                 time, so pid reuse is seen)
 *   leases/<pid>-<start>.XXXXXX   one per open handle; holds the time it was opened
 *   lock, index.lock              flock files
 *
 * Locking. Every handle holds a shared flock on `lock` from sw_cache_open to sw_cache_free
 * (open waits while a prune holds it exclusively). Prune tries to turn its own handle's lock
 * exclusive without waiting:
 *   - it gets it: no other handle is open (no build runs), so anything may go;
 *   - it does not (other handles open, builds running): snapshots are not removed at all (a
 *     running build may have them mounted), entries used at or after the moment the oldest
 *     other live handle was opened (its lease) are kept with their blobs, and a blob written
 *     since then is kept too; sw_cache_prune_stats.busy says so.
 * Lookups and puts hold `index.lock` shared while they check and write an entry; prune holds
 * it exclusively while it decides and removes, so a lookup either sees its hit's blob kept
 * (last_used already updated) or sees the entry gone (a miss). Folders in tmp/ whose owner
 * process is gone (or, for names without an owner tag, older than a day) are removed at open.
 * A handle may be used from several threads at once, except that prune (and enforce_cap) must
 * not run while the same handle's own builds still use snapshots: a handle's own use is not
 * "another handle". Open one handle per build, or prune once the builds are done.
 */

/* Open (creating) STATE/cache, working with the content store `store` (kept, not owned).
 * Takes the shared lock described above (waiting for a running prune). */
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
 * Unpacking checks both the blob digest and that the uncompressed stream is diff_id
 * (SW_ERR_INVALID otherwise; a damaged blob is dropped from the store). `layer` may be NULL
 * to only find an existing (e.g. adopted) snapshot: SW_ERR_NOT_FOUND when there is none.
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
/* A fresh empty folder on the cache's filesystem for an overlay upper (caller frees path).
 * Mode 0755 (an upper's root is the container's "/"); named after the calling process, so a
 * later sw_cache_open removes it once that process is gone. */
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
/* Record (or replace) an entry; its blob must already be in the store (else
 * SW_ERR_NOT_FOUND). created and last_used 0 mean now. */
int sw_cache_put(sw_cache *c, const sw_cache_entry *e, sw_error **err) SW_WUR;
/* Every entry, most recently used first (ties: the newer first); unreadable files are
 * skipped. The caller frees the array with sw_cache_entries_free. */
int sw_cache_list(sw_cache_entry **out, size_t *n, sw_cache *c, sw_error **err) SW_WUR;
void sw_cache_entries_free(sw_cache_entry *v, size_t n);

typedef struct sw_cache_usage {
	uint64_t entries;
	uint64_t blob_bytes;      /* layer blobs the index refers to */
	uint64_t snapshot_bytes;  /* unpacked snapshots */
	uint64_t job_caches;      /* pipeline job caches (STATE/cache/jobs) */
	uint64_t job_cache_bytes; /* their archives' sizes; counted in prune and the cap */
} sw_cache_usage;

int sw_cache_usage_get(sw_cache_usage *out, sw_cache *c, sw_error **err) SW_WUR;

typedef struct sw_cache_prune_stats {
	uint64_t entries_removed;
	uint64_t blobs_removed;
	uint64_t snapshots_removed;
	uint64_t bytes_freed;
	bool busy;                   /* other handles were open: see "Locking" above */
	uint64_t snapshots_kept;     /* snapshots that would have gone but were kept because busy */
	uint64_t job_caches_removed; /* pipeline job caches removed (least recently restored) */
	sw_cache_usage after;        /* usage once done */
} sw_cache_prune_stats;

/*
 * Remove least recently used entries (with their blobs and snapshots, unless an image tagged
 * in the store or a remaining entry still uses them) and job caches (least recently restored
 * or saved) until blob + snapshot + job cache bytes are at most keep_bytes (0: remove
 * everything that is not in use). Snapshots in use by a running build (a lock held on them)
 * are kept; while other handles are open, job caches used since the oldest of them opened are
 * kept too.
 */
int sw_cache_prune(sw_cache_prune_stats *out, sw_cache *c, uint64_t keep_bytes,
                   sw_error **err) SW_WUR;

/* Told about each thing prune removes: kind is "entry" (name: the key, detail: its
 * created_by), "blob" or "snapshot" (name: the digest or diff ID), or "job-cache" (name:
 * "sha256:" and the digest of its key); bytes freed by it. */
typedef void (*sw_cache_prune_cb)(const char *kind, const char *name, const char *detail,
                                  uint64_t bytes, void *payload);
/* sw_cache_prune with a report of what goes (cb may be NULL). */
int sw_cache_prune_report(sw_cache_prune_stats *out, sw_cache *c, uint64_t keep_bytes,
                          sw_cache_prune_cb cb, void *payload, sw_error **err) SW_WUR;

/*
 * The automatic size cap: when blob + snapshot + job cache bytes exceed cap_bytes, prune down to
 * 80% of it (so the next builds do not prune again at once). cap_bytes 0: no cap, nothing done.
 */
int sw_cache_enforce_cap(sw_cache *c, uint64_t cap_bytes, sw_error **err) SW_WUR;
/* The cap configured in the environment: SLIPWAY_CACHE_MAX_BYTES (a size as
 * sw_cache_size_parse reads it); 0 when unset or empty. SW_ERR_INVALID when unreadable. */
int sw_cache_cap_from_env(uint64_t *out, sw_error **err) SW_WUR;
/* Parse a size: digits with an optional suffix B, k/kB, M/MB, G/GB, T/TB (powers of 1000) or
 * KiB, MiB, GiB, TiB (powers of 1024); suffix letters are case-insensitive. */
int sw_cache_size_parse(uint64_t *out, const char *s, sw_error **err) SW_WUR;

/* ---------------------------------------------------------------- job caches (jobcache.c) */

/*
 * Pipeline job caches (`cache: {key, paths}`): folders of a job's workspace kept between runs,
 * under STATE/cache/jobs/<sha256 of the key>.tar (a tar made with libarchive: regular files,
 * folders, symlinks, modes and mtimes; no owners, devices or hard links outside the set).
 * A save writes a temporary file in the same folder, fsyncs it and renames it over the old
 * version, so a save killed halfway never damages the previous one, and two jobs saving the
 * same key at once leave one whole version (the last rename wins). Keys are any text (they may
 * hold user data): only their digest reaches the disk. Job caches count toward usage and prune
 * (least recently restored first) like build cache entries.
 */

/*
 * Save `paths` (relative to `workspace`: files or folders, already expanded from globs by the
 * caller; a missing path is skipped) under `key`. Symlinks are stored as symlinks, never
 * followed; a path that leaves the workspace ("..", absolute, through a symlink) is refused.
 * *out_bytes (may be NULL) gets the archive's size.
 */
int sw_cache_job_save(uint64_t *out_bytes, sw_cache *c, const char *key, const char *workspace,
                      const char *const *paths, size_t n_paths, sw_error **err) SW_WUR;
/*
 * Restore the cache `key` into `workspace` (files are replaced; nothing outside the workspace is
 * ever written: the archive goes through the safe layer applier). *hit says whether there was
 * one; a miss is not an error. A damaged archive is removed and reported as a miss with a
 * warning in *warning (caller frees; may be NULL).
 */
int sw_cache_job_restore(bool *hit, char **warning, sw_cache *c, const char *key,
                         const char *workspace, sw_error **err) SW_WUR;

#endif
