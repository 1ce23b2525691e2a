/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The build engine's plan, without images, a store or containers: Dockerfiles parsed from
 * memory, base images and the context stood in for by hooks. Cache keys (stable for the same
 * inputs; a changed build arg changes keys from its first use on and not before; an ENV change
 * changes later RUN keys; an unused or proxy build arg changes nothing; a changed context file
 * changes keys from its COPY on; secrets are never part of a key), config replay (CMD reset by
 * ENTRYPOINT, ENV and LABEL substitution, EXPOSE, USER, WORKDIR relative resolution), ARG
 * scopes, RUN argv (shell, exec, SHELL, heredocs), stage selection for --target, ONBUILD
 * triggers of the base run first, and errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "builder/builder_internal.h"

#include <string.h>

int test_builder_engine_run(void);

/* ---------------------------------------------------------------- hooks */

typedef struct fake {
	const char *content_a; /* the "bytes" of context file "a" */
	char **images_asked;   /* names the image hook saw */
	char **warnings;
	const char *base_cmd; /* Cmd of every fake base image, or NULL */
	const char *base_workdir;
	const char *const *base_onbuild; /* OnBuild of every fake base image, NULL-terminated */
} fake;

static fake F;

static int fake_image(sw_build__image *img, void *payload, sw_error **err)
{
	(void)payload;
	(void)err;
	sw_strv_push(&F.images_asked, img->name);
	sw_oci_digest_bytes(&img->desc.digest, img->name, strlen(img->name));
	img->desc.media_type = sw_xstrdup(SW_OCI_MT_MANIFEST);
	img->config.architecture = sw_xstrdup("amd64");
	img->config.os = sw_xstrdup("linux");
	sw_strv_push(&img->config.env, "PATH=/usr/bin:/bin");
	sw_strv_push(&img->config.env, "BASEVAR=base");
	if (F.base_cmd)
		sw_strv_push(&img->config.cmd, F.base_cmd);
	if (F.base_workdir)
		img->config.working_dir = sw_xstrdup(F.base_workdir);
	img->config.raw = json_object();
	if (F.base_onbuild) {
		json_t *ob = json_array();
		for (size_t i = 0; F.base_onbuild[i]; i++)
			json_array_append_new(ob, json_string(F.base_onbuild[i]));
		json_object_set_new(img->config.raw, "config", json_pack("{s:o}", "OnBuild", ob));
	}
	return 0;
}

static int fake_context(sw_digest *out, char ***matched, char *const *srcs, void *payload,
                        sw_error **err)
{
	(void)payload;
	sw_buf b = SW_BUF_INIT(0);
	for (size_t i = 0; srcs[i]; i++) {
		if (strcmp(srcs[i], "missing") == 0) {
			sw_buf_free(&b);
			return sw_error_set(err, SW_ERR_NOT_FOUND,
			                    "\"missing\" not found in the build context");
		}
		sw_strv_push(matched, srcs[i]);
		const char *content = strcmp(srcs[i], "a") == 0 && F.content_a ? F.content_a : "-";
		assert_int_equal(sw_buf_printf(&b, err, "%s=%s;", srcs[i], content), 0);
	}
	sw_oci_digest_bytes(out, b.data ? b.data : "", b.len);
	sw_buf_free(&b);
	return 0;
}

static void fake_warn(const char *msg, void *payload)
{
	(void)payload;
	sw_strv_push(&F.warnings, msg);
}

static const sw_build__hooks hooks = {
	.image = fake_image,
	.context = fake_context,
	.warn = fake_warn,
};

static int setup(void **state)
{
	(void)state;
	memset(&F, 0, sizeof(F));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sw_strv_free(F.images_asked);
	sw_strv_free(F.warnings);
	memset(&F, 0, sizeof(F));
	return 0;
}

/* Parse and plan; NULL with *err set on failure. */
static sw_build__plan *plan_of(sw_dockerfile **df, const char *text, const char *const *args,
                               const char *target, sw_error **err)
{
	*df = NULL;
	if (sw_df_parse(df, text, strlen(text), "Dockerfile", err) < 0)
		return NULL;
	sw_build__plan_opts o;
	memset(&o, 0, sizeof(o));
	o.build_args = args;
	o.target = target;
	sw_build__plan *p = NULL;
	if (sw_build__plan_new(&p, *df, &o, &hooks, err) < 0)
		return NULL;
	return p;
}

