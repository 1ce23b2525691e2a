/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JUnit report: job test cases with failures, errors and skips; two jobs' own files merged
 * (a <testsuites> root and a <testsuite> root), names prefixed with the job; the written file
 * checked by xmllint and parsed again with the counts compared; markup, control characters,
 * terminal escapes and broken UTF-8 in a log tail escaped or cleaned; a malformed file's error
 * naming the file and the line; an external entity (XXE) never expanded; a DTD with an
 * external subset, a non-JUnit root and a file over 64 MiB refused.
 */
#include "test_reporters.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef struct fx {
	char *dir;
} fx;

static int setup(void **state)
{
	fx *f = sw_xcalloc(1, sizeof(*f));
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&f->dir, NULL, "sw-reporters-junit-", &err) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(err));
		sw_error_free(err);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	sw_error *err = NULL;
	int r = sw_fs_rm_rf(f->dir, &err);
	sw_error_free(err);
	free(f->dir);
	free(f);
	return r < 0 ? -1 : 0;
}

static char *put(fx *f, const char *name, const char *content)
{
	char *p = sw_path_join(f->dir, name);
	CHECK_OK(sw_fs_write_atomic(p, content, strlen(content), 0644, &err));
	return p;
}

static char *slurp(const char *path)
{
	char *data = NULL;
	size_t len = 0;
	CHECK_OK(sw_fs_read_file(&data, &len, path, 64 << 20, &err));
	return data;
}

/* xmllint (an independent parser) accepts the file as well-formed XML. */
static void assert_xmllint_ok(const char *path)
{
	cleanup_free char *cmd = sw_xasprintf("xmllint --noout --nonet '%s'", path);
	int st = system(cmd);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("xmllint rejects %s", path);
}

static const char suites_xml[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<testsuites>\n"
        "  <testsuite name=\"math\" tests=\"99\">\n"
        "    <testcase classname=\"math\" name=\"add\" time=\"0.1\"/>\n"
        "    <testcase classname=\"math\" name=\"div\"><failure message=\"1/0\">boom "
        "&lt;here&gt;</failure></testcase>\n"
        "    <testcase classname=\"math\" name=\"big\"><skipped/></testcase>\n"
        "  </testsuite>\n"
        "  <testsuite name=\"io\">\n"
        "    <testcase classname=\"io\" name=\"read\"><error message=\"EIO\"/></testcase>\n"
        "    <testcase classname=\"io\" name=\"write\"/>\n"
        "    <system-out><![CDATA[raw <out> & stuff]]></system-out>\n"
        "  </testsuite>\n"
        "</testsuites>\n";

static const char suite_xml[] = "<testsuite name=\"pytest\" tests=\"2\">\n"
                                "<testcase classname=\"t\" name=\"a\"/>\n"
                                "<testcase classname=\"t\" name=\"b\"><failure/></testcase>\n"
                                "</testsuite>\n";

static void test_reporters__junit_merge_and_write(void **state)
{
	fx *f = *state;
	cleanup_free char *a = put(f, "a.xml", suites_xml);
	cleanup_free char *b = put(f, "b.xml", suite_xml);
	sw_junit *j = sw_junit_new("slipway pipeline");
	sw_junit_add_job(j, "test", "unit", SW_JUNIT_PASSED, 1.5, NULL, NULL);
	sw_junit_add_job(j, "test", "lint", SW_JUNIT_FAILED, 0.25, "exit code 2",
	                 "line 1\n\033[31mred\033[0m <b>&amp;\"quoted\"</b>\x01\xff\xfe end\n");
	sw_junit_add_job(j, "test", "slow", SW_JUNIT_ERROR, 3600, "timed out after 1h", "...");
	sw_junit_add_job(j, "deploy", "ship", SW_JUNIT_SKIPPED, 0, "an earlier stage failed", NULL);
	CHECK_OK(sw_junit_merge_file(j, "unit", a, &err));
	CHECK_OK(sw_junit_merge_file(j, "py", b, &err));

	unsigned tests, failures, errors, skipped;
	sw_junit_counts(j, &tests, &failures, &errors, &skipped);
	/* jobs: 4 (1 failure, 1 error, 1 skip); a.xml: 5 (1, 1, 1); b.xml: 2 (1 failure) */
	assert_int_equal(tests, 11);
	assert_int_equal(failures, 3);
	assert_int_equal(errors, 2);
	assert_int_equal(skipped, 2);

	cleanup_free char *out = sw_path_join(f->dir, "report/junit.xml");
	cleanup_free char *outdir = sw_path_join(f->dir, "report");
	CHECK_OK(sw_fs_mkdir_p(outdir, 0755, &err));
	CHECK_OK(sw_junit_write(j, out, &err));
	sw_junit_free(j);
	assert_xmllint_ok(out);
	struct stat st;
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);

	cleanup_free char *x = slurp(out);
	assert_non_null(strstr(x, "<testsuites name=\"slipway pipeline\" tests=\"11\" "
	                          "failures=\"3\" errors=\"2\" skipped=\"2\""));
	assert_non_null(strstr(x, "<testsuite name=\"slipway pipeline\" tests=\"4\" failures=\"1\" "
	                          "errors=\"1\" skipped=\"1\""));
	assert_non_null(strstr(x, "<testcase classname=\"test\" name=\"unit\" time=\"1.500\"/>"));
	assert_non_null(strstr(x, "<failure message=\"exit code 2\">line 1\nred &lt;b&gt;&amp;amp;"
	                          "\"quoted\"&lt;/b&gt;\xef\xbf\xbd\xef\xbf\xbd end\n</failure>"));
	assert_non_null(strstr(x, "<error message=\"timed out after 1h\">...</error>"));
	assert_non_null(strstr(x, "<skipped message=\"an earlier stage failed\"/>"));
	/* merged suites follow the pipeline's, prefixed, counts recomputed */
	const char *p1 = strstr(x, "<testsuite name=\"unit: math\" tests=\"3\" failures=\"1\" "
	                           "errors=\"0\" skipped=\"1\"");
	const char *p2 = strstr(x, "<testsuite name=\"unit: io\" tests=\"2\" failures=\"0\" "
	                           "errors=\"1\" skipped=\"0\"");
	const char *p3 = strstr(x, "<testsuite name=\"py: pytest\" tests=\"2\" failures=\"1\"");
	assert_non_null(p1);
	assert_non_null(p2);
	assert_non_null(p3);
	assert_true(strstr(x, "name=\"slipway pipeline\" tests=\"4\"") < p1 && p1 < p2 && p2 < p3);
	assert_non_null(strstr(x, "<failure message=\"1/0\">boom &lt;here&gt;</failure>"));
	assert_non_null(strstr(x, "<![CDATA[raw <out> & stuff]]>"));
	assert_null(strstr(x, "\033"));

	/* parse the output again: the same totals (its suites get one more prefix) */
	sw_junit *again = sw_junit_new("again");
	CHECK_OK(sw_junit_merge_file(again, "re", out, &err));
	sw_junit_counts(again, &tests, &failures, &errors, &skipped);
	assert_int_equal(tests, 11);
	assert_int_equal(failures, 3);
	assert_int_equal(errors, 2);
	assert_int_equal(skipped, 2);
	sw_junit_free(again);
}

