/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Secret masking: values replaced by "[MASKED]" whatever the chunking (byte by byte, split at
 * every position, random chunks checked against a brute-force reference), overlapping values,
 * a value that is a prefix of another, repeated and adjacent occurrences, short values left
 * alone, the base64 forms (the standard encoding, and a value embedded at each alignment inside
 * a longer base64 text), the bound on held-back bytes and the speed on large outputs.
 */
#include "test_reporters.h"

#include <string.h>
#include <time.h>

typedef struct sink {
	sw_buf b;
	size_t calls;
} sink;

static void to_sink(const char *data, size_t len, void *payload)
{
	sink *s = payload;
	s->calls++;
	CHECK_OK(sw_buf_append(&s->b, data, len, &err));
}

/* Feed `in` in pieces of the given sizes (cycled; 0 means all at once) and flush. */
static char *run_chunks(const char *const *secrets, size_t n, const char *in, size_t len,
                        const size_t *sizes, size_t n_sizes)
{
	sink s = { SW_BUF_INIT(0), 0 };
	sw_mask *m = sw_mask_new(secrets, n, to_sink, &s);
	size_t i = 0, k = 0;
	while (i < len) {
		size_t c = n_sizes ? sizes[k++ % n_sizes] : len;
		if (c > len - i)
			c = len - i;
		sw_mask_feed(m, in + i, c);
		i += c;
	}
	sw_mask_flush(m);
	sw_mask_free(m);
	size_t l;
	return sw_buf_steal(&s.b, &l);
}

static char *run_whole(const char *const *secrets, size_t n, const char *in)
{
	return run_chunks(secrets, n, in, strlen(in), NULL, 0);
}

