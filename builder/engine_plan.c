/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build plan: what the engine knows before anything runs. It splits the Dockerfile into
 * global ARGs and stages, selects the stages the target needs (FROM chains, COPY --from and
 * RUN --mount from=), resolves base images through a hook, then replays every needed stage in
 * order: instructions are expanded in their ARG/ENV scope, the image config is rebuilt the way
 * BuildKit rebuilds it (ENV, LABEL, USER, WORKDIR, CMD reset by ENTRYPOINT, ...), and every
 * step gets its cache key from the previous key, the normalized instruction, the variables it
 * can see and the digest of its inputs. Nothing here touches containers or the store.
 */
#include "builder/builder_internal.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define KEY_VERSION "slipway-build-key-v1"

static const char *const proxy_args[] = {
	"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
	"ftp_proxy",  "NO_PROXY",   "no_proxy",    "ALL_PROXY",   "all_proxy",
};

static bool is_proxy_arg(const char *name)
{
	for (size_t i = 0; i < SW_ARRAY_SIZE(proxy_args); i++)
		if (strcmp(name, proxy_args[i]) == 0)
			return true;
	return false;
}

/* ---------------------------------------------------------------- variables */

typedef struct var {
	char *name;
	char *value; /* NULL: declared without a value */
} var;

typedef struct vars {
	var *v;
	size_t n;
} vars;

static var *vars_find(const vars *vs, const char *name)
{
	for (size_t i = 0; i < vs->n; i++)
		if (strcmp(vs->v[i].name, name) == 0)
			return &vs->v[i];
	return NULL;
}

static const char *vars_get(const vars *vs, const char *name)
{
	var *v = vars_find(vs, name);
	return v ? v->value : NULL;
}

static void vars_set(vars *vs, const char *name, const char *value)
{
	var *v = vars_find(vs, name);
	if (!v) {
		vs->v = sw_xrealloc(vs->v, (vs->n + 1) * sizeof(*vs->v));
		v = &vs->v[vs->n++];
		v->name = sw_xstrdup(name);
		v->value = NULL;
	}
	free(v->value);
	v->value = value ? sw_xstrdup(value) : NULL;
}

static void vars_clear(vars *vs)
{
	for (size_t i = 0; i < vs->n; i++) {
		free(vs->v[i].name);
		free(vs->v[i].value);
	}
	free(vs->v);
	vs->v = NULL;
	vs->n = 0;
}

/* "K=V" environment vectors */
static const char *env_get(char *const *env, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
			return env[i] + n + 1;
	return NULL;
}

