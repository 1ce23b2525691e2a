/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build engine: sw_build_run. It sweeps what a killed build left, reads the Dockerfile and
 * .dockerignore, opens the context, store and cache, makes the plan (every key computed before
 * anything runs), probes the local cache and the registry cache for every layer step, works
 * out which stages must really run, then executes the missing steps (RUN in a container over
 * overlayfs, COPY/ADD/WORKDIR on a host-side overlay mount), writes their layers from the
 * overlay upper folders, records them in the cache, and assembles the image: config, manifest,
 * tags, an OCI layout output, pushes and the registry cache export. Every mount and scratch
 * folder it makes is removed on success, failure and cancel.
 */
#include "builder/builder_internal.h"
#include "builder/engine_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <dirent.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

/* ---------------------------------------------------------------- small helpers */

int64_t sw_build__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void strv_remove(char **v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++) {
		if (strcmp(v[i], s) == 0) {
			free(v[i]);
			for (size_t k = i; v[k]; k++)
				v[k] = v[k + 1];
			return;
		}
	}
}

/* ---------------------------------------------------------------- events */

void sw_build__emit(sw_build__ctx *b, sw_build_event_kind kind, int step, const char *stage,
                    const char *title, bool cached, bool failed, int code, int64_t ms,
                    const char *text, size_t len)
{
	if (!b->o->on_event)
		return;
	sw_build_event ev;
	memset(&ev, 0, sizeof(ev));
	ev.kind = kind;
	ev.step = step;
	ev.n_steps = b->n_steps;
	ev.stage = stage;
	ev.title = title;
	ev.cached = cached;
	ev.failed = failed;
	ev.code = code;
	ev.elapsed_ms = ms;
	ev.text = text;
	ev.len = len;
	pthread_mutex_lock(&b->ev_mu);
	b->o->on_event(&ev, b->o->payload);
	pthread_mutex_unlock(&b->ev_mu);
}

void sw_build__log(sw_build__ctx *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	SW_LOG(SW_LOG_DEBUG, "build: %s", m);
	sw_build__emit(b, SW_BUILD_EV_LOG, 0, NULL, NULL, false, false, 0, 0, m, strlen(m));
}

bool sw_build__cancelled(sw_build__ctx *b)
{
	return b->o->cancel && *b->o->cancel;
}

/* ---------------------------------------------------------------- tracked resources */

int sw_build__scratch(char **out, sw_build__ctx *b, const char *prefix, sw_error **err)
{
	if (sw_cache_scratch_dir(out, b->cache, prefix, err) < 0)
		return sw_error_code_of(*err);
	pthread_mutex_lock(&b->mu);
	sw_strv_push(&b->scratch, *out);
	pthread_mutex_unlock(&b->mu);
	return 0;
}

void sw_build__scratch_forget(sw_build__ctx *b, const char *path)
{
	pthread_mutex_lock(&b->mu);
	strv_remove(b->scratch, path);
	pthread_mutex_unlock(&b->mu);
}

void sw_build__scratch_remove(sw_build__ctx *b, const char *path)
{
	sw_error *e = NULL;
	if (sw_fs_rm_rf(path, &e) < 0) {
		SW_LOG(SW_LOG_WARN, "build: remove %s: %s", path, sw_error_msg(e));
		sw_error_free(e);
	}
	sw_build__scratch_forget(b, path);
}

int sw_build__overlay(char **out, sw_build__ctx *b, const char *const *lowers, size_t n_lower,
                      const char *upper, sw_error **err)
{
	if (sw_exec_overlay_mount(out, b->state_dir, lowers, n_lower, upper, err) < 0)
		return sw_error_code_of(*err);
	pthread_mutex_lock(&b->mu);
	sw_strv_push(&b->mounts, *out);
	pthread_mutex_unlock(&b->mu);
	return 0;
}

int sw_build__overlay_drop(sw_build__ctx *b, const char *mp, sw_error **err)
{
	cleanup_free char *copy = sw_xstrdup(mp);
	pthread_mutex_lock(&b->mu);
	strv_remove(b->mounts, copy);
	pthread_mutex_unlock(&b->mu);
	return sw_exec_overlay_unmount(copy, err);
}

/* ---------------------------------------------------------------- registries */

int sw_build__registry(sw_oci_registry **out, sw_build__ctx *b, const char *host, sw_error **err)
{
	for (size_t i = 0; i < b->n_regs; i++) {
		if (strcmp(b->regs[i].host, host) == 0) {
			*out = b->regs[i].r;
			return 0;
		}
	}
	static const sw_oci_registry_opts none;
	sw_oci_registry *r = NULL;
	if (sw_oci_registry_new(&r, host, b->o->registry ? b->o->registry : &none, err) < 0)
		return sw_error_code_of(*err);
	b->regs = sw_xrealloc(b->regs, (b->n_regs + 1) * sizeof(*b->regs));
	b->regs[b->n_regs].host = sw_xstrdup(host);
	b->regs[b->n_regs].r = r;
	b->n_regs++;
	*out = r;
	return 0;
}

int sw_build__ref_parse(sw_oci_ref *out, const char *s, sw_error **err)
{
	if (strncmp(s, "docker://", 9) == 0)
		s += 9;
	return sw_oci_ref_parse(out, s, err);
}

/* ---------------------------------------------------------------- plan hooks */

/* "name" has a tag or digest? ("host:5000/app" has neither) */
static bool has_tag(const char *name)
{
	if (strchr(name, '@'))
		return true;
	const char *slash = strrchr(name, '/');
	return strchr(slash ? slash : name, ':') != NULL;
}

