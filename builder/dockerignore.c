/* SPDX-License-Identifier: Apache-2.0 */
/*
 * .dockerignore with Docker's rules (moby/patternmatcher and its ignorefile reader, as BuildKit
 * and buildx use them): one pattern per line, a "#" in the first column starts a comment,
 * surrounding white space is trimmed, patterns are cleaned like Go's filepath.Clean and a
 * leading "/" dropped (they always start at the context root), "!" re-includes. A pattern
 * matches a path or any of its parent folders; "*" and "?" stay within one path component,
 * "[...]" is a character class, "\" escapes, "**" spans any number of folders; the last pattern
 * that matches decides. The walker asks sw_dockerignore_may_include_under before skipping an
 * excluded folder, with fsutil's rule: descend when a "!" pattern could name something inside.
 */
#include "builder/builder.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define DI_MAX_SIZE ((size_t)4 << 20)

typedef enum { PT_EXACT, PT_PREFIX, PT_SUFFIX, PT_REGEX } ptype;
typedef enum { T_LIT, T_STAR, T_ANY, T_DSTAR, T_DOTSTAR, T_CLASS } ttype;

typedef struct crange {
	uint32_t lo, hi;
} crange;

typedef struct tok {
	ttype t;
	size_t off, len; /* T_LIT: bytes in pat.lits */
	crange *ranges;  /* T_CLASS */
	size_t nr;
	bool neg;
} tok;

typedef struct pat {
	char *text; /* the cleaned pattern, without "!" */
	bool exclusion;
	ptype type;
	tok *toks;
	size_t nt, capt;
	char *lits;
	size_t nlits;
} pat;

struct sw_dockerignore {
	pat *p;
	size_t n;
	bool exclusions;
};

/* ---------------------------------------------------------------- Go's path helpers */

static bool is_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static char *trim_dup(const char *s, size_t n)
{
	size_t b = 0;
	while (b < n && is_space(s[b]))
		b++;
	while (n > b && is_space(s[n - 1]))
		n--;
	return sw_xstrndup(s + b, n - b);
}

/* Decode one UTF-8 character; invalid bytes decode as themselves with length 1. */
static uint32_t decode(const char *s, size_t n, size_t *len)
{
	const unsigned char *u = (const unsigned char *)s;
	uint32_t c = u[0];
	size_t l = c < 0x80                ? 1
	           : c >= 0xc2 && c < 0xe0 ? 2
	           : c >= 0xe0 && c < 0xf0 ? 3
	           : c >= 0xf0 && c < 0xf5 ? 4
	                                   : 1;
	if (l > n)
		l = 1;
	for (size_t i = 1; i < l; i++)
		if ((u[i] & 0xc0) != 0x80)
			l = 1;
	if (l == 1) {
		*len = 1;
		return c;
	}
	uint32_t r = c & (0xff >> (l + 1));
	for (size_t i = 1; i < l; i++)
		r = (r << 6) | (u[i] & 0x3f);
	*len = l;
	return r;
}

/* ---------------------------------------------------------------- patterns */

static void pat_clear(pat *p)
{
	free(p->text);
	for (size_t i = 0; i < p->nt; i++)
		free(p->toks[i].ranges);
	free(p->toks);
	free(p->lits);
	memset(p, 0, sizeof(*p));
}

static tok *pat_tok(pat *p, ttype t)
{
	if (p->nt == p->capt) {
		p->capt = p->capt ? p->capt * 2 : 8;
		p->toks = sw_xrealloc(p->toks, p->capt * sizeof(tok));
	}
	tok *k = &p->toks[p->nt++];
	memset(k, 0, sizeof(*k));
	k->t = t;
	return k;
}

static void pat_lit(pat *p, const char *s, size_t n)
{
	if (p->nt > 0 && p->toks[p->nt - 1].t == T_LIT &&
	    p->toks[p->nt - 1].off + p->toks[p->nt - 1].len == p->nlits) {
		p->toks[p->nt - 1].len += n;
	} else {
		tok *k = pat_tok(p, T_LIT);
		k->off = p->nlits;
		k->len = n;
	}
	memcpy(p->lits + p->nlits, s, n);
	p->nlits += n;
}

/* getEsc of Go's filepath.Match: one class character, maybe "\"-escaped. */
static bool class_char(const char *s, size_t n, size_t *i, uint32_t *out)
{
	if (*i >= n || s[*i] == '-' || s[*i] == ']')
		return false;
	if (s[*i] == '\\') {
		(*i)++;
		if (*i >= n)
			return false;
	}
	size_t l;
	uint32_t c = decode(s + *i, n - *i, &l);
	if (l == 1 && (unsigned char)s[*i] >= 0x80)
		return false;
	*i += l;
	if (*i >= n)
		return false;
	*out = c;
	return true;
}

