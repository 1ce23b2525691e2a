/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Docker's word substitution and splitting for the Dockerfile frontend, after BuildKit's
 * frontend/dockerfile/shell/lex.go: $V, ${V}, ${V-w} ${V:-w}, ${V+w} ${V:+w}, ${V?m} ${V:?m},
 * ${V#p} ${V##p} ${V%p} ${V%%p}, ${V/p/r} ${V//p/r}, the special names ($1, $@, ...), quotes
 * (single quotes literal, double quotes substituted, both removed), the file's escape
 * character, and word splitting after substitution where quoted text never splits. Patterns of
 * #, % and / know * and ? (never "\n") and the escapes \* \? \\; % works on the reversed text,
 * as BuildKit does, so shortest/longest matches agree with it. Unset variables expand to "".
 *
 * Which instructions are substituted is the engine's business; Docker substitutes (BuildKit's
 * instructions/commands.go Expand methods and dockerfile2llb/convert.go): FROM (image and
 * --platform, with the global ARGs only), ARG (name and default), ENV and LABEL (every key and
 * value, with the environment from before the instruction), ADD and COPY (sources, destination
 * and their --from, --chown, --chmod and --checksum values; a heredoc body whose delimiter was
 * not quoted goes through sw_df_expand_heredoc), EXPOSE (each argument, then split into words),
 * STOPSIGNAL, USER, VOLUME, WORKDIR, and the values of RUN --mount. Never substituted: RUN, CMD,
 * ENTRYPOINT, SHELL (the shell does it), HEALTHCHECK, MAINTAINER, and ONBUILD, whose trigger is
 * recorded as written and substituted when an image built FROM this one runs it.
 */
#include "builder/dockerfile_internal.h"

#include <stdarg.h>
#include <string.h>

#define LEX_MAX_OUT ((size_t)16 << 20) /* one substituted text */
#define LEX_MAX_DEPTH 100              /* ${a:-${b:-${c...}}} */

/* ---------------------------------------------------------------- small helpers */

typedef struct str {
	char *d;
	size_t len, cap;
} str;

typedef struct lexer {
	const char *s;
	size_t n, pos;
	const sw_df__lex_opts *o;
	bool raw_escapes;
	int depth;
	char *err; /* the first error wins */
} lexer;

