/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slipway as a GitLab runner (../shared/specs/gitlab-runner-api.md): per configured server a
 * thread verifies the glrt- token (a refused token is reported and retried later), then
 * long-polls POST /api/v4/jobs/request with last_update while the server is below its limit and
 * the scheduler has room; each job becomes a work item (kind "gitlab", its payload in memory
 * only; the job token in a 0600 file while the job lives, so that a restart can report it
 * failed). Running a job: accept it (PUT running), check out git_info's commit, unpack the
 * dependencies' artifacts, SLIPWAY_BUILD (build with slipway's builder and cache, push to
 * $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA), run the one-job pipeline through sw_run_pipeline with
 * the trace streamed, upload artifacts as zip, SLIPWAY_PROMOTE, and the final update.
 */
#include "agent/gitlab.h"
#include "builder/builder.h"
#include "reporters/reporters.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#define SW_GITLAB_VERSION "0.1.0"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "s_" + 12 hex digits derived from the machine id (stable per machine). */
static char *system_id(void)
{
	char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, "/etc/machine-id", 4096, &e) < 0) {
		sw_error_free(e);
		char h[64] = "";
		gethostname(h, sizeof(h) - 1);
		buf = sw_xstrdup(h);
		len = strlen(buf);
	}
	sw_oci_hasher *hs = sw_oci_hasher_new();
	sw_oci_hasher_update(hs, "gitlab-runner:", 14);
	sw_oci_hasher_update(hs, buf, len);
	sw_digest d;
	sw_oci_hasher_final(hs, &d);
	sw_oci_hasher_free(hs);
	free(buf);
	return sw_xasprintf("s_%.12s", sw_oci_digest_hex(&d));
}

/* ---------------------------------------------------------------- the servers */

typedef struct srv {
	struct sw_gitlab *g;
	char *name, *url, *token, *ca_file;
	int limit;
	int64_t poll_ms;
	char *last_update;
	pthread_t tid;
	bool started;
	volatile int stop;
	int active; /* jobs of this server queued or running (under g->lock) */
} srv;

typedef struct pending {
	char *id; /* work id */
	char *payload;
} pending;

struct sw_gitlab {
	sw_journal *journal;
	sw_sched *sched;
	char *state_dir;
	char *system_id;
	pthread_mutex_t lock;
	srv **srvs;
	size_t n_srvs;
	pending *pend;
	size_t n_pend;
	int concurrency;
	const sw_agent_config *cfg; /* the newest */
};

/* STATE/agent/gitlab/<server>-<job>.token: the job token while the job lives (0600). */
static char *token_path(const char *state_dir, const char *server, int64_t id)
{
	return sw_xasprintf("%s/agent/gitlab/%s-%" PRId64 ".token", state_dir, server, id);
}

typedef struct poll_res {
	long status;
	sw_buf body;
	char *last_update;
} poll_res;

static size_t poll_header(char *b, size_t size, size_t n, void *payload)
{
	poll_res *pr = payload;
	size_t len = size * n;
	static const char name[] = "x-gitlab-last-update:";
	if (len > sizeof(name) - 1 && strncasecmp(b, name, sizeof(name) - 1) == 0) {
		const char *v = b + sizeof(name) - 1;
		size_t vl = len - (sizeof(name) - 1);
		while (vl && (*v == ' ' || *v == '\t'))
			v++, vl--;
		while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
			vl--;
		free(pr->last_update);
		pr->last_update = vl ? sw_xstrndup(v, vl) : NULL;
	}
	return len;
}

static size_t poll_body(char *b, size_t size, size_t n, void *payload)
{
	poll_res *pr = payload;
	sw_error *e = NULL;
	if (sw_buf_append(&pr->body, b, size * n, &e) < 0) {
		sw_error_free(e);
		return 0;
	}
	return size * n;
}

static int poll_progress(void *payload, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)a, (void)b, (void)c, (void)d;
	srv *s = payload;
	return s->stop ? 1 : 0;
}

/*
 * POST a JSON body with the runner token; long requests (jobs/request is held by the server
 * for up to a minute) are cut at once when the server's loop stops. The common HTTP layer has
 * no way to abort a request from outside, hence libcurl here.
 */
