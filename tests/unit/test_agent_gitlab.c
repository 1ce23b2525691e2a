/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the GitLab runner's pure parts: the job payload (the client fixture of the
 * spec, and null/string/missing oddities), the one-job pipeline made of it (masked and file
 * variables as secrets, raw variables not expanded, CI_PROJECT_DIR left to the runner, service
 * names), Content-Range and Range, the crc32 checksum, API URLs and URLs without passwords,
 * artifacts zip made and unpacked (and an unsafe entry refused), and the trace's log limit.
 */
#include "test_agent_gitlab.h"

#include "agent/gitlab.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define CHECK_OK(expr)                                                \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int check_r_ = (expr);                                \
		if (check_r_ < 0)                                     \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

/* network/gitlab_test.go: getRequestJobResponse (the spec's client fixture) */
static const char fixture[] =
        "{\"id\": 10, \"token\": \"job-token\", \"allow_git_fetch\": false,"
        " \"job_info\": {\"name\": \"test-job\", \"stage\": \"test\", \"project_id\": 123,"
        "   \"project_name\": \"test-project\"},"
        " \"git_info\": {\"repo_url\": "
        "\"https://gitlab-ci-token:testTokenHere1234@gitlab.example.com/test/test-project.git\","
        "   \"ref\": \"main\", \"sha\": \"abcdef123456\", \"before_sha\": \"654321fedcba\","
        "   \"ref_type\": \"branch\"},"
        " \"runner_info\": {\"timeout\": 3600},"
        " \"variables\": [{\"key\": \"CI_REF_NAME\", \"value\": \"main\", \"public\": true,"
        "   \"file\": true, \"raw\": true}],"
        " \"steps\": [{\"name\": \"script\", \"script\": [\"date\", \"ls -ls\"], \"timeout\": 3600,"
        "   \"when\": \"on_success\", \"allow_failure\": false},"
        "  {\"name\": \"after_script\", \"script\": [\"ls -ls\"], \"timeout\": 3600,"
        "   \"when\": \"always\", \"allow_failure\": true}],"
        " \"image\": {\"name\": \"ruby:3.3\", \"entrypoint\": [\"/bin/sh\"],"
        "   \"executor_opts\": {\"docker\": {\"platform\": \"arm64/v8\"}}},"
        " \"services\": [{\"name\": \"postgresql:9.5\", \"entrypoint\": [\"/bin/sh\"],"
        "   \"command\": [\"sleep\", \"30\"], \"alias\": \"db-pg\","
        "   \"executor_opts\": {\"docker\": {\"platform\": \"amd64/linux\"}}},"
        "  {\"name\": \"mysql:5.6\", \"alias\": \"db-mysql\","
        "   \"executor_opts\": {\"docker\": {\"platform\": \"arm\"}}}],"
        " \"artifacts\": [{\"name\": \"artifact.zip\", \"untracked\": false, \"paths\": [\"out/*\"],"
        "   \"when\": \"always\", \"expire_in\": \"7d\"}],"
        " \"cache\": [{\"key\": \"$CI_COMMIT_SHA\", \"untracked\": false, \"paths\": [\"vendor/*\"],"
        "   \"policy\": \"push\"}],"
        " \"credentials\": [{\"type\": \"Registry\", \"url\": \"http://registry.gitlab.example.com/\","
        "   \"username\": \"gitlab-ci-token\", \"password\": \"job-token\"}],"
        " \"dependencies\": [{\"id\": 9, \"name\": \"other-job\", \"token\": \"other-job-token\","
        "   \"artifacts_file\": {\"filename\": \"binaries.zip\", \"size\": 13631488}}]}";