static int lx_fail(lexer *lx, const char *fmt, ...) SW_PRINTF(2, 3);
static int lx_fail(lexer *lx, const char *fmt, ...)
{
	if (!lx->err) {
		va_list ap;
		va_start(ap, fmt);
		lx->err = sw_xvasprintf(fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int str_put(lexer *lx, str *s, const char *d, size_t n)
{
	if (n > LEX_MAX_OUT - s->len)
		return lx_fail(lx, "substitution result exceeds %zu bytes", LEX_MAX_OUT);
	if (s->len + n + 1 > s->cap) {
		size_t c = s->cap ? s->cap : 32;
		while (c < s->len + n + 1)
			c *= 2;
		s->d = sw_xrealloc(s->d, c);
		s->cap = c;
	}
	if (n)
		memcpy(s->d + s->len, d, n);
	s->len += n;
	s->d[s->len] = '\0';
	return 0;
}

static int str_puts(lexer *lx, str *s, const char *d)
{
	return str_put(lx, s, d, strlen(d));
}

static void str_free(str *s)
{
	free(s->d);
	s->d = NULL;
	s->len = s->cap = 0;
}

static char *str_steal(str *s)
{
	char *r = s->d ? s->d : sw_xstrdup("");
	s->d = NULL;
	s->len = s->cap = 0;
	return r;
}

static const char *str_c(const str *s)
{
	return s->d ? s->d : "";
}

/* Length of the UTF-8 sequence at s[0..n): 1 for a byte that starts no valid sequence. */
static size_t rune_len(const char *s, size_t n)
{
	unsigned char c = (unsigned char)s[0];
	size_t l = c < 0x80                ? 1
	           : c >= 0xc2 && c < 0xe0 ? 2
	           : c >= 0xe0 && c < 0xf0 ? 3
	           : c >= 0xf0 && c < 0xf5 ? 4
	                                   : 1;
	if (l > n)
		return 1;
	for (size_t i = 1; i < l; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			return 1;
	return l;
}

size_t sw_df__space_len(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	if (n == 0)
		return 0;
	if (u[0] == ' ' || (u[0] >= '\t' && u[0] <= '\r'))
		return 1;
	if (n >= 2 && u[0] == 0xc2 && (u[1] == 0x85 || u[1] == 0xa0))
		return 2;
	if (n >= 3 && u[0] == 0xe1 && u[1] == 0x9a && u[2] == 0x80)
		return 3; /* U+1680 */
	if (n >= 3 && u[0] == 0xe2 && u[1] == 0x80 &&
	    ((u[2] >= 0x80 && u[2] <= 0x8a) || u[2] == 0xa8 || u[2] == 0xa9 || u[2] == 0xaf))
		return 3; /* U+2000..200A, U+2028, U+2029, U+202F */
	if (n >= 3 && u[0] == 0xe2 && u[1] == 0x81 && u[2] == 0x9f)
		return 3; /* U+205F */
	if (n >= 3 && u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x80)
		return 3; /* U+3000 */
	return 0;
}

/* ---------------------------------------------------------------- words */

typedef struct wordv {
	char **v;
	size_t *off;
	size_t n, cap;
	str buf;
	bool in_word;
	size_t start;
} wordv;

static void wv_push(wordv *w)
{
	if (w->n + 2 > w->cap) {
		w->cap = w->cap ? w->cap * 2 : 8;
		w->v = sw_xrealloc(w->v, w->cap * sizeof(*w->v));
		w->off = sw_xrealloc(w->off, w->cap * sizeof(*w->off));
	}
	w->off[w->n] = w->start;
	w->v[w->n++] = str_steal(&w->buf);
	w->v[w->n] = NULL;
}

static void wv_free(wordv *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i]);
	free(w->v);
	free(w->off);
	str_free(&w->buf);
	memset(w, 0, sizeof(*w));
}

/* addRawString: never splits. */
static int wv_raw(lexer *lx, wordv *w, const char *d, size_t n, size_t at)
{
	if (!w)
		return 0;
	if (w->buf.len == 0)
		w->start = at;
	w->in_word = true;
	return str_put(lx, &w->buf, d, n);
}

/* addChar for one character (a UTF-8 sequence): white space ends the word. */
static int wv_char(lexer *lx, wordv *w, const char *d, size_t n, size_t at)
{
	if (!w)
		return 0;
	if (sw_df__space_len(d, n) == n) {
		if (w->in_word && w->buf.len) {
			wv_push(w);
			w->in_word = false;
		}
		return 0;
	}
	return wv_raw(lx, w, d, n, at);
}

/* addString: the result of a substitution splits at white space. */
static int wv_string(lexer *lx, wordv *w, const char *d, size_t n, size_t at)
{
	for (size_t i = 0; w && i < n;) {
		size_t l = rune_len(d + i, n - i);
		if (wv_char(lx, w, d + i, l, at) < 0)
			return -1;
		i += l;
	}
	return 0;
}

/* ---------------------------------------------------------------- patterns of #, % and / */

enum { OP_CHAR, OP_ANY, OP_SPLIT, OP_JMP, OP_MATCH };

typedef struct pinst {
	int op;
	size_t x, y;   /* branch targets */
	size_t lo, ll; /* OP_CHAR: the character's bytes in prog.lits */
} pinst;

typedef struct prog {
	pinst *v;
	size_t n, cap;
	const char *lits;
} prog;

static size_t prog_emit(prog *p, int op, size_t x, size_t y, size_t lo, size_t ll)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->v = sw_xrealloc(p->v, p->cap * sizeof(*p->v));
	}
	p->v[p->n] = (pinst){ op, x, y, lo, ll };
	return p->n++;
}

/*
 * BuildKit's convertShellPatternToRegex: "*" is ".*" (or ".*?" when not greedy), "?" is ".",
 * "\*" "\?" "\\" are literal, "\}" and "\/" are "}" and "/", any other escape is an error.
 */