/* A "[...]" class at s[*i] ("[" included) as filepath.Match reads it; false when malformed. */
static bool parse_class(const char *s, size_t n, size_t *i, tok *k)
{
	(*i)++;
	if (*i < n && s[*i] == '^') {
		if (k)
			k->neg = true;
		(*i)++;
	}
	size_t nrange = 0;
	for (;;) {
		if (*i < n && s[*i] == ']' && nrange > 0) {
			(*i)++;
			return true;
		}
		uint32_t lo, hi;
		if (!class_char(s, n, i, &lo))
			return false;
		hi = lo;
		if (s[*i] == '-') {
			(*i)++;
			if (!class_char(s, n, i, &hi))
				return false;
		}
		if (k) {
			k->ranges = sw_xrealloc(k->ranges, (k->nr + 1) * sizeof(crange));
			k->ranges[k->nr++] = (crange){ lo, hi };
		}
		nrange++;
	}
}

/* filepath.Match's ErrBadPattern: unfinished escapes and malformed classes. */
static bool pattern_valid(const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n;) {
		if (s[i] == '\\') {
			if (i + 1 >= n)
				return false;
			i += 2;
		} else if (s[i] == '[') {
			if (!parse_class(s, n, &i, NULL))
				return false;
		} else {
			i++;
		}
	}
	return true;
}

/* patternmatcher's Pattern.compile, into a token program instead of a regexp. */
static void pat_compile(pat *p)
{
	const char *s = p->text;
	size_t n = strlen(s);
	p->lits = sw_xmalloc(n + 1);
	p->type = PT_EXACT;
	for (size_t i = 0, it = 0; i < n; it++) {
		char ch = s[i];
		if (ch == '*') {
			i++;
			if (i < n && s[i] == '*') {
				i++;
				if (i < n && s[i] == '/')
					i++;
				if (i >= n) {
					if (p->type == PT_EXACT) {
						p->type = PT_PREFIX;
					} else {
						pat_tok(p, T_DOTSTAR);
						p->type = PT_REGEX;
					}
				} else {
					pat_tok(p, T_DSTAR);
					p->type = PT_REGEX;
				}
				if (it == 0)
					p->type = PT_SUFFIX;
			} else {
				pat_tok(p, T_STAR);
				p->type = PT_REGEX;
			}
		} else if (ch == '?') {
			pat_tok(p, T_ANY);
			p->type = PT_REGEX;
			i++;
		} else if (ch == '\\') {
			i++;
			if (i < n) {
				size_t l;
				decode(s + i, n - i, &l);
				pat_lit(p, s + i, l);
				i += l;
				p->type = PT_REGEX;
			} else {
				pat_lit(p, "\\", 1);
			}
		} else if (ch == '[') {
			size_t j = i;
			tok *k = pat_tok(p, T_CLASS);
			if (!parse_class(s, n, &j, k)) {
				/* validated before; keep "[" literal if it ever happens */
				free(k->ranges);
				p->nt--;
				pat_lit(p, "[", 1);
				i++;
			} else {
				i = j;
			}
			p->type = PT_REGEX;
		} else if (ch == ']') {
			pat_lit(p, "]", 1);
			p->type = PT_REGEX;
			i++;
		} else {
			size_t l;
			decode(s + i, n - i, &l);
			pat_lit(p, s + i, l);
			i += l;
		}
	}
}

static bool class_match(const tok *k, uint32_t c)
{
	bool in = false;
	for (size_t i = 0; i < k->nr && !in; i++)
		in = c >= k->ranges[i].lo && c <= k->ranges[i].hi;
	return in != k->neg;
}

