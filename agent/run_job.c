/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One job of `slipway run`, every attempt: its secrets and image, a workspace of its own (an
 * overlay over the checkout, bind-mounted at CI_PROJECT_DIR), the job cache restored, a pod
 * (network) with the services started in it and checked for readiness, the `run` commands as
 * one `sh -e -c` script that echoes each command, `after_run` always, then JUnit reports,
 * artifacts and the cache collected, and everything torn down on every path. Output is masked
 * before it reaches the console, the log file, the events or the JUnit tail.
 */
#include "agent/agent_internal.h"
#include "cache/cache.h"
#include "executor/executor.h"
#include "pipeline/pipeline.h"
#include "reporters/reporters.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_TIMEOUT_MS (3600 * 1000)
#define AFTER_RUN_TIMEOUT_MS (5 * 60 * 1000)
#define TAIL_BYTES 4096
#define TAIL_LINES 30
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* A file name for a job or service ("a/b" -> "a_b"). */
static char *file_part(const char *s)
{
	char *o = sw_xstrdup(s);
	for (char *p = o; *p; p++)
		if (*p == '/' || *p == '\0' || (p == o && *p == '.'))
			*p = '_';
	return o;
}

/* ---------------------------------------------------------------- output of a job */

typedef struct job_out {
	sw_run *r;
	sw_run_job *j;
	FILE *log;
	sw_buf tail;
	sw_mask *mask;
} job_out;

static void out_masked(const char *data, size_t len, void *payload)
{
	job_out *jo = payload;
	if (jo->log) {
		fwrite(data, 1, len, jo->log);
		fflush(jo->log);
	}
	if (jo->r->o->on_output)
		jo->r->o->on_output(data, len, jo->r->o->hook_payload);
	sw_console_job_output(jo->r->console, jo->j->console_id, data, len);
	sw_error *e = NULL;
	if (jo->tail.len + len > 2 * TAIL_BYTES) {
		size_t keep = jo->tail.len > TAIL_BYTES ? TAIL_BYTES : jo->tail.len;
		memmove(jo->tail.data, jo->tail.data + jo->tail.len - keep, keep);
		jo->tail.len = keep;
		jo->tail.data[keep] = 0;
	}
	if (len > 2 * TAIL_BYTES) {
		data += len - TAIL_BYTES;
		len = TAIL_BYTES;
	}
	if (sw_buf_append(&jo->tail, data, len, &e) < 0)
		sw_error_free(e);
}

static void out_exec(sw_exec_stream stream, const char *data, size_t len, void *payload)
{
	(void)stream;
	job_out *jo = payload;
	sw_mask_feed(jo->mask, data, len);
}

/* A line of slipway's own in the job's stream (masked like the rest). */
static void say(job_out *jo, const char *fmt, ...) SW_PRINTF(2, 3);
static void say(job_out *jo, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	cleanup_free char *line = sw_xasprintf("slipway: %s\n", m);
	sw_mask_feed(jo->mask, line, strlen(line));
}

/* The last TAIL_LINES lines of the tail. Caller frees. */
static char *tail_text(const sw_buf *b)
{
	if (!b->data || !b->len)
		return sw_xstrdup("");
	const char *end = b->data + b->len;
	const char *p = end;
	if (p > b->data && p[-1] == '\n')
		p--;
	int lines = 0;
	while (p > b->data) {
		if (p[-1] == '\n' && ++lines == TAIL_LINES)
			break;
		p--;
	}
	return sw_xstrndup(p, (size_t)(end - p));
}

/* A plain file sink with its own mask (services). */
typedef struct file_out {
	FILE *f;
	sw_mask *mask;
} file_out;

static void file_masked(const char *data, size_t len, void *payload)
{
	file_out *fo = payload;
	if (fo->f) {
		fwrite(data, 1, len, fo->f);
		fflush(fo->f);
	}
}

static void file_exec(sw_exec_stream stream, const char *data, size_t len, void *payload)
{
	(void)stream;
	file_out *fo = payload;
	sw_mask_feed(fo->mask, data, len);
}

/* ---------------------------------------------------------------- env and scripts */

static void env_merge_image(char ***env, const sw_oci_config *cfg)
{
	bool path = false;
	for (size_t i = 0; cfg->env && cfg->env[i]; i++) {
		const char *eq = strchr(cfg->env[i], '=');
		if (!eq)
			continue;
		cleanup_free char *k = sw_xstrndup(cfg->env[i], (size_t)(eq - cfg->env[i]));
		sw_run_env_set(env, k, eq + 1);
		path = path || strcmp(k, "PATH") == 0;
	}
	if (!path)
		sw_run_env_set(env, "PATH", DEFAULT_PATH);
}

static void env_merge_list(char ***env, char *const *list)
{
	for (size_t i = 0; list && list[i]; i++) {
		const char *eq = strchr(list[i], '=');
		if (!eq)
			continue;
		cleanup_free char *k = sw_xstrndup(list[i], (size_t)(eq - list[i]));
		sw_run_env_set(env, k, eq + 1);
	}
}