static int srv_post(poll_res *out, srv *s, const char *path, const char *body, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	sw_buf_init(&out->body, 16 << 20);
	cleanup_free char *url = sw_gitlab_api_url(s->url, path);
	CURL *c = curl_easy_init();
	if (!c)
		return sw_error_set(err, SW_ERR_GENERIC, "gitlab %s: no curl handle", s->name);
	struct curl_slist *h = NULL;
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "Accept: application/json");
	cleanup_free char *ht = sw_xasprintf("RUNNER-TOKEN: %s", s->token);
	h = curl_slist_append(h, ht);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "slipway/" SW_GITLAB_VERSION " (gitlab-runner api)");
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 30000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10L * 60 * 1000);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, poll_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, poll_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, poll_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (s->ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
	CURLcode rc = curl_easy_perform(c);
	int ret = 0;
	if (rc != CURLE_OK) {
		cleanup_free char *safe = sw_gitlab_url_safe(url);
		ret = sw_error_set(err,
		                   rc == CURLE_OPERATION_TIMEDOUT ? SW_ERR_TIMEOUT : SW_ERR_GENERIC,
		                   "POST %s: %s", safe, curl_easy_strerror(rc));
	} else {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	}
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	return ret;
}

static void poll_res_free(poll_res *r)
{
	sw_buf_free(&r->body);
	free(r->last_update);
}

/* The server's message of an error body, or "". Caller frees. */
static char *error_message(const poll_res *r)
{
	json_t *j = r->body.len ? json_loadb(r->body.data, r->body.len, 0, NULL) : NULL;
	char *out = NULL;
	json_t *m = json_object_get(j, "message");
	if (json_is_string(m))
		out = sw_xstrdup(json_string_value(m));
	else if (m)
		out = json_dumps(m, JSON_COMPACT);
	json_decref(j);
	return out ? out : sw_xstrdup("");
}

/* Sleep up to ms, waking early when the server's loop stops. */
static void srv_nap(srv *s, int64_t ms)
{
	int64_t end = now_ms() + ms;
	while (!s->stop && now_ms() < end) {
		int64_t left = end - now_ms();
		struct timespec ts = { .tv_sec = 0,
			               .tv_nsec = (left < 100 ? left : 100) * 1000000 };
		nanosleep(&ts, NULL);
	}
}

static char *request_body(srv *s, bool with_last_update)
{
	json_t *b = json_pack("{s:o, s:s, s:s}", "info", sw_gitlab_info(), "token", s->token,
	                      "system_id", s->g->system_id);
	if (with_last_update && s->last_update)
		json_object_set_new(b, "last_update", json_string(s->last_update));
	char *text = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	return text;
}

/* Verify the token until the server takes it (or the loop stops). */
static bool srv_verify(srv *s)
{
	int64_t back = s->poll_ms;
	while (!s->stop) {
		cleanup_free char *body = request_body(s, false);
		poll_res r;
		sw_error *e = NULL;
		if (srv_post(&r, s, "runners/verify", body, &e) < 0) {
			if (!s->stop)
				SW_LOG(SW_LOG_WARN,
				       "gitlab %s: cannot verify the runner token: %s; retrying in %.0fs",
				       s->name, sw_error_msg(e), (double)back / 1000.0);
			sw_error_free(e);
		} else if (r.status == 200 || r.status == 201) {
			json_t *j = json_loadb(r.body.data ? r.body.data : "", r.body.len, 0, NULL);
			json_int_t id = json_integer_value(json_object_get(j, "id"));
			json_decref(j);
			SW_LOG(SW_LOG_INFO, "gitlab %s: runner token verified (runner %lld)",
			       s->name, (long long)id);
			poll_res_free(&r);
			return true;
		} else {
			cleanup_free char *m = error_message(&r);
			SW_LOG(SW_LOG_ERROR,
			       "gitlab %s: the server refused the runner token (HTTP %ld%s%s)%s; "
			       "retrying in %.0fs",
			       s->name, r.status, *m ? ": " : "", m,
			       strncmp(s->token, "glrt-", 5)
			               ? " (a runner authentication token starts "
			                 "with glrt-)"
			               : "",
			       (double)back / 1000.0);
		}
		poll_res_free(&r);
		srv_nap(s, back);
		back = back * 2 > 300000 ? 300000 : back * 2;
	}
	return false;
}

static bool srv_has_room(srv *s)
{
	struct sw_gitlab *g = s->g;
	pthread_mutex_lock(&g->lock);
	bool room = s->active < s->limit;
	int conc = g->concurrency;
	pthread_mutex_unlock(&g->lock);
	if (g->sched && sw_sched_draining(g->sched))
		return false; /* draining: no new jobs are taken */
	if (room && g->sched) {
		unsigned running = 0, queued = 0;
		sw_sched_counts(g->sched, &running, &queued);
		room = (int)(running + queued) < conc;
	}
	return room;
}