static int hook_image(sw_build__image *img, void *payload, sw_error **err)
{
	sw_build__ctx *b = payload;
	cleanup_strv char **cands = NULL;
	sw_strv_push(&cands, img->name);
	if (!has_tag(img->name)) {
		cleanup_free char *t = sw_xasprintf("%s:latest", img->name);
		sw_strv_push(&cands, t);
	}
	const char *at = strchr(img->name, '@');
	if (at)
		sw_strv_push(&cands, at + 1);
	for (size_t i = 0; cands[i]; i++) {
		sw_error *e = NULL;
		if (sw_oci_store_load_image(&img->desc, &img->manifest, &img->config, b->store,
		                            cands[i], &img->platform, &e) == 0)
			return 0;
		if (sw_error_code_of(e) != SW_ERR_NOT_FOUND) {
			if (err && !*err)
				*err = e;
			else
				sw_error_free(e);
			return sw_error_wrap(err, "image '%s' in the local store", img->name);
		}
		sw_error_free(e);
	}
	/* not here: pull it */
	sw_oci_ref ref;
	if (sw_build__ref_parse(&ref, img->name, err) < 0)
		return sw_error_wrap(err, "image '%s' is not in the local store, and", img->name);
	cleanup_free char *rs = sw_oci_ref_str(&ref);
	sw_build__log(b, "pulling docker://%s", rs);
	sw_oci_registry *r = NULL;
	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	int rc = sw_build__registry(&r, b, ref.registry, err);
	if (rc == 0)
		rc = sw_oci_registry_pull(&desc, r, b->store, &ref, &img->platform, err);
	sw_oci_ref_clear(&ref);
	if (rc < 0)
		return sw_error_wrap(err,
		                     "image '%s' is not in the local store and could not be "
		                     "pulled",
		                     img->name);
	cleanup_free char *tag =
	        has_tag(img->name) ? sw_xstrdup(img->name) : sw_xasprintf("%s:latest", img->name);
	rc = sw_oci_store_tag(b->store, tag, &desc, err);
	sw_oci_descriptor_clear(&desc);
	if (rc < 0)
		return sw_error_wrap(err, "tag pulled image '%s'", img->name);
	if (sw_oci_store_load_image(&img->desc, &img->manifest, &img->config, b->store, tag,
	                            &img->platform, err) < 0)
		return sw_error_wrap(err, "load pulled image '%s'", img->name);
	img->pulled = true;
	return 0;
}

static int hook_context(sw_digest *out, char ***matched, char *const *srcs, void *payload,
                        sw_error **err)
{
	sw_build__ctx *b = payload;
	if (sw_build__context_match(matched, b->ctx, srcs, err) < 0)
		return sw_error_code_of(*err);
	return sw_build__context_digest(out, b->ctx, *matched, err);
}

static int hook_url(sw_digest *out, const char *url, const char *checksum, void *payload,
                    sw_error **err)
{
	sw_build__ctx *b = payload;
	for (size_t i = 0; i < b->n_downloads; i++) {
		if (strcmp(b->downloads[i].url, url) == 0) {
			*out = b->downloads[i].digest;
			return 0;
		}
	}
	if (!b->download_dir && sw_build__scratch(&b->download_dir, b, "download-", err) < 0)
		return sw_error_code_of(*err);
	sw_build__log(b, "downloading %s", url);
	cleanup_free char *path = NULL;
	if (sw_build__download(&path, url, checksum, b->download_dir, err) < 0)
		return sw_error_code_of(*err);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	char *one[] = { (char *)base, NULL };
	sw_digest d;
	if (sw_build__tree_digest(&d, b->download_dir, one, err) < 0)
		return sw_error_code_of(*err);
	b->downloads = sw_xrealloc(b->downloads, (b->n_downloads + 1) * sizeof(*b->downloads));
	b->downloads[b->n_downloads].url = sw_xstrdup(url);
	b->downloads[b->n_downloads].name = sw_xstrdup(base);
	b->downloads[b->n_downloads].digest = d;
	b->n_downloads++;
	*out = d;
	return 0;
}

static void hook_warn(const char *msg, void *payload)
{
	sw_build__log(payload, "%s", msg);
}

/* ---------------------------------------------------------------- layers */

static void layer_clear(sw_build__layer *l)
{
	sw_oci_descriptor_clear(&l->blob);
	free(l->snapshot);
	memset(l, 0, sizeof(*l));
}

static void layers_push(sw_build__rt *rt, const sw_oci_descriptor *blob, const sw_digest *diff_id)
{
	rt->layers = sw_xrealloc(rt->layers, (rt->n_layers + 1) * sizeof(*rt->layers));
	sw_build__layer *l = &rt->layers[rt->n_layers++];
	memset(l, 0, sizeof(*l));
	sw_oci_descriptor_copy(&l->blob, blob);
	l->diff_id = *diff_id;
}

static void history_push(sw_build__rt *rt, const char *created, const char *created_by,
                         const char *comment, bool empty)
{
	rt->history = sw_xrealloc(rt->history, (rt->n_history + 1) * sizeof(*rt->history));
	sw_oci_history *h = &rt->history[rt->n_history++];
	h->created = created ? sw_xstrdup(created) : NULL;
	h->created_by = created_by ? sw_xstrdup(created_by) : NULL;
	h->comment = comment ? sw_xstrdup(comment) : NULL;
	h->empty_layer = empty;
}

static void rt_clear(sw_build__rt *rt)
{
	for (size_t i = 0; i < rt->n_layers; i++)
		layer_clear(&rt->layers[i]);
	free(rt->layers);
	for (size_t i = 0; i < rt->n_history; i++) {
		free(rt->history[i].created);
		free(rt->history[i].created_by);
		free(rt->history[i].comment);
	}
	free(rt->history);
	for (size_t i = 0; rt->steps && i < rt->n_steps; i++)
		sw_cache_entry_clear(&rt->steps[i].entry);
	free(rt->steps);
	free(rt->view);
	free(rt->last_created);
	memset(rt, 0, sizeof(*rt));
}

