/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agent.yml, the configuration of `slipway agent`: libyaml's document API loads the file, then a
 * walk over the node tree fills sw_agent_config key by key, stopping at the first problem with
 * its place ("FILE:LINE:COLUMN: message": unknown keys with the nearest known one as a hint,
 * wrong types, bad durations and sizes, duplicate names, a secret whose variable or file is
 * missing, nothing to work for). Values written as `{env: NAME}` or `{file: PATH}` are resolved
 * here, so the rest of the agent only sees values. docs/agent.md is the reference.
 */
#include "agent/agent_internal.h"
#include "cache/cache.h"
#include "executor/executor.h"
#include "pipeline/pipeline.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <yaml.h>

#define CONFIG_FILE_MAX ((size_t)1 << 20)
#define SECRET_FILE_MAX ((size_t)1 << 20)

/* The config and what the registry options point into (handed out as sw_agent_config *). */
typedef struct config_priv {
	sw_agent_config c; /* first: the public part */
	sw_oci_registry_opts registry;
} config_priv;

typedef struct ctx {
	const char *file;
	char *dir; /* the config file's folder (relative paths) */
	yaml_document_t *doc;
	sw_agent_config *c;
	sw_error **err;
} ctx;

typedef struct pair {
	yaml_node_t *k, *v;
	const char *key;
} pair;

/* ---------------------------------------------------------------- nodes and problems */

static SW_PRINTF(3, 4) int problem(ctx *x, const yaml_node_t *n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	int line = n ? (int)n->start_mark.line + 1 : 1, col = n ? (int)n->start_mark.column + 1 : 1;
	return sw_error_set(x->err, SW_ERR_INVALID, "%s:%d:%d: %s", x->file, line, col, m);
}

static yaml_node_t *node(ctx *x, int id)
{
	return yaml_document_get_node(x->doc, id);
}

static const char *sval(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool is_scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE;
}

/* A plain scalar that YAML reads as null (an empty value, "~", "null"). */
static bool is_null(const yaml_node_t *n)
{
	if (!is_scalar(n) || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = sval(n);
	return !*s || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	       strcmp(s, "NULL") == 0;
}

static const char *type_name(const yaml_node_t *n)
{
	if (n->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (n->type == YAML_SEQUENCE_NODE)
		return "a list";
	return "a value";
}

/* The pairs of a mapping node (caller frees), each key checked to be a scalar. */
static int pairs_of(pair **out, size_t *n_out, ctx *x, yaml_node_t *m, const char *what)
{
	*out = NULL;
	*n_out = 0;
	if (!m || m->type != YAML_MAPPING_NODE)
		return problem(x, m, "'%s' must be a mapping, not %s", what, type_name(m));
	size_t n = (size_t)(m->data.mapping.pairs.top - m->data.mapping.pairs.start);
	pair *v = sw_xcalloc(n ? n : 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		yaml_node_pair_t *p = m->data.mapping.pairs.start + i;
		v[i].k = node(x, p->key);
		v[i].v = node(x, p->value);
		if (!is_scalar(v[i].k)) {
			yaml_node_t *k = v[i].k;
			free(v);
			return problem(x, k, "a key in '%s' must be a name", what);
		}
		v[i].key = sval(v[i].k);
		for (size_t j = 0; j < i; j++) {
			if (strcmp(v[j].key, v[i].key) == 0) {
				int rc = problem(x, v[i].k, "'%s' is given twice in '%s'", v[i].key,
				                 what);
				free(v);
				return rc;
			}
		}
	}
	*out = v;
	*n_out = n;
	return 0;
}

static int unknown_key(ctx *x, const pair *p, const char *where, const char *const *known)
{
	size_t n_known = 0;
	while (known[n_known])
		n_known++;
	const char *best = sw_str_nearest(p->key, known, n_known);
	if (best)
		return problem(x, p->k, "unknown key '%s' in %s (did you mean '%s'?)", p->key,
		               where, best);
	cleanup_free char *list = NULL;
	for (size_t i = 0; known[i]; i++) {
		char *l = sw_xasprintf("%s%s%s", list ? list : "", list ? ", " : "", known[i]);
		free(list);
		list = l;
	}
	return problem(x, p->k, "unknown key '%s' in %s (known keys: %s)", p->key, where, list);
}

/* ---------------------------------------------------------------- typed values */

static int get_str(char **out, ctx *x, const pair *p)
{
	if (!is_scalar(p->v) || is_null(p->v))
		return problem(x, p->v, "'%s' must be a string, not %s", p->key,
		               is_null(p->v) ? "empty" : type_name(p->v));
	free(*out);
	*out = sw_xstrdup(sval(p->v));
	return 0;
}

static int get_bool(bool *out, ctx *x, const pair *p)
{
	if (is_scalar(p->v) && p->v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		const char *s = sval(p->v);
		if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "yes") == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "no") == 0) {
			*out = false;
			return 0;
		}
	}
	return problem(x, p->v, "'%s' must be true or false", p->key);
}

