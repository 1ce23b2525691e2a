/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `.slipway.yml` parser. libyaml's document API loads the file (anchors and aliases are
 * resolved by libyaml; merge keys "<<" are applied here, explicit keys winning), then a walk
 * over the node tree fills the model key by key. Every problem found on the way (YAML syntax,
 * unknown keys with the nearest known one as a hint, wrong types, bad durations, names, values
 * out of range, missing required keys) is collected with its position and the walk goes on, so
 * lint can show them all; validate.c then checks what needs the whole model (duplicate names,
 * needs). libyaml marks are 0-based; messages say FILE:LINE:COLUMN, 1-based.
 */
#include "pipeline/pipeline_internal.h"

#include <ctype.h>
#include <string.h>
#include <yaml.h>

#define PIPELINE_FILE_MAX ((size_t)4 << 20)
/* Nodes visited (aliases count each time they are used): a bound on alias bombs. */
#define WALK_BUDGET 200000
#define MERGE_MAX_DEPTH 16
#define RETRY_MAX 10

typedef struct ctx {
	yaml_document_t *doc;
	sw_pipeline *p;
	sw_pl__problems ps;
	sw_pl_pos **needs_pos; /* per job, where each of its needs was written */
	long budget;
	bool over_budget;
} ctx;

typedef struct pair {
	yaml_node_t *k;
	yaml_node_t *v;
	const char *key;
} pair;

/* ---------------------------------------------------------------- nodes */

static sw_pl_pos pos_of(const yaml_node_t *n)
{
	sw_pl_pos p = { (int)n->start_mark.line + 1, (int)n->start_mark.column + 1 };
	return p;
}

static SW_PRINTF(3, 4) void problem(ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = sw_xvasprintf(fmt, ap);
	va_end(ap);
	sw_pl__problem_add(&c->ps, n ? pos_of(n) : (sw_pl_pos){ 1, 1 }, "%s", msg);
	free(msg);
}

static bool spend(ctx *c, const yaml_node_t *n)
{
	if (c->over_budget)
		return false;
	if (--c->budget < 0) {
		c->over_budget = true;
		problem(c, n, "the file is too complex (too many nodes once aliases are expanded)");
		return false;
	}
	return true;
}

static yaml_node_t *node(ctx *c, int id)
{
	return yaml_document_get_node(c->doc, id);
}

static const char *sval(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

static bool plain(const yaml_node_t *n)
{
	return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool is_null(const yaml_node_t *n)
{
	if (!plain(n))
		return false;
	const char *s = sval(n);
	return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	       !strcmp(s, "NULL");
}

static int bool_of(const yaml_node_t *n)
{
	if (!plain(n))
		return -1;
	const char *s = sval(n);
	if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
		return 1;
	if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
		return 0;
	return -1;
}

static bool is_int_text(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

static bool is_number(const yaml_node_t *n)
{
	if (!plain(n))
		return false;
	const char *s = sval(n);
	if (is_int_text(s))
		return true;
	char *end = NULL;
	if (*s && (isdigit((unsigned char)*s) || *s == '-' || *s == '+' || *s == '.')) {
		(void)strtod(s, &end);
		return end && *end == '\0';
	}
	return false;
}

/* "a list", "a map", "null", "a boolean", "a number", "a string" */
static const char *kind_of(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a map";
	default:
		break;
	}
	if (is_null(n))
		return "null";
	if (bool_of(n) >= 0)
		return "a boolean";
	if (is_number(n))
		return "a number";
	return "a string";
}

/* ---------------------------------------------------------------- maps */

static bool key_in(const pair *v, size_t n, const char *k)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].key, k))
			return true;
	return false;
}

static void collect_merge(ctx *c, yaml_node_t *m, pair **out, size_t *n, size_t n_explicit,
                          int depth);

/* The pairs of a mapping: explicit keys (each once), then what "<<" merges in. */
static void collect_pairs(ctx *c, yaml_node_t *m, pair **out, size_t *n, int depth)
{
	size_t first = *n;
	yaml_node_t *merges[64];
	size_t n_merges = 0;
	for (yaml_node_pair_t *pp = m->data.mapping.pairs.start; pp < m->data.mapping.pairs.top;
	     pp++) {
		yaml_node_t *k = node(c, pp->key), *v = node(c, pp->value);
		if (!k || !v || !spend(c, k))
			return;
		if (k->type != YAML_SCALAR_NODE) {
			problem(c, k, "keys must be strings, got %s", kind_of(k));
			continue;
		}
		if (plain(k) && !strcmp(sval(k), "<<")) {
			if (n_merges < SW_ARRAY_SIZE(merges))
				merges[n_merges++] = v;
			continue;
		}
		if (strlen(sval(k)) != k->data.scalar.length) {
			problem(c, k, "a key contains a NUL character");
			continue;
		}
		bool dup = false;
		for (size_t i = first; i < *n; i++) {
			if (!strcmp((*out)[i].key, sval(k))) {
				sw_pl_pos fp = pos_of((*out)[i].k);
				problem(c, k, "duplicate key '%s' (first at %d:%d)", sval(k),
				        fp.line, fp.column);
				dup = true;
				break;
			}
		}
		if (dup)
			continue;
		*out = sw_xrealloc(*out, (*n + 1) * sizeof(**out));
		(*out)[*n] = (pair){ k, v, sval(k) };
		(*n)++;
	}
	for (size_t i = 0; i < n_merges; i++)
		collect_merge(c, merges[i], out, n, first, depth);
}

static void collect_merge(ctx *c, yaml_node_t *v, pair **out, size_t *n, size_t first, int depth)
{
	if (depth >= MERGE_MAX_DEPTH) {
		problem(c, v, "'<<' merges nested too deeply");
		return;
	}
	yaml_node_t *maps[64];
	size_t nm = 0;
	if (v->type == YAML_MAPPING_NODE) {
		maps[nm++] = v;
	} else if (v->type == YAML_SEQUENCE_NODE) {
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top && nm < SW_ARRAY_SIZE(maps); it++) {
			yaml_node_t *m = node(c, *it);
			if (!m)
				continue;
			if (m->type != YAML_MAPPING_NODE) {
				problem(c, m, "'<<' must merge a map or a list of maps, got %s",
				        kind_of(m));
				continue;
			}
			maps[nm++] = m;
		}
	} else {
		problem(c, v, "'<<' must merge a map or a list of maps, got %s", kind_of(v));
		return;
	}
	for (size_t i = 0; i < nm; i++) {
		pair *sub = NULL;
		size_t ns = 0;
		collect_pairs(c, maps[i], &sub, &ns, depth + 1);
		for (size_t k = 0; k < ns; k++) {
			if (*out && key_in(*out + first, *n - first, sub[k].key))
				continue; /* explicit keys and earlier merges win */
			*out = sw_xrealloc(*out, (*n + 1) * sizeof(**out));
			(*out)[(*n)++] = sub[k];
		}
		free(sub);
	}
}

/* The pairs of map node `m` (caller frees), or NULL with a problem when it is not a map. */
static pair *map_pairs(ctx *c, yaml_node_t *m, size_t *n, const char *what)
{
	*n = 0;
	if (!spend(c, m))
		return NULL;
	if (m->type != YAML_MAPPING_NODE) {
		problem(c, m, "%s must be a map, got %s", what, kind_of(m));
		return NULL;
	}
	pair *v = sw_xcalloc(1, sizeof(*v));
	collect_pairs(c, m, &v, n, 0);
	return v;
}

