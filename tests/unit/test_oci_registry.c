/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the registry client's offline parts: WWW-Authenticate challenge parsing, Bearer
 * token answers and their expiry, credential lookup in a Docker config file (base64 "auth",
 * username/password, identity tokens, host spellings, a missing or broken file), base64, and
 * the choice between http and https. The network paths are covered by the integration tests
 * against the real registry.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "oci/oci_internal.h"
#include "tests/unit/test_oci.h"

#include <string.h>

/* ---------------------------------------------------------------- challenges */

static void test_oci__challenge_basic(void **state)
{
	(void)state;
	sw_oci__challenge c;
	sw_error *err = NULL;
	assert_int_equal(sw_oci__challenge_parse(&c, "Basic realm=\"Registry Realm\"", &err), 0);
	assert_int_equal(c.scheme, SW_OCI__AUTH_BASIC);
	assert_string_equal(c.realm, "Registry Realm");
	assert_null(c.service);
	assert_null(c.scope);
	sw_oci__challenge_clear(&c);

	/* a bare "Basic" (no params) is fine too, and case does not matter */
	assert_int_equal(sw_oci__challenge_parse(&c, "basic", &err), 0);
	assert_int_equal(c.scheme, SW_OCI__AUTH_BASIC);
	assert_null(c.realm);
	sw_oci__challenge_clear(&c);
}

static void test_oci__challenge_bearer(void **state)
{
	(void)state;
	sw_oci__challenge c;
	sw_error *err = NULL;
	const char *v =
	        "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example."
	        "com\",scope=\"repository:samalba/my-app:pull,push\"";
	assert_int_equal(sw_oci__challenge_parse(&c, v, &err), 0);
	assert_int_equal(c.scheme, SW_OCI__AUTH_BEARER);
	assert_string_equal(c.realm, "https://auth.example.com/token");
	assert_string_equal(c.service, "registry.example.com");
	/* the comma inside the quotes belongs to the scope */
	assert_string_equal(c.scope, "repository:samalba/my-app:pull,push");
	assert_null(c.error);
	sw_oci__challenge_clear(&c);
}

static void test_oci__challenge_spacing_and_unknown_params(void **state)
{
	(void)state;
	sw_oci__challenge c;
	sw_error *err = NULL;
	const char *v = "  BEARER   realm = \"http://127.0.0.1:5001/token?x=1,y=2\" ,  "
	                "foo=bar,service=reg ,error=\"insufficient_scope\", "
	                "scope=\"repository:a:pull repository:b:pull\",extra=\"q\\\"uoted\"  ";
	assert_int_equal(sw_oci__challenge_parse(&c, v, &err), 0);
	assert_null(err);
	assert_int_equal(c.scheme, SW_OCI__AUTH_BEARER);
	assert_string_equal(c.realm, "http://127.0.0.1:5001/token?x=1,y=2");
	assert_string_equal(c.service, "reg"); /* a token value, not quoted */
	assert_string_equal(c.error, "insufficient_scope");
	assert_string_equal(c.scope, "repository:a:pull repository:b:pull");
	sw_oci__challenge_clear(&c);

	/* escaped quote inside a quoted string */
	assert_int_equal(sw_oci__challenge_parse(&c, "Bearer realm=\"a\\\"b\"", &err), 0);
	assert_string_equal(c.realm, "a\"b");
	sw_oci__challenge_clear(&c);
}

static void test_oci__challenge_several(void **state)
{
	(void)state;
	sw_oci__challenge c;
	sw_error *err = NULL;
	/* Bearer wins over Basic, whatever the order; an unknown scheme is skipped */
	assert_int_equal(sw_oci__challenge_parse(&c,
	                                         "Negotiate abc==, Basic realm=\"b\", Bearer "
	                                         "realm=\"https://t/\",service=\"s\"",
	                                         &err),
	                 0);
	assert_int_equal(c.scheme, SW_OCI__AUTH_BEARER);
	assert_string_equal(c.realm, "https://t/");
	assert_string_equal(c.service, "s");
	sw_oci__challenge_clear(&c);
	assert_int_equal(sw_oci__challenge_parse(&c, "Digest realm=\"x\", Basic realm=\"b\"", &err),
	                 0);
	assert_int_equal(c.scheme, SW_OCI__AUTH_BASIC);
	assert_string_equal(c.realm, "b");
	sw_oci__challenge_clear(&c);
}

