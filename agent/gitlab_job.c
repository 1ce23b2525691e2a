/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A GitLab job as data: the jobs/request payload parsed (jansson; null, missing and unknown
 * keys tolerated as the spec's parser caveats say), the one-job pipeline slipway's runner runs
 * for it (pipeline/pipeline.h model), the small protocol helpers (checksum, Content-Range,
 * Range, API URLs), and artifacts as zip archives made and unpacked with libarchive.
 */
#include "agent/gitlab.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>

/* ---------------------------------------------------------------- parsing */

static char *jstr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_string(v))
		return sw_xstrdup(json_string_value(v));
	if (json_is_integer(v))
		return sw_xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
	return NULL;
}

static bool jbool(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_true(v);
}

static int64_t jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_integer(v))
		return (int64_t)json_integer_value(v);
	if (json_is_real(v))
		return (int64_t)json_real_value(v);
	if (json_is_string(v))
		return strtoll(json_string_value(v), NULL, 10);
	return 0;
}

/* An array of strings, or one string, as a NULL-terminated list (NULL when absent). */
static char **jstrv(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	char **out = NULL;
	if (json_is_string(v)) {
		sw_strv_push(&out, json_string_value(v));
	} else if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach (v, i, e)
			if (json_is_string(e))
				sw_strv_push(&out, json_string_value(e));
	}
	return out;
}

/* "http://registry.example.com/" -> "registry.example.com". */
static char *host_of(const char *url)
{
	const char *p = strstr(url, "://");
	p = p ? p + 3 : url;
	const char *at = strchr(p, '@');
	const char *slash = strchr(p, '/');
	if (at && (!slash || at < slash))
		p = at + 1;
	size_t n = strcspn(p, "/");
	return sw_xstrndup(p, n);
}