/* Keys people bring from other CI systems, with the key that does the job here. */
static const char *const peer_keys[][2] = {
	{ "script", "run" },
	{ "commands", "run" },
	{ "before_script", "run" },
	{ "after_script", "after_run" },
	{ "variables", "env" },
	{ "environment", "env" },
	{ "depends_on", "needs" },
	{ "dependencies", "needs" },
	{ "rules", "when" },
	{ "only", "when" },
	{ "except", "when" },
	{ "steps", "jobs" },
	{ "pipeline", "stages" },
	{ "entrypoint", "command" },
	{ "healthcheck", "ready" },
	{ "alias", "name" },
	{ "working_dir", "workdir" },
	{ "workspace", "workdir" },
	{ "allow_failures", "allow_failure" },
	{ "failure", "allow_failure" },
	{ "branches", "branch" },
	{ "paths", "changes" },
	{ "tags", "tag" },
	{ "max_attempts", "max" },
	{ "expire_in", NULL },
};

static void unknown_key(ctx *c, const pair *pr, const char *const *known, size_t n,
                        const char *where)
{
	const char *hint = sw_pl__nearest(pr->key, known, n);
	if (!hint) {
		for (size_t i = 0; !hint && i < SW_ARRAY_SIZE(peer_keys); i++) {
			if (strcmp(pr->key, peer_keys[i][0]) || !peer_keys[i][1])
				continue;
			for (size_t k = 0; k < n; k++)
				if (!strcmp(known[k], peer_keys[i][1]))
					hint = known[k];
		}
	}
	if (hint)
		problem(c, pr->k, "unknown key '%s' %s (did you mean '%s'?)", pr->key, where, hint);
	else
		problem(c, pr->k, "unknown key '%s' %s", pr->key, where);
}

/* ---------------------------------------------------------------- values */

static bool get_str(ctx *c, yaml_node_t *v, const char *what, char **out)
{
	if (!spend(c, v))
		return false;
	if (v->type != YAML_SCALAR_NODE || is_null(v)) {
		problem(c, v, "'%s' must be a string, got %s", what, kind_of(v));
		return false;
	}
	if (strlen(sval(v)) != v->data.scalar.length) {
		problem(c, v, "'%s' contains a NUL character", what);
		return false;
	}
	free(*out);
	*out = sw_xstrdup(sval(v));
	return true;
}

static bool get_bool(ctx *c, yaml_node_t *v, const char *what, bool *out)
{
	if (!spend(c, v))
		return false;
	int b = bool_of(v);
	if (b < 0) {
		if (v->type == YAML_SCALAR_NODE && !is_null(v))
			problem(c, v, "'%s' must be true or false, got '%s'", what, sval(v));
		else
			problem(c, v, "'%s' must be true or false, got %s", what, kind_of(v));
		return false;
	}
	*out = b == 1;
	return true;
}

static bool get_int(ctx *c, yaml_node_t *v, const char *what, long lo, long hi, long *out)
{
	if (!spend(c, v))
		return false;
	if (!plain(v) || !is_int_text(sval(v))) {
		if (v->type == YAML_SCALAR_NODE && !is_null(v))
			problem(c, v, "'%s' must be a whole number, got '%s'", what, sval(v));
		else
			problem(c, v, "'%s' must be a whole number, got %s", what, kind_of(v));
		return false;
	}
	const char *s = sval(v);
	bool neg = *s == '-';
	size_t digits = strlen(s) - (*s == '-' || *s == '+');
	long n = digits > 12 ? (neg ? -999999999999L : 999999999999L) : strtol(s, NULL, 10);
	if (n < lo || n > hi) {
		problem(c, v, "'%s' must be between %ld and %ld, got %s", what, lo, hi, s);
		return false;
	}
	*out = n;
	return true;
}

static bool get_duration(ctx *c, yaml_node_t *v, const char *what, int64_t *out)
{
	if (!spend(c, v))
		return false;
	if (v->type != YAML_SCALAR_NODE || is_null(v) || bool_of(v) >= 0) {
		problem(c, v, "'%s' must be a duration like 10m, got %s", what, kind_of(v));
		return false;
	}
	int64_t ms = 0;
	if (sw_pl_duration_parse(&ms, sval(v)) < 0) {
		problem(c, v, "'%s' has a bad duration '%s' (use e.g. 500ms, 45s, 10m, 1h30m)",
		        what, sval(v));
		return false;
	}
	if (ms <= 0) {
		problem(c, v, "'%s' must be longer than 0", what);
		return false;
	}
	*out = ms;
	return true;
}

static void strs_push(sw_pl_strs *l, const char *s)
{
	l->v = sw_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	l->v[l->n++] = sw_xstrdup(s);
}

static void strs_clear(sw_pl_strs *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/*
 * A string or a list of strings (one_ok: a lone string is a list of one). Items must not be
 * empty. `positions`, when given, receives where each item was. Returns false on a problem.
 */
static bool get_strs(ctx *c, yaml_node_t *v, const char *what, bool one_ok, sw_pl_strs *out,
                     sw_pl_pos **positions)
{
	strs_clear(out);
	if (!spend(c, v))
		return false;
	if (v->type == YAML_SCALAR_NODE && one_ok && !is_null(v)) {
		if (!*sval(v)) {
			problem(c, v, "'%s' has an empty value", what);
			return false;
		}
		strs_push(out, sval(v));
		if (positions) {
			*positions = sw_xrealloc(*positions, sizeof(sw_pl_pos));
			(*positions)[0] = pos_of(v);
		}
		return true;
	}
	if (v->type != YAML_SEQUENCE_NODE) {
		problem(c, v, "'%s' must be %s, got %s", what,
		        one_ok ? "a string or a list of strings" : "a list of strings", kind_of(v));
		return false;
	}
	bool ok = true;
	for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
	     it++) {
		yaml_node_t *item = node(c, *it);
		if (!item || !spend(c, item))
			return false;
		if (item->type != YAML_SCALAR_NODE || is_null(item)) {
			problem(c, item, "the items of '%s' must be strings, got %s", what,
			        kind_of(item));
			ok = false;
			continue;
		}
		if (!*sval(item) || strlen(sval(item)) != item->data.scalar.length) {
			problem(c, item, "'%s' has an empty value", what);
			ok = false;
			continue;
		}
		if (positions) {
			*positions = sw_xrealloc(*positions, (out->n + 1) * sizeof(sw_pl_pos));
			(*positions)[out->n] = pos_of(item);
		}
		strs_push(out, sval(item));
	}
	return ok;
}

/* Check a value template by expanding it with nothing set; a problem names the value. */
static int dummy_checksum(char **out, const char *path, void *payload, sw_error **err)
{
	(void)payload;
	(void)err;
	(void)path;
	*out = sw_xstrdup("0");
	return 0;
}

static void check_template(ctx *c, yaml_node_t *v, const char *what, const char *s,
                           bool checksum_ok)
{
	char *out = NULL;
	sw_error *err = NULL;
	if (sw_pl_expand(&out, s, NULL, checksum_ok ? dummy_checksum : NULL, NULL, &err) < 0)
		problem(c, v, "bad value of '%s': %s", what, sw_error_msg(err));
	free(out);
	sw_error_free(err);
}