/* A job came: journal it and keep its payload and token. */
static void srv_take_job(srv *s, const char *payload, size_t len)
{
	struct sw_gitlab *g = s->g;
	sw_gitlab_job *job = NULL;
	sw_error *e = NULL;
	if (sw_gitlab_job_parse(&job, payload, len, &e) < 0) {
		SW_LOG(SW_LOG_ERROR, "gitlab %s: a job came that cannot be read: %s", s->name,
		       sw_error_msg(e));
		sw_error_free(e);
		return;
	}
	cleanup_free char *id = sw_xasprintf("gitlab:%s:%" PRId64, s->name, job->id);
	cleanup_free char *tp = token_path(g->state_dir, s->name, job->id);
	cleanup_free char *dir = sw_xstrdup(tp);
	*strrchr(dir, '/') = 0;
	if (sw_fs_mkdir_p(dir, 0700, &e) < 0 ||
	    sw_fs_write_atomic(tp, job->token, strlen(job->token), 0600, &e) < 0) {
		SW_LOG(SW_LOG_WARN, "gitlab %s: job %" PRId64 ": %s", s->name, job->id,
		       sw_error_msg(e));
		sw_error_clear(&e);
	}
	SW_LOG(SW_LOG_INFO, "gitlab %s: received job %" PRId64 " (%s)", s->name, job->id,
	       job->name);
	char *pl = sw_xstrndup(payload, len);
	pthread_mutex_lock(&g->lock);
	g->pend = sw_xrealloc(g->pend, (g->n_pend + 1) * sizeof(*g->pend));
	g->pend[g->n_pend++] = (pending){ .id = sw_xstrdup(id), .payload = pl };
	s->active++;
	pthread_mutex_unlock(&g->lock);
	if (g->journal) {
		sw_work w;
		memset(&w, 0, sizeof(w));
		w.id = id;
		w.source = s->name;
		w.kind = "gitlab";
		w.payload = pl;
		w.state = SW_WORK_QUEUED;
		w.exit_code = -1;
		w.queued_at = wall_ms();
		bool added = false;
		if (sw_journal_add(&added, g->journal, &w, &e) < 0) {
			SW_LOG(SW_LOG_ERROR, "gitlab %s: job %" PRId64 ": %s", s->name, job->id,
			       sw_error_msg(e));
			sw_error_free(e);
		}
		if (g->sched)
			sw_sched_kick(g->sched);
	}
	sw_gitlab_job_free(job);
}

static void *srv_main(void *arg)
{
	srv *s = arg;
	int failures = 0;
	while (!s->stop) {
		if (!srv_verify(s))
			break;
		while (!s->stop) {
			if (!srv_has_room(s)) {
				srv_nap(s, 200);
				continue;
			}
			cleanup_free char *body = request_body(s, true);
			poll_res r;
			sw_error *e = NULL;
			if (srv_post(&r, s, "jobs/request", body, &e) < 0) {
				if (!s->stop)
					SW_LOG(SW_LOG_WARN, "gitlab %s: job request: %s", s->name,
					       sw_error_msg(e));
				sw_error_free(e);
				poll_res_free(&r);
				failures++;
				srv_nap(s, s->poll_ms * (failures < 5 ? failures : 5));
				continue;
			}
			if (r.last_update) {
				free(s->last_update);
				s->last_update = sw_xstrdup(r.last_update);
			}
			long st = r.status;
			if (st == 201) {
				failures = 0;
				srv_take_job(s, r.body.data ? r.body.data : "", r.body.len);
				poll_res_free(&r);
				continue; /* asked again at once, as gitlab-runner does */
			}
			if (st == 204) {
				failures = 0;
				poll_res_free(&r);
				srv_nap(s, s->poll_ms);
				continue;
			}
			cleanup_free char *m = error_message(&r);
			poll_res_free(&r);
			if (st == 403) {
				SW_LOG(SW_LOG_ERROR,
				       "gitlab %s: the server refused the runner token (HTTP 403%s%s)",
				       s->name, *m ? ": " : "", m);
				srv_nap(s, s->poll_ms);
				break; /* verify again (with backoff) */
			}
			failures++;
			SW_LOG(SW_LOG_WARN, "gitlab %s: job request: HTTP %ld%s%s", s->name, st,
			       *m ? ": " : "", m);
			srv_nap(s, s->poll_ms * (failures < 5 ? failures : 5));
		}
	}
	return NULL;
}

