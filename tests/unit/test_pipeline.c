/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of pipeline/: the issue's example file parsed field by field, a file using every
 * other accepted form (anchors, aliases, merge keys, long forms), every broken file of
 * tests/unit/pipelines/broken/ against its NAME.expected ("LINE:COLUMN: message part" lines:
 * the first is the error sw_pipeline_parse gives, all of them together are exactly what lint
 * lists), variable expansion, globs, `when` decisions and durations.
 */
#include "pipeline/pipeline.h"

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static char *pipelines_dir(const char *sub)
{
	const char *src = getenv("SW_TEST_SRCDIR");
	if (src && *src)
		return sw_xasprintf("%s/tests/unit/pipelines/%s", src, sub);
	/* __FILE__ is absolute in CMake builds: .../tests/unit/test_pipeline.c */
	char *f = sw_xstrdup(__FILE__);
	char *slash = strrchr(f, '/');
	if (slash)
		*slash = '\0';
	char *r = sw_xasprintf("%s/pipelines/%s", f, sub);
	free(f);
	return r;
}

static sw_pipeline *load_good(const char *name)
{
	char *dir = pipelines_dir("good");
	char *path = sw_xasprintf("%s/%s", dir, name);
	char *buf = NULL;
	size_t len = 0;
	sw_error *err = NULL;
	assert_int_equal(sw_fs_read_file(&buf, &len, path, 0, &err), 0);
	sw_pipeline *p = NULL;
	int r = sw_pipeline_parse(&p, buf, len, name, &err);
	if (r < 0)
		fail_msg("%s: %s", name, sw_error_msg(err));
	char **problems = NULL;
	assert_int_equal(sw_pipeline_lint(&problems, buf, len, name, &err), 0);
	assert_non_null(problems);
	assert_null(problems[0]);
	sw_strv_free(problems);
	free(buf);
	free(path);
	free(dir);
	return p;
}

static const char *kv(const sw_pl_kvs *k, const char *key)
{
	for (size_t i = 0; i < k->n; i++)
		if (!strcmp(k->v[i].key, key))
			return k->v[i].value;
	return NULL;
}