static int prog_compile(prog *p, lexer *lx, const char *pat, size_t n, bool greedy)
{
	p->lits = pat;
	for (size_t i = 0; i < n;) {
		size_t l = rune_len(pat + i, n - i);
		char c = pat[i];
		if (l == 1 && c == '*') {
			size_t at = p->n;
			if (greedy)
				prog_emit(p, OP_SPLIT, at + 1, at + 3, 0, 0);
			else
				prog_emit(p, OP_SPLIT, at + 3, at + 1, 0, 0);
			prog_emit(p, OP_ANY, 0, 0, 0, 0);
			prog_emit(p, OP_JMP, at, 0, 0, 0);
			i++;
			continue;
		}
		if (l == 1 && c == '?') {
			prog_emit(p, OP_ANY, 0, 0, 0, 0);
			i++;
			continue;
		}
		if (l == 1 && c == '\\') {
			if (i + 1 < n && (pat[i + 1] == '}' || pat[i + 1] == '/')) {
				i++;
				continue;
			}
			i++;
			if (i >= n)
				return lx_fail(
				        lx,
				        "invalid pattern (%.*s) in substitution: invalid escape '\\'",
				        (int)n, pat);
			l = rune_len(pat + i, n - i);
			if (l != 1 || (pat[i] != '*' && pat[i] != '?' && pat[i] != '\\'))
				return lx_fail(
				        lx,
				        "invalid pattern (%.*s) in substitution: invalid escape '\\%.*s'",
				        (int)n, pat, (int)l, pat + i);
		}
		prog_emit(p, OP_CHAR, 0, 0, i, l);
		i += l;
	}
	prog_emit(p, OP_MATCH, 0, 0, 0, 0);
	return 0;
}

typedef struct thr {
	size_t pc, start;
} thr;

typedef struct vm {
	const prog *p;
	thr *cl, *nl;
	size_t nc, nn;
	unsigned *mark;
	unsigned gen;
	size_t *stack;
} vm;

static void vm_add(vm *m, thr *list, size_t *count, size_t pc, size_t start)
{
	size_t sp = 0;
	m->stack[sp++] = pc;
	while (sp) {
		pc = m->stack[--sp];
		if (m->mark[pc] == m->gen)
			continue;
		m->mark[pc] = m->gen;
		const pinst *in = &m->p->v[pc];
		if (in->op == OP_JMP) {
			m->stack[sp++] = in->x;
		} else if (in->op == OP_SPLIT) {
			m->stack[sp++] = in->y;
			m->stack[sp++] = in->x;
		} else {
			list[(*count)++] = (thr){ pc, start };
		}
	}
}

/*
 * Leftmost-first search (as Go's regexp) of the program in s[from..n): a Pike VM that keeps
 * threads in priority order. "." never matches "\n". Returns true with the match in [*ms, *me).
 */
static bool vm_search(const prog *p, const char *s, size_t n, size_t from, bool anchored,
                      size_t *ms, size_t *me)
{
	vm m = { .p = p };
	m.cl = sw_xcalloc(p->n + 1, sizeof(thr));
	m.nl = sw_xcalloc(p->n + 1, sizeof(thr));
	m.mark = sw_xcalloc(p->n + 1, sizeof(unsigned));
	m.stack = sw_xcalloc(2 * p->n + 2, sizeof(size_t));
	bool matched = false;
	size_t pos = from;
	m.gen++;
	vm_add(&m, m.cl, &m.nc, 0, pos);
	for (;;) {
		size_t rl = pos < n ? rune_len(s + pos, n - pos) : 0;
		m.gen++;
		m.nn = 0;
		for (size_t i = 0; i < m.nc; i++) {
			const pinst *in = &p->v[m.cl[i].pc];
			if (in->op == OP_MATCH) {
				matched = true;
				*ms = m.cl[i].start;
				*me = pos;
				break; /* lower-priority threads are cut */
			}
			bool ok = false;
			if (pos < n && in->op == OP_CHAR)
				ok = rl == in->ll && memcmp(s + pos, p->lits + in->lo, rl) == 0;
			else if (pos < n && in->op == OP_ANY)
				ok = !(rl == 1 && s[pos] == '\n');
			if (ok)
				vm_add(&m, m.nl, &m.nn, m.cl[i].pc + 1, m.cl[i].start);
		}
		if (pos >= n)
			break;
		pos += rl;
		if (!matched && !anchored)
			vm_add(&m, m.nl, &m.nn, 0, pos);
		thr *t = m.cl;
		m.cl = m.nl;
		m.nl = t;
		m.nc = m.nn;
		if (m.nc == 0)
			break;
	}
	free(m.cl);
	free(m.nl);
	free(m.mark);
	free(m.stack);
	return matched;
}

/* Rune boundaries of s[0..n): offsets of each character. */
static size_t *runes_of(const char *s, size_t n, size_t *count)
{
	size_t *r = sw_xcalloc(n + 1, sizeof(size_t));
	size_t c = 0;
	for (size_t i = 0; i < n; i += rune_len(s + i, n - i))
		r[c++] = i;
	r[c] = n;
	*count = c;
	return r;
}