int sw_gitlab_job_parse(sw_gitlab_job **out, const char *json, size_t len, sw_error **err)
{
	json_error_t je;
	json_t *root = json_loadb(json, len, 0, &je);
	if (!root || !json_is_object(root)) {
		json_decref(root);
		return sw_error_set(err, SW_ERR_INVALID, "job payload: not a JSON object (%s)",
		                    root ? "wrong type" : je.text);
	}
	sw_gitlab_job *j = sw_xcalloc(1, sizeof(*j));
	j->id = jint(root, "id");
	j->token = jstr(root, "token");
	if (j->id <= 0 || !j->token) {
		json_decref(root);
		sw_gitlab_job_free(j);
		return sw_error_set(err, SW_ERR_INVALID, "job payload: no id or token");
	}
	json_t *ji = json_object_get(root, "job_info");
	j->name = jstr(ji, "name");
	j->stage = jstr(ji, "stage");
	j->project = jstr(ji, "project_name");
	if (!j->name)
		j->name = sw_xasprintf("job-%" PRId64, j->id);
	if (!j->stage)
		j->stage = sw_xstrdup("test");
	json_t *gi = json_object_get(root, "git_info");
	j->repo_url = jstr(gi, "repo_url");
	j->ref = jstr(gi, "ref");
	j->sha = jstr(gi, "sha");
	j->ref_type = jstr(gi, "ref_type");
	j->depth = (int)jint(gi, "depth");
	j->timeout_s = jint(json_object_get(root, "runner_info"), "timeout");

	json_t *vars = json_object_get(root, "variables");
	if (json_is_array(vars)) {
		j->vars = sw_xcalloc(json_array_size(vars) + 1, sizeof(*j->vars));
		size_t i;
		json_t *v;
		json_array_foreach (vars, i, v) {
			char *k = jstr(v, "key");
			if (!k)
				continue;
			sw_gitlab_var *gv = &j->vars[j->n_vars++];
			gv->key = k;
			gv->value = jstr(v, "value");
			if (!gv->value)
				gv->value = sw_xstrdup("");
			gv->masked = jbool(v, "masked");
			gv->file = jbool(v, "file");
			gv->raw = jbool(v, "raw");
		}
	}
	json_t *steps = json_object_get(root, "steps");
	if (json_is_array(steps)) {
		size_t i;
		json_t *s;
		json_array_foreach (steps, i, s) {
			const char *name = json_string_value(json_object_get(s, "name"));
			if (!name)
				continue;
			if (strcmp(name, "script") == 0 && !j->script) {
				j->script = jstrv(s, "script");
			} else if (strcmp(name, "after_script") == 0 && !j->after_script) {
				j->after_script = jstrv(s, "script");
				j->after_timeout_s = jint(s, "timeout");
			}
		}
	}
	json_t *img = json_object_get(root, "image");
	if (json_is_object(img)) {
		j->image = jstr(img, "name");
		if (j->image && !j->image[0]) {
			free(j->image);
			j->image = NULL;
		}
		j->image_entrypoint = jstrv(img, "entrypoint");
	}
	json_t *svcs = json_object_get(root, "services");
	if (json_is_array(svcs)) {
		j->services = sw_xcalloc(json_array_size(svcs) + 1, sizeof(*j->services));
		size_t i;
		json_t *s;
		json_array_foreach (svcs, i, s) {
			char *name = jstr(s, "name");
			if (!name)
				continue;
			sw_gitlab_service *gs = &j->services[j->n_services++];
			gs->name = name;
			gs->alias = jstr(s, "alias");
			gs->entrypoint = jstrv(s, "entrypoint");
			gs->command = jstrv(s, "command");
		}
	}
	json_t *arts = json_object_get(root, "artifacts");
	if (json_is_array(arts)) {
		j->artifacts = sw_xcalloc(json_array_size(arts) + 1, sizeof(*j->artifacts));
		size_t i;
		json_t *a;
		json_array_foreach (arts, i, a) {
			sw_gitlab_artifact *ga = &j->artifacts[j->n_artifacts++];
			ga->name = jstr(a, "name");
			ga->paths = jstrv(a, "paths");
			ga->when = jstr(a, "when");
			ga->expire_in = jstr(a, "expire_in");
			ga->type = jstr(a, "artifact_type");
			ga->format = jstr(a, "artifact_format");
		}
	}
	json_t *deps = json_object_get(root, "dependencies");
	if (json_is_array(deps)) {
		j->deps = sw_xcalloc(json_array_size(deps) + 1, sizeof(*j->deps));
		size_t i;
		json_t *d;
		json_array_foreach (deps, i, d) {
			sw_gitlab_dep *gd = &j->deps[j->n_deps++];
			gd->id = jint(d, "id");
			gd->name = jstr(d, "name");
			gd->token = jstr(d, "token");
			gd->has_file = json_is_object(json_object_get(d, "artifacts_file"));
		}
	}
	json_t *creds = json_object_get(root, "credentials");
	if (json_is_array(creds)) {
		j->creds = sw_xcalloc(json_array_size(creds) + 1, sizeof(*j->creds));
		size_t i;
		json_t *c;
		json_array_foreach (creds, i, c) {
			const char *type = json_string_value(json_object_get(c, "type"));
			const char *url = json_string_value(json_object_get(c, "url"));
			if (!type || strcasecmp(type, "registry") != 0 || !url)
				continue;
			sw_gitlab_credential *gc = &j->creds[j->n_creds++];
			gc->host = host_of(url);
			gc->username = jstr(c, "username");
			gc->password = jstr(c, "password");
		}
	}
	json_decref(root);
	*out = j;
	return 0;
}

void sw_gitlab_job_free(sw_gitlab_job *j)
{
	if (!j)
		return;
	free(j->token);
	free(j->name);
	free(j->stage);
	free(j->project);
	free(j->repo_url);
	free(j->ref);
	free(j->sha);
	free(j->ref_type);
	for (size_t i = 0; i < j->n_vars; i++) {
		free(j->vars[i].key);
		free(j->vars[i].value);
	}
	free(j->vars);
	sw_strv_free(j->script);
	sw_strv_free(j->after_script);
	free(j->image);
	sw_strv_free(j->image_entrypoint);
	for (size_t i = 0; i < j->n_services; i++) {
		free(j->services[i].name);
		free(j->services[i].alias);
		sw_strv_free(j->services[i].entrypoint);
		sw_strv_free(j->services[i].command);
	}
	free(j->services);
	for (size_t i = 0; i < j->n_artifacts; i++) {
		free(j->artifacts[i].name);
		sw_strv_free(j->artifacts[i].paths);
		free(j->artifacts[i].when);
		free(j->artifacts[i].expire_in);
		free(j->artifacts[i].type);
		free(j->artifacts[i].format);
	}
	free(j->artifacts);
	for (size_t i = 0; i < j->n_deps; i++) {
		free(j->deps[i].name);
		free(j->deps[i].token);
	}
	free(j->deps);
	for (size_t i = 0; i < j->n_creds; i++) {
		free(j->creds[i].host);
		free(j->creds[i].username);
		free(j->creds[i].password);
	}
	free(j->creds);
	free(j);
}