static void test_pipeline__example(void **state)
{
	(void)state;
	sw_pipeline *p = load_good("example.yml");
	assert_string_equal(p->file, "example.yml");
	assert_true(p->image.given);
	assert_string_equal(p->image.dockerfile, "Dockerfile");
	assert_string_equal(p->image.context, ".");
	assert_string_equal(p->image.target, "test");
	assert_int_equal(p->image.args.n, 1);
	assert_string_equal(p->image.args.v[0].key, "VERSION");
	assert_string_equal(p->image.args.v[0].value, "${SLIPWAY_COMMIT_SHORT_SHA}");
	assert_int_equal(p->image.args.v[0].pos.line, 5);
	assert_int_equal(p->env.n, 1);
	assert_string_equal(kv(&p->env, "LANG"), "C.UTF-8");
	assert_int_equal(p->timeout_ms, 0);

	assert_int_equal(p->n_stages, 2);
	assert_string_equal(p->stages[0].name, "lint");
	assert_string_equal(p->stages[1].name, "test");
	assert_int_equal(p->stages[1].pos.line, 12);
	assert_int_equal(p->stages[1].pos.column, 5);
	assert_int_equal(p->n_jobs, 2);
	assert_int_equal(p->stages[0].n_jobs, 1);
	assert_int_equal(p->stages[0].jobs[0], 0);
	assert_int_equal(p->stages[1].n_jobs, 1);
	assert_int_equal(p->stages[1].jobs[0], 1);

	const sw_pl_job *l = &p->jobs[0];
	assert_string_equal(l->name, "lint");
	assert_int_equal(l->stage, 0);
	assert_int_equal(l->run.n, 1);
	assert_string_equal(l->run.v[0], "make lint");
	assert_null(l->image);
	assert_int_equal(l->network, SW_PL_NET_NONE);
	assert_int_equal(l->timeout_ms, 0);
	assert_false(l->when.given);
	assert_null(l->cache.key);

	assert_int_equal(sw_pipeline_job_find(p, "unit"), 1);
	assert_int_equal(sw_pipeline_job_find(p, "nope"), -1);
	const sw_pl_job *j = &p->jobs[1];
	assert_string_equal(j->name, "unit");
	assert_int_equal(j->stage, 1);
	assert_int_equal(j->pos.line, 14);
	assert_int_equal(j->pos.column, 9);
	assert_int_equal(j->run.n, 1);
	assert_string_equal(j->run.v[0], "make test");
	assert_int_equal(j->after.n, 0);
	assert_string_equal(j->image, "alpine:3.20");
	assert_null(j->workdir);
	assert_null(j->user);
	assert_int_equal(j->env.n, 1);
	assert_string_equal(kv(&j->env, "K"), "V");
	assert_int_equal(j->n_secrets, 1);
	assert_string_equal(j->secrets[0].name, "NPM_TOKEN");
	assert_false(j->secrets[0].as_file);
	assert_int_equal(j->n_services, 1);
	const sw_pl_service *s = &j->services[0];
	assert_string_equal(s->name, "db");
	assert_string_equal(s->image, "postgres:15");
	assert_string_equal(kv(&s->env, "POSTGRES_PASSWORD"), "x");
	assert_int_equal(s->command.n, 0);
	assert_int_equal(s->entrypoint.n, 0);
	assert_int_equal(s->ready.tcp, 5432);
	assert_null(s->ready.run);
	assert_int_equal(s->ready.timeout_ms, 60000);
	assert_int_equal(s->ready.interval_ms, 100);
	assert_int_equal(s->pos.line, 20);
	assert_int_equal(j->network, SW_PL_NET_PRIVATE);
	assert_int_equal(j->timeout_ms, 600000);
	assert_int_equal(j->retry, 1);
	assert_false(j->retry_on_timeout);
	assert_false(j->allow_failure);
	assert_int_equal(j->needs.n, 1);
	assert_string_equal(j->needs.v[0], "lint");
	assert_true(j->when.given);
	assert_int_equal(j->when.branch.n, 2);
	assert_string_equal(j->when.branch.v[0], "main");
	assert_string_equal(j->when.branch.v[1], "release/*");
	assert_int_equal(j->when.tag, 1);
	assert_int_equal(j->when.changes.n, 1);
	assert_string_equal(j->when.changes.v[0], "src/**");
	assert_int_equal(j->when.status, SW_PL_ON_SUCCESS);
	assert_int_equal(j->artifacts.paths.n, 1);
	assert_string_equal(j->artifacts.paths.v[0], "build/*.tar.gz");
	assert_int_equal(j->artifacts.when, SW_PL_ALWAYS);
	assert_int_equal(j->junit.n, 1);
	assert_string_equal(j->junit.v[0], "build/junit.xml");
	assert_string_equal(j->cache.key, "deps-${checksum(package-lock.json)}");
	assert_int_equal(j->cache.paths.n, 1);
	assert_string_equal(j->cache.paths.v[0], "node_modules");
	assert_int_equal(j->cache.policy, SW_PL_CACHE_PULL_PUSH);

	assert_int_equal(p->n_promote, 1);
	const sw_pl_promote *pr = &p->promote[0];
	assert_string_equal(pr->to, "registry.example.com/team/app");
	assert_int_equal(pr->tags.n, 3);
	assert_string_equal(pr->tags.v[0], "${SLIPWAY_COMMIT_SHA}");
	assert_string_equal(pr->tags.v[1], "${SLIPWAY_BRANCH}");
	assert_string_equal(pr->tags.v[2], "latest");
	assert_true(pr->when.given);
	assert_int_equal(pr->when.branch.n, 1);
	assert_string_equal(pr->when.branch.v[0], "main");
	assert_int_equal(pr->when.tag, -1);
	assert_int_equal(pr->pos.line, 34);
	sw_pipeline_free(p);
}