/* Expand each value of `kvs` against *env (as it is so far) and set it. */
static int env_merge_kvs(char ***env, const sw_pl_kvs *kvs, const char *file, sw_error **err)
{
	for (size_t i = 0; i < kvs->n; i++) {
		cleanup_free char *v = NULL;
		if (sw_pl_expand(&v, kvs->v[i].value, sw_run_env_lookup, NULL, *env, err) < 0)
			return sw_error_wrap(err, "%s:%d:%d: env %s", file, kvs->v[i].pos.line,
			                     kvs->v[i].pos.column, kvs->v[i].key);
		sw_run_env_set(env, kvs->v[i].key, v);
	}
	return 0;
}

/* Append to a script buffer (capped at 64 MiB: a pipeline file is at most 4). */
static void put(sw_buf *b, const char *s, size_t n)
{
	sw_error *e = NULL;
	if (sw_buf_append(b, s, n, &e) < 0)
		sw_error_free(e);
}

static void puts_(sw_buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Append `s` in single quotes for sh. */
static void sh_quote(sw_buf *b, const char *s)
{
	puts_(b, "'");
	for (const char *p = s; *p; p++) {
		if (*p == '\'')
			puts_(b, "'\\''");
		else
			put(b, p, 1);
	}
	puts_(b, "'");
}

/* The commands as one script that prints "$ cmd" before each (GitLab's look). */
static char *script_of(const sw_pl_strs *cmds)
{
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; i < cmds->n; i++) {
		cleanup_free char *shown = sw_xasprintf("$ %s", cmds->v[i]);
		puts_(&b, "printf '%s\\n' ");
		sh_quote(&b, shown);
		puts_(&b, "\n");
		puts_(&b, cmds->v[i]);
		puts_(&b, "\n");
	}
	return sw_buf_steal(&b, NULL);
}

/* ${checksum(PATH)} of a cache key: the file inside the workspace. */
static int checksum_in_ws(char **out_hex, const char *path, void *payload, sw_error **err)
{
	const char *root = payload;
	cleanup_close int rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return sw_error_os(err, errno, "open %s", root);
	cleanup_close int fd = -1;
	if (sw_path_open_in_root(&fd, rootfd, path, O_RDONLY | O_CLOEXEC, 0, err) < 0)
		return sw_error_wrap(err, "checksum(%s)", path);
	sw_oci_hasher *h = sw_oci_hasher_new();
	char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sw_oci_hasher_free(h);
			return sw_error_os(err, errno, "checksum(%s)", path);
		}
		if (n == 0)
			break;
		sw_oci_hasher_update(h, buf, (size_t)n);
	}
	sw_digest d;
	sw_oci_hasher_final(h, &d);
	sw_oci_hasher_free(h);
	*out_hex = sw_xstrdup(sw_oci_digest_hex(&d));
	return 0;
}

typedef struct key_ctx {
	char **env;
	const char *ws;
} key_ctx;

static const char *key_lookup(const char *name, void *payload)
{
	return sw_run_env_get(((key_ctx *)payload)->env, name);
}

static int key_checksum(char **out_hex, const char *path, void *payload, sw_error **err)
{
	return checksum_in_ws(out_hex, path, (void *)((key_ctx *)payload)->ws, err);
}

/* ---------------------------------------------------------------- services */

typedef struct svc {
	sw_run *r;
	sw_run_job *j;
	const sw_pl_service *ps;
	sw_exec_pod *pod;
	char *image;
	sw_oci_config cfg;
	char **argv;
	char **env;
	volatile sig_atomic_t stop;
	pthread_t tid;
	bool started;
	int finished; /* __atomic */
	sw_exec_result res;
	int rc;
	sw_error *err;
	file_out fo;
} svc;

static void *svc_main(void *arg)
{
	svc *s = arg;
	sw_exec_task t = {
		.image = s->image,
		.argv = s->argv,
		.env = s->env,
		.cwd = s->cfg.working_dir && *s->cfg.working_dir ? s->cfg.working_dir : NULL,
		.user = s->cfg.user && *s->cfg.user ? s->cfg.user : NULL,
		.name = s->ps->name,
		.cancel = &s->stop,
		.on_output = file_exec,
		.payload = &s->fo,
	};
	cleanup_free char *label = sw_xasprintf("svc-%s", s->ps->name);
	t.name = label;
	s->rc = sw_exec_pod_run(&s->res, s->pod, &t, &s->err);
	__atomic_store_n(&s->finished, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void svc_event(sw_run *r, const sw_pl_job *pj, const svc *s, const char *state, int64_t ms,
                      const char *error)
{
	json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:I}", "job", pj->name, "name", s->ps->name,
	                      "image", s->ps->image, "state", state, "duration_ms", (json_int_t)ms);
	if (error) {
		cleanup_free char *m =
		        sw_mask_string((const char *const *)r->mask, sw_strv_len(r->mask), error);
		json_object_set_new(f, "error", json_string(m));
	}
	sw_run_emit(r, "service", f);
}

