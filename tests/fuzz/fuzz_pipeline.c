/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the pipeline file: whatever parses must give a well-formed model (stages
 * with names and jobs, every job with a name, a stage index in range and at least one
 * non-empty command, needs that name jobs of earlier stages, services with a name and an
 * image, promotions with a repository and tags) and lint must find nothing; whatever fails must
 * say "fuzz.yml:LINE:COLUMN: ..." and lint must list at least that problem, each in the same
 * form. Every template of the model is expanded, and `when` is decided for a few commits. The
 * raw bytes also go through expansion and globbing. Any broken promise aborts; leaks show under
 * ASan.
 */
#include "pipeline/pipeline.h"

#include <ctype.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *lookup(const char *name, void *payload)
{
	(void)payload;
	if (!strcmp(name, "SLIPWAY_BRANCH"))
		return "main";
	if (!strcmp(name, "EMPTY"))
		return "";
	return NULL;
}

static int checksum(char **out, const char *path, void *payload, sw_error **err)
{
	(void)payload;
	if (!*path)
		return sw_error_set(err, SW_ERR_INVALID, "empty path");
	*out = sw_xstrdup("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	return 0;
}

static void expand(const char *tmpl, bool ck)
{
	char *out = NULL;
	sw_error *err = NULL;
	int r = sw_pl_expand(&out, tmpl, lookup, ck ? checksum : NULL, NULL, &err);
	if ((r == 0) != (out != NULL) || (r == 0) == (err != NULL))
		abort();
	free(out);
	sw_error_free(err);
}

/* "fuzz.yml:L:C: " with L, C >= 1 */
static bool positioned(const char *msg)
{
	if (strncmp(msg, "fuzz.yml:", 9) != 0)
		return false;
	const char *p = msg + 9;
	for (int part = 0; part < 2; part++) {
		if (!isdigit((unsigned char)*p) || *p == '0')
			return false;
		while (isdigit((unsigned char)*p))
			p++;
		if (*p++ != ':')
			return false;
	}
	return *p == ' ';
}

static void check_model(const sw_pipeline *p)
{
	const char *const changed[] = { "src/a.c", "README.md", NULL };
	sw_pl_commit_info cis[] = { { "main", NULL, changed },
		                    { NULL, "v1.0", NULL },
		                    { "release/1.x", NULL, NULL } };
	if (p->n_stages == 0 || p->n_jobs == 0 || !p->image.dockerfile || !p->image.context)
		abort();
	for (size_t i = 0; i < p->n_stages; i++)
		if (!p->stages[i].name || p->stages[i].n_jobs == 0)
			abort();
	for (size_t i = 0; i < p->image.args.n; i++)
		expand(p->image.args.v[i].value, false);
	for (size_t i = 0; i < p->env.n; i++)
		expand(p->env.v[i].value, false);
	for (size_t i = 0; i < p->n_jobs; i++) {
		const sw_pl_job *j = &p->jobs[i];
		if (!j->name || j->stage >= p->n_stages || j->run.n == 0 || j->retry < 0 ||
		    j->retry > 10 || sw_pipeline_job_find(p, j->name) != (ssize_t)i)
			abort();
		for (size_t k = 0; k < j->needs.n; k++) {
			ssize_t t = sw_pipeline_job_find(p, j->needs.v[k]);
			if (t < 0 || p->jobs[t].stage >= j->stage)
				abort();
		}
		for (size_t k = 0; k < j->n_services; k++)
			if (!j->services[k].name || !j->services[k].image ||
			    j->services[k].ready.timeout_ms <= 0)
				abort();
		for (size_t k = 0; k < j->env.n; k++)
			expand(j->env.v[k].value, false);
		if (j->cache.key)
			expand(j->cache.key, true);
		if (j->cache.paths.n > 0 && !j->cache.key)
			abort();
		for (size_t k = 0; k < SW_ARRAY_SIZE(cis); k++)
			(void)sw_pl_when_matches(&j->when, &cis[k]);
	}
	for (size_t i = 0; i < p->n_promote; i++) {
		if (!p->promote[i].to || p->promote[i].tags.n == 0)
			abort();
		for (size_t k = 0; k < p->promote[i].tags.n; k++)
			expand(p->promote[i].tags.v[k], false);
		for (size_t k = 0; k < SW_ARRAY_SIZE(cis); k++)
			(void)sw_pl_when_matches(&p->promote[i].when, &cis[k]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	sw_pipeline *p = NULL;
	sw_error *err = NULL;
	char **problems = NULL;
	if (size > ((size_t)4 << 20))
		return 0; /* over the file size limit: refused before parsing */
	if (sw_pipeline_lint(&problems, buf, size, "fuzz.yml", &err) < 0 || !problems)
		abort();
	for (size_t i = 0; problems[i]; i++)
		if (!positioned(problems[i]))
			abort();
	if (sw_pipeline_parse(&p, buf, size, "fuzz.yml", &err) < 0) {
		if (p || !err || err->code != SW_ERR_INVALID || !positioned(err->msg) ||
		    !problems[0] || strcmp(problems[0], err->msg) != 0)
			abort();
		sw_error_clear(&err);
	} else {
		if (err || !p || problems[0])
			abort();
		check_model(p);
		sw_pipeline_free(p);
	}
	sw_strv_free(problems);

	/* the raw bytes as a template and as glob pattern and path */
	if (size > 4096)
		return 0;
	char *s = sw_xstrndup(buf, size);
	expand(s, true);
	char *half = s + strlen(s) / 2;
	char *pat = sw_xstrndup(s, (size_t)(half - s));
	(void)sw_pl_glob_match(pat, half);
	(void)sw_pl_glob_match(s, s);
	int64_t ms;
	(void)sw_pl_duration_parse(&ms, s);
	free(pat);
	free(s);
	return 0;
}