static void env_set(char ***env, const char *name, const char *value)
{
	size_t n = strlen(name);
	char *kv = sw_xasprintf("%s=%s", name, value);
	for (size_t i = 0; *env && (*env)[i]; i++) {
		if (strncmp((*env)[i], name, n) == 0 && (*env)[i][n] == '=') {
			free((*env)[i]);
			(*env)[i] = kv;
			return;
		}
	}
	sw_strv_push(env, kv);
	free(kv);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---------------------------------------------------------------- small helpers */

char *sw_build__time_str(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	char buf[64];
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return sw_xstrdup(buf);
}

int sw_build__duration_parse(int64_t *out, const char *s)
{
	static const struct {
		const char *unit;
		double ns;
	} units[] = {
		{ "ns", 1 },  { "us", 1e3 }, { "µs", 1e3 },   { "ms", 1e6 },
		{ "s", 1e9 }, { "m", 60e9 }, { "h", 3600e9 },
	};
	double total = 0;
	const char *p = s;
	if (!*p)
		return SW_ERR_INVALID;
	if (strcmp(p, "0") == 0) {
		*out = 0;
		return 0;
	}
	while (*p) {
		char *end = NULL;
		errno = 0;
		double v = strtod(p, &end);
		if (end == p || errno || v < 0 || (*p != '.' && !isdigit((unsigned char)*p)))
			return SW_ERR_INVALID;
		p = end;
		size_t best = 0;
		double mult = 0;
		for (size_t i = 0; i < SW_ARRAY_SIZE(units); i++) {
			size_t l = strlen(units[i].unit);
			if (strncmp(p, units[i].unit, l) == 0 && l > best) {
				/* "m" must not eat the "m" of "ms" */
				best = l;
				mult = units[i].ns;
			}
		}
		if (!best)
			return SW_ERR_INVALID;
		p += best;
		total += v * mult;
	}
	if (total > 9.2e18)
		return SW_ERR_INVALID;
	*out = (int64_t)total;
	return 0;
}

/* Go's %q of a []string: ["a" "b"] (what BuildKit writes in history entries). */
static char *go_list(char *const *v)
{
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	int rc = sw_buf_puts(&b, "[", &e);
	for (size_t i = 0; v && v[i] && rc == 0; i++) {
		if (i)
			rc = sw_buf_puts(&b, " ", &e);
		if (rc == 0)
			rc = sw_buf_puts(&b, "\"", &e);
		for (const char *c = v[i]; *c && rc == 0; c++) {
			if (*c == '"' || *c == '\\')
				rc = sw_buf_printf(&b, &e, "\\%c", *c);
			else if (*c == '\n')
				rc = sw_buf_puts(&b, "\\n", &e);
			else if (*c == '\t')
				rc = sw_buf_puts(&b, "\\t", &e);
			else
				rc = sw_buf_append(&b, c, 1, &e);
		}
		if (rc == 0)
			rc = sw_buf_puts(&b, "\"", &e);
	}
	if (rc == 0)
		rc = sw_buf_puts(&b, "]", &e);
	sw_error_free(e);
	return sw_buf_steal(&b, NULL);
}

/* Space-joined words with a "[" "]" around them, as Go prints []string with %v. */
static char *go_words(char *const *v)
{
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	int rc = sw_buf_puts(&b, "[", &e);
	for (size_t i = 0; v && v[i] && rc == 0; i++)
		rc = sw_buf_printf(&b, &e, "%s%s", i ? " " : "", v[i]);
	if (rc == 0)
		rc = sw_buf_puts(&b, "]", &e);
	sw_error_free(e);
	return sw_buf_steal(&b, NULL);
}

static char *strv_join(char *const *v, const char *sep)
{
	size_t len = 1;
	for (size_t i = 0; v && v[i]; i++)
		len += strlen(v[i]) + strlen(sep);
	char *s = sw_xmalloc(len);
	s[0] = 0;
	for (size_t i = 0; v && v[i]; i++) {
		if (i)
			strcat(s, sep);
		strcat(s, v[i]);
	}
	return s;
}

static char *lower_dup(const char *s)
{
	char *r = sw_xstrdup(s);
	for (char *p = r; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	return r;
}

/* The flag's name without leading dashes. */
static const char *flag_name(const sw_df_flag *f)
{
	const char *n = f->name;
	while (*n == '-')
		n++;
	return n;
}

static const sw_df_flag *ins_flag(const sw_df_instruction *ins, const char *name)
{
	const sw_df_flag *found = NULL;
	for (size_t i = 0; i < ins->n_flags; i++)
		if (strcmp(flag_name(&ins->flags[i]), name) == 0)
			found = &ins->flags[i]; /* the last one wins, as in Docker */
	return found;
}

/* ---------------------------------------------------------------- key hashing */

static void key_add(sw_oci_hasher *h, const char *tag, const char *v)
{
	char hdr[64];
	size_t len = v ? strlen(v) : 0;
	int n = snprintf(hdr, sizeof(hdr), "%s:%c%zu:", tag, v ? 's' : 'n', len);
	sw_oci_hasher_update(h, hdr, (size_t)n);
	if (v)
		sw_oci_hasher_update(h, v, len);
	sw_oci_hasher_update(h, "\n", 1);
}

static void key_addv(sw_oci_hasher *h, const char *tag, char *const *v)
{
	char n[32];
	snprintf(n, sizeof(n), "%zu", sw_strv_len(v));
	key_add(h, tag, n);
	for (size_t i = 0; v && v[i]; i++)
		key_add(h, tag, v[i]);
}

static void key_finish(sw_oci_hasher *h, char out[72])
{
	sw_digest d;
	sw_oci_hasher_final(h, &d);
	sw_oci_hasher_reset(h);
	snprintf(out, 72, "%s", d.s);
}

/* ---------------------------------------------------------------- the planner */

typedef struct planner {
	sw_build__plan *p;
	const sw_build__plan_opts *o;
	const sw_build__hooks *h;
	const sw_dockerfile *df;
	vars build_args; /* --build-arg values */
	vars globals;    /* ARGs before the first FROM (value NULL: declared, unset) */
	vars autos;      /* TARGETPLATFORM & co. */
	char **declared; /* every ARG name declared in the global scope or a needed stage */
	sw_oci_platform platform;
	char *platform_str;
	sw_oci_hasher *hasher;
} planner;

/* ------------------------------------------------ errors that name the place */

static int fail_at(sw_error **err, planner *pl, const sw_df_instruction *ins, int code,
                   const char *fmt, ...) SW_PRINTF(5, 6);
static int fail_at(sw_error **err, planner *pl, const sw_df_instruction *ins, int code,
                   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	const char *file = pl->df && pl->df->filename ? pl->df->filename : "Dockerfile";
	if (!ins)
		return sw_error_set(err, code, "%s: %s", file, m);
	cleanup_free char *text = sw_xstrdup(ins->original ? ins->original : ins->keyword);
	char *nl = strchr(text, '\n');
	if (nl)
		strcpy(nl, " ...");
	if (strlen(text) > 80)
		strcpy(text + 77, "...");
	return sw_error_set(err, code, "%s:%d:%d: %s (in \"%s\")", file, ins->line,
	                    ins->column > 0 ? ins->column : 1, m, text);
}

/* Wrap an error from a helper with the place. */
static int wrap_at(sw_error **err, planner *pl, const sw_df_instruction *ins)
{
	const char *file = pl->df && pl->df->filename ? pl->df->filename : "Dockerfile";
	/* the frontend's errors already name the file:line */
	const char *m = sw_error_msg(*err);
	if (m && strncmp(m, file, strlen(file)) == 0)
		return sw_error_code_of(*err);
	return sw_error_wrap(err, "%s:%d:%d", file, ins->line, ins->column > 0 ? ins->column : 1);
}

/* ------------------------------------------------ global scope */

static const char *global_lookup(const char *name, void *payload)
{
	planner *pl = payload;
	var *v = vars_find(&pl->globals, name);
	if (v)
		return v->value;
	return vars_get(&pl->autos, name);
}

static const char *build_arg(planner *pl, const char *name, bool *found)
{
	var *v = vars_find(&pl->build_args, name);
	*found = v && v->value;
	return v ? v->value : NULL;
}

static void declare(planner *pl, const char *name)
{
	for (size_t i = 0; pl->declared && pl->declared[i]; i++)
		if (strcmp(pl->declared[i], name) == 0)
			return;
	sw_strv_push(&pl->declared, name);
}

static int parse_build_args(planner *pl, sw_error **err)
{
	for (size_t i = 0; pl->o->build_args && pl->o->build_args[i]; i++) {
		const char *a = pl->o->build_args[i];
		const char *eq = strchr(a, '=');
		cleanup_free char *name = eq ? sw_xstrndup(a, (size_t)(eq - a)) : sw_xstrdup(a);
		if (!name[0])
			return sw_error_set(err, SW_ERR_INVALID, "--build-arg '%s': no name", a);
		if (eq)
			vars_set(&pl->build_args, name, eq + 1);
		else
			vars_set(&pl->build_args, name, getenv(name)); /* unset: NULL */
	}
	return 0;
}

static void set_autos(planner *pl)
{
	sw_oci_platform build;
	sw_oci_platform_default(&build);
	cleanup_free char *bs = sw_oci_platform_str(&build);
	vars_set(&pl->autos, "BUILDPLATFORM", bs);
	vars_set(&pl->autos, "BUILDOS", build.os);
	vars_set(&pl->autos, "BUILDARCH", build.architecture);
	vars_set(&pl->autos, "BUILDVARIANT", build.variant ? build.variant : "");
	vars_set(&pl->autos, "TARGETPLATFORM", pl->platform_str);
	vars_set(&pl->autos, "TARGETOS", pl->platform.os);
	vars_set(&pl->autos, "TARGETARCH", pl->platform.architecture);
	vars_set(&pl->autos, "TARGETVARIANT", pl->platform.variant ? pl->platform.variant : "");
	sw_oci_platform_clear(&build);
}

/* ------------------------------------------------ stage scope */

typedef struct sstate {
	planner *pl;
	sw_build__stage *st;
	vars args;     /* ARGs declared in this stage (value NULL: no value) */
	bool cmd_set;  /* CMD given in this stage (ENTRYPOINT then keeps it) */
	char prev[72]; /* the key so far */
	int progress;  /* progress numbers given so far (FROM is 1) */
} sstate;

static const char *stage_lookup(const char *name, void *payload)
{
	sstate *ss = payload;
	const char *v = env_get(ss->st->config.env, name);
	if (v)
		return v;
	return vars_get(&ss->args, name);
}

static int expand1(char **out, sstate *ss, const sw_df_instruction *ins, const char *text,
                   sw_error **err)
{
	if (sw_df_expand(out, NULL, ss->pl->df, ins, text, stage_lookup, ss, err) < 0)
		return wrap_at(err, ss->pl, ins);
	return 0;
}

/* Expand every argument word and collect the words they split into. */
static int expand_words(char ***out, sstate *ss, const sw_df_instruction *ins, char *const *args,
                        bool split, sw_error **err)
{
	*out = NULL;
	cleanup_strv char **all = NULL;
	for (size_t i = 0; args && args[i]; i++) {
		cleanup_free char *s = NULL;
		cleanup_strv char **w = NULL;
		if (sw_df_expand(&s, split ? &w : NULL, ss->pl->df, ins, args[i], stage_lookup, ss,
		                 err) < 0)
			return wrap_at(err, ss->pl, ins);
		if (w) {
			for (size_t j = 0; w[j]; j++)
				sw_strv_push(&all, w[j]);
		} else if (s) {
			sw_strv_push(&all, s);
		}
	}
	if (!all)
		all = sw_xcalloc(1, sizeof(char *));
	*out = steal_pointer(&all);
	return 0;
}

static char **default_shell(void)
{
	char **v = NULL;
	sw_strv_push(&v, "/bin/sh");
	sw_strv_push(&v, "-c");
	return v;
}

/* The image config's typed fields plus the Docker extensions BuildKit keeps (Healthcheck,
 * Shell, ArgsEscaped, OnBuild); replay_stage runs the base's OnBuild triggers and drops them. */
static void config_copy(sw_oci_config *dst, const sw_oci_config *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->author = src->author ? sw_xstrdup(src->author) : NULL;
	dst->architecture = src->architecture ? sw_xstrdup(src->architecture) : NULL;
	dst->os = src->os ? sw_xstrdup(src->os) : NULL;
	dst->variant = src->variant ? sw_xstrdup(src->variant) : NULL;
	dst->user = src->user ? sw_xstrdup(src->user) : NULL;
	dst->env = src->env ? sw_strv_dup(src->env) : NULL;
	dst->entrypoint = src->entrypoint ? sw_strv_dup(src->entrypoint) : NULL;
	dst->cmd = src->cmd ? sw_strv_dup(src->cmd) : NULL;
	dst->working_dir = src->working_dir ? sw_xstrdup(src->working_dir) : NULL;
	dst->exposed_ports = src->exposed_ports ? sw_strv_dup(src->exposed_ports) : NULL;
	dst->volumes = src->volumes ? sw_strv_dup(src->volumes) : NULL;
	dst->labels = src->labels ? json_deep_copy(src->labels) : NULL;
	dst->stop_signal = src->stop_signal ? sw_xstrdup(src->stop_signal) : NULL;
	dst->raw = json_object();
	json_t *cfg = json_object();
	json_t *scfg = src->raw ? json_object_get(src->raw, "config") : NULL;
	static const char *const keep[] = { "Healthcheck", "Shell", "ArgsEscaped", "OnBuild" };
	for (size_t i = 0; json_is_object(scfg) && i < SW_ARRAY_SIZE(keep); i++) {
		json_t *v = json_object_get(scfg, keep[i]);
		if (v && !json_is_null(v))
			json_object_set_new(cfg, keep[i], json_deep_copy(v));
	}
	json_object_set_new(dst->raw, "config", cfg);
}

static json_t *raw_cfg(sw_oci_config *c)
{
	if (!json_is_object(c->raw)) {
		json_decref(c->raw);
		c->raw = json_object();
	}
	json_t *cfg = json_object_get(c->raw, "config");
	if (!json_is_object(cfg)) {
		cfg = json_object();
		json_object_set_new(c->raw, "config", cfg);
	}
	return cfg;
}

static char **config_shell(sw_oci_config *c)
{
	json_t *sh = json_object_get(raw_cfg(c), "Shell");
	if (json_is_array(sh) && json_array_size(sh) > 0) {
		char **v = NULL;
		size_t i;
		json_t *e;
		json_array_foreach (sh, i, e) {
			if (json_is_string(e))
				sw_strv_push(&v, json_string_value(e));
		}
		if (v)
			return v;
	}
	return default_shell();
}

/* ------------------------------------------------ images */

static int image_get(int *out, planner *pl, const char *name, const sw_oci_platform *platform,
                     sw_error **err)
{
	cleanup_free char *ps = sw_oci_platform_str(platform);
	for (size_t i = 0; i < pl->p->n_images; i++) {
		sw_build__image *im = &pl->p->images[i];
		cleanup_free char *ips = sw_oci_platform_str(&im->platform);
		if (strcmp(im->name, name) == 0 && strcmp(ips, ps) == 0) {
			*out = (int)i;
			return 0;
		}
	}
	if (!pl->h || !pl->h->image)
		return sw_error_set(err, SW_ERR_NOT_FOUND, "image '%s': no image resolver", name);
	pl->p->images = sw_xrealloc(pl->p->images, (pl->p->n_images + 1) * sizeof(*pl->p->images));
	sw_build__image *im = &pl->p->images[pl->p->n_images];
	memset(im, 0, sizeof(*im));
	im->name = sw_xstrdup(name);
	im->platform.os = platform->os ? sw_xstrdup(platform->os) : NULL;
	im->platform.architecture =
	        platform->architecture ? sw_xstrdup(platform->architecture) : NULL;
	im->platform.variant = platform->variant ? sw_xstrdup(platform->variant) : NULL;
	pl->p->n_images++;
	if (pl->h->image(im, pl->h->payload, err) < 0)
		return sw_error_code_of(*err);
	*out = (int)(pl->p->n_images - 1);
	return 0;
}

/* ------------------------------------------------ splitting into stages */

/* FROM [--platform=P] IMAGE [AS NAME]: the words of its argument. */
static int from_words(char ***out, const sw_df_instruction *ins)
{
	*out = NULL;
	char **v = NULL;
	size_t n = sw_strv_len(ins->args);
	if (n == 1 && ins->args[0]) {
		/* a single text: split on blanks */
		const char *p = ins->args[0];
		while (*p) {
			while (*p == ' ' || *p == '\t')
				p++;
			const char *s = p;
			while (*p && *p != ' ' && *p != '\t')
				p++;
			if (p > s) {
				cleanup_free char *w = sw_xstrndup(s, (size_t)(p - s));
				sw_strv_push(&v, w);
			}
		}
	} else {
		for (size_t i = 0; i < n; i++)
			sw_strv_push(&v, ins->args[i]);
	}
	*out = v;
	return 0;
}

static bool valid_stage_name(const char *s)
{
	if (!isalpha((unsigned char)s[0]))
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
			return false;
	return true;
}

int sw_build__plan_stage_find(const sw_build__plan *p, const char *name)
{
	for (size_t i = 0; i < p->n_stages; i++)
		if (p->stages[i].name && strcasecmp(p->stages[i].name, name) == 0)
			return (int)i;
	char *end = NULL;
	errno = 0;
	long n = strtol(name, &end, 10);
	if (name[0] && end && !*end && !errno && n >= 0 && (size_t)n < p->n_stages)
		return (int)n;
	return -1;
}

static int split_stages(planner *pl, sw_error **err)
{
	const sw_dockerfile *df = pl->df;
	sw_build__plan *p = pl->p;
	size_t i = 0;
	/* global ARGs */
	for (; i < df->n_instructions && df->instructions[i].kind != SW_DF_FROM; i++) {
		const sw_df_instruction *ins = &df->instructions[i];
		if (ins->kind != SW_DF_ARG)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "only ARG may come before the first FROM, not %s",
			               sw_df_kind_name(ins->kind));
		for (size_t a = 0; ins->args && ins->args[a]; a++) {
			const char *eq = strchr(ins->args[a], '=');
			cleanup_free char *name =
			        eq ? sw_xstrndup(ins->args[a], (size_t)(eq - ins->args[a]))
			           : sw_xstrdup(ins->args[a]);
			declare(pl, name);
			bool given = false;
			const char *bv = build_arg(pl, name, &given);
			if (given) {
				vars_set(&pl->globals, name, bv);
			} else if (eq) {
				cleanup_free char *v = NULL;
				if (sw_df_expand(&v, NULL, df, ins, eq + 1, global_lookup, pl,
				                 err) < 0)
					return wrap_at(err, pl, ins);
				vars_set(&pl->globals, name, v);
			} else {
				vars_set(&pl->globals, name, vars_get(&pl->autos, name));
			}
		}
	}
	if (i == df->n_instructions)
		return fail_at(err, pl, NULL, SW_ERR_INVALID, "no FROM instruction");
	size_t n_from = 0;
	for (size_t j = i; j < df->n_instructions; j++)
		if (df->instructions[j].kind == SW_DF_FROM)
			n_from++;
	p->stages = sw_xcalloc(n_from, sizeof(*p->stages));
	for (; i < df->n_instructions; i++) {
		const sw_df_instruction *ins = &df->instructions[i];
		if (ins->kind == SW_DF_FROM) {
			sw_build__stage *st = &p->stages[p->n_stages];
			st->index = (int)p->n_stages;
			p->n_stages++;
			st->from = ins;
			cleanup_strv char **w = NULL;
			if (from_words(&w, ins) < 0 || !w || !w[0])
				return fail_at(err, pl, ins, SW_ERR_INVALID, "FROM needs an image");
			size_t nw = sw_strv_len(w);
			if (nw == 3 && strcasecmp(w[1], "as") == 0) {
				if (!valid_stage_name(w[2]))
					return fail_at(
					        err, pl, ins, SW_ERR_INVALID,
					        "invalid stage name \"%s\": it must start with "
					        "a letter and hold only letters, digits, '-', "
					        "'_' and '.'",
					        w[2]);
				st->name = lower_dup(w[2]);
				for (size_t k = 0; k + 1 < p->n_stages; k++)
					if (p->stages[k].name &&
					    strcmp(p->stages[k].name, st->name) == 0)
						return fail_at(err, pl, ins, SW_ERR_INVALID,
						               "duplicate stage name \"%s\"", w[2]);
			} else if (nw != 1) {
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "FROM takes IMAGE [AS NAME]");
			}
			cleanup_free char *base = NULL;
			if (sw_df_expand(&base, NULL, df, ins, w[0], global_lookup, pl, err) < 0)
				return wrap_at(err, pl, ins);
			if (!base[0])
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "FROM: the image name \"%s\" is empty after "
				               "substitution",
				               w[0]);
			st->base_name = steal_pointer(&base);
			st->label = st->name ? sw_xstrdup(st->name)
			                     : sw_xasprintf("stage-%d", st->index);
			/* platform */
			const sw_df_flag *pf = ins_flag(ins, "platform");
			if (pf && pf->value) {
				cleanup_free char *ps = NULL;
				if (sw_df_expand(&ps, NULL, df, ins, pf->value, global_lookup, pl,
				                 err) < 0)
					return wrap_at(err, pl, ins);
				if (sw_oci_platform_parse(&st->platform, ps, err) < 0)
					return wrap_at(err, pl, ins);
			} else {
				st->platform.os = sw_xstrdup(pl->platform.os);
				st->platform.architecture = sw_xstrdup(pl->platform.architecture);
				st->platform.variant = pl->platform.variant
				                               ? sw_xstrdup(pl->platform.variant)
				                               : NULL;
			}
			st->platform_str = sw_oci_platform_str(&st->platform);
			/* base kind */
			if (strcasecmp(st->base_name, "scratch") == 0) {
				st->base_kind = SW_BUILD__BASE_SCRATCH;
			} else {
				st->base_kind = SW_BUILD__BASE_IMAGE;
				for (size_t k = 0; k + 1 < p->n_stages; k++) {
					if (p->stages[k].name &&
					    strcasecmp(p->stages[k].name, st->base_name) == 0) {
						st->base_kind = SW_BUILD__BASE_STAGE;
						st->base = (int)k;
					}
				}
			}
			continue;
		}
		sw_build__stage *st = &p->stages[p->n_stages - 1];
		st->steps = sw_xrealloc(st->steps, (st->n_steps + 1) * sizeof(*st->steps));
		sw_build__step *s = &st->steps[st->n_steps++];
		memset(s, 0, sizeof(*s));
		s->ins = ins;
		s->kind = ins->kind;
		s->src = -1;
	}
	return 0;
}

