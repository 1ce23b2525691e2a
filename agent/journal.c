/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's durable work journal, STATE/agent/journal.json: the work items (queued, running,
 * and the last finished ones) and, per watched repository, the last commit seen on each ref.
 * The whole journal lives in memory under a mutex; every change rewrites the file atomically
 * (sw_fs_write_atomic: temporary file, fsync, rename, fsync of the folder), so a crash at any
 * instant leaves the old or the new journal, never a torn one. GitLab job payloads (which hold
 * secrets) stay in memory and are never written. After a restart, sw_journal_recover decides
 * what happens to the items that were running: see docs/agent.md, "Crash semantics".
 */
#include "agent/agent_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define JOURNAL_VERSION 1
#define JOURNAL_MAX ((size_t)64 << 20)
#define KEEP_FINISHED 1000

struct sw_journal {
	pthread_mutex_t lock;
	char *path;
	sw_work *items; /* queue order */
	size_t n, cap;
	json_t *refs; /* {repo: {ref: sha}} */
};

static const char *const state_names[] = {
	[SW_WORK_QUEUED] = "queued", [SW_WORK_RUNNING] = "running",
	[SW_WORK_PASSED] = "passed", [SW_WORK_FAILED] = "failed",
	[SW_WORK_ERROR] = "error",   [SW_WORK_CANCELLED] = "cancelled",
};

const char *sw_work_state_name(sw_work_state s)
{
	if ((int)s < 0 || (size_t)s >= SW_ARRAY_SIZE(state_names))
		return "unknown";
	return state_names[s];
}

static int state_parse(const char *s)
{
	for (size_t i = 0; s && i < SW_ARRAY_SIZE(state_names); i++)
		if (strcmp(s, state_names[i]) == 0)
			return (int)i;
	return -1;
}

static bool finished(sw_work_state s)
{
	return s != SW_WORK_QUEUED && s != SW_WORK_RUNNING;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup0(const char *s)
{
	return s ? sw_xstrdup(s) : NULL;
}

static void work_copy(sw_work *dst, const sw_work *src)
{
	dst->id = dup0(src->id);
	dst->source = dup0(src->source);
	dst->kind = dup0(src->kind);
	dst->sha = dup0(src->sha);
	dst->ref = dup0(src->ref);
	dst->payload = dup0(src->payload);
	dst->state = src->state;
	dst->attempts = src->attempts;
	dst->exit_code = src->exit_code;
	dst->queued_at = src->queued_at;
	dst->started_at = src->started_at;
	dst->finished_at = src->finished_at;
	dst->output_dir = dup0(src->output_dir);
	dst->message = dup0(src->message);
}

void sw_work_clear(sw_work *w)
{
	if (!w)
		return;
	free(w->id);
	free(w->source);
	free(w->kind);
	free(w->sha);
	free(w->ref);
	if (w->payload)
		explicit_bzero(w->payload, strlen(w->payload));
	free(w->payload);
	free(w->output_dir);
	free(w->message);
	memset(w, 0, sizeof(*w));
}

void sw_work_list_free(sw_work *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		sw_work_clear(&v[i]);
	free(v);
}

/* ---------------------------------------------------------------- the file */

static void set_str(json_t *o, const char *k, const char *v)
{
	if (v)
		json_object_set_new(o, k, json_string(v));
}

static json_t *work_json(const sw_work *w)
{
	json_t *o = json_object();
	set_str(o, "id", w->id);
	set_str(o, "source", w->source);
	set_str(o, "kind", w->kind);
	set_str(o, "sha", w->sha);
	set_str(o, "ref", w->ref);
	json_object_set_new(o, "state", json_string(sw_work_state_name(w->state)));
	json_object_set_new(o, "attempts", json_integer(w->attempts));
	json_object_set_new(o, "exit_code", json_integer(w->exit_code));
	json_object_set_new(o, "queued_at", json_integer(w->queued_at));
	json_object_set_new(o, "started_at", json_integer(w->started_at));
	json_object_set_new(o, "finished_at", json_integer(w->finished_at));
	set_str(o, "output_dir", w->output_dir);
	set_str(o, "message", w->message);
	return o;
}

static char *get_str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));
	return s ? sw_xstrdup(s) : NULL;
}

static int work_parse(sw_work *w, json_t *o)
{
	memset(w, 0, sizeof(*w));
	if (!json_is_object(o))
		return -1;
	int st = state_parse(json_string_value(json_object_get(o, "state")));
	w->id = get_str(o, "id");
	w->source = get_str(o, "source");
	w->kind = get_str(o, "kind");
	if (st < 0 || !w->id || !w->source || !w->kind) {
		sw_work_clear(w);
		return -1;
	}
	w->state = (sw_work_state)st;
	w->sha = get_str(o, "sha");
	w->ref = get_str(o, "ref");
	w->attempts = (int)json_integer_value(json_object_get(o, "attempts"));
	json_t *ec = json_object_get(o, "exit_code");
	w->exit_code = ec ? (int)json_integer_value(ec) : -1;
	w->queued_at = json_integer_value(json_object_get(o, "queued_at"));
	w->started_at = json_integer_value(json_object_get(o, "started_at"));
	w->finished_at = json_integer_value(json_object_get(o, "finished_at"));
	w->output_dir = get_str(o, "output_dir");
	w->message = get_str(o, "message");
	return 0;
}

