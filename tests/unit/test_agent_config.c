/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Group "config" of test_agent: agent.yml as the agent reads it. A complete file is checked
 * field by field (defaults too), secrets given as {env: NAME} and {file: PATH} come back
 * resolved, and broken files are refused with the exact "FILE:LINE:COLUMN: message" a user
 * would see (unknown keys with a hint, wrong types, bad durations and sizes, duplicate names,
 * a missing environment variable named, nothing to work for). Each case writes its file in a
 * temporary folder of its own, removed afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "agent/agent_internal.h"
#include "executor/executor.h"

#include <string.h>

int test_agent_config_run(void);

typedef struct cfix {
	char *tmp;
	char *path; /* tmp/agent.yml */
} cfix;

static int setup(void **state)
{
	cfix *f = sw_xcalloc(1, sizeof(*f));
	sw_error *e = NULL;
	if (sw_fs_mkdtemp(&f->tmp, sw_fs_tmpdir(), "sw-agent-config-", &e) < 0)
		fail_msg("%s", sw_error_msg(e));
	f->path = sw_path_join(f->tmp, "agent.yml");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	cfix *f = *state;
	sw_error *e = NULL;
	if (sw_fs_rm_rf(f->tmp, &e) < 0)
		sw_error_free(e);
	free(f->tmp);
	free(f->path);
	free(f);
	unsetenv("SW_TEST_REG_PW");
	unsetenv("SW_TEST_NPM");
	unsetenv("SW_TEST_GL_TOKEN");
	return 0;
}

static void write_file(const char *path, const char *text)
{
	sw_error *e = NULL;
	if (sw_fs_write_atomic(path, text, strlen(text), 0600, &e) < 0)
		fail_msg("%s", sw_error_msg(e));
}

static sw_agent_config *load_ok(cfix *f, const char *text)
{
	write_file(f->path, text);
	sw_agent_config *c = NULL;
	sw_error *e = NULL;
	if (sw_agent_config_load(&c, f->path, &e) < 0)
		fail_msg("load: %s", sw_error_msg(e));
	return c;
}

/* The message of a broken file, with the file's path replaced by "FILE". */
static char *load_fails(cfix *f, const char *text)
{
	write_file(f->path, text);
	sw_agent_config *c = NULL;
	sw_error *e = NULL;
	int rc = sw_agent_config_load(&c, f->path, &e);
	if (rc >= 0)
		fail_msg("a broken config was accepted:\n%s", text);
	assert_null(c);
	const char *m = sw_error_msg(e);
	size_t pl = strlen(f->path);
	char *out;
	if (strncmp(m, f->path, pl) == 0)
		out = sw_xasprintf("FILE%s", m + pl);
	else
		out = sw_xstrdup(m);
	sw_error_free(e);
	return out;
}