/* Wait until service s is ready (or never had a check). */
static int svc_wait_ready(svc *s, job_out *jo, sw_error **err)
{
	sw_run *r = s->r;
	const sw_pl_ready *rd = &s->ps->ready;
	int64_t timeout = rd->timeout_ms > 0 ? rd->timeout_ms : 60000;
	int64_t interval = rd->interval_ms > 0 ? rd->interval_ms : 500;
	if (rd->tcp > 0) {
		int rc = sw_exec_pod_wait_tcp(s->pod, rd->tcp, timeout, interval, &r->cancel, err);
		if (rc < 0)
			return sw_error_wrap(err, "service %s: port %d", s->ps->name, rd->tcp);
	}
	if (rd->run) {
		int64_t deadline = now_ms() + timeout;
		char *argv[] = { "sh", "-c", rd->run, NULL };
		for (int n = 1;; n++) {
			if (r->cancel)
				return sw_error_set(err, SW_ERR_CANCELLED, "cancelled");
			if (__atomic_load_n(&s->finished, __ATOMIC_ACQUIRE))
				return sw_error_set(
				        err, SW_ERR_GENERIC,
				        "service %s exited (code %d) before it was ready",
				        s->ps->name, s->res.exit_code);
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return sw_error_set(err, SW_ERR_TIMEOUT,
				                    "service %s: `%s` did not succeed within %.0fs",
				                    s->ps->name, rd->run, (double)timeout / 1000.0);
			cleanup_free char *label = sw_xasprintf("ready-%s", s->ps->name);
			sw_exec_task t = {
				.image = s->image,
				.argv = argv,
				.env = s->env,
				.name = label,
				.timeout_ms = left,
				.cancel = &r->cancel,
				.on_output = file_exec,
				.payload = &s->fo,
			};
			sw_exec_result res;
			int rc = sw_exec_pod_run(&res, s->pod, &t, err);
			if (rc < 0)
				return sw_error_wrap(err, "service %s: readiness check",
				                     s->ps->name);
			if (res.exit_code == 0 && !res.timed_out && !res.cancelled)
				break;
			if (n == 1)
				say(jo, "waiting for service %s (`%s`)", s->ps->name, rd->run);
			int64_t nap =
			        interval < deadline - now_ms() ? interval : deadline - now_ms();
			if (nap > 0)
				sleep_ms(nap);
		}
	}
	if (__atomic_load_n(&s->finished, __ATOMIC_ACQUIRE) && (rd->tcp > 0 || rd->run))
		return sw_error_set(err, SW_ERR_GENERIC, "service %s exited (code %d)", s->ps->name,
		                    s->res.exit_code);
	return 0;
}

/* ---------------------------------------------------------------- one attempt */

typedef enum { OUT_PASSED, OUT_FAILED, OUT_TIMED_OUT, OUT_CANCELLED, OUT_ERROR } outcome;

typedef struct job_ctx {
	sw_run *r;
	sw_run_job *j;
	const sw_pl_job *pj;
	job_out *jo;
	char *image;
	sw_oci_config cfg;
	char **secret_values; /* parallel to pj->secrets */
	char *log_name;       /* file part of the job name */
} job_ctx;

static bool artifacts_wanted(const sw_pl_artifacts *a, outcome oc)
{
	if (a->paths.n == 0)
		return false;
	switch (a->when) {
	case SW_PL_ALWAYS:
		return true;
	case SW_PL_ON_FAILURE:
		return oc == OUT_FAILED || oc == OUT_TIMED_OUT;
	default:
		return oc == OUT_PASSED;
	}
}

/* Copy a job's report file `rel` (at `src`, in the workspace) to OUT/reports/<job>/<rel> with
 * every secret value masked; *out is the copy's path. Reports over 64 MiB are refused. */
static int masked_report_copy(char **out, job_ctx *c, const char *src, const char *rel,
                              sw_error **err)
{
	sw_run *r = c->r;
	*out = NULL;
	cleanup_free char *text = NULL;
	size_t len = 0;
	if (sw_fs_read_file(&text, &len, src, (size_t)64 << 20, err) < 0)
		return sw_error_code_of(*err);
	if (strlen(text) != len)
		return sw_error_set(err, SW_ERR_INVALID, "%s: not a text file (NUL bytes)", rel);
	cleanup_free char *masked =
	        sw_mask_string((const char *const *)r->mask, sw_strv_len(r->mask), text);
	cleanup_free char *path = sw_xasprintf("%s/reports/%s/%s", r->out_dir, c->log_name, rel);
	cleanup_free char *dir = sw_xstrdup(path);
	*strrchr(dir, '/') = '\0';
	if (sw_fs_mkdir_p(dir, 0755, err) < 0 ||
	    sw_fs_write_atomic(path, masked, strlen(masked), 0644, err) < 0)
		return sw_error_code_of(*err);
	*out = path;
	path = NULL;
	return 0;
}