/* The regexp ^...$ of the pattern against s, by the set of reachable positions. */
static bool regex_match(const pat *p, const char *s, size_t n)
{
	bool *cur = sw_xcalloc(n + 1, 1), *nxt = sw_xcalloc(n + 1, 1);
	cur[0] = true;
	for (size_t t = 0; t < p->nt; t++) {
		const tok *k = &p->toks[t];
		memset(nxt, 0, n + 1);
		bool any = false;
		for (size_t q = 0; q <= n; q++) {
			switch (k->t) {
			case T_LIT:
				if (cur[q] && q + k->len <= n &&
				    memcmp(s + q, p->lits + k->off, k->len) == 0)
					nxt[q + k->len] = true;
				break;
			case T_ANY:
			case T_CLASS:
				if (cur[q] && q < n) {
					size_t l;
					uint32_t c = decode(s + q, n - q, &l);
					if (k->t == T_ANY ? c != '/' : class_match(k, c))
						nxt[q + l] = true;
				}
				break;
			case T_STAR:
				if (cur[q])
					nxt[q] = true;
				if (nxt[q] && q < n && s[q] != '/') {
					size_t l;
					decode(s + q, n - q, &l);
					nxt[q + l] = true;
				}
				break;
			case T_DSTAR: /* (.*\/)? */
				if (cur[q])
					nxt[q] = true;
				if (q > 0 && any && s[q - 1] == '/')
					nxt[q] = true;
				any = any || cur[q];
				break;
			case T_DOTSTAR:
				any = any || cur[q];
				nxt[q] = any;
				break;
			}
		}
		bool *tmp = cur;
		cur = nxt;
		nxt = tmp;
	}
	bool r = cur[n];
	free(cur);
	free(nxt);
	return r;
}

static bool pat_match(const pat *p, const char *path, size_t n)
{
	size_t tl = strlen(p->text);
	switch (p->type) {
	case PT_EXACT:
		return n == tl && memcmp(path, p->text, n) == 0;
	case PT_PREFIX:
		return n >= tl - 2 && memcmp(path, p->text, tl - 2) == 0;
	case PT_SUFFIX: {
		const char *suf = p->text + 2;
		size_t sl = tl - 2;
		if (n >= sl && memcmp(path + n - sl, suf, sl) == 0)
			return true;
		return sl > 0 && suf[0] == '/' && n == sl - 1 && memcmp(path, suf + 1, n) == 0;
	}
	case PT_REGEX:
		return regex_match(p, path, n);
	}
	return false;
}

/* ---------------------------------------------------------------- the set */

static int add_pattern(sw_dockerignore *di, const char *line, const char *filename, int lineno,
                       sw_error **err)
{
	/* patternmatcher.New: trim, clean, "!" */
	cleanup_free char *t = trim_dup(line, strlen(line));
	if (!*t)
		return 0;
	cleanup_free char *c = sw_path_clean(t);
	bool excl = false;
	const char *body = c;
	if (c[0] == '!') {
		if (!c[1])
			return sw_error_set(err, SW_ERR_INVALID,
			                    "%s:%d: illegal exclusion pattern: \"!\"", filename,
			                    lineno);
		excl = true;
		body = c + 1;
	}
	if (!pattern_valid(body))
		return sw_error_set(err, SW_ERR_INVALID, "%s:%d: syntax error in pattern \"%s\"",
		                    filename, lineno, body);
	di->p = sw_xrealloc(di->p, (di->n + 1) * sizeof(pat));
	pat *p = &di->p[di->n++];
	memset(p, 0, sizeof(*p));
	p->text = sw_xstrdup(body);
	p->exclusion = excl;
	di->exclusions = di->exclusions || excl;
	pat_compile(p);
	return 0;
}

int sw_dockerignore_parse(sw_dockerignore **out, const char *buf, size_t len, const char *filename,
                          sw_error **err)
{
	*out = NULL;
	if (!filename)
		filename = ".dockerignore";
	if (!buf)
		len = 0;
	if (len > DI_MAX_SIZE)
		return sw_error_set(err, SW_ERR_INVALID, "%s: %zu bytes, more than the %zu allowed",
		                    filename, len, DI_MAX_SIZE);
	if (len && memchr(buf, '\0', len))
		return sw_error_set(err, SW_ERR_INVALID, "%s: contains a NUL byte", filename);
	sw_dockerignore *di = sw_xcalloc(1, sizeof(*di));
	size_t i = 0;
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	int lineno = 0;
	while (i < len) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t l = nl ? (size_t)(nl - (buf + i)) : len - i;
		const char *s = buf + i;
		i += l + (nl ? 1 : 0);
		lineno++;
		size_t sl = l;
		if (sl > 0 && s[sl - 1] == '\r')
			sl--;
		/* ignorefile.ReadAll: "#" first, then trim, "!", clean, drop a leading "/" */
		if (sl > 0 && s[0] == '#')
			continue;
		cleanup_free char *t = trim_dup(s, sl);
		if (!*t)
			continue;
		bool invert = t[0] == '!';
		cleanup_free char *body = invert ? trim_dup(t + 1, strlen(t + 1)) : sw_xstrdup(t);
		cleanup_free char *pattern = NULL;
		if (*body) {
			cleanup_free char *c = sw_path_clean(body);
			const char *pc = c;
			if (strlen(pc) > 1 && pc[0] == '/')
				pc++;
			pattern = sw_xasprintf("%s%s", invert ? "!" : "", pc);
		} else {
			pattern = sw_xstrdup(invert ? "!" : "");
		}
		if (add_pattern(di, pattern, filename, lineno, err) < 0) {
			sw_dockerignore_free(di);
			return SW_ERR_INVALID;
		}
	}
	*out = di;
	return 0;
}