static void expect_challenge_error(const char *v, const char *needle)
{
	sw_oci__challenge c;
	sw_error *err = NULL;
	assert_int_equal(sw_oci__challenge_parse(&c, v, &err), SW_ERR_INVALID);
	assert_non_null(err);
	if (!strstr(sw_error_msg(err), needle))
		fail_msg("error for '%s' is '%s', expected it to mention '%s'", v,
		         sw_error_msg(err), needle);
	assert_null(c.realm);
	sw_error_free(err);
}

static void test_oci__challenge_malformed(void **state)
{
	(void)state;
	expect_challenge_error("", "empty");
	expect_challenge_error("Bearer realm=\"https://x", "unterminated");
	expect_challenge_error("Bearer service=\"s\"", "without realm");
	expect_challenge_error("realm=\"x\"", "before any scheme");
	expect_challenge_error("Bearer realm=\"x\" junk", "expected ','");
	expect_challenge_error("Digest realm=\"x\"", "unsupported scheme");
	expect_challenge_error("Bearer realm=\"x\",@", "unexpected");
	sw_oci__challenge c;
	sw_error *err = NULL;
	assert_int_equal(sw_oci__challenge_parse(&c, NULL, &err), SW_ERR_INVALID);
	sw_error_free(err);
}

/* ---------------------------------------------------------------- tokens */

static void test_oci__token_parse(void **state)
{
	(void)state;
	sw_oci__token t;
	sw_error *err = NULL;
	time_t now = 1700000000;
	const char *a = "{\"token\":\"tok-1\",\"access_token\":\"acc-1\",\"expires_in\":300}";
	assert_int_equal(sw_oci__token_parse(&t, a, strlen(a), now, &err), 0);
	assert_string_equal(t.token, "tok-1");
	assert_int_equal(t.expires_at, now + 300);
	assert_true(sw_oci__token_usable(&t, now));
	assert_true(sw_oci__token_usable(&t, now + 250));
	/* not used in the last moments before it expires */
	assert_false(sw_oci__token_usable(&t, now + 290));
	assert_false(sw_oci__token_usable(&t, now + 300));
	sw_oci__token_clear(&t);

	/* access_token alone; no expires_in means 60 s */
	const char *b = "{\"access_token\":\"acc-2\"}";
	assert_int_equal(sw_oci__token_parse(&t, b, strlen(b), now, &err), 0);
	assert_string_equal(t.token, "acc-2");
	assert_int_equal(t.expires_at, now + 60);
	assert_true(sw_oci__token_usable(&t, now + 30));
	assert_false(sw_oci__token_usable(&t, now + 59));
	sw_oci__token_clear(&t);

	/* expires_in below 60 is raised to 60 */
	const char *c = "{\"token\":\"x\",\"expires_in\":5}";
	assert_int_equal(sw_oci__token_parse(&t, c, strlen(c), now, &err), 0);
	assert_int_equal(t.expires_at, now + 60);
	sw_oci__token_clear(&t);
}

static void test_oci__token_issued_at(void **state)
{
	(void)state;
	sw_oci__token t;
	sw_error *err = NULL;
	/* 2023-11-14T22:13:20Z is 1700000000 */
	time_t now = 1700000000 + 100;
	const char *a =
	        "{\"token\":\"x\",\"expires_in\":300,\"issued_at\":\"2023-11-14T22:13:20Z\"}";
	assert_int_equal(sw_oci__token_parse(&t, a, strlen(a), now, &err), 0);
	assert_int_equal(t.expires_at, 1700000000 + 300);
	sw_oci__token_clear(&t);
	/* with a fraction and an offset */
	const char *b = "{\"token\":\"x\",\"expires_in\":300,"
	                "\"issued_at\":\"2023-11-15T00:13:20.123456+02:00\"}";
	assert_int_equal(sw_oci__token_parse(&t, b, strlen(b), now, &err), 0);
	assert_int_equal(t.expires_at, 1700000000 + 300);
	sw_oci__token_clear(&t);
	/* a server clock ahead of ours does not make the token live longer */
	const char *c =
	        "{\"token\":\"x\",\"expires_in\":300,\"issued_at\":\"2030-01-01T00:00:00Z\"}";
	assert_int_equal(sw_oci__token_parse(&t, c, strlen(c), now, &err), 0);
	assert_int_equal(t.expires_at, now + 300);
	sw_oci__token_clear(&t);
	/* garbage issued_at is ignored */
	const char *d = "{\"token\":\"x\",\"issued_at\":\"yesterday\"}";
	assert_int_equal(sw_oci__token_parse(&t, d, strlen(d), now, &err), 0);
	assert_int_equal(t.expires_at, now + 60);
	sw_oci__token_clear(&t);
}