bool sw_build__diff_is_empty(sw_build__ctx *b, const sw_digest *d)
{
	pthread_mutex_lock(&b->mu);
	bool r = sw_oci_digest_eq(d, &b->empty_diff);
	pthread_mutex_unlock(&b->mu);
	return r;
}

int sw_build__layer_snapshot(sw_build__ctx *b, sw_build__layer *l, sw_error **err)
{
	if (l->snapshot)
		return 0;
	if (sw_cache_snapshot_get(&l->snapshot, b->cache, &l->blob, &l->diff_id, err) < 0)
		return sw_error_wrap(err, "unpack layer %s", l->blob.digest.s);
	return 0;
}

int sw_build__lowers(char ***out, sw_build__ctx *b, sw_build__rt *rt, sw_error **err)
{
	*out = NULL;
	char **v = sw_xcalloc(rt->n_layers + 1, sizeof(char *));
	for (size_t i = 0; i < rt->n_layers; i++) {
		sw_build__layer *l = &rt->layers[rt->n_layers - 1 - i];
		if (sw_build__layer_snapshot(b, l, err) < 0) {
			sw_strv_free(v);
			return sw_error_code_of(*err);
		}
		v[i] = sw_xstrdup(l->snapshot);
	}
	*out = v;
	return 0;
}

/* A read-only view (mounted once per build) of a stage's or an image's root filesystem. */
int sw_build__view(char **out, sw_build__ctx *b, sw_build__src_kind kind, int idx, sw_error **err)
{
	sw_build__rt *rt = kind == SW_BUILD__SRC_STAGE ? &b->srt[idx] : &b->irt[idx];
	int rc = 0;
	pthread_mutex_lock(&b->view_mu);
	if (!rt->view) {
		cleanup_strv char **lowers = NULL;
		cleanup_free char *upper = NULL;
		if (sw_build__lowers(&lowers, b, rt, err) < 0 ||
		    sw_build__scratch(&upper, b, "view-", err) < 0 ||
		    sw_build__overlay(&rt->view, b, (const char *const *)lowers,
		                      sw_strv_len(lowers), upper, err) < 0)
			rc = sw_error_code_of(*err);
	}
	*out = rt->view;
	pthread_mutex_unlock(&b->view_mu);
	return rc;
}

/* The base image's layers (media types as they are in the store). */
static int image_layers(sw_build__rt *rt, const sw_build__image *im, sw_error **err)
{
	if (im->manifest.n_layers != im->config.n_diff_ids)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "image '%s': %zu layers but %zu diff ids in its config",
		                    im->name, im->manifest.n_layers, im->config.n_diff_ids);
	for (size_t i = 0; i < im->manifest.n_layers; i++)
		layers_push(rt, &im->manifest.layers[i], &im->config.diff_ids[i]);
	for (size_t i = 0; i < im->config.n_history; i++) {
		const sw_oci_history *h = &im->config.history[i];
		history_push(rt, h->created, h->created_by, h->comment, h->empty_layer);
	}
	return 0;
}

/* ---------------------------------------------------------------- committing a step */

int sw_build__commit(sw_build__ctx *b, sw_build__step_rt *sr, const sw_build__step *s,
                     const char *upper, sw_error **err)
{
	sw_oci_layer_opts lo;
	memset(&lo, 0, sizeof(lo));
	lo.compression = b->o->compression;
	lo.overlay_upper = true;
	lo.source_date_epoch = b->sde;
	sw_oci_layer_info info;
	memset(&info, 0, sizeof(info));
	if (sw_oci_layer_write_dir(&info, b->store, upper, &lo, err) < 0)
		return sw_error_wrap(err, "write the layer of %s", s->title);
	sw_cache_entry *e = &sr->entry;
	sw_cache_entry_clear(e);
	memset(e, 0, sizeof(*e));
	snprintf(e->key, sizeof(e->key), "%s", s->key);
	e->diff_id = info.diff_id;
	e->blob.media_type = sw_xstrdup(info.media_type);
	e->blob.digest = info.blob_digest;
	e->blob.size = info.blob_size;
	e->created_by = sw_xstrdup(s->created_by);
	e->created = time(NULL);
	e->last_used = e->created;
	sr->have = true;
	sr->empty = info.entries == 0;
	if (sr->empty) {
		pthread_mutex_lock(&b->mu);
		b->empty_diff = info.diff_id;
		pthread_mutex_unlock(&b->mu);
	}
	/* the upper folder becomes the layer's snapshot */
	cleanup_free char *up = sw_xstrdup(upper);
	sw_build__scratch_forget(b, up);
	if (sw_cache_snapshot_adopt(b->cache, up, &info.diff_id, err) < 0)
		return sw_error_wrap(err, "keep the snapshot of %s", s->title);
	if (sw_cache_put(b->cache, e, err) < 0)
		return sw_error_wrap(err, "record the cache entry of %s", s->title);
	return 0;
}

/* ---------------------------------------------------------------- probing */

static int probe_step(sw_build__ctx *b, sw_build__step_rt *sr, const sw_build__step *s,
                      sw_error **err)
{
	if (!b->o->no_cache) {
		sw_error *e = NULL;
		int rc = sw_cache_lookup(&sr->entry, b->cache, s->key, &e);
		if (rc == 0) {
			sr->have = sr->hit = true;
			sr->empty = sw_build__diff_is_empty(b, &sr->entry.diff_id);
			return 0;
		}
		if (sw_error_code_of(e) != SW_ERR_NOT_FOUND)
			sw_build__log(b, "warning: cache lookup of %s: %s", s->title,
			              sw_error_msg(e));
		sw_error_free(e);
		memset(&sr->entry, 0, sizeof(sr->entry));
		if (b->o->cache_from && b->o->cache_from[0]) {
			bool hit = false;
			if (sw_build__regcache_probe(&hit, b, sr, s, err) < 0)
				return sw_error_code_of(*err);
			if (hit) {
				sr->have = sr->hit = true;
				sr->remote = true;
				sr->empty = sw_build__diff_is_empty(b, &sr->entry.diff_id);
			}
		}
	}
	return 0;
}

