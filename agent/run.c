/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway run`, the pipeline: sweep what dead slipway processes left, check the commit out,
 * load `.slipway.yml`, build the commit's image, run the stages (jobs in parallel threads,
 * bounded, with `needs` as a DAG over the stage order), promote the tested digest, and write
 * the reports (console, events, JUnit, logs, artifacts) into the output folder. One job's own
 * work (pod, services, workspace, caches, artifacts) is in run_job.c.
 */
#include "agent/agent_internal.h"
#include "builder/builder.h"
#include "cache/cache.h"
#include "executor/executor.h"
#include "pipeline/pipeline.h"
#include "reporters/reporters.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- small helpers */

void sw_run_env_set(char ***env, const char *key, const char *value)
{
	size_t kl = strlen(key);
	char *kv = sw_xasprintf("%s=%s", key, value ? value : "");
	for (size_t i = 0; *env && (*env)[i]; i++) {
		if (strncmp((*env)[i], key, kl) == 0 && (*env)[i][kl] == '=') {
			free((*env)[i]);
			(*env)[i] = kv;
			return;
		}
	}
	sw_strv_push(env, kv);
	free(kv);
}

const char *sw_run_env_get(char *const *env, const char *key)
{
	size_t kl = strlen(key);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], key, kl) == 0 && env[i][kl] == '=')
			return env[i] + kl + 1;
	return NULL;
}

const char *sw_run_env_lookup(const char *name, void *payload)
{
	return sw_run_env_get((char *const *)payload, name);
}

void sw_run_emit(sw_run *r, const char *type, json_t *fields)
{
	if (r->events) {
		json_incref(fields);
		sw_events_emit(r->events, type, fields);
	}
	sw_events_emit(r->events_out, type, fields);
}

/* The start time of a process (sw_proc_starttime), or 0 when it is gone. */
static unsigned long long proc_starttime(pid_t pid)
{
	unsigned long long v = 0;
	return sw_proc_starttime(&v, pid) == 0 ? v : 0;
}

/* The folder for file secrets: /dev/shm/slipway-<pid>-<start>-<n> (tmpfs, never the state;
 * n tells apart the runs of one process: the agent runs several at once). */
static char *secret_dir_name(void)
{
	static unsigned counter;
	unsigned n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
	return sw_xasprintf("/dev/shm/slipway-%d-%llu-%u", (int)getpid(), proc_starttime(getpid()),
	                    n);
}

/* The registry options of this run: the caller's (the agent's config), else the environment. */
static const sw_oci_registry_opts *run_registry(const sw_run *r)
{
	return r->o->registry ? r->o->registry : sw_cli_registry_opts();
}

/* Remove secret folders of dead slipway processes. */
static void sweep_secret_dirs(void)
{
	DIR *d = opendir("/dev/shm");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		int pid;
		unsigned long long st;
		if (sscanf(de->d_name, "slipway-%d-%llu", &pid, &st) != 2)
			continue;
		if (proc_starttime(pid) == st)
			continue;
		cleanup_free char *p = sw_xasprintf("/dev/shm/%s", de->d_name);
		SW_LOG(SW_LOG_INFO, "sweep: removing %s (its process %d is gone)", p, pid);
		sw_error *e = NULL;
		if (sw_fs_rm_rf(p, &e) < 0) {
			SW_LOG(SW_LOG_WARN, "%s", sw_error_msg(e));
			sw_error_free(e);
		}
	}
	closedir(d);
}

void sw_run_sweep(const char *state_dir, const char *runtime, const char *docker_host)
{
	sw_error *err = NULL;
	unsigned removed = 0, pods = 0;
	if (sw_exec_sweep(&removed, state_dir, runtime, &err) < 0) {
		SW_LOG(SW_LOG_WARN, "sweep: %s", sw_error_msg(err));
		sw_error_clear(&err);
	}
	if (sw_exec_pod_sweep(&pods, state_dir, docker_host, &err) < 0) {
		SW_LOG(SW_LOG_WARN, "sweep: %s", sw_error_msg(err));
		sw_error_clear(&err);
	}
	sweep_secret_dirs();
	if (removed || pods)
		SW_LOG(SW_LOG_INFO,
		       "sweep: removed %u container%s and %u namespace%s left by dead processes",
		       removed, removed == 1 ? "" : "s", pods, pods == 1 ? "" : "s");
}

char *sw_run_secret_value(const sw_run *r, const char *name)
{
	size_t nl = strlen(name);
	for (size_t i = 0; r->o->secret_args && r->o->secret_args[i]; i++) {
		const char *a = r->o->secret_args[i];
		if (strncmp(a, name, nl) == 0 && a[nl] == '=')
			return sw_xstrdup(a + nl + 1);
	}
	for (size_t i = 0; r->o->secret_args && r->o->secret_args[i]; i++) {
		if (strcmp(r->o->secret_args[i], name) == 0) {
			const char *v = getenv(name);
			if (v)
				return sw_xstrdup(v);
		}
	}
	for (size_t i = 0; r->o->secret_files && r->o->secret_files[i]; i++) {
		const char *a = r->o->secret_files[i];
		if (strncmp(a, name, nl) == 0 && a[nl] == '=') {
			char *buf = NULL;
			size_t len = 0;
			sw_error *e = NULL;
			if (sw_fs_read_file(&buf, &len, a + nl + 1, 1 << 20, &e) < 0) {
				SW_LOG(SW_LOG_WARN, "secret %s: %s", name, sw_error_msg(e));
				sw_error_free(e);
				return NULL;
			}
			if (len > 0 && buf[len - 1] == '\n')
				buf[--len] = 0;
			return buf;
		}
	}
	cleanup_free char *ev = sw_xasprintf("SLIPWAY_SECRET_%s", name);
	const char *v = getenv(ev);
	return v ? sw_xstrdup(v) : NULL;
}

int sw_run_image_get(char **out_digest, sw_oci_config *cfg, sw_run *r, const char *name,
                     sw_error **err)
{
	pthread_mutex_lock(&r->lock);
	sw_oci_descriptor desc;
	memset(&desc, 0, sizeof(desc));
	sw_error *e = NULL;
	int rc = sw_oci_store_load_image(&desc, NULL, cfg, r->store, name, NULL, &e);
	if (rc == SW_ERR_NOT_FOUND && strncmp(name, "sha256:", 7) != 0) {
		sw_error_clear(&e);
		sw_oci_ref ref;
		memset(&ref, 0, sizeof(ref));
		sw_oci_registry *reg = NULL;
		sw_oci_descriptor pulled;
		memset(&pulled, 0, sizeof(pulled));
		rc = sw_oci_ref_parse(&ref, name, &e);
		if (rc == 0)
			rc = sw_oci_registry_new(&reg, ref.registry, run_registry(r), &e);
		if (rc == 0)
			rc = sw_oci_registry_pull(&pulled, reg, r->store, &ref, NULL, &e);
		if (rc == 0) {
			/* bytes downloaded, for the agent's metrics */
			json_t *f = json_pack("{s:s, s:s, s:s, s:I}", "image", name, "digest",
			                      pulled.digest.s, "state", "done", "bytes",
			                      (json_int_t)sw_oci_registry_stats(reg)->bytes_down);
			sw_run_emit(r, "pull", f);
		}
		if (rc == 0)
			rc = sw_oci_store_tag(r->store, name, &pulled, &e);
		if (rc == 0)
			rc = sw_oci_store_load_image(&desc, NULL, cfg, r->store, name, NULL, &e);
		if (rc < 0)
			sw_error_wrap(&e, "image '%s' is not in the store and could not be pulled",
			              name);
		sw_oci_descriptor_clear(&pulled);
		sw_oci_registry_free(reg);
		sw_oci_ref_clear(&ref);
	}
	pthread_mutex_unlock(&r->lock);
	if (rc < 0) {
		if (err && !*err)
			*err = e;
		else
			sw_error_free(e);
		return rc;
	}
	*out_digest = sw_xstrdup(desc.digest.s);
	sw_oci_descriptor_clear(&desc);
	return 0;
}

/* "team/app.git" -> "app"; "." -> the folder's name. Lowercase letters, digits, '.', '_',
 * '-' (others become '-'), so that it is a store name and a path part. */
static char *project_name(const char *repo)
{
	cleanup_free char *s = sw_xstrdup(repo);
	size_t n = strlen(s);
	while (n > 1 && s[n - 1] == '/')
		s[--n] = 0;
	if (n > 4 && strcmp(s + n - 4, ".git") == 0)
		s[n -= 4] = 0;
	while (n > 1 && s[n - 1] == '/')
		s[--n] = 0;
	const char *base = strrchr(s, '/');
	base = base ? base + 1 : s;
	cleanup_free char *real = NULL;
	if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
		real = realpath(repo, NULL);
		if (real) {
			base = strrchr(real, '/');
			base = base && base[1] ? base + 1 : "project";
		} else {
			base = "project";
		}
	}
	char *out = sw_xstrdup(base);
	for (char *p = out; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (isalnum(c) || c == '.' || c == '_' || c == '-')
			*p = (char)tolower(c);
		else
			*p = '-';
	}
	if (out[0] == '.' || out[0] == '-' || out[0] == '_')
		out[0] = 'p';
	return out;
}

/* STATE/runs/last-id, counted under a flock of STATE/runs/lock. */
static int alloc_pipeline_id(unsigned long *out, const char *state_dir, sw_error **err)
{
	cleanup_free char *runs = sw_path_join(state_dir, "runs");
	if (sw_fs_mkdir_p(runs, 0755, err) < 0)
		return sw_error_wrap(err, "pipeline id");
	cleanup_free char *lock = sw_path_join(runs, "lock");
	cleanup_free char *last = sw_path_join(runs, "last-id");
	cleanup_close int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return sw_error_os(err, errno, "open %s", lock);
	if (flock(fd, LOCK_EX) < 0)
		return sw_error_os(err, errno, "lock %s", lock);
	unsigned long id = 0;
	char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, last, 64, &e) == 0) {
		id = strtoul(buf, NULL, 10);
		free(buf);
	} else {
		sw_error_free(e);
	}
	id++;
	char txt[32];
	int tl = snprintf(txt, sizeof(txt), "%lu\n", id);
	if (sw_fs_write_atomic(last, txt, (size_t)tl, 0644, err) < 0)
		return sw_error_wrap(err, "pipeline id");
	*out = id;
	return 0;
}

/* The agent knows the branch or tag a commit of its mirror came from: that wins over what the
 * checkout finds (a branch hint makes a branch pipeline, a tag hint a tag pipeline). */
static void apply_ref_hints(sw_git_commit *c, const sw_run_opts *o)
{
	bool branch = o->branch_hint && *o->branch_hint;
	bool tag = !branch && o->tag_hint && *o->tag_hint;
	if (!branch && !tag)
		return;
	free(c->branch);
	free(c->tag);
	free(c->ref_name);
	c->branch = branch ? sw_xstrdup(o->branch_hint) : NULL;
	c->tag = tag ? sw_xstrdup(o->tag_hint) : NULL;
	c->ref_name = sw_xstrdup(branch ? o->branch_hint : o->tag_hint);
}

static char *state_dir_resolve(void)
{
	if (sw_cli.state_dir)
		return sw_xstrdup(sw_cli.state_dir);
	const char *env = getenv("SLIPWAY_STATE_DIR");
	if (env && *env)
		return sw_xstrdup(env);
	char *store = sw_oci_store_default_dir();
	char *slash = strrchr(store, '/');
	if (slash && slash != store)
		*slash = 0;
	return store;
}

/* ---------------------------------------------------------------- variables */

static void make_vars(sw_run *r)
{
	const sw_git_commit *c = &r->commit;
	char id[32];
	snprintf(id, sizeof(id), "%lu", r->pipeline_id);
	char ***v = &r->vars;
	sw_run_env_set(v, "SLIPWAY", "true");
	sw_run_env_set(v, "SLIPWAY_COMMIT_SHA", c->sha);
	sw_run_env_set(v, "SLIPWAY_COMMIT_SHORT_SHA", c->short_sha);
	sw_run_env_set(v, "SLIPWAY_BRANCH", c->branch ? c->branch : "");
	sw_run_env_set(v, "SLIPWAY_TAG", c->tag ? c->tag : "");
	sw_run_env_set(v, "SLIPWAY_REF_NAME", c->ref_name ? c->ref_name : c->short_sha);
	sw_run_env_set(v, "SLIPWAY_COMMIT_MESSAGE", c->message ? c->message : "");
	sw_run_env_set(v, "SLIPWAY_COMMIT_TITLE", c->title ? c->title : "");
	sw_run_env_set(v, "SLIPWAY_PIPELINE_ID", id);
	sw_run_env_set(v, "SLIPWAY_WORKSPACE", r->workspace);
	sw_run_env_set(v, "SLIPWAY_PROJECT", r->project);
	sw_run_env_set(v, "SLIPWAY_IMAGE", r->image ? r->image : "");
	sw_run_env_set(v, "CI", "true");
	sw_run_env_set(v, "CI_COMMIT_SHA", c->sha);
	sw_run_env_set(v, "CI_COMMIT_SHORT_SHA", c->short_sha);
	sw_run_env_set(v, "CI_COMMIT_REF_NAME", c->ref_name ? c->ref_name : c->short_sha);
	if (c->branch)
		sw_run_env_set(v, "CI_COMMIT_BRANCH", c->branch);
	if (c->tag)
		sw_run_env_set(v, "CI_COMMIT_TAG", c->tag);
	sw_run_env_set(v, "CI_COMMIT_MESSAGE", c->message ? c->message : "");
	sw_run_env_set(v, "CI_COMMIT_TITLE", c->title ? c->title : "");
	sw_run_env_set(v, "CI_PIPELINE_ID", id);
	sw_run_env_set(v, "CI_PROJECT_DIR", r->workspace);
	sw_run_env_set(v, "CI_PROJECT_NAME", r->project);
	/* --var NAME=VALUE: like a variable the agent sets (the file's env can override it) */
	for (char **p = r->o->vars; p && *p; p++) {
		cleanup_free char *k = sw_xstrndup(*p, (size_t)(strchr(*p, '=') - *p));
		sw_run_env_set(v, k, strchr(*p, '=') + 1);
	}
}

/* ---------------------------------------------------------------- the build */

typedef struct build_view {
	sw_run *r;
	pthread_mutex_t lock;
	sw_buf *lines; /* per step: output not yet ended by a newline */
	size_t n_lines;
} build_view;

static void build_line(build_view *bv, int step, const char *s, size_t n)
{
	cleanup_free char *raw = sw_xstrndup(s, n);
	cleanup_free char *m =
	        sw_mask_string((const char *const *)bv->r->mask, sw_strv_len(bv->r->mask), raw);
	sw_console_line(bv->r->console, "#%d %s", step, m);
}

static void build_event(const sw_build_event *ev, void *payload)
{
	build_view *bv = payload;
	sw_run *r = bv->r;
	pthread_mutex_lock(&bv->lock);
	int step = ev->step > 0 ? ev->step : 0;
	if ((size_t)step >= bv->n_lines) {
		size_t n = (size_t)step + 16;
		bv->lines = sw_xrealloc(bv->lines, n * sizeof(*bv->lines));
		for (size_t i = bv->n_lines; i < n; i++)
			sw_buf_init(&bv->lines[i], 1 << 20);
		bv->n_lines = n;
	}
	sw_buf *lb = &bv->lines[step];
	switch (ev->kind) {
	case SW_BUILD_EV_STEP_START: {
		sw_console_line(r->console, "#%d %s%s", ev->step, ev->title ? ev->title : "",
		                ev->cached ? " CACHED" : "");
		json_t *f = json_pack("{s:i, s:i, s:s, s:s, s:b}", "step", ev->step, "steps",
		                      ev->n_steps, "title", ev->title ? ev->title : "", "state",
		                      "started", "cached", ev->cached);
		sw_run_emit(r, "build_step", f);
		break;
	}
	case SW_BUILD_EV_STEP_OUTPUT: {
		const char *p = ev->text;
		size_t left = ev->len;
		while (left > 0) {
			const char *nl = memchr(p, '\n', left);
			size_t take = nl ? (size_t)(nl - p) : left;
			sw_error *e = NULL;
			if (sw_buf_append(lb, p, take, &e) < 0)
				sw_error_free(e); /* a 1 MiB line: cut */
			if (!nl)
				break;
			build_line(bv, ev->step, lb->data ? lb->data : "", lb->len);
			sw_buf_reset(lb);
			p = nl + 1;
			left -= take + 1;
		}
		break;
	}
	case SW_BUILD_EV_STEP_DONE: {
		if (lb->len > 0) {
			build_line(bv, ev->step, lb->data, lb->len);
			sw_buf_reset(lb);
		}
		if (ev->failed)
			sw_console_line(r->console, "#%d ERROR (exit code %d)", ev->step, ev->code);
		else
			sw_console_line(r->console, "#%d DONE %.1fs", ev->step,
			                (double)ev->elapsed_ms / 1000.0);
		json_t *f = json_pack("{s:i, s:s, s:s, s:b, s:I}", "step", ev->step, "title",
		                      ev->title ? ev->title : "", "state",
		                      ev->failed ? "failed" : "done", "cached", ev->cached,
		                      "duration_ms", (json_int_t)ev->elapsed_ms);
		if (ev->failed)
			json_object_set_new(f, "exit_code", json_integer(ev->code));
		sw_run_emit(r, "build_step", f);
		break;
	}
	case SW_BUILD_EV_LOG:
		build_line(bv, ev->step, ev->text ? ev->text : "", ev->text ? ev->len : 0);
		break;
	}
	pthread_mutex_unlock(&bv->lock);
}

/* Does any job use the commit image? */
static bool needs_commit_image(const sw_pipeline *p)
{
	for (size_t i = 0; i < p->n_jobs; i++)
		if (!p->jobs[i].image)
			return true;
	return p->n_promote > 0;
}

static int build_image(sw_run *r, sw_error **err)
{
	const sw_pipeline *p = r->pl;
	const char *dockerfile = p->image.dockerfile ? p->image.dockerfile : "Dockerfile";
	const char *context = p->image.context ? p->image.context : ".";
	if (strstr(dockerfile, "..") || dockerfile[0] == '/' || strstr(context, "..") ||
	    context[0] == '/')
		return sw_error_set(err, SW_ERR_INVALID,
		                    "%s: image: dockerfile and context must stay in the checkout",
		                    p->file);
	cleanup_free char *df = sw_path_join(r->checkout, dockerfile);
	cleanup_free char *ctx = sw_path_join(r->checkout, context);
	cleanup_free char *tag = sw_xasprintf("%s:%s", r->project, r->commit.short_sha);
	const char *tags[] = { tag, NULL };
	cleanup_strv char **args = NULL;
	for (size_t i = 0; i < p->image.args.n; i++) {
		cleanup_free char *v = NULL;
		if (sw_pl_expand(&v, p->image.args.v[i].value, sw_run_env_lookup, NULL, r->vars,
		                 err) < 0)
			return sw_error_wrap(err, "%s:%d:%d: image.args.%s", p->file,
			                     p->image.args.v[i].pos.line,
			                     p->image.args.v[i].pos.column, p->image.args.v[i].key);
		cleanup_free char *kv = sw_xasprintf("%s=%s", p->image.args.v[i].key, v);
		sw_strv_push(&args, kv);
	}
	build_view bv = { .r = r };
	pthread_mutex_init(&bv.lock, NULL);
	sw_build_opts bo;
	memset(&bo, 0, sizeof(bo));
	bo.context_dir = ctx;
	bo.dockerfile = df;
	bo.tags = tags;
	bo.build_args = (const char *const *)args;
	bo.target = p->image.target;
	bo.state_dir = r->state_dir;
	bo.runtime = r->o->runtime;
	bo.source_date_epoch = -1;
	bo.compression = SW_OCI_COMPRESS_GZIP;
	bo.registry = run_registry(r);
	bo.on_event = build_event;
	bo.payload = &bv;
	bo.cancel = r->o->cancel;
	sw_console_line(r->console, "building the image of %s (%s)", r->commit.short_sha,
	                dockerfile);
	json_t *f = json_pack("{s:s, s:s}", "state", "started", "tag", tag);
	sw_run_emit(r, "build", f);
	int64_t t0 = now_ms();
	sw_build_result res;
	memset(&res, 0, sizeof(res));
	int rc = sw_build_run(&res, &bo, err);
	int64_t ms = now_ms() - t0;
	for (size_t i = 0; i < bv.n_lines; i++)
		sw_buf_free(&bv.lines[i]);
	free(bv.lines);
	pthread_mutex_destroy(&bv.lock);
	if (rc < 0) {
		f = json_pack("{s:s, s:I}", "state", "failed", "duration_ms", (json_int_t)ms);
		sw_run_emit(r, "build", f);
		return sw_error_wrap(err, "build of %s", dockerfile);
	}
	r->image = sw_xstrdup(res.manifest.digest.s);
	sw_console_build_stats(r->console, res.steps, res.cached_steps, (double)ms / 1000.0);
	sw_console_line(r->console, "built %s as %s (%u steps, %u cached) in %.1fs", r->image, tag,
	                res.steps, res.cached_steps, (double)ms / 1000.0);
	f = json_pack("{s:s, s:s, s:s, s:i, s:i, s:I}", "state", "done", "tag", tag, "digest",
	              r->image, "steps", (int)res.steps, "cached_steps", (int)res.cached_steps,
	              "duration_ms", (json_int_t)ms);
	sw_run_emit(r, "build", f);
	sw_build_result_clear(&res);
	return 0;
}

/* ---------------------------------------------------------------- scheduling */

typedef struct sched {
	sw_run *r;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	size_t running;
} sched;

typedef struct job_thread {
	sched *s;
	sw_run_job *j;
	pthread_t tid;
	bool joinable;
} job_thread;

static bool state_is_failure(const sw_run_job *j)
{
	switch ((sw_job_state)j->state) {
	case SW_JOB_FAILED:
	case SW_JOB_TIMED_OUT:
	case SW_JOB_ERROR:
	case SW_JOB_CANCELLED:
		return true;
	case SW_JOB_SKIPPED:
		return j->upstream_failed;
	default:
		return false;
	}
}

/* Are the jobs j waits for done? (needs: those; else every job of the earlier stages) */
static bool deps_done(const sw_run *r, const sw_pl_job *pj)
{
	if (pj->needs.n > 0) {
		for (size_t k = 0; k < pj->needs.n; k++) {
			ssize_t d = sw_pipeline_job_find(r->pl, pj->needs.v[k]);
			if (d >= 0 && !r->jobs[d].done)
				return false;
		}
		return true;
	}
	for (size_t i = 0; i < r->pl->n_jobs; i++)
		if (r->pl->jobs[i].stage < pj->stage && !r->jobs[i].done)
			return false;
	return true;
}

static bool deps_failed(const sw_run *r, const sw_pl_job *pj)
{
	if (pj->needs.n > 0) {
		for (size_t k = 0; k < pj->needs.n; k++) {
			ssize_t d = sw_pipeline_job_find(r->pl, pj->needs.v[k]);
			if (d >= 0 && state_is_failure(&r->jobs[d]))
				return true;
		}
		return false;
	}
	for (size_t i = 0; i < r->pl->n_jobs; i++)
		if (r->pl->jobs[i].stage < pj->stage && state_is_failure(&r->jobs[i]))
			return true;
	return false;
}

static void job_finish_without_run(sw_run *r, sw_run_job *j, sw_job_state st, const char *why)
{
	const sw_pl_job *pj = &r->pl->jobs[j->index];
	j->state = st;
	j->done = true;
	free(j->message);
	j->message = sw_xstrdup(why);
	sw_console_job_state(r->console, j->console_id, st, why);
	json_t *f = json_pack("{s:s, s:s, s:s, s:s}", "name", pj->name, "stage",
	                      r->pl->stages[pj->stage].name, "state", sw_job_state_name(st),
	                      "reason", why);
	sw_run_emit(r, "job", f);
}

static void *job_thread_main(void *arg)
{
	job_thread *t = arg;
	sw_run_job_execute(t->s->r, t->j);
	pthread_mutex_lock(&t->s->lock);
	t->j->done = true;
	t->s->running--;
	pthread_cond_broadcast(&t->s->cond);
	pthread_mutex_unlock(&t->s->lock);
	return NULL;
}

static void run_jobs(sw_run *r)
{
	sched s = { .r = r };
	pthread_mutex_init(&s.lock, NULL);
	pthread_cond_init(&s.cond, NULL);
	size_t max = r->o->max_jobs > 0 ? (size_t)r->o->max_jobs : 4;
	size_t n = r->pl->n_jobs;
	job_thread *threads = sw_xcalloc(n ? n : 1, sizeof(*threads));
	sw_pl_commit_info ci = { .branch = r->commit.branch,
		                 .tag = r->commit.tag,
		                 .changed = r->changed };
	int64_t deadline = r->pl->timeout_ms > 0 ? now_ms() + r->pl->timeout_ms : 0;
	pthread_mutex_lock(&s.lock);
	for (;;) {
		bool all_done = true, changed = false;
		if (*r->o->cancel > r->cancel)
			r->cancel = *r->o->cancel; /* 2: a second signal, no grace */
		if (deadline && !r->cancel && now_ms() >= deadline) {
			r->timed_out = true;
			r->cancel = 1;
			sw_console_line(r->console,
			                "the pipeline timed out after %.0fs: cancelling",
			                (double)r->pl->timeout_ms / 1000.0);
		}
		for (size_t i = 0; i < n; i++) {
			sw_run_job *j = &r->jobs[i];
			const sw_pl_job *pj = &r->pl->jobs[i];
			if (j->done)
				continue;
			all_done = false;
			if (j->started)
				continue;
			if (r->cancel) {
				job_finish_without_run(r, j, SW_JOB_CANCELLED,
				                       r->timed_out ? "the pipeline timed out"
				                                    : "cancelled");
				changed = true;
				continue;
			}
			if (!deps_done(r, pj))
				continue;
			if (pj->when.given && !sw_pl_when_matches(&pj->when, &ci)) {
				job_finish_without_run(r, j, SW_JOB_SKIPPED,
				                       "when: does not match");
				changed = true;
				continue;
			}
			bool failed = deps_failed(r, pj);
			sw_pl_status_when sw = pj->when.status;
			if (sw == SW_PL_ON_SUCCESS && failed) {
				j->upstream_failed = true;
				job_finish_without_run(r, j, SW_JOB_SKIPPED,
				                       pj->needs.n ? "a job it needs failed"
				                                   : "an earlier stage failed");
				changed = true;
				continue;
			}
			if (sw == SW_PL_ON_FAILURE && !failed) {
				job_finish_without_run(r, j, SW_JOB_SKIPPED,
				                       "when: on_failure, and nothing failed");
				changed = true;
				continue;
			}
			if (s.running >= max)
				continue;
			j->started = true;
			threads[i] = (job_thread){ .s = &s, .j = j };
			s.running++;
			if (pthread_create(&threads[i].tid, NULL, job_thread_main, &threads[i]) !=
			    0) {
				s.running--;
				job_finish_without_run(r, j, SW_JOB_ERROR,
				                       "could not start a thread");
			} else {
				threads[i].joinable = true;
			}
			changed = true;
		}
		if (all_done)
			break;
		if (changed)
			continue;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s.cond, &s.lock, &ts);
	}
	pthread_mutex_unlock(&s.lock);
	for (size_t i = 0; i < n; i++)
		if (threads[i].joinable)
			pthread_join(threads[i].tid, NULL);
	free(threads);
	pthread_cond_destroy(&s.cond);
	pthread_mutex_destroy(&s.lock);
}

/* ---------------------------------------------------------------- promotion */

/* bytes: uploaded by this push (blobs and manifest), for the agent's metrics */
static void promote_event(sw_run *r, const char *to, const char *ref, const char *state,
                          const char *error, uint64_t bytes)
{
	json_t *f = json_pack("{s:s, s:s, s:s, s:s}", "to", to, "ref", ref, "digest", r->image,
	                      "state", state);
	if (strcmp(state, "skipped") != 0)
		json_object_set_new(f, "bytes", json_integer((json_int_t)bytes));
	if (error)
		json_object_set_new(f, "error", json_string(error));
	sw_run_emit(r, "promotion", f);
}

/* Push the tested image to every `promote` entry whose `when` holds. 0 or an error. */
static int promote(sw_run *r, sw_error **err)
{
	sw_pl_commit_info ci = { .branch = r->commit.branch,
		                 .tag = r->commit.tag,
		                 .changed = r->changed };
	for (size_t i = 0; i < r->pl->n_promote; i++) {
		const sw_pl_promote *pr = &r->pl->promote[i];
		if (pr->when.given && !sw_pl_when_matches(&pr->when, &ci)) {
			sw_console_line(r->console,
			                "promotion to %s skipped (when: does not match)", pr->to);
			promote_event(r, pr->to, pr->to, "skipped", NULL, 0);
			continue;
		}
		if (!r->image)
			return sw_error_set(err, SW_ERR_INVALID,
			                    "promote to %s: no image was built", pr->to);
		sw_oci_ref ref;
		memset(&ref, 0, sizeof(ref));
		sw_oci_registry *reg = NULL;
		sw_oci_descriptor desc;
		memset(&desc, 0, sizeof(desc));
		cleanup_free char *to = NULL;
		int rc = sw_pl_expand(&to, pr->to, sw_run_env_lookup, NULL, r->vars, err);
		if (rc == 0)
			rc = sw_oci_ref_parse(&ref, to, err);
		if (rc == 0 &&
		    (strchr(strrchr(to, '/') ? strrchr(to, '/') : to, ':') || strchr(to, '@')))
			rc = sw_error_set(err, SW_ERR_INVALID,
			                  "'%s' (%s) names a tag or digest; 'to' is a repository",
			                  to, pr->to);
		if (rc == 0)
			rc = sw_oci_store_resolve(&desc, r->store, r->image, err);
		if (rc == 0)
			rc = sw_oci_registry_new(&reg, ref.registry, run_registry(r), err);
		if (rc == 0) {
			sw_oci_ref byd = { .registry = ref.registry, .repository = ref.repository };
			byd.digest = desc.digest;
			cleanup_free char *s = sw_xasprintf("%s/%s@%s", ref.registry,
			                                    ref.repository, desc.digest.s);
			sw_console_line(r->console, "promoting %s to %s", r->image, s);
			uint64_t up0 = sw_oci_registry_stats(reg)->bytes_up;
			rc = sw_oci_registry_push(reg, r->store, &desc, &byd, err);
			promote_event(r, pr->to, s, rc == 0 ? "pushed" : "failed",
			              rc == 0 ? NULL : sw_error_msg(*err),
			              sw_oci_registry_stats(reg)->bytes_up - up0);
		}
		for (size_t t = 0; rc == 0 && t < pr->tags.n; t++) {
			cleanup_free char *tag = NULL;
			rc = sw_pl_expand(&tag, pr->tags.v[t], sw_run_env_lookup, NULL, r->vars,
			                  err);
			if (rc < 0)
				break;
			if (!tag[0]) {
				sw_console_line(r->console,
				                "promotion to %s: tag '%s' is empty here, skipped",
				                pr->to, pr->tags.v[t]);
				continue;
			}
			/* registry tags: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}; '/' of branches -> '-'
			 */
			for (char *p = tag; *p; p++)
				if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' &&
				    *p != '-')
					*p = '-';
			sw_oci_ref byt = { .registry = ref.registry,
				           .repository = ref.repository,
				           .tag = tag };
			cleanup_free char *s =
			        sw_xasprintf("%s/%s:%s", ref.registry, ref.repository, tag);
			uint64_t up0 = sw_oci_registry_stats(reg)->bytes_up;
			rc = sw_oci_registry_push(reg, r->store, &desc, &byt, err);
			if (rc == 0)
				sw_console_line(r->console, "promoted %s as %s", r->image, s);
			promote_event(r, pr->to, s, rc == 0 ? "pushed" : "failed",
			              rc == 0 ? NULL : sw_error_msg(*err),
			              sw_oci_registry_stats(reg)->bytes_up - up0);
		}
		sw_oci_descriptor_clear(&desc);
		sw_oci_registry_free(reg);
		sw_oci_ref_clear(&ref);
		if (rc < 0)
			return sw_error_wrap(err, "promote to %s", pr->to);
	}
	return 0;
}

/* ---------------------------------------------------------------- the run */

static void print_error(sw_run *r, const char *fmt, ...) SW_PRINTF(2, 3);
static void print_error(sw_run *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	cleanup_free char *red = sw_redact(m);
	cleanup_free char *masked =
	        sw_mask_string((const char *const *)r->mask, sw_strv_len(r->mask), red);
	if (r->o->on_output) {
		/* a GitLab job: the error belongs to its trace */
		cleanup_free char *line = sw_xasprintf("slipway: error: %s\n", masked);
		r->o->on_output(line, strlen(line), r->o->hook_payload);
	}
	if (r->console)
		sw_console_line(r->console, "error: %s", masked);
	else
		fprintf(r->o->console_out ? r->o->console_out : stderr, "slipway: error: %s\n",
		        masked);
}

static void remove_dir(const char *path, bool ws)
{
	if (!path)
		return;
	sw_error *e = NULL;
	int rc = ws ? sw_ws_remove_tree(path, &e) : sw_fs_rm_rf(path, &e);
	if (rc < 0) {
		SW_LOG(SW_LOG_WARN, "cleanup: %s", sw_error_msg(e));
		sw_error_free(e);
	}
}

static int load_pipeline(sw_run *r, sw_error **err)
{
	const char *file = r->o->file ? r->o->file : ".slipway.yml";
	if (file[0] == '/' || strcmp(file, "..") == 0 || strncmp(file, "../", 3) == 0 ||
	    strstr(file, "/../") ||
	    (strlen(file) >= 3 && strcmp(file + strlen(file) - 3, "/..") == 0))
		return sw_error_set(err, SW_ERR_INVALID,
		                    "--file '%s': must be a path inside the repository", file);
	cleanup_free char *path = sw_path_join(r->checkout, file);
	cleanup_free char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, path, 4 << 20, &e) < 0) {
		int code = sw_error_code_of(e);
		sw_error_free(e);
		if (code == SW_ERR_NOT_FOUND || errno == ENOENT || access(path, F_OK) < 0)
			return sw_error_set(err, SW_ERR_INVALID, "%s: no such file in %s at %s",
			                    file, r->o->repo ? r->o->repo : ".",
			                    r->commit.short_sha);
		return sw_error_set(err, SW_ERR_INVALID, "%s: cannot be read", file);
	}
	return sw_pipeline_parse(&r->pl, buf, len, file, err);
}

static char *dup_or_null(const char *s)
{
	return s ? sw_xstrdup(s) : NULL;
}

/* A deep copy of a commit (its changed paths are not needed by a run given its files). */
static void commit_copy(sw_git_commit *dst, const sw_git_commit *src)
{
	memset(dst, 0, sizeof(*dst));
	memcpy(dst->sha, src->sha, sizeof(dst->sha));
	memcpy(dst->short_sha, src->short_sha, sizeof(dst->short_sha));
	dst->branch = dup_or_null(src->branch);
	dst->tag = dup_or_null(src->tag);
	dst->ref_name = dup_or_null(src->ref_name);
	dst->message = dup_or_null(src->message);
	dst->title = dup_or_null(src->title);
	dst->author = dup_or_null(src->author);
	dst->time = src->time;
}

int sw_run_pipeline(const sw_run_opts *o)
{
	sw_run run;
	memset(&run, 0, sizeof(run));
	sw_run *r = &run;
	r->o = o;
	pthread_mutex_init(&r->lock, NULL);
	sw_exec_backend_opts backend;
	memset(&backend, 0, sizeof(backend));
	r->backend = &backend;
	int exit_code = SW_RUN_EXIT_INFRA;
	sw_error *err = NULL;
	char *git_tmp = NULL, *dockerfile_path = NULL;
	int64_t t0 = now_ms();
	const char *repo = o->repo ? o->repo : ".";

	r->state_dir = state_dir_resolve();
	if (sw_fs_mkdir_p(r->state_dir, 0755, &err) < 0)
		goto infra;

	/* 1. leftovers of dead slipway processes (the agent sweeps on its own schedule), the store
	 * and the cache */
	if (!o->no_sweep) {
		const char *docker_host = NULL;
		if (o->backend == SW_EXEC_BACKEND_DOCKER) {
			docker_host = o->docker_host ? o->docker_host : getenv("DOCKER_HOST");
			if (!docker_host || !*docker_host)
				docker_host = "unix:///var/run/docker.sock";
		}
		sw_run_sweep(r->state_dir, o->runtime, docker_host);
	}
	{
		cleanup_free char *store_dir = sw_path_join(r->state_dir, "store");
		if (sw_oci_store_open(&r->store, store_dir, true, &err) < 0)
			goto infra;
	}
	if (sw_cache_open(&r->cache, r->state_dir, r->store, &err) < 0)
		goto infra;
	backend.kind = (sw_exec_backend_kind)o->backend;
	backend.state_dir = r->state_dir;
	backend.runtime = o->runtime;
	backend.docker_host = o->docker_host;
	backend.store = r->store;
	backend.cache = r->cache;
	backend.memory_limit = o->memory_limit;
	backend.pids_limit = o->pids_limit;
	backend.cpu_millis = o->cpu_millis;
	backend.kill_grace_ms = o->kill_grace_ms > 0 ? o->kill_grace_ms : 10000;

	/* 2. checkout, pipeline file, pipeline id */
	if (o->checkout_dir) {
		/* the caller's files (a GitLab job): kept, never removed here */
		if (o->commit)
			commit_copy(&r->commit, o->commit);
	} else {
		if (sw_cache_scratch_dir(&r->checkout, r->cache, "checkout-", &err) < 0 ||
		    sw_cache_scratch_dir(&git_tmp, r->cache, "git-", &err) < 0)
			goto infra;
		fprintf(o->console_out ? o->console_out : stderr, "slipway: checking out %s%s%s\n",
		        repo, o->rev ? " at " : "", o->rev ? o->rev : "");
		if (sw_git_checkout(&r->commit, repo, o->rev, r->checkout, git_tmp, &err) < 0) {
			sw_error_wrap(&err, "checkout");
			goto infra;
		}
		r->changed = (const char *const *)r->commit.changed;
		apply_ref_hints(&r->commit, o);
		remove_dir(git_tmp, false);
		free(git_tmp);
		git_tmp = NULL;
	}
	if (o->checkout_dir)
		r->checkout = sw_xstrdup(o->checkout_dir);
	if (o->pipeline) {
		r->pl = (sw_pipeline *)o->pipeline; /* borrowed: not freed at the end */
	} else if (load_pipeline(r, &err) < 0) {
		print_error(r, "%s", sw_error_msg(err));
		sw_error_clear(&err);
		exit_code = SW_RUN_EXIT_PIPELINE;
		goto out;
	}
	if (alloc_pipeline_id(&r->pipeline_id, r->state_dir, &err) < 0)
		goto infra;
	r->project = project_name(repo);
	r->workspace = sw_xasprintf("/builds/%s", r->project);
	if (o->output_dir) {
		r->out_dir = sw_xstrdup(o->output_dir);
	} else {
		char idtxt[32];
		snprintf(idtxt, sizeof(idtxt), "runs/%lu", r->pipeline_id);
		r->out_dir = sw_path_join(r->state_dir, idtxt);
	}
	{
		cleanup_free char *logs = sw_path_join(r->out_dir, "logs");
		cleanup_free char *arts = sw_path_join(r->out_dir, "artifacts");
		if (sw_fs_mkdir_p(logs, 0755, &err) < 0 || sw_fs_mkdir_p(arts, 0755, &err) < 0)
			goto infra;
		cleanup_free char *evp = sw_path_join(r->out_dir, "events.jsonl");
		if (sw_events_open(&r->events_out, evp, &err) < 0)
			goto infra;
		if (o->events_path && sw_events_open(&r->events, o->events_path, &err) < 0)
			goto infra;
	}

	/* every secret value any job may see, for masking (a GitLab job: its masked values) */
	for (size_t i = 0; o->pipeline && o->mask_values && o->mask_values[i]; i++)
		if (o->mask_values[i][0])
			sw_strv_push(&r->mask, o->mask_values[i]);
	for (size_t i = 0; !o->pipeline && i < r->pl->n_jobs; i++) {
		for (size_t k = 0; k < r->pl->jobs[i].n_secrets; k++) {
			char *v = sw_run_secret_value(r, r->pl->jobs[i].secrets[k].name);
			if (v && strlen(v) > 0) {
				bool dup = false;
				for (size_t m = 0; r->mask && r->mask[m]; m++)
					dup = dup || strcmp(r->mask[m], v) == 0;
				if (!dup)
					sw_strv_push(&r->mask, v);
			}
			free(v);
		}
	}

	/* reports */
	r->console = sw_console_new((sw_console_mode)o->progress,
	                            o->console_out ? o->console_out : stderr);
	r->junit = sw_junit_new(r->project);
	r->jobs = sw_xcalloc(r->pl->n_jobs ? r->pl->n_jobs : 1, sizeof(*r->jobs));
	for (size_t i = 0; i < r->pl->n_jobs; i++) {
		const sw_pl_job *pj = &r->pl->jobs[i];
		r->jobs[i].index = i;
		r->jobs[i].exit_code = -1;
		r->jobs[i].state = SW_JOB_PENDING;
		r->jobs[i].console_id =
		        sw_console_add_job(r->console, r->pl->stages[pj->stage].name, pj->name);
	}
	{
		json_t *f = json_pack("{s:s, s:I, s:s, s:s, s:s}", "state", "started", "id",
		                      (json_int_t)r->pipeline_id, "project", r->project, "commit",
		                      r->commit.sha, "ref",
		                      r->commit.ref_name ? r->commit.ref_name : "");
		sw_run_emit(r, "pipeline", f);
	}
	sw_console_line(r->console, "pipeline %lu of %s at %s (%s)", r->pipeline_id, r->project,
	                r->commit.short_sha, r->commit.ref_name ? r->commit.ref_name : "");

	/* 3. the commit's image (its args see the variables; SLIPWAY_IMAGE is set once built) */
	make_vars(r);
	bool infra_error = false, cancelled = false;
	dockerfile_path = sw_path_join(
	        r->checkout, r->pl->image.dockerfile ? r->pl->image.dockerfile : "Dockerfile");
	if (!o->no_build && (r->pl->image.given || needs_commit_image(r->pl) ||
	                     access(dockerfile_path, F_OK) == 0)) {
		if (build_image(r, &err) < 0) {
			if (*o->cancel || sw_error_code_of(err) == SW_ERR_CANCELLED) {
				cancelled = true;
			} else {
				print_error(r, "%s", sw_error_msg(err));
				infra_error = true;
			}
			sw_error_clear(&err);
		}
	}
	sw_run_env_set(&r->vars, "SLIPWAY_IMAGE", r->image ? r->image : "");

	/* 4. the stages */
	if (!infra_error && !cancelled) {
		run_jobs(r);
	} else {
		for (size_t i = 0; i < r->pl->n_jobs; i++)
			job_finish_without_run(r, &r->jobs[i],
			                       cancelled ? SW_JOB_CANCELLED : SW_JOB_SKIPPED,
			                       cancelled ? "cancelled" : "the image build failed");
	}
	if (*o->cancel)
		cancelled = true;
	bool signalled = cancelled;
	if (r->timed_out && !*o->cancel)
		cancelled = false; /* jobs cancelled by the pipeline's timeout: a failure */

	bool failed = false;
	for (size_t i = 0; i < r->pl->n_jobs; i++) {
		sw_run_job *j = &r->jobs[i];
		const sw_pl_job *pj = &r->pl->jobs[i];
		switch ((sw_job_state)j->state) {
		case SW_JOB_FAILED:
		case SW_JOB_TIMED_OUT:
			failed = true;
			break;
		case SW_JOB_ERROR:
			infra_error = true;
			break;
		case SW_JOB_CANCELLED:
			if (r->timed_out && !signalled)
				failed = true;
			else
				cancelled = true;
			break;
		case SW_JOB_SKIPPED:
			if (j->upstream_failed)
				failed = true;
			break;
		default:
			break;
		}
		sw_junit_result jr = SW_JUNIT_PASSED;
		switch ((sw_job_state)j->state) {
		case SW_JOB_FAILED:
		case SW_JOB_ALLOWED_FAILURE:
			jr = SW_JUNIT_FAILED;
			break;
		case SW_JOB_TIMED_OUT:
		case SW_JOB_ERROR:
			jr = SW_JUNIT_ERROR;
			break;
		case SW_JOB_SKIPPED:
		case SW_JOB_CANCELLED:
		case SW_JOB_PENDING:
			jr = SW_JUNIT_SKIPPED;
			break;
		default:
			break;
		}
		sw_junit_add_job(r->junit, r->pl->stages[pj->stage].name, pj->name, jr,
		                 (double)j->duration_ms / 1000.0, j->message, j->log_tail);
	}

	/* 5. promotion */
	bool promote_failed = false;
	if (!failed && !infra_error && !cancelled && r->pl->n_promote > 0) {
		if (o->no_promote) {
			sw_console_line(r->console, "promotion skipped (--no-promote)");
		} else if (promote(r, &err) < 0) {
			print_error(r, "%s", sw_error_msg(err));
			sw_error_clear(&err);
			promote_failed = true;
		}
	} else if (r->pl->n_promote > 0) {
		sw_console_line(r->console, "nothing promoted: %s",
		                cancelled     ? "the pipeline was cancelled"
		                : infra_error ? "an infrastructure error happened"
		                              : "a job failed");
	}

	/* 6. reports */
	{
		cleanup_free char *jp = sw_path_join(r->out_dir, "junit.xml");
		if (sw_junit_write(r->junit, jp, &err) < 0) {
			print_error(r, "%s", sw_error_msg(err));
			sw_error_clear(&err);
		}
		if (o->junit_path && sw_junit_write(r->junit, o->junit_path, &err) < 0) {
			print_error(r, "%s", sw_error_msg(err));
			sw_error_clear(&err);
			infra_error = true;
		}
	}
	if (cancelled)
		exit_code = 128 + (*o->cancel_signal ? (int)*o->cancel_signal : 2);
	else if (infra_error || promote_failed)
		exit_code = SW_RUN_EXIT_INFRA;
	else if (failed)
		exit_code = SW_RUN_EXIT_FAILED;
	else
		exit_code = SW_RUN_EXIT_OK;
	{
		const char *result = cancelled        ? "cancelled"
		                     : infra_error    ? "error"
		                     : failed         ? "failed"
		                     : promote_failed ? "error"
		                                      : "passed";
		json_t *f = json_pack("{s:s, s:I, s:I, s:i}", "state", result, "id",
		                      (json_int_t)r->pipeline_id, "duration_ms",
		                      (json_int_t)(now_ms() - t0), "exit_code", exit_code);
		sw_run_emit(r, "pipeline", f);
	}
	sw_console_finish(r->console);
	if (!o->pipeline) {
		fprintf(o->console_out ? o->console_out : stderr,
		        "slipway: pipeline %lu %s in %.1fs; output in %s\n", r->pipeline_id,
		        exit_code == 0 ? "passed"
		        : cancelled    ? "was cancelled"
		                       : "failed",
		        (double)(now_ms() - t0) / 1000.0, r->out_dir);
		if (!o->console_out) {
			printf("%s\n", r->out_dir);
			fflush(stdout);
		}
	}
	goto out;

infra:
	print_error(r, "%s", sw_error_msg(err));
	sw_error_clear(&err);
	exit_code = *o->cancel ? 128 + (*o->cancel_signal ? (int)*o->cancel_signal : 2)
	                       : SW_RUN_EXIT_INFRA;
	if (r->console)
		sw_console_finish(r->console);
out:
	free(dockerfile_path);
	if (git_tmp) {
		remove_dir(git_tmp, false);
		free(git_tmp);
	}
	if (r->checkout) {
		if (!o->checkout_dir)
			remove_dir(r->checkout, true);
		free(r->checkout);
	}
	if (r->secret_dir) {
		remove_dir(r->secret_dir, false);
		free(r->secret_dir);
	}
	for (size_t i = 0; r->jobs && r->pl && i < r->pl->n_jobs; i++) {
		free(r->jobs[i].message);
		free(r->jobs[i].log_tail);
	}
	free(r->jobs);
	sw_junit_free(r->junit);
	sw_console_free(r->console);
	sw_events_close(r->events);
	sw_events_close(r->events_out);
	sw_strv_free(r->vars);
	sw_strv_free(r->mask);
	free(r->image);
	free(r->out_dir);
	free(r->project);
	free(r->workspace);
	sw_git_commit_clear(&r->commit);
	if (!o->pipeline)
		sw_pipeline_free(r->pl);
	sw_cache_free(r->cache);
	sw_oci_store_free(r->store);
	free(r->state_dir);
	pthread_mutex_destroy(&r->lock);
	sw_error_free(err);
	return exit_code;
}

char *sw_run_secret_dir(sw_run *r, sw_error **err)
{
	pthread_mutex_lock(&r->lock);
	if (!r->secret_dir) {
		char *d = secret_dir_name();
		if (mkdir(d, 0700) < 0 && errno != EEXIST) {
			sw_error_os(err, errno, "create %s", d);
			free(d);
		} else {
			r->secret_dir = d;
		}
	}
	char *out = r->secret_dir ? sw_xstrdup(r->secret_dir) : NULL;
	pthread_mutex_unlock(&r->lock);
	return out;
}
