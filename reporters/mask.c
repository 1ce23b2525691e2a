/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secret masking of output streams. Each secret value of 4 bytes or more (shorter values are
 * left alone) gives up to five patterns:
 *  - the value itself;
 *  - its standard base64 encoding with padding (RFC 4648 alphabet, as `base64` prints a value
 *    that is the whole input: "pass1" -> "cGFzczE=");
 *  - for each of the three alignments the value can have inside a longer base64-encoded text
 *    (it starts at a byte offset that is 0, 1 or 2 modulo 3), the run of base64 characters that
 *    depend on the value's bytes only. Character k of an encoding carries bits [6k, 6k + 6); a
 *    value of n bytes at alignment a covers bits [8a, 8a + 8n), so the characters k with
 *    6k >= 8a and 6k + 6 <= 8a + 8n are the same whatever surrounds the value; the character
 *    at each edge that mixes in neighbouring bits stays visible (it reveals 2 or 4 bits of the
 *    value). So "user:" + value + ":tail", base64-encoded as a whole, is caught.
 * Not caught: URL-safe base64, base64 broken by line wraps (`base64` wraps at 76 columns),
 * hex or other encodings, and values the job transforms in any other way.
 * All patterns go into one Aho-Corasick automaton, so the cost is linear in the input whatever
 * the number of secrets (bytes that begin no pattern are skipped with a first-byte table).
 * Every byte covered by an occurrence of any pattern is masked; occurrences that overlap (a
 * value that is a prefix of another, two secrets sharing bytes) become one "[MASKED]", each
 * separate occurrence (adjacent ones too) its own. The filter works on any chunking (a value
 * split across feeds, or fed byte by byte): it holds back only the bytes that could still begin
 * an occurrence, at most (longest pattern - 1) of them.
 */
#include "reporters/reporters.h"
#include "reporters/reporters_internal.h"

#include <pthread.h>
#include <string.h>

#define MASK_MIN_LEN 4
#define MASK_TEXT "[MASKED]"
#define MASK_OUT_FLUSH ((size_t)64 << 10)

typedef struct edge {
	unsigned char byte;
	uint32_t to;
} edge;

typedef struct state {
	uint32_t fail;
	uint32_t depth;
	uint32_t match; /* length of the longest pattern ending here (0: none) */
	uint32_t n_edges, cap_edges;
	edge *edges;
} state;

typedef struct span {
	uint64_t s, e; /* inclusive stream positions */
} span;

struct sw_mask {
	pthread_mutex_t lock;
	sw_mask_out_fn out;
	void *payload;

	state *states;
	size_t n_states, cap_states;
	uint32_t root_next[256]; /* full transition table of the root */
	size_t longest;

	/* stream state */
	uint32_t cur;
	uint64_t pos;  /* stream position of the next byte */
	uint64_t base; /* first position not yet emitted nor dropped */
	char *held;    /* bytes [base, pos) carried over between feeds */
	size_t n_held; /* == pos - base between feeds */
	span *spans;   /* pending occurrences, disjoint, ascending, all after `base` */
	size_t n_spans, cap_spans;
	bool committed; /* a "[MASKED]" was emitted for a run that may still grow */
	uint64_t committed_end;
	sw_buf outbuf;
};

/* ---------------------------------------------------------------- patterns */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 with padding. */
static char *b64_encode(const unsigned char *in, size_t len)
{
	char *out = sw_xmalloc((len + 2) / 3 * 4 + 1);
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = b64chars[(v >> 18) & 63];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

/*
 * The base64 characters that depend only on the value when it starts `align` bytes (0..2) into
 * a 3-byte group: character k covers bits [6k, 6k + 6) of the encoded stream, the value covers
 * bits [8 align, 8 (align + len)).
 */
static char *b64_stable(const unsigned char *in, size_t len, unsigned align)
{
	cleanup_free unsigned char *padded = sw_xcalloc(len + 3, 1);
	memcpy(padded + align, in, len);
	cleanup_free char *enc = b64_encode(padded, len + align);
	size_t lo = (8 * align + 5) / 6;     /* first k with 6k >= 8 align */
	size_t hi = (8 * (align + len)) / 6; /* first k with 6k + 6 > 8 (align + len) */
	if (hi <= lo)
		return NULL;
	return sw_xstrndup(enc + lo, hi - lo);
}

static uint32_t state_add(sw_mask *m, uint32_t depth)
{
	if (m->n_states == m->cap_states) {
		m->cap_states = m->cap_states ? m->cap_states * 2 : 64;
		m->states = sw_xrealloc(m->states, m->cap_states * sizeof(*m->states));
	}
	state *s = &m->states[m->n_states];
	memset(s, 0, sizeof(*s));
	s->depth = depth;
	return (uint32_t)m->n_states++;
}

static uint32_t edge_find(const state *s, unsigned char c)
{
	for (uint32_t i = 0; i < s->n_edges; i++)
		if (s->edges[i].byte == c)
			return s->edges[i].to;
	return 0;
}

static void pattern_add(sw_mask *m, const char *p, size_t len)
{
	if (len < MASK_MIN_LEN)
		return;
	uint32_t cur = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		uint32_t next = edge_find(&m->states[cur], c);
		if (!next) {
			next = state_add(m, m->states[cur].depth + 1);
			state *s = &m->states[cur];
			if (s->n_edges == s->cap_edges) {
				s->cap_edges = s->cap_edges ? s->cap_edges * 2 : 2;
				s->edges = sw_xrealloc(s->edges, s->cap_edges * sizeof(*s->edges));
			}
			s->edges[s->n_edges++] = (edge){ c, next };
		}
		cur = next;
	}
	m->states[cur].match = (uint32_t)len;
	if (len > m->longest)
		m->longest = len;
}