static char *reverse_string(const char *s, size_t n)
{
	size_t c;
	size_t *r = runes_of(s, n, &c);
	char *out = sw_xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = c; i-- > 0;) {
		memcpy(out + o, s + r[i], r[i + 1] - r[i]);
		o += r[i + 1] - r[i];
	}
	out[o] = '\0';
	free(r);
	return out;
}

/* BuildKit's reversePattern: reverse by characters, keeping "\x" pairs in order. */
static char *reverse_pattern(const char *s, size_t n)
{
	size_t c;
	size_t *r = runes_of(s, n, &c);
	size_t *order = sw_xcalloc(c + 1, sizeof(size_t));
	for (size_t i = 0; i < c;) {
		size_t out = c - 1 - i;
		if (r[i + 1] - r[i] == 1 && s[r[i]] == '\\' && i != c - 1) {
			order[out - 1] = i;
			order[out] = i + 1;
			i += 2;
		} else {
			order[out] = i;
			i++;
		}
	}
	char *res = sw_xmalloc(n + 1);
	size_t o = 0;
	for (size_t k = 0; k < c; k++) {
		size_t i = order[k];
		memcpy(res + o, s + r[i], r[i + 1] - r[i]);
		o += r[i + 1] - r[i];
	}
	res[o] = '\0';
	free(order);
	free(r);
	return res;
}

/* ${V#p} / ${V##p}: remove the shortest (longest) prefix matching p. */
static int trim_prefix(lexer *lx, str *out, const char *pat, size_t pn, const char *val, size_t vn,
                       bool greedy)
{
	prog p = { 0 };
	if (prog_compile(&p, lx, pat, pn, greedy) < 0) {
		free(p.v);
		return -1;
	}
	size_t ms = 0, me = 0;
	if (vm_search(&p, val, vn, 0, true, &ms, &me)) {
		val += me;
		vn -= me;
	}
	free(p.v);
	return str_put(lx, out, val, vn);
}

/* ${V%p} / ${V%%p}: the same on the reversed pattern and value. */
static int trim_suffix(lexer *lx, str *out, const char *pat, size_t pn, const char *val, size_t vn,
                       bool greedy)
{
	cleanup_free char *rp = reverse_pattern(pat, pn);
	cleanup_free char *rv = reverse_string(val, vn);
	str tmp = { 0 };
	if (trim_prefix(lx, &tmp, rp, strlen(rp), rv, strlen(rv), greedy) < 0) {
		str_free(&tmp);
		return -1;
	}
	cleanup_free char *back = reverse_string(str_c(&tmp), tmp.len);
	str_free(&tmp);
	return str_puts(lx, out, back);
}

/* Go's Regexp.Expand for the replacement of ${V//p/r}: $0 is the match, $$ is "$". */
static int expand_template(lexer *lx, str *out, const char *t, const char *match, size_t mlen)
{
	for (size_t i = 0; t[i];) {
		if (t[i] != '$') {
			if (str_put(lx, out, t + i, 1) < 0)
				return -1;
			i++;
			continue;
		}
		i++;
		if (t[i] == '$') {
			if (str_put(lx, out, "$", 1) < 0)
				return -1;
			i++;
			continue;
		}
		size_t j = i;
		bool brace = t[j] == '{';
		if (brace)
			j++;
		size_t ns = j;
		while (t[j] && (((unsigned char)t[j] >= 0x80) || t[j] == '_' ||
		                (t[j] >= 'a' && t[j] <= 'z') || (t[j] >= 'A' && t[j] <= 'Z') ||
		                (t[j] >= '0' && t[j] <= '9')))
			j++;
		size_t ne = j;
		bool ok = ne > ns && (!brace || t[j] == '}');
		if (!ok) {
			if (str_put(lx, out, "$", 1) < 0)
				return -1;
			continue;
		}
		if (brace)
			j++;
		bool zero = ne - ns == 1 && t[ns] == '0';
		if (zero && str_put(lx, out, match, mlen) < 0)
			return -1;
		i = j;
	}
	return 0;
}