/* Forget the oldest finished items beyond KEEP_FINISHED. Called with the lock held. */
static void trim(sw_journal *j)
{
	size_t done = 0;
	for (size_t i = 0; i < j->n; i++)
		done += finished(j->items[i].state);
	while (done > KEEP_FINISHED) {
		size_t oldest = SIZE_MAX;
		for (size_t i = 0; i < j->n; i++)
			if (finished(j->items[i].state) &&
			    (oldest == SIZE_MAX ||
			     j->items[i].finished_at < j->items[oldest].finished_at))
				oldest = i;
		sw_work_clear(&j->items[oldest]);
		memmove(&j->items[oldest], &j->items[oldest + 1],
		        (j->n - oldest - 1) * sizeof(*j->items));
		j->n--;
		done--;
	}
}

/* Write the journal as it is in memory. Called with the lock held. */
static int save(sw_journal *j, sw_error **err)
{
	trim(j);
	json_t *root = json_object();
	json_object_set_new(root, "version", json_integer(JOURNAL_VERSION));
	json_t *items = json_array();
	for (size_t i = 0; i < j->n; i++)
		json_array_append_new(items, work_json(&j->items[i]));
	json_object_set_new(root, "items", items);
	json_object_set(root, "refs", j->refs);
	char *text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(root);
	if (!text)
		return sw_error_set(err, SW_ERR_GENERIC, "%s: cannot serialise the journal",
		                    j->path);
	size_t len = strlen(text);
	text = sw_xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	int rc = sw_fs_write_atomic(j->path, text, len, 0600, err);
	free(text);
	if (rc < 0)
		return sw_error_wrap(err, "write the journal %s", j->path);
	return 0;
}

static int load(sw_journal *j, sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, j->path, JOURNAL_MAX, &e) < 0) {
		if (e && e->source == SW_ERRSRC_OS && e->sys == ENOENT) {
			sw_error_free(e);
			return 0;
		}
		*err = e;
		return sw_error_wrap(err, "read the journal");
	}
	json_error_t je;
	json_t *root = json_loadb(buf, len, 0, &je);
	if (!root)
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, 0,
		                    "%s:%d:%d: the journal is not valid JSON: %s (move it away to "
		                    "start with an empty journal)",
		                    j->path, je.line, je.column, je.text);
	json_t *items = json_object_get(root, "items");
	json_t *refs = json_object_get(root, "refs");
	if (json_integer_value(json_object_get(root, "version")) != JOURNAL_VERSION ||
	    !json_is_array(items) || (refs && !json_is_object(refs))) {
		json_decref(root);
		return sw_error_set(err, SW_ERR_INVALID, "%s: not a slipway journal (version %d)",
		                    j->path, JOURNAL_VERSION);
	}
	size_t i;
	json_t *it;
	json_array_foreach (items, i, it) {
		sw_work w;
		if (work_parse(&w, it) < 0) {
			json_decref(root);
			return sw_error_set(err, SW_ERR_INVALID, "%s: item %zu is not a work item",
			                    j->path, i);
		}
		if (j->n == j->cap) {
			j->cap = j->cap ? j->cap * 2 : 16;
			j->items = sw_xrealloc(j->items, j->cap * sizeof(*j->items));
		}
		j->items[j->n++] = w;
	}
	if (refs) {
		json_decref(j->refs);
		j->refs = json_deep_copy(refs);
	}
	json_decref(root);
	return 0;
}

int sw_journal_open(sw_journal **out, const char *state_dir, sw_error **err)
{
	*out = NULL;
	cleanup_free char *dir = sw_path_join(state_dir, "agent");
	if (sw_fs_mkdir_p(dir, 0700, err) < 0)
		return sw_error_wrap(err, "journal");
	sw_journal *j = sw_xcalloc(1, sizeof(*j));
	pthread_mutex_init(&j->lock, NULL);
	j->path = sw_path_join(dir, "journal.json");
	j->refs = json_object();
	if (load(j, err) < 0) {
		sw_journal_free(j);
		return SW_ERR_INVALID;
	}
	*out = j;
	return 0;
}

void sw_journal_free(sw_journal *j)
{
	if (!j)
		return;
	sw_work_list_free(j->items, j->n);
	json_decref(j->refs);
	free(j->path);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

/* ---------------------------------------------------------------- items */

static sw_work *find(sw_journal *j, const char *id)
{
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->items[i].id, id) == 0)
			return &j->items[i];
	return NULL;
}