static void test_pipeline__full(void **state)
{
	(void)state;
	sw_pipeline *p = load_good("full.yml");
	assert_false(p->image.given);
	assert_string_equal(p->image.dockerfile, "Dockerfile");
	assert_string_equal(p->image.context, ".");
	assert_null(p->image.target);
	assert_int_equal(p->timeout_ms, 5400000);
	assert_string_equal(kv(&p->env, "GREETING"), "hello");
	assert_string_equal(kv(&p->env, "EMPTY"), "");
	assert_int_equal(p->n_jobs, 3);

	const sw_pl_job *c = &p->jobs[0];
	assert_string_equal(c->name, "compile");
	assert_string_equal(c->image, "busybox:1.36"); /* merged from &defaults */
	assert_int_equal(c->timeout_ms, 300000);
	assert_int_equal(c->retry, 2);
	assert_true(c->retry_on_timeout);
	assert_string_equal(kv(&c->env, "A"), "1");
	assert_string_equal(kv(&c->env, "B"), "${GREETING:-hi}");
	assert_int_equal(c->run.n, 2);
	assert_string_equal(c->run.v[1], "echo two");
	assert_int_equal(c->after.n, 1);
	assert_string_equal(c->after.v[0], "echo cleanup");
	assert_string_equal(c->workdir, "src");
	assert_string_equal(c->user, "1000:1000");
	assert_int_equal(c->network, SW_PL_NET_NONE);
	assert_int_equal(c->artifacts.paths.n, 1);
	assert_string_equal(c->artifacts.paths.v[0], "out/app");
	assert_int_equal(c->artifacts.when, SW_PL_ON_SUCCESS);
	assert_string_equal(c->cache.key, "default");
	assert_int_equal(c->cache.policy, SW_PL_CACHE_PULL);

	const sw_pl_job *d = &p->jobs[1];
	assert_string_equal(d->name, "docs");
	assert_int_equal(d->timeout_ms, 90000); /* explicit key wins over the merge */
	assert_string_equal(d->image, "busybox:1.36");
	assert_string_equal(kv(&d->env, "B"), "${GREETING:-hi}"); /* alias */
	assert_int_equal(d->after.n, 2);
	assert_true(d->allow_failure);
	assert_int_equal(d->network, SW_PL_NET_HOST);
	assert_true(d->when.given);
	assert_int_equal(d->when.status, SW_PL_ALWAYS);
	assert_int_equal(d->when.tag, -1);

	const sw_pl_job *it = &p->jobs[2];
	assert_int_equal(it->stage, 1);
	assert_int_equal(it->retry, 0);
	assert_int_equal(it->needs.n, 1);
	assert_string_equal(it->needs.v[0], "compile");
	assert_int_equal(it->n_secrets, 2);
	assert_string_equal(it->secrets[0].name, "API_KEY");
	assert_false(it->secrets[0].as_file);
	assert_string_equal(it->secrets[1].name, "TLS_KEY");
	assert_true(it->secrets[1].as_file);
	assert_int_equal(it->n_services, 2);
	const sw_pl_service *s = &it->services[0];
	assert_string_equal(s->name, "cache");
	assert_int_equal(s->command.n, 3);
	assert_string_equal(s->command.v[0], "redis-server");
	assert_string_equal(s->command.v[2], "\"\"");
	assert_int_equal(s->entrypoint.n, 1);
	assert_string_equal(s->entrypoint.v[0], "/usr/local/bin/docker-entrypoint.sh");
	assert_int_equal(s->ready.tcp, 0);
	assert_string_equal(s->ready.run, "redis-cli ping");
	assert_int_equal(s->ready.timeout_ms, 30000);
	assert_int_equal(s->ready.interval_ms, 250);
	assert_string_equal(it->services[1].image, "nginx:1.25");
	assert_int_equal(it->services[1].ready.timeout_ms, 60000);
	assert_int_equal(it->when.branch.n, 1);
	assert_string_equal(it->when.branch.v[0], "main");
	assert_int_equal(it->when.tag, 0);
	assert_int_equal(it->when.changes.n, 2);
	assert_int_equal(it->when.status, SW_PL_ON_FAILURE);
	assert_int_equal(it->junit.n, 2);
	assert_string_equal(it->cache.key, "k-${SLIPWAY_JOB_NAME}");
	assert_int_equal(it->cache.paths.n, 2);
	assert_int_equal(it->cache.policy, SW_PL_CACHE_PUSH);

	assert_int_equal(p->n_promote, 2);
	assert_string_equal(p->promote[0].to, "127.0.0.1:5000/team/app");
	assert_int_equal(p->promote[0].tags.n, 1);
	assert_string_equal(p->promote[0].tags.v[0], "latest");
	assert_false(p->promote[0].when.given);
	assert_string_equal(p->promote[1].to, "localhost/app");
	assert_int_equal(p->promote[1].when.tag, 1);
	sw_pipeline_free(p);
}