/* ------------------------------------------------ stage selection */

/* A --from value: expanded with what is known before replay (build args, global ARGs). */
static const char *prepass_lookup(const char *name, void *payload)
{
	planner *pl = payload;
	bool given = false;
	const char *v = build_arg(pl, name, &given);
	if (given)
		return v;
	return global_lookup(name, pl);
}

/* The value of `key` in a --mount CSV text ("from=builder"), or NULL; caller frees. */
static char *csv_value(const char *csv, const char *key)
{
	size_t kl = strlen(key);
	const char *p = csv;
	while (p && *p) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l > kl && strncmp(p, key, kl) == 0 && p[kl] == '=')
			return sw_xstrndup(p + kl + 1, l - kl - 1);
		p = e ? e + 1 : NULL;
	}
	return NULL;
}

static int stage_ref(int *out, planner *pl, const sw_build__stage *st, const sw_df_instruction *ins,
                     const char *text, sw_error **err)
{
	*out = -1;
	cleanup_free char *v = NULL;
	if (sw_df_expand(&v, NULL, pl->df, ins, text, prepass_lookup, pl, err) < 0)
		return wrap_at(err, pl, ins);
	int k = sw_build__plan_stage_find(pl->p, v);
	if (k < 0)
		return 0;
	if (k >= st->index)
		return fail_at(err, pl, ins, SW_ERR_INVALID,
		               "\"%s\" refers to stage %d, which is not before this one (stage %d)",
		               v, k, st->index);
	*out = k;
	return 0;
}

static int mark_needed(planner *pl, int idx, int depth, sw_error **err)
{
	sw_build__stage *st = &pl->p->stages[idx];
	if (st->needed)
		return 0;
	if (depth > 1000)
		return sw_error_set(err, SW_ERR_INVALID, "stage dependencies too deep");
	st->needed = true;
	if (st->base_kind == SW_BUILD__BASE_STAGE && mark_needed(pl, st->base, depth + 1, err) < 0)
		return sw_error_code_of(*err);
	for (size_t i = 0; i < st->n_steps; i++) {
		const sw_df_instruction *ins = st->steps[i].ins;
		for (size_t f = 0; f < ins->n_flags; f++) {
			const char *fn = flag_name(&ins->flags[f]);
			const char *fv = ins->flags[f].value;
			if (!fv)
				continue;
			cleanup_free char *ref = NULL;
			if ((ins->kind == SW_DF_COPY || ins->kind == SW_DF_ADD) &&
			    strcmp(fn, "from") == 0)
				ref = sw_xstrdup(fv);
			else if (ins->kind == SW_DF_RUN && strcmp(fn, "mount") == 0)
				ref = csv_value(fv, "from");
			if (!ref)
				continue;
			int k = -1;
			if (stage_ref(&k, pl, st, ins, ref, err) < 0)
				return sw_error_code_of(*err);
			if (k >= 0 && mark_needed(pl, k, depth + 1, err) < 0)
				return sw_error_code_of(*err);
		}
	}
	return 0;
}

/* ------------------------------------------------ stage replay */

static void step_title(sstate *ss, sw_build__step *s, const char *text)
{
	sw_build__stage *st = ss->st;
	s->number = ++ss->progress;
	/* collapse whitespace of the instruction text, as BuildKit shows it */
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	bool sp = false;
	int rc = 0;
	for (const char *c = text; *c && rc == 0; c++) {
		if (isspace((unsigned char)*c)) {
			sp = true;
			continue;
		}
		if (sp && b.len)
			rc = sw_buf_puts(&b, " ", &e);
		sp = false;
		if (rc == 0)
			rc = sw_buf_append(&b, c, 1, &e);
	}
	sw_error_free(e);
	cleanup_free char *t = sw_buf_steal(&b, NULL);
	if (ss->pl->p->n_stages > 1)
		s->title = sw_xasprintf("[%s %d/%d] %s", st->label, s->number, st->n_progress, t);
	else
		s->title = sw_xasprintf("[%d/%d] %s", s->number, st->n_progress, t);
}

/* The environment a RUN sees: image ENV, then declared ARGs with values that ENV does not
 * shadow, then (process only) proxy build args; PATH added when missing. With `for_key`, the
 * proxy args not declared are left out and the list is sorted. */
static char **run_env(sstate *ss, bool for_key)
{
	planner *pl = ss->pl;
	char **env = ss->st->config.env ? sw_strv_dup(ss->st->config.env) : NULL;
	for (size_t i = 0; i < ss->args.n; i++) {
		const var *a = &ss->args.v[i];
		if (a->value && !env_get(env, a->name))
			env_set(&env, a->name, a->value);
	}
	if (!for_key) {
		for (size_t i = 0; i < pl->build_args.n; i++) {
			const var *a = &pl->build_args.v[i];
			if (a->value && is_proxy_arg(a->name) && !env_get(env, a->name))
				env_set(&env, a->name, a->value);
		}
	}
	if (!env_get(env, "PATH"))
		env_set(&env, "PATH", DEFAULT_PATH);
	if (!env)
		env = sw_xcalloc(1, sizeof(char *));
	if (for_key)
		qsort(env, sw_strv_len(env), sizeof(char *), cmp_str);
	return env;
}

static bool is_url(const char *s)
{
	return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static bool is_git_url(const char *s)
{
	size_t n = strlen(s);
	return strncmp(s, "git@", 4) == 0 || strncmp(s, "git://", 6) == 0 ||
	       (is_url(s) && n > 4 && strcmp(s + n - 4, ".git") == 0);
}

/* "<<EOF", "<<-EOF", "<<'EOF'", "<<\"EOF\"" naming heredoc `name`? */
static bool is_heredoc_token(const char *w, const char *name)
{
	if (strncmp(w, "<<", 2) != 0)
		return false;
	w += 2;
	if (*w == '-')
		w++;
	size_t n = strlen(name);
	if ((*w == '\'' || *w == '"') && strlen(w) == n + 2 && w[n + 1] == *w)
		return strncmp(w + 1, name, n) == 0;
	return strcmp(w, name) == 0;
}

/* Absolute path of `dest` against WORKDIR, a trailing "/" (or a final ".") kept as "/". */
static char *resolve_dest(const sw_oci_config *cfg, const char *dest)
{
	size_t n = strlen(dest);
	bool dir = n == 0 || dest[n - 1] == '/' || strcmp(dest, ".") == 0 ||
	           (n >= 2 && strcmp(dest + n - 2, "/.") == 0);
	cleanup_free char *abs = NULL;
	if (dest[0] == '/')
		abs = sw_xstrdup(dest);
	else
		abs = sw_path_join(cfg->working_dir && cfg->working_dir[0] ? cfg->working_dir : "/",
		                   dest);
	cleanup_free char *clean = sw_path_clean(abs);
	if (clean[0] != '/') {
		char *t = sw_xasprintf("/%s", clean);
		free(clean);
		clean = t;
	}
	if (dir && strcmp(clean, "/") != 0)
		return sw_xasprintf("%s/", clean);
	return steal_pointer(&clean);
}

static int parse_mode(mode_t *out, const char *s)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 8);
	if (!s[0] || !end || *end || errno || v < 0 || v > 07777)
		return SW_ERR_INVALID;
	*out = (mode_t)v;
	return 0;
}

