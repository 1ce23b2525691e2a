/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Usage and garbage collection of the build cache. Usage is the layer blobs the index refers to
 * (sizes from their descriptors, each blob once) plus the unpacked snapshots (sizes on disk,
 * measured once). Prune walks entries and snapshots together, least recently used first, until
 * usage is at most the bytes to keep: an entry goes with its blob unless an image in the store
 * (any entry of its index.json, followed through indexes and manifests) or a remaining entry
 * still uses it, and with its snapshot unless a remaining entry or an image in the store has
 * that layer. Snapshots nobody's entry refers to (base image layers) go by their own last use.
 * Pipeline job caches (jobs/<hex>.tar, see jobcache.c) count by their file size and go by their
 * mtime (their last save or restore), in the same walk.
 * The locking that keeps running builds safe is described in cache.h.
 */
#include "cache/cache_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>

#define MAX_DOC_DEPTH 8

/* ---------------------------------------------------------------- what the store's images use */

typedef struct store_refs {
	sw_cache__strmap blobs; /* digests of manifests, configs, layers */
	sw_cache__strmap diffs; /* layer diff IDs */
} store_refs;

static void refs_add(store_refs *rf, sw_oci_store *s, const sw_oci_descriptor *d, int depth)
{
	if (sw_cache__strmap_add(&rf->blobs, d->digest.s, 1) > 1 || depth > MAX_DOC_DEPTH)
		return;
	const char *mt = d->media_type;
	if (!mt || !(sw_oci_media_type_is_index(mt) || sw_oci_media_type_is_manifest(mt)))
		return;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	/* an image partly in the store (an index's other platforms) just refers to less */
	if (sw_oci_store_read_blob(&buf, &len, s, &d->digest, SW_OCI_MAX_MANIFEST_BYTES, &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "cache: gc: %s: %s", d->digest.s, sw_error_msg(e));
		sw_error_free(e);
		return;
	}
	if (sw_oci_media_type_is_index(mt)) {
		sw_oci_index ix;
		if (sw_oci_index_parse(&ix, buf, len, NULL, &e) < 0) {
			SW_LOG(SW_LOG_DEBUG, "cache: gc: %s: %s", d->digest.s, sw_error_msg(e));
			sw_error_free(e);
			return;
		}
		for (size_t i = 0; i < ix.n_manifests; i++)
			refs_add(rf, s, &ix.manifests[i], depth + 1);
		sw_oci_index_clear(&ix);
		return;
	}
	sw_oci_manifest m;
	if (sw_oci_manifest_parse(&m, buf, len, NULL, &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "cache: gc: %s: %s", d->digest.s, sw_error_msg(e));
		sw_error_free(e);
		return;
	}
	sw_cache__strmap_add(&rf->blobs, m.config.digest.s, 1);
	for (size_t i = 0; i < m.n_layers; i++)
		sw_cache__strmap_add(&rf->blobs, m.layers[i].digest.s, 1);
	cleanup_free char *cbuf = NULL;
	size_t clen = 0;
	sw_oci_config cfg;
	if (sw_oci_store_read_blob(&cbuf, &clen, s, &m.config.digest, SW_OCI_MAX_CONFIG_BYTES,
	                           &e) == 0 &&
	    sw_oci_config_parse(&cfg, cbuf, clen, &e) == 0) {
		for (size_t i = 0; i < cfg.n_diff_ids; i++)
			sw_cache__strmap_add(&rf->diffs, cfg.diff_ids[i].s, 1);
		sw_oci_config_clear(&cfg);
	} else {
		SW_LOG(SW_LOG_DEBUG, "cache: gc: config of %s: %s", d->digest.s, sw_error_msg(e));
		sw_error_free(e);
	}
	sw_oci_manifest_clear(&m);
}

static int refs_collect(store_refs *rf, sw_oci_store *s, sw_error **err)
{
	sw_oci_index ix;
	if (sw_oci_store_list(&ix, s, err) < 0)
		return sw_error_wrap(err, "read the images of the store");
	for (size_t i = 0; i < ix.n_manifests; i++)
		refs_add(rf, s, &ix.manifests[i], 0);
	sw_oci_index_clear(&ix);
	return 0;
}

static void refs_free(store_refs *rf)
{
	sw_cache__strmap_free(&rf->blobs);
	sw_cache__strmap_free(&rf->diffs);
}

/* ---------------------------------------------------------------- gathering the cache */