/* ---------------------------------------------------------------- broken files */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Does `msg` say "FILE:L:C: ..." with the part of `expect` ("L:C: text") in it? */
static bool matches(const char *msg, const char *file, const char *expect)
{
	const char *sp = strchr(expect, ' ');
	if (!sp)
		return false;
	char *prefix = sw_xasprintf("%s:%.*s ", file, (int)(sp - expect + 0), expect);
	bool ok = !strncmp(msg, prefix, strlen(prefix)) && strstr(msg + strlen(prefix), sp + 1);
	free(prefix);
	return ok;
}

static void test_pipeline__broken_files(void **state)
{
	(void)state;
	char *dir = pipelines_dir("broken");
	DIR *d = opendir(dir);
	if (!d)
		fail_msg("open %s: %s", dir, strerror(errno));
	char **names = NULL;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n > 4 && !strcmp(de->d_name + n - 4, ".yml"))
			sw_strv_push(&names, de->d_name);
	}
	closedir(d);
	size_t count = sw_strv_len(names);
	assert_true(count >= 30);
	qsort(names, count, sizeof(char *), cmp_str);
	int failures = 0;
	for (size_t i = 0; i < count; i++) {
		char *path = sw_xasprintf("%s/%s", dir, names[i]);
		char *epath = sw_xasprintf("%.*s.expected", (int)(strlen(path) - 4), path);
		char *file = sw_xasprintf("broken/%s", names[i]);
		char *buf = NULL, *ebuf = NULL;
		size_t len = 0;
		sw_error *err = NULL;
		assert_int_equal(sw_fs_read_file(&buf, &len, path, 0, &err), 0);
		if (sw_fs_read_file(&ebuf, NULL, epath, 0, &err) < 0)
			fail_msg("%s has no .expected file", names[i]);
		char **expect = NULL;
		for (char *line = strtok(ebuf, "\n"); line; line = strtok(NULL, "\n"))
			if (*line)
				sw_strv_push(&expect, line);
		assert_non_null(expect);

		sw_pipeline *p = NULL;
		int r = sw_pipeline_parse(&p, buf, len, file, &err);
		if (r != SW_ERR_INVALID || p || !err) {
			print_error("%s: parse gave %d, not SW_ERR_INVALID\n", names[i], r);
			failures++;
		} else if (!matches(err->msg, file, expect[0])) {
			print_error("%s: parse error\n  got:  %s\n  want: %s\n", names[i], err->msg,
			            expect[0]);
			failures++;
		}
		sw_pipeline_free(p);
		sw_error_clear(&err);

		char **problems = NULL;
		assert_int_equal(sw_pipeline_lint(&problems, buf, len, file, &err), 0);
		size_t np = sw_strv_len(problems), ne = sw_strv_len(expect);
		bool ok = np == ne;
		for (size_t k = 0; ok && k < ne; k++) {
			bool found = false;
			for (size_t m = 0; !found && m < np; m++)
				found = matches(problems[m], file, expect[k]);
			ok = found;
		}
		if (!ok) {
			print_error("%s: lint gave %zu problems, want %zu:\n", names[i], np, ne);
			for (size_t m = 0; m < np; m++)
				print_error("  got:  %s\n", problems[m]);
			for (size_t k = 0; k < ne; k++)
				print_error("  want: %s\n", expect[k]);
			failures++;
		}
		sw_strv_free(problems);
		sw_strv_free(expect);
		free(buf);
		free(ebuf);
		free(file);
		free(epath);
		free(path);
	}
	sw_strv_free(names);
	free(dir);
	assert_int_equal(failures, 0);
}