static int get_int(int64_t *out, ctx *x, const pair *p, int64_t min, int64_t max)
{
	if (!is_scalar(p->v) || p->v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return problem(x, p->v, "'%s' must be a number from %lld to %lld", p->key,
		               (long long)min, (long long)max);
	const char *s = sval(p->v);
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || errno || v < min || v > max)
		return problem(x, p->v, "'%s' must be a number from %lld to %lld, not '%s'", p->key,
		               (long long)min, (long long)max, s);
	*out = v;
	return 0;
}

static int get_duration(int64_t *out, ctx *x, const pair *p)
{
	int64_t ms = 0;
	if (!is_scalar(p->v) || is_null(p->v) || sw_pl_duration_parse(&ms, sval(p->v)) < 0)
		return problem(x, p->v,
		               "'%s' has a bad duration '%s' (use e.g. 500ms, 45s, 10m, 1h30m)",
		               p->key, is_scalar(p->v) ? sval(p->v) : "");
	if (ms <= 0)
		return problem(x, p->v, "'%s' must be longer than 0", p->key);
	*out = ms;
	return 0;
}

static int get_size(uint64_t *out, ctx *x, const pair *p)
{
	sw_error *e = NULL;
	if (!is_scalar(p->v) || is_null(p->v) || sw_cache_size_parse(out, sval(p->v), &e) < 0) {
		sw_error_free(e);
		return problem(x, p->v, "'%s' has a bad size '%s' (use e.g. 512MiB, 20GB)", p->key,
		               is_scalar(p->v) ? sval(p->v) : "");
	}
	return 0;
}

/* A list of strings (a single string is a list of one). */
static int get_strv(char ***out, ctx *x, const pair *p)
{
	sw_strv_free(*out);
	*out = NULL;
	char **v = NULL;
	if (is_scalar(p->v) && !is_null(p->v)) {
		sw_strv_push(&v, sval(p->v));
		*out = v;
		return 0;
	}
	if (p->v->type != YAML_SEQUENCE_NODE)
		return problem(x, p->v, "'%s' must be a list of strings", p->key);
	for (yaml_node_item_t *it = p->v->data.sequence.items.start;
	     it < p->v->data.sequence.items.top; it++) {
		yaml_node_t *e = node(x, *it);
		if (!is_scalar(e) || is_null(e)) {
			sw_strv_free(v);
			return problem(x, e, "'%s' must be a list of strings", p->key);
		}
		sw_strv_push(&v, sval(e));
	}
	if (!v)
		v = sw_xcalloc(1, sizeof(char *));
	*out = v;
	return 0;
}

static char *resolve_path(ctx *x, const char *p)
{
	if (p[0] == '/')
		return sw_xstrdup(p);
	cleanup_free char *j = sw_path_join(x->dir, p);
	return sw_path_clean(j);
}

/*
 * A secret value: a string as it is, `{env: NAME}` (the environment variable, which must be
 * set) or `{file: PATH}` (the file's content without its trailing newlines).
 */
static int get_secret(char **out, ctx *x, const pair *p, const char *what)
{
	if (is_scalar(p->v) && !is_null(p->v))
		return get_str(out, x, p);
	if (!p->v || p->v->type != YAML_MAPPING_NODE)
		return problem(x, p->v, "%s must be a string, {env: NAME} or {file: PATH}", what);
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, p->v, p->key) < 0)
		return SW_ERR_INVALID;
	if (n != 1 || (strcmp(ps[0].key, "env") != 0 && strcmp(ps[0].key, "file") != 0) ||
	    !is_scalar(ps[0].v) || is_null(ps[0].v))
		return problem(x, p->v, "%s must be a string, {env: NAME} or {file: PATH}", what);
	const char *arg = sval(ps[0].v);
	if (strcmp(ps[0].key, "env") == 0) {
		const char *v = getenv(arg);
		if (!v)
			return problem(x, ps[0].v, "%s: the environment variable %s is not set",
			               what, arg);
		free(*out);
		*out = sw_xstrdup(v);
		return 0;
	}
	cleanup_free char *path = resolve_path(x, arg);
	char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, path, SECRET_FILE_MAX, &e) < 0) {
		int rc = problem(x, ps[0].v, "%s: cannot read the file: %s", what, sw_error_msg(e));
		sw_error_free(e);
		return rc;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	free(*out);
	*out = buf;
	return 0;
}