typedef struct planned {
	sw_dockerfile *df;
	sw_build__plan *p;
} planned;

static planned must_plan(const char *text, const char *const *args, const char *target)
{
	planned r;
	sw_error *err = NULL;
	r.p = plan_of(&r.df, text, args, target, &err);
	if (!r.p)
		fail_msg("plan failed: %s", sw_error_msg(err));
	return r;
}

static void planned_free(planned *r)
{
	sw_build__plan_free(r->p);
	sw_df_free(r->df);
}

static sw_build__stage *last_stage(planned *r)
{
	return &r->p->stages[r->p->n_stages - 1];
}

static const char *env_of(char *const *env, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; env && env[i]; i++)
		if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
			return env[i] + n + 1;
	return NULL;
}

/* ---------------------------------------------------------------- keys */

static const char df_keys[] = "FROM base:1\n"
                              "ARG V\n"
                              "COPY a b /dst/\n"
                              "ENV X=1\n"
                              "RUN echo hi\n"
                              "RUN echo $V\n";

static void test_builder_engine__keys_stable(void **state)
{
	(void)state;
	planned a = must_plan(df_keys, NULL, NULL);
	planned b = must_plan(df_keys, NULL, NULL);
	sw_build__stage *sa = last_stage(&a), *sb = last_stage(&b);
	assert_int_equal(sa->n_steps, 5);
	assert_string_equal(sa->key0, sb->key0);
	for (size_t i = 0; i < sa->n_steps; i++) {
		assert_string_equal(sa->steps[i].key, sb->steps[i].key);
		assert_int_equal(strncmp(sa->steps[i].key, "sha256:", 7), 0);
		assert_int_equal(strlen(sa->steps[i].key), 71);
		if (i)
			assert_string_not_equal(sa->steps[i].key, sa->steps[i - 1].key);
	}
	/* layer steps and their progress titles */
	assert_false(sa->steps[0].layer); /* ARG */
	assert_true(sa->steps[1].layer);  /* COPY */
	assert_false(sa->steps[2].layer); /* ENV */
	assert_true(sa->steps[3].layer);
	assert_string_equal(sa->steps[1].title, "[2/4] COPY a b /dst/");
	assert_string_equal(sa->steps[4].title, "[4/4] RUN echo $V");
	assert_string_equal(sa->key, sa->steps[4].key);
	/* another base image: every key differs */
	static const char other[] = "FROM base:2\nARG V\nCOPY a b /dst/\nENV X=1\nRUN echo hi\n"
	                            "RUN echo $V\n";
	planned c = must_plan(other, NULL, NULL);
	for (size_t i = 0; i < sa->n_steps; i++)
		assert_string_not_equal(sa->steps[i].key, last_stage(&c)->steps[i].key);
	planned_free(&a);
	planned_free(&b);
	planned_free(&c);
}

static void test_builder_engine__build_arg_from_first_use(void **state)
{
	(void)state;
	const char *v1[] = { "V=1", NULL };
	const char *v2[] = { "V=2", NULL };
	planned a = must_plan(df_keys, v1, NULL);
	planned b = must_plan(df_keys, v2, NULL);
	sw_build__stage *sa = last_stage(&a), *sb = last_stage(&b);
	/* ARG V, COPY, ENV: same; both RUNs see V in their env: changed */
	assert_string_equal(sa->steps[0].key, sb->steps[0].key);
	assert_string_equal(sa->steps[1].key, sb->steps[1].key);
	assert_string_equal(sa->steps[2].key, sb->steps[2].key);
	assert_string_not_equal(sa->steps[3].key, sb->steps[3].key);
	assert_string_not_equal(sa->steps[4].key, sb->steps[4].key);
	assert_string_equal(env_of(sa->steps[3].env, "V"), "1");
	assert_string_equal(env_of(sb->steps[4].env, "V"), "2");
	/* a build arg used by a substitution changes keys from there */
	static const char sub[] = "FROM base:1\nARG D=x\nRUN true\nWORKDIR /w\nCOPY a /$D/\n";
	static const char sub_nr[] = "FROM base:1\nCOPY b /b\nARG D=x\nWORKDIR /w\nCOPY a /$D/\n";
	const char *d1[] = { "D=one", NULL };
	const char *d2[] = { "D=two", NULL };
	planned c = must_plan(sub_nr, d1, NULL);
	planned d = must_plan(sub_nr, d2, NULL);
	sw_build__stage *sc = last_stage(&c), *sd = last_stage(&d);
	assert_string_equal(sc->steps[0].key, sd->steps[0].key);
	assert_string_equal(sc->steps[1].key, sd->steps[1].key);
	assert_string_equal(sc->steps[2].key, sd->steps[2].key); /* WORKDIR /w */
	assert_string_not_equal(sc->steps[3].key, sd->steps[3].key);
	assert_string_equal(sc->steps[3].dest, "/one/");
	assert_string_equal(sd->steps[3].dest, "/two/");
	planned e = must_plan(sub, d1, NULL);
	planned f = must_plan(sub, d2, NULL);
	assert_string_equal(last_stage(&e)->steps[0].key, last_stage(&f)->steps[0].key);
	assert_string_not_equal(last_stage(&e)->steps[1].key, last_stage(&f)->steps[1].key);
	planned_free(&f);
	planned_free(&a);
	planned_free(&b);
	planned_free(&c);
	planned_free(&d);
	planned_free(&e);
}