static void test_pipeline__lint_many(void **state)
{
	(void)state;
	static const char y[] = "stages:\n"
	                        "  - name: s\n"
	                        "    jobs:\n"
	                        "      - name: a\n"
	                        "        run: x\n"
	                        "        imgae: alpine\n"
	                        "        needs: [zzz]\n"
	                        "promote:\n"
	                        "  - to: app\n";
	char **problems = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_pipeline_lint(&problems, y, strlen(y), "f.yml", &err), 0);
	assert_int_equal(sw_strv_len(problems), 4);
	assert_string_equal(problems[0],
	                    "f.yml:6:9: unknown key 'imgae' in job 'a' (did you mean 'image'?)");
	assert_string_equal(problems[1], "f.yml:7:17: job 'a' needs 'zzz', which is not a job");
	assert_string_equal(problems[2], "f.yml:9:5: promote to 'app' has no 'tags'");
	assert_true(!strncmp(problems[3], "f.yml:9:9: 'to' must be a registry repository", 45));
	sw_strv_free(problems);

	/* parse reports the first of them */
	sw_pipeline *p = NULL;
	assert_int_equal(sw_pipeline_parse(&p, y, strlen(y), "f.yml", &err), SW_ERR_INVALID);
	assert_null(p);
	assert_string_equal(err->msg,
	                    "f.yml:6:9: unknown key 'imgae' in job 'a' (did you mean 'image'?)");
	sw_error_free(err);
}

static void test_pipeline__alias_bomb(void **state)
{
	(void)state;
	/* each level merges the one before four times: 4^15 keys if merges were walked without
	 * a bound */
	sw_buf b = SW_BUF_INIT(0);
	assert_int_equal(sw_buf_puts(&b, "x-0: &m0 {A: '1', B: '2'}\n", NULL), 0);
	for (int i = 1; i <= 15; i++)
		assert_int_equal(sw_buf_printf(&b, NULL,
		                               "x-%d: &m%d {<<: [*m%d, *m%d, *m%d, *m%d]}\n", i, i,
		                               i - 1, i - 1, i - 1, i - 1),
		                 0);
	assert_int_equal(sw_buf_puts(&b,
	                             "env: *m15\nstages:\n  - name: s\n    jobs: [{name: j, "
	                             "run: x}]\n",
	                             NULL),
	                 0);
	char **problems = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_pipeline_lint(&problems, b.data, b.len, "bomb.yml", &err), 0);
	bool complex = false;
	for (size_t i = 0; problems[i]; i++)
		complex = complex || strstr(problems[i], "the file is too complex");
	assert_true(complex);
	assert_true(sw_strv_len(problems) < 1000);
	sw_strv_free(problems);
	/* a map that merges itself ends too */
	static const char self[] =
	        "env: &m {<<: *m}\nstages: [{name: s, jobs: [{name: j, run: x}]}]\n";
	assert_int_equal(sw_pipeline_lint(&problems, self, strlen(self), "self.yml", &err), 0);
	assert_non_null(problems[0]);
	assert_string_equal(problems[0], "self.yml:1:6: '<<' merges nested too deeply");
	assert_null(problems[1]);
	sw_strv_free(problems);
	sw_buf_free(&b);
}