static bool valid_var_name(const char *s)
{
	if (!*s)
		return false;
	for (size_t i = 0; s[i]; i++) {
		char c = s[i];
		if (!(isalpha((unsigned char)c) || c == '_' ||
		      (i > 0 && isdigit((unsigned char)c))))
			return false;
	}
	return true;
}

/* A name used in paths and work ids: letters, digits, '.', '_', '-', not starting with '.'. */
static bool valid_name(const char *s)
{
	if (!*s || s[0] == '.' || strlen(s) > 100)
		return false;
	for (const char *c = s; *c; c++)
		if (!(isalnum((unsigned char)*c) || *c == '.' || *c == '_' || *c == '-'))
			return false;
	return true;
}

/* ---------------------------------------------------------------- sections */

static int parse_executor(ctx *x, const pair *sec)
{
	static const char *const known[] = { "backend", "runtime", "docker_host", NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, sec->v, "executor") < 0)
		return SW_ERR_INVALID;
	const pair *docker_host = NULL, *runtime = NULL;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		if (strcmp(p->key, "backend") == 0) {
			if (!is_scalar(p->v) ||
			    (strcmp(sval(p->v), "oci") != 0 && strcmp(sval(p->v), "docker") != 0))
				return problem(x, p->v, "'backend' must be oci or docker");
			x->c->backend = strcmp(sval(p->v), "oci") == 0 ? SW_EXEC_BACKEND_OCI
			                                               : SW_EXEC_BACKEND_DOCKER;
		} else if (strcmp(p->key, "runtime") == 0) {
			if (get_str(&x->c->runtime, x, p) < 0)
				return SW_ERR_INVALID;
			runtime = p;
		} else if (strcmp(p->key, "docker_host") == 0) {
			if (get_str(&x->c->docker_host, x, p) < 0)
				return SW_ERR_INVALID;
			docker_host = p;
		} else {
			return unknown_key(x, p, "'executor'", known);
		}
	}
	if (docker_host && x->c->backend != SW_EXEC_BACKEND_DOCKER)
		return problem(x, docker_host->k, "'docker_host' needs 'backend: docker'");
	if (runtime && x->c->backend == SW_EXEC_BACKEND_DOCKER)
		return problem(x, runtime->k, "'runtime' is for 'backend: oci'");
	return 0;
}

static int parse_limits(ctx *x, const pair *sec)
{
	static const char *const known[] = { "memory", "pids", "cpus", NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, sec->v, "limits") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		if (strcmp(p->key, "memory") == 0) {
			if (get_size(&x->c->memory_limit, x, p) < 0)
				return SW_ERR_INVALID;
		} else if (strcmp(p->key, "pids") == 0) {
			int64_t v;
			if (get_int(&v, x, p, 1, 1 << 22) < 0)
				return SW_ERR_INVALID;
			x->c->pids_limit = (uint64_t)v;
		} else if (strcmp(p->key, "cpus") == 0) {
			char *end = NULL;
			double v = is_scalar(p->v) ? strtod(sval(p->v), &end) : 0;
			if (!is_scalar(p->v) || !*sval(p->v) || *end || !(v > 0) || v > 4096)
				return problem(x, p->v,
				               "'cpus' must be a positive number (e.g. 1.5)");
			x->c->cpu_millis = (uint32_t)(v * 1000 + 0.5);
		} else {
			return unknown_key(x, p, "'limits'", known);
		}
	}
	return 0;
}

static int parse_cache(ctx *x, const pair *sec)
{
	static const char *const known[] = { "max_size", NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, sec->v, "cache") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(ps[i].key, "max_size") == 0) {
			if (get_size(&x->c->cache_max_bytes, x, &ps[i]) < 0)
				return SW_ERR_INVALID;
		} else {
			return unknown_key(x, &ps[i], "'cache'", known);
		}
	}
	return 0;
}