static srv *srv_new(struct sw_gitlab *g, const sw_agent_gitlab *c, int concurrency)
{
	srv *s = sw_xcalloc(1, sizeof(*s));
	s->g = g;
	s->name = sw_xstrdup(c->name);
	s->url = sw_xstrdup(c->url);
	s->token = sw_xstrdup(c->token ? c->token : "");
	s->ca_file = c->ca_file ? sw_xstrdup(c->ca_file) : NULL;
	s->limit = c->limit > 0 ? c->limit : (concurrency > 0 ? concurrency : 2);
	s->poll_ms = c->poll_ms > 0 ? c->poll_ms : 3000;
	return s;
}

static void srv_free(srv *s)
{
	if (!s)
		return;
	free(s->name);
	free(s->url);
	free(s->token);
	free(s->ca_file);
	free(s->last_update);
	free(s);
}

static void srv_stop(srv *s)
{
	s->stop = 1;
	if (s->started)
		pthread_join(s->tid, NULL);
	s->started = false;
}

static int start_servers(struct sw_gitlab *g, const sw_agent_config *cfg, srv **old, size_t n_old,
                         sw_error **err)
{
	g->srvs = sw_xcalloc(cfg->n_gitlab + 1, sizeof(*g->srvs));
	g->n_srvs = 0;
	for (size_t i = 0; i < cfg->n_gitlab; i++) {
		srv *s = srv_new(g, &cfg->gitlab[i], cfg->concurrency);
		for (size_t k = 0; k < n_old; k++) {
			if (old[k] && strcmp(old[k]->name, s->name) == 0) {
				s->active = old[k]->active;
				if (strcmp(old[k]->url, s->url) == 0 && old[k]->last_update)
					s->last_update = sw_xstrdup(old[k]->last_update);
			}
		}
		g->srvs[g->n_srvs++] = s;
		if (g->sched)
			sw_sched_set_source_limit(g->sched, s->name, s->limit);
		if (pthread_create(&s->tid, NULL, srv_main, s) != 0)
			return sw_error_set(err, SW_ERR_GENERIC, "gitlab %s: no thread", s->name);
		s->started = true;
	}
	return 0;
}

int sw_gitlab_start(sw_gitlab **out, const sw_agent_config *cfg, sw_journal *j, sw_sched *s,
                    sw_error **err)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	sw_gitlab *g = sw_xcalloc(1, sizeof(*g));
	g->journal = j;
	g->sched = s;
	g->cfg = cfg;
	g->state_dir = sw_gitlab_state_dir(cfg);
	g->system_id = system_id();
	g->concurrency = cfg->concurrency > 0 ? cfg->concurrency : 2;
	pthread_mutex_init(&g->lock, NULL);
	if (start_servers(g, cfg, NULL, 0, err) < 0) {
		sw_gitlab_stop(g);
		return sw_error_code_of(*err);
	}
	*out = g;
	return 0;
}

int sw_gitlab_reload(sw_gitlab *g, const sw_agent_config *cfg, sw_error **err)
{
	srv **old = g->srvs;
	size_t n_old = g->n_srvs;
	for (size_t i = 0; i < n_old; i++)
		srv_stop(old[i]);
	pthread_mutex_lock(&g->lock);
	g->cfg = cfg;
	g->concurrency = cfg->concurrency > 0 ? cfg->concurrency : 2;
	pthread_mutex_unlock(&g->lock);
	/* g->srvs is replaced while the job threads may look servers up: under the lock */
	pthread_mutex_lock(&g->lock);
	g->srvs = NULL;
	g->n_srvs = 0;
	pthread_mutex_unlock(&g->lock);
	int rc = start_servers(g, cfg, old, n_old, err);
	for (size_t i = 0; i < n_old; i++)
		srv_free(old[i]);
	free(old);
	return rc;
}

void sw_gitlab_stop(sw_gitlab *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->n_srvs; i++)
		srv_stop(g->srvs[i]);
	for (size_t i = 0; i < g->n_srvs; i++)
		srv_free(g->srvs[i]);
	free(g->srvs);
	for (size_t i = 0; i < g->n_pend; i++) {
		free(g->pend[i].id);
		free(g->pend[i].payload);
	}
	free(g->pend);
	free(g->state_dir);
	free(g->system_id);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

/* ---------------------------------------------------------------- the work items */