static int parse_uint(unsigned long long *out, const char *s, unsigned long long max)
{
	char *end = NULL;
	errno = 0;
	if (!s[0] || s[0] == '-')
		return SW_ERR_INVALID;
	unsigned long long v = strtoull(s, &end, 10);
	if (!end || *end || errno || v > max)
		return SW_ERR_INVALID;
	*out = v;
	return 0;
}

static int parse_size(uint64_t *out, const char *s)
{
	char *end = NULL;
	errno = 0;
	if (!s[0] || s[0] == '-')
		return SW_ERR_INVALID;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return SW_ERR_INVALID;
	unsigned long long m = 1;
	switch (tolower((unsigned char)*end)) {
	case 0:
		break;
	case 'k':
		m = 1024ULL;
		break;
	case 'm':
		m = 1024ULL * 1024;
		break;
	case 'g':
		m = 1024ULL * 1024 * 1024;
		break;
	default:
		return SW_ERR_INVALID;
	}
	if (*end) {
		end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end)
			return SW_ERR_INVALID;
	}
	*out = v * m;
	return 0;
}

static const sw_build_secret *find_secret(planner *pl, const char *id)
{
	for (size_t i = 0; i < pl->o->n_secrets; i++)
		if (pl->o->secrets[i].id && strcmp(pl->o->secrets[i].id, id) == 0)
			return &pl->o->secrets[i];
	return NULL;
}

/* Where a --from / from= value points: a stage before this one, or an image. */
static int resolve_from(sw_build__src_kind *kind, int *idx, sstate *ss,
                        const sw_df_instruction *ins, const char *name, sw_error **err)
{
	planner *pl = ss->pl;
	int k = sw_build__plan_stage_find(pl->p, name);
	if (k >= 0) {
		if (k >= ss->st->index)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "\"%s\" refers to stage %d, which is not before this one",
			               name, k);
		if (!pl->p->stages[k].needed)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "\"%s\" names a stage only after substitution with stage "
			               "variables; use the stage name or a global ARG",
			               name);
		*kind = SW_BUILD__SRC_STAGE;
		*idx = k;
		return 0;
	}
	if (image_get(idx, pl, name, &ss->st->platform, err) < 0)
		return wrap_at(err, pl, ins);
	*kind = SW_BUILD__SRC_IMAGE;
	return 0;
}

/* The digest a --from source contributes to a key: the stage's final key or the image's
 * manifest digest. */
static const char *from_digest(sstate *ss, sw_build__src_kind kind, int idx)
{
	if (kind == SW_BUILD__SRC_STAGE)
		return ss->pl->p->stages[idx].key;
	return ss->pl->p->images[idx].desc.digest.s;
}

static int parse_mount(sw_build__mount *m, sstate *ss, const sw_df_instruction *ins,
                       const char *text, sw_error **err)
{
	planner *pl = ss->pl;
	memset(m, 0, sizeof(*m));
	m->from = -1;
	m->readonly = true;
	m->mode = (mode_t)-1;
	cleanup_free char *exp = NULL;
	if (expand1(&exp, ss, ins, text, err) < 0)
		return sw_error_code_of(*err);
	cleanup_free char *type = NULL, *from = NULL, *uid = NULL, *gid = NULL, *mode = NULL;
	cleanup_free char *sharing = NULL, *size = NULL;
	bool rw = false;
	char *save = NULL;
	for (char *tok = strtok_r(exp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		char *k = tok;
		char *v = NULL;
		if (eq) {
			*eq = 0;
			v = eq + 1;
		}
		for (char *c = k; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		char **slot = NULL;
		if (strcmp(k, "type") == 0)
			slot = &type;
		else if (strcmp(k, "target") == 0 || strcmp(k, "dst") == 0 ||
		         strcmp(k, "destination") == 0)
			slot = &m->target;
		else if (strcmp(k, "source") == 0 || strcmp(k, "src") == 0)
			slot = &m->source;
		else if (strcmp(k, "from") == 0)
			slot = &from;
		else if (strcmp(k, "id") == 0)
			slot = &m->id;
		else if (strcmp(k, "uid") == 0)
			slot = &uid;
		else if (strcmp(k, "gid") == 0)
			slot = &gid;
		else if (strcmp(k, "mode") == 0)
			slot = &mode;
		else if (strcmp(k, "sharing") == 0)
			slot = &sharing;
		else if (strcmp(k, "size") == 0)
			slot = &size;
		if (slot) {
			if (!v)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "--mount: \"%s\" needs a value", k);
			free(*slot);
			*slot = sw_xstrdup(v);
			continue;
		}
		bool on = !v || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0;
		if (v && !on && strcasecmp(v, "false") != 0 && strcmp(v, "0") != 0)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount: \"%s\" takes true or false, not \"%s\"", k, v);
		if (strcmp(k, "ro") == 0 || strcmp(k, "readonly") == 0)
			rw = !on;
		else if (strcmp(k, "rw") == 0 || strcmp(k, "readwrite") == 0)
			rw = on;
		else if (strcmp(k, "required") == 0)
			m->required = on;
		else
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount: unknown option \"%s\"", k);
	}
	if (!type || strcmp(type, "bind") == 0)
		m->type = SW_BUILD__MOUNT_BIND;
	else if (strcmp(type, "cache") == 0)
		m->type = SW_BUILD__MOUNT_CACHE;
	else if (strcmp(type, "secret") == 0)
		m->type = SW_BUILD__MOUNT_SECRET;
	else if (strcmp(type, "tmpfs") == 0)
		m->type = SW_BUILD__MOUNT_TMPFS;
	else
		return fail_at(err, pl, ins, SW_ERR_INVALID,
		               "--mount: type \"%s\" is not supported (bind, cache, secret, tmpfs)",
		               type);
	if (m->type == SW_BUILD__MOUNT_SECRET) {
		if (!m->id && m->target) {
			const char *b = strrchr(m->target, '/');
			m->id = sw_xstrdup(b ? b + 1 : m->target);
		}
		if (!m->id || !m->id[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount=type=secret needs an id or a target");
		if (!m->target)
			m->target = sw_xasprintf("/run/secrets/%s", m->id);
	}
	if (!m->target || !m->target[0])
		return fail_at(err, pl, ins, SW_ERR_INVALID, "--mount needs a target");
	/* the target, absolute, against WORKDIR */
	{
		cleanup_free char *abs =
		        m->target[0] == '/'
		                ? sw_xstrdup(m->target)
		                : sw_path_join(ss->st->config.working_dir &&
		                                               ss->st->config.working_dir[0]
		                                       ? ss->st->config.working_dir
		                                       : "/",
		                               m->target);
		free(m->target);
		m->target = sw_path_clean(abs);
		if (strcmp(m->target, "/") == 0)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount: the target cannot be \"/\"");
	}
	if (mode) {
		if (parse_mode(&m->mode, mode) < 0)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount: mode \"%s\" is not an octal mode", mode);
	}
	unsigned long long n = 0;
	if (uid) {
		if (parse_uint(&n, uid, 0xfffffffeULL) < 0)
			return fail_at(err, pl, ins, SW_ERR_INVALID, "--mount: bad uid \"%s\"",
			               uid);
		m->uid = (uid_t)n;
	}
	if (gid) {
		if (parse_uint(&n, gid, 0xfffffffeULL) < 0)
			return fail_at(err, pl, ins, SW_ERR_INVALID, "--mount: bad gid \"%s\"",
			               gid);
		m->gid = (gid_t)n;
	}
	switch (m->type) {
	case SW_BUILD__MOUNT_BIND: {
		m->readonly = !rw;
		const char *src = m->source ? m->source : "/";
		if (from) {
			if (resolve_from(&m->from_kind, &m->from, ss, ins, from, err) < 0)
				return sw_error_code_of(*err);
		} else {
			m->from_kind = SW_BUILD__SRC_CONTEXT;
			char *one[] = { (char *)src, NULL };
			sw_digest d;
			if (!pl->h || !pl->h->context)
				return fail_at(err, pl, ins, SW_ERR_INVALID, "no build context");
			if (pl->h->context(&d, &m->matched, one, pl->h->payload, err) < 0)
				return wrap_at(err, pl, ins);
			/* keep the digest in `id` (unused for binds) for the key */
			m->id = sw_xstrdup(d.s);
		}
		if (!m->source)
			m->source = sw_xstrdup("/");
		break;
	}
	case SW_BUILD__MOUNT_CACHE:
		if (from)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount=type=cache,from=... is not supported");
		if (!m->id)
			m->id = sw_xstrdup(m->target);
		if (m->mode == (mode_t)-1)
			m->mode = 0755;
		m->readonly = false;
		if (!sharing || strcmp(sharing, "shared") == 0)
			m->sharing = SW_BUILD__SHARING_SHARED;
		else if (strcmp(sharing, "private") == 0)
			m->sharing = SW_BUILD__SHARING_PRIVATE;
		else if (strcmp(sharing, "locked") == 0)
			m->sharing = SW_BUILD__SHARING_LOCKED;
		else
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "--mount: sharing \"%s\" is not shared, private or locked",
			               sharing);
		break;
	case SW_BUILD__MOUNT_SECRET:
		if (m->mode == (mode_t)-1)
			m->mode = 0400;
		if (!find_secret(pl, m->id) && m->required)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "secret \"%s\" is required but was not given (--secret "
			               "id=%s,src=PATH)",
			               m->id, m->id);
		break;
	case SW_BUILD__MOUNT_TMPFS:
		if (size && parse_size(&m->size, size) < 0)
			return fail_at(err, pl, ins, SW_ERR_INVALID, "--mount: bad size \"%s\"",
			               size);
		m->readonly = false;
		break;
	}
	return 0;
}

static void mount_key(sw_oci_hasher *h, sstate *ss, const sw_build__mount *m)
{
	static const char *const types[] = { "bind", "cache", "secret", "tmpfs" };
	key_add(h, "mount", types[m->type]);
	key_add(h, "target", m->target);
	char num[64];
	switch (m->type) {
	case SW_BUILD__MOUNT_BIND:
		key_add(h, "source", m->source);
		key_add(h, "rw", m->readonly ? "0" : "1");
		if (m->from_kind == SW_BUILD__SRC_CONTEXT)
			key_add(h, "context", m->id);
		else
			key_add(h, m->from_kind == SW_BUILD__SRC_STAGE ? "stage" : "image",
			        from_digest(ss, m->from_kind, m->from));
		break;
	case SW_BUILD__MOUNT_CACHE:
		/* not the id nor the sharing: a cache mount's content is not an input */
		snprintf(num, sizeof(num), "%o:%u:%u", (unsigned)m->mode, (unsigned)m->uid,
		         (unsigned)m->gid);
		key_add(h, "owner", num);
		break;
	case SW_BUILD__MOUNT_SECRET:
		/* the id, never the value */
		key_add(h, "id", m->id);
		key_add(h, "required", m->required ? "1" : "0");
		snprintf(num, sizeof(num), "%o:%u:%u", (unsigned)m->mode, (unsigned)m->uid,
		         (unsigned)m->gid);
		key_add(h, "owner", num);
		break;
	case SW_BUILD__MOUNT_TMPFS:
		snprintf(num, sizeof(num), "%llu", (unsigned long long)m->size);
		key_add(h, "size", num);
		break;
	}
}