/* ${V/p/r} (first match) and ${V//p/r} (every match), as Go's regexp replacement does. */
static int replace(lexer *lx, str *out, const char *pat, const char *rep, const char *val,
                   size_t vn, bool all)
{
	prog p = { 0 };
	if (prog_compile(&p, lx, pat, strlen(pat), true) < 0) {
		free(p.v);
		return -1;
	}
	size_t ms = 0, me = 0;
	int r = 0;
	if (!all) {
		if (vm_search(&p, val, vn, 0, false, &ms, &me)) {
			r = str_put(lx, out, val, ms);
			if (r == 0)
				r = str_puts(lx, out, rep);
			if (r == 0)
				r = str_put(lx, out, val + me, vn - me);
		} else {
			r = str_put(lx, out, val, vn);
		}
		free(p.v);
		return r;
	}
	size_t last = 0, search = 0;
	while (r == 0 && search <= vn) {
		if (!vm_search(&p, val, vn, search, false, &ms, &me))
			break;
		r = str_put(lx, out, val + last, ms - last);
		if (r == 0 && (me > last || ms == 0))
			r = expand_template(lx, out, rep, val + ms, me - ms);
		last = me;
		size_t width = search < vn ? rune_len(val + search, vn - search) : 0;
		if (search + width > me)
			search += width;
		else if (search + 1 > me)
			search++;
		else
			search = me;
	}
	if (r == 0)
		r = str_put(lx, out, val + last, vn - last);
	free(p.v);
	return r;
}

/* ---------------------------------------------------------------- the lexer */

static int peek(const lexer *lx)
{
	return lx->pos < lx->n ? (unsigned char)lx->s[lx->pos] : -1;
}

static const char *get_env(lexer *lx, const char *name)
{
	if (!lx->o->lookup)
		return NULL;
	return lx->o->lookup(name, lx->o->payload);
}

static bool is_special_param(int c)
{
	return c == '@' || c == '*' || c == '#' || c == '?' || c == '-' || c == '$' || c == '!' ||
	       c == '0';
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* processName: letters, digits and "_"; or a run of digits; or one special parameter. */
static int read_name(lexer *lx, str *name)
{
	while (lx->pos < lx->n) {
		int c = peek(lx);
		if (name->len == 0 && is_digit(c)) {
			while (is_digit(peek(lx))) {
				if (str_put(lx, name, lx->s + lx->pos, 1) < 0)
					return -1;
				lx->pos++;
			}
			return 0;
		}
		if (name->len == 0 && is_special_param(c)) {
			lx->pos++;
			return str_put(lx, name, lx->s + lx->pos - 1, 1);
		}
		size_t l = 1;
		if (c >= 0x80) {
			l = rune_len(lx->s + lx->pos, lx->n - lx->pos);
			if (sw_df__space_len(lx->s + lx->pos, l) == l)
				break;
		} else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
		             c == '_')) {
			break;
		}
		if (str_put(lx, name, lx->s + lx->pos, l) < 0)
			return -1;
		lx->pos += l;
	}
	return 0;
}

static int stop_on(lexer *lx, int stop, bool raw_escapes, str *res, wordv *w);
static int dollar(lexer *lx, str *out);

static int single_quote(lexer *lx, str *out)
{
	lx->pos++;
	if (lx->o->raw_quotes && str_put(lx, out, "'", 1) < 0)
		return -1;
	for (;;) {
		if (lx->pos >= lx->n)
			return lx_fail(lx, "unexpected end of statement while looking for matching "
			                   "single-quote");
		char c = lx->s[lx->pos++];
		if (c == '\'')
			return lx->o->raw_quotes ? str_put(lx, out, "'", 1) : 0;
		if (str_put(lx, out, &c, 1) < 0)
			return -1;
	}
}

static int double_quote(lexer *lx, str *out)
{
	lx->pos++;
	if (lx->o->raw_quotes && str_put(lx, out, "\"", 1) < 0)
		return -1;
	for (;;) {
		int c = peek(lx);
		if (c < 0)
			return lx_fail(lx, "unexpected end of statement while looking for matching "
			                   "double-quote");
		if (c == '"') {
			lx->pos++;
			return lx->o->raw_quotes ? str_put(lx, out, "\"", 1) : 0;
		}
		if (c == '$') {
			str tmp = { 0 };
			int r = dollar(lx, &tmp);
			if (r == 0)
				r = str_put(lx, out, str_c(&tmp), tmp.len);
			str_free(&tmp);
			if (r < 0)
				return -1;
			continue;
		}
		lx->pos++;
		char ch = (char)c;
		if (ch == lx->o->escape) {
			if (lx->raw_escapes && str_put(lx, out, &ch, 1) < 0)
				return -1;
			int nx = peek(lx);
			if (nx < 0)
				continue;
			if (nx == '"' || nx == '$' || nx == (unsigned char)lx->o->escape) {
				ch = (char)nx;
				lx->pos++;
			}
		}
		if (str_put(lx, out, &ch, 1) < 0)
			return -1;
	}
}