static void test_pipeline__load(void **state)
{
	(void)state;
	char *dir = pipelines_dir("good");
	char *path = sw_xasprintf("%s/example.yml", dir);
	sw_pipeline *p = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_pipeline_load(&p, path, &err), 0);
	assert_string_equal(p->file, path);
	assert_int_equal(p->n_jobs, 2);
	sw_pipeline_free(p);
	free(path);
	path = sw_xasprintf("%s/missing.yml", dir);
	assert_true(sw_pipeline_load(&p, path, &err) < 0);
	assert_null(p);
	assert_non_null(strstr(err->msg, "missing.yml"));
	sw_error_free(err);
	free(path);
	free(dir);
}

/* ---------------------------------------------------------------- expansion */

static const char *lookup(const char *name, void *payload)
{
	(void)payload;
	if (!strcmp(name, "A"))
		return "alpha";
	if (!strcmp(name, "EMPTY"))
		return "";
	if (!strcmp(name, "SLIPWAY_BRANCH"))
		return "main";
	return NULL;
}

static int checksum(char **out, const char *path, void *payload, sw_error **err)
{
	(void)payload;
	if (!strcmp(path, "missing"))
		return sw_error_set(err, SW_ERR_NOT_FOUND, "checksum '%s': no such file", path);
	*out = sw_xasprintf("sum(%s)", path);
	return 0;
}

static void expect_expand(const char *tmpl, const char *want)
{
	char *out = NULL;
	sw_error *err = NULL;
	if (sw_pl_expand(&out, tmpl, lookup, checksum, NULL, &err) < 0)
		fail_msg("expand '%s': %s", tmpl, sw_error_msg(err));
	assert_string_equal(out, want);
	free(out);
}

static void expect_expand_error(const char *tmpl, sw_pl_checksum_fn ck, const char *part)
{
	char *out = NULL;
	sw_error *err = NULL;
	assert_true(sw_pl_expand(&out, tmpl, lookup, ck, NULL, &err) < 0);
	assert_null(out);
	if (!strstr(err->msg, part))
		fail_msg("expand '%s': got '%s', want '%s'", tmpl, err->msg, part);
	sw_error_free(err);
}

static void test_pipeline__expand(void **state)
{
	(void)state;
	expect_expand("", "");
	expect_expand("plain text", "plain text");
	expect_expand("${A}", "alpha");
	expect_expand("$A", "alpha");
	expect_expand("x-$A-y", "x-alpha-y");
	expect_expand("$A.b", "alpha.b");
	expect_expand("$AB", "");
	expect_expand("${UNSET}", "");
	expect_expand("${UNSET:-dflt}", "dflt");
	expect_expand("${EMPTY:-dflt}", "dflt");
	expect_expand("${A:-dflt}", "alpha");
	expect_expand("${UNSET:-${A}-x}", "alpha-x");
	expect_expand("${UNSET:-}", "");
	expect_expand("$$A", "$A");
	expect_expand("$${A}", "${A}");
	expect_expand("cost $5 $", "cost $5 $");
	expect_expand("a$", "a$");
	expect_expand("deps-${checksum(package-lock.json)}", "deps-sum(package-lock.json)");
	expect_expand("v${SLIPWAY_BRANCH}", "vmain");

	expect_expand_error("${A", NULL, "unterminated '${'");
	expect_expand_error("x-${checksum(a)", checksum, "unterminated '${'");
	expect_expand_error("${}", NULL, "empty '${}'");
	expect_expand_error("${A-b}", NULL, "bad substitution '${A-b}'");
	expect_expand_error("${1}", NULL, "bad substitution");
	expect_expand_error("${checksum(a)}", NULL, "only allowed in 'cache.key'");
	expect_expand_error("${checksum()}", checksum, "bad '${checksum(PATH)}'");
	expect_expand_error("${checksum(missing)}", checksum, "no such file");
	expect_expand_error("${UNSET:-${A}", NULL, "unterminated");

	/* without a lookup everything is unset */
	char *out = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_pl_expand(&out, "a${A}b${B:-c}", NULL, NULL, NULL, &err), 0);
	assert_string_equal(out, "abc");
	free(out);
}

/* ---------------------------------------------------------------- globs and when */