/* A map of strings (env, args). Keys must be variable names; values scalars (null is ""). */
static void get_kvs(ctx *c, yaml_node_t *v, const char *what, sw_pl_kvs *out)
{
	size_t n = 0;
	char *desc = sw_xasprintf("'%s'", what);
	pair *prs = map_pairs(c, v, &n, desc);
	free(desc);
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!sw_pl__varname_valid(pr->key)) {
			problem(c, pr->k,
			        "invalid variable name '%s' in '%s': use letters, digits and '_', "
			        "not starting with a digit",
			        pr->key, what);
			continue;
		}
		if (!spend(c, pr->v))
			break;
		if (pr->v->type != YAML_SCALAR_NODE) {
			problem(c, pr->v, "the value of '%s' in '%s' must be a string, got %s",
			        pr->key, what, kind_of(pr->v));
			continue;
		}
		const char *val = is_null(pr->v) ? "" : sval(pr->v);
		if (strlen(val) != pr->v->data.scalar.length && !is_null(pr->v)) {
			problem(c, pr->v, "the value of '%s' contains a NUL character", pr->key);
			continue;
		}
		check_template(c, pr->v, pr->key, val, false);
		out->v = sw_xrealloc(out->v, (out->n + 1) * sizeof(*out->v));
		out->v[out->n] = (sw_pl_kv){ sw_xstrdup(pr->key), sw_xstrdup(val), pos_of(pr->k) };
		out->n++;
	}
	free(prs);
}

/* A path relative to the checkout or workspace that must stay inside it. */
static bool check_relpath(ctx *c, yaml_node_t *v, const char *what, const char *s)
{
	if (s[0] == '/') {
		problem(c, v, "'%s' must be a path relative to the workspace, got '%s'", what, s);
		return false;
	}
	cleanup_free char *clean = sw_path_clean(s);
	if (!strcmp(clean, "..") || !strncmp(clean, "../", 3)) {
		problem(c, v, "'%s' must stay inside the workspace, got '%s'", what, s);
		return false;
	}
	return true;
}

static void check_relpaths(ctx *c, yaml_node_t *v, const char *what, const sw_pl_strs *l)
{
	/* the items' own nodes for the position when v is a list */
	for (size_t i = 0; i < l->n; i++) {
		yaml_node_t *at = v;
		if (v->type == YAML_SEQUENCE_NODE &&
		    v->data.sequence.items.start + i < v->data.sequence.items.top) {
			/* items that were rejected are not in l: find the item with this text */
			for (yaml_node_item_t *it = v->data.sequence.items.start;
			     it < v->data.sequence.items.top; it++) {
				yaml_node_t *x = node(c, *it);
				if (x && x->type == YAML_SCALAR_NODE && !strcmp(sval(x), l->v[i])) {
					at = x;
					break;
				}
			}
		}
		(void)check_relpath(c, at, what, l->v[i]);
	}
}

static int status_of(const char *s)
{
	if (!strcmp(s, "on_success"))
		return SW_PL_ON_SUCCESS;
	if (!strcmp(s, "on_failure"))
		return SW_PL_ON_FAILURE;
	if (!strcmp(s, "always"))
		return SW_PL_ALWAYS;
	return -1;
}

static bool get_status(ctx *c, yaml_node_t *v, const char *what, sw_pl_status_when *out)
{
	cleanup_free char *s = NULL;
	if (!get_str(c, v, what, &s))
		return false;
	int st = status_of(s);
	if (st < 0) {
		problem(c, v, "'%s' must be one of on_success, on_failure, always, got '%s'", what,
		        s);
		return false;
	}
	*out = (sw_pl_status_when)st;
	return true;
}

/* ---------------------------------------------------------------- sections */

static const char *const when_keys[] = { "branch", "tag", "changes", "status" };

static void parse_when(ctx *c, yaml_node_t *v, sw_pl_when *w, bool status_ok, const char *where)
{
	w->given = true;
	w->tag = -1;
	w->pos = pos_of(v);
	if (status_ok && v->type == YAML_SCALAR_NODE && !is_null(v) && status_of(sval(v)) >= 0) {
		w->status = (sw_pl_status_when)status_of(sval(v)); /* `when: always` */
		return;
	}
	if (status_ok && v->type == YAML_SCALAR_NODE && !is_null(v)) {
		problem(c, v,
		        "'when' must be a map {branch, tag, changes, status} or one of on_success, "
		        "on_failure, always, got '%s'",
		        sval(v));
		return;
	}
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "'when'");
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "branch")) {
			(void)get_strs(c, pr->v, "branch", true, &w->branch, NULL);
		} else if (!strcmp(pr->key, "tag")) {
			bool b = false;
			if (get_bool(c, pr->v, "tag", &b))
				w->tag = b ? 1 : 0;
		} else if (!strcmp(pr->key, "changes")) {
			(void)get_strs(c, pr->v, "changes", true, &w->changes, NULL);
		} else if (!strcmp(pr->key, "status") && status_ok) {
			(void)get_status(c, pr->v, "status", &w->status);
		} else if (!strcmp(pr->key, "status")) {
			problem(c, pr->k,
			        "'status' is not allowed in the 'when' of a promote (promotion runs "
			        "only when every job that is not allow_failure passed)");
		} else {
			char *wh = sw_xasprintf("in 'when' %s", where);
			unknown_key(c, pr, when_keys, status_ok ? 4 : 3, wh);
			free(wh);
		}
	}
	free(prs);
}

static const char *const ready_keys[] = { "tcp", "run", "timeout", "interval" };

static void parse_ready(ctx *c, yaml_node_t *v, sw_pl_ready *r, const char *where)
{
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "'ready'");
	if (!prs && v->type != YAML_MAPPING_NODE)
		return;
	bool any = false;
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "tcp")) {
			long port = 0;
			if (get_int(c, pr->v, "tcp", 1, 65535, &port))
				r->tcp = (int)port;
			any = true;
		} else if (!strcmp(pr->key, "run")) {
			if (get_str(c, pr->v, "run", &r->run) && !*r->run)
				problem(c, pr->v, "'run' of 'ready' is empty");
			any = true;
		} else if (!strcmp(pr->key, "timeout")) {
			(void)get_duration(c, pr->v, "timeout", &r->timeout_ms);
		} else if (!strcmp(pr->key, "interval")) {
			(void)get_duration(c, pr->v, "interval", &r->interval_ms);
		} else {
			char *wh = sw_xasprintf("in 'ready' %s", where);
			unknown_key(c, pr, ready_keys, SW_ARRAY_SIZE(ready_keys), wh);
			free(wh);
		}
	}
	if (!any)
		problem(c, v, "'ready' %s needs 'tcp' (a port) or 'run' (a command)", where);
	free(prs);
}