/* Which stages must be materialised: the target, the bases of needed stages, and the sources
 * of steps that will run. */
static void mark_exec(sw_build__ctx *b)
{
	sw_build__plan *p = b->plan;
	b->srt[p->target].need = true;
	for (int i = p->target; i >= 0; i--) {
		sw_build__stage *st = &p->stages[i];
		if (!b->srt[i].need)
			continue;
		if (st->base_kind == SW_BUILD__BASE_STAGE)
			b->srt[st->base].need = true;
		for (size_t k = 0; k < st->n_steps; k++) {
			const sw_build__step *s = &st->steps[k];
			if (!s->layer || b->srt[i].steps[k].hit)
				continue;
			if ((s->kind == SW_DF_COPY || s->kind == SW_DF_ADD) &&
			    s->src_kind == SW_BUILD__SRC_STAGE)
				b->srt[s->src].need = true;
			for (size_t m = 0; m < s->n_mounts; m++)
				if (s->mounts[m].type == SW_BUILD__MOUNT_BIND &&
				    s->mounts[m].from_kind == SW_BUILD__SRC_STAGE)
					b->srt[s->mounts[m].from].need = true;
		}
	}
}

/* ---------------------------------------------------------------- running the stages */

static int run_stage(sw_build__ctx *b, int idx, sw_error **err)
{
	sw_build__plan *p = b->plan;
	sw_build__stage *st = &p->stages[idx];
	sw_build__rt *rt = &b->srt[idx];
	/* the base */
	if (st->base_kind == SW_BUILD__BASE_IMAGE) {
		const sw_build__image *im = &p->images[st->base];
		int no = rt->next_no++;
		cleanup_free char *what =
		        strchr(im->name, '@') ? sw_xstrdup(im->name)
		                              : sw_xasprintf("%s@%s", im->name, im->desc.digest.s);
		cleanup_free char *title =
		        p->n_stages > 1
		                ? sw_xasprintf("[%s 1/%d] FROM %s", st->label, st->n_progress, what)
		                : sw_xasprintf("[1/%d] FROM %s", st->n_progress, what);
		sw_build__emit(b, SW_BUILD_EV_STEP_START, no, st->label, title, !im->pulled, false,
		               0, 0, NULL, 0);
		if (image_layers(rt, im, err) < 0)
			return sw_error_code_of(*err);
		rt->last_created = sw_xstrdup(im->config.created ? im->config.created
		                                                 : "1970-01-01T00:00:00Z");
		sw_build__emit(b, SW_BUILD_EV_STEP_DONE, no, st->label, title, !im->pulled, false,
		               0, 0, NULL, 0);
		pthread_mutex_lock(&b->mu);
		b->steps++;
		if (!im->pulled)
			b->cached_steps++;
		pthread_mutex_unlock(&b->mu);
	} else if (st->base_kind == SW_BUILD__BASE_STAGE) {
		sw_build__rt *brt = &b->srt[st->base];
		for (size_t i = 0; i < brt->n_layers; i++)
			layers_push(rt, &brt->layers[i].blob, &brt->layers[i].diff_id);
		for (size_t i = 0; i < brt->n_history; i++)
			history_push(rt, brt->history[i].created, brt->history[i].created_by,
			             brt->history[i].comment, brt->history[i].empty_layer);
		rt->last_created =
		        sw_xstrdup(brt->last_created ? brt->last_created : "1970-01-01T00:00:00Z");
	} else {
		rt->last_created = sw_xstrdup("1970-01-01T00:00:00Z");
	}
	for (size_t k = 0; k < st->n_steps; k++) {
		const sw_build__step *s = &st->steps[k];
		sw_build__step_rt *sr = &rt->steps[k];
		if (sw_build__cancelled(b))
			return sw_error_set(err, SW_ERR_CANCELLED, "build cancelled");
		if (!s->layer) {
			history_push(rt, b->created ? b->created : rt->last_created, s->created_by,
			             "buildkit.dockerfile.v0", true);
			continue;
		}
		int no = rt->next_no++;
		pthread_mutex_lock(&b->mu);
		b->steps++;
		if (sr->hit)
			b->cached_steps++;
		pthread_mutex_unlock(&b->mu);
		int64_t t0 = sw_build__now_ms();
		if (sr->hit) {
			sw_build__emit(b, SW_BUILD_EV_STEP_START, no, st->label, s->title, true,
			               false, 0, 0, NULL, 0);
			sw_build__emit(b, SW_BUILD_EV_STEP_DONE, no, st->label, s->title, true,
			               false, 0, 0, NULL, 0);
		} else {
			sw_build__emit(b, SW_BUILD_EV_STEP_START, no, st->label, s->title, false,
			               false, 0, 0, NULL, 0);
			int rc;
			int code = 0;
			if (s->kind == SW_DF_RUN)
				rc = sw_build__exec_run(&code, b, idx, k, no, err);
			else if (s->kind == SW_DF_WORKDIR)
				rc = sw_build__exec_workdir(b, idx, k, err);
			else
				rc = sw_build__exec_copy(b, idx, k, err);
			if (rc < 0) {
				sw_build__emit(b, SW_BUILD_EV_STEP_DONE, no, st->label, s->title,
				               false, true, code, sw_build__now_ms() - t0,
				               err && *err ? sw_error_msg(*err) : NULL,
				               err && *err ? strlen(sw_error_msg(*err)) : 0);
				return rc;
			}
			sw_build__emit(b, SW_BUILD_EV_STEP_DONE, no, st->label, s->title, false,
			               false, 0, sw_build__now_ms() - t0, NULL, 0);
		}
		if (!sr->empty)
			layers_push(rt, &sr->entry.blob, &sr->entry.diff_id);
		if (!b->created) {
			free(rt->last_created);
			rt->last_created = sw_build__time_str(sr->entry.created);
		}
		history_push(rt, b->created ? b->created : rt->last_created, s->created_by,
		             "buildkit.dockerfile.v0", sr->empty);
	}
	return 0;
}