static void test_builder_engine__env_changes_later_run(void **state)
{
	(void)state;
	static const char t1[] = "FROM base:1\nCOPY a /a\nENV X=1\nRUN echo $X\n";
	static const char t2[] = "FROM base:1\nCOPY a /a\nENV X=2\nRUN echo $X\n";
	planned a = must_plan(t1, NULL, NULL);
	planned b = must_plan(t2, NULL, NULL);
	sw_build__stage *sa = last_stage(&a), *sb = last_stage(&b);
	assert_string_equal(sa->steps[0].key, sb->steps[0].key);
	assert_string_not_equal(sa->steps[2].key, sb->steps[2].key);
	assert_string_equal(env_of(sa->steps[2].env, "X"), "1");
	assert_string_equal(env_of(sb->steps[2].env, "X"), "2");
	assert_string_equal(env_of(sb->steps[2].env, "BASEVAR"), "base");
	planned_free(&a);
	planned_free(&b);
}

static void test_builder_engine__unused_and_proxy_args(void **state)
{
	(void)state;
	const char *none[] = { NULL };
	const char *other[] = { "OTHER=x", "HTTP_PROXY=http://proxy:3128", NULL };
	planned a = must_plan(df_keys, none, NULL);
	assert_null(F.warnings);
	planned b = must_plan(df_keys, other, NULL);
	sw_build__stage *sa = last_stage(&a), *sb = last_stage(&b);
	for (size_t i = 0; i < sa->n_steps; i++)
		assert_string_equal(sa->steps[i].key, sb->steps[i].key);
	/* the proxy reaches RUN's env, OTHER does not; OTHER is warned about, the proxy not */
	assert_string_equal(env_of(sb->steps[3].env, "HTTP_PROXY"), "http://proxy:3128");
	assert_null(env_of(sb->steps[3].env, "OTHER"));
	assert_non_null(F.warnings);
	assert_int_equal(sw_strv_len(F.warnings), 1);
	assert_non_null(strstr(F.warnings[0], "[OTHER]"));
	assert_null(strstr(F.warnings[0], "PROXY"));
	/* a declared proxy arg is an input like any other */
	static const char decl[] = "FROM base:1\nARG HTTP_PROXY\nRUN echo hi\n";
	const char *p1[] = { "HTTP_PROXY=a", NULL };
	const char *p2[] = { "HTTP_PROXY=b", NULL };
	planned c = must_plan(decl, p1, NULL);
	planned d = must_plan(decl, p2, NULL);
	assert_string_not_equal(last_stage(&c)->steps[1].key, last_stage(&d)->steps[1].key);
	planned_free(&a);
	planned_free(&b);
	planned_free(&c);
	planned_free(&d);
}

static void test_builder_engine__context_change(void **state)
{
	(void)state;
	static const char t[] = "FROM base:1\nRUN echo one\nCOPY a /a\nRUN echo two\nCOPY b /b\n";
	F.content_a = "v1";
	planned a = must_plan(t, NULL, NULL);
	F.content_a = "v2";
	planned b = must_plan(t, NULL, NULL);
	sw_build__stage *sa = last_stage(&a), *sb = last_stage(&b);
	assert_string_equal(sa->steps[0].key, sb->steps[0].key);
	for (size_t i = 1; i < 4; i++)
		assert_string_not_equal(sa->steps[i].key, sb->steps[i].key);
	assert_string_equal(sa->steps[1].matched[0], "a");
	planned_free(&a);
	planned_free(&b);
}