/* After the job: JUnit reports, artifacts, the cache. Problems are told, never fatal. */
static void collect(job_ctx *c, const char *ws, outcome oc, const char *cache_key)
{
	sw_run *r = c->r;
	const sw_pl_job *pj = c->pj;
	sw_error *e = NULL;
	if (pj->junit.n > 0) {
		cleanup_strv char **files = NULL;
		if (sw_ws_glob(&files, ws, (const char *const *)pj->junit.v, pj->junit.n, &e) < 0) {
			say(c->jo, "reports.junit: %s", sw_error_msg(e));
			sw_error_clear(&e);
		}
		for (size_t i = 0; files && files[i]; i++) {
			/* a masked copy in the output folder is what gets merged: a report may
			 * quote a secret the job printed */
			cleanup_free char *src = sw_path_join(ws, files[i]);
			cleanup_free char *p = NULL;
			if (masked_report_copy(&p, c, src, files[i], &e) < 0) {
				say(c->jo, "reports.junit: %s", sw_error_msg(e));
				sw_error_clear(&e);
				continue;
			}
			if (sw_junit_merge_file(r->junit, pj->name, p, &e) < 0) {
				say(c->jo, "reports.junit: %s", sw_error_msg(e));
				sw_error_clear(&e);
			}
		}
		if (!files || !files[0])
			say(c->jo, "reports.junit: no file matches");
	}
	if (artifacts_wanted(&pj->artifacts, oc)) {
		cleanup_strv char **files = NULL;
		cleanup_free char *dest = sw_xasprintf("%s/artifacts/%s", r->out_dir, c->log_name);
		uint64_t bytes = 0;
		if (sw_ws_glob(&files, ws, (const char *const *)pj->artifacts.paths.v,
		               pj->artifacts.paths.n, &e) < 0 ||
		    sw_fs_rm_rf(dest, &e) < 0 || sw_fs_mkdir_p(dest, 0755, &e) < 0 ||
		    (files && files[0] && sw_ws_copy_out(&bytes, ws, files, dest, &e) < 0)) {
			say(c->jo, "artifacts: %s", sw_error_msg(e));
			sw_error_clear(&e);
		} else if (!files || !files[0]) {
			say(c->jo, "artifacts: no file matches");
		} else {
			say(c->jo, "artifacts: %zu path(s), %llu bytes saved to %s",
			    sw_strv_len(files), (unsigned long long)bytes, dest);
		}
	}
	if (cache_key && oc == OUT_PASSED && pj->cache.policy != SW_PL_CACHE_PULL &&
	    pj->cache.paths.n > 0) {
		cleanup_strv char **files = NULL;
		uint64_t bytes = 0;
		if (sw_ws_glob(&files, ws, (const char *const *)pj->cache.paths.v,
		               pj->cache.paths.n, &e) < 0 ||
		    sw_cache_job_save(&bytes, r->cache, cache_key, ws, (const char *const *)files,
		                      sw_strv_len(files), &e) < 0) {
			say(c->jo, "cache: not saved: %s", sw_error_msg(e));
			sw_error_clear(&e);
		} else {
			say(c->jo, "cache: saved (%llu bytes)", (unsigned long long)bytes);
		}
	}
}

/* Set up the file secrets of this attempt: files in the run's tmpfs folder, bind-mounted
 * read-only at /run/secrets/NAME. */
static int secret_files(job_ctx *c, char ***paths, sw_exec_mount **mounts, size_t *n_mounts,
                        char ***env, int attempt, sw_error **err)
{
	for (size_t i = 0; i < c->pj->n_secrets; i++) {
		const sw_pl_secret *s = &c->pj->secrets[i];
		if (!s->as_file) {
			sw_run_env_set(env, s->name, c->secret_values[i]);
			continue;
		}
		cleanup_free char *dir = sw_run_secret_dir(c->r, err);
		if (!dir)
			return sw_error_wrap(err, "secret %s", s->name);
		cleanup_free char *p =
		        sw_xasprintf("%s/%s-%d-%s", dir, c->log_name, attempt, s->name);
		sw_strv_push(paths, p);
		const char *v = c->secret_values[i];
		if (sw_fs_write_atomic(p, v, strlen(v), 0444, err) < 0)
			return sw_error_wrap(err, "secret %s", s->name);
		char *dst = sw_xasprintf("/run/secrets/%s", s->name);
		*mounts = sw_xrealloc(*mounts, (*n_mounts + 1) * sizeof(**mounts));
		(*mounts)[(*n_mounts)++] =
		        (sw_exec_mount){ .type = "bind",
			                 .source = (*paths)[sw_strv_len(*paths) - 1],
			                 .destination = dst,
			                 .readonly = true };
		sw_run_env_set(env, s->name, dst);
	}
	return 0;
}