void test_agent__gitlab_parse_fixture(void **state)
{
	(void)state;
	sw_gitlab_job *j = NULL;
	CHECK_OK(sw_gitlab_job_parse(&j, fixture, strlen(fixture), &err));
	assert_int_equal(j->id, 10);
	assert_string_equal(j->token, "job-token");
	assert_string_equal(j->name, "test-job");
	assert_string_equal(j->stage, "test");
	assert_string_equal(j->sha, "abcdef123456");
	assert_string_equal(j->ref, "main");
	assert_string_equal(j->ref_type, "branch");
	assert_int_equal(j->timeout_s, 3600);
	assert_int_equal(j->n_vars, 1);
	assert_true(j->vars[0].file);
	assert_true(j->vars[0].raw);
	assert_false(j->vars[0].masked);
	assert_string_equal(sw_gitlab_job_var(j, "CI_REF_NAME"), "main");
	assert_null(sw_gitlab_job_var(j, "NOPE"));
	assert_int_equal(sw_strv_len(j->script), 2);
	assert_string_equal(j->script[1], "ls -ls");
	assert_int_equal(sw_strv_len(j->after_script), 1);
	assert_string_equal(j->image, "ruby:3.3");
	assert_int_equal(j->n_services, 2);
	assert_string_equal(j->services[0].alias, "db-pg");
	assert_string_equal(j->services[0].command[1], "30");
	assert_null(j->services[1].entrypoint);
	assert_int_equal(j->n_artifacts, 1);
	assert_string_equal(j->artifacts[0].paths[0], "out/*");
	assert_string_equal(j->artifacts[0].when, "always");
	assert_string_equal(j->artifacts[0].expire_in, "7d");
	assert_int_equal(j->n_deps, 1);
	assert_int_equal(j->deps[0].id, 9);
	assert_string_equal(j->deps[0].token, "other-job-token");
	assert_true(j->deps[0].has_file);
	assert_int_equal(j->n_creds, 1);
	assert_string_equal(j->creds[0].host, "registry.gitlab.example.com");
	assert_string_equal(j->creds[0].password, "job-token");
	sw_gitlab_job_free(j);
}

void test_agent__gitlab_parse_odd(void **state)
{
	(void)state;
	/* nulls, strings where arrays are usual, no steps, unknown keys */
	const char *odd = "{\"id\": 7, \"token\": \"t\", \"variables\": null, \"image\": "
	                  "{\"name\": \"alpine\", \"entrypoint\": \"/bin/sh\"}, \"services\": "
	                  "[{\"name\": \"redis\", \"alias\": null, \"command\": \"redis-server\"}],"
	                  " \"whatever\": {\"x\": 1}, \"time_in_queue_seconds\": 1.5}";
	sw_gitlab_job *j = NULL;
	CHECK_OK(sw_gitlab_job_parse(&j, odd, strlen(odd), &err));
	assert_int_equal(j->id, 7);
	assert_string_equal(j->name, "job-7");
	assert_null(j->script);
	assert_string_equal(j->image_entrypoint[0], "/bin/sh");
	assert_string_equal(j->services[0].command[0], "redis-server");
	assert_null(j->services[0].alias);
	sw_pipeline *p = NULL;
	char **args = NULL, **mask = NULL;
	sw_error *e = NULL;
	assert_true(sw_gitlab_pipeline(&p, &args, &mask, j, NULL, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "no `script`"));
	sw_error_free(e);
	sw_gitlab_job_free(j);

	/* not a job */
	e = NULL;
	assert_true(sw_gitlab_job_parse(&j, "[1]", 3, &e) < 0);
	sw_error_free(e);
	e = NULL;
	assert_true(sw_gitlab_job_parse(&j, "{\"id\": 3}", 9, &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "no id or token"));
	sw_error_free(e);
}