const char *sw_gitlab_job_var(const sw_gitlab_job *j, const char *key)
{
	/* the last one wins, as in GitLab's collection */
	const char *v = NULL;
	for (size_t i = 0; i < j->n_vars; i++)
		if (strcmp(j->vars[i].key, key) == 0)
			v = j->vars[i].value;
	return v;
}

/* ---------------------------------------------------------------- the pipeline */

static void strs_from(sw_pl_strs *s, char *const *v)
{
	for (size_t i = 0; v && v[i]; i++) {
		s->v = sw_xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
		s->v[s->n++] = sw_xstrdup(v[i]);
	}
}

static void kvs_add(sw_pl_kvs *k, const char *key, const char *value)
{
	for (size_t i = 0; i < k->n; i++) {
		if (strcmp(k->v[i].key, key) == 0) {
			free(k->v[i].value);
			k->v[i].value = sw_xstrdup(value);
			return;
		}
	}
	k->v = sw_xrealloc(k->v, (k->n + 1) * sizeof(*k->v));
	k->v[k->n++] = (sw_pl_kv){ .key = sw_xstrdup(key), .value = sw_xstrdup(value) };
}

/* "$" -> "$$" so that expansion gives the value back unchanged (raw variables). */
static char *escape_dollars(const char *s)
{
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	for (const char *p = s; *p; p++) {
		if (sw_buf_append(&b, p, 1, &e) < 0 ||
		    (*p == '$' && sw_buf_append(&b, "$", 1, &e) < 0))
			sw_error_clear(&e);
	}
	char *out = sw_buf_steal(&b, NULL);
	return out ? out : sw_xstrdup("");
}

/* "registry.example.com:5000/team/postgres:15" -> "postgres" (a service's default name). */
static char *service_name(const char *image)
{
	const char *base = strrchr(image, '/');
	base = base ? base + 1 : image;
	size_t n = strcspn(base, ":@");
	char *out = sw_xstrndup(base, n);
	for (char *p = out; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '.' || (*p >= 'A' && *p <= 'Z')))
			*p = '-';
	return out;
}

static bool secret_name_ok(const char *k)
{
	if (!*k)
		return false;
	for (const char *p = k; *p; p++)
		if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (p != k && *p >= '0' && *p <= '9')))
			return false;
	return true;
}