/* Failure links and "longest pattern ending here", breadth first. */
static void automaton_finish(sw_mask *m)
{
	cleanup_free uint32_t *queue = sw_xmalloc(m->n_states * sizeof(*queue));
	size_t qh = 0, qt = 0;
	for (unsigned c = 0; c < 256; c++)
		m->root_next[c] = 0;
	state *root = &m->states[0];
	for (uint32_t i = 0; i < root->n_edges; i++) {
		uint32_t t = root->edges[i].to;
		m->root_next[root->edges[i].byte] = t;
		m->states[t].fail = 0;
		queue[qt++] = t;
	}
	while (qh < qt) {
		uint32_t u = queue[qh++];
		for (uint32_t i = 0; i < m->states[u].n_edges; i++) {
			unsigned char c = m->states[u].edges[i].byte;
			uint32_t v = m->states[u].edges[i].to;
			uint32_t f = m->states[u].fail;
			uint32_t to;
			for (;;) {
				to = f ? edge_find(&m->states[f], c) : m->root_next[c];
				if (to || !f)
					break;
				f = m->states[f].fail;
			}
			m->states[v].fail = to;
			if (!m->states[v].match)
				m->states[v].match = m->states[to].match;
			queue[qt++] = v;
		}
	}
}

static inline uint32_t step(const sw_mask *m, uint32_t cur, unsigned char c)
{
	while (cur) {
		uint32_t to = edge_find(&m->states[cur], c);
		if (to)
			return to;
		cur = m->states[cur].fail;
	}
	return m->root_next[c];
}

/* ---------------------------------------------------------------- the stream */

static void out_put(sw_mask *m, const char *data, size_t len)
{
	sw_error *e = NULL;
	if (!len)
		return;
	if (m->outbuf.len + len > MASK_OUT_FLUSH && m->outbuf.len) {
		m->out(m->outbuf.data, m->outbuf.len, m->payload);
		sw_buf_reset(&m->outbuf);
	}
	if (len > MASK_OUT_FLUSH) {
		m->out(data, len, m->payload);
		return;
	}
	if (sw_buf_append(&m->outbuf, data, len, &e) < 0) /* cannot happen below the cap */
		sw_error_free(e);
}

static void out_send(sw_mask *m)
{
	if (m->outbuf.len)
		m->out(m->outbuf.data, m->outbuf.len, m->payload);
	sw_buf_reset(&m->outbuf);
}

/*
 * Emit the raw bytes [m->base, to): the first n_held of the pending positions are in m->held,
 * the rest in the current feed `data` (whose first byte is at position data_pos).
 */
static void emit_raw(sw_mask *m, uint64_t to, const char *data, uint64_t data_pos)
{
	while (m->base < to) {
		if (m->base < data_pos) {
			size_t off = m->n_held - (size_t)(data_pos - m->base);
			size_t n = (size_t)((to < data_pos ? to : data_pos) - m->base);
			out_put(m, m->held + off, n);
			m->base += n;
		} else {
			out_put(m, data + (m->base - data_pos), (size_t)(to - m->base));
			m->base = to;
		}
	}
}

/* Drop the bytes [m->base, to) (they are masked). */
static void drop(sw_mask *m, uint64_t to)
{
	if (to > m->base)
		m->base = to;
}

/*
 * Settle what is known: every position below `bound` can no longer start an occurrence.
 */
static void settle(sw_mask *m, uint64_t bound, const char *data, uint64_t data_pos)
{
	for (;;) {
		if (m->committed) {
			drop(m, m->committed_end + 1 < m->pos ? m->committed_end + 1 : m->pos);
			if (m->committed_end < bound)
				m->committed = false; /* nothing can overlap it any more */
			else
				return;
		}
		if (!m->n_spans) {
			emit_raw(m, bound, data, data_pos);
			return;
		}
		span f = m->spans[0];
		emit_raw(m, f.s < bound ? f.s : bound, data, data_pos);
		if (f.s >= bound)
			return;
		/* the run's start is final: say so now, swallow its bytes as they come */
		out_put(m, MASK_TEXT, strlen(MASK_TEXT));
		m->committed = true;
		m->committed_end = f.e;
		memmove(m->spans, m->spans + 1, (m->n_spans - 1) * sizeof(*m->spans));
		m->n_spans--;
	}
}