static int parse_log(ctx *x, const pair *sec, bool *level_set, bool *format_set)
{
	static const char *const known[] = { "format", "level", NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, sec->v, "log") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		if (strcmp(p->key, "format") == 0) {
			if (!is_scalar(p->v) ||
			    (strcmp(sval(p->v), "text") != 0 && strcmp(sval(p->v), "json") != 0))
				return problem(x, p->v, "'format' must be text or json");
			x->c->log_format = strcmp(sval(p->v), "json") == 0;
			*format_set = true;
		} else if (strcmp(p->key, "level") == 0) {
			int lv = is_scalar(p->v) ? sw_log_level_parse(sval(p->v)) : -1;
			if (lv < 0)
				return problem(x, p->v,
				               "'level' must be error, warn, info, debug or trace");
			x->c->log_level = lv;
			*level_set = true;
		} else {
			return unknown_key(x, p, "'log'", known);
		}
	}
	return 0;
}

/* "HOST:PORT" with a numeric port; "" turns the server off. */
static int parse_metrics(ctx *x, const pair *sec)
{
	static const char *const known[] = { "listen", NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (is_scalar(sec->v) && strcmp(sval(sec->v), "false") == 0) {
		free(x->c->metrics_addr);
		x->c->metrics_addr = sw_xstrdup("");
		return 0;
	}
	if (pairs_of(&ps, &n, x, sec->v, "metrics") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		if (strcmp(p->key, "listen") != 0)
			return unknown_key(x, p, "'metrics'", known);
		if (!is_scalar(p->v))
			return problem(x, p->v, "'listen' must be HOST:PORT or \"\"");
		const char *s = sval(p->v);
		if (*s) {
			const char *colon = strrchr(s, ':');
			char *end = NULL;
			long port = colon ? strtol(colon + 1, &end, 10) : -1;
			if (!colon || colon == s || !colon[1] || *end || port < 0 || port > 65535)
				return problem(
				        x, p->v,
				        "'listen' must be HOST:PORT (e.g. 127.0.0.1:9252), not "
				        "'%s'",
				        s);
		}
		free(x->c->metrics_addr);
		x->c->metrics_addr = sw_xstrdup(s);
	}
	return 0;
}

static int parse_registries(ctx *x, const pair *sec)
{
	static const char *const known[] = { "host", "username", "password", "docker_config",
		                             NULL };
	if (sec->v->type != YAML_SEQUENCE_NODE)
		return problem(x, sec->v, "'registries' must be a list");
	for (yaml_node_item_t *it = sec->v->data.sequence.items.start;
	     it < sec->v->data.sequence.items.top; it++) {
		yaml_node_t *e = node(x, *it);
		cleanup_free pair *ps = NULL;
		size_t n = 0;
		if (pairs_of(&ps, &n, x, e, "registries") < 0)
			return SW_ERR_INVALID;
		sw_oci_credentials cr = { NULL, NULL, NULL };
		bool is_docker_config = false;
		int rc = 0;
		for (size_t i = 0; i < n && rc == 0; i++) {
			const pair *p = &ps[i];
			if (strcmp(p->key, "host") == 0) {
				rc = get_str(&cr.registry, x, p);
			} else if (strcmp(p->key, "username") == 0) {
				rc = get_str(&cr.username, x, p);
			} else if (strcmp(p->key, "password") == 0) {
				rc = get_secret(&cr.password, x, p, "'password'");
			} else if (strcmp(p->key, "docker_config") == 0) {
				if (x->c->docker_config) {
					rc = problem(x, p->k,
					             "only one 'docker_config' may be given");
				} else if ((rc = get_str(&x->c->docker_config, x, p)) == 0) {
					char *r = resolve_path(x, x->c->docker_config);
					free(x->c->docker_config);
					x->c->docker_config = r;
					is_docker_config = true;
				}
			} else {
				rc = unknown_key(x, p, "a registry", known);
			}
		}
		if (rc == 0 && is_docker_config && n != 1)
			rc = problem(x, e,
			             "a registry entry with 'docker_config' has no other keys");
		if (rc == 0 && !is_docker_config) {
			if (!cr.registry)
				rc = problem(x, e, "a registry needs 'host'");
			else if (!cr.username || !cr.password)
				rc = problem(x, e, "registry '%s' needs 'username' and 'password'",
				             cr.registry);
			for (size_t i = 0; rc == 0 && i < x->c->n_credentials; i++)
				if (strcmp(x->c->credentials[i].registry, cr.registry) == 0)
					rc = problem(x, e, "registry '%s' is given twice",
					             cr.registry);
		}
		if (rc < 0 || is_docker_config) {
			sw_oci_credentials_clear(&cr);
			if (rc < 0)
				return rc;
			continue;
		}
		x->c->credentials =
		        sw_xrealloc(x->c->credentials, (x->c->n_credentials + 1) * sizeof(cr));
		x->c->credentials[x->c->n_credentials++] = cr;
	}
	return 0;
}

static int parse_secrets(ctx *x, const pair *sec)
{
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, sec->v, "secrets") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		if (!valid_var_name(ps[i].key))
			return problem(x, ps[i].k, "secret name '%s' is not a variable name",
			               ps[i].key);
		cleanup_free char *what = sw_xasprintf("secret '%s'", ps[i].key);
		cleanup_free char *v = NULL;
		if (get_secret(&v, x, &ps[i], what) < 0)
			return SW_ERR_INVALID;
		cleanup_free char *kv = sw_xasprintf("%s=%s", ps[i].key, v);
		sw_strv_push(&x->c->secrets, kv);
	}
	return 0;
}