void test_agent__gitlab_pipeline(void **state)
{
	(void)state;
	const char *js =
	        "{\"id\": 5, \"token\": \"tok\", \"job_info\": {\"name\": \"unit\", \"stage\": "
	        "\"check\"}, \"runner_info\": {\"timeout\": 90}, \"image\": {\"name\": \"bb:1\"},"
	        " \"steps\": [{\"name\": \"script\", \"script\": [\"make\", \"make test\"]},"
	        "  {\"name\": \"after_script\", \"script\": [\"echo done\"]}],"
	        " \"services\": [{\"name\": \"registry.example.com:5000/lib/postgres:15\"},"
	        "  {\"name\": \"redis:7\", \"alias\": \"cache\"}],"
	        " \"variables\": ["
	        "  {\"key\": \"PLAIN\", \"value\": \"x-$HOME\", \"public\": true, \"masked\": false},"
	        "  {\"key\": \"RAW\", \"value\": \"y-$HOME\", \"public\": true, \"masked\": false,"
	        "   \"raw\": true},"
	        "  {\"key\": \"TOKEN\", \"value\": \"first-secret\", \"masked\": true},"
	        "  {\"key\": \"TOKEN\", \"value\": \"second-secret\", \"masked\": true},"
	        "  {\"key\": \"KUBECONFIG\", \"value\": \"apiVersion: v1\", \"file\": true},"
	        "  {\"key\": \"CI_PROJECT_DIR\", \"value\": \"/builds/g/p\"}]}";
	sw_gitlab_job *j = NULL;
	CHECK_OK(sw_gitlab_job_parse(&j, js, strlen(js), &err));
	sw_pipeline *p = NULL;
	char **args = NULL, **mask = NULL;
	CHECK_OK(sw_gitlab_pipeline(&p, &args, &mask, j, NULL, &err));
	assert_int_equal(p->n_stages, 1);
	assert_string_equal(p->stages[0].name, "check");
	assert_int_equal(p->n_jobs, 1);
	sw_pl_job *pj = &p->jobs[0];
	assert_string_equal(pj->name, "unit");
	assert_string_equal(pj->image, "bb:1");
	assert_int_equal(pj->timeout_ms, 90000);
	assert_int_equal(pj->run.n, 2);
	assert_string_equal(pj->run.v[1], "make test");
	assert_int_equal(pj->after.n, 1);
	assert_int_equal(pj->network, SW_PL_NET_PRIVATE);
	/* env: plain and raw ($ escaped so that expansion gives it back); no CI_PROJECT_DIR */
	assert_int_equal(pj->env.n, 2);
	assert_string_equal(pj->env.v[0].key, "PLAIN");
	assert_string_equal(pj->env.v[0].value, "x-$HOME");
	assert_string_equal(pj->env.v[1].key, "RAW");
	assert_string_equal(pj->env.v[1].value, "y-$$HOME");
	/* secrets: the masked one (once) and the file one */
	assert_int_equal(pj->n_secrets, 2);
	assert_string_equal(pj->secrets[0].name, "TOKEN");
	assert_false(pj->secrets[0].as_file);
	assert_string_equal(pj->secrets[1].name, "KUBECONFIG");
	assert_true(pj->secrets[1].as_file);
	/* the run takes the first NAME=VALUE: the last variable must come first */
	assert_string_equal(args[0], "KUBECONFIG=apiVersion: v1");
	assert_string_equal(args[1], "TOKEN=second-secret");
	assert_string_equal(args[2], "TOKEN=first-secret");
	assert_int_equal(sw_strv_len(mask), 2); /* masked values only, not the file's */
	/* services: alias, else the image's basename */
	assert_int_equal(pj->n_services, 2);
	assert_string_equal(pj->services[0].name, "postgres");
	assert_string_equal(pj->services[0].image, "registry.example.com:5000/lib/postgres:15");
	assert_string_equal(pj->services[1].name, "cache");
	sw_pipeline_free(p);
	sw_strv_free(args);
	sw_strv_free(mask);

	/* an image given by the runner (SLIPWAY_BUILD's) replaces a missing one */
	p = NULL;
	args = mask = NULL;
	CHECK_OK(sw_gitlab_pipeline(&p, &args, &mask, j, "127.0.0.1:5000/g/app:abc", &err));
	assert_string_equal(p->jobs[0].image, "127.0.0.1:5000/g/app:abc");
	sw_pipeline_free(p);
	sw_strv_free(args);
	sw_strv_free(mask);
	sw_gitlab_job_free(j);
}

