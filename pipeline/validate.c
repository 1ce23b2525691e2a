/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation helpers of the pipeline file: the problem list every check adds to, the "did you
 * mean" suggestion for unknown keys and names (an edit distance), the rules for names (jobs,
 * stages, services, variables, registry repositories, tags), and the checks that need the whole
 * model: duplicate stage and job names and `needs`, which may only point to jobs of earlier
 * stages (a need of the same or a later stage is reported, with the cycle it closes if any).
 */
#include "pipeline/pipeline_internal.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

void sw_pl__problem_add(sw_pl__problems *ps, sw_pl_pos pos, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *msg = sw_xvasprintf(fmt, ap);
	va_end(ap);
	ps->v = sw_xrealloc(ps->v, (ps->n + 1) * sizeof(*ps->v));
	ps->v[ps->n].pos = pos;
	ps->v[ps->n].msg = msg;
	ps->n++;
}

void sw_pl__problems_clear(sw_pl__problems *ps)
{
	for (size_t i = 0; i < ps->n; i++)
		free(ps->v[i].msg);
	free(ps->v);
	ps->v = NULL;
	ps->n = 0;
}

const char *sw_pl__nearest(const char *word, const char *const *cands, size_t n)
{
	return sw_str_nearest(word, cands, n);
}

bool sw_pl__name_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 100)
		return false;
	for (const char *c = s; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '.' && *c != '_' && *c != '-')
			return false;
	return true;
}

bool sw_pl__hostname_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
		return false;
	for (const char *c = s; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '-' && *c != '.')
			return false;
	return true;
}