static void test_builder_engine__secrets_not_in_keys(void **state)
{
	(void)state;
	static const char t[] =
	        "FROM base:1\n"
	        "RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok\n";
	sw_error *err = NULL;
	sw_dockerfile *df = NULL;
	assert_int_equal(sw_df_parse(&df, t, strlen(t), "Dockerfile", &err), 0);
	sw_build__plan_opts o;
	memset(&o, 0, sizeof(o));
	/* required and not given: an error naming the place */
	sw_build__plan *p = NULL;
	assert_int_not_equal(sw_build__plan_new(&p, df, &o, &hooks, &err), 0);
	assert_non_null(strstr(sw_error_msg(err), "Dockerfile:2"));
	assert_non_null(strstr(sw_error_msg(err), "secret \"tok\" is required"));
	sw_error_clear(&err);
	sw_build_secret s1 = { "tok", "/nonexistent/one" };
	sw_build_secret s2 = { "tok", "/nonexistent/two" };
	o.secrets = &s1;
	o.n_secrets = 1;
	sw_build__plan *p1 = NULL, *p2 = NULL;
	assert_int_equal(sw_build__plan_new(&p1, df, &o, &hooks, &err), 0);
	o.secrets = &s2;
	assert_int_equal(sw_build__plan_new(&p2, df, &o, &hooks, &err), 0);
	const sw_build__step *a = &p1->stages[0].steps[0], *b = &p2->stages[0].steps[0];
	assert_string_equal(a->key, b->key);
	assert_int_equal(a->n_mounts, 1);
	assert_int_equal(a->mounts[0].type, SW_BUILD__MOUNT_SECRET);
	assert_string_equal(a->mounts[0].target, "/run/secrets/tok");
	assert_int_equal(a->mounts[0].mode, 0400);
	assert_null(strstr(a->created_by, "nonexistent"));
	sw_build__plan_free(p1);
	sw_build__plan_free(p2);
	sw_df_free(df);
}

/* ---------------------------------------------------------------- config replay */

static void test_builder_engine__config_replay(void **state)
{
	(void)state;
	F.base_cmd = "base-cmd";
	F.base_workdir = "/srv";
	static const char t[] = "FROM base:1\n"
	                        "ENV A=1\n"
	                        "ENV B=${A}2 C=\"x y\" A=3\n"
	                        "LABEL version=\"$B\" \"with space\"=ok\n"
	                        "EXPOSE 80 443/udp 8000-8002\n"
	                        "USER nobody:nogroup\n"
	                        "WORKDIR a\n"
	                        "WORKDIR b/../c\n"
	                        "VOLUME /data\n"
	                        "STOPSIGNAL SIGINT\n"
	                        "ENTRYPOINT [\"/bin/app\"]\n";
	planned r = must_plan(t, NULL, NULL);
	sw_oci_config *c = &last_stage(&r)->config;
	assert_string_equal(env_of(c->env, "A"), "3");
	assert_string_equal(env_of(c->env, "B"), "12");
	assert_string_equal(env_of(c->env, "C"), "x y");
	assert_string_equal(env_of(c->env, "BASEVAR"), "base");
	assert_string_equal(json_string_value(json_object_get(c->labels, "version")), "12");
	assert_string_equal(json_string_value(json_object_get(c->labels, "with space")), "ok");
	assert_int_equal(sw_strv_len(c->exposed_ports), 5);
	assert_string_equal(c->exposed_ports[0], "80/tcp");
	assert_string_equal(c->exposed_ports[1], "443/udp");
	assert_string_equal(c->exposed_ports[4], "8002/tcp");
	assert_string_equal(c->user, "nobody:nogroup");
	assert_string_equal(c->working_dir, "/srv/a/c");
	assert_string_equal(c->volumes[0], "/data");
	assert_string_equal(c->stop_signal, "SIGINT");
	assert_string_equal(c->entrypoint[0], "/bin/app");
	/* ENTRYPOINT resets the base's CMD */
	assert_null(c->cmd);
	/* the WORKDIR steps make layers with the user owning them */
	const sw_build__stage *st = last_stage(&r);
	assert_string_equal(st->steps[5].workdir, "/srv/a");
	assert_string_equal(st->steps[6].workdir, "/srv/a/c");
	assert_string_equal(st->steps[6].user, "nobody:nogroup");
	assert_true(st->steps[6].layer);
	assert_string_equal(st->steps[1].created_by, "ENV B=12 C=x y A=3");
	planned_free(&r);

	/* CMD in the same stage before ENTRYPOINT stays; shell forms get the SHELL */
	static const char t2[] = "FROM base:1\n"
	                         "CMD [\"--help\"]\n"
	                         "ENTRYPOINT [\"/bin/app\"]\n"
	                         "SHELL [\"/bin/bash\", \"-ec\"]\n"
	                         "HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://x/\n";
	planned r2 = must_plan(t2, NULL, NULL);
	sw_oci_config *c2 = &last_stage(&r2)->config;
	assert_string_equal(c2->cmd[0], "--help");
	json_t *cfg = json_object_get(c2->raw, "config");
	json_t *sh = json_object_get(cfg, "Shell");
	assert_string_equal(json_string_value(json_array_get(sh, 0)), "/bin/bash");
	json_t *hc = json_object_get(cfg, "Healthcheck");
	assert_string_equal(json_string_value(json_array_get(json_object_get(hc, "Test"), 0)),
	                    "CMD-SHELL");
	assert_int_equal(json_integer_value(json_object_get(hc, "Interval")), 30000000000LL);
	assert_int_equal(json_integer_value(json_object_get(hc, "Retries")), 3);
	planned_free(&r2);

	/* FROM scratch: PATH and "/" as BuildKit's empty image */
	planned r3 = must_plan("FROM scratch\nCMD echo hi\n", NULL, NULL);
	sw_oci_config *c3 = &last_stage(&r3)->config;
	assert_non_null(env_of(c3->env, "PATH"));
	assert_string_equal(c3->cmd[0], "/bin/sh");
	assert_string_equal(c3->cmd[1], "-c");
	assert_string_equal(c3->cmd[2], "echo hi");
	assert_int_equal(r3.p->n_images, 0);
	planned_free(&r3);
}