/* "|N K=V ..." prefix of RUN history entries (BuildKit's runCommandString). */
static char *run_args_prefix(sstate *ss)
{
	size_t n = 0;
	for (size_t i = 0; i < ss->args.n; i++)
		if (ss->args.v[i].value)
			n++;
	if (!n)
		return sw_xstrdup("");
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	int rc = sw_buf_printf(&b, &e, "|%zu ", n);
	for (size_t i = 0; i < ss->args.n && rc == 0; i++) {
		const var *a = &ss->args.v[i];
		if (!a->value)
			continue;
		const char *v = env_get(ss->st->config.env, a->name);
		rc = sw_buf_printf(&b, &e, "%s=%s ", a->name, v ? v : a->value);
	}
	sw_error_free(e);
	return sw_buf_steal(&b, NULL);
}

static int replay_run(sstate *ss, sw_build__step *s, sw_error **err)
{
	planner *pl = ss->pl;
	const sw_df_instruction *ins = s->ins;
	sw_oci_hasher *h = pl->hasher;
	s->layer = true;
	/* flags */
	const char *net = pl->o->network;
	for (size_t i = 0; i < ins->n_flags; i++) {
		const sw_df_flag *f = &ins->flags[i];
		const char *fn = flag_name(f);
		if (strcmp(fn, "mount") == 0) {
			if (!f->value)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "--mount needs a value");
			s->mounts = sw_xrealloc(s->mounts, (s->n_mounts + 1) * sizeof(*s->mounts));
			memset(&s->mounts[s->n_mounts], 0, sizeof(*s->mounts));
			s->n_mounts++;
			if (parse_mount(&s->mounts[s->n_mounts - 1], ss, ins, f->value, err) < 0)
				return sw_error_code_of(*err);
		} else if (strcmp(fn, "network") == 0) {
			if (!f->value ||
			    (strcmp(f->value, "none") != 0 && strcmp(f->value, "host") != 0 &&
			     strcmp(f->value, "default") != 0))
				return fail_at(
				        err, pl, ins, SW_ERR_INVALID,
				        "--network must be none, host or default, not \"%s\"",
				        f->value ? f->value : "");
			if (strcmp(f->value, "default") != 0)
				net = f->value;
		} else if (strcmp(fn, "security") == 0) {
			if (!f->value || strcmp(f->value, "sandbox") != 0)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "--security=%s is not supported (only sandbox)",
				               f->value ? f->value : "");
		} else {
			return fail_at(err, pl, ins, SW_ERR_INVALID, "RUN does not take --%s", fn);
		}
	}
	s->net_host = net && strcmp(net, "host") == 0;
	/* the process */
	cleanup_strv char **shell = config_shell(&ss->st->config);
	if (ins->json_form) {
		if (!ins->args || !ins->args[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID, "RUN needs a command");
		s->argv = sw_strv_dup(ins->args);
	} else {
		const char *cmd = ins->args && ins->args[0] ? ins->args[0] : "";
		cleanup_free char *full = NULL;
		if (ins->n_heredocs > 0) {
			cleanup_free char *trim = sw_xstrdup(cmd);
			char *t = trim;
			while (isspace((unsigned char)*t))
				t++;
			size_t tl = strlen(t);
			while (tl && isspace((unsigned char)t[tl - 1]))
				t[--tl] = 0;
			const sw_df_heredoc *hd = &ins->heredocs[0];
			if (ins->n_heredocs == 1 && is_heredoc_token(t, hd->name)) {
				if (strncmp(hd->content, "#!", 2) == 0) {
					s->script_name = sw_xstrdup(hd->name);
					s->script = sw_xstrdup(hd->content);
					full = NULL;
					s->argv = NULL;
					cleanup_free char *path =
					        sw_xasprintf("/dev/pipes/%s", hd->name);
					sw_strv_push(&s->argv, path);
				} else {
					full = sw_xstrdup(hd->content);
				}
			} else {
				sw_buf b = SW_BUF_INIT(0);
				sw_error *e = NULL;
				int rc = sw_buf_puts(&b, cmd, &e);
				for (size_t i = 0; i < ins->n_heredocs && rc == 0; i++)
					rc = sw_buf_printf(&b, &e, "\n%s%s",
					                   ins->heredocs[i].content,
					                   ins->heredocs[i].name);
				sw_error_free(e);
				full = sw_buf_steal(&b, NULL);
			}
		} else {
			full = sw_xstrdup(cmd);
		}
		if (!s->argv) {
			s->argv = sw_strv_dup(shell);
			sw_strv_push(&s->argv, full);
		}
	}
	s->env = run_env(ss, false);
	s->user = ss->st->config.user && ss->st->config.user[0] ? sw_xstrdup(ss->st->config.user)
	                                                        : NULL;
	s->cwd = sw_xstrdup(ss->st->config.working_dir && ss->st->config.working_dir[0]
	                            ? ss->st->config.working_dir
	                            : "/");
	/* the key */
	cleanup_strv char **kenv = run_env(ss, true);
	key_add(h, "prev", ss->prev);
	key_add(h, "op", "RUN");
	key_addv(h, "argv", s->argv);
	key_addv(h, "env", kenv);
	key_add(h, "user", s->user);
	key_add(h, "cwd", s->cwd);
	key_add(h, "network", s->net_host ? "host" : "none");
	key_add(h, "script", s->script);
	for (size_t i = 0; i < s->n_mounts; i++)
		mount_key(h, ss, &s->mounts[i]);
	key_finish(h, s->key);
	/* history: RUN |N K=V /bin/sh -c cmd # buildkit */
	cleanup_free char *prefix = run_args_prefix(ss);
	cleanup_free char *joined = strv_join(s->argv, " ");
	s->created_by = sw_xasprintf("RUN %s%s # buildkit", prefix, joined);
	return 0;
}

static int replay_copy(sstate *ss, sw_build__step *s, sw_error **err)
{
	planner *pl = ss->pl;
	const sw_df_instruction *ins = s->ins;
	sw_oci_hasher *h = pl->hasher;
	bool add = ins->kind == SW_DF_ADD;
	const char *cmd = add ? "ADD" : "COPY";
	s->layer = true;
	s->add = add;
	cleanup_free char *from = NULL;
	for (size_t i = 0; i < ins->n_flags; i++) {
		const sw_df_flag *f = &ins->flags[i];
		const char *fn = flag_name(f);
		cleanup_free char *v = NULL;
		if (f->value && expand1(&v, ss, ins, f->value, err) < 0)
			return sw_error_code_of(*err);
		if (strcmp(fn, "from") == 0 && v) {
			free(from);
			from = steal_pointer(&v);
		} else if (strcmp(fn, "chown") == 0 && v) {
			free(s->chown);
			s->chown = v[0] ? steal_pointer(&v) : NULL;
		} else if (strcmp(fn, "chmod") == 0 && v) {
			if (parse_mode(&s->mode, v) < 0)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "--chmod=%s: only octal modes are supported", v);
			s->chmod = true;
		} else if (strcmp(fn, "link") == 0) {
			/* accepted: the layer is the same */
		} else if (add && strcmp(fn, "checksum") == 0 && v) {
			free(s->checksum);
			s->checksum = steal_pointer(&v);
		} else if (add && strcmp(fn, "keep-git-dir") == 0) {
			/* accepted; git sources are not supported */
		} else {
			return fail_at(err, pl, ins, SW_ERR_INVALID, "%s does not support --%s",
			               cmd, fn);
		}
	}
	cleanup_strv char **words = NULL;
	if (expand_words(&words, ss, ins, ins->args, false, err) < 0)
		return sw_error_code_of(*err);
	size_t nw = sw_strv_len(words);
	if (nw < 2)
		return fail_at(err, pl, ins, SW_ERR_INVALID, "%s needs a source and a destination",
		               cmd);
	const char *dest_text = words[nw - 1];
	s->dest = resolve_dest(&ss->st->config, dest_text);
	for (size_t i = 0; i + 1 < nw; i++)
		sw_strv_push(&s->srcs, words[i]);
	size_t nsrc = nw - 1;
	if (nsrc > 1 && s->dest[strlen(s->dest) - 1] != '/')
		return fail_at(err, pl, ins, SW_ERR_INVALID,
		               "when using %s with more than one source, the destination must be "
		               "a folder and end with a /",
		               cmd);
	/* kinds of sources */
	size_t n_here = 0, n_url = 0;
	for (size_t i = 0; ins->args[i] && ins->args[i + 1]; i++)
		if (sw_df_heredoc_for_arg(ins, ins->args[i]))
			n_here++;
	for (size_t i = 0; i < nsrc; i++) {
		if (n_here)
			continue;
		else if (is_url(s->srcs[i]) || is_git_url(s->srcs[i]))
			n_url++;
	}
	key_add(h, "prev", ss->prev);
	key_add(h, "op", cmd);
	key_add(h, "dest", s->dest);
	key_add(h, "chown", s->chown);
	char mode[16];
	snprintf(mode, sizeof(mode), "%o", (unsigned)s->mode);
	key_add(h, "chmod", s->chmod ? mode : NULL);
	key_add(h, "checksum", s->checksum);
	if (s->checksum && n_url == 0)
		return fail_at(err, pl, ins, SW_ERR_INVALID,
		               "ADD --checksum is only for URL sources");
	if (n_here) {
		if (n_here != nsrc || from)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "%s: heredocs cannot be mixed with other sources or --from",
			               cmd);
		s->src_kind = SW_BUILD__SRC_HEREDOC;
		cleanup_strv char **names = NULL;
		for (size_t i = 0; i < nsrc; i++) {
			const sw_df_heredoc *hd = sw_df_heredoc_for_arg(ins, ins->args[i]);
			if (!hd)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "%s: no heredoc body for \"%s\"", cmd, s->srcs[i]);
			cleanup_free char *body = NULL;
			if (sw_df_expand_heredoc(&body, pl->df, ins, hd, stage_lookup, ss, err) < 0)
				return wrap_at(err, pl, ins);
			sw_strv_push(&names, hd->name);
			sw_strv_push(&s->bodies, body);
			key_add(h, "heredoc", hd->name);
			key_add(h, "body", body);
		}
		sw_strv_free(s->srcs);
		s->srcs = steal_pointer(&names);
	} else if (n_url) {
		if (!add)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "COPY does not fetch URLs (\"%s\"); use ADD", s->srcs[0]);
		if (n_url != nsrc || from)
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "ADD: URLs cannot be mixed with other sources or --from");
		s->src_kind = SW_BUILD__SRC_URL;
		for (size_t i = 0; i < nsrc; i++) {
			if (is_git_url(s->srcs[i]))
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "ADD: git sources are not supported (\"%s\")",
				               s->srcs[i]);
			sw_digest d;
			if (!pl->h || !pl->h->url)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "ADD: URLs not available");
			if (pl->h->url(&d, s->srcs[i], s->checksum, pl->h->payload, err) < 0)
				return wrap_at(err, pl, ins);
			key_add(h, "url", s->srcs[i]);
			key_add(h, "content", d.s);
		}
	} else if (from) {
		if (resolve_from(&s->src_kind, &s->src, ss, ins, from, err) < 0)
			return sw_error_code_of(*err);
		key_add(h, s->src_kind == SW_BUILD__SRC_STAGE ? "stage" : "image",
		        from_digest(ss, s->src_kind, s->src));
		key_addv(h, "srcs", s->srcs);
	} else {
		s->src_kind = SW_BUILD__SRC_CONTEXT;
		sw_digest d;
		if (!pl->h || !pl->h->context)
			return fail_at(err, pl, ins, SW_ERR_INVALID, "no build context");
		if (pl->h->context(&d, &s->matched, s->srcs, pl->h->payload, err) < 0)
			return wrap_at(err, pl, ins);
		key_addv(h, "srcs", s->srcs);
		key_add(h, "context", d.s);
	}
	key_finish(h, s->key);
	/* history */
	sw_buf b = SW_BUF_INIT(0);
	sw_error *e = NULL;
	int rc = sw_buf_printf(&b, &e, "%s ", cmd);
	if (rc == 0 && from)
		rc = sw_buf_printf(&b, &e, "--from=%s ", from);
	if (rc == 0 && s->chown)
		rc = sw_buf_printf(&b, &e, "--chown=%s ", s->chown);
	if (rc == 0 && s->chmod)
		rc = sw_buf_printf(&b, &e, "--chmod=%s ", mode);
	for (size_t i = 0; i < nsrc && rc == 0; i++)
		rc = sw_buf_printf(&b, &e, "%s ", words[i]);
	if (rc == 0)
		rc = sw_buf_printf(&b, &e, "%s # buildkit", dest_text);
	sw_error_free(e);
	s->created_by = sw_buf_steal(&b, NULL);
	return 0;
}

