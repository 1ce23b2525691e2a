/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Dockerfile parser, after BuildKit's frontend/dockerfile/parser and instructions packages:
 * parser directives (escape, syntax, check) at the top only, comments, line continuations with
 * the escape character (comment and empty lines inside a continuation skipped), instructions in
 * any case, builder flags ("--name=value" before the arguments, quotes and "\" honoured), the
 * per-instruction argument forms (JSON exec form, shell form, whitespace-split words, ENV/LABEL
 * key=value pairs with the legacy "ENV k v" form, ARG names), heredocs (RUN/COPY/ADD and ONBUILD
 * of those, several per line, "<<-" strips tabs, a quoted delimiter turns substitution off),
 * ONBUILD triggers parsed as instructions, and every check Docker makes (flags known for the
 * instruction and well formed, argument counts, stage names, HEALTHCHECK options, ARG/FROM
 * order). Every error reads "FILE:LINE:COLUMN: message: "instruction text"", the column on the
 * offending word when there is one; an unknown instruction gets the nearest known one.
 */
#include "builder/dockerfile_internal.h"

#include <stdarg.h>
#include <string.h>
#include <strings.h>

#define DF_MAX_SIZE ((size_t)1 << 20)
#define DF_MAX_LINE 65535 /* bufio.Scanner's limit in BuildKit */
#define DF_MAX_JSON_DEPTH 10000
#define DF_QUOTE_MAX 120

/* ---------------------------------------------------------------- names */

static const char *const kind_names[] = {
	[SW_DF_FROM] = "FROM",
	[SW_DF_RUN] = "RUN",
	[SW_DF_CMD] = "CMD",
	[SW_DF_LABEL] = "LABEL",
	[SW_DF_MAINTAINER] = "MAINTAINER",
	[SW_DF_EXPOSE] = "EXPOSE",
	[SW_DF_ENV] = "ENV",
	[SW_DF_ADD] = "ADD",
	[SW_DF_COPY] = "COPY",
	[SW_DF_ENTRYPOINT] = "ENTRYPOINT",
	[SW_DF_VOLUME] = "VOLUME",
	[SW_DF_USER] = "USER",
	[SW_DF_WORKDIR] = "WORKDIR",
	[SW_DF_ARG] = "ARG",
	[SW_DF_ONBUILD] = "ONBUILD",
	[SW_DF_STOPSIGNAL] = "STOPSIGNAL",
	[SW_DF_HEALTHCHECK] = "HEALTHCHECK",
	[SW_DF_SHELL] = "SHELL",
};

const char *sw_df_kind_name(sw_df_kind kind)
{
	if ((size_t)kind < SW_ARRAY_SIZE(kind_names) && kind_names[kind])
		return kind_names[kind];
	return "UNKNOWN";
}

static int kind_lookup(const char *w, size_t n)
{
	for (size_t k = 0; k < SW_ARRAY_SIZE(kind_names); k++)
		if (strlen(kind_names[k]) == n && strncasecmp(kind_names[k], w, n) == 0)
			return (int)k;
	return -1;
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static size_t levenshtein(const char *a, size_t an, const char *b, size_t bn)
{
	size_t *row = sw_xcalloc(bn + 1, sizeof(size_t));
	for (size_t j = 0; j <= bn; j++)
		row[j] = j;
	for (size_t i = 1; i <= an; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= bn; j++) {
			size_t up = row[j];
			size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
			size_t v = diag + cost;
			if (row[j] + 1 < v)
				v = row[j] + 1;
			if (row[j - 1] + 1 < v)
				v = row[j - 1] + 1;
			row[j] = v;
			diag = up;
		}
	}
	size_t d = row[bn];
	free(row);
	return d;
}

/* BuildKit's suggest.WrapError: the nearest instruction at distance < 3, in the word's case. */
static char *suggest_instruction(const char *w, size_t n)
{
	if (n == 0 || n > 64)
		return NULL;
	size_t best = 3;
	const char *match = NULL;
	for (size_t k = 0; k < SW_ARRAY_SIZE(kind_names); k++) {
		size_t d = levenshtein(w, n, kind_names[k], strlen(kind_names[k]));
		if (d < best) {
			best = d;
			match = kind_names[k];
		}
	}
	if (!match)
		return NULL;
	bool all_lower = true;
	for (size_t i = 0; i < n; i++)
		if (w[i] >= 'A' && w[i] <= 'Z')
			all_lower = false;
	char *s = sw_xstrdup(match);
	bool all_upper = true;
	for (size_t i = 0; i < n; i++)
		if (w[i] >= 'a' && w[i] <= 'z')
			all_upper = false;
	if (!all_upper || all_lower)
		for (char *c = s; *c; c++)
			*c = lower(*c);
	return s;
}

/* ---------------------------------------------------------------- text helpers */

char *sw_df__quote(const char *s, size_t len, size_t max)
{
	size_t cap = (len < max ? len : max) * 4 + 8;
	char *out = sw_xmalloc(cap);
	size_t o = 0;
	out[o++] = '"';
	for (size_t i = 0; i < len; i++) {
		if (i >= max) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c == '\n') {
			memcpy(out + o, "\\n", 2);
			o += 2;
		} else if (c == '\t') {
			memcpy(out + o, "\\t", 2);
			o += 2;
		} else if (c == '\r') {
			memcpy(out + o, "\\r", 2);
			o += 2;
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}

static bool is_tokws(char c) /* BuildKit's [\t\v\f\r ] */
{
	return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_hspace(char c) /* Go's \s in regexps: [\t\n\f\r ] */
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/* strings.TrimSpace bounds (Unicode white space). */
static void trim_span(const char *s, size_t *b, size_t *e)
{
	size_t l;
	while (*b < *e && (l = sw_df__space_len(s + *b, *e - *b)) > 0)
		*b += l;
	while (*e > *b) {
		size_t k = *e - 1;
		while (k > *b && ((unsigned char)s[k] & 0xc0) == 0x80 && *e - k < 3)
			k--;
		l = sw_df__space_len(s + k, *e - k);
		if (l == 0 || k + l != *e)
			break;
		*e = k;
	}
}

/* Length of the strictly valid UTF-8 sequence at s (0 when invalid), as Go's DecodeRune. */
static size_t utf8_valid(const unsigned char *s, size_t n)
{
	if (n == 0)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
#define CONT(x) (((x)&0xc0) == 0x80)
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && CONT(s[1]) ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		if (n < 3 || !CONT(s[1]) || !CONT(s[2]))
			return 0;
		if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))
			return 0;
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		if (n < 4 || !CONT(s[1]) || !CONT(s[2]) || !CONT(s[3]))
			return 0;
		if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
			return 0;
		return 4;
	}
#undef CONT
	return 0;
}