static outcome attempt_run(job_ctx *c, int attempt, bool *will_retry, int *exit_code,
                           char **message)
{
	sw_run *r = c->r;
	const sw_pl_job *pj = c->pj;
	job_out *jo = c->jo;
	outcome oc = OUT_ERROR;
	sw_error *err = NULL;
	char *upper = NULL, *mp = NULL, *cache_key = NULL;
	sw_exec_pod *pod = NULL;
	svc *svcs = NULL;
	size_t n_svcs = 0;
	char **env = NULL, **secret_paths = NULL, **aliases = NULL;
	sw_exec_mount *mounts = NULL;
	size_t n_mounts = 0;
	char *script = NULL, *after = NULL, *cwd = NULL, *label = NULL;
	*will_retry = false;
	*exit_code = -1;

	/* env: image < variables < pipeline env < job env < secrets */
	env_merge_image(&env, &c->cfg);
	env_merge_list(&env, r->vars);
	char num[16];
	snprintf(num, sizeof(num), "%d", attempt);
	sw_run_env_set(&env, "SLIPWAY_JOB_NAME", pj->name);
	sw_run_env_set(&env, "SLIPWAY_JOB_STAGE", r->pl->stages[pj->stage].name);
	sw_run_env_set(&env, "SLIPWAY_JOB_ATTEMPT", num);
	sw_run_env_set(&env, "CI_JOB_NAME", pj->name);
	sw_run_env_set(&env, "CI_JOB_STAGE", r->pl->stages[pj->stage].name);
	if (env_merge_kvs(&env, &r->pl->env, r->pl->file, &err) < 0 ||
	    env_merge_kvs(&env, &pj->env, r->pl->file, &err) < 0)
		goto infra;

	/* the workspace: an overlay of the checkout with an upper folder of the job's own */
	if (sw_cache_scratch_dir(&upper, r->cache, "ws-", &err) < 0)
		goto infra;
	const char *lowers[] = { r->checkout };
	if (sw_exec_overlay_mount(&mp, r->state_dir, lowers, 1, upper, &err) < 0) {
		sw_error_wrap(&err, "workspace");
		goto infra;
	}
	mounts = sw_xcalloc(1, sizeof(*mounts));
	mounts[0] = (sw_exec_mount){ .type = "bind", .source = mp, .destination = r->workspace };
	n_mounts = 1;

	/* the cache: key (${checksum(PATH)} reads the workspace), then restore */
	if (pj->cache.paths.n > 0) {
		key_ctx kc = { .env = env, .ws = mp };
		const char *tmpl = pj->cache.key ? pj->cache.key : "default";
		sw_error *e2 = NULL;
		if (sw_pl_expand(&cache_key, tmpl, key_lookup, key_checksum, &kc, &e2) < 0) {
			say(jo, "cache: key: %s", sw_error_msg(e2));
			sw_error_free(e2);
			free(cache_key);
			cache_key = NULL;
		} else if (pj->cache.policy != SW_PL_CACHE_PUSH) {
			bool hit = false;
			char *warning = NULL;
			if (sw_cache_job_restore(&hit, &warning, r->cache, cache_key, mp, &e2) <
			    0) {
				say(jo, "cache: not restored: %s", sw_error_msg(e2));
				sw_error_free(e2);
			} else {
				if (warning)
					say(jo, "cache: %s", warning);
				say(jo, "cache: %s", hit ? "restored" : "none yet");
			}
			free(warning);
		}
	}
	if (secret_files(c, &secret_paths, &mounts, &n_mounts, &env, attempt, &err) < 0)
		goto infra;

	/* the pod and its services */
	for (size_t i = 0; i < pj->n_services; i++)
		sw_strv_push(&aliases, pj->services[i].name);
	sw_exec_pod_net net = pj->network == SW_PL_NET_HOST      ? SW_EXEC_POD_NET_HOST
	                      : pj->network == SW_PL_NET_PRIVATE ? SW_EXEC_POD_NET_PRIVATE
	                                                         : SW_EXEC_POD_NET_NONE;
	if (sw_exec_pod_new(&pod, r->backend, net, pj->name, (const char *const *)aliases, &err) <
	    0)
		goto infra;
	svcs = sw_xcalloc(pj->n_services ? pj->n_services : 1, sizeof(*svcs));
	for (size_t i = 0; i < pj->n_services; i++) {
		svc *s = &svcs[i];
		const sw_pl_service *ps = &pj->services[i];
		n_svcs = i + 1;
		s->r = r;
		s->j = c->j;
		s->ps = ps;
		s->pod = pod;
		cleanup_free char *svc_part = file_part(ps->name);
		cleanup_free char *logp = sw_xasprintf("%s/logs/%s.service-%s.log", r->out_dir,
		                                       c->log_name, svc_part);
		s->fo.f = fopen(logp, attempt > 1 ? "ae" : "we");
		s->fo.mask = sw_mask_new((const char *const *)r->mask, sw_strv_len(r->mask),
		                         file_masked, &s->fo);
		cleanup_free char *svc_image = NULL;
		if (sw_pl_expand(&svc_image, ps->image, sw_run_env_lookup, NULL, r->vars, &err) <
		            0 ||
		    sw_run_image_get(&s->image, &s->cfg, r, svc_image, &err) < 0) {
			sw_error_wrap(&err, "service %s", ps->name);
			goto infra;
		}
		env_merge_image(&s->env, &s->cfg);
		env_merge_list(&s->env, r->vars);
		if (env_merge_kvs(&s->env, &ps->env, r->pl->file, &err) < 0)
			goto infra;
		char *const *ep = ps->entrypoint.n ? ps->entrypoint.v : s->cfg.entrypoint;
		size_t n_ep = ps->entrypoint.n ? ps->entrypoint.n : sw_strv_len(s->cfg.entrypoint);
		char *const *cmd = ps->command.n      ? ps->command.v
		                   : ps->entrypoint.n ? NULL
		                                      : s->cfg.cmd;
		size_t n_cmd = ps->command.n ? ps->command.n : sw_strv_len(cmd);
		for (size_t k = 0; k < n_ep; k++)
			sw_strv_push(&s->argv, ep[k]);
		for (size_t k = 0; k < n_cmd; k++)
			sw_strv_push(&s->argv, cmd[k]);
		if (!s->argv) {
			err = NULL;
			sw_error_set(&err, SW_ERR_INVALID,
			             "service %s: image %s has no command and none is given",
			             ps->name, ps->image);
			goto infra;
		}
		say(jo, "starting service %s (%s)", ps->name, svc_image);
		if (pthread_create(&s->tid, NULL, svc_main, s) != 0) {
			sw_error_set(&err, SW_ERR_GENERIC, "service %s: no thread", ps->name);
			goto infra;
		}
		s->started = true;
		svc_event(r, pj, s, "started", 0, NULL);
	}
	for (size_t i = 0; i < n_svcs; i++) {
		svc *s = &svcs[i];
		int64_t t0 = now_ms();
		if (svc_wait_ready(s, jo, &err) < 0) {
			if (sw_error_code_of(err) == SW_ERR_CANCELLED || r->cancel) {
				oc = OUT_CANCELLED;
				goto teardown;
			}
			svc_event(r, pj, s, "failed", now_ms() - t0, sw_error_msg(err));
			goto infra;
		}
		svc_event(r, pj, s, "ready", now_ms() - t0, NULL);
		say(jo, "service %s is ready", s->ps->name);
	}

	/* the commands */
	if (pj->workdir)
		cwd = pj->workdir[0] == '/' ? sw_xstrdup(pj->workdir)
		                            : sw_path_join(r->workspace, pj->workdir);
	else
		cwd = sw_xstrdup(r->workspace);
	sw_run_env_set(&env, "SLIPWAY_WORKSPACE", r->workspace);
	script = script_of(&pj->run);
	char *argv[] = { "sh", "-e", "-c", script, NULL };
	const char *user = pj->user ? pj->user : (c->cfg.user && *c->cfg.user ? c->cfg.user : NULL);
	label = sw_xasprintf("job-%s", pj->name);
	sw_exec_task t = {
		.image = c->image,
		.argv = argv,
		.env = env,
		.cwd = cwd,
		.user = user,
		.mounts = mounts,
		.n_mounts = n_mounts,
		.name = label,
		.timeout_ms = pj->timeout_ms > 0 ? pj->timeout_ms : DEFAULT_TIMEOUT_MS,
		.cancel = &r->cancel,
		.on_output = out_exec,
		.payload = jo,
	};
	sw_exec_result res;
	memset(&res, 0, sizeof(res));
	if (sw_exec_pod_run(&res, pod, &t, &err) < 0) {
		if (sw_error_code_of(err) == SW_ERR_CANCELLED || r->cancel) {
			oc = OUT_CANCELLED;
			goto teardown;
		}
		goto infra;
	}
	*exit_code = res.exit_code;
	if (res.cancelled) {
		oc = OUT_CANCELLED;
		*message = sw_xstrdup("cancelled");
	} else if (res.timed_out) {
		oc = OUT_TIMED_OUT;
		*message = sw_xasprintf("timed out after %.0fs", (double)t.timeout_ms / 1000.0);
		say(jo, "%s", *message);
	} else if (res.exit_code != 0) {
		oc = OUT_FAILED;
		*message = sw_xasprintf("exit code %d", res.exit_code);
		say(jo, "job failed: %s", *message);
	} else {
		oc = OUT_PASSED;
	}

	/* after_run, always (not after a cancel) */
	if (pj->after.n > 0 && oc != OUT_CANCELLED) {
		after = script_of(&pj->after);
		char *aargv[] = { "sh", "-c", after, NULL };
		sw_exec_task at = t;
		at.argv = aargv;
		at.timeout_ms = AFTER_RUN_TIMEOUT_MS;
		cleanup_free char *alabel = sw_xasprintf("after-%s", pj->name);
		at.name = alabel;
		sw_exec_result ares;
		sw_error *e2 = NULL;
		if (sw_exec_pod_run(&ares, pod, &at, &e2) < 0) {
			say(jo, "after_run: %s", sw_error_msg(e2));
			sw_error_free(e2);
		} else if (ares.exit_code != 0) {
			say(jo, "after_run: exit code %d (ignored)", ares.exit_code);
		}
	}
	*will_retry = !r->cancel && attempt <= pj->retry &&
	              (oc == OUT_FAILED || (oc == OUT_TIMED_OUT && pj->retry_on_timeout));
	if (!*will_retry && oc != OUT_CANCELLED && r->o->on_job_end) {
		sw_job_state st = oc == OUT_PASSED   ? SW_JOB_PASSED
		                  : oc == OUT_FAILED ? SW_JOB_FAILED
		                                     : SW_JOB_TIMED_OUT;
		sw_mask_flush(jo->mask);
		r->o->on_job_end(pj->name, mp, (int)st, *exit_code, r->o->hook_payload);
	}
	if (!*will_retry && oc != OUT_CANCELLED)
		collect(c, mp, oc, cache_key);
	goto teardown;

infra:
	oc = OUT_ERROR;
	{
		cleanup_free char *red = sw_redact(sw_error_msg(err));
		cleanup_free char *m =
		        sw_mask_string((const char *const *)r->mask, sw_strv_len(r->mask), red);
		*message = sw_xstrdup(m);
		say(jo, "error: %s", m);
	}
teardown:
	/* services are thrown away with their job: killed at once, as `docker rm -f` does (a
	 * service's PID 1 often has no SIGTERM handler and would cost the whole grace) */
	for (size_t i = 0; i < n_svcs; i++)
		svcs[i].stop = 2;
	for (size_t i = 0; i < n_svcs; i++) {
		svc *s = &svcs[i];
		if (s->started) {
			pthread_join(s->tid, NULL);
			if (s->rc < 0 && sw_error_code_of(s->err) != SW_ERR_CANCELLED)
				say(jo, "service %s: %s", s->ps->name, sw_error_msg(s->err));
		}
		sw_error_free(s->err);
		if (s->fo.mask) {
			sw_mask_flush(s->fo.mask);
			sw_mask_free(s->fo.mask);
		}
		if (s->fo.f)
			fclose(s->fo.f);
		free(s->image);
		sw_oci_config_clear(&s->cfg);
		sw_strv_free(s->argv);
		sw_strv_free(s->env);
	}
	free(svcs);
	if (pod) {
		sw_error *e2 = NULL;
		if (sw_exec_pod_destroy(pod, &e2) < 0) {
			say(jo, "teardown: %s", sw_error_msg(e2));
			sw_error_free(e2);
		}
	}
	if (mp) {
		sw_error *e2 = NULL;
		if (sw_exec_overlay_unmount(mp, &e2) < 0) {
			say(jo, "teardown: %s", sw_error_msg(e2));
			sw_error_free(e2);
		}
	}
	if (upper) {
		sw_error *e2 = NULL;
		if (sw_fs_rm_rf(upper, &e2) < 0) {
			say(jo, "teardown: %s", sw_error_msg(e2));
			sw_error_free(e2);
		}
	}
	for (size_t i = 0; secret_paths && secret_paths[i]; i++)
		unlink(secret_paths[i]);
	for (size_t i = 1; i < n_mounts; i++)
		free((char *)mounts[i].destination);
	free(mounts);
	sw_strv_free(secret_paths);
	sw_strv_free(aliases);
	sw_strv_free(env);
	free(script);
	free(after);
	free(cwd);
	free(label);
	free(cache_key);
	free(mp);
	free(upper);
	sw_error_free(err);
	return oc;
}