static void test_agent__config_full(void **state)
{
	cfix *f = *state;
	cleanup_free char *pwfile = sw_path_join(f->tmp, "deploy.key");
	write_file(pwfile, "key-from-file\n\n");
	setenv("SW_TEST_REG_PW", "s3cret", 1);
	setenv("SW_TEST_NPM", "npm-token-value", 1);
	setenv("SW_TEST_GL_TOKEN", "glrt-abc", 1);
	sw_agent_config *c =
	        load_ok(f, "concurrency: 3\n"
	                   "state_dir: /srv/slipway-state\n"
	                   "executor: { backend: oci, runtime: crun }\n"
	                   "limits: { memory: 2GiB, pids: 1024, cpus: 1.5 }\n"
	                   "cache: { max_size: 20GB }\n"
	                   "log: { format: json, level: debug }\n"
	                   "metrics: { listen: \"127.0.0.1:9999\" }\n"
	                   "shutdown_timeout: 90s\n"
	                   "kill_grace: 5s\n"
	                   "sweep_interval: 2m\n"
	                   "max_attempts: 3\n"
	                   "registries:\n"
	                   "  - host: registry.example.com\n"
	                   "    username: ci\n"
	                   "    password: { env: SW_TEST_REG_PW }\n"
	                   "  - { docker_config: docker/config.json }\n"
	                   "insecure_registries: [reg.lan:5000]\n"
	                   "secrets:\n"
	                   "  NPM_TOKEN: { env: SW_TEST_NPM }\n"
	                   "  DEPLOY_KEY: { file: deploy.key }\n"
	                   "  PLAIN: literal\n"
	                   "repos:\n"
	                   "  - name: app\n"
	                   "    url: https://git.example.com/team/app.git\n"
	                   "    branches: [main, \"release/*\"]\n"
	                   "    tags: [\"v*\"]\n"
	                   "    poll: 30s\n"
	                   "    every_commit: true\n"
	                   "    file: ci/pipeline.yml\n"
	                   "    token: { env: SW_TEST_NPM }\n"
	                   "    vars: { REGISTRY: registry.example.com, N: 1 }\n"
	                   "  - url: file:///srv/git/tools.git\n"
	                   "gitlab:\n"
	                   "  - url: https://gitlab.example.com\n"
	                   "    token: { env: SW_TEST_GL_TOKEN }\n"
	                   "    limit: 1\n"
	                   "    poll: 5s\n"
	                   "  - { name: local, url: \"http://127.0.0.1:8080\", token: glrt-x }\n");
	assert_string_equal(c->file, f->path);
	assert_int_equal(c->concurrency, 3);
	assert_string_equal(c->state_dir, "/srv/slipway-state");
	assert_int_equal(c->backend, SW_EXEC_BACKEND_OCI);
	assert_string_equal(c->runtime, "crun");
	assert_null(c->docker_host);
	assert_int_equal(c->memory_limit, 2ULL << 30);
	assert_int_equal(c->pids_limit, 1024);
	assert_int_equal(c->cpu_millis, 1500);
	assert_int_equal(c->cache_max_bytes, 20000000000ULL);
	assert_int_equal(c->log_format, 1);
	assert_int_equal(c->log_level, SW_LOG_DEBUG);
	assert_string_equal(c->metrics_addr, "127.0.0.1:9999");
	assert_int_equal(c->shutdown_timeout_ms, 90000);
	assert_int_equal(c->kill_grace_ms, 5000);
	assert_int_equal(c->sweep_interval_ms, 120000);
	assert_int_equal(c->max_attempts, 3);
	assert_int_equal(c->n_credentials, 1);
	assert_string_equal(c->credentials[0].registry, "registry.example.com");
	assert_string_equal(c->credentials[0].username, "ci");
	assert_string_equal(c->credentials[0].password, "s3cret");
	cleanup_free char *dc = sw_path_join(f->tmp, "docker/config.json");
	assert_string_equal(c->docker_config, dc);
	assert_int_equal(sw_strv_len(c->insecure_registries), 1);
	assert_string_equal(c->insecure_registries[0], "reg.lan:5000");
	assert_int_equal(sw_strv_len(c->secrets), 3);
	assert_string_equal(c->secrets[0], "NPM_TOKEN=npm-token-value");
	assert_string_equal(c->secrets[1], "DEPLOY_KEY=key-from-file");
	assert_string_equal(c->secrets[2], "PLAIN=literal");
	/* the registry options point at the config's credentials */
	const sw_oci_registry_opts *ro = sw_agent_config_registry(c);
	assert_int_equal(ro->n_credentials, 1);
	assert_ptr_equal(ro->credentials, c->credentials);
	assert_string_equal(ro->docker_config, dc);
	assert_string_equal(ro->insecure[0], "reg.lan:5000");
	assert_null(ro->insecure[1]);

	assert_int_equal(c->n_repos, 2);
	const sw_agent_repo *r = &c->repos[0];
	assert_string_equal(r->name, "app");
	assert_string_equal(r->url, "https://git.example.com/team/app.git");
	assert_int_equal(sw_strv_len(r->branches), 2);
	assert_string_equal(r->branches[1], "release/*");
	assert_string_equal(r->tags[0], "v*");
	assert_int_equal(r->poll_ms, 30000);
	assert_true(r->every_commit);
	assert_string_equal(r->pipeline_file, "ci/pipeline.yml");
	assert_string_equal(r->token, "npm-token-value");
	assert_null(r->username);
	assert_int_equal(sw_strv_len(r->vars), 2);
	assert_string_equal(r->vars[0], "REGISTRY=registry.example.com");
	assert_string_equal(r->vars[1], "N=1");
	assert_int_equal(r->line, 23);
	assert_int_equal(r->column, 5);
	/* defaults of a repository */
	r = &c->repos[1];
	assert_string_equal(r->name, "tools");
	assert_int_equal(sw_strv_len(r->branches), 1);
	assert_string_equal(r->branches[0], "*");
	assert_null(r->tags);
	assert_int_equal(r->poll_ms, 60000);
	assert_false(r->every_commit);
	assert_string_equal(r->pipeline_file, ".slipway.yml");

	assert_int_equal(c->n_gitlab, 2);
	assert_string_equal(c->gitlab[0].name, "gitlab.example.com");
	assert_string_equal(c->gitlab[0].token, "glrt-abc");
	assert_int_equal(c->gitlab[0].limit, 1);
	assert_int_equal(c->gitlab[0].poll_ms, 5000);
	assert_string_equal(c->gitlab[1].name, "local");
	assert_int_equal(c->gitlab[1].limit, 3); /* the agent's concurrency */
	assert_int_equal(c->gitlab[1].poll_ms, 3000);
	sw_agent_config_free(c);
}