int sw_gitlab_pipeline(sw_pipeline **out, char ***secret_args, char ***mask, const sw_gitlab_job *j,
                       const char *image, sw_error **err)
{
	if (!j->script || !j->script[0])
		return sw_error_set(err, SW_ERR_INVALID, "job %s: no `script` step", j->name);
	sw_pipeline *p = sw_xcalloc(1, sizeof(*p));
	p->file = sw_xasprintf("gitlab job %" PRId64, j->id);
	p->stages = sw_xcalloc(1, sizeof(*p->stages));
	p->n_stages = 1;
	p->stages[0].name = sw_xstrdup(j->stage);
	p->stages[0].jobs = sw_xcalloc(1, sizeof(size_t));
	p->stages[0].n_jobs = 1;
	p->jobs = sw_xcalloc(1, sizeof(*p->jobs));
	p->n_jobs = 1;
	sw_pl_job *pj = &p->jobs[0];
	pj->name = sw_xstrdup(j->name);
	strs_from(&pj->run, j->script);
	strs_from(&pj->after, j->after_script);
	const char *img = image ? image : j->image;
	pj->image = img ? sw_xstrdup(img) : NULL;
	pj->when.tag = -1;
	pj->timeout_ms = j->timeout_s > 0 ? j->timeout_s * 1000 : 0;
	/* jobs reach the network by default, as GitLab's do; SLIPWAY_NETWORK may say otherwise */
	const char *net = sw_gitlab_job_var(j, "SLIPWAY_NETWORK");
	pj->network = net && strcmp(net, "none") == 0   ? SW_PL_NET_NONE
	              : net && strcmp(net, "host") == 0 ? SW_PL_NET_HOST
	                                                : SW_PL_NET_PRIVATE;
	for (size_t i = 0; i < j->n_vars; i++) {
		const sw_gitlab_var *v = &j->vars[i];
		if (strcmp(v->key, "CI_PROJECT_DIR") == 0 || strcmp(v->key, "CI_BUILDS_DIR") == 0)
			continue;
		if ((v->masked || v->file) && secret_name_ok(v->key)) {
			bool seen = false;
			for (size_t k = 0; k < pj->n_secrets; k++)
				seen = seen || strcmp(pj->secrets[k].name, v->key) == 0;
			if (!seen) {
				pj->secrets = sw_xrealloc(
				        pj->secrets, (pj->n_secrets + 1) * sizeof(*pj->secrets));
				pj->secrets[pj->n_secrets++] =
				        (sw_pl_secret){ .name = sw_xstrdup(v->key),
					                .as_file = v->file };
			}
			/* the run takes the first NAME=VALUE: the last variable wins, as in GitLab
			 */
			cleanup_free char *kv = sw_xasprintf("%s=%s", v->key, v->value);
			char **list = *secret_args;
			size_t n = sw_strv_len(list);
			list = sw_xrealloc(list, (n + 2) * sizeof(char *));
			list[n] = NULL;
			memmove(list + 1, list, (n + 1) * sizeof(char *));
			list[0] = sw_xstrdup(kv);
			*secret_args = list;
			if (v->masked && v->value[0])
				sw_strv_push(mask, v->value);
			continue;
		}
		/* plain variables: raw ones are not expanded */
		cleanup_free char *val = escape_dollars(v->value);
		kvs_add(&pj->env, v->key, v->raw ? val : v->value);
	}
	for (size_t i = 0; i < j->n_services; i++) {
		const sw_gitlab_service *gs = &j->services[i];
		pj->services =
		        sw_xrealloc(pj->services, (pj->n_services + 1) * sizeof(*pj->services));
		sw_pl_service *ps = &pj->services[pj->n_services++];
		memset(ps, 0, sizeof(*ps));
		ps->name = gs->alias && *gs->alias ? sw_xstrdup(gs->alias) : service_name(gs->name);
		ps->image = sw_xstrdup(gs->name);
		strs_from(&ps->entrypoint, gs->entrypoint);
		strs_from(&ps->command, gs->command);
	}
	*out = p;
	return 0;
}

/* ---------------------------------------------------------------- protocol helpers */

void sw_gitlab_checksum(char out[16], uint32_t crc)
{
	snprintf(out, 16, "crc32:%08x", crc);
}

void sw_gitlab_content_range(char out[48], uint64_t start, size_t len)
{
	snprintf(out, 48, "%" PRIu64 "-%" PRIu64, start, start + (uint64_t)len - 1);
}

bool sw_gitlab_range_end(const char *value, uint64_t *end)
{
	if (!value)
		return false;
	while (*value == ' ')
		value++;
	if (strncmp(value, "bytes", 5) == 0) {
		value += 5;
		while (*value == ' ' || *value == '=')
			value++;
	}
	const char *dash = strchr(value, '-');
	if (!dash || dash == value)
		return false;
	for (const char *p = value; p < dash; p++)
		if (*p < '0' || *p > '9')
			return false;
	const char *q = dash + 1;
	if (*q < '0' || *q > '9')
		return false;
	char *e = NULL;
	errno = 0;
	unsigned long long v = strtoull(q, &e, 10);
	if (errno || (*e && *e != ' ' && *e != '\r' && *e != '\n'))
		return false;
	*end = (uint64_t)v;
	return true;
}

char *sw_gitlab_api_url(const char *url, const char *path)
{
	cleanup_free char *base = sw_xstrdup(url);
	size_t n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		base[--n] = 0;
	if (n >= 3 && strcmp(base + n - 3, "/ci") == 0)
		base[n -= 3] = 0;
	while (n > 0 && base[n - 1] == '/')
		base[--n] = 0;
	return sw_xasprintf("%s/api/v4/%s", base, path);
}

char *sw_gitlab_url_safe(const char *url)
{
	const char *p = strstr(url, "://");
	if (!p)
		return sw_xstrdup(url);
	const char *host = p + 3;
	const char *at = strchr(host, '@');
	const char *slash = strchr(host, '/');
	if (!at || (slash && at > slash))
		return sw_xstrdup(url);
	return sw_xasprintf("%.*s%s", (int)(host - url), url, at + 1);
}

/* ---------------------------------------------------------------- zip */