/* A command (service command/entrypoint): a list of words, or a string split at spaces. */
static void get_words(ctx *c, yaml_node_t *v, const char *what, sw_pl_strs *out)
{
	if (v->type == YAML_SCALAR_NODE && !is_null(v)) {
		strs_clear(out);
		const char *s = sval(v);
		while (*s) {
			while (*s == ' ' || *s == '\t')
				s++;
			const char *e = s;
			while (*e && *e != ' ' && *e != '\t')
				e++;
			if (e > s) {
				out->v = sw_xrealloc(out->v, (out->n + 1) * sizeof(*out->v));
				out->v[out->n++] = sw_xstrndup(s, (size_t)(e - s));
			}
			s = e;
		}
		if (out->n == 0)
			problem(c, v, "'%s' is empty", what);
		return;
	}
	if (get_strs(c, v, what, false, out, NULL) && out->n == 0)
		problem(c, v, "'%s' is empty", what);
}

static const char *const service_keys[] = {
	"name", "image", "env", "command", "entrypoint", "ready"
};

static void parse_service(ctx *c, yaml_node_t *v, sw_pl_service *s, size_t idx, const char *job)
{
	s->pos = pos_of(v);
	s->ready.timeout_ms = 60000;
	s->ready.interval_ms = 100;
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "a service");
	if (!prs)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(prs[i].key, "name") && get_str(c, prs[i].v, "name", &s->name) &&
		    !sw_pl__hostname_valid(s->name)) {
			problem(c, prs[i].v,
			        "invalid service name '%s': use letters, digits, '-' and '.' (it "
			        "becomes a host name)",
			        s->name);
		}
	}
	char *where = s->name ? sw_xasprintf("of service '%s' in job %s", s->name, job)
	                      : sw_xasprintf("of service #%zu in job %s", idx + 1, job);
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "name")) {
			continue;
		} else if (!strcmp(pr->key, "image")) {
			if (get_str(c, pr->v, "image", &s->image) && !*s->image)
				problem(c, pr->v, "'image' %s is empty", where);
		} else if (!strcmp(pr->key, "env")) {
			get_kvs(c, pr->v, "env", &s->env);
		} else if (!strcmp(pr->key, "command")) {
			get_words(c, pr->v, "command", &s->command);
		} else if (!strcmp(pr->key, "entrypoint")) {
			get_words(c, pr->v, "entrypoint", &s->entrypoint);
		} else if (!strcmp(pr->key, "ready")) {
			parse_ready(c, pr->v, &s->ready, where);
		} else {
			char *wh =
			        s->name ? sw_xasprintf("in service '%s'", s->name)
			                : sw_xasprintf("in service #%zu of job %s", idx + 1, job);
			unknown_key(c, pr, service_keys, SW_ARRAY_SIZE(service_keys), wh);
			free(wh);
		}
	}
	if (!s->name)
		problem(c, v, "service #%zu of job %s has no 'name'", idx + 1, job);
	if (!key_in(prs, n, "image"))
		problem(c, v, "service %s%s%s has no 'image'", s->name ? "'" : "#",
		        s->name ? s->name : "", s->name ? "'" : "");
	free(where);
	free(prs);
}

static void parse_services(ctx *c, yaml_node_t *v, sw_pl_job *j, const char *job)
{
	if (!spend(c, v))
		return;
	if (v->type != YAML_SEQUENCE_NODE) {
		problem(c, v, "'services' must be a list of services, got %s", kind_of(v));
		return;
	}
	size_t total = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	j->services = sw_xcalloc(total ? total : 1, sizeof(*j->services));
	for (size_t i = 0; i < total; i++) {
		yaml_node_t *item = node(c, v->data.sequence.items.start[i]);
		if (!item)
			continue;
		sw_pl_service *s = &j->services[j->n_services++];
		parse_service(c, item, s, i, job);
		for (size_t k = 0; s->name && k + 1 < j->n_services; k++) {
			if (j->services[k].name && !strcmp(j->services[k].name, s->name)) {
				problem(c, item,
				        "duplicate service name '%s' in job %s (first at %d:%d)",
				        s->name, job, j->services[k].pos.line,
				        j->services[k].pos.column);
				break;
			}
		}
	}
}

static void parse_secrets(ctx *c, yaml_node_t *v, sw_pl_job *j, const char *job)
{
	if (!spend(c, v))
		return;
	if (v->type != YAML_SEQUENCE_NODE) {
		problem(c, v, "'secrets' must be a list of names, got %s", kind_of(v));
		return;
	}
	size_t total = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
	j->secrets = sw_xcalloc(total ? total : 1, sizeof(*j->secrets));
	for (size_t i = 0; i < total; i++) {
		yaml_node_t *item = node(c, v->data.sequence.items.start[i]);
		if (!item || !spend(c, item))
			continue;
		sw_pl_secret sec = { NULL, false, pos_of(item) };
		yaml_node_t *name_node = item;
		if (item->type == YAML_MAPPING_NODE) {
			size_t n = 0;
			pair *prs = map_pairs(c, item, &n, "a secret");
			static const char *const secret_keys[] = { "name", "file" };
			name_node = NULL;
			for (size_t k = 0; k < n; k++) {
				if (!strcmp(prs[k].key, "name")) {
					name_node = prs[k].v;
				} else if (!strcmp(prs[k].key, "file")) {
					(void)get_bool(c, prs[k].v, "file", &sec.as_file);
				} else {
					char *wh = sw_xasprintf("in a secret of job %s", job);
					unknown_key(c, &prs[k], secret_keys, 2, wh);
					free(wh);
				}
			}
			free(prs);
			if (!name_node) {
				problem(c, item, "a secret of job %s has no 'name'", job);
				continue;
			}
		}
		if (!get_str(c, name_node, "secrets", &sec.name))
			continue;
		if (!sw_pl__varname_valid(sec.name)) {
			problem(c, name_node,
			        "invalid secret name '%s': use letters, digits and '_', not starting "
			        "with a digit",
			        sec.name);
			free(sec.name);
			continue;
		}
		bool dup = false;
		for (size_t k = 0; k < j->n_secrets; k++)
			dup = dup || !strcmp(j->secrets[k].name, sec.name);
		if (dup) {
			problem(c, name_node, "secret '%s' is listed twice in job %s", sec.name,
			        job);
			free(sec.name);
			continue;
		}
		j->secrets[j->n_secrets++] = sec;
	}
}

static void parse_retry(ctx *c, yaml_node_t *v, sw_pl_job *j, const char *job)
{
	long n = 0;
	if (v->type == YAML_SCALAR_NODE && plain(v) && is_int_text(sval(v))) {
		if (get_int(c, v, "retry", 0, RETRY_MAX, &n))
			j->retry = (int)n;
		return;
	}
	if (v->type != YAML_MAPPING_NODE) {
		if (!spend(c, v))
			return;
		problem(c, v, "'retry' must be a number from 0 to %d or {max, when}, got %s",
		        RETRY_MAX, kind_of(v));
		return;
	}
	size_t np = 0;
	pair *prs = map_pairs(c, v, &np, "'retry'");
	static const char *const retry_keys[] = { "max", "when" };
	bool has_max = false;
	for (size_t i = 0; i < np; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "max")) {
			has_max = true;
			if (get_int(c, pr->v, "max", 0, RETRY_MAX, &n))
				j->retry = (int)n;
		} else if (!strcmp(pr->key, "when")) {
			sw_pl_strs w = { NULL, 0 };
			if (get_strs(c, pr->v, "when", true, &w, NULL)) {
				bool failure = false;
				for (size_t k = 0; k < w.n; k++) {
					if (!strcmp(w.v[k], "failure"))
						failure = true;
					else if (!strcmp(w.v[k], "timeout"))
						j->retry_on_timeout = true;
					else
						problem(c, pr->v,
						        "'when' of 'retry' takes failure and timeout, got "
						        "'%s'",
						        w.v[k]);
				}
				if (!failure)
					problem(c, pr->v,
					        "'when' of 'retry' must include 'failure' (a failed job is "
					        "always retried; add 'timeout' to retry timeouts too)");
			}
			strs_clear(&w);
		} else {
			char *wh = sw_xasprintf("in 'retry' of job %s", job);
			unknown_key(c, pr, retry_keys, 2, wh);
			free(wh);
		}
	}
	if (!has_max)
		problem(c, v, "'retry' of job %s has no 'max'", job);
	free(prs);
}

