/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to the build engine's files (engine.c, engine_exec.c, engine_regcache.c): the state
 * of one running build (store, cache, plan, per-stage layers and history, the mounts and
 * scratch folders it must remove, registry clients) and the helpers the files share.
 */
#ifndef SW_BUILDER_ENGINE_INTERNAL_H
#define SW_BUILDER_ENGINE_INTERNAL_H

#include "builder/builder_internal.h"
#include "cache/cache.h"
#include "executor/executor.h"

#include <pthread.h>

#define SW_BUILD__CACHE_CONFIG_MT "application/vnd.slipway.cache.config.v1+json"

/* One layer of a stage's root filesystem, bottom first. */
typedef struct sw_build__layer {
	sw_oci_descriptor blob;
	sw_digest diff_id;
	char *snapshot; /* unpacked snapshot folder, once needed */
} sw_build__layer;

/* What became of one step. */
typedef struct sw_build__step_rt {
	bool hit;    /* found in the cache (local or registry) */
	bool remote; /* found in the registry cache */
	bool have;   /* entry is valid (hit or executed) */
	bool empty;  /* the layer has no entries: left out of the image */
	sw_cache_entry entry;
} sw_build__step_rt;

/* A stage's (or an image's) root filesystem as it is built. */
typedef struct sw_build__rt {
	sw_build__layer *layers;
	size_t n_layers;
	sw_oci_history *history;
	size_t n_history;
	sw_build__step_rt *steps;
	size_t n_steps;
	bool need; /* must be materialised */
	bool done;
	char *view;         /* read-only mounted view for --from and bind mounts, or NULL */
	char *last_created; /* the time of the newest history entry so far */
	int next_no;        /* the progress number of the stage's next step */
} sw_build__rt;

typedef struct sw_build__reg {
	char *host;
	sw_oci_registry *r;
} sw_build__reg;

typedef struct sw_build__dl {
	char *url;
	char *name; /* file name in download_dir */
	sw_digest digest;
} sw_build__dl;

typedef struct sw_build__ctx {
	const sw_build_opts *o;
	char *state_dir;
	int64_t sde;   /* SOURCE_DATE_EPOCH or -1 */
	char *created; /* SOURCE_DATE_EPOCH as RFC 3339 text, or NULL (then the times of the
	                * cache entries make the history, so a cached rebuild is the same image) */
	sw_digest empty_diff;
	sw_oci_store *store;
	sw_cache *cache;
	sw_dockerfile *df;
	sw_dockerignore *di;
	bool has_ignore_file;
	sw_build__context *ctx;
	sw_build__plan *plan;
	sw_build__rt *srt; /* per stage */
	sw_build__rt *irt; /* per image of the plan */
	size_t n_irt;
	char **mounts;  /* overlay mounts to remove */
	char **scratch; /* scratch folders to remove */
	sw_build__reg *regs;
	size_t n_regs;
	sw_build__dl *downloads;
	size_t n_downloads;
	char *download_dir;
	pthread_mutex_t mu;      /* the lists and counters below (stages run in threads) */
	pthread_mutex_t ev_mu;   /* one event at a time to the caller */
	pthread_mutex_t view_mu; /* mounting views */
	int n_steps;
	unsigned steps;
	unsigned cached_steps;
} sw_build__ctx;

int64_t sw_build__now_ms(void);
void sw_build__emit(sw_build__ctx *b, sw_build_event_kind kind, int step, const char *stage,
                    const char *title, bool cached, bool failed, int code, int64_t ms,
                    const char *text, size_t len);
void sw_build__log(sw_build__ctx *b, const char *fmt, ...) SW_PRINTF(2, 3);
bool sw_build__cancelled(sw_build__ctx *b);

/* Scratch folders (from the cache, removed at the end) and overlay mounts (unmounted). */
int sw_build__scratch(char **out, sw_build__ctx *b, const char *prefix, sw_error **err) SW_WUR;
void sw_build__scratch_forget(sw_build__ctx *b, const char *path);
void sw_build__scratch_remove(sw_build__ctx *b, const char *path);
int sw_build__overlay(char **out, sw_build__ctx *b, const char *const *lowers, size_t n_lower,
                      const char *upper, sw_error **err) SW_WUR;
int sw_build__overlay_drop(sw_build__ctx *b, const char *mp, sw_error **err) SW_WUR;

int sw_build__registry(sw_oci_registry **out, sw_build__ctx *b, const char *host,
                       sw_error **err) SW_WUR;
/* A reference with or without "docker://". */
int sw_build__ref_parse(sw_oci_ref *out, const char *s, sw_error **err) SW_WUR;

bool sw_build__diff_is_empty(sw_build__ctx *b, const sw_digest *d);
int sw_build__layer_snapshot(sw_build__ctx *b, sw_build__layer *l, sw_error **err) SW_WUR;
/* Snapshot folders of rt's layers, top first (NULL-terminated, caller frees). */
int sw_build__lowers(char ***out, sw_build__ctx *b, sw_build__rt *rt, sw_error **err) SW_WUR;
/* The mounted read-only view of a stage (kind SRC_STAGE) or image (SRC_IMAGE). */
int sw_build__view(char **out, sw_build__ctx *b, sw_build__src_kind kind, int idx,
                   sw_error **err) SW_WUR;
/* Write the layer of `upper`, adopt it as a snapshot, record the cache entry in sr. */
int sw_build__commit(sw_build__ctx *b, sw_build__step_rt *sr, const sw_build__step *s,
                     const char *upper, sw_error **err) SW_WUR;

/* engine_exec.c: executing one missing step of stage `si`, step `ki`. */
int sw_build__exec_run(int *code, sw_build__ctx *b, int si, size_t ki, int step_no,
                       sw_error **err) SW_WUR;
int sw_build__exec_copy(sw_build__ctx *b, int si, size_t ki, sw_error **err) SW_WUR;
int sw_build__exec_workdir(sw_build__ctx *b, int si, size_t ki, sw_error **err) SW_WUR;

/* engine_regcache.c: the registry cache (one small image per key, tagged with the key). */
int sw_build__regcache_probe(bool *hit, sw_build__ctx *b, sw_build__step_rt *sr,
                             const sw_build__step *s, sw_error **err) SW_WUR;
int sw_build__regcache_export(sw_build__ctx *b, sw_error **err) SW_WUR;

#endif