static void test_builder_engine__arg_scopes(void **state)
{
	(void)state;
	static const char t[] = "ARG TAG=1\n"
	                        "ARG UNUSED_GLOBAL\n"
	                        "FROM base:${TAG} AS one\n"
	                        "RUN echo $TAG\n"
	                        "ARG TAG\n"
	                        "RUN echo $TAG\n"
	                        "FROM base:${TAG}\n"
	                        "ARG TAG=local\n"
	                        "RUN echo $TAG\n"
	                        "COPY --from=one /x /x\n";
	const char *args[] = { "TAG=2", NULL };
	planned r = must_plan(t, args, NULL);
	assert_int_equal(sw_strv_len(F.images_asked), 1); /* base:2 once, for both stages */
	assert_string_equal(F.images_asked[0], "base:2");
	sw_build__stage *one = &r.p->stages[0];
	assert_null(env_of(one->steps[0].env, "TAG")); /* not redeclared yet */
	assert_string_equal(env_of(one->steps[2].env, "TAG"), "2");
	/* the build arg wins over a stage default */
	assert_string_equal(env_of(r.p->stages[1].steps[1].env, "TAG"), "2");
	assert_true(one->needed);
	assert_int_equal(r.p->stages[1].steps[2].src_kind, SW_BUILD__SRC_STAGE);
	assert_int_equal(r.p->stages[1].steps[2].src, 0);
	/* a COPY --from=stage key follows that stage's final key */
	planned_free(&r);

	/* without the build arg: defaults */
	sw_strv_free(F.images_asked);
	F.images_asked = NULL;
	planned r2 = must_plan(t, NULL, NULL);
	assert_string_equal(F.images_asked[0], "base:1");
	assert_string_equal(env_of(r2.p->stages[0].steps[2].env, "TAG"), "1");
	assert_string_equal(env_of(r2.p->stages[1].steps[1].env, "TAG"), "local");
	planned_free(&r2);
}