int sw_journal_add(bool *added, sw_journal *j, const sw_work *w, sw_error **err)
{
	if (added)
		*added = false;
	if (!w->id || !w->source || !w->kind)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "a work item needs an id, source and kind");
	pthread_mutex_lock(&j->lock);
	int rc = 0;
	if (find(j, w->id))
		goto out;
	if (j->n == j->cap) {
		j->cap = j->cap ? j->cap * 2 : 16;
		j->items = sw_xrealloc(j->items, j->cap * sizeof(*j->items));
	}
	sw_work *nw = &j->items[j->n++];
	work_copy(nw, w);
	if (!nw->queued_at)
		nw->queued_at = now_ms();
	rc = save(j, err);
	if (rc < 0) {
		sw_work_clear(nw);
		j->n--;
		goto out;
	}
	if (added)
		*added = true;
out:
	pthread_mutex_unlock(&j->lock);
	return rc;
}

static void replace(char **dst, const char *src)
{
	if (*dst == src)
		return;
	free(*dst);
	*dst = dup0(src);
}

int sw_journal_update(sw_journal *j, const sw_work *w, sw_error **err)
{
	pthread_mutex_lock(&j->lock);
	int rc;
	sw_work *cur = find(j, w->id);
	if (!cur) {
		rc = sw_error_set(err, SW_ERR_NOT_FOUND, "journal: no work item '%s'", w->id);
		goto out;
	}
	cur->state = w->state;
	cur->attempts = w->attempts;
	cur->exit_code = w->exit_code;
	if (w->queued_at)
		cur->queued_at = w->queued_at;
	cur->started_at = w->started_at;
	cur->finished_at = w->finished_at;
	replace(&cur->output_dir, w->output_dir);
	replace(&cur->message, w->message);
	if (w->payload)
		replace(&cur->payload, w->payload);
	rc = save(j, err);
out:
	pthread_mutex_unlock(&j->lock);
	return rc;
}

int sw_journal_list(sw_work **out, size_t *n, sw_journal *j, int state, sw_error **err)
{
	(void)err;
	pthread_mutex_lock(&j->lock);
	sw_work *v = sw_xcalloc(j->n ? j->n : 1, sizeof(*v));
	size_t k = 0;
	for (size_t i = 0; i < j->n; i++)
		if (state < 0 || (int)j->items[i].state == state)
			work_copy(&v[k++], &j->items[i]);
	pthread_mutex_unlock(&j->lock);
	*out = v;
	*n = k;
	return 0;
}

/* ---------------------------------------------------------------- refs */

char *sw_journal_ref_get(sw_journal *j, const char *repo, const char *ref)
{
	pthread_mutex_lock(&j->lock);
	const char *s = json_string_value(json_object_get(json_object_get(j->refs, repo), ref));
	char *r = dup0(s);
	pthread_mutex_unlock(&j->lock);
	return r;
}

int sw_journal_ref_set(sw_journal *j, const char *repo, const char *ref, const char *sha,
                       sw_error **err)
{
	pthread_mutex_lock(&j->lock);
	json_t *r = json_object_get(j->refs, repo);
	const char *old = json_string_value(json_object_get(r, ref));
	int rc = 0;
	if ((!old && !sha) || (old && sha && strcmp(old, sha) == 0))
		goto out; /* nothing changes */
	if (!r) {
		r = json_object();
		json_object_set_new(j->refs, repo, r);
	}
	if (sha)
		json_object_set_new(r, ref, json_string(sha));
	else
		json_object_del(r, ref);
	if (json_object_size(r) == 0)
		json_object_del(j->refs, repo);
	rc = save(j, err);
out:
	pthread_mutex_unlock(&j->lock);
	return rc;
}

/* ---------------------------------------------------------------- recovery */

int sw_journal_recover(unsigned *requeued, unsigned *failed, sw_journal *j, int max_attempts,
                       sw_error **err)
{
	unsigned rq = 0, fl = 0;
	pthread_mutex_lock(&j->lock);
	int64_t now = now_ms();
	for (size_t i = 0; i < j->n; i++) {
		sw_work *w = &j->items[i];
		bool gitlab = strcmp(w->kind, "gitlab") == 0;
		if (w->state == SW_WORK_QUEUED && gitlab && !w->payload) {
			/* its payload (the job's secrets) died with the process */
			w->state = SW_WORK_ERROR;
			w->finished_at = now;
			replace(&w->message, "the agent stopped before the job started");
			fl++;
			continue;
		}
		if (w->state != SW_WORK_RUNNING)
			continue;
		if (!gitlab && w->attempts < max_attempts) {
			w->state = SW_WORK_QUEUED;
			replace(&w->message, NULL);
			rq++;
			continue;
		}
		w->state = SW_WORK_ERROR;
		w->finished_at = now;
		char *m = gitlab ? sw_xstrdup("the agent stopped while the job ran")
		                 : sw_xasprintf(
		                           "interrupted %d time%s (max_attempts %d): the agent "
		                           "stopped while it ran",
		                           w->attempts, w->attempts == 1 ? "" : "s", max_attempts);
		free(w->message);
		w->message = m;
		fl++;
	}
	int rc = (rq || fl) ? save(j, err) : 0;
	pthread_mutex_unlock(&j->lock);
	if (requeued)
		*requeued = rq;
	if (failed)
		*failed = fl;
	return rc;
}