static int parse_vars(char ***out, ctx *x, const pair *sec)
{
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, sec->v, "vars") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		if (!valid_var_name(ps[i].key))
			return problem(x, ps[i].k, "variable name '%s' is not a variable name",
			               ps[i].key);
		if (!is_scalar(ps[i].v))
			return problem(x, ps[i].v, "variable '%s' must be a string", ps[i].key);
		cleanup_free char *kv = sw_xasprintf("%s=%s", ps[i].key, sval(ps[i].v));
		sw_strv_push(out, kv);
	}
	return 0;
}

/* The default name of a repository or server: the URL's last path part without ".git". */
static char *url_basename(const char *url)
{
	size_t len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		len--;
	size_t start = len;
	while (start > 0 && url[start - 1] != '/' && url[start - 1] != ':')
		start--;
	size_t n = len - start;
	if (n > 4 && memcmp(url + start + n - 4, ".git", 4) == 0)
		n -= 4;
	return sw_xstrndup(url + start, n);
}

static int parse_repo(ctx *x, yaml_node_t *e)
{
	static const char *const known[] = { "name",     "url",          "branches", "tags",
		                             "poll",     "every_commit", "file",     "username",
		                             "password", "token",        "ssh_key",  "vars",
		                             NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, e, "repos") < 0)
		return SW_ERR_INVALID;
	sw_agent_config *c = x->c;
	c->repos = sw_xrealloc(c->repos, (c->n_repos + 1) * sizeof(*c->repos));
	sw_agent_repo *r = &c->repos[c->n_repos++];
	memset(r, 0, sizeof(*r));
	r->poll_ms = 60000;
	r->line = (int)e->start_mark.line + 1;
	r->column = (int)e->start_mark.column + 1;
	const pair *name = NULL;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		int rc;
		if (strcmp(p->key, "name") == 0) {
			rc = get_str(&r->name, x, p);
			name = p;
		} else if (strcmp(p->key, "url") == 0) {
			rc = get_str(&r->url, x, p);
		} else if (strcmp(p->key, "branches") == 0) {
			rc = get_strv(&r->branches, x, p);
		} else if (strcmp(p->key, "tags") == 0) {
			rc = get_strv(&r->tags, x, p);
		} else if (strcmp(p->key, "poll") == 0) {
			rc = get_duration(&r->poll_ms, x, p);
		} else if (strcmp(p->key, "every_commit") == 0) {
			rc = get_bool(&r->every_commit, x, p);
		} else if (strcmp(p->key, "file") == 0) {
			rc = get_str(&r->pipeline_file, x, p);
		} else if (strcmp(p->key, "username") == 0) {
			rc = get_str(&r->username, x, p);
		} else if (strcmp(p->key, "password") == 0) {
			rc = get_secret(&r->password, x, p, "'password'");
		} else if (strcmp(p->key, "token") == 0) {
			rc = get_secret(&r->token, x, p, "'token'");
		} else if (strcmp(p->key, "ssh_key") == 0) {
			rc = get_str(&r->ssh_key, x, p);
			if (rc == 0) {
				char *k = resolve_path(x, r->ssh_key);
				free(r->ssh_key);
				r->ssh_key = k;
			}
		} else if (strcmp(p->key, "vars") == 0) {
			rc = parse_vars(&r->vars, x, p);
		} else {
			rc = unknown_key(x, p, "a repository", known);
		}
		if (rc < 0)
			return rc;
	}
	if (!r->url)
		return problem(x, e, "a repository needs 'url'");
	if (!r->name)
		r->name = url_basename(r->url);
	if (!valid_name(r->name))
		return problem(x, name ? name->v : e,
		               "repository name '%s' may only have letters, digits, '.', '_' and "
		               "'-' (set 'name')",
		               r->name);
	if (!!r->username != !!r->password)
		return problem(x, e, "repository '%s': 'username' and 'password' go together",
		               r->name);
	if (r->token && r->username)
		return problem(x, e,
		               "repository '%s': give 'token' or 'username' and 'password', "
		               "not both",
		               r->name);
	if (!r->branches)
		sw_strv_push(&r->branches, "*");
	if (!r->pipeline_file)
		r->pipeline_file = sw_xstrdup(".slipway.yml");
	for (size_t i = 0; i + 1 < c->n_repos; i++)
		if (strcmp(c->repos[i].name, r->name) == 0)
			return problem(x, name ? name->v : e,
			               "repository name '%s' is used twice (first at line %d)",
			               r->name, c->repos[i].line);
	return 0;
}

