/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cache internals: the handle and the helpers shared between the files of the cache module
 * (sw_cache__ prefix): owner tags that name the process owning a scratch folder or a lease, the
 * snapshot size files, and a small set of strings. Not for other modules.
 */
#ifndef SW_CACHE_INTERNAL_H
#define SW_CACHE_INTERNAL_H

#include "cache/cache.h"

#include <pthread.h>
#include <sys/stat.h>

struct sw_cache {
	char *root;      /* STATE/cache */
	char *snapshots; /* STATE/cache/snapshots */
	char *index;     /* STATE/cache/index */
	char *tmp;       /* STATE/cache/tmp */
	char *leases;    /* STATE/cache/leases */
	sw_oci_store *store;
	int lock_fd;       /* STATE/cache/lock: LOCK_SH for the handle's lifetime */
	int index_lock_fd; /* STATE/cache/index.lock: SH around lookups and puts, EX in prune */
	pthread_mutex_t index_mu; /* threads of one handle share index_lock_fd's lock: */
	unsigned index_holds;     /* it is taken by the first and dropped by the last */
	char *lease_path;         /* STATE/cache/leases/<owner>.XXXXXX, this handle's */
	int64_t opened;           /* unix seconds */
	pid_t pid;                /* the process that opened the handle */
};

/* An owner tag "<pid>-<start time in clock ticks since boot>" of the calling process; names
 * made with it survive pid reuse. buf must hold SW_CACHE__OWNER_MAX bytes. */
#define SW_CACHE__OWNER_MAX 48
void sw_cache__owner_tag(char *buf);
/* Whether the owner tag at the start of `name` (up to the first '.') names a live process.
 * Returns 1 alive, 0 dead, -1 when `name` does not start with an owner tag. */
int sw_cache__owner_alive(const char *name);

/* Hold or release the index lock shared (counted across the handle's threads). */
void sw_cache__index_hold(sw_cache *c);
void sw_cache__index_release(sw_cache *c);

/* ---------------------------------------------------------------- snapshots (snapshot.c) */

/* Bytes a folder tree takes on disk (st_blocks * 512, each hard-linked inode once). */
int sw_cache__du(uint64_t *out, const char *path, sw_error **err) SW_WUR;
/* The size of snapshot `hex` from its size file, measured (and the file written) when missing
 * or unreadable. */
int sw_cache__snapshot_size(uint64_t *out, sw_cache *c, const char *hex, sw_error **err) SW_WUR;
/* Whether `name` is 64 lowercase hex digits followed by `suffix` ("" for none). */
bool sw_cache__is_hex_name(const char *name, const char *suffix);

/* ---------------------------------------------------------------- index (index.c) */

/* Parse one entry file's text; SW_ERR_INVALID when it is not one. */
int sw_cache__entry_parse(sw_cache_entry *out, const char *buf, size_t len, sw_error **err) SW_WUR;
/* Sort entries most recently used first (ties: newer creation first, then by key). */
void sw_cache__entries_sort(sw_cache_entry *v, size_t n);
/* The path of the entry file for a key "sha256:<hex>" (caller frees), NULL when the key is not
 * a valid digest. */
char *sw_cache__entry_path(sw_cache *c, const char *key);

/* ---------------------------------------------------------------- a string-keyed counter */

typedef struct sw_cache__strmap {
	char **keys;
	int64_t *vals;
	size_t cap; /* power of two, or 0 */
	size_t n;
} sw_cache__strmap;

/* Add `delta` to the value of key (created at 0); returns the new value. */
int64_t sw_cache__strmap_add(sw_cache__strmap *m, const char *key, int64_t delta);
/* The value of key, 0 when absent. */
int64_t sw_cache__strmap_get(const sw_cache__strmap *m, const char *key);
bool sw_cache__strmap_has(const sw_cache__strmap *m, const char *key);
void sw_cache__strmap_free(sw_cache__strmap *m);

#endif