static int ar_fail(struct archive *a, sw_error **err, const char *what, const char *path)
{
	const char *m = archive_error_string(a);
	return sw_error_set(err, SW_ERR_GENERIC, "%s %s: %s", what, path,
	                    m ? m : "libarchive error");
}

static int zip_add(struct archive *a, const char *root, const char *rel, size_t *n, sw_error **err)
{
	cleanup_free char *full = sw_path_join(root, rel);
	struct stat st;
	if (lstat(full, &st) < 0)
		return sw_error_os(err, errno, "artifacts: %s", rel);
	struct archive_entry *e = archive_entry_new();
	bool dir = S_ISDIR(st.st_mode);
	cleanup_free char *name = dir ? sw_xasprintf("%s/", rel) : sw_xstrdup(rel);
	archive_entry_set_pathname(e, name);
	archive_entry_set_mode(e, st.st_mode);
	archive_entry_set_mtime(e, st.st_mtime, 0);
	int rc = 0;
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t tl = readlink(full, target, sizeof(target) - 1);
		if (tl < 0) {
			archive_entry_free(e);
			return sw_error_os(err, errno, "artifacts: %s", rel);
		}
		target[tl] = 0;
		archive_entry_set_symlink(e, target);
		archive_entry_set_size(e, 0);
		if (archive_write_header(a, e) != ARCHIVE_OK)
			rc = ar_fail(a, err, "artifacts: add", rel);
	} else if (S_ISREG(st.st_mode)) {
		archive_entry_set_size(e, st.st_size);
		cleanup_close int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			archive_entry_free(e);
			return sw_error_os(err, errno, "artifacts: %s", rel);
		}
		if (archive_write_header(a, e) != ARCHIVE_OK) {
			rc = ar_fail(a, err, "artifacts: add", rel);
		} else {
			char buf[65536];
			for (;;) {
				ssize_t r = read(fd, buf, sizeof(buf));
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0) {
					rc = sw_error_os(err, errno, "artifacts: read %s", rel);
					break;
				}
				if (r == 0)
					break;
				if (archive_write_data(a, buf, (size_t)r) < 0) {
					rc = ar_fail(a, err, "artifacts: add", rel);
					break;
				}
			}
		}
	} else if (dir) {
		archive_entry_set_size(e, 0);
		if (archive_write_header(a, e) != ARCHIVE_OK)
			rc = ar_fail(a, err, "artifacts: add", rel);
	} else {
		archive_entry_free(e);
		return 0; /* devices, fifos, sockets: not artifacts */
	}
	archive_entry_free(e);
	if (rc < 0)
		return rc;
	(*n)++;
	if (dir) {
		DIR *d = opendir(full);
		if (!d)
			return sw_error_os(err, errno, "artifacts: %s", rel);
		char **names = NULL;
		struct dirent *de;
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				sw_strv_push(&names, de->d_name);
		closedir(d);
		size_t nn = sw_strv_len(names);
		for (size_t i = 0; i < nn; i++) /* sorted: a stable archive */
			for (size_t k = i + 1; k < nn; k++)
				if (strcmp(names[k], names[i]) < 0) {
					char *t = names[i];
					names[i] = names[k];
					names[k] = t;
				}
		for (size_t i = 0; rc == 0 && i < nn; i++) {
			cleanup_free char *child = sw_xasprintf("%s/%s", rel, names[i]);
			rc = zip_add(a, root, child, n, err);
		}
		sw_strv_free(names);
	}
	return rc;
}

int sw_gitlab_zip_create(const char *dest, const char *root, char *const *paths, size_t *n_entries,
                         sw_error **err)
{
	struct archive *a = archive_write_new();
	size_t n = 0;
	int rc = 0;
	if (archive_write_set_format_zip(a) != ARCHIVE_OK ||
	    archive_write_open_filename(a, dest) != ARCHIVE_OK)
		rc = ar_fail(a, err, "artifacts: create", dest);
	for (size_t i = 0; rc == 0 && paths && paths[i]; i++)
		rc = zip_add(a, root, paths[i], &n, err);
	if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
		rc = ar_fail(a, err, "artifacts: write", dest);
	archive_write_free(a);
	if (n_entries)
		*n_entries = n;
	return rc;
}