/* http:// only for loopback hosts. */
static bool url_is_loopback_http(const char *url)
{
	if (strncmp(url, "http://", 7) != 0)
		return false;
	const char *h = url + 7;
	size_t n = strcspn(h, ":/");
	char host[64];
	if (n == 0 || n >= sizeof(host))
		return false;
	memcpy(host, h, n);
	host[n] = '\0';
	if (strcmp(host, "localhost") == 0)
		return true;
	struct in_addr a;
	return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

static char *url_host(const char *url)
{
	const char *h = strstr(url, "://");
	h = h ? h + 3 : url;
	return sw_xstrndup(h, strcspn(h, ":/"));
}

static int parse_gitlab(ctx *x, yaml_node_t *e)
{
	static const char *const known[] = { "name", "url",     "token", "limit",
		                             "poll", "ca_file", NULL };
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (pairs_of(&ps, &n, x, e, "gitlab") < 0)
		return SW_ERR_INVALID;
	sw_agent_config *c = x->c;
	c->gitlab = sw_xrealloc(c->gitlab, (c->n_gitlab + 1) * sizeof(*c->gitlab));
	sw_agent_gitlab *g = &c->gitlab[c->n_gitlab++];
	memset(g, 0, sizeof(*g));
	g->poll_ms = 3000;
	g->line = (int)e->start_mark.line + 1;
	g->column = (int)e->start_mark.column + 1;
	const pair *name = NULL, *url = NULL;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		int rc;
		if (strcmp(p->key, "name") == 0) {
			rc = get_str(&g->name, x, p);
			name = p;
		} else if (strcmp(p->key, "url") == 0) {
			rc = get_str(&g->url, x, p);
			url = p;
		} else if (strcmp(p->key, "token") == 0) {
			rc = get_secret(&g->token, x, p, "'token'");
		} else if (strcmp(p->key, "limit") == 0) {
			int64_t v = 0;
			rc = get_int(&v, x, p, 1, 256);
			g->limit = (int)v;
		} else if (strcmp(p->key, "poll") == 0) {
			rc = get_duration(&g->poll_ms, x, p);
		} else if (strcmp(p->key, "ca_file") == 0) {
			rc = get_str(&g->ca_file, x, p);
			if (rc == 0) {
				char *f = resolve_path(x, g->ca_file);
				free(g->ca_file);
				g->ca_file = f;
			}
		} else {
			rc = unknown_key(x, p, "a GitLab server", known);
		}
		if (rc < 0)
			return rc;
	}
	if (!g->url)
		return problem(x, e, "a GitLab server needs 'url'");
	if (strncmp(g->url, "https://", 8) != 0 && !url_is_loopback_http(g->url))
		return problem(
		        x, url->v,
		        "GitLab 'url' must be https:// (http:// only for 127.0.0.1), not '%s'",
		        g->url);
	if (!g->token)
		return problem(x, e, "GitLab server '%s' needs 'token' (the runner's glrt- token)",
		               g->url);
	if (!g->name)
		g->name = url_host(g->url);
	if (!valid_name(g->name))
		return problem(
		        x, name ? name->v : e,
		        "GitLab server name '%s' may only have letters, digits, '.', '_' and "
		        "'-' (set 'name')",
		        g->name);
	for (size_t i = 0; i + 1 < c->n_gitlab; i++)
		if (strcmp(c->gitlab[i].name, g->name) == 0)
			return problem(x, name ? name->v : e,
			               "GitLab server name '%s' is used twice (first at line %d)",
			               g->name, c->gitlab[i].line);
	return 0;
}