static void test_builder_engine__run_argv(void **state)
{
	(void)state;
	static const char t[] = "FROM base:1\n"
	                        "RUN echo one\n"
	                        "RUN [\"/bin/echo\", \"two\"]\n"
	                        "SHELL [\"/bin/bash\", \"-c\"]\n"
	                        "RUN echo three\n"
	                        "RUN <<EOT\n"
	                        "echo four\n"
	                        "EOT\n"
	                        "RUN <<EOT\n"
	                        "#!/bin/sh\n"
	                        "echo five\n"
	                        "EOT\n"
	                        "RUN --network=host cat <<EOT > /f\n"
	                        "six\n"
	                        "EOT\n";
	planned r = must_plan(t, NULL, NULL);
	sw_build__stage *st = last_stage(&r);
	assert_string_equal(st->steps[0].argv[0], "/bin/sh");
	assert_string_equal(st->steps[0].argv[2], "echo one");
	assert_string_equal(st->steps[0].created_by, "RUN /bin/sh -c echo one # buildkit");
	assert_string_equal(st->steps[1].argv[0], "/bin/echo");
	assert_int_equal(sw_strv_len(st->steps[1].argv), 2);
	assert_string_equal(st->steps[3].argv[0], "/bin/bash");
	assert_string_equal(st->steps[3].argv[2], "echo three");
	/* a plain heredoc runs through the shell; one with "#!" as a file */
	assert_string_equal(st->steps[4].argv[2], "echo four\n");
	assert_null(st->steps[4].script);
	assert_string_equal(st->steps[5].argv[0], "/dev/pipes/EOT");
	assert_int_equal(sw_strv_len(st->steps[5].argv), 1);
	assert_string_equal(st->steps[5].script, "#!/bin/sh\necho five\n");
	/* a heredoc inside a command goes to the shell whole */
	assert_string_equal(st->steps[6].argv[2], "cat <<EOT > /f\nsix\nEOT");
	assert_true(st->steps[6].net_host);
	assert_false(st->steps[0].net_host);
	assert_string_equal(st->steps[0].cwd, "/");
	/* the heredoc body is part of the key */
	static const char t2[] = "FROM base:1\n"
	                         "RUN echo one\n"
	                         "RUN [\"/bin/echo\", \"two\"]\n"
	                         "SHELL [\"/bin/bash\", \"-c\"]\n"
	                         "RUN echo three\n"
	                         "RUN <<EOT\n"
	                         "echo FOUR\n"
	                         "EOT\n";
	planned r2 = must_plan(t2, NULL, NULL);
	assert_string_equal(last_stage(&r2)->steps[3].key, st->steps[3].key);
	assert_string_not_equal(last_stage(&r2)->steps[4].key, st->steps[4].key);
	planned_free(&r);
	planned_free(&r2);
}

static void test_builder_engine__copy_forms(void **state)
{
	(void)state;
	static const char t[] = "FROM base:1\n"
	                        "WORKDIR /app\n"
	                        "COPY a .\n"
	                        "COPY --chown=1000:1000 --chmod=0750 a b sub/\n"
	                        "COPY a rel/file\n"
	                        "COPY <<EOF /etc/motd\n"
	                        "hello $BASEVAR\n"
	                        "EOF\n"
	                        "COPY --from=other:3 /bin/* /usr/bin/\n";
	planned r = must_plan(t, NULL, NULL);
	sw_build__stage *st = last_stage(&r);
	assert_string_equal(st->steps[1].dest, "/app/");
	assert_string_equal(st->steps[2].dest, "/app/sub/");
	assert_string_equal(st->steps[2].chown, "1000:1000");
	assert_true(st->steps[2].chmod);
	assert_int_equal(st->steps[2].mode, 0750);
	assert_string_equal(st->steps[3].dest, "/app/rel/file");
	assert_int_equal(st->steps[4].src_kind, SW_BUILD__SRC_HEREDOC);
	assert_string_equal(st->steps[4].srcs[0], "EOF");
	assert_string_equal(st->steps[4].bodies[0], "hello base\n");
	assert_int_equal(st->steps[5].src_kind, SW_BUILD__SRC_IMAGE);
	assert_string_equal(r.p->images[st->steps[5].src].name, "other:3");
	assert_string_equal(st->steps[1].created_by, "COPY a . # buildkit");
	planned_free(&r);
}

/* ---------------------------------------------------------------- stages */