typedef struct snap {
	char hex[65];
	uint64_t size;
	int64_t used; /* mtime of its size file */
	bool removed;
	bool deferred; /* its turn came while an entry still referred to it */
} snap;

typedef struct jobc {
	char name[70]; /* "<hex>.tar" */
	uint64_t size;
	int64_t used; /* mtime: last save or restore */
} jobc;

typedef struct gather {
	sw_cache_entry *entries;
	size_t n_entries;
	snap *snaps;
	size_t n_snaps;
	char **orphan_infos;         /* size files without a snapshot folder */
	sw_cache__strmap blob_refs;  /* blob digest -> entries referring to it */
	sw_cache__strmap blob_size;  /* blob digest -> bytes, for blobs present in the store */
	sw_cache__strmap diff_refs;  /* diff ID hex -> entries referring to it */
	sw_cache__strmap snap_index; /* diff ID hex -> index in snaps + 1 */
	uint64_t blob_bytes;
	uint64_t snapshot_bytes;
	uint64_t live_entries;
	jobc *jobs;
	size_t n_jobs;
	uint64_t job_bytes;
} gather;

static void gather_free(gather *g)
{
	sw_cache_entries_free(g->entries, g->n_entries);
	free(g->snaps);
	free(g->jobs);
	sw_strv_free(g->orphan_infos);
	sw_cache__strmap_free(&g->blob_refs);
	sw_cache__strmap_free(&g->blob_size);
	sw_cache__strmap_free(&g->diff_refs);
	sw_cache__strmap_free(&g->snap_index);
	memset(g, 0, sizeof(*g));
}