static int parse_list(ctx *x, const pair *sec, int (*item)(ctx *, yaml_node_t *))
{
	if (is_null(sec->v))
		return 0;
	if (sec->v->type != YAML_SEQUENCE_NODE)
		return problem(x, sec->v, "'%s' must be a list", sec->key);
	for (yaml_node_item_t *it = sec->v->data.sequence.items.start;
	     it < sec->v->data.sequence.items.top; it++)
		if (item(x, node(x, *it)) < 0)
			return SW_ERR_INVALID;
	return 0;
}

/* ---------------------------------------------------------------- the file */

static char *default_state_dir(void)
{
	/* main() puts --state-dir in SLIPWAY_STATE_DIR */
	const char *env = getenv("SLIPWAY_STATE_DIR");
	if (env && *env)
		return sw_xstrdup(env);
	char *store = sw_oci_store_default_dir();
	char *slash = strrchr(store, '/');
	if (slash && slash != store)
		*slash = 0;
	return store;
}

static int parse_top(ctx *x, yaml_node_t *root, bool *level_set, bool *format_set)
{
	static const char *const known[] = {
		"concurrency",
		"state_dir",
		"executor",
		"limits",
		"cache",
		"log",
		"metrics",
		"shutdown_timeout",
		"kill_grace",
		"sweep_interval",
		"max_attempts",
		"registries",
		"insecure_registries",
		"secrets",
		"repos",
		"gitlab",
		NULL,
	};
	sw_agent_config *c = x->c;
	if (!root)
		return problem(x, NULL, "the file is empty: it needs 'repos' or 'gitlab'");
	cleanup_free pair *ps = NULL;
	size_t n = 0;
	if (root->type != YAML_MAPPING_NODE)
		return problem(x, root,
		               "the file must be a mapping of keys (concurrency, repos, ...)");
	if (pairs_of(&ps, &n, x, root, "the file") < 0)
		return SW_ERR_INVALID;
	for (size_t i = 0; i < n; i++) {
		const pair *p = &ps[i];
		const char *k = p->key;
		int rc;
		int64_t v = 0;
		if (strcmp(k, "concurrency") == 0) {
			rc = get_int(&v, x, p, 1, 256);
			c->concurrency = (int)v;
		} else if (strcmp(k, "state_dir") == 0) {
			rc = get_str(&c->state_dir, x, p);
			if (rc == 0) {
				char *s = resolve_path(x, c->state_dir);
				free(c->state_dir);
				c->state_dir = s;
			}
		} else if (strcmp(k, "executor") == 0) {
			rc = parse_executor(x, p);
		} else if (strcmp(k, "limits") == 0) {
			rc = parse_limits(x, p);
		} else if (strcmp(k, "cache") == 0) {
			rc = parse_cache(x, p);
		} else if (strcmp(k, "log") == 0) {
			rc = parse_log(x, p, level_set, format_set);
		} else if (strcmp(k, "metrics") == 0) {
			rc = parse_metrics(x, p);
		} else if (strcmp(k, "shutdown_timeout") == 0) {
			rc = get_duration(&c->shutdown_timeout_ms, x, p);
		} else if (strcmp(k, "kill_grace") == 0) {
			rc = get_duration(&c->kill_grace_ms, x, p);
		} else if (strcmp(k, "sweep_interval") == 0) {
			rc = get_duration(&c->sweep_interval_ms, x, p);
		} else if (strcmp(k, "max_attempts") == 0) {
			rc = get_int(&v, x, p, 1, 100);
			c->max_attempts = (int)v;
		} else if (strcmp(k, "registries") == 0) {
			rc = is_null(p->v) ? 0 : parse_registries(x, p);
		} else if (strcmp(k, "insecure_registries") == 0) {
			rc = get_strv(&c->insecure_registries, x, p);
		} else if (strcmp(k, "secrets") == 0) {
			rc = is_null(p->v) ? 0 : parse_secrets(x, p);
		} else if (strcmp(k, "repos") == 0) {
			rc = parse_list(x, p, parse_repo);
		} else if (strcmp(k, "gitlab") == 0) {
			rc = parse_list(x, p, parse_gitlab);
		} else {
			rc = unknown_key(x, p, "the configuration", known);
		}
		if (rc < 0)
			return rc;
	}
	if (c->n_repos == 0 && c->n_gitlab == 0)
		return problem(x, root,
		               "nothing to do: give repositories to watch ('repos') or GitLab "
		               "servers to poll ('gitlab')");
	for (size_t i = 0; i < c->n_gitlab; i++)
		if (c->gitlab[i].limit == 0)
			c->gitlab[i].limit = c->concurrency;
	return 0;
}