/* Read the next character into chs (as text); -1 at the end. */
static int next_char(lexer *lx, str *chs)
{
	if (lx->pos >= lx->n)
		return -1;
	size_t l = rune_len(lx->s + lx->pos, lx->n - lx->pos);
	int c = (unsigned char)lx->s[lx->pos];
	if (str_put(lx, chs, lx->s + lx->pos, l) < 0)
		return -2;
	lx->pos += l;
	return c;
}

/* The part of ${...} after "${": everything up to and including the closing "}". */
static int brace(lexer *lx, str *out)
{
	int c = peek(lx);
	if (c < 0)
		return lx_fail(lx, "syntax error: missing '}'");
	if (c == '{' || c == '}' || c == ':')
		return lx_fail(lx, "syntax error: bad substitution");
	str name = { 0 }, chs = { 0 }, word = { 0 }, pat = { 0 }, rep = { 0 };
	int r = -1;
	if (read_name(lx, &name) < 0)
		goto out;
	c = next_char(lx, &chs);
	if (c == -2)
		goto out;
	if (c < 0) {
		lx_fail(lx, "syntax error: missing '}'");
		goto out;
	}
	bool null_is_unset = false;
	const char *v = NULL;
	switch (c) {
	case '}':
		v = get_env(lx, str_c(&name));
		if (!v && lx->o->skip_unset_env) {
			r = str_puts(lx, out, "${");
			if (r == 0)
				r = str_put(lx, out, str_c(&name), name.len);
			if (r == 0)
				r = str_puts(lx, out, "}");
		} else {
			r = str_puts(lx, out, v ? v : "");
		}
		goto out;
	case ':':
		null_is_unset = true;
		c = next_char(lx, &chs);
		if (c == -2)
			goto out;
		if (c < 0) {
			lx_fail(lx, "syntax error: missing '}'");
			goto out;
		}
		__attribute__((fallthrough));
	case '+':
	case '-':
	case '?':
	case '#':
	case '%': {
		bool raw = c == '#' || c == '%';
		if (null_is_unset && raw) {
			lx_fail(lx, "unsupported modifier (%s) in substitution", str_c(&chs));
			goto out;
		}
		if (stop_on(lx, '}', raw, &word, NULL) < 0) {
			if (lx->pos >= lx->n) {
				free(lx->err);
				lx->err = NULL;
				lx_fail(lx, "syntax error: missing '}'");
			}
			goto out;
		}
		v = get_env(lx, str_c(&name));
		if (!v && lx->o->skip_unset_env) {
			r = str_puts(lx, out, "${");
			if (r == 0)
				r = str_put(lx, out, str_c(&name), name.len);
			if (r == 0)
				r = str_put(lx, out, str_c(&chs), chs.len);
			if (r == 0)
				r = str_put(lx, out, str_c(&word), word.len);
			if (r == 0)
				r = str_puts(lx, out, "}");
			goto out;
		}
		bool empty = !v || (null_is_unset && !*v);
		switch (c) {
		case '-':
			r = empty ? str_put(lx, out, str_c(&word), word.len) : str_puts(lx, out, v);
			break;
		case '+':
			r = empty ? 0 : str_put(lx, out, str_c(&word), word.len);
			break;
		case '?':
			if (!v)
				lx_fail(lx, "%s: %s", str_c(&name),
				        word.len ? str_c(&word) : "is not allowed to be unset");
			else if (null_is_unset && !*v)
				lx_fail(lx, "%s: %s", str_c(&name),
				        word.len ? str_c(&word) : "is not allowed to be empty");
			else
				r = str_puts(lx, out, v);
			break;
		case '#':
		case '%': {
			const char *p = str_c(&word);
			size_t pn = word.len;
			bool greedy = false;
			if (pn > 0 && p[0] == (char)c) {
				greedy = true;
				p++;
				pn--;
			}
			const char *val = v ? v : "";
			if (c == '%')
				r = trim_suffix(lx, out, p, pn, val, strlen(val), greedy);
			else
				r = trim_prefix(lx, out, p, pn, val, strlen(val), greedy);
			break;
		}
		default:
			lx_fail(lx, "unsupported modifier (%s) in substitution", str_c(&chs));
		}
		goto out;
	}
	case '/': {
		bool all = peek(lx) == '/';
		if (all)
			lx->pos++;
		if (stop_on(lx, '/', true, &pat, NULL) < 0) {
			if (lx->pos >= lx->n) {
				free(lx->err);
				lx->err = NULL;
				lx_fail(lx, "syntax error: missing '/' in ${}");
			}
			goto out;
		}
		if (stop_on(lx, '}', true, &rep, NULL) < 0) {
			if (lx->pos >= lx->n) {
				free(lx->err);
				lx->err = NULL;
				lx_fail(lx, "syntax error: missing '}'");
			}
			goto out;
		}
		v = get_env(lx, str_c(&name));
		if (!v && lx->o->skip_unset_env) {
			r = str_puts(lx, out, "${");
			if (r == 0)
				r = str_put(lx, out, str_c(&name), name.len);
			if (r == 0)
				r = str_puts(lx, out, "/");
			if (r == 0)
				r = str_put(lx, out, str_c(&pat), pat.len);
			if (r == 0)
				r = str_puts(lx, out, "/");
			if (r == 0)
				r = str_put(lx, out, str_c(&rep), rep.len);
			if (r == 0)
				r = str_puts(lx, out, "}");
			goto out;
		}
		const char *val = v ? v : "";
		r = replace(lx, out, str_c(&pat), str_c(&rep), val, strlen(val), all);
		goto out;
	}
	default:
		lx_fail(lx, "unsupported modifier (%s) in substitution", str_c(&chs));
	}
out:
	str_free(&name);
	str_free(&chs);
	str_free(&word);
	str_free(&pat);
	str_free(&rep);
	return r < 0 || lx->err ? -1 : 0;
}