/* ---------------------------------------------------------------- stages in parallel */

typedef struct sched {
	sw_build__ctx *b;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int running;
	bool failed;
	sw_error *err;
	bool *started;
} sched;

typedef struct sched_job {
	sched *s;
	int idx;
} sched_job;

/* Can stage i run now? (its base and the sources of its missing steps are done) */
static bool stage_ready(sw_build__ctx *b, int i)
{
	const sw_build__stage *st = &b->plan->stages[i];
	if (st->base_kind == SW_BUILD__BASE_STAGE && !b->srt[st->base].done)
		return false;
	for (size_t k = 0; k < st->n_steps; k++) {
		const sw_build__step *s = &st->steps[k];
		if (!s->layer || b->srt[i].steps[k].hit)
			continue;
		if ((s->kind == SW_DF_COPY || s->kind == SW_DF_ADD) &&
		    s->src_kind == SW_BUILD__SRC_STAGE && !b->srt[s->src].done)
			return false;
		for (size_t m = 0; m < s->n_mounts; m++)
			if (s->mounts[m].type == SW_BUILD__MOUNT_BIND &&
			    s->mounts[m].from_kind == SW_BUILD__SRC_STAGE &&
			    !b->srt[s->mounts[m].from].done)
				return false;
	}
	return true;
}

static void *stage_thread(void *arg)
{
	sched_job *j = arg;
	sched *s = j->s;
	sw_error *e = NULL;
	int rc = run_stage(s->b, j->idx, &e);
	pthread_mutex_lock(&s->mu);
	if (rc < 0 && !s->failed) {
		s->failed = true;
		s->err = e;
		e = NULL;
	} else if (rc == 0) {
		s->b->srt[j->idx].done = true;
	}
	s->running--;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	sw_error_free(e);
	free(j);
	return NULL;
}

/*
 * Run the stages that must run, each as soon as what it needs is done, up to one per CPU (at
 * most 4) at once. A failure lets the running stages end and starts no other.
 */
static int run_stages(sw_build__ctx *b, sw_error **err)
{
	sw_build__plan *p = b->plan;
	size_t n_need = 0;
	for (size_t i = 0; i < p->n_stages; i++)
		n_need += b->srt[i].need ? 1 : 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int jobs = cpus < 1 ? 1 : (cpus > 4 ? 4 : (int)cpus);
	if (n_need <= 1 || jobs == 1) {
		for (size_t i = 0; i < p->n_stages; i++) {
			if (!b->srt[i].need)
				continue;
			if (run_stage(b, (int)i, err) < 0)
				return sw_error_code_of(*err);
			b->srt[i].done = true;
		}
		return 0;
	}
	sched s;
	memset(&s, 0, sizeof(s));
	s.b = b;
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	s.started = sw_xcalloc(p->n_stages, sizeof(bool));
	int rc = 0;
	pthread_mutex_lock(&s.mu);
	for (;;) {
		size_t left = 0;
		bool started_one = false;
		for (size_t i = 0; i < p->n_stages; i++) {
			if (!b->srt[i].need || b->srt[i].done)
				continue;
			left++;
			if (s.started[i] || s.failed || s.running >= jobs ||
			    sw_build__cancelled(b) || !stage_ready(b, (int)i))
				continue;
			sched_job *j = sw_xcalloc(1, sizeof(*j));
			j->s = &s;
			j->idx = (int)i;
			pthread_t th;
			int pr = pthread_create(&th, NULL, stage_thread, j);
			if (pr != 0) {
				free(j);
				if (!s.failed) {
					s.failed = true;
					sw_error_os(&s.err, pr, "start a build thread");
				}
				continue;
			}
			pthread_detach(th);
			s.started[i] = true;
			s.running++;
			started_one = true;
		}
		if (s.running == 0 && (left == 0 || s.failed || sw_build__cancelled(b)))
			break;
		if (s.running == 0 && !started_one) {
			s.failed = true;
			sw_error_set(&s.err, SW_ERR_GENERIC, "build: stages wait on each other");
			break;
		}
		if (!started_one || s.running >= jobs || s.failed)
			pthread_cond_wait(&s.cv, &s.mu);
	}
	pthread_mutex_unlock(&s.mu);
	if (s.failed) {
		rc = s.err ? s.err->code : SW_ERR_GENERIC;
		if (err && !*err)
			*err = s.err;
		else
			sw_error_free(s.err);
	} else if (sw_build__cancelled(b)) {
		rc = sw_error_set(err, SW_ERR_CANCELLED, "build cancelled");
	}
	free(s.started);
	pthread_cond_destroy(&s.cv);
	pthread_mutex_destroy(&s.mu);
	return rc;
}

/* ---------------------------------------------------------------- the image */

static const char *oci_layer_type(const char *mt)
{
	if (!mt)
		return SW_OCI_MT_LAYER_GZIP;
	if (strcmp(mt, SW_DOCKER_MT_LAYER_GZIP) == 0)
		return SW_OCI_MT_LAYER_GZIP;
	if (strcmp(mt, SW_DOCKER_MT_LAYER) == 0)
		return SW_OCI_MT_LAYER;
	return mt;
}