static void parse_artifacts(ctx *c, yaml_node_t *v, sw_pl_job *j, const char *job)
{
	j->artifacts.pos = pos_of(v);
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "'artifacts'");
	if (!prs && v->type != YAML_MAPPING_NODE)
		return;
	static const char *const keys[] = { "paths", "when" };
	bool has_paths = false;
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "paths")) {
			has_paths = true;
			if (get_strs(c, pr->v, "paths", true, &j->artifacts.paths, NULL)) {
				if (j->artifacts.paths.n == 0)
					problem(c, pr->v, "'paths' of 'artifacts' is empty");
				check_relpaths(c, pr->v, "paths", &j->artifacts.paths);
			}
		} else if (!strcmp(pr->key, "when")) {
			(void)get_status(c, pr->v, "when", &j->artifacts.when);
		} else if (!strcmp(pr->key, "reports")) {
			problem(c, pr->k,
			        "unknown key 'reports' in 'artifacts' of job %s ('reports' is a key "
			        "of the job itself)",
			        job);
		} else {
			char *wh = sw_xasprintf("in 'artifacts' of job %s", job);
			unknown_key(c, pr, keys, 2, wh);
			free(wh);
		}
	}
	if (!has_paths)
		problem(c, v, "'artifacts' of job %s has no 'paths'", job);
	free(prs);
}

static void parse_reports(ctx *c, yaml_node_t *v, sw_pl_job *j, const char *job)
{
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "'reports'");
	static const char *const keys[] = { "junit" };
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "junit")) {
			if (get_strs(c, pr->v, "junit", true, &j->junit, NULL)) {
				if (j->junit.n == 0)
					problem(c, pr->v, "'junit' is empty");
				check_relpaths(c, pr->v, "junit", &j->junit);
			}
		} else {
			char *wh = sw_xasprintf("in 'reports' of job %s", job);
			unknown_key(c, pr, keys, 1, wh);
			free(wh);
		}
	}
	free(prs);
}

static int cache_policy_of(const char *s)
{
	if (!strcmp(s, "pull-push"))
		return SW_PL_CACHE_PULL_PUSH;
	if (!strcmp(s, "pull"))
		return SW_PL_CACHE_PULL;
	if (!strcmp(s, "push"))
		return SW_PL_CACHE_PUSH;
	return -1;
}

static void parse_cache(ctx *c, yaml_node_t *v, sw_pl_job *j, const char *job)
{
	j->cache.pos = pos_of(v);
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "'cache'");
	if (!prs && v->type != YAML_MAPPING_NODE)
		return;
	static const char *const keys[] = { "key", "paths", "policy" };
	bool has_paths = false;
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "key")) {
			if (get_str(c, pr->v, "key", &j->cache.key)) {
				if (!*j->cache.key)
					problem(c, pr->v, "'key' of 'cache' is empty");
				else
					check_template(c, pr->v, "key", j->cache.key, true);
			}
		} else if (!strcmp(pr->key, "paths")) {
			has_paths = true;
			if (get_strs(c, pr->v, "paths", true, &j->cache.paths, NULL)) {
				if (j->cache.paths.n == 0)
					problem(c, pr->v, "'paths' of 'cache' is empty");
				check_relpaths(c, pr->v, "paths", &j->cache.paths);
			}
		} else if (!strcmp(pr->key, "policy")) {
			cleanup_free char *s = NULL;
			if (get_str(c, pr->v, "policy", &s)) {
				int pol = cache_policy_of(s);
				if (pol < 0)
					problem(c, pr->v,
					        "'policy' must be one of pull-push, pull, push, got '%s'",
					        s);
				else
					j->cache.policy = (sw_pl_cache_policy)pol;
			}
		} else {
			char *wh = sw_xasprintf("in 'cache' of job %s", job);
			unknown_key(c, pr, keys, SW_ARRAY_SIZE(keys), wh);
			free(wh);
		}
	}
	if (!has_paths)
		problem(c, v, "'cache' of job %s has no 'paths'", job);
	else if (!j->cache.key)
		j->cache.key = sw_xstrdup("default");
	free(prs);
}

static const char *const job_keys[] = { "name",          "run",     "after_run", "image",
	                                "workdir",       "user",    "env",       "secrets",
	                                "services",      "network", "timeout",   "retry",
	                                "allow_failure", "needs",   "when",      "artifacts",
	                                "reports",       "cache" };

static bool run_nonempty(const sw_pl_strs *l)
{
	for (size_t i = 0; i < l->n; i++)
		for (const char *s = l->v[i]; *s; s++)
			if (!isspace((unsigned char)*s))
				return true;
	return false;
}