int sw_agent_config_load(sw_agent_config **out, const char *path, sw_error **err)
{
	*out = NULL;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	if (sw_fs_read_file(&buf, &len, path, CONFIG_FILE_MAX, err) < 0)
		return sw_error_wrap(err, "agent configuration");
	config_priv *priv = sw_xcalloc(1, sizeof(*priv));
	sw_agent_config *c = &priv->c;
	c->file = sw_xstrdup(path);
	c->concurrency = 2;
	c->backend = SW_EXEC_BACKEND_OCI;
	c->log_format = 0;
	c->log_level = SW_LOG_INFO;
	c->metrics_addr = sw_xstrdup("127.0.0.1:9252");
	c->shutdown_timeout_ms = 600000;
	c->kill_grace_ms = 10000;
	c->sweep_interval_ms = 300000;
	c->max_attempts = 2;

	ctx x = { .file = path, .c = c, .err = err };
	cleanup_free char *copy = sw_xstrdup(path);
	char *slash = strrchr(copy, '/');
	x.dir = slash ? sw_xstrndup(copy, slash == copy ? 1 : (size_t)(slash - copy))
	              : sw_xstrdup(".");

	yaml_parser_t parser;
	yaml_document_t doc;
	int rc = 0;
	bool level_set = false, format_set = false;
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_YAML, parser.error, "%s:%d:%d: %s",
		                  path, (int)parser.problem_mark.line + 1,
		                  (int)parser.problem_mark.column + 1,
		                  parser.problem ? parser.problem : "YAML syntax error");
		yaml_parser_delete(&parser);
		goto out;
	}
	x.doc = &doc;
	rc = parse_top(&x, yaml_document_get_root_node(&doc), &level_set, &format_set);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
out:
	free(x.dir);
	if (rc < 0) {
		sw_agent_config_free(c);
		return rc;
	}
	if (!c->state_dir)
		c->state_dir = default_state_dir();
	if (!c->runtime && c->backend == SW_EXEC_BACKEND_OCI)
		c->runtime = sw_xstrdup("runc");
	if (!level_set)
		c->log_level = -1; /* keep what the command line set */
	if (!format_set)
		c->log_format = -1;
	priv->registry.credentials = c->credentials;
	priv->registry.n_credentials = c->n_credentials;
	priv->registry.docker_config = c->docker_config;
	priv->registry.insecure = (const char *const *)c->insecure_registries;
	*out = c;
	return 0;
}

const sw_oci_registry_opts *sw_agent_config_registry(const sw_agent_config *c)
{
	return &((const config_priv *)c)->registry;
}

void sw_agent_config_free(sw_agent_config *c)
{
	if (!c)
		return;
	free(c->file);
	free(c->state_dir);
	free(c->runtime);
	free(c->docker_host);
	for (size_t i = 0; i < c->n_credentials; i++)
		sw_oci_credentials_clear(&c->credentials[i]);
	free(c->credentials);
	free(c->docker_config);
	sw_strv_free(c->insecure_registries);
	if (c->secrets)
		for (char **s = c->secrets; *s; s++)
			explicit_bzero(*s, strlen(*s));
	sw_strv_free(c->secrets);
	free(c->metrics_addr);
	for (size_t i = 0; i < c->n_repos; i++) {
		sw_agent_repo *r = &c->repos[i];
		free(r->name);
		free(r->url);
		sw_strv_free(r->branches);
		sw_strv_free(r->tags);
		free(r->pipeline_file);
		free(r->username);
		free(r->password);
		free(r->token);
		free(r->ssh_key);
		sw_strv_free(r->vars);
	}
	free(c->repos);
	for (size_t i = 0; i < c->n_gitlab; i++) {
		free(c->gitlab[i].name);
		free(c->gitlab[i].url);
		free(c->gitlab[i].token);
		free(c->gitlab[i].ca_file);
	}
	free(c->gitlab);
	free((config_priv *)c);
}