static int replay_workdir(sstate *ss, sw_build__step *s, sw_error **err)
{
	planner *pl = ss->pl;
	sw_oci_config *cfg = &ss->st->config;
	cleanup_free char *path = NULL;
	if (expand1(&path, ss, s->ins, s->ins->args && s->ins->args[0] ? s->ins->args[0] : "",
	            err) < 0)
		return sw_error_code_of(*err);
	if (!path[0])
		return fail_at(err, pl, s->ins, SW_ERR_INVALID, "WORKDIR needs a path");
	cleanup_free char *abs =
	        path[0] == '/'
	                ? sw_xstrdup(path)
	                : sw_path_join(cfg->working_dir && cfg->working_dir[0] ? cfg->working_dir
	                                                                       : "/",
	                               path);
	cleanup_free char *clean = sw_path_clean(abs);
	free(cfg->working_dir);
	cfg->working_dir = clean[0] == '/' ? sw_xstrdup(clean) : sw_xasprintf("/%s", clean);
	s->workdir = sw_xstrdup(cfg->working_dir);
	s->layer = strcmp(s->workdir, "/") != 0;
	s->user = cfg->user && cfg->user[0] ? sw_xstrdup(cfg->user) : NULL;
	sw_oci_hasher *h = pl->hasher;
	key_add(h, "prev", ss->prev);
	key_add(h, "op", "WORKDIR");
	key_add(h, "path", s->workdir);
	key_add(h, "user", s->user);
	key_finish(h, s->key);
	s->created_by = sw_xasprintf("WORKDIR %s", s->workdir);
	return 0;
}

/* Split a "k=v" word at its first "=" and expand each part (ENV, LABEL). */
static int split_pair(char **k, char **v, sstate *ss, const sw_df_instruction *ins,
                      const char *text, sw_error **err)
{
	const char *eq = strchr(text, '=');
	if (!eq || eq == text)
		return fail_at(err, ss->pl, ins, SW_ERR_INVALID, "%s: \"%s\" is not KEY=VALUE",
		               sw_df_kind_name(ins->kind), text);
	cleanup_free char *kraw = sw_xstrndup(text, (size_t)(eq - text));
	cleanup_free char *kk = NULL, *vv = NULL;
	if (expand1(&kk, ss, ins, kraw, err) < 0 || expand1(&vv, ss, ins, eq + 1, err) < 0)
		return sw_error_code_of(*err);
	if (!kk[0])
		return fail_at(err, ss->pl, ins, SW_ERR_INVALID, "%s names can not be blank",
		               sw_df_kind_name(ins->kind));
	*k = steal_pointer(&kk);
	*v = steal_pointer(&vv);
	return 0;
}

static int replay_arg(sstate *ss, sw_build__step *s, sw_error **err)
{
	planner *pl = ss->pl;
	const sw_df_instruction *ins = s->ins;
	cleanup_strv char **commit = NULL;
	for (size_t i = 0; ins->args && ins->args[i]; i++) {
		const char *a = ins->args[i];
		const char *eq = strchr(a, '=');
		cleanup_free char *name = eq ? sw_xstrndup(a, (size_t)(eq - a)) : sw_xstrdup(a);
		if (!name[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID, "ARG needs a name");
		declare(pl, name);
		bool given = false;
		const char *bv = build_arg(pl, name, &given);
		cleanup_free char *value = NULL;
		if (given) {
			value = sw_xstrdup(bv);
		} else if (eq) {
			if (expand1(&value, ss, ins, eq + 1, err) < 0)
				return sw_error_code_of(*err);
		} else if (vars_find(&pl->globals, name)) {
			const char *gv = vars_get(&pl->globals, name);
			value = gv ? sw_xstrdup(gv) : NULL;
		} else if (vars_get(&pl->autos, name)) {
			value = sw_xstrdup(vars_get(&pl->autos, name));
		}
		vars_set(&ss->args, name, value);
		cleanup_free char *c =
		        value ? sw_xasprintf("%s=%s", name, value) : sw_xstrdup(name);
		sw_strv_push(&commit, c);
	}
	cleanup_free char *j = strv_join(commit, " ");
	s->created_by = sw_xasprintf("ARG %s", j);
	/* the key holds the declaration as written, not the value: a value counts where it is
	 * used (a RUN sees it in its env, a substitution in its expanded text) */
	sw_oci_hasher *h = pl->hasher;
	key_add(h, "prev", ss->prev);
	key_add(h, "op", "ARG");
	key_addv(h, "args", ins->args);
	key_finish(h, s->key);
	return 0;
}

static int parse_healthcheck(json_t **out, sstate *ss, const sw_df_instruction *ins, sw_error **err)
{
	planner *pl = ss->pl;
	*out = NULL;
	const char *typ = ins->args && ins->args[0] ? ins->args[0] : "";
	json_t *hc = json_object();
	json_t *t = json_array();
	json_object_set_new(hc, "Test", t);
	*out = hc;
	if (strcasecmp(typ, "NONE") == 0) {
		json_array_append_new(t, json_string("NONE"));
		return 0;
	}
	if (strcasecmp(typ, "CMD") != 0 || !ins->args[1])
		return fail_at(err, pl, ins, SW_ERR_INVALID,
		               "HEALTHCHECK takes NONE or CMD followed by a command");
	if (ins->json_form) {
		json_array_append_new(t, json_string("CMD"));
		for (size_t i = 1; ins->args[i]; i++)
			json_array_append_new(t, json_string(ins->args[i]));
	} else {
		cleanup_free char *cmd = strv_join(ins->args + 1, " ");
		json_array_append_new(t, json_string("CMD-SHELL"));
		json_array_append_new(t, json_string(cmd));
	}
	static const struct {
		const char *flag, *field;
	} durs[] = {
		{ "interval", "Interval" },
		{ "timeout", "Timeout" },
		{ "start-period", "StartPeriod" },
		{ "start-interval", "StartInterval" },
	};
	for (size_t i = 0; i < ins->n_flags; i++) {
		const sw_df_flag *f = &ins->flags[i];
		const char *fn = flag_name(f);
		bool done = false;
		for (size_t k = 0; k < SW_ARRAY_SIZE(durs); k++) {
			if (strcmp(fn, durs[k].flag) != 0)
				continue;
			int64_t ns = 0;
			if (f->value && f->value[0] && sw_build__duration_parse(&ns, f->value) < 0)
				return fail_at(
				        err, pl, ins, SW_ERR_INVALID,
				        "HEALTHCHECK --%s: \"%s\" is not a duration (30s, 1m)", fn,
				        f->value);
			if (ns)
				json_object_set_new(hc, durs[k].field, json_integer(ns));
			done = true;
		}
		if (done)
			continue;
		if (strcmp(fn, "retries") == 0) {
			unsigned long long n = 0;
			if (f->value && f->value[0] && parse_uint(&n, f->value, 2147483647ULL) < 0)
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "HEALTHCHECK --retries: \"%s\" is not a number",
				               f->value);
			if (n)
				json_object_set_new(hc, "Retries", json_integer((json_int_t)n));
			continue;
		}
		return fail_at(err, pl, ins, SW_ERR_INVALID, "HEALTHCHECK does not take --%s", fn);
	}
	return 0;
}

/* Docker's port spec: "80", "80/udp", "8000-8002/tcp" (ranges expanded). */
static int add_ports(sw_oci_config *cfg, const char *spec)
{
	cleanup_free char *s = lower_dup(spec);
	const char *proto = "tcp";
	char *slash = strchr(s, '/');
	if (slash) {
		*slash = 0;
		proto = slash + 1;
		if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0 &&
		    strcmp(proto, "sctp") != 0)
			return SW_ERR_INVALID;
	}
	unsigned long long lo = 0, hi = 0;
	char *dash = strchr(s, '-');
	if (dash) {
		*dash = 0;
		if (parse_uint(&lo, s, 65535) < 0 || parse_uint(&hi, dash + 1, 65535) < 0 ||
		    hi < lo)
			return SW_ERR_INVALID;
	} else {
		if (parse_uint(&lo, s, 65535) < 0)
			return SW_ERR_INVALID;
		hi = lo;
	}
	if (hi - lo > 10000)
		return SW_ERR_INVALID;
	for (unsigned long long p = lo; p <= hi; p++) {
		char buf[32];
		snprintf(buf, sizeof(buf), "%llu/%s", p, proto);
		bool have = false;
		for (size_t i = 0; cfg->exposed_ports && cfg->exposed_ports[i]; i++)
			if (strcmp(cfg->exposed_ports[i], buf) == 0)
				have = true;
		if (!have)
			sw_strv_push(&cfg->exposed_ports, buf);
	}
	return 0;
}