static size_t utf8_put(char *o, unsigned long r)
{
	if (r < 0x80) {
		o[0] = (char)r;
		return 1;
	}
	if (r < 0x800) {
		o[0] = (char)(0xc0 | (r >> 6));
		o[1] = (char)(0x80 | (r & 0x3f));
		return 2;
	}
	if (r < 0x10000) {
		o[0] = (char)(0xe0 | (r >> 12));
		o[1] = (char)(0x80 | ((r >> 6) & 0x3f));
		o[2] = (char)(0x80 | (r & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (r >> 18));
	o[1] = (char)(0x80 | ((r >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((r >> 6) & 0x3f));
	o[3] = (char)(0x80 | (r & 0x3f));
	return 4;
}

/* A growable vector of strings with the offset each came from. */
typedef struct strv {
	char **v;
	size_t *off;
	size_t n, cap;
} strv;

static void strv_add(strv *a, char *s, size_t off)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 8;
		a->v = sw_xrealloc(a->v, a->cap * sizeof(*a->v));
		a->off = sw_xrealloc(a->off, a->cap * sizeof(*a->off));
	}
	a->off[a->n] = off;
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

static void strv_clear(strv *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	free(a->off);
	memset(a, 0, sizeof(*a));
}

/* A growable byte string. */
typedef struct bstr {
	char *d;
	size_t len, cap;
} bstr;

static void bs_put(bstr *b, const char *d, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 32;
		while (c < b->len + n + 1)
			c *= 2;
		b->d = sw_xrealloc(b->d, c);
		b->cap = c;
	}
	if (n)
		memcpy(b->d + b->len, d, n);
	b->len += n;
	b->d[b->len] = '\0';
}

static char *bs_steal(bstr *b)
{
	char *r = b->d ? b->d : sw_xstrdup("");
	memset(b, 0, sizeof(*b));
	return r;
}

/* ---------------------------------------------------------------- the parser state */

typedef struct srcpos {
	int line, col;
} srcpos;

typedef struct pline {
	const char *s;
	size_t len; /* without the "\n" */
	size_t raw; /* with it */
} pline;

typedef struct parser {
	const char *filename;
	pline *lines;
	size_t nlines, cur;
	char escape;
	bool dir_done, seen_escape, seen_syntax, seen_check;
	char *syntax;
	sw_error **err;
	sw_df_instruction *ins;
	size_t nins, capins;
} parser;

/* The text a node is parsed from: s[0..n) with the source position of every byte (map[n] too). */
typedef struct text {
	const char *s;
	const srcpos *map;
	size_t n;
} text;

static int fail_at(parser *p, srcpos at, const char *orig, const char *fmt, ...) SW_PRINTF(4, 5);
static int fail_at(parser *p, srcpos at, const char *orig, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *msg = sw_xvasprintf(fmt, ap);
	va_end(ap);
	if (orig) {
		cleanup_free char *q = sw_df__quote(orig, strlen(orig), DF_QUOTE_MAX);
		return sw_error_set(p->err, SW_ERR_INVALID, "%s:%d:%d: %s: %s", p->filename,
		                    at.line, at.col, msg, q);
	}
	return sw_error_set(p->err, SW_ERR_INVALID, "%s:%d:%d: %s", p->filename, at.line, at.col,
	                    msg);
}

/* ---------------------------------------------------------------- instructions */

static void heredoc_clear(sw_df_heredoc *h)
{
	free(h->name);
	free(h->content);
}

static void instruction_clear(sw_df_instruction *ins)
{
	free(ins->keyword);
	free(ins->original);
	for (size_t i = 0; i < ins->n_flags; i++) {
		free(ins->flags[i].name);
		free(ins->flags[i].value);
	}
	free(ins->flags);
	sw_strv_free(ins->args);
	for (size_t i = 0; i < ins->n_heredocs; i++)
		heredoc_clear(&ins->heredocs[i]);
	free(ins->heredocs);
	if (ins->onbuild) {
		instruction_clear(ins->onbuild);
		free(ins->onbuild);
	}
	memset(ins, 0, sizeof(*ins));
}

void sw_df_free(sw_dockerfile *df)
{
	if (!df)
		return;
	for (size_t i = 0; i < df->n_instructions; i++)
		instruction_clear(&df->instructions[i]);
	free(df->instructions);
	free(df->filename);
	free(df->syntax);
	free(df);
}

/* ---------------------------------------------------------------- JSON exec form */

static void json_ws(const char *s, size_t n, size_t *i)
{
	while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\n' || s[*i] == '\r'))
		(*i)++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool json_str(const char *s, size_t n, size_t *i)
{
	(*i)++;
	while (*i < n) {
		unsigned char c = (unsigned char)s[*i];
		if (c < 0x20)
			return false;
		if (c == '"') {
			(*i)++;
			return true;
		}
		if (c == '\\') {
			if (*i + 1 >= n)
				return false;
			char e = s[*i + 1];
			if (e == 'u') {
				if (*i + 6 > n)
					return false;
				for (size_t k = 2; k < 6; k++)
					if (hexval(s[*i + k]) < 0)
						return false;
				*i += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", e) || e == '\0')
				return false;
			*i += 2;
			continue;
		}
		(*i)++;
	}
	return false;
}

static bool json_num(const char *s, size_t n, size_t *i)
{
	if (*i < n && s[*i] == '-')
		(*i)++;
	if (*i >= n)
		return false;
	if (s[*i] == '0') {
		(*i)++;
	} else if (s[*i] >= '1' && s[*i] <= '9') {
		while (*i < n && s[*i] >= '0' && s[*i] <= '9')
			(*i)++;
	} else {
		return false;
	}
	if (*i < n && s[*i] == '.') {
		(*i)++;
		if (*i >= n || s[*i] < '0' || s[*i] > '9')
			return false;
		while (*i < n && s[*i] >= '0' && s[*i] <= '9')
			(*i)++;
	}
	if (*i < n && (s[*i] == 'e' || s[*i] == 'E')) {
		(*i)++;
		if (*i < n && (s[*i] == '+' || s[*i] == '-'))
			(*i)++;
		if (*i >= n || s[*i] < '0' || s[*i] > '9')
			return false;
		while (*i < n && s[*i] >= '0' && s[*i] <= '9')
			(*i)++;
	}
	return true;
}

/* One JSON value at s[*i] (leading white space allowed), iteratively; Go's depth limit. */
static bool json_val(const char *s, size_t n, size_t *i)
{
	char *stack = sw_xmalloc(DF_MAX_JSON_DEPTH + 1);
	size_t depth = 0;
	bool ok = false;
value:
	json_ws(s, n, i);
	if (*i >= n)
		goto out;
	switch (s[*i]) {
	case '{':
	case '[':
		if (depth >= DF_MAX_JSON_DEPTH)
			goto out;
		stack[depth++] = s[*i];
		(*i)++;
		json_ws(s, n, i);
		if (*i < n && s[*i] == (stack[depth - 1] == '[' ? ']' : '}')) {
			(*i)++;
			depth--;
			goto after;
		}
		if (stack[depth - 1] == '[')
			goto value;
		goto key;
	case '"':
		if (!json_str(s, n, i))
			goto out;
		goto after;
	case 't':
	case 'f':
	case 'n': {
		const char *lit = s[*i] == 't' ? "true" : s[*i] == 'f' ? "false" : "null";
		size_t l = strlen(lit);
		if (*i + l > n || memcmp(s + *i, lit, l) != 0)
			goto out;
		*i += l;
		goto after;
	}
	default:
		if (!json_num(s, n, i))
			goto out;
		goto after;
	}
key:
	json_ws(s, n, i);
	if (*i >= n || s[*i] != '"' || !json_str(s, n, i))
		goto out;
	json_ws(s, n, i);
	if (*i >= n || s[*i] != ':')
		goto out;
	(*i)++;
	goto value;
after:
	if (depth == 0) {
		ok = true;
		goto out;
	}
	json_ws(s, n, i);
	if (*i >= n)
		goto out;
	if (s[*i] == ',') {
		(*i)++;
		if (stack[depth - 1] == '{')
			goto key;
		goto value;
	}
	if (s[*i] == (stack[depth - 1] == '[' ? ']' : '}')) {
		(*i)++;
		depth--;
		goto after;
	}
out:
	free(stack);
	return ok;
}

static unsigned long json_u4(const char *s, size_t n, size_t i)
{
	if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u')
		return (unsigned long)-1;
	unsigned long v = 0;
	for (size_t k = 2; k < 6; k++) {
		int h = hexval(s[i + k]);
		if (h < 0)
			return (unsigned long)-1;
		v = v * 16 + (unsigned long)h;
	}
	return v;
}

/* Decode a valid JSON string at s[*i] as Go does (bad UTF-8 and lone surrogates as U+FFFD). */
static char *json_decode_string(const char *s, size_t n, size_t *i, bool *has_nul)
{
	bstr b = { 0 };
	(*i)++;
	for (;;) {
		unsigned char c = (unsigned char)s[*i];
		if (c == '"') {
			(*i)++;
			break;
		}
		if (c == '\\') {
			char e = s[*i + 1];
			char out[8];
			if (e == 'u') {
				unsigned long r = json_u4(s, n, *i);
				*i += 6;
				if (r >= 0xd800 && r < 0xe000) {
					unsigned long r2 = json_u4(s, n, *i);
					if (r < 0xdc00 && r2 != (unsigned long)-1 && r2 >= 0xdc00 &&
					    r2 < 0xe000) {
						r = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
						*i += 6;
					} else {
						r = 0xfffd;
					}
				}
				if (r == 0)
					*has_nul = true;
				bs_put(&b, out, utf8_put(out, r));
				continue;
			}
			char m = e == 'b'   ? '\b'
			         : e == 'f' ? '\f'
			         : e == 'n' ? '\n'
			         : e == 'r' ? '\r'
			         : e == 't' ? '\t'
			                    : e;
			bs_put(&b, &m, 1);
			*i += 2;
			continue;
		}
		size_t l = utf8_valid((const unsigned char *)s + *i, n - *i);
		if (l == 0) {
			bs_put(&b, "\xef\xbf\xbd", 3);
			(*i)++;
		} else {
			bs_put(&b, s + *i, l);
			*i += l;
		}
	}
	return bs_steal(&b);
}

enum { JSON_NOT = 0, JSON_OK = 1, JSON_NOT_STRINGS = -1, JSON_NUL = -2 };

/*
 * BuildKit's parseJSON: text starting with "[" that is a whole valid JSON array. JSON_OK with
 * the strings, JSON_NOT_STRINGS when an element is not a string, JSON_NOT when it is no JSON
 * at all (the instruction then takes the shell form).
 */
static int parse_json_array(strv *out, const char *s, size_t n, size_t base)
{
	size_t i = 0;
	if (n == 0 || s[0] != '[')
		return JSON_NOT;
	if (!json_val(s, n, &i))
		return JSON_NOT;
	json_ws(s, n, &i);
	if (i != n)
		return JSON_NOT;
	i = 1;
	bool non_string = false, nul = false;
	json_ws(s, n, &i);
	if (s[i] == ']')
		return JSON_OK;
	for (;;) {
		json_ws(s, n, &i);
		if (s[i] == '"') {
			size_t at = i;
			strv_add(out, json_decode_string(s, n, &i, &nul), base + at);
		} else {
			non_string = true;
			json_val(s, n, &i);
		}
		json_ws(s, n, &i);
		if (s[i] == ']')
			break;
		i++; /* "," */
	}
	if (non_string)
		return JSON_NOT_STRINGS;
	return nul ? JSON_NUL : JSON_OK;
}

/* ---------------------------------------------------------------- word forms */

/* regexp [\t\v\f\r ]+ split of s[b..e) (already trimmed). */
static void split_ws(strv *out, const char *s, size_t b, size_t e)
{
	size_t i = b;
	while (i < e) {
		while (i < e && is_tokws(s[i]))
			i++;
		if (i >= e)
			break;
		size_t w = i;
		while (i < e && !is_tokws(s[i]))
			i++;
		strv_add(out, sw_xstrndup(s + w, i - w), w);
	}
}

/* BuildKit's parseWords: white-space separated words, quotes and escapes kept as written. */
static void parse_words(strv *out, const char *s, size_t b, size_t e, char esc)
{
	enum { SPACES, WORD, QUOTE } phase = SPACES;
	bstr w = { 0 };
	bool blank_ok = false;
	char quote = 0;
	size_t start = b;
	size_t cl = 0;
	for (size_t pos = b; pos <= e; pos += cl) {
		bool end = pos == e;
		size_t sp = 0;
		cl = 1;
		if (!end) {
			size_t l = utf8_valid((const unsigned char *)s + pos, e - pos);
			cl = l ? l : 1;
			sp = sw_df__space_len(s + pos, cl) == cl ? cl : 0;
		}
		char ch = end ? 0 : s[pos];
		if (phase == SPACES) {
			if (end)
				break;
			if (sp)
				continue;
			phase = WORD;
			start = pos;
		}
		if ((phase == WORD || phase == QUOTE) && end) {
			if (blank_ok || w.len > 0)
				strv_add(out, bs_steal(&w), start);
			break;
		}
		if (phase == WORD) {
			if (sp) {
				phase = SPACES;
				if (blank_ok || w.len > 0)
					strv_add(out, bs_steal(&w), start);
				free(w.d);
				memset(&w, 0, sizeof(w));
				blank_ok = false;
				continue;
			}
			if (cl == 1 && (ch == '\'' || ch == '"')) {
				quote = ch;
				blank_ok = true;
				phase = QUOTE;
			}
			if (cl == 1 && ch == esc) {
				if (pos + cl == e)
					continue;
				bs_put(&w, s + pos, 1);
				pos += cl;
				size_t l = utf8_valid((const unsigned char *)s + pos, e - pos);
				cl = l ? l : 1;
			}
			bs_put(&w, s + pos, cl);
			continue;
		}
		/* QUOTE */
		if (cl == 1 && ch == quote)
			phase = WORD;
		if (cl == 1 && ch == esc && quote != '\'') {
			if (pos + cl == e) {
				phase = WORD;
				continue;
			}
			pos += cl;
			bs_put(&w, &esc, 1);
			size_t l = utf8_valid((const unsigned char *)s + pos, e - pos);
			cl = l ? l : 1;
		}
		bs_put(&w, s + pos, cl);
	}
	free(w.d);
}

/* ---------------------------------------------------------------- heredoc words */

/*
 * BuildKit's ParseHeredoc on one word: [digits]<<[-]NAME where NAME holds no "<" and lexes to a
 * single word; the body is substituted unless part of NAME was quoted. Returns 1 with *out
 * filled (name, expand, strip_tabs), 0 when the word is no heredoc, -1 with *errmsg.
 */
static int heredoc_word(sw_df_heredoc *out, const char *w, char **errmsg)
{
	size_t i = 0;
	while (w[i] >= '0' && w[i] <= '9')
		i++;
	if (w[i] != '<' || w[i + 1] != '<')
		return 0;
	i += 2;
	bool chomp = w[i] == '-';
	if (chomp)
		i++;
	const char *rest = w + i;
	if (!*rest || strchr(rest, '<'))
		return 0;
	sw_df__lex_opts o = { .escape = '\\', .skip_unset_env = true };
	sw_df__lex_result a, r;
	if (sw_df__lex(&a, rest, strlen(rest), &o) < 0) {
		*errmsg = steal_pointer(&a.error);
		sw_df__lex_result_clear(&a);
		return -1;
	}
	if (a.n_words != 1) {
		sw_df__lex_result_clear(&a);
		return 0;
	}
	o.raw_quotes = true;
	if (sw_df__lex(&r, rest, strlen(rest), &o) < 0) {
		*errmsg = steal_pointer(&r.error);
		sw_df__lex_result_clear(&a);
		sw_df__lex_result_clear(&r);
		return -1;
	}
	int rc = 1;
	if (r.n_words != a.n_words) {
		*errmsg = sw_xasprintf(
		        "internal lexing of heredoc produced inconsistent results: %s", rest);
		rc = -1;
	} else {
		size_t q1 = 0, q2 = 0;
		for (const char *c = a.words[0]; *c; c++)
			q1 += *c == '\'' || *c == '"';
		for (const char *c = r.words[0]; *c; c++)
			q2 += *c == '\'' || *c == '"';
		memset(out, 0, sizeof(*out));
		out->name = sw_xstrdup(a.words[0]);
		out->expand = q1 == q2;
		out->strip_tabs = chomp;
	}
	sw_df__lex_result_clear(&a);
	sw_df__lex_result_clear(&r);
	return rc;
}

const sw_df_heredoc *sw_df_heredoc_for_arg(const sw_df_instruction *ins, const char *arg)
{
	if (!ins || !arg)
		return NULL;
	sw_df_heredoc h;
	cleanup_free char *msg = NULL;
	if (heredoc_word(&h, arg, &msg) != 1)
		return NULL;
	const sw_df_heredoc *found = NULL;
	for (size_t i = 0; i < ins->n_heredocs && !found; i++)
		if (strcmp(ins->heredocs[i].name, h.name) == 0)
			found = &ins->heredocs[i];
	heredoc_clear(&h);
	return found;
}

/* ---------------------------------------------------------------- flags */

typedef enum { FL_BOOL, FL_STRING, FL_STRINGS } fltype;

typedef struct flagdef {
	const char *name;
	fltype type;
} flagdef;

static const flagdef no_flags[] = { { NULL, 0 } };
static const flagdef from_flags[] = { { "platform", FL_STRING }, { NULL, 0 } };
static const flagdef run_flags[] = {
	{ "mount", FL_STRINGS }, { "network", FL_STRING }, { "security", FL_STRING }, { NULL, 0 }
};
static const flagdef copy_flags[] = { { "from", FL_STRING },  { "chown", FL_STRING },
	                              { "chmod", FL_STRING }, { "link", FL_BOOL },
	                              { "parents", FL_BOOL }, { NULL, 0 } };
static const flagdef add_flags[] = { { "chown", FL_STRING },      { "chmod", FL_STRING },
	                             { "checksum", FL_STRING },   { "link", FL_BOOL },
	                             { "keep-git-dir", FL_BOOL }, { NULL, 0 } };
static const flagdef health_flags[] = {
	{ "interval", FL_STRING },       { "timeout", FL_STRING }, { "start-period", FL_STRING },
	{ "start-interval", FL_STRING }, { "retries", FL_STRING }, { NULL, 0 }
};

/* BuildKit's extractBuilderFlags: leading "--" words (quotes and "\" processed); "--" ends. */
static size_t extract_flags(strv *flags, const char *s, size_t b, size_t e)
{
	enum { SPACES, WORD, QUOTE } phase = SPACES;
	bstr w = { 0 };
	bool blank_ok = false;
	char quote = 0;
	size_t start = b;
	for (size_t pos = b; pos <= e; pos++) {
		bool end = pos == e;
		char ch = end ? 0 : s[pos];
		bool sp = !end && (ch == ' ' || (ch >= '\t' && ch <= '\r'));
		if (phase == SPACES) {
			if (end)
				break;
			if (sp)
				continue;
			if (ch != '-' || pos + 1 == e || s[pos + 1] != '-') {
				free(w.d);
				return pos;
			}
			phase = WORD;
			start = pos;
		}
		if ((phase == WORD || phase == QUOTE) && end) {
			bool dashdash = w.len == 2 && memcmp(w.d, "--", 2) == 0;
			if (!dashdash && (blank_ok || w.len > 0))
				strv_add(flags, bs_steal(&w), start);
			break;
		}
		if (phase == WORD) {
			if (sp) {
				phase = SPACES;
				if (w.len == 2 && memcmp(w.d, "--", 2) == 0) {
					free(w.d);
					return pos;
				}
				if (blank_ok || w.len > 0)
					strv_add(flags, bs_steal(&w), start);
				free(w.d);
				memset(&w, 0, sizeof(w));
				blank_ok = false;
				continue;
			}
			if (ch == '\'' || ch == '"') {
				quote = ch;
				blank_ok = true;
				phase = QUOTE;
				continue;
			}
			if (ch == '\\') {
				if (pos + 1 == e)
					continue;
				pos++;
				ch = s[pos];
			}
			bs_put(&w, &ch, 1);
			continue;
		}
		if (ch == quote) {
			phase = WORD;
			continue;
		}
		if (ch == '\\') {
			if (pos + 1 == e) {
				phase = WORD;
				continue;
			}
			pos++;
			ch = s[pos];
		}
		bs_put(&w, &ch, 1);
	}
	free(w.d);
	return e;
}

/* ---------------------------------------------------------------- value checks */

/* Go's time.ParseDuration, in nanoseconds. */
static bool parse_duration(const char *s, double *out, char **why)
{
	const char *orig = s;
	double total = 0;
	bool neg = false;
	if (*s == '-' || *s == '+') {
		neg = *s == '-';
		s++;
	}
	if (strcmp(s, "0") == 0) {
		*out = 0;
		return true;
	}
	if (!*s)
		goto invalid;
	while (*s) {
		if (!(*s == '.' || (*s >= '0' && *s <= '9')))
			goto invalid;
		double v = 0, scale = 1;
		bool digits = false, dot = false;
		while (*s == '.' || (*s >= '0' && *s <= '9')) {
			if (*s == '.') {
				if (dot)
					break;
				dot = true;
			} else {
				digits = true;
				if (dot) {
					scale /= 10;
					v += (*s - '0') * scale;
				} else {
					v = v * 10 + (*s - '0');
				}
			}
			s++;
		}
		if (!digits)
			goto invalid;
		const char *u = s;
		while (*s && *s != '.' && !(*s >= '0' && *s <= '9'))
			s++;
		size_t ul = (size_t)(s - u);
		if (ul == 0) {
			*why = sw_xasprintf("time: missing unit in duration \"%s\"", orig);
			return false;
		}
		double mult;
		if (ul == 2 && memcmp(u, "ns", 2) == 0)
			mult = 1;
		else if ((ul == 2 && memcmp(u, "us", 2) == 0) ||
		         (ul == 3 && memcmp(u, "\xc2\xb5s", 3) == 0) ||
		         (ul == 3 && memcmp(u, "\xce\xbcs", 3) == 0))
			mult = 1e3;
		else if (ul == 2 && memcmp(u, "ms", 2) == 0)
			mult = 1e6;
		else if (ul == 1 && *u == 's')
			mult = 1e9;
		else if (ul == 1 && *u == 'm')
			mult = 60e9;
		else if (ul == 1 && *u == 'h')
			mult = 3600e9;
		else {
			*why = sw_xasprintf("time: unknown unit \"%.*s\" in duration \"%s\"",
			                    (int)ul, u, orig);
			return false;
		}
		total += v * mult;
		if (total > 9.223372036854775807e18)
			goto invalid;
	}
	*out = neg ? -total : total;
	return true;
invalid:
	*why = sw_xasprintf("time: invalid duration \"%s\"", orig);
	return false;
}

/* Go's encoding/csv for one record, as BuildKit reads --mount. */
static bool csv_fields(strv *out, const char *s, char **why)
{
	size_t n = strlen(s);
	if (n == 0) {
		*why = sw_xstrdup("EOF");
		return false;
	}
	size_t i = 0;
	for (;;) {
		bstr f = { 0 };
		if (i < n && s[i] == '"') {
			i++;
			for (;;) {
				if (i >= n) {
					free(f.d);
					*why = sw_xasprintf(
					        "parse error on line 1, column %zu: extraneous or "
					        "missing \" in quoted-field",
					        n + 1);
					return false;
				}
				if (s[i] == '"') {
					if (i + 1 < n && s[i + 1] == '"') {
						bs_put(&f, "\"", 1);
						i += 2;
						continue;
					}
					i++;
					break;
				}
				bs_put(&f, s + i, 1);
				i++;
			}
			if (i < n && s[i] != ',') {
				free(f.d);
				*why = sw_xasprintf(
				        "parse error on line 1, column %zu: extraneous or "
				        "missing \" in quoted-field",
				        i + 1);
				return false;
			}
		} else {
			size_t b = i;
			while (i < n && s[i] != ',')
				i++;
			const char *q = memchr(s + b, '"', i - b);
			if (q) {
				free(f.d);
				*why = sw_xasprintf("parse error on line 1, column %zu: bare \" in "
				                    "non-quoted-field",
				                    (size_t)(q - s) + 1);
				return false;
			}
			bs_put(&f, s + b, i - b);
		}
		strv_add(out, bs_steal(&f), 0);
		if (i >= n)
			break;
		i++; /* "," */
		if (i >= n) {
			strv_add(out, sw_xstrdup(""), 0);
			break;
		}
	}
	return true;
}

/* The checks BuildKit makes on RUN --mount before substitution (the rest comes later). */
static bool check_mount(const char *value, char **why)
{
	strv fields = { 0 };
	cleanup_free char *cerr = NULL;
	bool ok = true;
	if (!csv_fields(&fields, value, &cerr)) {
		*why = sw_xasprintf("failed to parse csv mounts: %s", cerr);
		strv_clear(&fields);
		return false;
	}
	static const char *const types[] = { "bind", "cache", "tmpfs", "secret", "ssh" };
	for (size_t i = 0; ok && i < fields.n; i++) {
		const char *f = fields.v[i];
		const char *eq = strchr(f, '=');
		if (!eq) {
			static const char *const bare[] = { "readonly", "ro", "readwrite", "rw",
				                            "required" };
			bool known = false;
			for (size_t k = 0; k < SW_ARRAY_SIZE(bare); k++)
				known = known || strcasecmp(f, bare[k]) == 0;
			if (!known) {
				*why = sw_xasprintf("invalid field '%s' must be a key=value pair",
				                    f);
				ok = false;
			}
			continue;
		}
		size_t kl = (size_t)(eq - f);
		const char *v = eq + 1;
		if (kl == 4 && strncasecmp(f, "from", 4) == 0) {
			for (const char *d = strchr(v, '$'); d; d = strchr(d + 1, '$'))
				if (d[1]) {
					*why = sw_xstrdup(
					        "'from' doesn't support variable expansion, "
					        "define alias stage instead");
					ok = false;
					break;
				}
		} else if (kl == 4 && strncasecmp(f, "type", 4) == 0 && !strchr(v, '$')) {
			bool known = false;
			for (size_t k = 0; k < SW_ARRAY_SIZE(types); k++)
				known = known || strcasecmp(v, types[k]) == 0;
			if (!known) {
				*why = sw_xasprintf("unsupported mount type \"%s\"", v);
				ok = false;
			}
		}
	}
	strv_clear(&fields);
	return ok;
}

/* ---------------------------------------------------------------- one instruction */

/* What parse_node learns besides the instruction itself, for the checks and the heredocs. */
typedef struct node {
	size_t b, e;        /* the instruction, trimmed */
	size_t kw_e;        /* end of the keyword */
	size_t a_b, a_e;    /* the arguments after the flags */
	strv flags;         /* "--name=value" words */
	size_t *arg_off;    /* where each argument started */
	size_t trigger_off; /* ONBUILD: where the trigger starts */
	int trigger_kind;   /* ONBUILD: the trigger's kind, -1 when unknown */
	struct node *trigger;
} node;

static void node_clear(node *nd)
{
	if (!nd)
		return;
	strv_clear(&nd->flags);
	free(nd->arg_off);
	if (nd->trigger) {
		node_clear(nd->trigger);
		free(nd->trigger);
	}
	memset(nd, 0, sizeof(*nd));
}

static void set_args(sw_df_instruction *ins, node *nd, strv *a)
{
	if (!a->v) {
		a->v = sw_xcalloc(1, sizeof(char *));
		a->off = sw_xcalloc(1, sizeof(size_t));
	}
	ins->args = a->v;
	nd->arg_off = a->off;
	memset(a, 0, sizeof(*a));
}

static size_t n_args(const sw_df_instruction *ins)
{
	return sw_strv_len(ins->args);
}

static srcpos arg_pos(const text *t, const node *nd, size_t i)
{
	return t->map[nd->arg_off[i]];
}

/* BFlags.Parse with the flags this instruction knows. */
static int check_flags(parser *p, const text *t, sw_df_instruction *ins, node *nd,
                       const flagdef *defs)
{
	ins->flags = sw_xcalloc(nd->flags.n + 1, sizeof(sw_df_flag));
	for (size_t i = 0; i < nd->flags.n; i++) {
		const char *w = nd->flags.v[i];
		srcpos at = t->map[nd->flags.off[i]];
		const char *body = w + 2;
		const char *eq = strchr(body, '=');
		size_t nl = eq ? (size_t)(eq - body) : strlen(body);
		const flagdef *d = NULL;
		for (const flagdef *k = defs; k->name && !d; k++)
			if (strlen(k->name) == nl && memcmp(k->name, body, nl) == 0)
				d = k;
		if (!d)
			return fail_at(p, at, ins->original, "unknown flag: --%.*s", (int)nl, body);
		for (size_t j = 0; j < ins->n_flags && d->type != FL_STRINGS; j++)
			if (strcmp(ins->flags[j].name, d->name) == 0)
				return fail_at(p, at, ins->original,
				               "duplicate flag specified: --%s", d->name);
		char *value = NULL;
		if (d->type == FL_BOOL) {
			if (eq && !eq[1])
				return fail_at(p, at, ins->original,
				               "missing a value on flag: --%s", d->name);
			if (eq) {
				if (strcasecmp(eq + 1, "true") && strcasecmp(eq + 1, "false"))
					return fail_at(
					        p, at, ins->original,
					        "expecting boolean value for flag --%s, not: %s",
					        d->name, eq + 1);
				value = sw_xstrdup(strcasecmp(eq + 1, "true") == 0 ? "true"
				                                                   : "false");
			}
		} else {
			if (!eq)
				return fail_at(p, at, ins->original,
				               "missing a value on flag: --%s", d->name);
			value = sw_xstrdup(eq + 1);
		}
		sw_df_flag *f = &ins->flags[ins->n_flags++];
		f->name = sw_xstrdup(d->name);
		f->value = value;
		f->line = at.line;
		f->column = at.col;
	}
	return 0;
}

static int need_args(parser *p, const sw_df_instruction *ins, size_t min, const char *what)
{
	if (n_args(ins) >= min)
		return 0;
	srcpos at = { ins->line, ins->column };
	return fail_at(p, at, ins->original, "%s requires %s", sw_df_kind_name(ins->kind), what);
}

/* The checks of BuildKit's instructions package for one parsed instruction. */
static int check_instruction(parser *p, const text *t, sw_df_instruction *ins, node *nd)
{
	const char *name = sw_df_kind_name(ins->kind);
	size_t na = n_args(ins);
	srcpos kw = { ins->line, ins->column };
	int rc;
	switch (ins->kind) {
	case SW_DF_FROM: {
		if (!(na == 1 || (na == 3 && strcasecmp(ins->args[1], "as") == 0)))
			return fail_at(p, na > 1 ? arg_pos(t, nd, 1) : kw, ins->original,
			               "FROM requires either one or three arguments");
		if (na == 3) {
			const char *sn = ins->args[2];
			bool ok = lower(sn[0]) >= 'a' && lower(sn[0]) <= 'z';
			for (const char *c = sn + 1; ok && *c; c++)
				ok = (lower(*c) >= 'a' && lower(*c) <= 'z') ||
				     (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' ||
				     *c == '.';
			if (!ok) {
				cleanup_free char *q = sw_df__quote(sn, strlen(sn), DF_QUOTE_MAX);
				return fail_at(
				        p, arg_pos(t, nd, 2), ins->original,
				        "invalid name for build stage: %s, name can't start with a "
				        "number or contain symbols",
				        q);
			}
		}
		return check_flags(p, t, ins, nd, from_flags);
	}
	case SW_DF_RUN: {
		if ((rc = check_flags(p, t, ins, nd, run_flags)) < 0)
			return rc;
		for (size_t i = 0; i < ins->n_flags; i++) {
			sw_df_flag *f = &ins->flags[i];
			srcpos at = { f->line, f->column };
			cleanup_free char *why = NULL;
			if (strcmp(f->name, "mount") == 0 && !check_mount(f->value, &why))
				return fail_at(p, at, ins->original, "%s", why);
			if (strcmp(f->name, "network") == 0 && strcmp(f->value, "none") &&
			    strcmp(f->value, "default") && strcmp(f->value, "host"))
				return fail_at(p, at, ins->original,
				               "unsupported network mode \"%s\"", f->value);
			if (strcmp(f->name, "security") == 0 && strcmp(f->value, "sandbox") &&
			    strcmp(f->value, "insecure"))
				return fail_at(p, at, ins->original,
				               "unsupported security mode \"%s\"", f->value);
		}
		return need_args(p, ins, 1, "at least one argument");
	}
	case SW_DF_CMD:
	case SW_DF_ENTRYPOINT:
		return check_flags(p, t, ins, nd, no_flags);
	case SW_DF_SHELL:
		if ((rc = check_flags(p, t, ins, nd, no_flags)) < 0)
			return rc;
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		if (!ins->json_form)
			return fail_at(p, t->map[nd->a_b], ins->original,
			               "SHELL requires the arguments to be in JSON form");
		return 0;
	case SW_DF_ENV:
	case SW_DF_LABEL:
		if ((rc = check_flags(p, t, ins, nd, no_flags)) < 0)
			return rc;
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		for (size_t i = 0; i < na; i++)
			if (ins->args[i][0] == '=')
				return fail_at(p, arg_pos(t, nd, i), ins->original,
				               "%s names can not be blank", name);
		return 0;
	case SW_DF_ARG:
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		for (size_t i = 0; i < na; i++)
			if (ins->args[i][0] == '=')
				return fail_at(p, arg_pos(t, nd, i), ins->original,
				               "ARG names can not be blank");
		return check_flags(p, t, ins, nd, no_flags);
	case SW_DF_MAINTAINER:
	case SW_DF_USER:
	case SW_DF_WORKDIR:
	case SW_DF_STOPSIGNAL:
		if (na != 1)
			return fail_at(p, kw, ins->original, "%s requires exactly one argument",
			               name);
		return check_flags(p, t, ins, nd, no_flags);
	case SW_DF_EXPOSE:
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		return check_flags(p, t, ins, nd, no_flags);
	case SW_DF_VOLUME:
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		if ((rc = check_flags(p, t, ins, nd, no_flags)) < 0)
			return rc;
		for (size_t i = 0; i < na; i++) {
			size_t b = 0, e = strlen(ins->args[i]);
			trim_span(ins->args[i], &b, &e);
			if (b == e)
				return fail_at(p, arg_pos(t, nd, i), ins->original,
				               "VOLUME specified can not be an empty string");
		}
		return 0;
	case SW_DF_ADD:
	case SW_DF_COPY: {
		if (na < 2)
			return fail_at(
			        p, kw, ins->original,
			        "%s requires at least two arguments, but only one was provided. "
			        "Destination could not be determined",
			        name);
		if ((rc = check_flags(p, t, ins, nd,
		                      ins->kind == SW_DF_ADD ? add_flags : copy_flags)) < 0)
			return rc;
		sw_df_heredoc h;
		cleanup_free char *msg = NULL;
		if (heredoc_word(&h, ins->args[na - 1], &msg) == 1) {
			heredoc_clear(&h);
			return fail_at(p, arg_pos(t, nd, na - 1), ins->original,
			               "%s cannot accept a heredoc as a destination", name);
		}
		return 0;
	}
	case SW_DF_ONBUILD: {
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		if ((rc = check_flags(p, t, ins, nd, no_flags)) < 0)
			return rc;
		srcpos at = t->map[nd->trigger_off];
		int tk = nd->trigger_kind;
		if (tk == SW_DF_ONBUILD)
			return fail_at(p, at, ins->original,
			               "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
		if (tk == SW_DF_FROM || tk == SW_DF_MAINTAINER)
			return fail_at(p, at, ins->original,
			               "%s isn't allowed as an ONBUILD trigger",
			               sw_df_kind_name((sw_df_kind)tk));
		/*
		 * Docker checks the trigger only when a child image runs it: one that fails the
		 * checks is recorded all the same, with no parsed `onbuild`.
		 */
		if (ins->onbuild) {
			sw_error *terr = NULL;
			sw_error **saved = p->err;
			p->err = &terr;
			rc = check_instruction(p, t, ins->onbuild, nd->trigger);
			p->err = saved;
			if (rc < 0) {
				SW_LOG(SW_LOG_DEBUG, "ONBUILD trigger kept unparsed: %s",
				       sw_error_msg(terr));
				instruction_clear(ins->onbuild);
				free(ins->onbuild);
				ins->onbuild = NULL;
			}
			sw_error_free(terr);
		}
		return 0;
	}
	case SW_DF_HEALTHCHECK: {
		if ((rc = need_args(p, ins, 1, "at least one argument")) < 0)
			return rc;
		const char *typ = ins->args[0];
		if (strcasecmp(typ, "NONE") == 0) {
			if (na != 1)
				return fail_at(p, arg_pos(t, nd, 1), ins->original,
				               "HEALTHCHECK NONE takes no arguments");
			return 0; /* Docker reads no flags for NONE */
		}
		if ((rc = check_flags(p, t, ins, nd, health_flags)) < 0)
			return rc;
		if (strcasecmp(typ, "CMD") != 0) {
			cleanup_free char *up = sw_xstrdup(typ);
			for (char *c = up; *c; c++)
				if (*c >= 'a' && *c <= 'z')
					*c = (char)(*c - 'a' + 'A');
			cleanup_free char *q = sw_df__quote(up, strlen(up), DF_QUOTE_MAX);
			return fail_at(p, arg_pos(t, nd, 0), ins->original,
			               "Unknown type %s in HEALTHCHECK (try CMD)", q);
		}
		if (na < 2)
			return fail_at(p, arg_pos(t, nd, 0), ins->original,
			               "Missing command after HEALTHCHECK CMD");
		for (size_t i = 0; i < ins->n_flags; i++) {
			sw_df_flag *f = &ins->flags[i];
			srcpos at = { f->line, f->column };
			if (!*f->value)
				continue;
			if (strcmp(f->name, "retries") == 0) {
				const char *v = f->value;
				const char *d = v + (*v == '-' || *v == '+');
				bool digits = *d != '\0';
				for (const char *c = d; *c; c++)
					digits = digits && *c >= '0' && *c <= '9';
				if (!digits)
					return fail_at(
					        p, at, ins->original,
					        "strconv.ParseInt: parsing \"%s\": invalid syntax",
					        v);
				long long r = strtoll(v, NULL, 10);
				if (r > 2147483647LL || r < -2147483648LL || strlen(d) > 11)
					return fail_at(
					        p, at, ins->original,
					        "strconv.ParseInt: parsing \"%s\": value out of range",
					        v);
				if (r < 0)
					return fail_at(p, at, ins->original,
					               "--retries cannot be negative (%lld)", r);
				continue;
			}
			double ns;
			cleanup_free char *why = NULL;
			if (!parse_duration(f->value, &ns, &why))
				return fail_at(p, at, ins->original, "%s", why);
			if (ns != 0 && ns < 1e6)
				return fail_at(p, at, ins->original,
				               "Interval \"%s\" cannot be less than 1ms", f->name);
		}
		return 0;
	}
	}
	return 0;
}

/* parseMaybeJSON / parseMaybeJSONToList. */
static int args_maybe_json(parser *p, const text *t, sw_df_instruction *ins, node *nd, size_t b,
                           size_t e, bool to_list)
{
	strv a = { 0 };
	int j = parse_json_array(&a, t->s + b, e - b, b);
	if (j == JSON_NOT_STRINGS || j == JSON_NUL) {
		strv_clear(&a);
		return fail_at(p, t->map[b], ins->original, "%s",
		               j == JSON_NUL
		                       ? "JSON strings can not contain NUL characters"
		                       : "when using JSON array syntax, arrays must be comprised "
		                         "of strings only");
	}
	if (j == JSON_OK) {
		ins->json_form = true;
	} else if (to_list) {
		split_ws(&a, t->s, b, e);
	} else if (b < e || ins->kind != SW_DF_SHELL) {
		/* nothing after RUN/CMD/ENTRYPOINT: Docker runs `sh -c ""` */
		strv_add(&a, sw_xstrndup(t->s + b, e - b), b);
	}
	set_args(ins, nd, &a);
	return 0;
}

static int parse_node(parser *p, const text *t, size_t b, size_t e, sw_df_instruction *ins,
                      node *nd, int depth);

/* The arguments of the instruction as BuildKit's line parsers shape them. */
static int parse_args(parser *p, const text *t, sw_df_instruction *ins, node *nd, int depth)
{
	size_t b = nd->a_b, e = nd->a_e;
	const char *s = t->s;
	strv a = { 0 };
	switch (ins->kind) {
	case SW_DF_ADD:
	case SW_DF_COPY:
	case SW_DF_VOLUME:
		return args_maybe_json(p, t, ins, nd, b, e, true);
	case SW_DF_CMD:
	case SW_DF_ENTRYPOINT:
	case SW_DF_RUN:
	case SW_DF_SHELL:
		return args_maybe_json(p, t, ins, nd, b, e, false);
	case SW_DF_ARG:
		parse_words(&a, s, b, e, p->escape);
		break;
	case SW_DF_EXPOSE:
	case SW_DF_FROM:
		split_ws(&a, s, b, e);
		break;
	case SW_DF_MAINTAINER:
	case SW_DF_STOPSIGNAL:
	case SW_DF_USER:
	case SW_DF_WORKDIR:
		if (b < e)
			strv_add(&a, sw_xstrndup(s + b, e - b), b);
		break;
	case SW_DF_ENV:
	case SW_DF_LABEL: {
		strv w = { 0 };
		parse_words(&w, s, b, e, p->escape);
		if (w.n > 0 && !strchr(w.v[0], '=')) {
			size_t k = b;
			while (k < e && !is_tokws(s[k]))
				k++;
			size_t v = k;
			while (v < e && is_tokws(s[v]))
				v++;
			if (v >= e) {
				strv_clear(&w);
				return fail_at(p, t->map[b], ins->original,
				               "%s must have two arguments",
				               sw_df_kind_name(ins->kind));
			}
			strv_add(
			        &a,
			        sw_xasprintf("%.*s=%.*s", (int)(k - b), s + b, (int)(e - v), s + v),
			        b);
		} else {
			for (size_t i = 0; i < w.n; i++) {
				if (!strchr(w.v[i], '=')) {
					cleanup_free char *q =
					        sw_df__quote(w.v[i], strlen(w.v[i]), 60);
					int rc = fail_at(
					        p, t->map[w.off[i]], ins->original,
					        "Syntax error - can't find = in %s. Must be of the "
					        "form: name=value",
					        q);
					strv_clear(&w);
					strv_clear(&a);
					return rc;
				}
				strv_add(&a, steal_pointer(&w.v[i]), w.off[i]);
			}
		}
		strv_clear(&w);
		break;
	}
	case SW_DF_HEALTHCHECK: {
		size_t sep = b;
		while (sep < e && !(s[sep] == ' ' || (s[sep] >= '\t' && s[sep] <= '\r')))
			sep++;
		if (sep == b)
			break;
		strv_add(&a, sw_xstrndup(s + b, sep - b), b);
		size_t next = sep;
		while (next < e && (s[next] == ' ' || (s[next] >= '\t' && s[next] <= '\r')))
			next++;
		if (next < e) {
			strv c = { 0 };
			int j = parse_json_array(&c, s + next, e - next, next);
			if (j == JSON_NOT_STRINGS || j == JSON_NUL) {
				strv_clear(&c);
				strv_clear(&a);
				return fail_at(
				        p, t->map[next], ins->original, "%s",
				        j == JSON_NUL
				                ? "JSON strings can not contain NUL "
				                  "characters"
				                : "when using JSON array syntax, arrays must be "
				                  "comprised of strings only");
			}
			if (j == JSON_OK) {
				ins->json_form = true;
				for (size_t i = 0; i < c.n; i++)
					strv_add(&a, steal_pointer(&c.v[i]), c.off[i]);
			} else {
				strv_add(&a, sw_xstrndup(s + next, e - next), next);
			}
			strv_clear(&c);
		}
		break;
	}
	case SW_DF_ONBUILD: {
		if (b >= e)
			break;
		nd->trigger_off = b;
		size_t k = b;
		while (k < e && !is_tokws(s[k]))
			k++;
		nd->trigger_kind = kind_lookup(s + b, k - b);
		/* An unknown trigger is Docker's business only when a child image runs it. */
		if (nd->trigger_kind >= 0 && nd->trigger_kind != SW_DF_ONBUILD) {
			ins->onbuild = sw_xcalloc(1, sizeof(*ins->onbuild));
			nd->trigger = sw_xcalloc(1, sizeof(*nd->trigger));
			int rc = parse_node(p, t, b, e, ins->onbuild, nd->trigger, depth + 1);
			if (rc < 0)
				return rc;
		}
		/* Docker records the trigger as written: the text after "ONBUILD". */
		strv_add(&a, sw_xstrndup(s + b, e - b), b);
		break;
	}
	}
	set_args(ins, nd, &a);
	return 0;
}

/*
 * newNodeFromLine + the instruction checks on t->s[b..e): the keyword, the flags, the
 * arguments; an ONBUILD trigger is parsed the same way (depth 1).
 */
static int parse_node(parser *p, const text *t, size_t b, size_t e, sw_df_instruction *ins,
                      node *nd, int depth)
{
	const char *s = t->s;
	trim_span(s, &b, &e);
	nd->b = b;
	nd->e = e;
	size_t k = b;
	while (k < e && !is_tokws(s[k]))
		k++;
	nd->kw_e = k;
	ins->keyword = sw_xstrndup(s + b, k - b);
	ins->original = sw_xstrndup(s + b, e - b);
	ins->line = t->map[b].line;
	ins->column = t->map[b].col;
	while (k < e && is_tokws(s[k]))
		k++;
	size_t a = extract_flags(&nd->flags, s, k, e);
	size_t ae = e;
	trim_span(s, &a, &ae);
	nd->a_b = a;
	nd->a_e = ae;

	int kind = kind_lookup(s + b, nd->kw_e - b);
	if (kind < 0) {
		cleanup_free char *sug = suggest_instruction(s + b, nd->kw_e - b);
		srcpos at = t->map[b];
		if (sug)
			return fail_at(p, at, ins->original,
			               "unknown instruction: %s (did you mean %s?)", ins->keyword,
			               sug);
		return fail_at(p, at, ins->original, "unknown instruction: %s", ins->keyword);
	}
	ins->kind = (sw_df_kind)kind;
	int rc = parse_args(p, t, ins, nd, depth);
	if (rc < 0)
		return rc;
	(void)depth; /* a trigger is checked by its ONBUILD (check_instruction) */
	return 0;
}

/* ---------------------------------------------------------------- heredoc bodies */

static bool can_contain_heredoc(const sw_df_instruction *ins)
{
	if (ins->kind == SW_DF_ONBUILD && ins->onbuild)
		ins = ins->onbuild;
	return (ins->kind == SW_DF_RUN || ins->kind == SW_DF_COPY || ins->kind == SW_DF_ADD) &&
	       !ins->json_form;
}

static size_t trim_newline_len(const pline *l)
{
	size_t n = l->len;
	while (n > 0 && (l->s[n - 1] == '\r' || l->s[n - 1] == '\n'))
		n--;
	return n;
}

static char *strip_leading_tabs(const char *s)
{
	bstr b = { 0 };
	bool bol = true;
	for (; *s; s++) {
		if (bol && *s == '\t')
			continue;
		bol = *s == '\n';
		bs_put(&b, s, 1);
	}
	return bs_steal(&b);
}

/* heredocsFromLine and the bodies that follow the instruction. */
static int read_heredocs(parser *p, const text *t, sw_df_instruction *ins)
{
	if (!can_contain_heredoc(ins) || !memmem(t->s, t->n, "<<", 2))
		return 0;
	sw_df__lex_opts o = {
		.escape = '\\', .raw_quotes = true, .raw_escapes = true, .skip_unset_env = true
	};
	sw_df__lex_result words;
	if (sw_df__lex(&words, t->s, t->n, &o) < 0) {
		sw_df__lex_result_clear(&words);
		return 0; /* BuildKit ignores the error: no heredocs */
	}
	int rc = 0;
	bstr expr = { 0 };
	for (size_t w = 0; w < words.n_words && rc == 0; w++) {
		sw_df_heredoc h;
		cleanup_free char *msg = NULL;
		srcpos at = t->map[words.offsets[w] < t->n ? words.offsets[w] : t->n];
		int hr = heredoc_word(&h, words.words[w], &msg);
		if (hr < 0) {
			rc = fail_at(p, at, ins->original, "%s", msg);
			break;
		}
		if (hr == 0)
			continue;
		bstr body = { 0 };
		bool terminated = false;
		while (p->cur < p->nlines) {
			const pline *l = &p->lines[p->cur++];
			size_t tn = trim_newline_len(l);
			const char *term = l->s;
			if (h.strip_tabs)
				while (tn > 0 && *term == '\t') {
					term++;
					tn--;
				}
			if (tn == strlen(h.name) && memcmp(term, h.name, tn) == 0) {
				terminated = true;
				break;
			}
			bs_put(&body, l->s, l->raw);
		}
		if (!terminated) {
			free(body.d);
			heredoc_clear(&h);
			rc = fail_at(p, at, ins->original, "unterminated heredoc");
			break;
		}
		char *raw = bs_steal(&body);
		if (ins->kind == SW_DF_ONBUILD) {
			bs_put(&expr, "\n", 1);
			bs_put(&expr, raw, strlen(raw));
			bs_put(&expr, h.name, strlen(h.name));
		}
		if (h.strip_tabs) {
			h.content = strip_leading_tabs(raw);
			free(raw);
		} else {
			h.content = raw;
		}
		ins->heredocs = sw_xrealloc(ins->heredocs, (ins->n_heredocs + 1) * sizeof(h));
		ins->heredocs[ins->n_heredocs++] = h;
	}
	sw_df__lex_result_clear(&words);
	if (rc == 0 && ins->kind == SW_DF_ONBUILD && ins->onbuild) {
		sw_df_instruction *tr = ins->onbuild;
		tr->heredocs = sw_xcalloc(ins->n_heredocs + 1, sizeof(sw_df_heredoc));
		for (size_t i = 0; i < ins->n_heredocs; i++) {
			tr->heredocs[i] = ins->heredocs[i];
			tr->heredocs[i].name = sw_xstrdup(ins->heredocs[i].name);
			tr->heredocs[i].content = sw_xstrdup(ins->heredocs[i].content);
		}
		tr->n_heredocs = ins->n_heredocs;
		if (expr.len && ins->args && ins->args[0]) {
			char *x = sw_xasprintf("%s%s", ins->args[0], expr.d);
			free(ins->args[0]);
			ins->args[0] = x;
		}
	}
	free(expr.d);
	return rc;
}

/* ---------------------------------------------------------------- lines */

/* Parser directives: "# name=value" lines before anything else (escape, syntax, check). */
static int directive(parser *p, const char *s, size_t n, srcpos at)
{
	if (p->dir_done)
		return 0;
	if (n == 0 || s[0] != '#') {
		p->dir_done = true;
		return 0;
	}
	size_t i = 1, l;
	while (i < n && (l = sw_df__space_len(s + i, n - i)) > 0)
		i += l;
	size_t nb = i;
	if (i >= n || !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) {
		p->dir_done = true;
		return 0;
	}
	while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
	                 (s[i] >= '0' && s[i] <= '9')))
		i++;
	size_t ne = i;
	while (i < n && is_hspace(s[i]))
		i++;
	if (i >= n || s[i] != '=') {
		p->dir_done = true;
		return 0;
	}
	i++;
	const char *r = s + i;
	size_t rn = n - i, vb = 0, ve = rn;
	while (vb < rn && is_hspace(r[vb]))
		vb++;
	if (rn == 0) {
		p->dir_done = true;
		return 0;
	}
	if (vb == rn) {
		vb = rn - 1; /* only spaces: the regexp's (.+?) takes the last one */
	} else {
		while (ve > vb && is_hspace(r[ve - 1]))
			ve--;
	}
	char name[16];
	size_t nl = ne - nb;
	if (nl >= sizeof(name)) {
		p->dir_done = true;
		return 0;
	}
	for (size_t k = 0; k < nl; k++)
		name[k] = lower(s[nb + k]);
	name[nl] = '\0';
	bool *seen = strcmp(name, "escape") == 0   ? &p->seen_escape
	             : strcmp(name, "syntax") == 0 ? &p->seen_syntax
	             : strcmp(name, "check") == 0  ? &p->seen_check
	                                           : NULL;
	if (!seen) {
		p->dir_done = true;
		return 0;
	}
	cleanup_free char *orig = sw_xstrndup(s, n);
	if (*seen)
		return fail_at(p, at, orig, "only one %s parser directive can be used", name);
	*seen = true;
	if (strcmp(name, "escape") == 0) {
		if (ve - vb != 1 || (r[vb] != '\\' && r[vb] != '`'))
			return fail_at(p, at, orig,
			               "invalid escape token '%.*s' does not match ` or \\",
			               (int)(ve - vb), r + vb);
		p->escape = r[vb];
	} else if (strcmp(name, "syntax") == 0) {
		p->syntax = sw_xstrndup(r + vb, ve - vb);
	}
	return 0;
}

static bool is_comment(const char *s, size_t n)
{
	size_t i = 0, l;
	while (i < n && (l = sw_df__space_len(s + i, n - i)) > 0)
		i += l;
	return i < n && s[i] == '#';
}

/* trimContinuationCharacter: the escape character last (but not escaped) continues the line. */
static size_t trim_continuation(const parser *p, const char *s, size_t n, bool *eol)
{
	size_t i = n;
	while (i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
		i--;
	if (i > 0 && s[i - 1] == p->escape && (i == 1 || s[i - 2] != p->escape)) {
		*eol = false;
		return i - 1;
	}
	*eol = true;
	return n;
}

typedef struct lbuf {
	bstr s;
	srcpos *map;
	size_t cap;
} lbuf;

static void lb_append(lbuf *b, const char *s, size_t n, int line, int col)
{
	if (b->s.len + n + 1 > b->cap) {
		size_t c = b->cap ? b->cap : 64;
		while (c < b->s.len + n + 1)
			c *= 2;
		b->map = sw_xrealloc(b->map, c * sizeof(srcpos));
		b->cap = c;
	}
	for (size_t i = 0; i < n; i++)
		b->map[b->s.len + i] = (srcpos){ line, col + (int)i };
	bs_put(&b->s, s, n);
}

static void lb_clear(lbuf *b)
{
	free(b->s.d);
	free(b->map);
	memset(b, 0, sizeof(*b));
}

static int split_lines(parser *p, const char *buf, size_t len)
{
	size_t cap = 16;
	p->lines = sw_xcalloc(cap, sizeof(pline));
	size_t i = 0;
	if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	while (i < len) {
		const char *nl = memchr(buf + i, '\n', len - i);
		size_t l = nl ? (size_t)(nl - (buf + i)) : len - i;
		if (p->nlines == cap) {
			cap *= 2;
			p->lines = sw_xrealloc(p->lines, cap * sizeof(pline));
		}
		p->lines[p->nlines++] = (pline){ buf + i, l, l + (nl ? 1 : 0) };
		if (l > DF_MAX_LINE) {
			srcpos at = { (int)p->nlines, 1 };
			return fail_at(p, at, NULL,
			               "dockerfile line greater than max allowed size of %d",
			               DF_MAX_LINE);
		}
		i += l + (nl ? 1 : 0);
	}
	return 0;
}

static int add_instruction(parser *p, lbuf *lb)
{
	if (p->nins == p->capins) {
		p->capins = p->capins ? p->capins * 2 : 16;
		p->ins = sw_xrealloc(p->ins, p->capins * sizeof(*p->ins));
	}
	sw_df_instruction *ins = &p->ins[p->nins++];
	memset(ins, 0, sizeof(*ins));
	text t = { lb->s.d ? lb->s.d : "", lb->map, lb->s.len };
	node nd = { 0 };
	int rc = parse_node(p, &t, 0, t.n, ins, &nd, 0);
	if (rc == 0)
		rc = read_heredocs(p, &t, ins);
	if (rc == 0)
		rc = check_instruction(p, &t, ins, &nd);
	node_clear(&nd);
	return rc;
}

static int parse_lines(parser *p)
{
	while (p->cur < p->nlines) {
		const pline *l = &p->lines[p->cur];
		size_t tl = trim_newline_len(l), lead = 0, sl;
		while (lead < tl && (sl = sw_df__space_len(l->s + lead, tl - lead)) > 0)
			lead += sl;
		const char *tok = l->s + lead;
		size_t tn = tl - lead;
		int lineno = (int)p->cur + 1;
		srcpos at = { lineno, (int)lead + 1 };
		int rc = directive(p, tok, tn, at);
		if (rc < 0)
			return rc;
		p->cur++;
		if (tn > 0 && tok[0] == '#')
			tn = 0;
		bool eol;
		size_t keep = trim_continuation(p, tok, tn, &eol);
		if (eol && keep == 0)
			continue;
		lbuf lb = { 0 };
		lb_append(&lb, tok, keep, lineno, (int)lead + 1);
		srcpos last = { lineno, (int)(lead + keep) + 1 };
		while (!eol && p->cur < p->nlines) {
			const pline *c = &p->lines[p->cur];
			size_t cn = trim_newline_len(c);
			int cl = (int)p->cur + 1;
			p->cur++;
			if (is_comment(c->s, c->len))
				continue;
			size_t b = 0;
			while (b < cn && (sl = sw_df__space_len(c->s + b, cn - b)) > 0)
				b += sl;
			if (b == cn)
				continue;
			size_t ck = trim_continuation(p, c->s, cn, &eol);
			lb_append(&lb, c->s, ck, cl, 1);
			last = (srcpos){ cl, (int)ck + 1 };
		}
		lb_append(&lb, "", 0, 0, 0); /* room for map[len] */
		lb.map[lb.s.len] = last;
		rc = add_instruction(p, &lb);
		lb_clear(&lb);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* ARGs may come first; then FROM starts the first stage. */
static int check_structure(parser *p)
{
	if (p->nins == 0) {
		srcpos at = { p->nlines ? (int)p->nlines : 1, 1 };
		return fail_at(p, at, NULL, "file with no instructions");
	}
	for (size_t i = 0; i < p->nins; i++) {
		sw_df_instruction *ins = &p->ins[i];
		if (ins->kind == SW_DF_ARG)
			continue;
		if (ins->kind == SW_DF_FROM)
			return 0;
		srcpos at = { ins->line, ins->column };
		return fail_at(p, at, ins->original,
		               "no build stage in current context (the first instruction must be "
		               "FROM; only ARG may come before it)");
	}
	sw_df_instruction *last = &p->ins[p->nins - 1];
	srcpos at = { last->line, last->column };
	return fail_at(p, at, last->original,
	               "dockerfile contains no stages to build (no FROM instruction)");
}

int sw_df_parse(sw_dockerfile **out, const char *buf, size_t len, const char *filename,
                sw_error **err)
{
	*out = NULL;
	if (!filename)
		filename = "Dockerfile";
	if (!buf)
		len = 0;
	if (len > DF_MAX_SIZE)
		return sw_error_set(err, SW_ERR_INVALID,
		                    "%s: the Dockerfile is %zu bytes, more than the %zu allowed",
		                    filename, len, DF_MAX_SIZE);
	parser p = { .filename = filename, .escape = '\\', .err = err };
	int rc = 0;
	const char *nul = len ? memchr(buf, '\0', len) : NULL;
	if (nul) {
		srcpos at = { 1, 1 };
		for (const char *c = buf; c < nul; c++) {
			if (*c == '\n') {
				at.line++;
				at.col = 1;
			} else {
				at.col++;
			}
		}
		rc = fail_at(&p, at, NULL, "the Dockerfile contains a NUL byte");
		goto out;
	}
	if ((rc = split_lines(&p, buf ? buf : "", len)) < 0)
		goto out;
	if ((rc = parse_lines(&p)) < 0)
		goto out;
	if ((rc = check_structure(&p)) < 0)
		goto out;
	sw_dockerfile *df = sw_xcalloc(1, sizeof(*df));
	df->filename = sw_xstrdup(filename);
	df->escape = p.escape;
	df->syntax = steal_pointer(&p.syntax);
	df->instructions = steal_pointer(&p.ins);
	df->n_instructions = p.nins;
	p.nins = 0;
	*out = df;
out:
	for (size_t i = 0; i < p.nins; i++)
		instruction_clear(&p.ins[i]);
	free(p.ins);
	free(p.lines);
	free(p.syntax);
	return rc;
}