static void parse_job(ctx *c, yaml_node_t *v, size_t stage_idx, size_t idx_in_stage)
{
	sw_pipeline *p = c->p;
	size_t ji = p->n_jobs++;
	p->jobs = sw_xrealloc(p->jobs, p->n_jobs * sizeof(*p->jobs));
	c->needs_pos = sw_xrealloc(c->needs_pos, p->n_jobs * sizeof(*c->needs_pos));
	c->needs_pos[ji] = NULL;
	sw_pl_job *j = &p->jobs[ji];
	memset(j, 0, sizeof(*j));
	j->stage = stage_idx;
	j->pos = pos_of(v);
	j->when.tag = -1;
	sw_pl_stage *st = &p->stages[stage_idx];
	cleanup_free char *slabel =
	        st->name ? sw_xasprintf("'%s'", st->name) : sw_xasprintf("#%zu", stage_idx + 1);
	st->jobs = sw_xrealloc(st->jobs, (st->n_jobs + 1) * sizeof(*st->jobs));
	st->jobs[st->n_jobs++] = ji;

	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "a job");
	if (!prs)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(prs[i].key, "name") && get_str(c, prs[i].v, "name", &j->name) &&
		    !sw_pl__name_valid(j->name)) {
			problem(c, prs[i].v,
			        "invalid job name '%s': use letters, digits, '.', '_' and '-' (at "
			        "most 100)",
			        j->name);
		}
	}
	cleanup_free char *job =
	        j->name ? sw_xasprintf("'%s'", j->name)
	                : sw_xasprintf("#%zu of stage %s", idx_in_stage + 1, slabel);
	cleanup_free char *where = sw_xasprintf("in job %s", job);
	yaml_node_t *run_node = NULL;
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		const char *k = pr->key;
		if (!strcmp(k, "name")) {
			continue;
		} else if (!strcmp(k, "run")) {
			run_node = pr->v;
			if (get_strs(c, pr->v, "run", true, &j->run, NULL) &&
			    !run_nonempty(&j->run))
				problem(c, pr->v, "'run' of job %s is empty", job);
		} else if (!strcmp(k, "after_run")) {
			(void)get_strs(c, pr->v, "after_run", true, &j->after, NULL);
		} else if (!strcmp(k, "image")) {
			if (get_str(c, pr->v, "image", &j->image) && !*j->image)
				problem(c, pr->v, "'image' of job %s is empty", job);
		} else if (!strcmp(k, "workdir")) {
			if (get_str(c, pr->v, "workdir", &j->workdir) && !*j->workdir)
				problem(c, pr->v, "'workdir' of job %s is empty", job);
		} else if (!strcmp(k, "user")) {
			if (get_str(c, pr->v, "user", &j->user) && !*j->user)
				problem(c, pr->v, "'user' of job %s is empty", job);
		} else if (!strcmp(k, "env")) {
			get_kvs(c, pr->v, "env", &j->env);
		} else if (!strcmp(k, "secrets")) {
			parse_secrets(c, pr->v, j, job);
		} else if (!strcmp(k, "services")) {
			parse_services(c, pr->v, j, job);
		} else if (!strcmp(k, "network")) {
			cleanup_free char *s = NULL;
			if (get_str(c, pr->v, "network", &s)) {
				if (!strcmp(s, "none"))
					j->network = SW_PL_NET_NONE;
				else if (!strcmp(s, "private"))
					j->network = SW_PL_NET_PRIVATE;
				else if (!strcmp(s, "host"))
					j->network = SW_PL_NET_HOST;
				else
					problem(c, pr->v,
					        "'network' must be one of none, private, host, got '%s'",
					        s);
			}
		} else if (!strcmp(k, "timeout")) {
			(void)get_duration(c, pr->v, "timeout", &j->timeout_ms);
		} else if (!strcmp(k, "retry")) {
			parse_retry(c, pr->v, j, job);
		} else if (!strcmp(k, "allow_failure")) {
			(void)get_bool(c, pr->v, "allow_failure", &j->allow_failure);
		} else if (!strcmp(k, "needs")) {
			(void)get_strs(c, pr->v, "needs", true, &j->needs, &c->needs_pos[ji]);
		} else if (!strcmp(k, "when")) {
			char *of = sw_xasprintf("of job %s", job);
			parse_when(c, pr->v, &j->when, true, of);
			free(of);
		} else if (!strcmp(k, "artifacts")) {
			parse_artifacts(c, pr->v, j, job);
		} else if (!strcmp(k, "reports")) {
			parse_reports(c, pr->v, j, job);
		} else if (!strcmp(k, "cache")) {
			parse_cache(c, pr->v, j, job);
		} else {
			unknown_key(c, pr, job_keys, SW_ARRAY_SIZE(job_keys), where);
		}
	}
	if (!key_in(prs, n, "name"))
		problem(c, v, "job #%zu of stage %s has no 'name'", idx_in_stage + 1, slabel);
	if (!run_node)
		problem(c, v, "job %s has no 'run'", job);
	free(prs);
}

static void parse_stage(ctx *c, yaml_node_t *v, size_t idx)
{
	sw_pipeline *p = c->p;
	sw_pl_stage *st = &p->stages[idx];
	st->pos = pos_of(v);
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "a stage");
	if (!prs)
		return;
	static const char *const keys[] = { "name", "jobs" };
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(prs[i].key, "name") && get_str(c, prs[i].v, "name", &st->name) &&
		    !sw_pl__name_valid(st->name))
			problem(c, prs[i].v,
			        "invalid stage name '%s': use letters, digits, '.', '_' and '-' (at "
			        "most 100)",
			        st->name);
	}
	cleanup_free char *sname =
	        st->name ? sw_xasprintf("'%s'", st->name) : sw_xasprintf("#%zu", idx + 1);
	bool has_jobs = false;
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "name"))
			continue;
		if (!strcmp(pr->key, "jobs")) {
			has_jobs = true;
			if (!spend(c, pr->v))
				break;
			if (pr->v->type != YAML_SEQUENCE_NODE) {
				problem(c, pr->v, "'jobs' must be a list of jobs, got %s",
				        kind_of(pr->v));
				continue;
			}
			yaml_node_item_t *it = pr->v->data.sequence.items.start;
			if (it == pr->v->data.sequence.items.top)
				problem(c, pr->v, "stage %s has no jobs", sname);
			for (size_t k = 0; it < pr->v->data.sequence.items.top; it++, k++) {
				yaml_node_t *jn = node(c, *it);
				if (jn && !c->over_budget)
					parse_job(c, jn, idx, k);
			}
			/* parse_job may move p->stages? no: only p->jobs and st->jobs grow */
		} else {
			char *wh = sw_xasprintf("in stage %s", sname);
			unknown_key(c, pr, keys, 2, wh);
			free(wh);
		}
	}
	if (!key_in(prs, n, "name"))
		problem(c, v, "stage #%zu has no 'name'", idx + 1);
	if (!has_jobs)
		problem(c, v, "stage %s has no 'jobs'", sname);
	free(prs);
}

static void parse_promote_one(ctx *c, yaml_node_t *v, sw_pl_promote *pr_out, size_t idx)
{
	pr_out->pos = pos_of(v);
	pr_out->when.tag = -1;
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "a promote entry");
	if (!prs)
		return;
	static const char *const keys[] = { "to", "tags", "when" };
	yaml_node_t *tags_node = NULL;
	sw_pl_pos *tag_pos = NULL;
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "to")) {
			if (get_str(c, pr->v, "to", &pr_out->to) && strchr(pr_out->to, '$'))
				check_template(c, pr->v, "to", pr_out->to, false);
			else if (pr_out->to && !sw_pl__repo_valid(pr_out->to))
				problem(c, pr->v,
				        "'to' must be a registry repository HOST[:PORT]/PATH without a tag "
				        "(e.g. registry.example.com/team/app), got '%s'",
				        pr_out->to);
		} else if (!strcmp(pr->key, "tags")) {
			tags_node = pr->v;
			if (get_strs(c, pr->v, "tags", true, &pr_out->tags, &tag_pos)) {
				for (size_t k = 0; k < pr_out->tags.n; k++) {
					const char *t = pr_out->tags.v[k];
					if (strchr(t, '$')) {
						yaml_node_t at = *pr->v;
						at.start_mark.line = (size_t)tag_pos[k].line - 1;
						at.start_mark.column =
						        (size_t)tag_pos[k].column - 1;
						check_template(c, &at, "tags", t, false);
					} else if (!sw_pl__tag_valid(t)) {
						sw_pl__problem_add(
						        &c->ps, tag_pos[k],
						        "'%s' is not a valid tag (letters, digits, "
						        "'_', '.', '-'; at most 128)",
						        t);
					}
				}
			}
		} else if (!strcmp(pr->key, "when")) {
			parse_when(c, pr->v, &pr_out->when, false, "of a promote");
		} else {
			unknown_key(c, pr, keys, SW_ARRAY_SIZE(keys), "in a promote entry");
		}
	}
	free(tag_pos);
	if (!key_in(prs, n, "to"))
		problem(c, v, "promote #%zu has no 'to'", idx + 1);
	if (!tags_node)
		problem(c, v, "promote %s%s%s has no 'tags'", pr_out->to ? "to '" : "#",
		        pr_out->to ? pr_out->to : "", pr_out->to ? "'" : "");
	else if (tags_node->type == YAML_SEQUENCE_NODE &&
	         tags_node->data.sequence.items.start == tags_node->data.sequence.items.top)
		problem(c, tags_node, "'tags' is empty: a promote needs at least one tag");
	free(prs);
}

