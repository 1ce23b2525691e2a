/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Variable expansion in pipeline values (env, build args, promote tags, cache keys, service env)
 * and durations. Expansion knows ${NAME}, $NAME, ${NAME:-default} (the default is used when the
 * variable is unset or empty, and is itself expanded), "$$" for a literal "$" and
 * ${checksum(PATH)} through the caller's callback; any other "$" is kept as it is. Durations are
 * "1h30m", "10m", "45s", "500ms" or a bare number of seconds.
 */
#include "pipeline/pipeline.h"

#include <ctype.h>
#include <string.h>

#define EXPAND_MAX_DEPTH 16
#define EXPAND_MAX_BYTES ((size_t)1 << 20)

typedef struct expander {
	sw_pl_lookup_fn lookup;
	sw_pl_checksum_fn checksum;
	void *payload;
	const char *tmpl; /* the whole template, for messages */
} expander;

static bool name_start(char c)
{
	return isalpha((unsigned char)c) || c == '_';
}

static bool name_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* The index of the '}' closing a "${" whose body starts at s[0], counting nested "${". */
static ssize_t closing_brace(const char *s, size_t n)
{
	int depth = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '$' && i + 1 < n && s[i + 1] == '$') {
			i++;
		} else if (s[i] == '$' && i + 1 < n && s[i + 1] == '{') {
			depth++;
			i++;
		} else if (s[i] == '}') {
			if (depth == 0)
				return (ssize_t)i;
			depth--;
		}
	}
	return -1;
}

static int expand_into(sw_buf *b, const expander *x, const char *s, size_t n, int depth,
                       sw_error **err)
{
	if (depth > EXPAND_MAX_DEPTH)
		return sw_error_set(err, SW_ERR_INVALID, "'${' nested too deeply in '%s'", x->tmpl);
	size_t i = 0;
	while (i < n) {
		size_t start = i;
		while (i < n && s[i] != '$')
			i++;
		if (i > start && sw_buf_append(b, s + start, i - start, err) < 0)
			return SW_ERR_INVALID;
		if (i >= n)
			break;
		/* s[i] == '$' */
		if (i + 1 < n && s[i + 1] == '$') {
			if (sw_buf_append(b, "$", 1, err) < 0)
				return SW_ERR_INVALID;
			i += 2;
			continue;
		}
		if (i + 1 < n && name_start(s[i + 1])) {
			size_t ns = i + 1, ne = ns;
			while (ne < n && name_char(s[ne]))
				ne++;
			char *name = sw_xstrndup(s + ns, ne - ns);
			const char *v = x->lookup ? x->lookup(name, x->payload) : NULL;
			free(name);
			if (v && sw_buf_puts(b, v, err) < 0)
				return SW_ERR_INVALID;
			i = ne;
			continue;
		}
		if (!(i + 1 < n && s[i + 1] == '{')) {
			if (sw_buf_append(b, "$", 1, err) < 0)
				return SW_ERR_INVALID;
			i++;
			continue;
		}
		/* "${...}" */
		const char *body = s + i + 2;
		ssize_t close = closing_brace(body, n - i - 2);
		if (close < 0)
			return sw_error_set(err, SW_ERR_INVALID, "unterminated '${' in '%s'",
			                    x->tmpl);
		size_t bl = (size_t)close;
		static const char ck[] = "checksum(";
		if (bl >= sizeof(ck) - 1 && memcmp(body, ck, sizeof(ck) - 1) == 0) {
			if (body[bl - 1] != ')' || bl == sizeof(ck))
				return sw_error_set(err, SW_ERR_INVALID,
				                    "bad '${checksum(PATH)}' in '%s'", x->tmpl);
			if (!x->checksum)
				return sw_error_set(
				        err, SW_ERR_INVALID,
				        "'${checksum(...)}' is only allowed in 'cache.key' "
				        "(in '%s')",
				        x->tmpl);
			cleanup_free char *path =
			        sw_xstrndup(body + sizeof(ck) - 1, bl - (sizeof(ck) - 1) - 1);
			cleanup_free char *hex = NULL;
			int r = x->checksum(&hex, path, x->payload, err);
			if (r < 0)
				return r;
			if (sw_buf_puts(b, hex ? hex : "", err) < 0)
				return SW_ERR_INVALID;
			i += 2 + bl + 1;
			continue;
		}
		size_t ne = 0;
		if (bl > 0 && name_start(body[0]))
			for (ne = 1; ne < bl && name_char(body[ne]); ne++)
				;
		if (ne == 0) {
			if (bl == 0)
				return sw_error_set(err, SW_ERR_INVALID, "empty '${}' in '%s'",
				                    x->tmpl);
			return sw_error_set(err, SW_ERR_INVALID,
			                    "bad substitution '${%.*s}' in '%s'", (int)bl, body,
			                    x->tmpl);
		}
		bool has_default = false;
		if (ne < bl) {
			if (bl - ne < 2 || body[ne] != ':' || body[ne + 1] != '-')
				return sw_error_set(
				        err, SW_ERR_INVALID,
				        "bad substitution '${%.*s}' in '%s' (use ${NAME} or "
				        "${NAME:-default})",
				        (int)bl, body, x->tmpl);
			has_default = true;
		}
		char *name = sw_xstrndup(body, ne);
		const char *v = x->lookup ? x->lookup(name, x->payload) : NULL;
		free(name);
		if (has_default && (!v || !*v)) {
			int r = expand_into(b, x, body + ne + 2, bl - ne - 2, depth + 1, err);
			if (r < 0)
				return r;
		} else if (v && sw_buf_puts(b, v, err) < 0) {
			return SW_ERR_INVALID;
		}
		i += 2 + bl + 1;
	}
	return 0;
}