static void test_oci__token_bad(void **state)
{
	(void)state;
	sw_oci__token t;
	const char *bad[] = { "",
		              "[]",
		              "{\"token\":\"\"}",
		              "{\"token\":5}",
		              "{\"other\":\"x\"}",
		              "{\"token\":\"x\",\"expires_in\":\"soon\"}",
		              "{\"token\":" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sw_error *err = NULL;
		if (sw_oci__token_parse(&t, bad[i], strlen(bad[i]), 1000, &err) != SW_ERR_INVALID)
			fail_msg("token answer '%s' was accepted", bad[i]);
		assert_non_null(err);
		assert_null(t.token);
		sw_error_free(err);
	}
}

/* ---------------------------------------------------------------- schemes */

static void test_oci__scheme_choice(void **state)
{
	(void)state;
	assert_true(sw_oci__host_plain_http("127.0.0.1:5000", NULL));
	assert_true(sw_oci__host_plain_http("127.0.0.1", NULL));
	assert_true(sw_oci__host_plain_http("127.8.9.10:443", NULL));
	assert_true(sw_oci__host_plain_http("localhost", NULL));
	assert_true(sw_oci__host_plain_http("LOCALHOST:5000", NULL));
	assert_true(sw_oci__host_plain_http("[::1]:5000", NULL));
	assert_true(sw_oci__host_plain_http("::1", NULL));
	assert_false(sw_oci__host_plain_http("registry.example.com", NULL));
	assert_false(sw_oci__host_plain_http("registry.example.com:5000", NULL));
	assert_false(sw_oci__host_plain_http("128.0.0.1:5000", NULL));
	assert_false(sw_oci__host_plain_http("localhost.example.com", NULL));
	assert_false(sw_oci__host_plain_http("127.0.0.1.example.com", NULL));
	assert_false(sw_oci__host_plain_http("[::2]:5000", NULL));
	assert_false(sw_oci__host_plain_http("", NULL));
	const char *insecure[] = { "registry.lan:5000", "other.lan", "http://third.lan/", NULL };
	assert_true(sw_oci__host_plain_http("registry.lan:5000", insecure));
	assert_false(sw_oci__host_plain_http("registry.lan:5001", insecure));
	assert_true(sw_oci__host_plain_http("other.lan:8080", insecure));
	assert_true(sw_oci__host_plain_http("other.lan", insecure));
	assert_true(sw_oci__host_plain_http("third.lan", insecure));
	assert_false(sw_oci__host_plain_http("fourth.lan", insecure));
}

/* ---------------------------------------------------------------- base64 */

static void test_oci__base64(void **state)
{
	(void)state;
	const char *plain[] = { "", "a", "ab", "abc", "abcd", "user:pa:ss" };
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		char *enc = sw_oci__base64_encode(plain[i], strlen(plain[i]));
		char *dec = NULL;
		size_t len = 0;
		sw_error *err = NULL;
		assert_int_equal(sw_oci__base64_decode(&dec, &len, enc, &err), 0);
		assert_int_equal(len, strlen(plain[i]));
		assert_memory_equal(dec, plain[i], len);
		free(enc);
		free(dec);
	}
	char *dec = NULL;
	size_t len = 0;
	sw_error *err = NULL;
	assert_int_equal(sw_oci__base64_decode(&dec, &len, "dXNlcjpwYXNz", &err), 0);
	assert_string_equal(dec, "user:pass");
	free(dec);
	/* missing padding is tolerated */
	assert_int_equal(sw_oci__base64_decode(&dec, &len, "YWI", &err), 0);
	assert_string_equal(dec, "ab");
	free(dec);
	assert_int_equal(sw_oci__base64_decode(&dec, &len, "a$b=", &err), SW_ERR_INVALID);
	sw_error_clear(&err);
	assert_int_equal(sw_oci__base64_decode(&dec, &len, "a=bc", &err), SW_ERR_INVALID);
	sw_error_clear(&err);
}

/* ---------------------------------------------------------------- docker config */

static void lookup_text(sw_oci_credentials *c, const char *json, const char *registry)
{
	sw_error *err = NULL;
	int rc = sw_oci__docker_config_lookup(c, json, strlen(json), "cfg.json", registry, &err);
	if (rc != 0)
		fail_msg("lookup of %s failed: %s", registry, sw_error_msg(err));
}