static void test_pipeline__glob(void **state)
{
	(void)state;
	assert_true(sw_pl_glob_match("main", "main"));
	assert_false(sw_pl_glob_match("main", "mainline"));
	assert_true(sw_pl_glob_match("release/*", "release/1.0"));
	assert_false(sw_pl_glob_match("release/*", "release/1.0/hotfix"));
	assert_false(sw_pl_glob_match("release/*", "release"));
	assert_true(sw_pl_glob_match("release/**", "release/1.0/hotfix"));
	assert_true(sw_pl_glob_match("src/**", "src/a.c"));
	assert_true(sw_pl_glob_match("src/**", "src/x/y/z.c"));
	assert_false(sw_pl_glob_match("src/**", "lib/src/a.c"));
	assert_true(sw_pl_glob_match("**/*.c", "a.c"));
	assert_true(sw_pl_glob_match("**/*.c", "x/y/a.c"));
	assert_false(sw_pl_glob_match("**/*.c", "x/y/a.h"));
	assert_true(sw_pl_glob_match("src/**/test_*.c", "src/test_a.c"));
	assert_true(sw_pl_glob_match("src/**/test_*.c", "src/a/b/test_a.c"));
	assert_false(sw_pl_glob_match("src/**/test_*.c", "src/a/b/a_test.c"));
	assert_true(sw_pl_glob_match("*.go", "main.go"));
	assert_false(sw_pl_glob_match("*.go", "cmd/main.go"));
	assert_true(sw_pl_glob_match("v?.?", "v1.2"));
	assert_false(sw_pl_glob_match("v?.?", "v1.23"));
	assert_false(sw_pl_glob_match("a?b", "a/b"));
	assert_true(sw_pl_glob_match("[abc].txt", "b.txt"));
	assert_false(sw_pl_glob_match("[abc].txt", "d.txt"));
	assert_true(sw_pl_glob_match("[a-c]x", "cx"));
	assert_true(sw_pl_glob_match("[!a-c]x", "dx"));
	assert_false(sw_pl_glob_match("[!a-c]x", "bx"));
	assert_true(sw_pl_glob_match("[]]", "]"));
	assert_true(sw_pl_glob_match("a[b", "a[b")); /* no closing ']': literal */
	assert_true(sw_pl_glob_match("a\\*b", "a*b"));
	assert_false(sw_pl_glob_match("a\\*b", "axb"));
	assert_true(sw_pl_glob_match("*", ""));
	assert_true(sw_pl_glob_match("**", "a/b/c"));
	assert_false(sw_pl_glob_match("", "a"));
	/* a pathological pattern ends (no match) instead of backtracking for ages */
	assert_false(sw_pl_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*b",
	                              "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

static sw_pl_when mkwhen(const char *const *branches, int tag, const char *const *changes)
{
	sw_pl_when w;
	memset(&w, 0, sizeof(w));
	w.given = true;
	w.tag = tag;
	w.branch.v = (char **)branches;
	w.branch.n = branches ? sw_strv_len((char *const *)branches) : 0;
	w.changes.v = (char **)changes;
	w.changes.n = changes ? sw_strv_len((char *const *)changes) : 0;
	return w;
}

static void test_pipeline__when(void **state)
{
	(void)state;
	const char *const br[] = { "main", "release/*", NULL };
	const char *const ch[] = { "src/**", "Makefile", NULL };
	const char *const changed_src[] = { "docs/a.md", "src/x/y.c", NULL };
	const char *const changed_docs[] = { "docs/a.md", NULL };
	const char *const none[] = { NULL };
	sw_pl_commit_info on_main = { "main", NULL, NULL };
	sw_pl_commit_info on_rel = { "release/2.0", NULL, NULL };
	sw_pl_commit_info on_feat = { "feature/x", NULL, NULL };
	sw_pl_commit_info on_tag = { NULL, "v1.0", NULL };
	sw_pl_commit_info detached = { NULL, NULL, NULL };

	/* not given: always */
	sw_pl_when w = { 0 };
	assert_true(sw_pl_when_matches(&w, &on_feat));
	assert_true(sw_pl_when_matches(NULL, &on_tag));

	/* branches only: branches that match, never a tag or a detached commit */
	w = mkwhen(br, -1, NULL);
	assert_true(sw_pl_when_matches(&w, &on_main));
	assert_true(sw_pl_when_matches(&w, &on_rel));
	assert_false(sw_pl_when_matches(&w, &on_feat));
	assert_false(sw_pl_when_matches(&w, &on_tag));
	assert_false(sw_pl_when_matches(&w, &detached));

	/* branches + tag: true: those branches and tags */
	w = mkwhen(br, 1, NULL);
	assert_true(sw_pl_when_matches(&w, &on_main));
	assert_false(sw_pl_when_matches(&w, &on_feat));
	assert_true(sw_pl_when_matches(&w, &on_tag));

	/* tag: true alone: only tags */
	w = mkwhen(NULL, 1, NULL);
	assert_true(sw_pl_when_matches(&w, &on_tag));
	assert_false(sw_pl_when_matches(&w, &on_main));
	assert_false(sw_pl_when_matches(&w, &detached));

	/* tag: false: anything but tags */
	w = mkwhen(NULL, 0, NULL);
	assert_false(sw_pl_when_matches(&w, &on_tag));
	assert_true(sw_pl_when_matches(&w, &on_feat));
	assert_true(sw_pl_when_matches(&w, &detached));

	/* changes: one changed path must match; unknown changes hold */
	w = mkwhen(NULL, -1, ch);
	on_main.changed = changed_src;
	assert_true(sw_pl_when_matches(&w, &on_main));
	on_main.changed = changed_docs;
	assert_false(sw_pl_when_matches(&w, &on_main));
	on_main.changed = none;
	assert_false(sw_pl_when_matches(&w, &on_main));
	on_main.changed = NULL;
	assert_true(sw_pl_when_matches(&w, &on_main));

	/* all parts must hold */
	w = mkwhen(br, -1, ch);
	on_main.changed = changed_docs;
	assert_false(sw_pl_when_matches(&w, &on_main));
	on_feat.changed = changed_src;
	assert_false(sw_pl_when_matches(&w, &on_feat));
	on_rel.changed = changed_src;
	assert_true(sw_pl_when_matches(&w, &on_rel));
}

static void expect_duration(const char *s, int64_t want)
{
	int64_t ms = -1;
	if (sw_pl_duration_parse(&ms, s) != 0)
		fail_msg("duration '%s' rejected", s);
	assert_int_equal(ms, want);
}

static void test_pipeline__durations(void **state)
{
	(void)state;
	expect_duration("10m", 600000);
	expect_duration("1h30m", 5400000);
	expect_duration("45s", 45000);
	expect_duration("500ms", 500);
	expect_duration("1m30s", 90000);
	expect_duration("2h", 7200000);
	expect_duration("1s500ms", 1500);
	expect_duration("90", 90000);
	expect_duration("0", 0);
	int64_t ms = 0;
	static const char *const bad[] = {
		"",    "10",  "m",   "10x",  "1.5h", "-5s",
		" 5s", "5s ", "5 s", "10mm", "1h30", "99999999999999999h"
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		if (i == 1)
			continue; /* "10" is a bare number of seconds */
		if (sw_pl_duration_parse(&ms, bad[i]) == 0)
			fail_msg("duration '%s' accepted", bad[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipeline__example),
		cmocka_unit_test(test_pipeline__full),
		cmocka_unit_test(test_pipeline__broken_files),
		cmocka_unit_test(test_pipeline__lint_many),
		cmocka_unit_test(test_pipeline__alias_bomb),
		cmocka_unit_test(test_pipeline__load),
		cmocka_unit_test(test_pipeline__expand),
		cmocka_unit_test(test_pipeline__glob),
		cmocka_unit_test(test_pipeline__when),
		cmocka_unit_test(test_pipeline__durations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