static int assemble(sw_build__ctx *b, sw_build_result *out, sw_error **err)
{
	sw_build__plan *p = b->plan;
	sw_build__stage *st = &p->stages[p->target];
	sw_build__rt *rt = &b->srt[p->target];
	sw_oci_config *cfg = &st->config;
	free(cfg->created);
	cfg->created = sw_xstrdup(b->created ? b->created : rt->last_created);
	/* rootfs and history */
	free(cfg->diff_ids);
	cfg->diff_ids = sw_xcalloc(rt->n_layers ? rt->n_layers : 1, sizeof(*cfg->diff_ids));
	cfg->n_diff_ids = rt->n_layers;
	for (size_t i = 0; i < rt->n_layers; i++)
		cfg->diff_ids[i] = rt->layers[i].diff_id;
	for (size_t i = 0; i < cfg->n_history; i++) {
		free(cfg->history[i].created);
		free(cfg->history[i].created_by);
		free(cfg->history[i].comment);
	}
	free(cfg->history);
	cfg->history = rt->history;
	cfg->n_history = rt->n_history;
	rt->history = NULL;
	rt->n_history = 0;
	size_t clen = 0;
	cleanup_free char *cjson = sw_oci_config_serialize(cfg, &clen);
	sw_digest cd;
	if (sw_oci_store_put_blob(&cd, b->store, cjson, clen, err) < 0)
		return sw_error_wrap(err, "store the image config");
	sw_oci_manifest m;
	memset(&m, 0, sizeof(m));
	m.media_type = SW_OCI_MT_MANIFEST;
	m.config.media_type = SW_OCI_MT_CONFIG;
	m.config.digest = cd;
	m.config.size = (int64_t)clen;
	m.layers = sw_xcalloc(rt->n_layers ? rt->n_layers : 1, sizeof(*m.layers));
	m.n_layers = rt->n_layers;
	for (size_t i = 0; i < rt->n_layers; i++) {
		m.layers[i].media_type = (char *)oci_layer_type(rt->layers[i].blob.media_type);
		m.layers[i].digest = rt->layers[i].blob.digest;
		m.layers[i].size = rt->layers[i].blob.size;
	}
	size_t mlen = 0;
	cleanup_free char *mjson = sw_oci_manifest_serialize(&m, &mlen);
	free(m.layers);
	sw_digest md;
	if (sw_oci_store_put_blob(&md, b->store, mjson, mlen, err) < 0)
		return sw_error_wrap(err, "store the image manifest");
	out->manifest.media_type = sw_xstrdup(SW_OCI_MT_MANIFEST);
	out->manifest.digest = md;
	out->manifest.size = (int64_t)mlen;
	out->config_digest = cd;
	return 0;
}

static char *normalize_tag(const char *name)
{
	return has_tag(name) ? sw_xstrdup(name) : sw_xasprintf("%s:latest", name);
}

static int export_image(sw_build__ctx *b, const sw_build_result *res, sw_error **err)
{
	for (size_t i = 0; b->o->tags && b->o->tags[i]; i++) {
		cleanup_free char *t = normalize_tag(b->o->tags[i]);
		if (sw_oci_store_tag(b->store, t, &res->manifest, err) < 0)
			return sw_error_wrap(err, "tag '%s'", t);
	}
	if (b->o->output) {
		const char *o = b->o->output;
		if (strncmp(o, "oci:", 4) != 0)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "--output '%s': expected oci:DIR[:TAG]", o);
		const char *p = o + 4;
		const char *slash = strrchr(p, '/');
		const char *colon = strrchr(slash ? slash : p, ':');
		cleanup_free char *dir =
		        colon ? sw_xstrndup(p, (size_t)(colon - p)) : sw_xstrdup(p);
		cleanup_free char *tag = sw_xstrdup(colon ? colon + 1 : "latest");
		if (!dir[0] || !tag[0])
			return sw_error_set(err, SW_ERR_INVALID,
			                    "--output '%s': expected oci:DIR[:TAG]", o);
		sw_oci_store *dst = NULL;
		if (sw_oci_store_open(&dst, dir, true, err) < 0)
			return sw_error_wrap(err, "--output %s", o);
		int rc = sw_oci_store_copy_image(dst, b->store, &res->manifest, tag, err);
		sw_oci_store_free(dst);
		if (rc < 0)
			return sw_error_wrap(err, "--output %s", o);
	}
	for (size_t i = 0; b->o->push && b->o->push[i]; i++) {
		const char *target = b->o->push[i];
		sw_oci_ref ref;
		if (sw_build__ref_parse(&ref, target, err) < 0)
			return sw_error_wrap(err, "--push '%s'", target);
		cleanup_free char *rs = sw_oci_ref_str(&ref);
		sw_build__log(b, "pushing %s", rs);
		sw_oci_registry *r = NULL;
		int rc = sw_build__registry(&r, b, ref.registry, err);
		if (rc == 0)
			rc = sw_oci_registry_push(r, b->store, &res->manifest, &ref, err);
		sw_oci_ref_clear(&ref);
		if (rc < 0)
			return sw_error_wrap(err, "push %s", rs);
		sw_build__log(b, "pushed %s@%s", rs, res->manifest.digest.s);
	}
	return 0;
}

/* ---------------------------------------------------------------- setup */

static char *default_state_dir(void)
{
	const char *s = getenv("SLIPWAY_STATE_DIR");
	if (s && s[0])
		return sw_xstrdup(s);
	cleanup_free char *store = sw_oci_store_default_dir();
	char *slash = strrchr(store, '/');
	if (slash && slash != store)
		*slash = 0;
	return sw_xstrdup(store);
}

