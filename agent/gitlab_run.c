/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One GitLab job end to end: accept it (PUT running), stream its trace, check out git_info's
 * commit, unpack the dependencies' artifacts into the checkout, SLIPWAY_BUILD (the commit's
 * image built with slipway's builder and cache, pushed to $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA and
 * kept in the store under that name), the job itself through sw_run_pipeline (image, services,
 * script, after_script, variables, masking, file variables, timeout, cancellation), artifacts
 * zipped and uploaded (multipart), SLIPWAY_PROMOTE (the tested digest tagged in the registry),
 * and the final update with the failure reason and exit code.
 */
#include "agent/gitlab.h"
#include "builder/builder.h"
#include "executor/executor.h"
#include "reporters/reporters.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct job_run {
	const sw_gitlab_ctx *ctx;
	sw_gitlab_job *job;
	sw_gitlab_trace *trace;
	sw_http_client *http; /* this thread's (artifacts) */
	char *dir;            /* STATE/agent/gitlab/jobs/<server>-<id> */
	char *checkout;
	char *state_dir;
	/* the result of the job's commands (on_job_end) */
	bool ended;
	int end_state;
	int end_exit;
	char **zips; /* artifacts made in the hook, parallel to job->artifacts (NULL: none) */
	/* registry options: the config's plus the job's credentials */
	sw_oci_registry_opts reg;
	sw_oci_credentials *creds;
	size_t n_creds;
	volatile sig_atomic_t cancel; /* what the run watches */
	volatile sig_atomic_t cancel_signal;
	volatile int done;
} job_run;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(job_run *jr, const char *fmt, ...) SW_PRINTF(2, 3);
static void say(job_run *jr, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	cleanup_free char *red = sw_redact(m);
	sw_gitlab_trace_printf(jr->trace, "%s\n", red);
}

/* ---------------------------------------------------------------- registry credentials */

static void cred_add(job_run *jr, const char *host, const char *user, const char *pass)
{
	if (!host || !*host || !user || !pass)
		return;
	jr->creds = sw_xrealloc(jr->creds, (jr->n_creds + 1) * sizeof(*jr->creds));
	jr->creds[jr->n_creds++] = (sw_oci_credentials){ .registry = sw_xstrdup(host),
		                                         .username = sw_xstrdup(user),
		                                         .password = sw_xstrdup(pass) };
}

static void registry_setup(job_run *jr)
{
	const sw_oci_registry_opts *base =
	        jr->ctx->cfg ? sw_agent_config_registry(jr->ctx->cfg) : sw_cli_registry_opts();
	const sw_gitlab_job *j = jr->job;
	/* the job's own first: CI_REGISTRY_USER/PASSWORD, then its `credentials` */
	const char *host = sw_gitlab_job_var(j, "CI_REGISTRY");
	cred_add(jr, host, sw_gitlab_job_var(j, "CI_REGISTRY_USER"),
	         sw_gitlab_job_var(j, "CI_REGISTRY_PASSWORD"));
	for (size_t i = 0; i < j->n_creds; i++)
		cred_add(jr, j->creds[i].host, j->creds[i].username, j->creds[i].password);
	for (size_t i = 0; base && i < base->n_credentials; i++)
		cred_add(jr, base->credentials[i].registry, base->credentials[i].username,
		         base->credentials[i].password);
	if (base)
		jr->reg = *base;
	jr->reg.credentials = jr->creds;
	jr->reg.n_credentials = jr->n_creds;
}

/* ---------------------------------------------------------------- the run's hooks */

static void on_output(const char *data, size_t len, void *payload)
{
	job_run *jr = payload;
	sw_gitlab_trace_write(jr->trace, data, len);
}

static bool artifact_wanted(const sw_gitlab_artifact *a, int state)
{
	const char *when = a->when ? a->when : "on_success";
	if (strcmp(when, "always") == 0)
		return true;
	if (strcmp(when, "on_failure") == 0)
		return state != SW_JOB_PASSED;
	return state == SW_JOB_PASSED;
}

static bool artifact_supported(const sw_gitlab_artifact *a)
{
	return (!a->type || strcmp(a->type, "archive") == 0) &&
	       (!a->format || strcmp(a->format, "zip") == 0);
}