/* "gitlab:<server>:<id>" -> server and id. */
static bool split_work_id(const char *wid, char **server, int64_t *id)
{
	if (strncmp(wid, "gitlab:", 7) != 0)
		return false;
	const char *last = strrchr(wid, ':');
	if (!last || last < wid + 7)
		return false;
	*server = sw_xstrndup(wid + 7, (size_t)(last - wid - 7));
	*id = strtoll(last + 1, NULL, 10);
	return *id > 0;
}

sw_work_state sw_gitlab_run_job(sw_gitlab *g, sw_work *w, volatile sig_atomic_t *cancel)
{
	cleanup_free char *server = NULL;
	int64_t id = 0;
	if (!split_work_id(w->id, &server, &id)) {
		SW_LOG(SW_LOG_ERROR, "gitlab: work item %s is not a GitLab job", w->id);
		return SW_WORK_ERROR;
	}
	char *payload = NULL;
	char *url = NULL;
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < g->n_pend; i++) {
		if (strcmp(g->pend[i].id, w->id) == 0) {
			payload = g->pend[i].payload;
			free(g->pend[i].id);
			g->pend[i] = g->pend[--g->n_pend];
			break;
		}
	}
	if (!payload && w->payload)
		payload = sw_xstrdup(w->payload);
	srv *s = NULL;
	for (size_t i = 0; i < g->n_srvs; i++)
		if (strcmp(g->srvs[i]->name, server) == 0)
			s = g->srvs[i];
	if (s)
		url = sw_xstrdup(s->url);
	const sw_agent_config *cfg = g->cfg;
	pthread_mutex_unlock(&g->lock);

	sw_work_state st = SW_WORK_ERROR;
	if (!payload || !url) {
		SW_LOG(SW_LOG_ERROR, "gitlab %s: job %" PRId64 " cannot be run: %s", server, id,
		       !url ? "the server is no longer configured"
		            : "its payload was lost (the agent restarted)");
	} else {
		sw_gitlab_ctx ctx = { .url = url, .name = server, .cfg = cfg, .cancel = cancel };
		st = sw_gitlab_job_run(&ctx, payload, strlen(payload));
	}
	cleanup_free char *tp = token_path(g->state_dir, server, id);
	unlink(tp);
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < g->n_srvs; i++)
		if (strcmp(g->srvs[i]->name, server) == 0 && g->srvs[i]->active > 0)
			g->srvs[i]->active--;
	pthread_mutex_unlock(&g->lock);
	free(payload);
	free(url);
	return st;
}

void sw_gitlab_recover(sw_gitlab *g, const sw_work *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const sw_work *w = &items[i];
		cleanup_free char *server = NULL;
		int64_t id = 0;
		if (!w->kind || strcmp(w->kind, "gitlab") != 0 ||
		    !split_work_id(w->id, &server, &id))
			continue;
		cleanup_free char *tp = token_path(g->state_dir, server, id);
		char *token = NULL;
		size_t len = 0;
		sw_error *e = NULL;
		if (sw_fs_read_file(&token, &len, tp, 4096, &e) < 0) {
			sw_error_free(e);
			continue; /* finished and reported, or never ours */
		}
		const char *url = NULL;
		pthread_mutex_lock(&g->lock);
		for (size_t k = 0; k < g->n_srvs; k++)
			if (strcmp(g->srvs[k]->name, server) == 0)
				url = g->srvs[k]->url;
		cleanup_free char *u = url ? sw_xstrdup(url) : NULL;
		pthread_mutex_unlock(&g->lock);
		if (u) {
			sw_gitlab_trace_opts to = { .url = u, .job_id = id, .token = token };
			sw_gitlab_trace *t = NULL;
			if (sw_gitlab_trace_new(&t, &to, &e) == 0) {
				sw_gitlab_trace_printf(t,
				                       "slipway: the agent stopped while this job "
				                       "was running; it is reported failed\n");
				if (sw_gitlab_trace_finish(t, "failed", "runner_system_failure", 1,
				                           &e) < 0) {
					SW_LOG(SW_LOG_WARN, "gitlab %s: job %" PRId64 ": %s",
					       server, id, sw_error_msg(e));
					sw_error_clear(&e);
				} else {
					SW_LOG(SW_LOG_INFO,
					       "gitlab %s: job %" PRId64
					       " was interrupted by a restart: reported failed",
					       server, id);
				}
			} else {
				sw_error_clear(&e);
			}
			sw_gitlab_trace_free(t);
		}
		free(token);
		unlink(tp);
	}
}