static int dollar(lexer *lx, str *out)
{
	lx->pos++;
	if (peek(lx) != '{') {
		str name = { 0 };
		int r = read_name(lx, &name);
		if (r == 0 && name.len == 0) {
			r = str_put(lx, out, "$", 1);
		} else if (r == 0) {
			const char *v = get_env(lx, str_c(&name));
			if (!v && lx->o->skip_unset_env) {
				r = str_put(lx, out, "$", 1);
				if (r == 0)
					r = str_put(lx, out, str_c(&name), name.len);
			} else {
				r = str_puts(lx, out, v ? v : "");
			}
		}
		str_free(&name);
		return r;
	}
	lx->pos++;
	if (lx->depth >= LEX_MAX_DEPTH)
		return lx_fail(lx, "syntax error: substitutions nested too deeply");
	lx->depth++;
	int r = brace(lx, out);
	lx->depth--;
	return r;
}

/* processStopOn: up to `stop` (consumed) or the end of the text when stop < 0. */
static int stop_on(lexer *lx, int stop, bool raw_escapes, str *res, wordv *w)
{
	bool saved = lx->raw_escapes;
	lx->raw_escapes = raw_escapes;
	int r = -1;
	while (lx->pos < lx->n) {
		int c = peek(lx);
		size_t at = lx->pos;
		if (stop >= 0 && c == stop) {
			lx->pos++;
			r = 0;
			goto out;
		}
		if (c == '$' || (!lx->o->skip_process_quotes && (c == '\'' || c == '"'))) {
			str tmp = { 0 };
			int rr = c == '$'    ? dollar(lx, &tmp)
			         : c == '\'' ? single_quote(lx, &tmp)
			                     : double_quote(lx, &tmp);
			if (rr == 0)
				rr = str_put(lx, res, str_c(&tmp), tmp.len);
			if (rr == 0)
				rr = c == '$' ? wv_string(lx, w, str_c(&tmp), tmp.len, at)
				              : wv_raw(lx, w, str_c(&tmp), tmp.len, at);
			str_free(&tmp);
			if (rr < 0)
				goto out;
			continue;
		}
		size_t l = rune_len(lx->s + lx->pos, lx->n - lx->pos);
		const char *ch = lx->s + lx->pos;
		lx->pos += l;
		if (l == 1 && *ch == lx->o->escape) {
			if (lx->raw_escapes &&
			    (wv_raw(lx, w, ch, 1, at) < 0 || str_put(lx, res, ch, 1) < 0))
				goto out;
			if (lx->pos >= lx->n)
				break;
			l = rune_len(lx->s + lx->pos, lx->n - lx->pos);
			ch = lx->s + lx->pos;
			lx->pos += l;
			if (wv_raw(lx, w, ch, l, at) < 0)
				goto out;
		} else if (wv_char(lx, w, ch, l, at) < 0) {
			goto out;
		}
		if (str_put(lx, res, ch, l) < 0)
			goto out;
	}
	if (stop >= 0) {
		lx_fail(lx, "unexpected end of statement while looking for matching %c", stop);
		goto out;
	}
	r = 0;
out:
	lx->raw_escapes = saved;
	return r;
}