static int read_dockerfile(sw_build__ctx *b, sw_error **err)
{
	const sw_build_opts *o = b->o;
	cleanup_free char *path = o->dockerfile ? sw_xstrdup(o->dockerfile)
	                                        : sw_path_join(o->context_dir, "Dockerfile");
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (sw_fs_read_file(&buf, &len, path, ((size_t)1 << 20) + 1, err) < 0)
		return sw_error_wrap(err, "read the Dockerfile");
	const char *name = o->dockerfile ? o->dockerfile : "Dockerfile";
	if (sw_df_parse(&b->df, buf, len, name, err) < 0)
		return sw_error_code_of(*err);
	if (sw_dockerignore_load(&b->di, o->context_dir, path, err) < 0)
		return sw_error_code_of(*err);
	/* is there an ignore file at all? (a bind mount of the context must then be a copy) */
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	cleanup_free char *n1 = sw_xasprintf("%s/%s.dockerignore", o->context_dir, base);
	cleanup_free char *n2 = sw_path_join(o->context_dir, ".dockerignore");
	cleanup_free char *n3 = sw_xasprintf("%s.dockerignore", path);
	b->has_ignore_file =
	        access(n1, F_OK) == 0 || access(n2, F_OK) == 0 || access(n3, F_OK) == 0;
	return 0;
}

static int open_context(sw_build__ctx *b, sw_error **err)
{
	cleanup_free char *real = realpath(b->o->context_dir, NULL);
	if (!real)
		return sw_error_os(err, errno, "build context '%s'", b->o->context_dir);
	sw_digest d;
	sw_oci_digest_bytes(&d, real, strlen(real));
	cleanup_free char *dir = sw_path_join(b->state_dir, "build/statcache");
	if (sw_fs_mkdir_p(dir, 0700, err) < 0)
		return sw_error_code_of(*err);
	cleanup_free char *sc = sw_xasprintf("%s/%.32s.json", dir, sw_oci_digest_hex(&d));
	if (sw_build__context_open(&b->ctx, real, b->di, sc, err) < 0)
		return sw_error_code_of(*err);
	return 0;
}

static void ctx_cleanup(sw_build__ctx *b)
{
	/* unmount everything still mounted, last first */
	size_t n = sw_strv_len(b->mounts);
	for (size_t i = n; i > 0; i--) {
		sw_error *e = NULL;
		if (sw_exec_overlay_unmount(b->mounts[i - 1], &e) < 0) {
			SW_LOG(SW_LOG_WARN, "build: unmount %s: %s", b->mounts[i - 1],
			       sw_error_msg(e));
			sw_error_free(e);
		}
	}
	sw_strv_free(b->mounts);
	b->mounts = NULL;
	for (size_t i = 0; b->scratch && b->scratch[i]; i++) {
		sw_error *e = NULL;
		if (sw_fs_rm_rf(b->scratch[i], &e) < 0) {
			SW_LOG(SW_LOG_WARN, "build: remove %s: %s", b->scratch[i], sw_error_msg(e));
			sw_error_free(e);
		}
	}
	sw_strv_free(b->scratch);
	b->scratch = NULL;
	if (b->srt) {
		for (size_t i = 0; i < b->plan->n_stages; i++)
			rt_clear(&b->srt[i]);
		free(b->srt);
	}
	if (b->irt) {
		for (size_t i = 0; i < b->n_irt; i++)
			rt_clear(&b->irt[i]);
		free(b->irt);
	}
	for (size_t i = 0; i < b->n_regs; i++) {
		free(b->regs[i].host);
		sw_oci_registry_free(b->regs[i].r);
	}
	free(b->regs);
	for (size_t i = 0; i < b->n_downloads; i++) {
		free(b->downloads[i].url);
		free(b->downloads[i].name);
	}
	free(b->downloads);
	free(b->download_dir);
	sw_build__plan_free(b->plan);
	sw_build__context_free(b->ctx);
	sw_dockerignore_free(b->di);
	sw_df_free(b->df);
	sw_cache_free(b->cache);
	sw_oci_store_free(b->store);
	free(b->state_dir);
	free(b->created);
}

static int64_t sde_from(const sw_build_opts *o)
{
	if (o->source_date_epoch >= 0)
		return o->source_date_epoch;
	const char *s = getenv("SOURCE_DATE_EPOCH");
	if (!s || !s[0])
		return -1;
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || !end || *end || v < 0)
		return -1;
	return v;
}