static int scan_snapshots(gather *g, sw_cache *c, sw_error **err)
{
	DIR *d = opendir(c->snapshots);
	if (!d)
		return sw_error_os(err, errno, "read the snapshots '%s'", c->snapshots);
	size_t cap = 0;
	int r = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (sw_cache__is_hex_name(de->d_name, ".info")) {
			char hex[65];
			memcpy(hex, de->d_name, 64);
			hex[64] = '\0';
			if (fstatat(dirfd(d), hex, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
				sw_strv_push(&g->orphan_infos, de->d_name);
			continue;
		}
		if (!sw_cache__is_hex_name(de->d_name, ""))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		snap s = { 0 };
		memcpy(s.hex, de->d_name, 65);
		if ((r = sw_cache__snapshot_size(&s.size, c, s.hex, err)) < 0)
			break;
		cleanup_free char *info = sw_xasprintf("%s.info", s.hex);
		s.used = fstatat(dirfd(d), info, &st, 0) == 0 ? (int64_t)st.st_mtime : 0;
		if (g->n_snaps == cap) {
			cap = cap ? cap * 2 : 16;
			g->snaps = sw_xrealloc(g->snaps, cap * sizeof(*g->snaps));
		}
		g->snaps[g->n_snaps++] = s;
		sw_cache__strmap_add(&g->snap_index, s.hex, (int64_t)g->n_snaps);
		g->snapshot_bytes += s.size;
	}
	closedir(d);
	return r;
}

/* The job caches in STATE/cache/jobs (absent until the first save). */
static void scan_jobs(gather *g, sw_cache *c)
{
	cleanup_free char *dir = sw_path_join(c->root, "jobs");
	DIR *d = opendir(dir);
	if (!d)
		return;
	size_t cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (!sw_cache__is_hex_name(de->d_name, ".tar") ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (g->n_jobs == cap) {
			cap = cap ? cap * 2 : 16;
			g->jobs = sw_xrealloc(g->jobs, cap * sizeof(*g->jobs));
		}
		jobc *j = &g->jobs[g->n_jobs++];
		memcpy(j->name, de->d_name, 68); /* 64 hex digits and ".tar" */
		j->name[68] = '\0';
		j->size = (uint64_t)st.st_size;
		j->used = (int64_t)st.st_mtime;
		g->job_bytes += j->size;
	}
	closedir(d);
}

static int gather_all(gather *g, sw_cache *c, sw_error **err)
{
	memset(g, 0, sizeof(*g));
	int r = sw_cache_list(&g->entries, &g->n_entries, c, err);
	if (r < 0)
		return r;
	g->live_entries = g->n_entries;
	for (size_t i = 0; i < g->n_entries; i++) {
		const sw_cache_entry *e = &g->entries[i];
		sw_cache__strmap_add(&g->diff_refs, sw_oci_digest_hex(&e->diff_id), 1);
		if (sw_cache__strmap_add(&g->blob_refs, e->blob.digest.s, 1) > 1)
			continue;
		if (sw_oci_store_has_blob(c->store, &e->blob.digest)) {
			sw_cache__strmap_add(&g->blob_size, e->blob.digest.s, e->blob.size);
			g->blob_bytes += (uint64_t)e->blob.size;
		}
	}
	scan_jobs(g, c);
	return scan_snapshots(g, c, err);
}

int sw_cache_usage_get(sw_cache_usage *out, sw_cache *c, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	gather g;
	int r = gather_all(&g, c, err);
	if (r == 0) {
		out->entries = g.live_entries;
		out->blob_bytes = g.blob_bytes;
		out->snapshot_bytes = g.snapshot_bytes;
		out->job_caches = g.n_jobs;
		out->job_cache_bytes = g.job_bytes;
	}
	gather_free(&g);
	if (r < 0)
		return sw_error_wrap(err, "cache usage");
	return 0;
}

/* ---------------------------------------------------------------- prune */

typedef struct pruner {
	sw_cache *c;
	gather g;
	store_refs refs;
	sw_cache_prune_stats *st;
	bool exclusive;
	int64_t keep_since; /* entries used at or after this stay (a running build's) */
	char *trash;        /* a scratch folder the removed snapshots are moved into */
	sw_cache_prune_cb cb;
	void *payload;
} pruner;

/* The opening time of the oldest live handle other than ours; 0 when none can be found (keep
 * everything then: somebody holds the lock without saying since when). */
static int64_t oldest_other_lease(sw_cache *c)
{
	DIR *d = opendir(c->leases);
	if (!d)
		return 0;
	const char *own = strrchr(c->lease_path, '/') + 1;
	int64_t oldest = INT64_MAX;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' || strcmp(de->d_name, own) == 0)
			continue;
		int alive = sw_cache__owner_alive(de->d_name);
		if (alive == 0) {
			(void)unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (alive < 0)
			continue;
		cleanup_free char *p = sw_path_join(c->leases, de->d_name);
		cleanup_free char *buf = NULL;
		int64_t t = 0;
		if (sw_fs_read_file(&buf, NULL, p, 64, NULL) == 0)
			t = strtoll(buf, NULL, 10);
		struct stat st;
		if (t <= 0 && stat(p, &st) == 0)
			t = (int64_t)st.st_mtime;
		if (t > 0 && t < oldest)
			oldest = t;
	}
	closedir(d);
	return oldest == INT64_MAX ? 0 : oldest;
}

static uint64_t usage_total(const gather *g)
{
	return g->blob_bytes + g->snapshot_bytes + g->job_bytes;
}

static void remove_snapshot(pruner *p, snap *s)
{
	if (s->removed)
		return;
	cleanup_free char *diff = sw_xasprintf("sha256:%s", s->hex);
	if (sw_cache__strmap_has(&p->refs.diffs, diff))
		return; /* a layer of an image in the store */
	if (!p->exclusive) {
		p->st->snapshots_kept++;
		return;
	}
	sw_error *e = NULL;
	if (!p->trash && sw_cache_scratch_dir(&p->trash, p->c, "trash-", &e) < 0) {
		SW_LOG(SW_LOG_DEBUG, "cache: prune: %s", sw_error_msg(e));
		sw_error_free(e);
		return;
	}
	cleanup_free char *src = sw_path_join(p->c->snapshots, s->hex);
	cleanup_free char *dst = sw_path_join(p->trash, s->hex);
	if (rename(src, dst) < 0) {
		SW_LOG(SW_LOG_DEBUG, "cache: prune: move snapshot '%s' away: %s", src,
		       strerror(errno));
		return;
	}
	cleanup_free char *info = sw_xasprintf("%s/%s.info", p->c->snapshots, s->hex);
	(void)unlink(info);
	s->removed = true;
	p->g.snapshot_bytes -= s->size;
	p->st->snapshots_removed++;
	p->st->bytes_freed += s->size;
	if (p->cb)
		p->cb("snapshot", diff, NULL, s->size, p->payload);
}

/* Whether the blob may be deleted: not used by an image in the store, and (while builds run)
 * not written since the oldest of them started (it may be one of their new layers). */
static bool blob_deletable(pruner *p, const sw_digest *d, const char *path)
{
	if (sw_cache__strmap_has(&p->refs.blobs, d->s))
		return false;
	if (p->exclusive)
		return true;
	struct stat st;
	return stat(path, &st) == 0 && (int64_t)st.st_mtime < p->keep_since;
}

static int remove_entry(pruner *p, sw_cache_entry *e, sw_error **err)
{
	cleanup_free char *path = sw_cache__entry_path(p->c, e->key);
	if (path && unlink(path) < 0 && errno != ENOENT)
		return sw_error_os(err, errno, "remove cache entry '%s'", path);
	p->g.live_entries--;
	p->st->entries_removed++;
	if (p->cb)
		p->cb("entry", e->key, e->created_by, 0, p->payload);
	const char *bd = e->blob.digest.s;
	if (sw_cache__strmap_add(&p->g.blob_refs, bd, -1) == 0 &&
	    sw_cache__strmap_has(&p->g.blob_size, bd)) {
		uint64_t size = (uint64_t)sw_cache__strmap_get(&p->g.blob_size, bd);
		p->g.blob_bytes -= size;
		cleanup_free char *bpath = sw_oci_store_blob_path(p->c->store, &e->blob.digest);
		if (blob_deletable(p, &e->blob.digest, bpath)) {
			if (unlink(bpath) < 0 && errno != ENOENT)
				return sw_error_os(err, errno, "remove blob '%s'", bpath);
			p->st->blobs_removed++;
			p->st->bytes_freed += size;
			if (p->cb)
				p->cb("blob", bd, NULL, size, p->payload);
		}
	}
	const char *hex = sw_oci_digest_hex(&e->diff_id);
	if (sw_cache__strmap_add(&p->g.diff_refs, hex, -1) == 0) {
		int64_t si = sw_cache__strmap_get(&p->g.snap_index, hex);
		if (si > 0 && p->g.snaps[si - 1].deferred)
			remove_snapshot(p, &p->g.snaps[si - 1]);
	}
	return 0;
}

static void remove_job(pruner *p, jobc *j)
{
	cleanup_free char *path = sw_xasprintf("%s/jobs/%s", p->c->root, j->name);
	if (unlink(path) < 0) {
		SW_LOG(SW_LOG_DEBUG, "cache: prune: remove '%s': %s", path, strerror(errno));
		return;
	}
	p->g.job_bytes -= j->size;
	p->st->job_caches_removed++;
	p->st->bytes_freed += j->size;
	if (p->cb) {
		cleanup_free char *name = sw_xasprintf("sha256:%.64s", j->name);
		p->cb("job-cache", name, NULL, j->size, p->payload);
	}
}

enum { ITEM_ENTRY, ITEM_JOB, ITEM_SNAPSHOT };

typedef struct item {
	int64_t time;
	int kind; /* ITEM_*: the order of a tie */
	size_t idx;
} item;

static int item_cmp(const void *pa, const void *pb)
{
	const item *a = pa, *b = pb;
	if (a->time != b->time)
		return a->time < b->time ? -1 : 1;
	/* an entry before a snapshot of the same second: the entry may free it */
	if (a->kind != b->kind)
		return a->kind > b->kind ? 1 : -1;
	return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int prune_walk(pruner *p, uint64_t keep_bytes, sw_error **err)
{
	gather *g = &p->g;
	size_t n = g->n_entries + g->n_snaps + g->n_jobs;
	cleanup_free item *items = sw_xcalloc(n ? n : 1, sizeof(*items));
	for (size_t i = 0; i < g->n_entries; i++)
		items[i] = (item){ g->entries[i].last_used, ITEM_ENTRY, i };
	for (size_t i = 0; i < g->n_snaps; i++)
		items[g->n_entries + i] = (item){ g->snaps[i].used, ITEM_SNAPSHOT, i };
	for (size_t i = 0; i < g->n_jobs; i++)
		items[g->n_entries + g->n_snaps + i] = (item){ g->jobs[i].used, ITEM_JOB, i };
	qsort(items, n, sizeof(*items), item_cmp);
	for (size_t k = 0; k < n && usage_total(g) > keep_bytes; k++) {
		const item *it = &items[k];
		if (it->kind == ITEM_JOB) {
			/* a running pipeline's restore or save keeps it (as entries are kept) */
			if (g->jobs[it->idx].used < p->keep_since)
				remove_job(p, &g->jobs[it->idx]);
			continue;
		}
		if (it->kind == ITEM_SNAPSHOT) {
			snap *s = &g->snaps[it->idx];
			if (sw_cache__strmap_get(&g->diff_refs, s->hex) > 0)
				s->deferred = true;
			else
				remove_snapshot(p, s);
			continue;
		}
		sw_cache_entry *e = &g->entries[it->idx];
		if (e->last_used >= p->keep_since)
			continue; /* possibly in use by a running build */
		int r = remove_entry(p, e, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static void lock_op(int fd, int op)
{
	while (flock(fd, op) < 0 && errno == EINTR)
		;
}

int sw_cache_prune_report(sw_cache_prune_stats *out, sw_cache *c, uint64_t keep_bytes,
                          sw_cache_prune_cb cb, void *payload, sw_error **err)
{
	sw_cache_prune_stats st_local;
	sw_cache_prune_stats *st = out ? out : &st_local;
	memset(st, 0, sizeof(*st));
	pruner p = { .c = c, .st = st, .cb = cb, .payload = payload };
	int r;

	/* Turn our shared lock exclusive if no other handle is open. A failed conversion
	 * drops the shared lock (flock(2)), so take it again. */
	if (flock(c->lock_fd, LOCK_EX | LOCK_NB) == 0) {
		p.exclusive = true;
		p.keep_since = INT64_MAX;
	} else if (errno == EWOULDBLOCK || errno == EINTR) {
		lock_op(c->lock_fd, LOCK_SH);
		st->busy = true;
		p.keep_since = oldest_other_lease(c);
	} else {
		return sw_error_os(err, errno, "prune: lock the cache '%s'", c->root);
	}
	pthread_mutex_lock(&c->index_mu);
	lock_op(c->index_lock_fd, LOCK_EX);
	r = gather_all(&p.g, c, err);
	if (r == 0)
		r = refs_collect(&p.refs, c->store, err);
	if (r == 0)
		r = prune_walk(&p, keep_bytes, err);
	if (r == 0 && p.exclusive) {
		for (char **o = p.g.orphan_infos; o && *o; o++) {
			cleanup_free char *path = sw_path_join(c->snapshots, *o);
			(void)unlink(path);
		}
	}
	lock_op(c->index_lock_fd, c->index_holds ? LOCK_SH : LOCK_UN);
	pthread_mutex_unlock(&c->index_mu);
	if (p.exclusive)
		lock_op(c->lock_fd, LOCK_SH);
	if (p.trash) {
		/* outside the locks: builds may start while the bytes are being freed */
		sw_error *e = NULL;
		if (sw_fs_rm_rf(p.trash, &e) < 0)
			SW_LOG(SW_LOG_DEBUG, "cache: prune: %s", sw_error_msg(e));
		sw_error_free(e);
		free(p.trash);
	}
	st->after.entries = p.g.live_entries;
	st->after.blob_bytes = p.g.blob_bytes;
	st->after.snapshot_bytes = p.g.snapshot_bytes;
	st->after.job_caches = p.g.n_jobs - st->job_caches_removed;
	st->after.job_cache_bytes = p.g.job_bytes;
	gather_free(&p.g);
	refs_free(&p.refs);
	if (r < 0)
		return sw_error_wrap(err, "prune the build cache");
	return 0;
}

int sw_cache_prune(sw_cache_prune_stats *out, sw_cache *c, uint64_t keep_bytes, sw_error **err)
{
	return sw_cache_prune_report(out, c, keep_bytes, NULL, NULL, err);
}

int sw_cache_enforce_cap(sw_cache *c, uint64_t cap_bytes, sw_error **err)
{
	if (cap_bytes == 0)
		return 0;
	sw_cache_usage u;
	int r = sw_cache_usage_get(&u, c, err);
	if (r < 0)
		return r;
	if (u.blob_bytes + u.snapshot_bytes + u.job_cache_bytes <= cap_bytes)
		return 0;
	uint64_t keep = cap_bytes - cap_bytes / 5;
	sw_cache_prune_stats st;
	if ((r = sw_cache_prune(&st, c, keep, err)) < 0)
		return sw_error_wrap(err, "keep the build cache under %llu bytes",
		                     (unsigned long long)cap_bytes);
	SW_LOG(SW_LOG_DEBUG,
	       "cache: over its cap of %llu bytes: removed %llu entries, %llu blobs, %llu "
	       "snapshots, %llu bytes freed%s",
	       (unsigned long long)cap_bytes, (unsigned long long)st.entries_removed,
	       (unsigned long long)st.blobs_removed, (unsigned long long)st.snapshots_removed,
	       (unsigned long long)st.bytes_freed,
	       st.busy ? " (other builds running: snapshots kept)" : "");
	return 0;
}