static void test_oci__docker_config_auth(void **state)
{
	(void)state;
	sw_oci_credentials c;
	/* base64("alice:s3cr:et") */
	const char *json = "{\"auths\":{\"127.0.0.1:5000\":{\"auth\":\"YWxpY2U6czNjcjpldA==\"},"
	                   "\"reg.example.com\":{\"username\":\"bob\",\"password\":\"pw\"},"
	                   "\"https://index.docker.io/v1/\":{\"auth\":\"aHViOmh1YnB3\"},"
	                   "\"https://other.example.com:5000/v2/\":{\"auth\":\"bzpw\"},"
	                   "\"http://plain.example.com\":{\"username\":\"p\",\"password\":\"q\"},"
	                   "\"ghcr.io\":{\"identitytoken\":\"refresh-me\"},"
	                   "\"helper.example.com\":{}}}";
	lookup_text(&c, json, "127.0.0.1:5000");
	assert_string_equal(c.username, "alice");
	assert_string_equal(c.password, "s3cr:et");
	assert_string_equal(c.registry, "127.0.0.1:5000");
	sw_oci_credentials_clear(&c);

	lookup_text(&c, json, "reg.example.com");
	assert_string_equal(c.username, "bob");
	assert_string_equal(c.password, "pw");
	sw_oci_credentials_clear(&c);

	/* Docker Hub's key serves its API host */
	lookup_text(&c, json, "registry-1.docker.io");
	assert_string_equal(c.username, "hub");
	assert_string_equal(c.password, "hubpw");
	sw_oci_credentials_clear(&c);

	/* scheme and path around the host are ignored; the port is not */
	lookup_text(&c, json, "other.example.com:5000");
	assert_string_equal(c.username, "o");
	assert_string_equal(c.password, "p");
	sw_oci_credentials_clear(&c);
	lookup_text(&c, json, "other.example.com");
	assert_null(c.username);
	lookup_text(&c, json, "plain.example.com");
	assert_string_equal(c.username, "p");
	sw_oci_credentials_clear(&c);

	/* an identity token is kept as the "<token>" user's password */
	lookup_text(&c, json, "ghcr.io");
	assert_string_equal(c.username, "<token>");
	assert_string_equal(c.password, "refresh-me");
	sw_oci_credentials_clear(&c);

	/* an empty entry (a credential helper's) and an unknown host give nothing */
	lookup_text(&c, json, "helper.example.com");
	assert_null(c.username);
	lookup_text(&c, json, "127.0.0.1:5001");
	assert_null(c.username);
	/* no auths at all */
	lookup_text(&c, "{\"credsStore\":\"desktop\"}", "127.0.0.1:5000");
	assert_null(c.username);
}

static void expect_config_error(const char *json, const char *needle)
{
	sw_oci_credentials c;
	sw_error *err = NULL;
	int rc = sw_oci__docker_config_lookup(&c, json, strlen(json), "/x/cfg.json", "h:1", &err);
	assert_int_equal(rc, SW_ERR_INVALID);
	assert_null(c.username);
	if (!strstr(sw_error_msg(err), "/x/cfg.json") || !strstr(sw_error_msg(err), needle))
		fail_msg("error for '%s' is '%s'", json, sw_error_msg(err));
	sw_error_free(err);
}

static void test_oci__docker_config_broken(void **state)
{
	(void)state;
	expect_config_error("{\"auths\":{", "line 1");
	expect_config_error("[1]", "not a JSON object");
	expect_config_error("{\"auths\":[]}", "auths");
	expect_config_error("{\"auths\":{\"h:1\":\"x\"}}", "not an object");
	expect_config_error("{\"auths\":{\"h:1\":{\"auth\":\"!!!\"}}}", "auth");
	/* base64 of "nocolon" */
	expect_config_error("{\"auths\":{\"h:1\":{\"auth\":\"bm9jb2xvbg==\"}}}", "USER:PASSWORD");
}

/* A temporary folder with a config file, for the file-level lookup. */
static char *write_config(const char *json)
{
	sw_error *err = NULL;
	char *dir = NULL;
	assert_int_equal(sw_fs_mkdtemp(&dir, sw_fs_tmpdir(), "sw-test-creds-", &err), 0);
	char *path = sw_path_join(dir, "config.json");
	assert_int_equal(sw_fs_write_atomic(path, json, strlen(json), 0600, &err), 0);
	free(path);
	return dir;
}

static void remove_dir(char *dir)
{
	sw_error *err = NULL;
	assert_int_equal(sw_fs_rm_rf(dir, &err), 0);
	free(dir);
}