int sw_gitlab_zip_extract(const char *zip, const char *root, sw_error **err)
{
	struct archive *a = archive_read_new();
	archive_read_support_format_zip(a);
	struct archive *w = archive_write_disk_new();
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
	                                          ARCHIVE_EXTRACT_SECURE_SYMLINKS |
	                                          ARCHIVE_EXTRACT_SECURE_NODOTDOT);
	int rc = 0;
	if (archive_read_open_filename(a, zip, 65536) != ARCHIVE_OK) {
		rc = ar_fail(a, err, "artifacts: open", zip);
		goto out;
	}
	for (;;) {
		struct archive_entry *e;
		int r = archive_read_next_header(a, &e);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
			rc = ar_fail(a, err, "artifacts: read", zip);
			break;
		}
		const char *name = archive_entry_pathname(e);
		if (!name || !*name || name[0] == '/' || strcmp(name, "..") == 0 ||
		    strncmp(name, "../", 3) == 0 || strstr(name, "/../") ||
		    (strlen(name) >= 3 && strcmp(name + strlen(name) - 3, "/..") == 0)) {
			rc = sw_error_set(err, SW_ERR_INVALID, "artifacts %s: entry '%s' is unsafe",
			                  zip, name ? name : "");
			break;
		}
		cleanup_free char *dst = sw_path_join(root, name);
		archive_entry_set_pathname(e, dst);
		/* hard links inside the archive name archive paths: make them absolute too */
		const char *hl = archive_entry_hardlink(e);
		if (hl) {
			if (hl[0] == '/' || strstr(hl, "..")) {
				rc = sw_error_set(err, SW_ERR_INVALID,
				                  "artifacts %s: link '%s' is unsafe", zip, hl);
				break;
			}
			cleanup_free char *hd = sw_path_join(root, hl);
			archive_entry_set_hardlink(e, hd);
		}
		if (archive_write_header(w, e) != ARCHIVE_OK) {
			rc = ar_fail(w, err, "artifacts: unpack", name);
			break;
		}
		const void *buf;
		size_t size;
		la_int64_t off;
		while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
			if (archive_write_data_block(w, buf, size, off) != ARCHIVE_OK) {
				r = ARCHIVE_FATAL;
				break;
			}
		}
		if (r != ARCHIVE_EOF) {
			rc = ar_fail(a, err, "artifacts: unpack", name);
			break;
		}
		if (archive_write_finish_entry(w) != ARCHIVE_OK) {
			rc = ar_fail(w, err, "artifacts: unpack", name);
			break;
		}
	}
out:
	archive_read_free(a);
	archive_write_free(w);
	return rc;
}

/* ---------------------------------------------------------------- runner info */

json_t *sw_gitlab_info(void)
{
	struct utsname u;
	const char *arch = "amd64";
	if (uname(&u) == 0 && strcmp(u.machine, "aarch64") == 0)
		arch = "arm64";
	/* only what slipway really does is advertised */
	json_t *features = json_pack(
	        "{s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b,"
	        " s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b, s:b}",
	        "variables", 1, "image", 1, "services", 1, "artifacts", 1, "cache", 0, "shared", 0,
	        "upload_multiple_artifacts", 1, "upload_raw_artifacts", 0, "session", 0, "terminal",
	        0, "refspecs", 1, "masking", 1, "proxy", 0, "raw_variables", 1, "artifacts_exclude",
	        0, "multi_build_steps", 0, "trace_reset", 1, "trace_checksum", 1, "trace_size", 1,
	        "vault_secrets", 0, "cancelable", 1, "return_exit_code", 1, "service_variables", 0,
	        "cancel_gracefully", 1, "two_phase_job_commit", 0);
	json_object_set_new(features, "failure_reasons",
	                    json_pack("[s, s, s, s]", "script_failure", "job_execution_timeout",
	                              "runner_system_failure", "job_canceled"));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:{}}", "name", "slipway",
	                 "version", "0.1.0", "revision", "slipway", "platform", "linux",
	                 "architecture", arch, "executor", "slipway", "shell", "sh", "features",
	                 features, "config");
}

/* (the daemon sets $SLIPWAY_STATE_DIR to its state folder) */
char *sw_gitlab_state_dir(const sw_agent_config *cfg)
{
	if (cfg && cfg->state_dir)
		return sw_xstrdup(cfg->state_dir);
	const char *env = getenv("SLIPWAY_STATE_DIR");
	if (env && *env)
		return sw_xstrdup(env);
	char *store = sw_oci_store_default_dir();
	char *slash = strrchr(store, '/');
	if (slash && slash != store)
		*slash = 0;
	return store;
}