static void test_builder_engine__stage_selection(void **state)
{
	(void)state;
	static const char t[] = "FROM base:1 AS deps\n"
	                        "RUN echo deps\n"
	                        "FROM base:1 AS tools\n"
	                        "RUN echo tools\n"
	                        "FROM deps AS build\n"
	                        "RUN --mount=type=bind,from=tools,target=/t ls /t\n"
	                        "FROM base:1 AS unrelated\n"
	                        "RUN exit 1\n"
	                        "FROM scratch AS final\n"
	                        "COPY --from=build /out /out\n"
	                        "FROM base:1 AS last\n"
	                        "COPY --from=1 /y /y\n";
	/* default target: the last stage, which needs only stage 1 */
	planned a = must_plan(t, NULL, NULL);
	assert_int_equal(a.p->target, 5);
	bool want_a[] = { false, true, false, false, false, true };
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(a.p->stages[i].needed, want_a[i]);
	planned_free(&a);
	/* --target final: build, deps (its base) and tools (a bind mount source) */
	planned b = must_plan(t, NULL, "final");
	assert_int_equal(b.p->target, 4);
	bool want_b[] = { true, true, true, false, true, false };
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(b.p->stages[i].needed, want_b[i]);
	sw_build__stage *build = &b.p->stages[2];
	assert_int_equal(build->base_kind, SW_BUILD__BASE_STAGE);
	assert_int_equal(build->base, 0);
	/* a stage on a stage starts from its key and its config */
	assert_string_equal(build->key0, b.p->stages[0].key);
	assert_string_equal(build->label, "build");
	assert_int_equal(build->steps[0].mounts[0].from_kind, SW_BUILD__SRC_STAGE);
	assert_int_equal(build->steps[0].mounts[0].from, 1);
	assert_string_equal(build->steps[0].title, "[build 2/2] RUN --mount=type=bind,from=tools,"
	                                           "target=/t ls /t");
	planned_free(&b);
	/* an unknown target */
	sw_error *err = NULL;
	sw_dockerfile *df = NULL;
	assert_null(plan_of(&df, t, NULL, "nope", &err));
	assert_int_equal(sw_error_code_of(err), SW_ERR_NOT_FOUND);
	assert_non_null(strstr(sw_error_msg(err), "\"nope\""));
	sw_error_free(err);
	sw_df_free(df);
}