static int build_main(sw_build__ctx *b, sw_build_result *out, sw_error **err)
{
	const sw_build_opts *o = b->o;
	if (!o->context_dir || !o->context_dir[0])
		return sw_error_set(err, SW_ERR_INVALID, "no build context given");
	b->state_dir = o->state_dir ? sw_xstrdup(o->state_dir) : default_state_dir();
	b->sde = sde_from(o);
	b->created = b->sde >= 0 ? sw_build__time_str(b->sde) : NULL;
	/* the empty layer's diff id (1024 zero bytes: the tar end marker) */
	{
		static const char zeros[1024];
		sw_oci_digest_bytes(&b->empty_diff, zeros, sizeof(zeros));
	}
	if (sw_fs_mkdir_p(b->state_dir, 0700, err) < 0)
		return sw_error_code_of(*err);
	/* what a killed build left behind */
	{
		sw_error *e = NULL;
		unsigned removed = 0;
		if (sw_exec_sweep(&removed, b->state_dir, o->runtime, &e) < 0) {
			SW_LOG(SW_LOG_WARN, "build: sweep: %s", sw_error_msg(e));
			sw_error_free(e);
		} else if (removed) {
			sw_build__log(b, "removed %u container(s) left by an earlier build",
			              removed);
		}
	}
	if (read_dockerfile(b, err) < 0)
		return sw_error_code_of(*err);
	cleanup_free char *store_dir = sw_path_join(b->state_dir, "store");
	if (sw_oci_store_open(&b->store, store_dir, true, err) < 0 ||
	    sw_cache_open(&b->cache, b->state_dir, b->store, err) < 0)
		return sw_error_code_of(*err);
	if (open_context(b, err) < 0)
		return sw_error_code_of(*err);
	/* the plan: every key before anything runs */
	sw_build__hooks hooks = {
		.image = hook_image,
		.context = hook_context,
		.url = hook_url,
		.warn = hook_warn,
		.payload = b,
	};
	sw_build__plan_opts po = {
		.build_args = o->build_args,
		.target = o->target,
		.platform = o->platform,
		.network = o->network,
		.secrets = o->secrets,
		.n_secrets = o->n_secrets,
	};
	if (sw_build__plan_new(&b->plan, b->df, &po, &hooks, err) < 0)
		return sw_error_code_of(*err);
	sw_build__plan *p = b->plan;
	b->srt = sw_xcalloc(p->n_stages, sizeof(*b->srt));
	for (size_t i = 0; i < p->n_stages; i++) {
		b->srt[i].n_steps = p->stages[i].n_steps;
		b->srt[i].steps = sw_xcalloc(p->stages[i].n_steps + 1, sizeof(sw_build__step_rt));
	}
	b->n_irt = p->n_images;
	b->irt = sw_xcalloc(p->n_images + 1, sizeof(*b->irt));
	for (size_t i = 0; i < p->n_images; i++)
		if (image_layers(&b->irt[i], &p->images[i], err) < 0)
			return sw_error_code_of(*err);
	/* probe the caches */
	for (size_t i = 0; i < p->n_stages; i++) {
		sw_build__stage *st = &p->stages[i];
		if (!st->needed)
			continue;
		for (size_t k = 0; k < st->n_steps; k++) {
			if (!st->steps[k].layer)
				continue;
			if (probe_step(b, &b->srt[i].steps[k], &st->steps[k], err) < 0)
				return sw_error_code_of(*err);
		}
	}
	mark_exec(b);
	b->n_steps = 0;
	for (size_t i = 0; i < p->n_stages; i++) {
		if (!b->srt[i].need)
			continue;
		const sw_build__stage *st = &p->stages[i];
		b->n_steps += st->base_kind == SW_BUILD__BASE_IMAGE ? 1 : 0;
		for (size_t k = 0; k < st->n_steps; k++)
			b->n_steps += st->steps[k].layer ? 1 : 0;
	}
	/* progress numbers, in stage order whatever order the stages run in */
	int no = 1;
	for (size_t i = 0; i < p->n_stages; i++) {
		if (!b->srt[i].need)
			continue;
		const sw_build__stage *st = &p->stages[i];
		b->srt[i].next_no = no;
		no += st->base_kind == SW_BUILD__BASE_IMAGE ? 1 : 0;
		for (size_t k = 0; k < st->n_steps; k++)
			no += st->steps[k].layer ? 1 : 0;
	}
	/* run */
	if (run_stages(b, err) < 0)
		return sw_error_code_of(*err);
	if (sw_build__cancelled(b))
		return sw_error_set(err, SW_ERR_CANCELLED, "build cancelled");
	/* nothing stays mounted past the steps */
	for (size_t i = 0; i < p->n_stages; i++) {
		if (b->srt[i].view) {
			sw_error *e = NULL;
			if (sw_build__overlay_drop(b, b->srt[i].view, &e) < 0) {
				SW_LOG(SW_LOG_WARN, "build: %s", sw_error_msg(e));
				sw_error_free(e);
			}
			free(b->srt[i].view);
			b->srt[i].view = NULL;
		}
	}
	for (size_t i = 0; i < b->n_irt; i++) {
		if (b->irt[i].view) {
			sw_error *e = NULL;
			if (sw_build__overlay_drop(b, b->irt[i].view, &e) < 0) {
				SW_LOG(SW_LOG_WARN, "build: %s", sw_error_msg(e));
				sw_error_free(e);
			}
			free(b->irt[i].view);
			b->irt[i].view = NULL;
		}
	}
	if (assemble(b, out, err) < 0)
		return sw_error_code_of(*err);
	out->steps = b->steps;
	out->cached_steps = b->cached_steps;
	if (export_image(b, out, err) < 0)
		return sw_error_code_of(*err);
	if (o->cache_to && sw_build__regcache_export(b, err) < 0)
		return sw_error_code_of(*err);
	/* the size cap */
	uint64_t cap = 0;
	sw_error *e = NULL;
	if (sw_cache_cap_from_env(&cap, &e) < 0 ||
	    (cap && sw_cache_enforce_cap(b->cache, cap, &e) < 0)) {
		sw_build__log(b, "warning: cache size cap: %s", sw_error_msg(e));
		sw_error_free(e);
	}
	return 0;
}

int sw_build_run(sw_build_result *out, const sw_build_opts *opts, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	sw_build__ctx b;
	memset(&b, 0, sizeof(b));
	b.o = opts;
	pthread_mutex_init(&b.mu, NULL);
	pthread_mutex_init(&b.ev_mu, NULL);
	pthread_mutex_init(&b.view_mu, NULL);
	int rc = build_main(&b, out, err);
	ctx_cleanup(&b);
	pthread_mutex_destroy(&b.mu);
	pthread_mutex_destroy(&b.ev_mu);
	pthread_mutex_destroy(&b.view_mu);
	if (rc < 0)
		sw_build_result_clear(out);
	return rc;
}

void sw_build_result_clear(sw_build_result *r)
{
	if (!r)
		return;
	sw_oci_descriptor_clear(&r->manifest);
	memset(r, 0, sizeof(*r));
}