static void test_agent__config_defaults(void **state)
{
	cfix *f = *state;
	setenv("SLIPWAY_STATE_DIR", "/tmp/sw-state-default", 1);
	sw_agent_config *c = load_ok(f, "repos:\n  - url: /srv/git/app\n");
	unsetenv("SLIPWAY_STATE_DIR");
	assert_int_equal(c->concurrency, 2);
	assert_string_equal(c->state_dir, "/tmp/sw-state-default");
	assert_int_equal(c->backend, SW_EXEC_BACKEND_OCI);
	assert_string_equal(c->runtime, "runc");
	assert_int_equal(c->log_level, -1); /* not in the file: the command line's stays */
	assert_int_equal(c->log_format, -1);
	assert_string_equal(c->metrics_addr, "127.0.0.1:9252");
	assert_int_equal(c->shutdown_timeout_ms, 600000);
	assert_int_equal(c->kill_grace_ms, 10000);
	assert_int_equal(c->sweep_interval_ms, 300000);
	assert_int_equal(c->max_attempts, 2);
	assert_int_equal(c->memory_limit, 0);
	assert_int_equal(c->cache_max_bytes, 0);
	assert_null(c->secrets);
	assert_int_equal(c->n_credentials, 0);
	assert_string_equal(c->repos[0].name, "app");
	sw_agent_config_free(c);

	/* docker backend; metrics off; a relative state_dir is relative to the file */
	c = load_ok(f, "executor: { backend: docker, docker_host: \"unix:///run/d.sock\" }\n"
	               "metrics: { listen: \"\" }\n"
	               "state_dir: state\n"
	               "repos: [ { url: \"git://127.0.0.1/x.git\" } ]\n");
	assert_int_equal(c->backend, SW_EXEC_BACKEND_DOCKER);
	assert_string_equal(c->docker_host, "unix:///run/d.sock");
	assert_null(c->runtime);
	assert_string_equal(c->metrics_addr, "");
	cleanup_free char *sd = sw_path_join(f->tmp, "state");
	assert_string_equal(c->state_dir, sd);
	assert_string_equal(c->repos[0].name, "x");
	sw_agent_config_free(c);
}

static void test_agent__config_secrets(void **state)
{
	cfix *f = *state;
	cleanup_free char *kf = sw_path_join(f->tmp, "k");
	write_file(kf, "multi\nline\n");
	setenv("SW_TEST_NPM", "", 1); /* set but empty is a value */
	cleanup_free char *text = sw_xasprintf("secrets:\n"
	                                       "  A: { file: %s }\n"
	                                       "  B: { env: SW_TEST_NPM }\n"
	                                       "repos: [ { url: /r } ]\n",
	                                       kf);
	sw_agent_config *c = load_ok(f, text);
	assert_string_equal(c->secrets[0], "A=multi\nline");
	assert_string_equal(c->secrets[1], "B=");
	sw_agent_config_free(c);

	/* a variable that is not set is an error naming it, at its place */
	unsetenv("SW_TEST_NPM");
	cleanup_free char *m = load_fails(f, "secrets:\n"
	                                     "  NPM_TOKEN: { env: SW_TEST_NPM }\n"
	                                     "repos: [ { url: /r } ]\n");
	assert_string_equal(m, "FILE:2:21: secret 'NPM_TOKEN': the environment variable "
	                       "SW_TEST_NPM is not set");
	/* a repository token too */
	cleanup_free char *m2 = load_fails(f, "repos:\n"
	                                      "  - url: https://h/x.git\n"
	                                      "    token: { env: SW_TEST_NPM }\n");
	assert_string_equal(m2, "FILE:3:19: 'token': the environment variable SW_TEST_NPM is "
	                        "not set");
	/* a file that is missing */
	cleanup_free char *m3 = load_fails(f, "secrets:\n"
	                                      "  K: { file: /nonexistent/sw-key }\n"
	                                      "repos: [ { url: /r } ]\n");
	assert_non_null(strstr(m3, "FILE:2:14: secret 'K': cannot read the file: "));
	assert_non_null(strstr(m3, "/nonexistent/sw-key"));
}