/* An occurrence covers [s, e] (e is the position just read). */
static void occurrence(sw_mask *m, uint64_t s, uint64_t e)
{
	while (m->n_spans && m->spans[m->n_spans - 1].e >= s) {
		if (m->spans[m->n_spans - 1].s < s)
			s = m->spans[m->n_spans - 1].s;
		m->n_spans--;
	}
	if (!m->n_spans && m->committed && m->committed_end >= s) {
		m->committed_end = e;
		return;
	}
	if (m->n_spans == m->cap_spans) {
		m->cap_spans = m->cap_spans ? m->cap_spans * 2 : 8;
		m->spans = sw_xrealloc(m->spans, m->cap_spans * sizeof(*m->spans));
	}
	m->spans[m->n_spans++] = (span){ s, e };
}

static uint64_t bound_now(const sw_mask *m)
{
	uint64_t d = m->states[m->cur].depth;
	if (d > m->longest - 1)
		d = m->longest - 1;
	return m->pos - d;
}

static void feed_locked(sw_mask *m, const char *data, size_t len)
{
	uint64_t data_pos = m->pos;
	const unsigned char *u = (const unsigned char *)data;
	size_t i = 0;
	while (i < len) {
		if (!m->cur && !m->n_spans && !m->committed) {
			/* fast path: skip bytes that begin no pattern */
			while (i < len && !m->root_next[u[i]])
				i++;
			m->pos = data_pos + i;
			if (i == len)
				break;
		}
		m->cur = step(m, m->cur, u[i]);
		i++;
		m->pos = data_pos + i;
		uint32_t l = m->states[m->cur].match;
		if (l)
			occurrence(m, m->pos - l, m->pos - 1);
		if (m->n_spans || m->committed)
			settle(m, bound_now(m), data, data_pos);
	}
	settle(m, bound_now(m), data, data_pos);
	/* keep the undecided tail for the next feed */
	size_t keep = (size_t)(m->pos - m->base);
	char *tail = sw_xmalloc(keep + 1);
	for (size_t k = 0; k < keep; k++) {
		uint64_t p = m->base + k;
		tail[k] = p < data_pos ? m->held[m->n_held - (size_t)(data_pos - p)]
		                       : data[p - data_pos];
	}
	free(m->held);
	m->held = tail;
	m->n_held = keep;
	out_send(m);
}

sw_mask *sw_mask_new(const char *const *secrets, size_t n, sw_mask_out_fn out, void *payload)
{
	sw_mask *m = sw_xcalloc(1, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->out = out;
	m->payload = payload;
	sw_buf_init(&m->outbuf, MASK_OUT_FLUSH * 2);
	state_add(m, 0);
	for (size_t i = 0; i < n; i++) {
		if (!secrets[i])
			continue;
		const unsigned char *v = (const unsigned char *)secrets[i];
		size_t len = strlen(secrets[i]);
		if (len < MASK_MIN_LEN)
			continue;
		pattern_add(m, secrets[i], len);
		cleanup_free char *std = b64_encode(v, len);
		pattern_add(m, std, strlen(std));
		for (unsigned a = 0; a < 3; a++) {
			cleanup_free char *mid = b64_stable(v, len, a);
			if (mid)
				pattern_add(m, mid, strlen(mid));
		}
	}
	automaton_finish(m);
	return m;
}

void sw_mask_feed(sw_mask *m, const char *data, size_t len)
{
	if (!m || !len)
		return;
	pthread_mutex_lock(&m->lock);
	if (!m->longest) {
		m->out(data, len, m->payload);
	} else {
		feed_locked(m, data, len);
	}
	pthread_mutex_unlock(&m->lock);
}

void sw_mask_flush(sw_mask *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	if (m->longest) {
		/* the end of the stream: everything pending is final */
		settle(m, m->pos, m->held, m->pos - m->n_held);
		if (m->committed) {
			drop(m, m->pos);
			m->committed = false;
		}
		free(m->held);
		m->held = NULL;
		m->n_held = 0;
		m->cur = 0;
		out_send(m);
	}
	pthread_mutex_unlock(&m->lock);
}

void sw_mask_free(sw_mask *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_states; i++)
		free(m->states[i].edges);
	free(m->states);
	free(m->held);
	free(m->spans);
	sw_buf_free(&m->outbuf);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

size_t sw_mask__held(const sw_mask *m)
{
	return m ? m->n_held : 0;
}

static void to_buf(const char *data, size_t len, void *payload)
{
	sw_buf *b = payload;
	sw_error *e = NULL;
	if (sw_buf_append(b, data, len, &e) < 0)
		sw_error_free(e);
}

char *sw_mask_string(const char *const *secrets, size_t n, const char *s)
{
	if (!s)
		return NULL;
	sw_buf b = SW_BUF_INIT(0);
	sw_mask *m = sw_mask_new(secrets, n, to_buf, &b);
	sw_mask_feed(m, s, strlen(s));
	sw_mask_flush(m);
	sw_mask_free(m);
	size_t len = 0;
	return sw_buf_steal(&b, &len);
}