/* Called in the job's thread with its workspace: zip the artifacts. */
static void on_job_end(const char *job, const char *ws, int state, int exit_code, void *payload)
{
	(void)job;
	job_run *jr = payload;
	jr->ended = true;
	jr->end_state = state;
	jr->end_exit = exit_code;
	const sw_gitlab_job *j = jr->job;
	for (size_t i = 0; i < j->n_artifacts; i++) {
		const sw_gitlab_artifact *a = &j->artifacts[i];
		if (!a->paths || !artifact_wanted(a, state))
			continue;
		if (!artifact_supported(a)) {
			say(jr, "slipway: artifacts: %s (%s) are not supported, skipped",
			    a->type ? a->type : "archive", a->format ? a->format : "zip");
			continue;
		}
		sw_error *e = NULL;
		cleanup_strv char **files = NULL;
		if (sw_ws_glob(&files, ws, (const char *const *)a->paths, sw_strv_len(a->paths),
		               &e) < 0) {
			say(jr, "slipway: artifacts: %s", sw_error_msg(e));
			sw_error_free(e);
			continue;
		}
		if (!files || !files[0]) {
			say(jr, "WARNING: %s: no matching files", a->paths[0]);
			continue;
		}
		char *zip = sw_xasprintf("%s/artifacts-%zu.zip", jr->dir, i);
		size_t n = 0;
		if (sw_gitlab_zip_create(zip, ws, files, &n, &e) < 0) {
			say(jr, "slipway: artifacts: %s", sw_error_msg(e));
			sw_error_free(e);
			free(zip);
			continue;
		}
		say(jr, "Uploading artifacts: %zu path(s), %zu entries", sw_strv_len(files), n);
		free(jr->zips[i]);
		jr->zips[i] = zip;
	}
}

/* ---------------------------------------------------------------- artifacts over HTTP */

typedef struct mp_body {
	char *head, *tail;
	size_t head_len, tail_len;
	int fd;
	int64_t file_size;
	int64_t pos; /* over the whole body */
} mp_body;

static ssize_t mp_read(void *buf, size_t len, void *payload)
{
	mp_body *b = payload;
	int64_t total = (int64_t)b->head_len + b->file_size + (int64_t)b->tail_len;
	if (b->pos >= total)
		return 0;
	size_t n = 0;
	if (b->pos < (int64_t)b->head_len) {
		n = b->head_len - (size_t)b->pos;
		n = n < len ? n : len;
		memcpy(buf, b->head + b->pos, n);
	} else if (b->pos < (int64_t)b->head_len + b->file_size) {
		int64_t off = b->pos - (int64_t)b->head_len;
		ssize_t r = pread(b->fd, buf,
		                  len < (size_t)(b->file_size - off) ? len
		                                                     : (size_t)(b->file_size - off),
		                  off);
		if (r <= 0)
			return -1;
		n = (size_t)r;
	} else {
		int64_t off = b->pos - (int64_t)b->head_len - b->file_size;
		n = b->tail_len - (size_t)off;
		n = n < len ? n : len;
		memcpy(buf, b->tail + off, n);
	}
	b->pos += (int64_t)n;
	return (ssize_t)n;
}

static int mp_rewind(void *payload)
{
	((mp_body *)payload)->pos = 0;
	return 0;
}