static void test_agent__config_broken(void **state)
{
	cfix *f = *state;
	static const struct {
		const char *text;
		const char *msg;
	} cases[] = {
		{ "concurrency: 2\nrepos: [ { url: /r } ]\nconcurency: 3\n",
		  "FILE:3:1: unknown key 'concurency' in the configuration (did you mean "
		  "'concurrency'?)" },
		{ "concurrency: many\nrepos: [ { url: /r } ]\n",
		  "FILE:1:14: 'concurrency' must be a number from 1 to 256, not 'many'" },
		{ "concurrency: 0\nrepos: [ { url: /r } ]\n",
		  "FILE:1:14: 'concurrency' must be a number from 1 to 256, not '0'" },
		{ "shutdown_timeout: 10 minutes\nrepos: [ { url: /r } ]\n",
		  "FILE:1:19: 'shutdown_timeout' has a bad duration '10 minutes' (use e.g. 500ms, "
		  "45s, 10m, 1h30m)" },
		{ "cache: { max_size: lots }\nrepos: [ { url: /r } ]\n",
		  "FILE:1:20: 'max_size' has a bad size 'lots' (use e.g. 512MiB, 20GB)" },
		{ "log: { format: xml }\nrepos: [ { url: /r } ]\n",
		  "FILE:1:16: 'format' must be text or json" },
		{ "executor: { backend: podman }\nrepos: [ { url: /r } ]\n",
		  "FILE:1:22: 'backend' must be oci or docker" },
		{ "executor: { docker_host: \"unix:///x\" }\nrepos: [ { url: /r } ]\n",
		  "FILE:1:13: 'docker_host' needs 'backend: docker'" },
		{ "concurrency: 2\n",
		  "FILE:1:1: nothing to do: give repositories to watch ('repos') or GitLab servers to "
		  "poll ('gitlab')" },
		{ "repos:\n  - url: /a/app.git\n  - name: app\n    url: /b/app\n",
		  "FILE:3:11: repository name 'app' is used twice (first at line 2)" },
		{ "repos:\n  - name: app\n    brnches: [main]\n",
		  "FILE:3:5: unknown key 'brnches' in a repository (did you mean 'branches'?)" },
		{ "repos:\n  - name: app\n", "FILE:2:5: a repository needs 'url'" },
		{ "repos:\n  - url: /r\n    every_commit: sometimes\n",
		  "FILE:3:19: 'every_commit' must be true or false" },
		{ "repos:\n  - url: /r\n    poll: 0s\n",
		  "FILE:3:11: 'poll' must be longer than 0" },
		{ "repos:\n  - url: /r\n    name: \"my app\"\n",
		  "FILE:3:11: repository name 'my app' may only have letters, digits, '.', '_' and "
		  "'-' (set 'name')" },
		{ "repos: { url: /r }\n", "FILE:1:8: 'repos' must be a list" },
		{ "repos: [ { url: /r } ]\nsecrets:\n  bad-name: x\n",
		  "FILE:3:3: secret name 'bad-name' is not a variable name" },
		{ "gitlab:\n  - url: http://gitlab.example.com\n    token: glrt-x\n",
		  "FILE:2:10: GitLab 'url' must be https:// (http:// only for 127.0.0.1), not "
		  "'http://gitlab.example.com'" },
		{ "gitlab:\n  - url: https://gitlab.example.com\n",
		  "FILE:2:5: GitLab server 'https://gitlab.example.com' needs 'token' (the runner's "
		  "glrt- token)" },
		{ "metrics: { listen: 9252 }\nrepos: [ { url: /r } ]\n",
		  "FILE:1:20: 'listen' must be HOST:PORT (e.g. 127.0.0.1:9252), not '9252'" },
		{ "registries:\n  - host: r.example.com\n    username: ci\nrepos: [ { url: /r } ]\n",
		  "FILE:2:5: registry 'r.example.com' needs 'username' and 'password'" },
		{ "repos: [ { url: /r } ]\nrepos: [ { url: /s } ]\n",
		  "FILE:2:1: 'repos' is given twice in 'the file'" },
		{ "repos: [ { url: /r }\n", "FILE:2:1: did not find expected ',' or ']'" },
		{ "- a\n- b\n",
		  "FILE:1:1: the file must be a mapping of keys (concurrency, repos, ...)" },
		{ "limits: { memory: 1GB, cpus: -1 }\nrepos: [ { url: /r } ]\n",
		  "FILE:1:30: 'cpus' must be a positive number (e.g. 1.5)" },
		{ "colour: blue\nrepos: [ { url: /r } ]\n",
		  "FILE:1:1: unknown key 'colour' in the configuration (known keys: concurrency, "
		  "state_dir, executor, limits, cache, log, metrics, shutdown_timeout, kill_grace, "
		  "sweep_interval, max_attempts, registries, insecure_registries, secrets, repos, "
		  "gitlab)" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		cleanup_free char *m = load_fails(f, cases[i].text);
		if (strcmp(m, cases[i].msg) != 0)
			fail_msg("case %zu:\n%s\n got: %s\nwant: %s", i, cases[i].text, m,
			         cases[i].msg);
	}
	/* a missing file names it */
	sw_agent_config *c = NULL;
	sw_error *e = NULL;
	assert_true(sw_agent_config_load(&c, "/nonexistent/agent.yml", &e) < 0);
	assert_non_null(strstr(sw_error_msg(e), "/nonexistent/agent.yml"));
	sw_error_free(e);
}

int test_agent_config_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_agent__config_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__config_defaults, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__config_secrets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_agent__config_broken, setup, teardown),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