/* The argv of CMD / ENTRYPOINT: exec form as is, shell form wrapped in SHELL. */
static char **command_argv(sstate *ss, const sw_df_instruction *ins)
{
	if (ins->json_form)
		return ins->args ? sw_strv_dup(ins->args) : sw_xcalloc(1, sizeof(char *));
	char **v = config_shell(&ss->st->config);
	cleanup_free char *cmd = strv_join(ins->args, " ");
	sw_strv_push(&v, cmd);
	return v;
}

static int replay_meta(sstate *ss, sw_build__step *s, sw_error **err)
{
	planner *pl = ss->pl;
	const sw_df_instruction *ins = s->ins;
	sw_oci_config *cfg = &ss->st->config;
	cleanup_free char *text = NULL; /* the normalized instruction (and history text) */
	switch (ins->kind) {
	case SW_DF_ENV:
	case SW_DF_LABEL: {
		bool env = ins->kind == SW_DF_ENV;
		cleanup_strv char **keys = NULL, **vals = NULL;
		/* all pairs are expanded against the state before the instruction */
		for (size_t i = 0; ins->args && ins->args[i]; i++) {
			cleanup_free char *k = NULL, *v = NULL;
			if (split_pair(&k, &v, ss, ins, ins->args[i], err) < 0)
				return sw_error_code_of(*err);
			sw_strv_push(&keys, k);
			sw_strv_push(&vals, v);
		}
		if (!keys)
			return fail_at(err, pl, ins, SW_ERR_INVALID, "%s needs KEY=VALUE",
			               sw_df_kind_name(ins->kind));
		sw_buf b = SW_BUF_INIT(0);
		sw_error *e = NULL;
		int rc = sw_buf_puts(&b, env ? "ENV" : "LABEL", &e);
		for (size_t i = 0; keys[i]; i++) {
			if (env) {
				env_set(&cfg->env, keys[i], vals[i]);
			} else {
				if (!cfg->labels)
					cfg->labels = json_object();
				json_object_set_new(cfg->labels, keys[i], json_string(vals[i]));
			}
			if (rc == 0)
				rc = sw_buf_printf(&b, &e, " %s=%s", keys[i], vals[i]);
		}
		sw_error_free(e);
		text = sw_buf_steal(&b, NULL);
		break;
	}
	case SW_DF_USER: {
		cleanup_free char *u = NULL;
		if (expand1(&u, ss, ins, ins->args && ins->args[0] ? ins->args[0] : "", err) < 0)
			return sw_error_code_of(*err);
		if (!u[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID, "USER needs a user");
		free(cfg->user);
		cfg->user = sw_xstrdup(u);
		text = sw_xasprintf("USER %s", u);
		break;
	}
	case SW_DF_EXPOSE: {
		cleanup_strv char **w = NULL;
		if (expand_words(&w, ss, ins, ins->args, true, err) < 0)
			return sw_error_code_of(*err);
		cleanup_strv char **ports = NULL;
		for (size_t i = 0; w[i]; i++) {
			if (add_ports(cfg, w[i]) < 0)
				return fail_at(
				        err, pl, ins, SW_ERR_INVALID,
				        "EXPOSE: \"%s\" is not a port (80, 80/udp, 8000-8010)",
				        w[i]);
			cleanup_free char *l = lower_dup(w[i]);
			if (!strchr(l, '/')) {
				char *t = sw_xasprintf("%s/tcp", l);
				free(l);
				l = t;
			}
			sw_strv_push(&ports, l);
		}
		cleanup_free char *gw = go_words(ports);
		text = sw_xasprintf("EXPOSE %s", gw);
		break;
	}
	case SW_DF_CMD:
	case SW_DF_ENTRYPOINT: {
		bool ep = ins->kind == SW_DF_ENTRYPOINT;
		char **argv = command_argv(ss, ins);
		cleanup_free char *gl = go_list(argv);
		text = sw_xasprintf("%s %s", ep ? "ENTRYPOINT" : "CMD", gl);
		if (ep) {
			sw_strv_free(cfg->entrypoint);
			cfg->entrypoint = argv;
			if (!ss->cmd_set) {
				sw_strv_free(cfg->cmd);
				cfg->cmd = NULL;
			}
		} else {
			sw_strv_free(cfg->cmd);
			cfg->cmd = argv;
			ss->cmd_set = true;
		}
		break;
	}
	case SW_DF_SHELL: {
		if (!ins->json_form || !ins->args || !ins->args[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID,
			               "SHELL takes a JSON array: SHELL [\"/bin/bash\", \"-c\"]");
		json_t *a = json_array();
		for (size_t i = 0; ins->args[i]; i++)
			json_array_append_new(a, json_string(ins->args[i]));
		json_object_set_new(raw_cfg(cfg), "Shell", a);
		cleanup_free char *gl = go_list(ins->args);
		text = sw_xasprintf("SHELL %s", gl);
		break;
	}
	case SW_DF_VOLUME: {
		cleanup_strv char **w = NULL;
		if (ins->json_form) {
			w = NULL;
			for (size_t i = 0; ins->args && ins->args[i]; i++) {
				cleanup_free char *x = NULL;
				if (expand1(&x, ss, ins, ins->args[i], err) < 0)
					return sw_error_code_of(*err);
				sw_strv_push(&w, x);
			}
		} else if (expand_words(&w, ss, ins, ins->args, false, err) < 0) {
			return sw_error_code_of(*err);
		}
		if (!w || !w[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID, "VOLUME needs a path");
		for (size_t i = 0; w[i]; i++) {
			if (!w[i][0])
				return fail_at(err, pl, ins, SW_ERR_INVALID,
				               "VOLUME: a path cannot be empty");
			bool have = false;
			for (size_t k = 0; cfg->volumes && cfg->volumes[k]; k++)
				if (strcmp(cfg->volumes[k], w[i]) == 0)
					have = true;
			if (!have)
				sw_strv_push(&cfg->volumes, w[i]);
		}
		cleanup_free char *gw = go_words(w);
		text = sw_xasprintf("VOLUME %s", gw);
		break;
	}
	case SW_DF_STOPSIGNAL: {
		cleanup_free char *sig = NULL;
		if (expand1(&sig, ss, ins, ins->args && ins->args[0] ? ins->args[0] : "", err) < 0)
			return sw_error_code_of(*err);
		if (!sig[0])
			return fail_at(err, pl, ins, SW_ERR_INVALID, "STOPSIGNAL needs a signal");
		free(cfg->stop_signal);
		cfg->stop_signal = sw_xstrdup(sig);
		text = sw_xasprintf("STOPSIGNAL %s", sig);
		break;
	}
	case SW_DF_HEALTHCHECK: {
		json_t *hc = NULL;
		if (parse_healthcheck(&hc, ss, ins, err) < 0)
			return sw_error_code_of(*err);
		json_object_set_new(raw_cfg(cfg), "Healthcheck", hc);
		cleanup_free char *dump = json_dumps(hc, JSON_COMPACT | JSON_SORT_KEYS);
		text = sw_xasprintf("HEALTHCHECK %s", dump ? dump : "");
		break;
	}
	case SW_DF_ONBUILD: {
		const char *trigger = ins->args && ins->args[0] ? ins->args[0] : "";
		json_t *rc = raw_cfg(cfg);
		json_t *ob = json_object_get(rc, "OnBuild");
		if (!json_is_array(ob)) {
			ob = json_array();
			json_object_set_new(rc, "OnBuild", ob);
		}
		json_array_append_new(ob, json_string(trigger));
		text = sw_xasprintf("ONBUILD %s", trigger);
		break;
	}
	case SW_DF_MAINTAINER: {
		cleanup_free char *m = strv_join(ins->args, " ");
		free(cfg->author);
		cfg->author = sw_xstrdup(m);
		text = sw_xasprintf("MAINTAINER %s", m);
		break;
	}
	default:
		return fail_at(err, pl, ins, SW_ERR_INVALID, "unexpected %s",
		               sw_df_kind_name(ins->kind));
	}
	sw_oci_hasher *h = pl->hasher;
	key_add(h, "prev", ss->prev);
	key_add(h, "op", sw_df_kind_name(ins->kind));
	key_add(h, "text", text);
	key_finish(h, s->key);
	s->created_by = steal_pointer(&text);
	return 0;
}

/*
 * The base's ONBUILD triggers (BuildKit's initOnBuildTriggers): each one is parsed as a
 * Dockerfile instruction and becomes a step at the start of the stage, in order, before the
 * stage's own instructions. `what` names the base for errors ("image bb:1", "stage parent").
 */
#define TRIGGER_FILE "onbuild-trigger"
static int expand_triggers(planner *pl, sw_build__stage *st, const json_t *ob, const char *what,
                           sw_error **err)
{
	size_t n = json_is_array(ob) ? json_array_size(ob) : 0;
	if (n == 0)
		return 0;
	sw_build__step *steps = sw_xcalloc(n + st->n_steps, sizeof(*steps));
	st->triggers = sw_xcalloc(n, sizeof(*st->triggers));
	for (size_t i = 0; i < n; i++) {
		const json_t *t = json_array_get(ob, i);
		const char *text = json_is_string(t) ? json_string_value(t) : "";
		/* after a FROM (the frontend wants a stage): the trigger is the 2nd instruction */
		cleanup_free char *src = sw_xasprintf("FROM scratch\n%s\n", text);
		sw_dockerfile *tdf = NULL;
		sw_error *perr = NULL;
		const char *why = NULL;
		cleanup_free char *msg = NULL;
		if (sw_df_parse(&tdf, src, strlen(src), TRIGGER_FILE, &perr) < 0) {
			/* drop the "onbuild-trigger:L:C: " prefix: the places are the fake file's
			 */
			const char *m = sw_error_msg(perr) ? sw_error_msg(perr) : "invalid";
			if (strncmp(m, TRIGGER_FILE ":", strlen(TRIGGER_FILE ":")) == 0) {
				const char *c = strstr(m, ": ");
				m = c ? c + 2 : m;
			}
			msg = sw_xstrdup(m);
			sw_error_free(perr);
		} else if (tdf->n_instructions != 2) {
			why = "an ONBUILD trigger must be a single instruction";
		} else if (tdf->instructions[1].kind == SW_DF_ONBUILD) {
			why = "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed";
		} else if (tdf->instructions[1].kind == SW_DF_FROM ||
		           tdf->instructions[1].kind == SW_DF_MAINTAINER) {
			msg = sw_xasprintf("%s isn't allowed as an ONBUILD trigger",
			                   sw_df_kind_name(tdf->instructions[1].kind));
		}
		if (tdf)
			st->triggers[st->n_triggers++] = tdf;
		if (msg || why) {
			free(steps);
			return fail_at(err, pl, st->from, SW_ERR_INVALID,
			               "ONBUILD trigger \"%s\" of the base %s: %s", text, what,
			               msg ? msg : why);
		}
		/* errors while replaying the trigger name the FROM that runs it */
		sw_df_instruction *ins = &tdf->instructions[1];
		ins->line = st->from->line;
		ins->column = st->from->column;
		steps[i].ins = ins;
		steps[i].kind = ins->kind;
		steps[i].src = -1;
	}
	if (st->n_steps)
		memcpy(steps + n, st->steps, st->n_steps * sizeof(*steps));
	free(st->steps);
	st->steps = steps;
	st->n_steps += n;
	return 0;
}

static int replay_stage(planner *pl, sw_build__stage *st, sw_error **err)
{
	sstate ss;
	memset(&ss, 0, sizeof(ss));
	ss.pl = pl;
	ss.st = st;
	int rc = 0;
	sw_oci_hasher *h = pl->hasher;
	/* the base */
	switch (st->base_kind) {
	case SW_BUILD__BASE_SCRATCH: {
		memset(&st->config, 0, sizeof(st->config));
		st->config.architecture = sw_xstrdup(st->platform.architecture);
		st->config.os = sw_xstrdup(st->platform.os);
		st->config.variant = st->platform.variant ? sw_xstrdup(st->platform.variant) : NULL;
		sw_strv_push(&st->config.env, "PATH=" DEFAULT_PATH);
		st->config.working_dir = sw_xstrdup("/");
		st->config.raw = json_object();
		key_add(h, "version", KEY_VERSION);
		key_add(h, "base", "scratch");
		key_add(h, "platform", st->platform_str);
		key_finish(h, st->key0);
		break;
	}
	case SW_BUILD__BASE_IMAGE: {
		if (image_get(&st->base, pl, st->base_name, &st->platform, err) < 0) {
			rc = wrap_at(err, pl, st->from);
			goto out;
		}
		sw_build__image *im = &pl->p->images[st->base];
		config_copy(&st->config, &im->config);
		cleanup_free char *what = sw_xasprintf("image %s", st->base_name);
		rc = expand_triggers(pl, st, json_object_get(raw_cfg(&st->config), "OnBuild"), what,
		                     err);
		if (rc < 0)
			goto out;
		json_object_del(raw_cfg(&st->config), "OnBuild");
		key_add(h, "version", KEY_VERSION);
		key_add(h, "base", im->desc.digest.s);
		key_add(h, "platform", st->platform_str);
		key_finish(h, st->key0);
		break;
	}
	case SW_BUILD__BASE_STAGE: {
		sw_build__stage *b = &pl->p->stages[st->base];
		config_copy(&st->config, &b->config);
		/* the base stage's ONBUILD triggers run here; they stay recorded in its config only
		 */
		cleanup_free char *what = sw_xasprintf("stage %s", b->label);
		rc = expand_triggers(pl, st, json_object_get(raw_cfg(&st->config), "OnBuild"), what,
		                     err);
		if (rc < 0)
			goto out;
		json_object_del(raw_cfg(&st->config), "OnBuild");
		snprintf(st->key0, sizeof(st->key0), "%s", b->key);
		break;
	}
	}
	snprintf(ss.prev, sizeof(ss.prev), "%s", st->key0);
	/* progress numbers: FROM counts for image bases and stage bases alike, as BuildKit */
	st->n_progress = st->base_kind == SW_BUILD__BASE_SCRATCH ? 0 : 1;
	ss.progress = st->n_progress;
	for (size_t i = 0; i < st->n_steps; i++) {
		sw_df_kind k = st->steps[i].kind;
		if (k == SW_DF_RUN || k == SW_DF_COPY || k == SW_DF_ADD || k == SW_DF_WORKDIR)
			st->n_progress++;
	}
	for (size_t i = 0; i < st->n_steps; i++) {
		sw_build__step *s = &st->steps[i];
		switch (s->kind) {
		case SW_DF_RUN:
			rc = replay_run(&ss, s, err);
			break;
		case SW_DF_COPY:
		case SW_DF_ADD:
			rc = replay_copy(&ss, s, err);
			break;
		case SW_DF_WORKDIR:
			rc = replay_workdir(&ss, s, err);
			break;
		case SW_DF_ARG:
			rc = replay_arg(&ss, s, err);
			break;
		case SW_DF_FROM:
			rc = fail_at(err, pl, s->ins, SW_ERR_INVALID, "unexpected FROM");
			break;
		default:
			rc = replay_meta(&ss, s, err);
			break;
		}
		if (rc < 0)
			goto out;
		if (s->kind == SW_DF_RUN || s->kind == SW_DF_COPY || s->kind == SW_DF_ADD ||
		    s->kind == SW_DF_WORKDIR)
			step_title(&ss, s, s->ins->original ? s->ins->original : s->created_by);
		snprintf(ss.prev, sizeof(ss.prev), "%s", s->key);
	}
	snprintf(st->key, sizeof(st->key), "%s", ss.prev);
	st->shell = config_shell(&st->config);
out:
	vars_clear(&ss.args);
	return rc;
}

static void step_clear(sw_build__step *s)
{
	free(s->created_by);
	free(s->title);
	sw_strv_free(s->argv);
	sw_strv_free(s->env);
	free(s->user);
	free(s->cwd);
	for (size_t i = 0; i < s->n_mounts; i++) {
		sw_build__mount *m = &s->mounts[i];
		free(m->target);
		free(m->source);
		free(m->id);
		sw_strv_free(m->matched);
	}
	free(s->mounts);
	free(s->script_name);
	free(s->script);
	sw_strv_free(s->srcs);
	sw_strv_free(s->matched);
	sw_strv_free(s->bodies);
	free(s->dest);
	free(s->chown);
	free(s->checksum);
	free(s->workdir);
}

void sw_build__plan_free(sw_build__plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_stages; i++) {
		sw_build__stage *st = &p->stages[i];
		free(st->name);
		free(st->label);
		free(st->base_name);
		sw_oci_platform_clear(&st->platform);
		free(st->platform_str);
		for (size_t k = 0; k < st->n_steps; k++)
			step_clear(&st->steps[k]);
		free(st->steps);
		sw_oci_config_clear(&st->config);
		sw_strv_free(st->shell);
		for (size_t k = 0; k < st->n_triggers; k++)
			sw_df_free(st->triggers[k]);
		free(st->triggers);
	}
	free(p->stages);
	for (size_t i = 0; i < p->n_images; i++) {
		sw_build__image *im = &p->images[i];
		free(im->name);
		sw_oci_platform_clear(&im->platform);
		sw_oci_descriptor_clear(&im->desc);
		sw_oci_manifest_clear(&im->manifest);
		sw_oci_config_clear(&im->config);
	}
	free(p->images);
	free(p);
}

static void warn_unused_args(planner *pl)
{
	if (!pl->h || !pl->h->warn)
		return;
	cleanup_strv char **unused = NULL;
	for (size_t i = 0; i < pl->build_args.n; i++) {
		const char *n = pl->build_args.v[i].name;
		if (is_proxy_arg(n) || vars_find(&pl->autos, n))
			continue;
		bool used = false;
		for (size_t k = 0; pl->declared && pl->declared[k]; k++)
			if (strcmp(pl->declared[k], n) == 0)
				used = true;
		if (!used)
			sw_strv_push(&unused, n);
	}
	if (!unused)
		return;
	cleanup_free char *j = strv_join(unused, " ");
	cleanup_free char *m =
	        sw_xasprintf("[Warning] One or more build-args [%s] were not consumed", j);
	pl->h->warn(m, pl->h->payload);
}

int sw_build__plan_new(sw_build__plan **out, const sw_dockerfile *df,
                       const sw_build__plan_opts *opts, const sw_build__hooks *hooks,
                       sw_error **err)
{
	*out = NULL;
	static const sw_build__plan_opts no_opts;
	planner pl;
	memset(&pl, 0, sizeof(pl));
	pl.o = opts ? opts : &no_opts;
	pl.h = hooks;
	pl.df = df;
	pl.p = sw_xcalloc(1, sizeof(*pl.p));
	pl.p->df = df;
	pl.p->target = -1;
	pl.hasher = sw_oci_hasher_new();
	int rc = 0;
	if (pl.o->platform) {
		pl.platform.os = sw_xstrdup(pl.o->platform->os ? pl.o->platform->os : "linux");
		pl.platform.architecture = sw_xstrdup(
		        pl.o->platform->architecture ? pl.o->platform->architecture : "amd64");
		pl.platform.variant =
		        pl.o->platform->variant ? sw_xstrdup(pl.o->platform->variant) : NULL;
	} else {
		sw_oci_platform_default(&pl.platform);
	}
	pl.platform_str = sw_oci_platform_str(&pl.platform);
	if (pl.o->network && strcmp(pl.o->network, "none") != 0 &&
	    strcmp(pl.o->network, "host") != 0 && strcmp(pl.o->network, "default") != 0) {
		rc = sw_error_set(err, SW_ERR_INVALID,
		                  "--network must be none, host or default, not '%s'",
		                  pl.o->network);
		goto out;
	}
	set_autos(&pl);
	if ((rc = parse_build_args(&pl, err)) < 0 || (rc = split_stages(&pl, err)) < 0)
		goto out;
	/* the target */
	if (pl.o->target && pl.o->target[0]) {
		int t = -1;
		for (size_t i = 0; i < pl.p->n_stages; i++)
			if (pl.p->stages[i].name &&
			    strcasecmp(pl.p->stages[i].name, pl.o->target) == 0)
				t = (int)i;
		if (t < 0) {
			rc = sw_error_set(err, SW_ERR_NOT_FOUND,
			                  "target stage \"%s\" could not be found in %s",
			                  pl.o->target, df->filename ? df->filename : "Dockerfile");
			goto out;
		}
		pl.p->target = t;
	} else {
		pl.p->target = (int)pl.p->n_stages - 1;
	}
	if ((rc = mark_needed(&pl, pl.p->target, 0, err)) < 0)
		goto out;
	for (size_t i = 0; i < pl.p->n_stages; i++) {
		if (!pl.p->stages[i].needed)
			continue;
		if ((rc = replay_stage(&pl, &pl.p->stages[i], err)) < 0)
			goto out;
	}
	warn_unused_args(&pl);
	*out = steal_pointer(&pl.p);
out:
	sw_build__plan_free(pl.p);
	vars_clear(&pl.build_args);
	vars_clear(&pl.globals);
	vars_clear(&pl.autos);
	sw_strv_free(pl.declared);
	sw_oci_platform_clear(&pl.platform);
	free(pl.platform_str);
	sw_oci_hasher_free(pl.hasher);
	return rc;
}