static void parse_image(ctx *c, yaml_node_t *v, sw_pl_image *img)
{
	img->given = true;
	size_t n = 0;
	pair *prs = map_pairs(c, v, &n, "'image' (how the commit's image is built)");
	static const char *const keys[] = { "dockerfile", "context", "target", "args" };
	for (size_t i = 0; i < n; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "dockerfile")) {
			if (get_str(c, pr->v, "dockerfile", &img->dockerfile))
				(void)check_relpath(c, pr->v, "dockerfile", img->dockerfile);
		} else if (!strcmp(pr->key, "context")) {
			if (get_str(c, pr->v, "context", &img->context))
				(void)check_relpath(c, pr->v, "context", img->context);
		} else if (!strcmp(pr->key, "target")) {
			(void)get_str(c, pr->v, "target", &img->target);
		} else if (!strcmp(pr->key, "args")) {
			get_kvs(c, pr->v, "args", &img->args);
		} else {
			unknown_key(c, pr, keys, SW_ARRAY_SIZE(keys), "in 'image'");
		}
	}
	free(prs);
}

static const char *const top_keys[] = { "image", "env", "stages", "promote", "timeout" };

static void parse_top(ctx *c, yaml_node_t *root)
{
	sw_pipeline *p = c->p;
	if (root->type != YAML_MAPPING_NODE) {
		problem(c, root,
		        "the top level must be a map (keys: image, env, stages, promote, timeout), "
		        "got %s",
		        kind_of(root));
		return;
	}
	size_t n = 0;
	pair *prs = map_pairs(c, root, &n, "the top level");
	bool has_stages = false;
	for (size_t i = 0; i < n && !c->over_budget; i++) {
		const pair *pr = &prs[i];
		if (!strcmp(pr->key, "image")) {
			parse_image(c, pr->v, &p->image);
		} else if (!strcmp(pr->key, "env")) {
			get_kvs(c, pr->v, "env", &p->env);
		} else if (!strcmp(pr->key, "timeout")) {
			(void)get_duration(c, pr->v, "timeout", &p->timeout_ms);
		} else if (!strcmp(pr->key, "stages")) {
			has_stages = true;
			if (!spend(c, pr->v))
				break;
			if (pr->v->type != YAML_SEQUENCE_NODE) {
				problem(c, pr->v, "'stages' must be a list of stages, got %s",
				        kind_of(pr->v));
				continue;
			}
			size_t total = (size_t)(pr->v->data.sequence.items.top -
			                        pr->v->data.sequence.items.start);
			if (total == 0) {
				problem(c, pr->v,
				        "'stages' is empty: a pipeline needs at least one stage");
				continue;
			}
			p->stages = sw_xcalloc(total, sizeof(*p->stages));
			for (size_t k = 0; k < total && !c->over_budget; k++) {
				yaml_node_t *sn = node(c, pr->v->data.sequence.items.start[k]);
				if (!sn)
					continue;
				p->n_stages = k + 1;
				parse_stage(c, sn, k);
			}
		} else if (!strcmp(pr->key, "promote")) {
			if (!spend(c, pr->v))
				break;
			if (pr->v->type != YAML_SEQUENCE_NODE) {
				problem(c, pr->v,
				        "'promote' must be a list of {to, tags, when}, got %s",
				        kind_of(pr->v));
				continue;
			}
			size_t total = (size_t)(pr->v->data.sequence.items.top -
			                        pr->v->data.sequence.items.start);
			p->promote = sw_xcalloc(total ? total : 1, sizeof(*p->promote));
			for (size_t k = 0; k < total && !c->over_budget; k++) {
				yaml_node_t *pn = node(c, pr->v->data.sequence.items.start[k]);
				if (!pn)
					continue;
				p->n_promote = k + 1;
				parse_promote_one(c, pn, &p->promote[k], k);
			}
		} else if (pr->key[0] == '.' || !strncmp(pr->key, "x-", 2)) {
			continue; /* hidden keys: templates for anchors, ignored */
		} else {
			unknown_key(c, pr, top_keys, SW_ARRAY_SIZE(top_keys), "at the top level");
		}
	}
	if (!has_stages)
		problem(c, root, "the pipeline has no 'stages'");
	free(prs);
}

/* ---------------------------------------------------------------- entry points */

/* 1-based line and column (in characters) of byte `off`. */
static sw_pl_pos pos_of_offset(const char *buf, size_t len, size_t off)
{
	sw_pl_pos p = { 1, 1 };
	for (size_t i = 0; i < off && i < len; i++) {
		if (buf[i] == '\n') {
			p.line++;
			p.column = 1;
		} else if (((unsigned char)buf[i] & 0xc0) != 0x80) {
			p.column++;
		}
	}
	return p;
}

/* The character at 0-based line/column (characters), or 0. */
static char char_at(const char *buf, size_t len, size_t line, size_t col)
{
	size_t i = 0;
	for (size_t l = 0; l < line && i < len; i++)
		if (buf[i] == '\n')
			l++;
	for (size_t k = 0; i < len && buf[i] != '\n'; i++) {
		if (((unsigned char)buf[i] & 0xc0) == 0x80)
			continue;
		if (k++ == col)
			return buf[i];
	}
	return 0;
}

static void syntax_problem(ctx *c, yaml_parser_t *yp, const char *buf, size_t len)
{
	sw_pl_pos pos;
	if (yp->error == YAML_READER_ERROR) {
		pos = pos_of_offset(buf, len, yp->problem_offset);
		sw_pl__problem_add(&c->ps, pos, "the file is not valid UTF-8 text (%s)",
		                   yp->problem ? yp->problem : "reader error");
		return;
	}
	pos.line = (int)yp->problem_mark.line + 1;
	pos.column = (int)yp->problem_mark.column + 1;
	const char *what = yp->problem ? yp->problem : "error";
	if (char_at(buf, len, yp->problem_mark.line, yp->problem_mark.column) == '\t')
		sw_pl__problem_add(
		        &c->ps, pos,
		        "YAML syntax error: a tab; YAML indentation takes spaces, not tabs "
		        "(%s)",
		        what);
	else if (yp->context)
		sw_pl__problem_add(&c->ps, pos, "YAML syntax error: %s (%s that began at %d:%d)",
		                   what, yp->context, (int)yp->context_mark.line + 1,
		                   (int)yp->context_mark.column + 1);
	else
		sw_pl__problem_add(&c->ps, pos, "YAML syntax error: %s", what);
}

static int cmp_problem(const void *a, const void *b)
{
	const sw_pl__problem *x = a, *y = b;
	if (x->pos.line != y->pos.line)
		return x->pos.line < y->pos.line ? -1 : 1;
	if (x->pos.column != y->pos.column)
		return x->pos.column < y->pos.column ? -1 : 1;
	/* the same place: keep the order they were found in (messages are allocated in order) */
	return 0;
}