void test_agent__gitlab_protocol_helpers(void **state)
{
	(void)state;
	char cr[48];
	/* TestPatchTraceUpdatedTrace: "test" -> 0-3, " " -> 4-4, "test" -> 5-8 */
	sw_gitlab_content_range(cr, 0, 4);
	assert_string_equal(cr, "0-3");
	sw_gitlab_content_range(cr, 4, 1);
	assert_string_equal(cr, "4-4");
	sw_gitlab_content_range(cr, 5, 4);
	assert_string_equal(cr, "5-8");
	uint64_t end = 0;
	assert_true(sw_gitlab_range_end("0-10", &end));
	assert_int_equal(end, 10);
	assert_true(sw_gitlab_range_end(" 0-1439\r\n", &end));
	assert_int_equal(end, 1439);
	assert_true(sw_gitlab_range_end("bytes=0-7", &end));
	assert_int_equal(end, 7);
	assert_false(sw_gitlab_range_end(NULL, &end));
	assert_false(sw_gitlab_range_end("", &end));
	assert_false(sw_gitlab_range_end("-5", &end));
	assert_false(sw_gitlab_range_end("0-", &end));
	assert_false(sw_gitlab_range_end("0-12x", &end));
	assert_false(sw_gitlab_range_end("a-12", &end));
	char sum[16];
	sw_gitlab_checksum(sum, (uint32_t)crc32(0, (const Bytef *)"hello", 5));
	assert_string_equal(sum, "crc32:3610a686");
	sw_gitlab_checksum(sum, 0);
	assert_string_equal(sum, "crc32:00000000");
	char *u = sw_gitlab_api_url("https://gitlab.example.com/ci/", "jobs/request");
	assert_string_equal(u, "https://gitlab.example.com/api/v4/jobs/request");
	free(u);
	u = sw_gitlab_api_url("http://127.0.0.1:8080", "runners/verify");
	assert_string_equal(u, "http://127.0.0.1:8080/api/v4/runners/verify");
	free(u);
	u = sw_gitlab_url_safe("https://gitlab-ci-token:secret123@gitlab.example.com/a/b.git");
	assert_string_equal(u, "https://gitlab.example.com/a/b.git");
	free(u);
	u = sw_gitlab_url_safe("file:///srv/repo");
	assert_string_equal(u, "file:///srv/repo");
	free(u);
	/* the runner's info advertises what is done, and only that */
	json_t *info = sw_gitlab_info();
	json_t *f = json_object_get(info, "features");
	assert_true(json_is_true(json_object_get(f, "artifacts")));
	assert_true(json_is_true(json_object_get(f, "cancelable")));
	assert_true(json_is_true(json_object_get(f, "masking")));
	assert_true(json_is_false(json_object_get(f, "cache")));
	assert_true(json_is_false(json_object_get(f, "terminal")));
	json_decref(info);
}

static char *mktmp(void)
{
	char tmpl[] = "/tmp/sw-test-gitlab-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	return sw_xstrdup(tmpl);
}

static void put_file(const char *dir, const char *rel, const char *text)
{
	char *p = sw_path_join(dir, rel);
	sw_error *e = NULL;
	char *d = sw_xstrdup(p);
	*strrchr(d, '/') = 0;
	assert_int_equal(sw_fs_mkdir_p(d, 0755, &e), 0);
	assert_int_equal(sw_fs_write_atomic(p, text, strlen(text), 0640, &e), 0);
	free(d);
	free(p);
}

static void expect_file(const char *dir, const char *rel, const char *text)
{
	char *p = sw_path_join(dir, rel);
	char *buf = NULL;
	size_t len = 0;
	sw_error *e = NULL;
	if (sw_fs_read_file(&buf, &len, p, 1 << 20, &e) < 0)
		fail_msg("%s: %s", p, sw_error_msg(e));
	assert_string_equal(buf, text);
	free(buf);
	free(p);
}