/* ---------------------------------------------------------------- the job */

static void job_event(sw_run *r, const sw_pl_job *pj, const char *state, int attempt, int64_t ms,
                      int exit_code, const char *message)
{
	json_t *f = json_pack("{s:s, s:s, s:s, s:i}", "name", pj->name, "stage",
	                      r->pl->stages[pj->stage].name, "state", state, "attempt", attempt);
	if (ms >= 0)
		json_object_set_new(f, "duration_ms", json_integer(ms));
	if (exit_code >= 0)
		json_object_set_new(f, "exit_code", json_integer(exit_code));
	if (message)
		json_object_set_new(f, "message", json_string(message));
	sw_run_emit(r, "job", f);
}

void sw_run_job_execute(sw_run *r, sw_run_job *j)
{
	const sw_pl_job *pj = &r->pl->jobs[j->index];
	job_ctx c = { .r = r, .j = j, .pj = pj };
	job_out jo = { .r = r, .j = j };
	sw_buf_init(&jo.tail, 4 * TAIL_BYTES);
	c.jo = &jo;
	c.log_name = file_part(pj->name);
	cleanup_free char *logp = sw_xasprintf("%s/logs/%s.log", r->out_dir, c.log_name);
	jo.log = fopen(logp, "we");
	jo.mask = sw_mask_new((const char *const *)r->mask, sw_strv_len(r->mask), out_masked, &jo);
	int64_t t0 = now_ms();
	sw_job_state final = SW_JOB_ERROR;
	sw_error *err = NULL;
	cleanup_free char *img = NULL; /* the job's image, expanded */

	sw_console_job_state(r->console, j->console_id, SW_JOB_RUNNING, NULL);
	job_event(r, pj, "running", 1, -1, -1, NULL);

	/* secrets: every one must be given before anything starts */
	c.secret_values = sw_xcalloc(pj->n_secrets + 1, sizeof(char *));
	for (size_t i = 0; i < pj->n_secrets; i++) {
		c.secret_values[i] = sw_run_secret_value(r, pj->secrets[i].name);
		if (!c.secret_values[i]) {
			j->message = sw_xasprintf(
			        "secret %s was not given (--secret %s=VALUE, --secret %s, "
			        "--secret-file %s=PATH or SLIPWAY_SECRET_%s)",
			        pj->secrets[i].name, pj->secrets[i].name, pj->secrets[i].name,
			        pj->secrets[i].name, pj->secrets[i].name);
			say(&jo, "error: %s", j->message);
			goto done;
		}
	}
	/* the image */
	if (pj->image) {
		if (sw_pl_expand(&img, pj->image, sw_run_env_lookup, NULL, r->vars, &err) < 0) {
			j->message = sw_xstrdup(sw_error_msg(err));
			say(&jo, "error: %s", j->message);
			goto done;
		}
	} else if (r->image) {
		img = sw_xstrdup(r->image);
	}
	if (!img || !img[0]) {
		j->message = sw_xstrdup("no image: the commit's image was not built");
		goto done;
	}
	if (sw_run_image_get(&c.image, &c.cfg, r, img, &err) < 0) {
		cleanup_free char *red = sw_redact(sw_error_msg(err));
		j->message = sw_xstrdup(red);
		say(&jo, "error: %s", j->message);
		goto done;
	}

	for (int attempt = 1;; attempt++) {
		j->attempts = attempt;
		if (attempt > 1) {
			cleanup_free char *d = sw_xasprintf("retry %d", attempt - 1);
			sw_console_job_state(r->console, j->console_id, SW_JOB_RUNNING, d);
			job_event(r, pj, "running", attempt, -1, -1, NULL);
			say(&jo, "--- attempt %d of %d", attempt, pj->retry + 1);
		}
		int64_t ta = now_ms();
		bool will_retry = false;
		int code = -1;
		char *msg = NULL;
		outcome oc = attempt_run(&c, attempt, &will_retry, &code, &msg);
		j->exit_code = code;
		free(j->message);
		j->message = msg;
		static const char *const names[] = { "passed", "failed", "timed out", "cancelled",
			                             "error" };
		if (will_retry) {
			/* the last attempt's state is in the job's final event */
			job_event(r, pj, "retrying", attempt, now_ms() - ta, code,
			          msg ? msg : names[oc]);
			cleanup_free char *why =
			        sw_xasprintf("%s, retrying", msg ? msg : names[oc]);
			sw_console_job_state(r->console, j->console_id, SW_JOB_PENDING, why);
			continue;
		}
		switch (oc) {
		case OUT_PASSED:
			final = SW_JOB_PASSED;
			break;
		case OUT_FAILED:
			final = pj->allow_failure ? SW_JOB_ALLOWED_FAILURE : SW_JOB_FAILED;
			break;
		case OUT_TIMED_OUT:
			final = pj->allow_failure ? SW_JOB_ALLOWED_FAILURE : SW_JOB_TIMED_OUT;
			break;
		case OUT_CANCELLED:
			final = SW_JOB_CANCELLED;
			break;
		case OUT_ERROR:
			final = SW_JOB_ERROR;
			break;
		}
		break;
	}
done:
	sw_mask_flush(jo.mask);
	j->duration_ms = now_ms() - t0;
	j->state = final;
	j->log_tail = tail_text(&jo.tail);
	if (!j->message && final != SW_JOB_PASSED)
		j->message = sw_xstrdup(sw_job_state_name(final));
	sw_console_job_state(r->console, j->console_id, final,
	                     final == SW_JOB_PASSED ? NULL : j->message);
	{
		json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:I}", "name", pj->name, "stage",
		                      r->pl->stages[pj->stage].name, "state",
		                      sw_job_state_name(final), "attempt", j->attempts,
		                      "duration_ms", (json_int_t)j->duration_ms);
		if (j->exit_code >= 0)
			json_object_set_new(f, "exit_code", json_integer(j->exit_code));
		if (j->message && final != SW_JOB_PASSED)
			json_object_set_new(f, "message", json_string(j->message));
		sw_run_emit(r, "job", f);
	}
	sw_mask_free(jo.mask);
	if (jo.log)
		fclose(jo.log);
	sw_buf_free(&jo.tail);
	for (size_t i = 0; i < pj->n_secrets; i++)
		free(c.secret_values[i]);
	free(c.secret_values);
	free(c.image);
	free(c.log_name);
	sw_oci_config_clear(&c.cfg);
	sw_error_free(err);
}