bool sw_pl__varname_valid(const char *s)
{
	if (!*s || isdigit((unsigned char)*s))
		return false;
	for (const char *c = s; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_')
			return false;
	return true;
}

/* One path component of a repository: [a-z0-9]+ joined by '.', '_', "__" or '-'s. */
static bool repo_component_valid(const char *s, size_t n)
{
	if (n == 0 || (!islower((unsigned char)s[0]) && !isdigit((unsigned char)s[0])))
		return false;
	if (!islower((unsigned char)s[n - 1]) && !isdigit((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-')
			continue;
		if (c == '.' || c == '_') {
			/* separators: '.', '_' or "__", never two others in a row */
			if (s[i + 1] == '.' || (c == '.' && s[i + 1] == '_'))
				return false;
			if (c == '_' && s[i + 1] == '_' && i + 2 < n && s[i + 2] == '_')
				return false;
			continue;
		}
		return false;
	}
	return true;
}

bool sw_pl__repo_valid(const char *s)
{
	const char *slash = strchr(s, '/');
	if (!slash || slash == s || strlen(s) > 255)
		return false;
	/* the host: letters, digits, '.', '-', an optional :PORT; it must look like a host */
	size_t hl = (size_t)(slash - s);
	const char *colon = memchr(s, ':', hl);
	size_t namel = colon ? (size_t)(colon - s) : hl;
	if (namel == 0)
		return false;
	for (size_t i = 0; i < namel; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-')
			return false;
	if (colon) {
		size_t pl = hl - namel - 1;
		if (pl == 0 || pl > 5)
			return false;
		for (size_t i = 0; i < pl; i++)
			if (!isdigit((unsigned char)colon[1 + i]))
				return false;
		if (atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
			return false;
	}
	if (!colon && !memchr(s, '.', namel) && !(namel == 9 && strncmp(s, "localhost", 9) == 0))
		return false;
	/* the path: components separated by '/', no tag, no digest */
	const char *p = slash + 1;
	for (;;) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (!repo_component_valid(p, n))
			return false;
		if (!e)
			break;
		p = e + 1;
	}
	return true;
}

bool sw_pl__tag_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 128 || (!isalnum((unsigned char)s[0]) && s[0] != '_'))
		return false;
	for (const char *c = s; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != '-')
			return false;
	return true;
}

/* ---------------------------------------------------------------- the whole model */

/* Does job `from` reach job `to` through needs? On success the path (job indexes from `from` to
 * `to`) is in path[0..*len). */
static bool reaches(const sw_pipeline *p, size_t from, size_t to, bool *seen, size_t *path,
                    size_t *len)
{
	if (seen[from])
		return false;
	seen[from] = true;
	path[(*len)++] = from;
	if (from == to)
		return true;
	const sw_pl_job *j = &p->jobs[from];
	for (size_t k = 0; k < j->needs.n; k++) {
		ssize_t t = sw_pipeline_job_find(p, j->needs.v[k]);
		if (t >= 0 && reaches(p, (size_t)t, to, seen, path, len))
			return true;
	}
	(*len)--;
	return false;
}

static void check_needs(const sw_pipeline *p, size_t ji, const sw_pl_pos *npos, sw_pl__problems *ps)
{
	const sw_pl_job *j = &p->jobs[ji];
	if (!j->name)
		return;
	for (size_t k = 0; k < j->needs.n; k++) {
		const char *need = j->needs.v[k];
		sw_pl_pos pos = npos ? npos[k] : j->pos;
		bool dup = false;
		for (size_t m = 0; m < k; m++)
			dup = dup || strcmp(j->needs.v[m], need) == 0;
		if (dup) {
			sw_pl__problem_add(ps, pos, "job '%s' lists '%s' twice in 'needs'", j->name,
			                   need);
			continue;
		}
		if (strcmp(need, j->name) == 0) {
			sw_pl__problem_add(
			        ps, pos,
			        "job '%s' needs itself (a cycle); 'needs' can only point to "
			        "jobs of earlier stages",
			        j->name);
			continue;
		}
		ssize_t t = sw_pipeline_job_find(p, need);
		if (t < 0) {
			const char **names = sw_xcalloc(p->n_jobs + 1, sizeof(*names));
			size_t nn = 0;
			for (size_t i = 0; i < p->n_jobs; i++)
				if (p->jobs[i].name)
					names[nn++] = p->jobs[i].name;
			const char *near = sw_pl__nearest(need, names, nn);
			if (near)
				sw_pl__problem_add(
				        ps, pos,
				        "job '%s' needs '%s', which is not a job (did you "
				        "mean '%s'?)",
				        j->name, need, near);
			else
				sw_pl__problem_add(ps, pos,
				                   "job '%s' needs '%s', which is not a job",
				                   j->name, need);
			free(names);
			continue;
		}
		const sw_pl_job *tj = &p->jobs[t];
		const char *sname = p->stages[tj->stage].name ? p->stages[tj->stage].name : "?";
		if (tj->stage == j->stage) {
			sw_pl__problem_add(
			        ps, pos,
			        "job '%s' needs '%s' of the same stage '%s'; 'needs' can "
			        "only point to jobs of earlier stages",
			        j->name, need, sname);
		} else if (tj->stage > j->stage) {
			bool *seen = sw_xcalloc(p->n_jobs, sizeof(bool));
			size_t *path = sw_xcalloc(p->n_jobs + 1, sizeof(size_t));
			size_t len = 0;
			sw_buf cyc = SW_BUF_INIT(0);
			if (reaches(p, (size_t)t, ji, seen, path, &len)) {
				int r = sw_buf_printf(&cyc, NULL, " (a cycle: %s", j->name);
				for (size_t i = 0; r == 0 && i < len; i++)
					r = sw_buf_printf(&cyc, NULL, " -> %s",
					                  p->jobs[path[i]].name);
				if (r == 0)
					r = sw_buf_puts(&cyc, ")", NULL);
				if (r < 0)
					sw_buf_reset(&cyc);
			}
			sw_pl__problem_add(
			        ps, pos,
			        "job '%s' needs '%s' of the later stage '%s'; 'needs' can "
			        "only point to jobs of earlier stages%s",
			        j->name, need, sname, cyc.data ? cyc.data : "");
			sw_buf_free(&cyc);
			free(seen);
			free(path);
		}
	}
}

void sw_pl__validate(const sw_pipeline *p, sw_pl_pos *const *needs_pos, sw_pl__problems *ps)
{
	for (size_t i = 0; i < p->n_stages; i++) {
		if (!p->stages[i].name)
			continue;
		for (size_t k = 0; k < i; k++) {
			if (p->stages[k].name &&
			    strcmp(p->stages[k].name, p->stages[i].name) == 0) {
				sw_pl__problem_add(ps, p->stages[i].pos,
				                   "duplicate stage name '%s' (first at %d:%d)",
				                   p->stages[i].name, p->stages[k].pos.line,
				                   p->stages[k].pos.column);
				break;
			}
		}
	}
	for (size_t i = 0; i < p->n_jobs; i++) {
		if (!p->jobs[i].name)
			continue;
		for (size_t k = 0; k < i; k++) {
			if (p->jobs[k].name && strcmp(p->jobs[k].name, p->jobs[i].name) == 0) {
				sw_pl__problem_add(ps, p->jobs[i].pos,
				                   "duplicate job name '%s' (first at %d:%d)",
				                   p->jobs[i].name, p->jobs[k].pos.line,
				                   p->jobs[k].pos.column);
				break;
			}
		}
	}
	for (size_t i = 0; i < p->n_jobs; i++)
		check_needs(p, i, needs_pos ? needs_pos[i] : NULL, ps);
}