static void test_builder_engine__errors(void **state)
{
	(void)state;
	static const struct {
		const char *df;
		const char *msg;
	} cases[] = {
		{ "FROM base:1\nCOPY missing /x\n", "Dockerfile:2" },
		{ "FROM base:1\nCOPY --from=0 /a /b\n", "not before this one" },
		{ "FROM base:1\nRUN --mount=type=ssh true\n", "type \"ssh\" is not supported" },
		{ "FROM base:1\nCOPY --chmod=u+x a /a\n", "only octal modes" },
		{ "FROM base:1\nCOPY http://example.com/x /x\n", "use ADD" },
		{ "FROM base:1\nEXPOSE 99999\n", "EXPOSE" },
		{ "FROM base:1\nCOPY a b /notadir\n", "must be a folder" },
		{ "FROM base:1\nRUN --mount=type=cache true\n", "needs a target" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(cases); i++) {
		sw_error *err = NULL;
		sw_dockerfile *df = NULL;
		sw_build__plan *p = plan_of(&df, cases[i].df, NULL, NULL, &err);
		if (p)
			fail_msg("case %zu planned: %s", i, cases[i].df);
		if (!strstr(sw_error_msg(err), cases[i].msg))
			fail_msg("case %zu: '%s' lacks '%s'", i, sw_error_msg(err), cases[i].msg);
		sw_error_free(err);
		sw_df_free(df);
	}
}

/* ---------------------------------------------------------------- ONBUILD */

static void test_builder_engine__onbuild_triggers(void **state)
{
	(void)state;
	/* FROM an earlier stage: its triggers come first, in order, then the stage's own steps */
	planned r = must_plan("FROM base:1 AS parent\n"
	                      "ONBUILD RUN echo one\n"
	                      "ONBUILD COPY a /a\n"
	                      "FROM parent AS child\n"
	                      "ONBUILD RUN echo mine-later\n"
	                      "RUN echo mine\n",
	                      NULL, NULL);
	sw_build__stage *parent = &r.p->stages[0];
	sw_build__stage *child = last_stage(&r);
	assert_int_equal(json_array_size(json_object_get(
	                         json_object_get(parent->config.raw, "config"), "OnBuild")),
	                 2);
	assert_int_equal(child->n_steps, 4);
	assert_int_equal(child->steps[0].kind, SW_DF_RUN);
	assert_string_equal(child->steps[0].ins->original, "RUN echo one");
	assert_non_null(strstr(child->steps[0].created_by, "echo one"));
	assert_int_equal(child->steps[1].kind, SW_DF_COPY);
	assert_string_equal(child->steps[1].dest, "/a");
	assert_string_equal(child->steps[3].ins->original, "RUN echo mine");
	assert_int_equal(child->steps[0].number, 2);
	assert_int_equal(child->n_progress, 4);
	/* the child keeps only its own trigger */
	json_t *ob = json_object_get(json_object_get(child->config.raw, "config"), "OnBuild");
	assert_int_equal(json_array_size(ob), 1);
	assert_string_equal(json_string_value(json_array_get(ob, 0)), "RUN echo mine-later");
	planned_free(&r);

	/* FROM an image: a changed trigger changes the keys from the first step on */
	static const char *const t1[] = { "RUN echo triggered > /onbuild.txt", NULL };
	static const char *const t2[] = { "RUN echo changed > /onbuild.txt", NULL };
	const char *dft = "FROM base:1\nRUN echo mine\n";
	F.base_onbuild = t1;
	planned a = must_plan(dft, NULL, NULL);
	F.base_onbuild = t2;
	planned b = must_plan(dft, NULL, NULL);
	F.base_onbuild = NULL;
	planned c = must_plan(dft, NULL, NULL);
	sw_build__stage *sa = last_stage(&a), *sb = last_stage(&b), *sc = last_stage(&c);
	assert_int_equal(sa->n_steps, 2);
	assert_int_equal(sc->n_steps, 1);
	assert_string_equal(sa->steps[0].ins->original, "RUN echo triggered > /onbuild.txt");
	assert_string_not_equal(sa->steps[0].key, sb->steps[0].key);
	assert_string_not_equal(sa->steps[1].key, sb->steps[1].key);
	assert_string_not_equal(sa->key, sc->key);
	assert_null(json_object_get(json_object_get(sa->config.raw, "config"), "OnBuild"));
	assert_null(F.warnings);
	planned_free(&a);
	planned_free(&b);
	planned_free(&c);

	/* bad triggers name the base and the trigger */
	static const struct {
		const char *trigger;
		const char *msg;
	} bad[] = {
		{ "ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed" },
		{ "FROM other", "FROM isn't allowed as an ONBUILD trigger" },
		{ "MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger" },
		{ "BOGUS x", "unknown instruction: BOGUS" },
		{ "COPY onlyone", "COPY requires at least two arguments" },
	};
	for (size_t i = 0; i < SW_ARRAY_SIZE(bad); i++) {
		const char *const t[] = { "RUN ok", bad[i].trigger, NULL };
		F.base_onbuild = t;
		sw_error *err = NULL;
		sw_dockerfile *df = NULL;
		sw_build__plan *p = plan_of(&df, dft, NULL, NULL, &err);
		if (p)
			fail_msg("trigger %zu planned: %s", i, bad[i].trigger);
		const char *m = sw_error_msg(err);
		if (!strstr(m, bad[i].msg) || !strstr(m, bad[i].trigger) ||
		    !strstr(m, "image base:1") || !strstr(m, "Dockerfile:1:1"))
			fail_msg("trigger %zu: '%s'", i, m);
		sw_error_free(err);
		sw_df_free(df);
	}
	F.base_onbuild = NULL;
}

static void test_builder_engine__helpers(void **state)
{
	(void)state;
	int64_t ns = 0;
	assert_int_equal(sw_build__duration_parse(&ns, "30s"), 0);
	assert_int_equal(ns, 30000000000LL);
	assert_int_equal(sw_build__duration_parse(&ns, "1m30s"), 0);
	assert_int_equal(ns, 90000000000LL);
	assert_int_equal(sw_build__duration_parse(&ns, "250ms"), 0);
	assert_int_equal(ns, 250000000LL);
	assert_int_equal(sw_build__duration_parse(&ns, "1h"), 0);
	assert_int_equal(ns, 3600000000000LL);
	assert_int_not_equal(sw_build__duration_parse(&ns, "10"), 0);
	assert_int_not_equal(sw_build__duration_parse(&ns, "x1s"), 0);
	char *t = sw_build__time_str(1700000000);
	assert_string_equal(t, "2023-11-14T22:13:20Z");
	free(t);
}

int test_builder_engine_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_builder_engine__keys_stable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__build_arg_from_first_use,
		                                setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__env_changes_later_run, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__unused_and_proxy_args, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__context_change, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__secrets_not_in_keys, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__config_replay, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__arg_scopes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__run_argv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__copy_forms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__stage_selection, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__onbuild_triggers, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_builder_engine__helpers, setup, teardown),
	};
	return cmocka_run_group_tests_name("builder_engine", tests, NULL, NULL);
}