void test_agent__gitlab_zip(void **state)
{
	(void)state;
	char *tmp = mktmp();
	char *ws = sw_path_join(tmp, "ws");
	char *dst = sw_path_join(tmp, "dst");
	char *zip = sw_path_join(tmp, "a.zip");
	put_file(ws, "out/a.txt", "alpha\n");
	put_file(ws, "out/sub/b.txt", "beta\n");
	put_file(ws, "other.txt", "no\n");
	char *lnk = sw_path_join(ws, "out/link");
	assert_int_equal(symlink("a.txt", lnk), 0);
	char *paths[] = { "out", NULL };
	size_t n = 0;
	CHECK_OK(sw_gitlab_zip_create(zip, ws, paths, &n, &err));
	assert_int_equal(n, 5); /* out/, a.txt, link, sub/, sub/b.txt */
	assert_int_equal(mkdir(dst, 0755), 0);
	CHECK_OK(sw_gitlab_zip_extract(zip, dst, &err));
	expect_file(dst, "out/a.txt", "alpha\n");
	expect_file(dst, "out/sub/b.txt", "beta\n");
	char *olnk = sw_path_join(dst, "out/link");
	char target[64] = "";
	assert_int_equal(readlink(olnk, target, sizeof(target) - 1), 5);
	assert_string_equal(target, "a.txt");
	char *other = sw_path_join(dst, "other.txt");
	assert_int_equal(access(other, F_OK), -1);
	struct stat st;
	char *ap = sw_path_join(dst, "out/a.txt");
	assert_int_equal(stat(ap, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);

	/* an entry going up is refused, nothing is written outside */
	char *evil = sw_path_join(tmp, "evil.zip");
	struct archive *a = archive_write_new();
	archive_write_set_format_zip(a);
	assert_int_equal(archive_write_open_filename(a, evil), ARCHIVE_OK);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, "../escaped.txt");
	archive_entry_set_mode(e, S_IFREG | 0644);
	archive_entry_set_size(e, 3);
	assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
	assert_int_equal(archive_write_data(a, "bad", 3), 3);
	archive_entry_free(e);
	archive_write_close(a);
	archive_write_free(a);
	sw_error *er = NULL;
	assert_true(sw_gitlab_zip_extract(evil, dst, &er) < 0);
	assert_non_null(strstr(sw_error_msg(er), "unsafe"));
	sw_error_free(er);
	char *esc = sw_path_join(tmp, "escaped.txt");
	assert_int_equal(access(esc, F_OK), -1);

	er = NULL;
	assert_int_equal(sw_fs_rm_rf(tmp, &er), 0);
	free(esc);
	free(evil);
	free(ap);
	free(other);
	free(olnk);
	free(lnk);
	free(zip);
	free(dst);
	free(ws);
	free(tmp);
}

void test_agent__gitlab_trace_limit(void **state)
{
	(void)state;
	/* nothing is sent (no thread): only the buffer, its CRC and the limit */
	sw_gitlab_trace_opts o = {
		.url = "http://127.0.0.1:9", .job_id = 1, .token = "t", .limit = 10
	};
	sw_gitlab_trace *t = NULL;
	CHECK_OK(sw_gitlab_trace_new(&t, &o, &err));
	sw_gitlab_trace_write(t, "hello", 5);
	uint32_t crc = 0;
	uint64_t size = 0;
	sw_gitlab_trace_sum(t, &crc, &size);
	assert_int_equal(size, 5);
	assert_int_equal(crc, 0x3610a686);
	sw_gitlab_trace_write(t, " world, and more", 16);
	sw_gitlab_trace_write(t, "dropped", 7);
	sw_gitlab_trace_sum(t, &crc, &size);
	const char *note = "\nJob's log exceeded limit of 10 bytes.\nJob execution will continue "
	                   "but no more output will be collected.\n";
	char *want = sw_xasprintf("hello worl%s", note);
	assert_int_equal(size, strlen(want));
	assert_int_equal(crc, (uint32_t)crc32(0, (const Bytef *)want, (uInt)strlen(want)));
	free(want);
	sw_gitlab_trace_free(t);
}