int sw_pl_expand(char **out, const char *tmpl, sw_pl_lookup_fn lookup, sw_pl_checksum_fn checksum,
                 void *payload, sw_error **err)
{
	*out = NULL;
	expander x = { lookup, checksum, payload, tmpl };
	sw_buf b = SW_BUF_INIT(EXPAND_MAX_BYTES);
	int r = expand_into(&b, &x, tmpl, strlen(tmpl), 0, err);
	if (r < 0) {
		sw_buf_free(&b);
		return r;
	}
	*out = sw_buf_steal(&b, NULL);
	return 0;
}

/* ---------------------------------------------------------------- durations */

int sw_pl_duration_parse(int64_t *out_ms, const char *s)
{
	const int64_t max = (int64_t)1 << 50;
	*out_ms = 0;
	if (!s || !*s)
		return SW_ERR_INVALID;
	const char *p = s;
	bool bare = true;
	for (const char *c = s; *c; c++)
		bare = bare && isdigit((unsigned char)*c);
	int64_t total = 0;
	while (*p) {
		if (!isdigit((unsigned char)*p))
			return SW_ERR_INVALID;
		int64_t v = 0;
		while (isdigit((unsigned char)*p)) {
			v = v * 10 + (*p - '0');
			if (v > max)
				return SW_ERR_INVALID;
			p++;
		}
		int64_t unit;
		if (bare) {
			unit = 1000;
		} else if (p[0] == 'm' && p[1] == 's') {
			unit = 1;
			p += 2;
		} else if (p[0] == 'h') {
			unit = 3600 * 1000;
			p++;
		} else if (p[0] == 'm') {
			unit = 60 * 1000;
			p++;
		} else if (p[0] == 's') {
			unit = 1000;
			p++;
		} else {
			return SW_ERR_INVALID;
		}
		if (v > max / unit)
			return SW_ERR_INVALID;
		total += v * unit;
		if (total > max)
			return SW_ERR_INVALID;
	}
	*out_ms = total;
	return 0;
}