static void test_oci__credentials_lookup_file(void **state)
{
	(void)state;
	char *dir = write_config("{\"auths\":{\"127.0.0.1:5000\":{\"auth\":\"dTpw\"}}}");
	char *path = sw_path_join(dir, "config.json");
	sw_oci_registry_opts opts;
	memset(&opts, 0, sizeof(opts));
	opts.docker_config = path;
	sw_oci_credentials c;
	sw_error *err = NULL;
	assert_int_equal(sw_oci_credentials_lookup(&c, &opts, "127.0.0.1:5000", &err), 0);
	assert_string_equal(c.username, "u");
	assert_string_equal(c.password, "p");
	sw_oci_credentials_clear(&c);

	/* slipway's own list comes first, by exact host */
	sw_oci_credentials own[] = {
		{ .registry = "127.0.0.1:5001", .username = "x", .password = "y" },
		{ .registry = "127.0.0.1:5000", .username = "own", .password = "ownpw" },
	};
	opts.credentials = own;
	opts.n_credentials = 2;
	assert_int_equal(sw_oci_credentials_lookup(&c, &opts, "127.0.0.1:5000", &err), 0);
	assert_string_equal(c.username, "own");
	assert_string_equal(c.password, "ownpw");
	sw_oci_credentials_clear(&c);
	opts.credentials = NULL;
	opts.n_credentials = 0;

	/* $DOCKER_CONFIG names the folder when opts has no file */
	char *old = getenv("DOCKER_CONFIG") ? sw_xstrdup(getenv("DOCKER_CONFIG")) : NULL;
	setenv("DOCKER_CONFIG", dir, 1);
	opts.docker_config = NULL;
	assert_int_equal(sw_oci_credentials_lookup(&c, &opts, "127.0.0.1:5000", &err), 0);
	assert_string_equal(c.username, "u");
	sw_oci_credentials_clear(&c);

	/* a missing file means no credentials, not an error */
	char *missing = sw_path_join(dir, "nope.json");
	opts.docker_config = missing;
	assert_int_equal(sw_oci_credentials_lookup(&c, &opts, "127.0.0.1:5000", &err), 0);
	assert_null(err);
	assert_null(c.username);

	/* a broken one is an error naming the file */
	assert_int_equal(sw_fs_write_atomic(path, "{oops", 5, 0600, &err), 0);
	opts.docker_config = path;
	assert_int_equal(sw_oci_credentials_lookup(&c, &opts, "127.0.0.1:5000", &err),
	                 SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), path));
	assert_null(c.username);
	sw_error_clear(&err);

	if (old) {
		setenv("DOCKER_CONFIG", old, 1);
		free(old);
	} else {
		unsetenv("DOCKER_CONFIG");
	}
	free(missing);
	free(path);
	remove_dir(dir);
}

/* ---------------------------------------------------------------- registry setup */

static void test_oci__registry_new(void **state)
{
	(void)state;
	sw_oci_registry *r = NULL;
	sw_error *err = NULL;
	sw_oci_registry_opts opts;
	memset(&opts, 0, sizeof(opts));
	assert_int_equal(sw_oci_registry_new(&r, "127.0.0.1:5000", &opts, &err), 0);
	const sw_oci_transfer_stats *st = sw_oci_registry_stats(r);
	assert_int_equal(st->requests, 0);
	assert_int_equal(st->blobs_uploaded, 0);
	sw_oci_registry_free(r);
	assert_int_equal(sw_oci_registry_new(&r, "bad/host", &opts, &err), SW_ERR_INVALID);
	assert_null(r);
	sw_error_clear(&err);
	assert_int_equal(sw_oci_registry_new(&r, "", NULL, &err), SW_ERR_INVALID);
	sw_error_clear(&err);
	sw_oci_registry_free(NULL);
}

int test_oci_registry_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_oci__challenge_basic),
		cmocka_unit_test(test_oci__challenge_bearer),
		cmocka_unit_test(test_oci__challenge_spacing_and_unknown_params),
		cmocka_unit_test(test_oci__challenge_several),
		cmocka_unit_test(test_oci__challenge_malformed),
		cmocka_unit_test(test_oci__token_parse),
		cmocka_unit_test(test_oci__token_issued_at),
		cmocka_unit_test(test_oci__token_bad),
		cmocka_unit_test(test_oci__scheme_choice),
		cmocka_unit_test(test_oci__base64),
		cmocka_unit_test(test_oci__docker_config_auth),
		cmocka_unit_test(test_oci__docker_config_broken),
		cmocka_unit_test(test_oci__credentials_lookup_file),
		cmocka_unit_test(test_oci__registry_new),
	};
	return cmocka_run_group_tests_name("oci_registry", tests, NULL, NULL);
}
