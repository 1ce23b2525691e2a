/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `when:` conditions: glob matching of branch names and changed paths ("*" stays inside one
 * path component, "**" crosses them, "?" one character, [abc] / [a-z] / [!abc] classes), and the
 * decision whether a job (or a promotion) runs for a commit given its branch, tag and changed
 * files. The `status` part is decided by the runner, which knows the other jobs' results.
 */
#include "pipeline/pipeline.h"

#include <string.h>

/* Backtracking is bounded: a pathological pattern gives up (no match) after this many steps. */
#define GLOB_MAX_STEPS 200000

/* Match a [...] class at *pp against c; advances *pp past the class. -1: not a class (no ']'). */
static int class_match(const char **pp, char c)
{
	const char *p = *pp + 1;
	bool neg = false;
	if (*p == '!' || *p == '^') {
		neg = true;
		p++;
	}
	bool hit = false;
	bool first = true;
	while (*p && (*p != ']' || first)) {
		first = false;
		char lo = *p, hi = *p;
		if (p[1] == '-' && p[2] && p[2] != ']') {
			hi = p[2];
			p += 3;
		} else {
			p++;
		}
		if (c >= lo && c <= hi)
			hit = true;
	}
	if (*p != ']')
		return -1;
	*pp = p + 1;
	return hit != neg;
}

static bool match(const char *p, const char *s, long *steps)
{
	while (*p) {
		if (++*steps > GLOB_MAX_STEPS)
			return false;
		if (p[0] == '*' && p[1] == '*') {
			while (*p == '*')
				p++;
			if (*p == '/') {
				/* "**" + "/": zero or more whole folders */
				p++;
				if (match(p, s, steps))
					return true;
				for (const char *t = s; *t; t++)
					if (*t == '/' && match(p, t + 1, steps))
						return true;
				return false;
			}
			for (const char *t = s;; t++) {
				if (match(p, t, steps))
					return true;
				if (!*t)
					return false;
			}
		}
		if (*p == '*') {
			p++;
			for (const char *t = s;; t++) {
				if (match(p, t, steps))
					return true;
				if (!*t || *t == '/')
					return false;
			}
		}
		if (!*s)
			return false;
		if (*p == '?') {
			if (*s == '/')
				return false;
			p++;
			s++;
			continue;
		}
		if (*p == '[') {
			const char *q = p;
			int r = *s == '/' ? 0 : class_match(&q, *s);
			if (r == 0)
				return false;
			if (r == 1) {
				p = q;
				s++;
				continue;
			}
			/* no closing ']': a literal '[' */
		}
		if (*p == '\\' && p[1])
			p++;
		if (*p != *s)
			return false;
		p++;
		s++;
	}
	return *s == '\0';
}

bool sw_pl_glob_match(const char *pattern, const char *path)
{
	long steps = 0;
	return match(pattern, path, &steps);
}

static bool any_match(const sw_pl_strs *pats, const char *s)
{
	for (size_t i = 0; i < pats->n; i++)
		if (sw_pl_glob_match(pats->v[i], s))
			return true;
	return false;
}

bool sw_pl_when_matches(const sw_pl_when *w, const sw_pl_commit_info *ci)
{
	if (!w || !w->given)
		return true;
	if (ci->tag) {
		if (w->tag == 0)
			return false;
		/* branch patterns are about branches: a tag runs only with `tag: true` */
		if (w->tag < 0 && w->branch.n > 0)
			return false;
	} else {
		if (w->tag == 1 && w->branch.n == 0)
			return false; /* `tag: true` alone: only on tags */
		if (w->branch.n > 0 && (!ci->branch || !any_match(&w->branch, ci->branch)))
			return false;
	}
	if (w->changes.n > 0 && ci->changed) {
		bool hit = false;
		for (size_t i = 0; !hit && ci->changed[i]; i++)
			hit = any_match(&w->changes, ci->changed[i]);
		if (!hit)
			return false;
	}
	return true;
}