static int upload_artifact(job_run *jr, const sw_gitlab_artifact *a, const char *zip,
                           sw_error **err)
{
	const sw_gitlab_job *j = jr->job;
	cleanup_close int fd = open(zip, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return sw_error_os(err, errno, "artifacts: %s", zip);
	unsigned char rnd[30];
	cleanup_close int ur = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (ur < 0 || read(ur, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
		for (size_t i = 0; i < sizeof(rnd); i++)
			rnd[i] = (unsigned char)(now_ms() * 31 + (int64_t)i);
	char boundary[61];
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(boundary + 2 * i, 3, "%02x", rnd[i]);
	const char *name = a->name && *a->name ? a->name : "artifacts";
	size_t nl = strlen(name);
	cleanup_free char *fname = nl > 4 && strcmp(name + nl - 4, ".zip") == 0
	                                   ? sw_xstrdup(name)
	                                   : sw_xasprintf("%s.zip", name);
	for (char *p = fname; *p; p++)
		if (*p == '"' || *p == '\r' || *p == '\n' || *p == '/')
			*p = '_';
	mp_body b = { .fd = fd, .file_size = st.st_size };
	b.head = sw_xasprintf("--%s\r\nContent-Disposition: form-data; name=\"file\"; "
	                      "filename=\"%s\"\r\nContent-Type: application/octet-stream\r\n\r\n",
	                      boundary, fname);
	b.tail = sw_xasprintf("\r\n--%s--\r\n", boundary);
	b.head_len = strlen(b.head);
	b.tail_len = strlen(b.tail);
	cleanup_free char *q = NULL;
	{
		cleanup_free char *exp = a->expire_in ? sw_url_escape(a->expire_in) : NULL;
		q = sw_xasprintf("jobs/%" PRId64
		                 "/artifacts?artifact_format=zip&artifact_type=archive"
		                 "%s%s",
		                 j->id, exp ? "&expire_in=" : "", exp ? exp : "");
	}
	cleanup_free char *url = sw_gitlab_api_url(jr->ctx->url, q);
	cleanup_free char *h_tok = sw_xasprintf("JOB-TOKEN: %s", j->token);
	cleanup_free char *h_ct =
	        sw_xasprintf("Content-Type: multipart/form-data; boundary=%s", boundary);
	const char *headers[] = { h_tok, h_ct, NULL };
	int rc = 0;
	for (int attempt = 1;; attempt++) {
		sw_http_request req = {
			.method = "POST",
			.url = url,
			.headers = headers,
			.read_cb = mp_read,
			.rewind_cb = mp_rewind,
			.read_payload = &b,
			.body_size = (int64_t)b.head_len + b.file_size + (int64_t)b.tail_len,
		};
		b.pos = 0;
		sw_http_response res;
		memset(&res, 0, sizeof(res));
		sw_error *e = NULL;
		rc = sw_http_do(&res, jr->http, &req, &e);
		long status = res.status;
		if (rc == 0 && status == 201) {
			sw_http_response_free(&res);
			break;
		}
		if (rc < 0) {
			cleanup_free char *m = sw_redact(sw_error_msg(e));
			sw_error_free(e);
			rc = sw_error_set(err, SW_ERR_GENERIC, "artifacts upload: %s", m);
		} else {
			rc = sw_error_set(err, status == 413 ? SW_ERR_INVALID : SW_ERR_GENERIC,
			                  "artifacts upload: HTTP %ld%s", status,
			                  status == 413 ? " (too large)" : "");
		}
		sw_http_response_free(&res);
		if (status == 403 || status == 413 || attempt >= (status == 503 ? 6 : 3))
			break;
		sw_error_clear(err);
		sw_http_client_backoff(jr->http, attempt, -1);
	}
	free(b.head);
	free(b.tail);
	return rc;
}

static int file_write(const void *data, size_t len, void *payload)
{
	int fd = *(int *)payload;
	const char *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return SW_ERR_GENERIC;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int download_dependency(job_run *jr, const sw_gitlab_dep *d, sw_error **err)
{
	cleanup_free char *zip = sw_xasprintf("%s/dep-%" PRId64 ".zip", jr->dir, d->id);
	cleanup_free char *path = sw_xasprintf("jobs/%" PRId64 "/artifacts", d->id);
	cleanup_free char *url = sw_gitlab_api_url(jr->ctx->url, path);
	cleanup_free char *h_tok =
	        sw_xasprintf("JOB-TOKEN: %s", d->token ? d->token : jr->job->token);
	const char *headers[] = { h_tok, NULL };
	int rc = SW_ERR_GENERIC;
	for (int attempt = 1; attempt <= 3; attempt++) {
		cleanup_close int fd = open(zip, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			return sw_error_os(err, errno, "create %s", zip);
		sw_http_request req = { .url = url,
			                .headers = headers,
			                .write_cb = file_write,
			                .write_payload = &fd,
			                .follow_redirects = true };
		sw_http_response res;
		memset(&res, 0, sizeof(res));
		sw_error *e = NULL;
		rc = sw_http_do(&res, jr->http, &req, &e);
		long status = res.status;
		sw_http_response_free(&res);
		if (rc == 0 && status == 200)
			break;
		sw_error_clear(err);
		if (rc < 0) {
			cleanup_free char *m = sw_redact(sw_error_msg(e));
			rc = sw_error_set(err, SW_ERR_GENERIC,
			                  "artifacts of job %s (%" PRId64 "): %s",
			                  d->name ? d->name : "?", d->id, m);
		} else {
			rc = sw_error_set(err, status == 404 ? SW_ERR_NOT_FOUND : SW_ERR_GENERIC,
			                  "artifacts of job %s (%" PRId64 "): HTTP %ld",
			                  d->name ? d->name : "?", d->id, status);
		}
		sw_error_free(e);
		if (status == 401 || status == 403 || status == 404)
			break;
		sleep(1);
	}
	if (rc < 0)
		return rc;
	if (sw_gitlab_zip_extract(zip, jr->checkout, err) < 0)
		return sw_error_wrap(err, "artifacts of job %s", d->name ? d->name : "?");
	unlink(zip);
	return 0;
}

/* ---------------------------------------------------------------- SLIPWAY_BUILD / PROMOTE */

static void build_event(const sw_build_event *ev, void *payload)
{
	job_run *jr = payload;
	switch (ev->kind) {
	case SW_BUILD_EV_STEP_START:
		say(jr, "#%d %s%s", ev->step, ev->title ? ev->title : "",
		    ev->cached ? " CACHED" : "");
		break;
	case SW_BUILD_EV_STEP_OUTPUT:
		if (ev->text && ev->len)
			sw_gitlab_trace_write(jr->trace, ev->text, ev->len);
		break;
	case SW_BUILD_EV_STEP_DONE:
		if (ev->failed)
			say(jr, "#%d ERROR (exit code %d)", ev->step, ev->code);
		else
			say(jr, "#%d DONE %.1fs", ev->step, (double)ev->elapsed_ms / 1000.0);
		break;
	case SW_BUILD_EV_LOG:
		if (ev->text)
			say(jr, "#%d %.*s", ev->step, (int)ev->len, ev->text);
		break;
	}
}

/* $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA, or NULL with *err. Caller frees. */
static char *commit_image_ref(job_run *jr, sw_error **err)
{
	const char *img = sw_gitlab_job_var(jr->job, "CI_REGISTRY_IMAGE");
	const char *sha = sw_gitlab_job_var(jr->job, "CI_COMMIT_SHA");
	if (!sha)
		sha = jr->job->sha;
	if (!img || !*img || !sha || !*sha) {
		sw_error_set(
		        err, SW_ERR_INVALID,
		        "SLIPWAY_BUILD/SLIPWAY_PROMOTE need CI_REGISTRY_IMAGE and CI_COMMIT_SHA");
		return NULL;
	}
	return sw_xasprintf("%s:%s", img, sha);
}

static int slipway_build(job_run *jr, const char *dockerfile, char **out_ref, sw_error **err)
{
	if (!*dockerfile || dockerfile[0] == '/' || strstr(dockerfile, ".."))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "SLIPWAY_BUILD=%s: must be a path inside the repository",
		                    dockerfile);
	cleanup_free char *ref = commit_image_ref(jr, err);
	if (!ref)
		return sw_error_code_of(*err);
	cleanup_free char *df = sw_path_join(jr->checkout, dockerfile);
	const char *ctxv = sw_gitlab_job_var(jr->job, "SLIPWAY_BUILD_CONTEXT");
	if (ctxv && (ctxv[0] == '/' || strstr(ctxv, "..")))
		return sw_error_set(
		        err, SW_ERR_INVALID,
		        "SLIPWAY_BUILD_CONTEXT=%s: must be a path inside the repository", ctxv);
	cleanup_free char *ctx = sw_path_join(jr->checkout, ctxv && *ctxv ? ctxv : ".");
	const char *tags[] = { ref, NULL };
	sw_build_opts bo;
	memset(&bo, 0, sizeof(bo));
	bo.context_dir = ctx;
	bo.dockerfile = df;
	bo.tags = tags;
	bo.push = tags;
	bo.state_dir = jr->state_dir;
	bo.runtime = jr->ctx->cfg ? jr->ctx->cfg->runtime : NULL;
	bo.source_date_epoch = -1;
	bo.compression = SW_OCI_COMPRESS_GZIP;
	bo.registry = &jr->reg;
	bo.on_event = build_event;
	bo.payload = jr;
	bo.cancel = &jr->cancel;
	say(jr, "slipway: building %s as %s", dockerfile, ref);
	int64_t t0 = now_ms();
	sw_build_result res;
	memset(&res, 0, sizeof(res));
	if (sw_build_run(&res, &bo, err) < 0)
		return sw_error_wrap(err, "build of %s", dockerfile);
	say(jr, "slipway: built and pushed %s@%s (%u steps, %u cached) in %.1fs", ref,
	    res.manifest.digest.s, res.steps, res.cached_steps, (double)(now_ms() - t0) / 1000.0);
	sw_build_result_clear(&res);
	*out_ref = ref;
	ref = NULL;
	return 0;
}

static int slipway_promote(job_run *jr, const char *list, sw_error **err)
{
	cleanup_free char *ref_s = commit_image_ref(jr, err);
	if (!ref_s)
		return sw_error_code_of(*err);
	cleanup_free char *store_dir = sw_path_join(jr->state_dir, "store");
	sw_oci_store *store = NULL;
	sw_oci_registry *reg = NULL;
	sw_oci_ref ref;
	memset(&ref, 0, sizeof(ref));
	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	int rc = sw_oci_store_open(&store, store_dir, true, err);
	if (rc == 0)
		rc = sw_oci_ref_parse(&ref, ref_s, err);
	if (rc == 0)
		rc = sw_oci_registry_new(&reg, ref.registry, &jr->reg, err);
	if (rc == 0) {
		sw_error *e = NULL;
		rc = sw_oci_store_resolve(&desc, store, ref_s, &e);
		if (rc < 0) {
			sw_error_free(e);
			say(jr, "slipway: %s is not in the local store: pulling it", ref_s);
			rc = sw_oci_registry_pull(&desc, reg, store, &ref, NULL, err);
			if (rc == 0)
				rc = sw_oci_store_tag(store, ref_s, &desc, err);
		} else {
			say(jr, "slipway: promoting %s (%s) from the local store", ref_s,
			    desc.digest.s);
		}
	}
	cleanup_free char *copy = sw_xstrdup(list);
	char *save = NULL;
	for (char *tag = strtok_r(copy, " ,\n\t", &save); rc == 0 && tag;
	     tag = strtok_r(NULL, " ,\n\t", &save)) {
		for (char *p = tag; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == '-'))
				*p = '-';
		sw_oci_ref to = { .registry = ref.registry,
			          .repository = ref.repository,
			          .tag = tag };
		rc = sw_oci_registry_push(reg, store, &desc, &to, err);
		if (rc == 0)
			say(jr, "slipway: promoted %s as %s/%s:%s", desc.digest.s, ref.registry,
			    ref.repository, tag);
	}
	sw_oci_descriptor_clear(&desc);
	sw_oci_ref_clear(&ref);
	sw_oci_registry_free(reg);
	sw_oci_store_free(store);
	return rc < 0 ? sw_error_wrap(err, "SLIPWAY_PROMOTE") : 0;
}

/* ---------------------------------------------------------------- cancellation */

static void *cancel_watch(void *arg)
{
	job_run *jr = arg;
	while (!__atomic_load_n(&jr->done, __ATOMIC_ACQUIRE)) {
		volatile sig_atomic_t *c = jr->ctx->cancel;
		if (c && *c > jr->cancel) {
			jr->cancel_signal = SIGTERM;
			jr->cancel = *c;
		}
		struct timespec ts = { .tv_sec = 0, .tv_nsec = 100 * 1000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* ---------------------------------------------------------------- the job */

static void commit_from_git_info(sw_git_commit *c, const sw_gitlab_job *j)
{
	if (!j->ref)
		return;
	bool tag = j->ref_type && strcmp(j->ref_type, "tag") == 0;
	free(c->branch);
	free(c->tag);
	free(c->ref_name);
	c->branch = tag ? NULL : sw_xstrdup(j->ref);
	c->tag = tag ? sw_xstrdup(j->ref) : NULL;
	c->ref_name = sw_xstrdup(j->ref);
}

/* Copies of the config's strings a run needs (a reload may free the config meanwhile). */
typedef struct cfg_copy {
	int backend;
	char *runtime, *docker_host;
	char **secrets;
	uint64_t memory, pids;
	uint32_t cpu;
} cfg_copy;

sw_work_state sw_gitlab_job_run(const sw_gitlab_ctx *ctx, const char *payload, size_t len)
{
	job_run run;
	memset(&run, 0, sizeof(run));
	job_run *jr = &run;
	jr->ctx = ctx;
	sw_error *err = NULL;
	if (sw_gitlab_job_parse(&jr->job, payload, len, &err) < 0) {
		SW_LOG(SW_LOG_ERROR, "gitlab %s: %s", ctx->name, sw_error_msg(err));
		sw_error_free(err);
		return SW_WORK_ERROR;
	}
	sw_gitlab_job *j = jr->job;
	sw_work_state result = SW_WORK_ERROR;
	const char *state = "failed", *reason = "runner_system_failure";
	int exit_code = 1;
	sw_pipeline *pl = NULL;
	char **secret_args = NULL, **mask = NULL;
	char *built = NULL;
	pthread_t watcher;
	bool watching = false;
	sw_git_commit commit;
	memset(&commit, 0, sizeof(commit));
	cfg_copy cc;
	memset(&cc, 0, sizeof(cc));
	jr->zips = sw_xcalloc(j->n_artifacts + 1, sizeof(char *));

	sw_gitlab_trace_opts to = {
		.url = ctx->url, .job_id = j->id, .token = j->token, .cancel = &jr->cancel
	};
	if (sw_gitlab_trace_new(&jr->trace, &to, &err) < 0 ||
	    sw_http_client_new(&jr->http,
	                       &(sw_http_opts){ .max_retries = 4, .backoff_base_ms = 100 },
	                       &err) < 0) {
		SW_LOG(SW_LOG_ERROR, "gitlab %s: job %" PRId64 ": %s", ctx->name, j->id,
		       sw_error_msg(err));
		goto out;
	}
	/* accept it */
	{
		bool abort = false;
		long st = sw_gitlab_trace_put_running(jr->trace, &abort);
		if (abort) {
			SW_LOG(SW_LOG_INFO,
			       "gitlab %s: job %" PRId64 " was withdrawn by the server", ctx->name,
			       j->id);
			result = SW_WORK_CANCELLED;
			goto out_quiet;
		}
		if (st == 0 || st >= 400)
			SW_LOG(SW_LOG_WARN, "gitlab %s: job %" PRId64 ": accepting it: HTTP %ld",
			       ctx->name, j->id, st);
	}
	if (sw_gitlab_trace_start(jr->trace, &err) < 0)
		goto fail;
	if (pthread_create(&watcher, NULL, cancel_watch, jr) == 0)
		watching = true;
	SW_LOG(SW_LOG_INFO, "gitlab %s: running job %" PRId64 " (%s)", ctx->name, j->id, j->name);

	const sw_agent_config *cfg = ctx->cfg;
	if (cfg) {
		cc.backend = cfg->backend;
		cc.runtime = cfg->runtime ? sw_xstrdup(cfg->runtime) : NULL;
		cc.docker_host = cfg->docker_host ? sw_xstrdup(cfg->docker_host) : NULL;
		cc.memory = cfg->memory_limit;
		cc.pids = cfg->pids_limit;
		cc.cpu = cfg->cpu_millis;
	}
	jr->state_dir = sw_gitlab_state_dir(cfg);
	registry_setup(jr);
	{
		char host[256] = "";
		gethostname(host, sizeof(host) - 1);
		say(jr, "Running with slipway on %s (%s)", host, ctx->name);
	}

	/* the job's folder and the checkout */
	{
		cleanup_free char *jobs = sw_xasprintf("%s/agent/gitlab/jobs", jr->state_dir);
		jr->dir = sw_xasprintf("%s/%s-%" PRId64, jobs, ctx->name, j->id);
		if (sw_fs_mkdir_p(jobs, 0700, &err) < 0 || sw_ws_remove_tree(jr->dir, &err) < 0 ||
		    sw_fs_mkdir_p(jr->dir, 0700, &err) < 0)
			goto fail;
		jr->checkout = sw_path_join(jr->dir, "src");
	}
	if (!j->repo_url || !j->sha) {
		sw_error_set(&err, SW_ERR_INVALID, "the job has no git_info (repo_url and sha)");
		goto fail;
	}
	{
		cleanup_free char *safe = sw_gitlab_url_safe(j->repo_url);
		say(jr, "Fetching changes from %s", safe);
		cleanup_free char *tmp = sw_path_join(jr->dir, "git");
		if (sw_fs_mkdir_p(tmp, 0700, &err) < 0)
			goto fail;
		if (sw_git_checkout(&commit, j->repo_url, j->sha, jr->checkout, tmp, &err) < 0) {
			sw_error_wrap(&err, "checkout");
			goto fail;
		}
		commit_from_git_info(&commit, j);
		say(jr, "Checking out %s as %s", commit.short_sha, j->ref ? j->ref : commit.sha);
		sw_error *e = NULL;
		if (sw_fs_rm_rf(tmp, &e) < 0)
			sw_error_free(e);
	}
	/* the dependencies' artifacts */
	for (size_t i = 0; i < j->n_deps; i++) {
		const sw_gitlab_dep *d = &j->deps[i];
		if (!d->has_file)
			continue;
		say(jr, "Downloading artifacts for %s (%" PRId64 ")", d->name ? d->name : "?",
		    d->id);
		if (download_dependency(jr, d, &err) < 0)
			goto fail;
	}
	/* SLIPWAY_BUILD */
	const char *build = sw_gitlab_job_var(j, "SLIPWAY_BUILD");
	if (build && *build) {
		if (slipway_build(jr, build, &built, &err) < 0) {
			if (jr->cancel)
				goto cancelled;
			say(jr, "ERROR: %s", sw_error_msg(err));
			sw_error_clear(&err);
			reason = "script_failure";
			exit_code = 1;
			goto final;
		}
	}
	/* the job */
	if (!j->image && !built) {
		sw_error_set(&err, SW_ERR_INVALID,
		             "the job names no image (`image:` in .gitlab-ci.yml) and slipway has "
		             "no default image");
		reason = "script_failure";
		goto fail_reason;
	}
	if (sw_gitlab_pipeline(&pl, &secret_args, &mask, j, j->image ? NULL : built, &err) < 0) {
		reason = "script_failure";
		goto fail_reason;
	}
	{
		cleanup_free char *outdir = sw_xasprintf("%s/agent/runs/gitlab_%s_%" PRId64,
		                                         jr->state_dir, ctx->name, j->id);
		cleanup_free char *repo = sw_gitlab_url_safe(j->repo_url);
		sw_run_opts o;
		memset(&o, 0, sizeof(o));
		o.repo = repo;
		o.rev = j->sha;
		o.output_dir = outdir;
		o.backend = cc.backend;
		o.runtime = cc.runtime;
		o.docker_host = cc.docker_host;
		o.secret_args = secret_args;
		o.registry = &jr->reg;
		o.memory_limit = cc.memory;
		o.pids_limit = cc.pids;
		o.cpu_millis = cc.cpu;
		o.progress = SW_CONSOLE_PLAIN;
		/* the run's console goes to OUT/console.log, not into the agent's log (the job's
		 * output reaches GitLab through on_output) */
		cleanup_free char *console_path = sw_path_join(outdir, "console.log");
		sw_error *ce = NULL;
		FILE *console = NULL;
		if (sw_fs_mkdir_p(outdir, 0755, &ce) < 0)
			sw_error_free(ce);
		else
			console = fopen(console_path, "we");
		o.console_out = console ? console : stderr;
		o.max_jobs = 1;
		o.no_sweep = true; /* the agent sweeps */
		o.cancel = &jr->cancel;
		o.cancel_signal = &jr->cancel_signal;
		o.pipeline = pl;
		o.checkout_dir = jr->checkout;
		o.commit = &commit;
		o.no_build = true;
		o.mask_values = mask;
		o.on_output = on_output;
		o.on_job_end = on_job_end;
		o.hook_payload = jr;
		say(jr, "Using image %s", pl->jobs[0].image);
		int rc = sw_run_pipeline(&o);
		if (console)
			fclose(console);
		if (sw_gitlab_trace_aborted(jr->trace)) {
			result = SW_WORK_CANCELLED;
			goto out_quiet;
		}
		if (jr->cancel && !jr->ended)
			goto cancelled;
		if (!jr->ended) {
			/* image, services, infrastructure: the reason is in the trace */
			reason = "runner_system_failure";
			exit_code = rc > 0 ? rc : 1;
			goto final;
		}
		exit_code = jr->end_exit;
	}
	/* artifacts, even of a failed job when it says so */
	for (size_t i = 0; i < j->n_artifacts; i++) {
		if (!jr->zips[i])
			continue;
		if (upload_artifact(jr, &j->artifacts[i], jr->zips[i], &err) < 0) {
			say(jr, "ERROR: Uploading artifacts: %s", sw_error_msg(err));
			sw_error_clear(&err);
			if (jr->end_state == SW_JOB_PASSED) {
				reason = "runner_system_failure";
				exit_code = 1;
				goto final;
			}
		} else {
			say(jr, "Uploading artifacts to coordinator... 201 Created");
		}
	}
	if (jr->end_state == SW_JOB_TIMED_OUT) {
		say(jr, "ERROR: Job failed: execution took longer than %" PRId64 " seconds",
		    j->timeout_s);
		reason = "job_execution_timeout";
		goto final;
	}
	if (jr->end_state != SW_JOB_PASSED) {
		say(jr, "ERROR: Job failed: exit code %d", jr->end_exit);
		reason = "script_failure";
		goto final;
	}
	/* SLIPWAY_PROMOTE, once the job passed */
	const char *promote = sw_gitlab_job_var(j, "SLIPWAY_PROMOTE");
	if (promote && *promote) {
		if (slipway_promote(jr, promote, &err) < 0) {
			say(jr, "ERROR: %s", sw_error_msg(err));
			sw_error_clear(&err);
			reason = "runner_system_failure";
			exit_code = 1;
			goto final;
		}
	}
	say(jr, "Job succeeded");
	state = "success";
	reason = NULL;
	exit_code = 0;
	goto final;

cancelled:
	say(jr, "ERROR: Job failed: canceled");
	reason = "job_canceled";
	exit_code = 1;
	result = SW_WORK_CANCELLED;
	goto final;
fail:
	reason = "runner_system_failure";
fail_reason:
	if (jr->cancel && !sw_gitlab_trace_aborted(jr->trace))
		goto cancelled;
	if (sw_gitlab_trace_aborted(jr->trace)) {
		result = SW_WORK_CANCELLED;
		goto out_quiet;
	}
	say(jr, "ERROR: %s", err ? sw_error_msg(err) : "failed");
	sw_error_clear(&err);
	exit_code = 1;
final:
	if (jr->trace) {
		if (sw_gitlab_trace_finish(jr->trace, state, reason, exit_code, &err) < 0) {
			SW_LOG(SW_LOG_ERROR, "gitlab %s: %s", ctx->name, sw_error_msg(err));
			sw_error_clear(&err);
		}
	}
	if (result != SW_WORK_CANCELLED)
		result = reason == NULL                                 ? SW_WORK_PASSED
		         : strcmp(reason, "runner_system_failure") == 0 ? SW_WORK_ERROR
		                                                        : SW_WORK_FAILED;
	SW_LOG(SW_LOG_INFO, "gitlab %s: job %" PRId64 " %s%s%s", ctx->name, j->id, state,
	       reason ? ": " : "", reason ? reason : "");
	goto out;
out_quiet:
	SW_LOG(SW_LOG_INFO, "gitlab %s: job %" PRId64 " ended by the server", ctx->name, j->id);
out:
	__atomic_store_n(&jr->done, 1, __ATOMIC_RELEASE);
	if (watching)
		pthread_join(watcher, NULL);
	sw_gitlab_trace_free(jr->trace);
	sw_http_client_free(jr->http);
	if (jr->dir) {
		sw_error *e = NULL;
		if (sw_ws_remove_tree(jr->dir, &e) < 0) {
			SW_LOG(SW_LOG_WARN, "gitlab %s: cleanup: %s", ctx->name, sw_error_msg(e));
			sw_error_free(e);
		}
	}
	for (size_t i = 0; i < j->n_artifacts; i++)
		free(jr->zips[i]);
	free(jr->zips);
	for (size_t i = 0; i < jr->n_creds; i++) {
		free(jr->creds[i].registry);
		free(jr->creds[i].username);
		free(jr->creds[i].password);
	}
	free(jr->creds);
	sw_pipeline_free(pl);
	sw_strv_free(secret_args);
	sw_strv_free(mask);
	free(built);
	free(cc.runtime);
	free(cc.docker_host);
	sw_git_commit_clear(&commit);
	free(jr->dir);
	free(jr->checkout);
	free(jr->state_dir);
	sw_gitlab_job_free(j);
	sw_error_free(err);
	return result;
}