/* Stable sort by position (insertion sort: problem lists are short). */
static void sort_problems(sw_pl__problems *ps)
{
	for (size_t i = 1; i < ps->n; i++) {
		sw_pl__problem x = ps->v[i];
		size_t k = i;
		while (k > 0 && cmp_problem(&ps->v[k - 1], &x) > 0) {
			ps->v[k] = ps->v[k - 1];
			k--;
		}
		ps->v[k] = x;
	}
	/* the same problem twice (a map merged in several places) is shown once */
	size_t w = 0;
	for (size_t i = 0; i < ps->n; i++) {
		if (w > 0 && !cmp_problem(&ps->v[w - 1], &ps->v[i]) &&
		    !strcmp(ps->v[w - 1].msg, ps->v[i].msg)) {
			free(ps->v[i].msg);
			continue;
		}
		ps->v[w++] = ps->v[i];
	}
	ps->n = w;
}

/* Parse into a model (always returned, maybe partial) and the sorted problems. */
static void parse_all(sw_pipeline **out, sw_pl__problems *ps, const char *buf, size_t len,
                      const char *file)
{
	sw_pipeline *p = sw_xcalloc(1, sizeof(*p));
	p->file = sw_xstrdup(file);
	p->image.dockerfile = sw_xstrdup("Dockerfile");
	p->image.context = sw_xstrdup(".");
	ctx c = { .p = p, .budget = WALK_BUDGET };
	*out = p;

	yaml_parser_t yp;
	yaml_document_t doc;
	if (!yaml_parser_initialize(&yp))
		abort();
	yaml_parser_set_input_string(&yp, (const unsigned char *)buf, len);
	if (!yaml_parser_load(&yp, &doc)) {
		syntax_problem(&c, &yp, buf, len);
		yaml_parser_delete(&yp);
		*ps = c.ps;
		return;
	}
	c.doc = &doc;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (!root || (is_null(root) && root->start_mark.index == root->end_mark.index)) {
		sw_pl__problem_add(&c.ps, (sw_pl_pos){ 1, 1 },
		                   "the file is empty: a pipeline needs at least 'stages'");
	} else {
		parse_top(&c, root);
		/* a second document is a mistake (a stray "---"), not ignored */
		yaml_document_t doc2;
		if (yaml_parser_load(&yp, &doc2)) {
			yaml_node_t *r2 = yaml_document_get_root_node(&doc2);
			if (r2)
				problem(&c, r2,
				        "a second YAML document: the pipeline file holds one (remove "
				        "the '---')");
			yaml_document_delete(&doc2);
		} else {
			syntax_problem(&c, &yp, buf, len);
		}
		if (!c.over_budget)
			sw_pl__validate(p, c.needs_pos, &c.ps);
	}
	for (size_t i = 0; i < p->n_jobs; i++)
		free(c.needs_pos[i]);
	free(c.needs_pos);
	yaml_document_delete(&doc);
	yaml_parser_delete(&yp);
	sort_problems(&c.ps);
	*ps = c.ps;
}

int sw_pipeline_parse(sw_pipeline **out, const char *buf, size_t len, const char *file,
                      sw_error **err)
{
	*out = NULL;
	if (len > PIPELINE_FILE_MAX)
		return sw_error_set(err, SW_ERR_INVALID, "%s: the file exceeds %zu bytes", file,
		                    PIPELINE_FILE_MAX);
	sw_pipeline *p = NULL;
	sw_pl__problems ps = { NULL, 0 };
	parse_all(&p, &ps, buf, len, file);
	if (ps.n > 0) {
		int r = sw_error_set(err, SW_ERR_INVALID, "%s:%d:%d: %s", file, ps.v[0].pos.line,
		                     ps.v[0].pos.column, ps.v[0].msg);
		sw_pl__problems_clear(&ps);
		sw_pipeline_free(p);
		return r;
	}
	*out = p;
	return 0;
}

int sw_pipeline_load(sw_pipeline **out, const char *path, sw_error **err)
{
	*out = NULL;
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = sw_fs_read_file(&buf, &len, path, PIPELINE_FILE_MAX, err);
	if (r < 0)
		return r;
	return sw_pipeline_parse(out, buf, len, path, err);
}

int sw_pipeline_lint(char ***problems, const char *buf, size_t len, const char *file,
                     sw_error **err)
{
	*problems = NULL;
	if (len > PIPELINE_FILE_MAX)
		return sw_error_set(err, SW_ERR_INVALID, "%s: the file exceeds %zu bytes", file,
		                    PIPELINE_FILE_MAX);
	sw_pipeline *p = NULL;
	sw_pl__problems ps = { NULL, 0 };
	parse_all(&p, &ps, buf, len, file);
	char **v = sw_xcalloc(ps.n + 1, sizeof(*v));
	for (size_t i = 0; i < ps.n; i++)
		v[i] = sw_xasprintf("%s:%d:%d: %s", file, ps.v[i].pos.line, ps.v[i].pos.column,
		                    ps.v[i].msg);
	sw_pl__problems_clear(&ps);
	sw_pipeline_free(p);
	*problems = v;
	return 0;
}

ssize_t sw_pipeline_job_find(const sw_pipeline *p, const char *name)
{
	for (size_t i = 0; i < p->n_jobs; i++)
		if (p->jobs[i].name && !strcmp(p->jobs[i].name, name))
			return (ssize_t)i;
	return -1;
}

/* ---------------------------------------------------------------- freeing */

static void kvs_free(sw_pl_kvs *k)
{
	for (size_t i = 0; i < k->n; i++) {
		free(k->v[i].key);
		free(k->v[i].value);
	}
	free(k->v);
}

static void when_free(sw_pl_when *w)
{
	strs_clear(&w->branch);
	strs_clear(&w->changes);
}

static void job_free(sw_pl_job *j)
{
	free(j->name);
	strs_clear(&j->run);
	strs_clear(&j->after);
	free(j->image);
	free(j->workdir);
	free(j->user);
	kvs_free(&j->env);
	for (size_t i = 0; i < j->n_secrets; i++)
		free(j->secrets[i].name);
	free(j->secrets);
	for (size_t i = 0; i < j->n_services; i++) {
		sw_pl_service *s = &j->services[i];
		free(s->name);
		free(s->image);
		kvs_free(&s->env);
		strs_clear(&s->command);
		strs_clear(&s->entrypoint);
		free(s->ready.run);
	}
	free(j->services);
	strs_clear(&j->needs);
	when_free(&j->when);
	strs_clear(&j->artifacts.paths);
	strs_clear(&j->junit);
	free(j->cache.key);
	strs_clear(&j->cache.paths);
}

void sw_pipeline_free(sw_pipeline *p)
{
	if (!p)
		return;
	free(p->file);
	free(p->image.dockerfile);
	free(p->image.context);
	free(p->image.target);
	kvs_free(&p->image.args);
	kvs_free(&p->env);
	for (size_t i = 0; i < p->n_stages; i++) {
		free(p->stages[i].name);
		free(p->stages[i].jobs);
	}
	free(p->stages);
	for (size_t i = 0; i < p->n_jobs; i++)
		job_free(&p->jobs[i]);
	free(p->jobs);
	for (size_t i = 0; i < p->n_promote; i++) {
		free(p->promote[i].to);
		strs_clear(&p->promote[i].tags);
		when_free(&p->promote[i].when);
	}
	free(p->promote);
	free(p);
}