static void test_reporters__junit_malformed(void **state)
{
	fx *f = *state;
	cleanup_free char *p = put(f, "bad.xml",
	                           "<testsuite name=\"x\">\n"
	                           "  <testcase name=\"a\">\n"
	                           "  </testsuite>\n");
	sw_junit *j = sw_junit_new("p");
	sw_error *err = NULL;
	assert_true(sw_junit_merge_file(j, "unit", p, &err) < 0);
	cleanup_free char *want = sw_xasprintf("%s:3: ", p);
	if (strncmp(sw_error_msg(err), want, strlen(want)) != 0)
		fail_msg("message: %s", sw_error_msg(err));
	assert_non_null(strstr(sw_error_msg(err), "mismatch"));
	sw_error_clear(&err);

	/* not JUnit at all */
	cleanup_free char *q =
	        put(f, "html.xml", "<?xml version=\"1.0\"?>\n\n<html><body/></html>");
	assert_true(sw_junit_merge_file(j, "unit", q, &err) < 0);
	cleanup_free char *want2 = sw_xasprintf("%s:3: not a JUnit report", q);
	if (strncmp(sw_error_msg(err), want2, strlen(want2)) != 0)
		fail_msg("message: %s", sw_error_msg(err));
	sw_error_clear(&err);

	/* empty, binary, missing */
	cleanup_free char *e = put(f, "empty.xml", "");
	assert_true(sw_junit_merge_file(j, "unit", e, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), e));
	sw_error_clear(&err);
	cleanup_free char *m = sw_path_join(f->dir, "missing.xml");
	assert_true(sw_junit_merge_file(j, "unit", m, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), m));
	sw_error_clear(&err);

	/* a file over 64 MiB (sparse) */
	cleanup_free char *big = sw_path_join(f->dir, "big.xml");
	int fd = open(big, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)65 << 20), 0);
	close(fd);
	assert_true(sw_junit_merge_file(j, "unit", big, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), big));
	sw_error_clear(&err);

	/* nothing was merged by the failures */
	unsigned tests = 1;
	sw_junit_counts(j, &tests, NULL, NULL, NULL);
	assert_int_equal(tests, 0);
	sw_junit_free(j);
}