/* ---------------------------------------------------------------- a reference */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *ref_b64(const unsigned char *in, size_t len)
{
	char *out = sw_xmalloc(len / 3 * 4 + 8);
	size_t o = 0, i = 0;
	for (; i + 3 <= len; i += 3) {
		out[o++] = b64[in[i] >> 2];
		out[o++] = b64[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		out[o++] = b64[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		out[o++] = b64[in[i + 2] & 63];
	}
	if (len - i == 1) {
		out[o++] = b64[in[i] >> 2];
		out[o++] = b64[(in[i] & 3) << 4];
		out[o++] = '=';
		out[o++] = '=';
	} else if (len - i == 2) {
		out[o++] = b64[in[i] >> 2];
		out[o++] = b64[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		out[o++] = b64[(in[i + 1] & 15) << 2];
		out[o++] = '=';
	}
	out[o] = '\0';
	return out;
}

/*
 * The base64 characters of a value placed `align` bytes into a 3-byte group that do not depend
 * on its neighbours, found by experiment: encode it between all-zero and between all-one bytes
 * and keep the run of characters the two encodings share.
 */
static char *ref_stable(const char *v, unsigned align)
{
	size_t len = strlen(v);
	unsigned char *a = sw_xcalloc(len + 6, 1), *b = sw_xmalloc(len + 6);
	memset(b, 0xff, len + 6);
	memcpy(a + align, v, len);
	memcpy(b + align, v, len);
	char *ea = ref_b64(a, len + 6), *eb = ref_b64(b, len + 6);
	size_t first = 0, end;
	while (ea[first] != eb[first])
		first++;
	for (end = first; ea[end] == eb[end]; end++)
		;
	char *r = sw_xstrndup(ea + first, end - first);
	free(a);
	free(b);
	free(ea);
	free(eb);
	return r;
}

typedef struct ival {
	size_t s, e; /* [s, e) */
} ival;

static int ival_cmp(const void *x, const void *y)
{
	const ival *a = x, *b = y;
	return a->s < b->s ? -1 : a->s > b->s ? 1 : 0;
}

/* Brute force: every occurrence of every pattern, overlapping ones merged. */
static char *ref_mask(const char *const *secrets, size_t n, const char *in, size_t len)
{
	char **pats = NULL;
	for (size_t i = 0; i < n; i++) {
		if (strlen(secrets[i]) < 4)
			continue;
		sw_strv_push(&pats, secrets[i]);
		char *std = ref_b64((const unsigned char *)secrets[i], strlen(secrets[i]));
		sw_strv_push(&pats, std);
		free(std);
		for (unsigned a = 0; a < 3; a++) {
			char *st = ref_stable(secrets[i], a);
			if (strlen(st) >= 4)
				sw_strv_push(&pats, st);
			free(st);
		}
	}
	ival *iv = NULL;
	size_t n_iv = 0;
	for (size_t p = 0; pats && pats[p]; p++) {
		size_t pl = strlen(pats[p]);
		for (size_t i = 0; i + pl <= len; i++)
			if (memcmp(in + i, pats[p], pl) == 0) {
				iv = sw_xrealloc(iv, (n_iv + 1) * sizeof(*iv));
				iv[n_iv++] = (ival){ i, i + pl };
			}
	}
	sw_strv_free(pats);
	if (n_iv)
		qsort(iv, n_iv, sizeof(*iv), ival_cmp);
	sw_buf out = SW_BUF_INIT(0);
	size_t pos = 0, k = 0;
	while (k < n_iv) {
		size_t s = iv[k].s, e = iv[k].e;
		for (k++; k < n_iv && iv[k].s < e; k++)
			if (iv[k].e > e)
				e = iv[k].e;
		CHECK_OK(sw_buf_append(&out, in + pos, s - pos, &err));
		CHECK_OK(sw_buf_puts(&out, "[MASKED]", &err));
		pos = e;
	}
	CHECK_OK(sw_buf_append(&out, in + pos, len - pos, &err));
	free(iv);
	size_t l;
	return sw_buf_steal(&out, &l);
}

/* ---------------------------------------------------------------- cases */

static void test_reporters__mask_basic(void **state)
{
	(void)state;
	const char *secrets[] = { "s3cr3tvalue" };
	char *o = run_whole(secrets, 1, "token=s3cr3tvalue end\n");
	assert_string_equal(o, "token=[MASKED] end\n");
	free(o);
	o = run_whole(secrets, 1, "s3cr3tvalue");
	assert_string_equal(o, "[MASKED]");
	free(o);
	o = run_whole(secrets, 1, "s3cr3tvalu and 3cr3tvalue are not it");
	assert_string_equal(o, "s3cr3tvalu and 3cr3tvalue are not it");
	free(o);
	/* no secrets at all: the bytes pass as they are */
	o = run_whole(NULL, 0, "plain text");
	assert_string_equal(o, "plain text");
	free(o);
}

static void test_reporters__mask_split_everywhere(void **state)
{
	(void)state;
	const char *secrets[] = { "hunter2-password", "ABCD" };
	const char *in = "login hunter2-password ok; ABCDABCD; hunter2-passworx hunter2-password";
	const char *want = "login [MASKED] ok; [MASKED][MASKED]; hunter2-passworx [MASKED]";
	size_t len = strlen(in);
	for (size_t k = 0; k <= len; k++) {
		size_t sizes[] = { k, len };
		char *o = run_chunks(secrets, 2, in, len, k ? sizes : (size_t[]){ len }, k ? 2 : 1);
		if (strcmp(o, want) != 0)
			fail_msg("split at %zu: got '%s'", k, o);
		free(o);
	}
	size_t one = 1;
	char *o = run_chunks(secrets, 2, in, len, &one, 1);
	assert_string_equal(o, want);
	free(o);
	/* three pieces: split at every pair of positions */
	for (size_t a = 1; a < 30; a++)
		for (size_t b = 1; b < 30; b++) {
			size_t sizes[] = { a, b };
			o = run_chunks(secrets, 2, in, len, sizes, 2);
			if (strcmp(o, want) != 0)
				fail_msg("chunks %zu/%zu: got '%s'", a, b, o);
			free(o);
		}
}

static void test_reporters__mask_overlaps_and_prefixes(void **state)
{
	(void)state;
	/* two values sharing bytes: the whole covered run is one [MASKED], nothing leaks */
	const char *ov[] = { "abcdef", "defghi" };
	char *o = run_whole(ov, 2, "xxabcdefghixx");
	assert_string_equal(o, "xx[MASKED]xx");
	free(o);
	/* a value that is a prefix of another: the longest wins, the short one still alone */
	const char *px[] = { "abcd", "abcdefgh" };
	o = run_whole(px, 2, "abcdefgh abcd abcdefg");
	assert_string_equal(o, "[MASKED] [MASKED] [MASKED]efg");
	free(o);
	const char *px2[] = { "abcdefgh", "abcd" };
	size_t one = 1;
	o = run_chunks(px2, 2, "abcdefgh abcd abcdefg", 21, &one, 1);
	assert_string_equal(o, "[MASKED] [MASKED] [MASKED]efg");
	free(o);
	/* a value inside another one, and one that begins before a shorter one */
	const char *in[] = { "cdef", "abcdefgh" };
	o = run_whole(in, 2, "abcdefgh cdef bcdefg");
	assert_string_equal(o, "[MASKED] [MASKED] b[MASKED]g");
	free(o);
	const char *late[] = { "bcde", "abcdefghij" };
	o = run_chunks(late, 2, "abcdefghij abcdefghi", 20, &one, 1);
	assert_string_equal(o, "[MASKED] a[MASKED]fghi");
	free(o);
	/* self-overlapping value */
	const char *aa[] = { "aaaa" };
	o = run_whole(aa, 1, "aaaaaaa b aaa");
	assert_string_equal(o, "[MASKED] b aaa");
	free(o);
	/* repeated occurrences, adjacent ones each masked */
	const char *rep[] = { "pass1234" };
	o = run_whole(rep, 1, "pass1234 pass1234pass1234\npass1234");
	assert_string_equal(o, "[MASKED] [MASKED][MASKED]\n[MASKED]");
	free(o);
}

static void test_reporters__mask_short_values(void **state)
{
	(void)state;
	const char *secrets[] = { "abc", "", "xy", "abcd" };
	char *o = run_whole(secrets, 4, "abc xy abcd");
	assert_string_equal(o, "abc xy [MASKED]");
	free(o);
	const char *only_short[] = { "a", "bc" };
	o = run_whole(only_short, 2, "abc");
	assert_string_equal(o, "abc");
	free(o);
	o = sw_mask_string(only_short, 2, "abcabc");
	assert_string_equal(o, "abcabc");
	free(o);
}

static void test_reporters__mask_base64(void **state)
{
	(void)state;
	const char *secret = "correct horse battery";
	const char *secrets[] = { secret };
	/* the standard form, with padding, as `echo -n ... | base64` prints it */
	char *std = ref_b64((const unsigned char *)secret, strlen(secret));
	cleanup_free char *line = sw_xasprintf("auth: %s\n", std);
	char *o = run_whole(secrets, 1, line);
	assert_string_equal(o, "auth: [MASKED]\n");
	free(o);
	free(std);
	const char *s2[] = { "pass1" }; /* 5 bytes: "cGFzczE=" */
	o = run_whole(s2, 1, "x cGFzczE= y");
	assert_string_equal(o, "x [MASKED] y");
	free(o);

	/* embedded in a longer base64 text at every alignment ("user:" + secret + "...") */
	for (size_t pre = 0; pre < 9; pre++) {
		for (size_t post = 0; post < 4; post++) {
			char plain[128];
			memset(plain, 'u', pre);
			memcpy(plain + pre, secret, strlen(secret));
			memset(plain + pre + strlen(secret), 'v', post);
			size_t pl = pre + strlen(secret) + post;
			char *enc = ref_b64((const unsigned char *)plain, pl);
			char *mid = ref_stable(secret, (unsigned)(pre % 3));
			char *m = run_whole(secrets, 1, enc);
			if (!strstr(m, "[MASKED]") || strstr(m, mid))
				fail_msg("pre %zu post %zu: '%s' -> '%s'", pre, post, enc, m);
			/* only the edge characters (mixed bits) of the value remain */
			if (strlen(m) > strlen(enc) - strlen(mid) + strlen("[MASKED]"))
				fail_msg("pre %zu: too little masked: '%s'", pre, m);
			char *r = ref_mask(secrets, 1, enc, strlen(enc));
			assert_string_equal(m, r);
			free(r);
			free(m);
			free(mid);
			free(enc);
		}
	}
}

static void test_reporters__mask_random_against_reference(void **state)
{
	(void)state;
	unsigned seed = 12345;
	for (int round = 0; round < 300; round++) {
		/* a small alphabet so values overlap and repeat a lot */
		char sec[4][12];
		const char *secrets[4];
		size_t n = 1 + (size_t)(rand_r(&seed) % 4);
		for (size_t i = 0; i < n; i++) {
			size_t l = 2 + (size_t)(rand_r(&seed) % 9);
			for (size_t k = 0; k < l; k++)
				sec[i][k] = "abcA"[rand_r(&seed) % 4];
			sec[i][l] = '\0';
			secrets[i] = sec[i];
		}
		char in[400];
		size_t len = (size_t)(rand_r(&seed) % sizeof(in));
		for (size_t k = 0; k < len; k++)
			in[k] = "abcA="[rand_r(&seed) % 5];
		/* sometimes put base64 text in */
		if (round % 3 == 0 && len > 60) {
			char *e = ref_b64((const unsigned char *)secrets[0], strlen(secrets[0]));
			memcpy(in + 10, e, strlen(e));
			free(e);
		}
		char *want = ref_mask(secrets, n, in, len);
		size_t sizes[3] = { 1 + (size_t)(rand_r(&seed) % 7),
			            1 + (size_t)(rand_r(&seed) % 50), 1 };
		char *got = run_chunks(secrets, n, in, len, sizes, 3);
		if (strcmp(want, got) != 0)
			fail_msg("round %d: '%.*s'\nwant '%s'\ngot  '%s'", round, (int)len, in,
			         want, got);
		free(got);
		free(want);
	}
}

static void test_reporters__mask_bounded_memory(void **state)
{
	(void)state;
	const char *secrets[] = { "0123456789abcdef", "bcdefgh" };
	size_t longest = strlen("MDEyMzQ1Njc4OWFiY2RlZg=="); /* base64 of the first */
	sink s = { SW_BUF_INIT(0), 0 };
	sw_mask *m = sw_mask_new(secrets, 2, to_sink, &s);
	/* a stream full of near misses (each is a long prefix of a pattern) */
	const char *chunk = "0123456789abcde MDEyMzQ1Njc4OWFiY2Rl bcdefg ";
	for (int r = 0; r < 200; r++)
		for (const char *p = chunk; *p; p++) {
			sw_mask_feed(m, p, 1);
			assert_true(sw_mask__held(m) <= longest - 1);
		}
	sw_mask_flush(m);
	assert_int_equal(sw_mask__held(m), 0);
	assert_int_equal(s.b.len, 200 * strlen(chunk));
	sw_mask_free(m);
	sw_buf_free(&s.b);
}

static void test_reporters__mask_large_output(void **state)
{
	(void)state;
	const char *secrets[] = { "SuperSecretToken-42", "another-secret", "x1y2z3w4" };
	size_t len = (size_t)16 << 20;
	char *in = sw_xmalloc(len);
	for (size_t i = 0; i < len; i++)
		in[i] = (char)(" abcdefghijklmnopqrstuvwxyz0123456789\n"[(i * 7 + i / 13) % 38]);
	size_t placed = 0;
	for (size_t off = 1000; off + 64 < len; off += 100003) {
		memcpy(in + off, secrets[placed % 3], strlen(secrets[placed % 3]));
		placed++;
	}
	sink s = { SW_BUF_INIT((size_t)32 << 20), 0 };
	sw_mask *m = sw_mask_new(secrets, 3, to_sink, &s);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < len; i += 65536)
		sw_mask_feed(m, in + i, len - i < 65536 ? len - i : 65536);
	sw_mask_flush(m);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	sw_mask_free(m);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	size_t found = 0;
	for (const char *p = s.b.data;
	     (p = memmem(p, s.b.len - (size_t)(p - s.b.data), "[MASKED]", 8)); p += 8)
		found++;
	assert_int_equal(found, placed);
	/* linear: a few hundred MB/s unsanitized; generous for sanitizer builds */
	if (secs > 20.0)
		fail_msg("masking 16 MiB took %.1fs", secs);
	free(in);
	sw_buf_free(&s.b);
}

static void test_reporters__mask_string(void **state)
{
	(void)state;
	const char *secrets[] = { "tok-123456", NULL };
	char *o = sw_mask_string(secrets, 2, "url https://u:tok-123456@h/ tok-123456");
	assert_string_equal(o, "url https://u:[MASKED]@h/ [MASKED]");
	free(o);
	assert_null(sw_mask_string(secrets, 1, NULL));
}

int test_reporters_mask_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reporters__mask_basic),
		cmocka_unit_test(test_reporters__mask_split_everywhere),
		cmocka_unit_test(test_reporters__mask_overlaps_and_prefixes),
		cmocka_unit_test(test_reporters__mask_short_values),
		cmocka_unit_test(test_reporters__mask_base64),
		cmocka_unit_test(test_reporters__mask_random_against_reference),
		cmocka_unit_test(test_reporters__mask_bounded_memory),
		cmocka_unit_test(test_reporters__mask_large_output),
		cmocka_unit_test(test_reporters__mask_string),
	};
	return cmocka_run_group_tests_name("reporters_mask", tests, NULL, NULL);
}