static bool file_exists(const char *path, sw_error **err, int *rc)
{
	struct stat st;
	*rc = 0;
	if (stat(path, &st) == 0)
		return true;
	if (errno != ENOENT && errno != ENOTDIR)
		*rc = sw_error_os(err, errno, "stat %s", path);
	return false;
}

int sw_dockerignore_load(sw_dockerignore **out, const char *context_dir, const char *dockerfile,
                         sw_error **err)
{
	*out = NULL;
	cleanup_free char *df =
	        dockerfile ? sw_xstrdup(dockerfile) : sw_path_join(context_dir, "Dockerfile");
	cleanup_free char *beside = sw_xasprintf("%s.dockerignore", df);
	cleanup_free char *root = sw_path_join(context_dir, ".dockerignore");
	const char *cands[] = { beside, root };
	for (size_t i = 0; i < SW_ARRAY_SIZE(cands); i++) {
		int rc;
		if (!file_exists(cands[i], err, &rc)) {
			if (rc < 0)
				return rc;
			continue;
		}
		cleanup_free char *buf = NULL;
		size_t len = 0;
		if ((rc = sw_fs_read_file(&buf, &len, cands[i], DI_MAX_SIZE, err)) < 0)
			return rc;
		return sw_dockerignore_parse(out, buf, len, cands[i], err);
	}
	*out = sw_xcalloc(1, sizeof(**out));
	return 0;
}

bool sw_dockerignore_match(const sw_dockerignore *di, const char *path)
{
	if (!di || di->n == 0 || !path)
		return false;
	cleanup_free char *c = sw_path_clean(path);
	const char *file = c;
	while (file[0] == '/' && file[1])
		file++;
	if (strcmp(file, ".") == 0 || strcmp(file, "/") == 0)
		return false;
	size_t fn = strlen(file);
	const char *slash = strrchr(file, '/');
	size_t parent_len = slash ? (size_t)(slash - file) : 0; /* 0: parent is "." */
	bool matched = false;
	for (size_t i = 0; i < di->n; i++) {
		const pat *p = &di->p[i];
		if (p->exclusion != matched)
			continue;
		bool m = pat_match(p, file, fn);
		for (size_t k = 0; !m && k < parent_len; k++)
			if (file[k] == '/')
				m = pat_match(p, file, k);
		if (!m && parent_len > 0)
			m = pat_match(p, file, parent_len);
		if (m)
			matched = !p->exclusion;
	}
	return matched;
}

/* fsutil's containsWildcards. */
static bool has_wildcards(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\') {
			if (!s[1])
				break;
			s++;
		} else if (*s == '*' || *s == '?' || *s == '[') {
			return true;
		}
	}
	return false;
}

bool sw_dockerignore_may_include_under(const sw_dockerignore *di, const char *path)
{
	if (!di || !di->exclusions)
		return false;
	for (size_t i = 0; i < di->n; i++)
		if (di->p[i].exclusion && has_wildcards(di->p[i].text))
			return true;
	cleanup_free char *c = sw_path_clean(path ? path : "");
	const char *dir = c;
	while (dir[0] == '/' && dir[1])
		dir++;
	if (strcmp(dir, ".") == 0 || strcmp(dir, "/") == 0)
		return true;
	cleanup_free char *dir_slash = sw_xasprintf("%s/", dir);
	size_t dl = strlen(dir_slash);
	for (size_t i = 0; i < di->n; i++) {
		if (!di->p[i].exclusion)
			continue;
		cleanup_free char *ps = sw_xasprintf("%s/", di->p[i].text);
		if (strncmp(ps, dir_slash, dl) == 0)
			return true;
	}
	return false;
}

void sw_dockerignore_free(sw_dockerignore *di)
{
	if (!di)
		return;
	for (size_t i = 0; i < di->n; i++)
		pat_clear(&di->p[i]);
	free(di->p);
	free(di);
}