static void test_reporters__junit_xxe(void **state)
{
	fx *f = *state;
	cleanup_free char *secret = put(f, "secret.txt", "TOP-SECRET-CONTENT");
	cleanup_free char *doc = sw_xasprintf(
	        "<?xml version=\"1.0\"?>\n"
	        "<!DOCTYPE testsuite [\n"
	        "  <!ENTITY xxe SYSTEM \"file://%s\">\n"
	        "  <!ENTITY co \"ACME &amp; co\">\n"
	        "]>\n"
	        "<testsuite name=\"s\">\n"
	        "  <testcase name=\"t\"><failure message=\"m\">leak: &xxe; by &co;</failure>"
	        "</testcase>\n"
	        "</testsuite>\n",
	        secret);
	cleanup_free char *p = put(f, "xxe.xml", doc);
	sw_junit *j = sw_junit_new("p");
	CHECK_OK(sw_junit_merge_file(j, "unit", p, &err));
	cleanup_free char *out = sw_path_join(f->dir, "out.xml");
	CHECK_OK(sw_junit_write(j, out, &err));
	sw_junit_free(j);
	assert_xmllint_ok(out);
	cleanup_free char *x = slurp(out);
	assert_null(strstr(x, "TOP-SECRET"));
	assert_null(strstr(x, "ENTITY"));
	assert_null(strstr(x, "&xxe;"));
	/* an internal entity becomes its text */
	assert_non_null(strstr(x, "leak:  by ACME &amp;amp; co</failure>"));

	/* an external entity in an attribute value is a well-formedness error */
	cleanup_free char *doc2 = sw_xasprintf("<!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "
	                                       "\"file://%s\">]>\n<testsuite name=\"&xxe;\"/>\n",
	                                       secret);
	cleanup_free char *p2 = put(f, "xxe2.xml", doc2);
	j = sw_junit_new("p");
	sw_error *err = NULL;
	int r = sw_junit_merge_file(j, "unit", p2, &err);
	if (r == 0) {
		char *s = NULL;
		size_t l = 0;
		sw_junit__serialize(j, &s, &l);
		assert_null(strstr(s, "TOP-SECRET"));
		free(s);
	} else {
		assert_non_null(strstr(sw_error_msg(err), p2));
		assert_null(strstr(sw_error_msg(err), "TOP-SECRET"));
	}
	sw_error_clear(&err);

	/* a DTD with an external subset is refused, naming the line */
	cleanup_free char *p3 = put(f, "ext.xml",
	                            "<?xml version=\"1.0\"?>\n"
	                            "<!DOCTYPE testsuite SYSTEM \"http://127.0.0.1:1/junit.dtd\">\n"
	                            "<testsuite name=\"s\"/>\n");
	assert_true(sw_junit_merge_file(j, "unit", p3, &err) < 0);
	cleanup_free char *want = sw_xasprintf("%s:2: ", p3);
	if (strncmp(sw_error_msg(err), want, strlen(want)) != 0)
		fail_msg("message: %s", sw_error_msg(err));
	sw_error_clear(&err);

	/* the billion laughs do not blow up */
	cleanup_free char *p4 = put(
	        f, "lol.xml",
	        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n"
	        " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
	        " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
	        " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
	        " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
	        " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
	        " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
	        " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
	        " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
	        " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
	        "]>\n<testsuite name=\"&lol9;\"><testcase name=\"&lol9;\">&lol9;</testcase>"
	        "</testsuite>\n");
	r = sw_junit_merge_file(j, "unit", p4, &err);
	sw_error_clear(&err);
	char *s = NULL;
	size_t l = 0;
	sw_junit__serialize(j, &s, &l);
	assert_true(l < (1 << 20));
	free(s);
	(void)r;
	sw_junit_free(j);
}

static void test_reporters__junit_empty_and_attrs(void **state)
{
	fx *f = *state;
	/* a suite without test cases keeps its own figures */
	cleanup_free char *p = put(f, "attrs.xml",
	                           "<testsuites><testsuite name=\"summary\" tests=\"7\" "
	                           "failures=\"2\" errors=\"1\" skipped=\"1\"/></testsuites>");
	sw_junit *j = sw_junit_new(NULL);
	CHECK_OK(sw_junit_merge_file(j, "job", p, &err));
	unsigned t, fl, e, s;
	sw_junit_counts(j, &t, &fl, &e, &s);
	assert_int_equal(t, 7);
	assert_int_equal(fl, 2);
	assert_int_equal(e, 1);
	assert_int_equal(s, 1);
	cleanup_free char *out = sw_path_join(f->dir, "o.xml");
	CHECK_OK(sw_junit_write(j, out, &err));
	sw_junit_free(j);
	assert_xmllint_ok(out);
	cleanup_free char *x = slurp(out);
	assert_non_null(strstr(x, "<testsuite name=\"pipeline\" tests=\"0\""));
	assert_non_null(strstr(x, "<testsuite name=\"job: summary\" tests=\"7\" failures=\"2\""));

	/* writing into a folder that does not exist fails and names the path */
	j = sw_junit_new("p");
	cleanup_free char *bad = sw_path_join(f->dir, "nope/junit.xml");
	sw_error *err = NULL;
	assert_true(sw_junit_write(j, bad, &err) < 0);
	assert_non_null(strstr(sw_error_msg(err), bad));
	sw_error_free(err);
	sw_junit_free(j);
	sw_junit_free(NULL);
}

int test_reporters_junit_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reporters__junit_merge_and_write, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_reporters__junit_malformed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reporters__junit_xxe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reporters__junit_empty_and_attrs, setup,
		                                teardown),
	};
	return cmocka_run_group_tests_name("reporters_junit", tests, NULL, NULL);
}