int sw_df__lex(sw_df__lex_result *out, const char *text, size_t len, const sw_df__lex_opts *opts)
{
	memset(out, 0, sizeof(*out));
	lexer lx = { .s = text, .n = len, .o = opts, .raw_escapes = opts->raw_escapes };
	str res = { 0 };
	wordv w = { 0 };
	if (stop_on(&lx, -1, opts->raw_escapes, &res, &w) < 0 || lx.err) {
		out->error = lx.err ? lx.err : sw_xstrdup("invalid text");
		str_free(&res);
		wv_free(&w);
		return -1;
	}
	if (w.buf.len > 0)
		wv_push(&w);
	if (!w.v) {
		w.v = sw_xcalloc(1, sizeof(char *));
		w.off = sw_xcalloc(1, sizeof(size_t));
	}
	out->word = str_steal(&res);
	out->words = w.v;
	out->offsets = w.off;
	out->n_words = w.n;
	str_free(&w.buf);
	return 0;
}

void sw_df__lex_result_clear(sw_df__lex_result *r)
{
	if (!r)
		return;
	free(r->word);
	sw_strv_free(r->words);
	free(r->offsets);
	free(r->error);
	memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------------- the public side */

bool sw_df_kind_expands(sw_df_kind kind)
{
	switch (kind) {
	case SW_DF_FROM:
	case SW_DF_ARG:
	case SW_DF_ENV:
	case SW_DF_LABEL:
	case SW_DF_ADD:
	case SW_DF_COPY:
	case SW_DF_EXPOSE:
	case SW_DF_STOPSIGNAL:
	case SW_DF_USER:
	case SW_DF_VOLUME:
	case SW_DF_WORKDIR:
		return true;
	case SW_DF_RUN:
	case SW_DF_CMD:
	case SW_DF_ENTRYPOINT:
	case SW_DF_SHELL:
	case SW_DF_HEALTHCHECK:
	case SW_DF_MAINTAINER:
	case SW_DF_ONBUILD:
		return false;
	}
	return false;
}

static int expand_fail(const sw_dockerfile *df, const sw_df_instruction *ins, const char *text,
                       const char *msg, sw_error **err)
{
	cleanup_free char *q = sw_df__quote(text, strlen(text), 200);
	return sw_error_set(err, SW_ERR_INVALID, "%s:%d:%d: failed to process %s: %s",
	                    df && df->filename ? df->filename : "Dockerfile", ins ? ins->line : 0,
	                    ins ? ins->column : 0, q, msg);
}

int sw_df_expand(char **out, char ***words, const sw_dockerfile *df, const sw_df_instruction *ins,
                 const char *text, sw_df_lookup_cb lookup, void *payload, sw_error **err)
{
	if (out)
		*out = NULL;
	if (words)
		*words = NULL;
	if (!text)
		text = "";
	sw_df__lex_opts o = { .escape = df && df->escape ? df->escape : '\\',
		              .lookup = lookup,
		              .payload = payload };
	sw_df__lex_result r;
	if (sw_df__lex(&r, text, strlen(text), &o) < 0) {
		int rc = expand_fail(df, ins, text, r.error, err);
		sw_df__lex_result_clear(&r);
		return rc;
	}
	if (out)
		*out = steal_pointer(&r.word);
	if (words)
		*words = steal_pointer(&r.words);
	sw_df__lex_result_clear(&r);
	return 0;
}

int sw_df_expand_heredoc(char **out, const sw_dockerfile *df, const sw_df_instruction *ins,
                         const sw_df_heredoc *hd, sw_df_lookup_cb lookup, void *payload,
                         sw_error **err)
{
	*out = NULL;
	const char *text = hd && hd->content ? hd->content : "";
	if (hd && !hd->expand) {
		*out = sw_xstrdup(text);
		return 0;
	}
	/* BuildKit: a lexer with "\" as escape whatever the file's, quotes left alone. */
	sw_df__lex_opts o = {
		.escape = '\\', .skip_process_quotes = true, .lookup = lookup, .payload = payload
	};
	sw_df__lex_result r;
	if (sw_df__lex(&r, text, strlen(text), &o) < 0) {
		int rc = expand_fail(df, ins, text, r.error, err);
		sw_df__lex_result_clear(&r);
		return rc;
	}
	*out = steal_pointer(&r.word);
	sw_df__lex_result_clear(&r);
	return 0;
}
