/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the Dockerfile frontend: parser directives, comments and continuations,
 * heredocs, exec and shell forms, flags, every instruction's argument shape and checks, error
 * messages with file:line:column, Docker's substitution rules (a table of inputs and results),
 * word splitting, .dockerignore matching (a table of patterns and paths) and loading, and the
 * broken-Dockerfile suite under tests/build/broken/ (each NN-name.Dockerfile must fail with the
 * message in NN-name.expected).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "builder/builder.h"

int test_builder_dockerfile_run(void);

/* ---------------------------------------------------------------- helpers */

static sw_dockerfile *parse_ok(const char *src)
{
	sw_dockerfile *df = NULL;
	sw_error *err = NULL;
	if (sw_df_parse(&df, src, strlen(src), "Dockerfile", &err) < 0)
		fail_msg("parse failed: %s\n--- input:\n%s", sw_error_msg(err), src);
	assert_null(err);
	assert_non_null(df);
	return df;
}

/* Parse must fail with a message containing `expect`. */
static void parse_fails(const char *src, const char *expect)
{
	sw_dockerfile *df = NULL;
	sw_error *err = NULL;
	int rc = sw_df_parse(&df, src, strlen(src), "Dockerfile", &err);
	if (rc >= 0)
		fail_msg("parse succeeded, expected \"%s\"\n--- input:\n%s", expect, src);
	assert_int_equal(rc, SW_ERR_INVALID);
	assert_null(df);
	if (!strstr(sw_error_msg(err), expect))
		fail_msg("error \"%s\" lacks \"%s\"", sw_error_msg(err), expect);
	sw_error_free(err);
}

static void assert_args(char **args, ...)
{
	va_list ap;
	va_start(ap, args);
	size_t i = 0;
	for (const char *want; (want = va_arg(ap, const char *)); i++) {
		if (!args[i])
			fail_msg("argument %zu missing, wanted \"%s\"", i, want);
		assert_string_equal(args[i], want);
	}
	va_end(ap);
	if (args[i])
		fail_msg("unexpected argument %zu \"%s\"", i, args[i]);
}

static const sw_df_instruction *ins_at(const sw_dockerfile *df, size_t i)
{
	assert_true(i < df->n_instructions);
	return &df->instructions[i];
}

/* ---------------------------------------------------------------- parsing */

static void test_builder__basic_forms(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("FROM alpine:3.19 AS build\n"
	                             "run echo   hello  \n"
	                             "  RUN [\"echo\", \"a b\", \"\\u00e9\"]\n"
	                             "CMD [\"a\", ]\n"
	                             "ENTRYPOINT []\n"
	                             "WORKDIR /a b\n"
	                             "USER app:app\n"
	                             "STOPSIGNAL SIGTERM\n"
	                             "EXPOSE 80/tcp  443\n"
	                             "VOLUME [\"/data\", \"/logs\"]\n"
	                             "VOLUME /x /y\n"
	                             "MAINTAINER someone <a@b.c>\n");
	assert_int_equal(df->n_instructions, 12);
	assert_int_equal(df->escape, '\\');
	assert_null(df->syntax);
	const sw_df_instruction *i = ins_at(df, 0);
	assert_int_equal(i->kind, SW_DF_FROM);
	assert_string_equal(i->keyword, "FROM");
	assert_args(i->args, "alpine:3.19", "AS", "build", NULL);
	assert_int_equal(i->line, 1);
	assert_int_equal(i->column, 1);
	i = ins_at(df, 1);
	assert_int_equal(i->kind, SW_DF_RUN);
	assert_string_equal(i->keyword, "run");
	assert_false(i->json_form);
	assert_args(i->args, "echo   hello", NULL);
	assert_string_equal(i->original, "run echo   hello");
	i = ins_at(df, 2);
	assert_true(i->json_form);
	assert_args(i->args, "echo", "a b", "\xc3\xa9", NULL);
	assert_int_equal(i->line, 3);
	assert_int_equal(i->column, 3);
	/* not valid JSON: Docker takes the shell form */
	i = ins_at(df, 3);
	assert_int_equal(i->kind, SW_DF_CMD);
	assert_false(i->json_form);
	assert_args(i->args, "[\"a\", ]", NULL);
	i = ins_at(df, 4);
	assert_true(i->json_form);
	assert_args(i->args, NULL);
	assert_args(ins_at(df, 5)->args, "/a b", NULL);
	assert_args(ins_at(df, 6)->args, "app:app", NULL);
	assert_args(ins_at(df, 7)->args, "SIGTERM", NULL);
	assert_args(ins_at(df, 8)->args, "80/tcp", "443", NULL);
	assert_true(ins_at(df, 9)->json_form);
	assert_args(ins_at(df, 9)->args, "/data", "/logs", NULL);
	assert_args(ins_at(df, 10)->args, "/x", "/y", NULL);
	assert_args(ins_at(df, 11)->args, "someone <a@b.c>", NULL);
	assert_string_equal(sw_df_kind_name(SW_DF_HEALTHCHECK), "HEALTHCHECK");
	sw_df_free(df);
	sw_df_free(NULL);
}

static void test_builder__directives(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("# syntax=docker/dockerfile:1.7\n"
	                             "#ESCAPE = `\n"
	                             "# check=skip=all\n"
	                             "FROM scratch\n"
	                             "RUN a \\b `\n"
	                             "  c\n"
	                             "# escape=\\\n"
	                             "COPY x\\ y /z\n");
	assert_int_equal(df->escape, '`');
	assert_string_equal(df->syntax, "docker/dockerfile:1.7");
	assert_int_equal(df->n_instructions, 3);
	/* the backtick continues the line, the backslash is an ordinary character */
	assert_args(ins_at(df, 1)->args, "a \\b   c", NULL);
	assert_args(ins_at(df, 2)->args, "x\\", "y", "/z", NULL);
	sw_df_free(df);

	/* a directive after an empty line, a comment or an instruction is a comment */
	df = parse_ok("\n# escape=`\nFROM scratch\nRUN a \\\n b\n");
	assert_int_equal(df->escape, '\\');
	assert_args(ins_at(df, 1)->args, "a  b", NULL);
	sw_df_free(df);
	df = parse_ok("# hello\n# escape=`\nFROM scratch\n");
	assert_int_equal(df->escape, '\\');
	sw_df_free(df);
	df = parse_ok("FROM scratch\n# escape=`\n# syntax=x\n");
	assert_int_equal(df->escape, '\\');
	assert_null(df->syntax);
	sw_df_free(df);
	/* an unknown directive ends the directives */
	df = parse_ok("# foo=bar\n# escape=`\nFROM scratch\n");
	assert_int_equal(df->escape, '\\');
	sw_df_free(df);
	/* a byte-order mark and CRLF line ends */
	df = parse_ok("\xef\xbb\xbf# escape=`\r\nFROM scratch\r\nRUN a `\r\n b\r\n");
	assert_int_equal(df->escape, '`');
	assert_args(ins_at(df, 1)->args, "a  b", NULL);
	sw_df_free(df);

	parse_fails("# escape=x\nFROM scratch\n",
	            "Dockerfile:1:1: invalid escape token 'x' does not match ` or \\");
	parse_fails("# escape=`\n# Escape=\\\nFROM scratch\n",
	            "Dockerfile:2:1: only one escape parser directive can be used");
	parse_fails("# syntax=a\n# syntax=b\nFROM scratch\n", "only one syntax parser directive");
}

static void test_builder__comments_continuations(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("# comment\n"
	                             "   # indented comment\n"
	                             "\n"
	                             "FROM scratch\n"
	                             "RUN echo a \\\n"
	                             "# a comment inside is skipped\n"
	                             "\n"
	                             "    && echo b \\   \n"
	                             "  \t\n"
	                             "    && echo c\n"
	                             "RUN echo \\\\\n"
	                             "RUN echo \\\\\\\n"
	                             "RUN last \\");
	assert_int_equal(df->n_instructions, 5);
	const sw_df_instruction *i = ins_at(df, 1);
	assert_args(i->args, "echo a     && echo b     && echo c", NULL);
	assert_int_equal(i->line, 5);
	/* an escaped escape at the end does not continue the line */
	assert_args(ins_at(df, 2)->args, "echo \\\\", NULL);
	assert_int_equal(ins_at(df, 3)->line, 12);
	/* ... but three do (Docker's regexp only looks at the character before) */
	assert_args(ins_at(df, 3)->args, "echo \\\\\\", NULL);
	assert_int_equal(ins_at(df, 4)->line, 13);
	assert_args(ins_at(df, 4)->args, "last", NULL);
	sw_df_free(df);

	/* the error column follows the word onto its continuation line */
	parse_fails("FROM scratch\nCOPY --chown=1 \\\n    --bogus=2 a b\n",
	            "Dockerfile:3:5: unknown flag: --bogus: \"COPY --chown=1     --bogus=2 a b\"");
}

static void test_builder__heredocs(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("FROM scratch\n"
	                             "RUN <<EOF\n"
	                             "echo $HOME\n"
	                             "  # not a comment\n"
	                             "EOF\n"
	                             "RUN <<-'EOT' bash -x\n"
	                             "\t\techo a\n"
	                             "\tEOT\n"
	                             "RUN cat <<\"A\" <<B > out && \\\n"
	                             "    true\n"
	                             "1\n"
	                             "A\n"
	                             "2\n"
	                             "B\n"
	                             "COPY <<a.txt <<b.txt /dst/\n"
	                             "alpha\n"
	                             "a.txt\n"
	                             "beta\n"
	                             "b.txt\n"
	                             "COPY --chmod=644 <<EOF /etc/x\n"
	                             "EOF\n"
	                             "RUN [\"sh\", \"-c\", \"cat <<EOF\"]\n"
	                             "RUN echo a<<X\n"
	                             "RUN 3<<X cat\n"
	                             "x\n"
	                             "X\n");
	assert_int_equal(df->n_instructions, 9);
	const sw_df_instruction *i = ins_at(df, 1);
	assert_args(i->args, "<<EOF", NULL);
	assert_int_equal(i->n_heredocs, 1);
	assert_string_equal(i->heredocs[0].name, "EOF");
	assert_string_equal(i->heredocs[0].content, "echo $HOME\n  # not a comment\n");
	assert_true(i->heredocs[0].expand);
	assert_false(i->heredocs[0].strip_tabs);

	i = ins_at(df, 2);
	assert_args(i->args, "<<-'EOT' bash -x", NULL);
	assert_int_equal(i->n_heredocs, 1);
	assert_string_equal(i->heredocs[0].name, "EOT");
	assert_string_equal(i->heredocs[0].content, "echo a\n");
	assert_false(i->heredocs[0].expand);
	assert_true(i->heredocs[0].strip_tabs);

	i = ins_at(df, 3);
	assert_int_equal(i->line, 9);
	assert_args(i->args, "cat <<\"A\" <<B > out &&     true", NULL);
	assert_int_equal(i->n_heredocs, 2);
	assert_string_equal(i->heredocs[0].name, "A");
	assert_false(i->heredocs[0].expand);
	assert_string_equal(i->heredocs[0].content, "1\n");
	assert_string_equal(i->heredocs[1].name, "B");
	assert_true(i->heredocs[1].expand);
	assert_string_equal(i->heredocs[1].content, "2\n");

	i = ins_at(df, 4);
	assert_int_equal(i->kind, SW_DF_COPY);
	assert_args(i->args, "<<a.txt", "<<b.txt", "/dst/", NULL);
	assert_int_equal(i->n_heredocs, 2);
	assert_string_equal(i->heredocs[0].content, "alpha\n");
	assert_string_equal(i->heredocs[1].content, "beta\n");
	assert_ptr_equal(sw_df_heredoc_for_arg(i, i->args[1]), &i->heredocs[1]);
	assert_ptr_equal(sw_df_heredoc_for_arg(i, i->args[0]), &i->heredocs[0]);
	assert_null(sw_df_heredoc_for_arg(i, i->args[2]));

	i = ins_at(df, 5);
	assert_int_equal(i->n_heredocs, 1);
	assert_string_equal(i->heredocs[0].content, "");
	assert_int_equal(i->n_flags, 1);
	assert_string_equal(i->flags[0].name, "chmod");
	assert_string_equal(i->flags[0].value, "644");

	/* exec form and a word not starting with "<<" have no heredoc */
	assert_int_equal(ins_at(df, 6)->n_heredocs, 0);
	assert_int_equal(ins_at(df, 7)->n_heredocs, 0);
	i = ins_at(df, 8);
	assert_int_equal(i->n_heredocs, 1);
	assert_string_equal(i->heredocs[0].name, "X");
	sw_df_free(df);

	parse_fails("FROM scratch\nRUN echo a && \\\n  cat <<EOF\nline\n",
	            "Dockerfile:3:7: unterminated heredoc");
	/* the delimiter line must match exactly */
	parse_fails("FROM scratch\nRUN <<EOF\nEOF \n", "Dockerfile:2:5: unterminated heredoc");
	parse_fails("FROM scratch\nCOPY a <<EOF\nx\nEOF\n",
	            "Dockerfile:2:8: COPY cannot accept a heredoc as a destination");
}

static void test_builder__json_forms(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok(
	        "FROM scratch\n"
	        "CMD [ \"a\" , \"b\\\"c\", \"\\ud83d\\ude00\", \"\\ud800x\", \"\\/\\t\" ]  \n"
	        "COPY [\"a b\", \"c\", \"/d/\"]\n"
	        "ADD [\"x\" ,\"/y\"]\n"
	        "SHELL [\"/bin/bash\", \"-eu\", \"-c\"]\n"
	        "ENTRYPOINT [\"a\"] trailing\n"
	        "RUN ['single']\n"
	        "HEALTHCHECK --interval=5s CMD [\"curl\", \"-f\", \"x\"]\n"
	        "HEALTHCHECK cmd curl -f x || exit 1\n"
	        "HEALTHCHECK NONE\n");
	const sw_df_instruction *i = ins_at(df, 1);
	assert_true(i->json_form);
	assert_args(i->args, "a", "b\"c", "\xf0\x9f\x98\x80", "\xef\xbf\xbdx", "/\t", NULL);
	assert_true(ins_at(df, 2)->json_form);
	assert_args(ins_at(df, 2)->args, "a b", "c", "/d/", NULL);
	assert_args(ins_at(df, 3)->args, "x", "/y", NULL);
	assert_args(ins_at(df, 4)->args, "/bin/bash", "-eu", "-c", NULL);
	assert_false(ins_at(df, 5)->json_form);
	assert_args(ins_at(df, 5)->args, "[\"a\"] trailing", NULL);
	assert_false(ins_at(df, 6)->json_form);
	i = ins_at(df, 7);
	assert_true(i->json_form);
	assert_args(i->args, "CMD", "curl", "-f", "x", NULL);
	assert_string_equal(i->flags[0].name, "interval");
	assert_string_equal(i->flags[0].value, "5s");
	i = ins_at(df, 8);
	assert_false(i->json_form);
	assert_args(i->args, "cmd", "curl -f x || exit 1", NULL);
	assert_args(ins_at(df, 9)->args, "NONE", NULL);
	sw_df_free(df);

	parse_fails("FROM scratch\nRUN [\"a\", null]\n",
	            "Dockerfile:2:5: when using JSON array syntax, arrays must be comprised of "
	            "strings only: \"RUN [\\\"a\\\", null]\"");
	parse_fails("FROM scratch\nENTRYPOINT [[\"a\"]]\n", "arrays must be comprised of strings");
	parse_fails("FROM scratch\nSHELL bash -c\n",
	            "Dockerfile:2:7: SHELL requires the arguments to be in JSON form");
	parse_fails("FROM scratch\nSHELL []\n", "SHELL requires at least one argument");
	parse_fails("FROM scratch\nVOLUME [\"/a\", \" \"]\n",
	            "Dockerfile:2:15: VOLUME specified can not be an empty string");
}

static void test_builder__flags(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok(
	        "FROM --platform=$BUILDPLATFORM golang AS b\n"
	        "RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok "
	        "--network=none --security=sandbox go build\n"
	        "COPY --from=b --chown=app:app --chmod=0755 --link --parents=false a /b\n"
	        "ADD --checksum=sha256:abc --keep-git-dir=TRUE --link=false --chmod=\"6\"'44' u /d\n"
	        "COPY -- --notflag /x\n"
	        "RUN --network=host -- echo\n");
	const sw_df_instruction *i = ins_at(df, 0);
	assert_int_equal(i->n_flags, 1);
	assert_string_equal(i->flags[0].name, "platform");
	assert_string_equal(i->flags[0].value, "$BUILDPLATFORM");
	assert_int_equal(i->flags[0].line, 1);
	assert_int_equal(i->flags[0].column, 6);
	assert_args(i->args, "golang", "AS", "b", NULL);
	i = ins_at(df, 1);
	assert_int_equal(i->n_flags, 4);
	assert_string_equal(i->flags[0].name, "mount");
	assert_string_equal(i->flags[0].value, "type=cache,target=/root/.cache");
	assert_string_equal(i->flags[1].value, "type=secret,id=tok");
	assert_string_equal(i->flags[2].name, "network");
	assert_string_equal(i->flags[3].value, "sandbox");
	assert_args(i->args, "go build", NULL);
	i = ins_at(df, 2);
	assert_int_equal(i->n_flags, 5);
	assert_string_equal(i->flags[3].name, "link");
	assert_null(i->flags[3].value);
	assert_string_equal(i->flags[4].name, "parents");
	assert_string_equal(i->flags[4].value, "false");
	i = ins_at(df, 3);
	assert_int_equal(i->n_flags, 4);
	assert_string_equal(i->flags[1].name, "keep-git-dir");
	assert_string_equal(i->flags[1].value, "true");
	assert_string_equal(i->flags[2].value, "false");
	assert_string_equal(i->flags[3].name, "chmod");
	assert_string_equal(i->flags[3].value, "644");
	assert_args(i->args, "u", "/d", NULL);
	i = ins_at(df, 4);
	assert_int_equal(i->n_flags, 0);
	assert_args(i->args, "--notflag", "/x", NULL);
	assert_args(ins_at(df, 5)->args, "echo", NULL);
	sw_df_free(df);

	parse_fails("FROM scratch\nCOPY --xyz=1 a b\n", "Dockerfile:2:6: unknown flag: --xyz");
	parse_fails("FROM scratch\nADD --from=x a b\n", "unknown flag: --from");
	parse_fails("FROM scratch\nENV --a=b c=d\n", "Dockerfile:2:5: unknown flag: --a");
	parse_fails("FROM --platform linux\n",
	            "Dockerfile:1:6: missing a value on flag: --platform");
	parse_fails("FROM scratch\nCOPY --link= a b\n", "missing a value on flag: --link");
	parse_fails("FROM scratch\nCOPY --link=yes a b\n",
	            "expecting boolean value for flag --link, not: yes");
	parse_fails("FROM scratch\nRUN --network=none --network=host x\n",
	            "Dockerfile:2:20: duplicate flag specified: --network");
	parse_fails("FROM scratch\nRUN --network=bridge x\n",
	            "unsupported network mode \"bridge\"");
	parse_fails("FROM scratch\nRUN --security=root x\n", "unsupported security mode \"root\"");
	parse_fails("FROM scratch\nRUN --mount=type=volume x\n",
	            "unsupported mount type \"volume\"");
	parse_fails("FROM scratch\nRUN --mount=target=/x,bogus x\n",
	            "invalid field 'bogus' must be a key=value pair");
	parse_fails("FROM scratch\nRUN --mount=from=$X,target=/x x\n",
	            "'from' doesn't support variable expansion");
	parse_fails("FROM scratch\nRUN --mount=target=a\\\"b x\n", "bare \" in non-quoted-field");
	parse_fails("FROM scratch\nHEALTHCHECK --interval=1 CMD x\n",
	            "time: missing unit in duration \"1\"");
	parse_fails("FROM scratch\nHEALTHCHECK --timeout=10xs CMD x\n", "unknown unit \"xs\"");
	parse_fails("FROM scratch\nHEALTHCHECK --start-period=500us CMD x\n",
	            "Interval \"start-period\" cannot be less than 1ms");
	parse_fails("FROM scratch\nHEALTHCHECK --retries=two CMD x\n",
	            "strconv.ParseInt: parsing \"two\": invalid syntax");
	parse_fails("FROM scratch\nHEALTHCHECK --retries=-3 CMD x\n",
	            "--retries cannot be negative (-3)");
	parse_fails("FROM scratch\nHEALTHCHECK --foo=1 CMD x\n", "unknown flag: --foo");
	parse_fails("FROM scratch\nHEALTHCHECK CMD\n", "Missing command after HEALTHCHECK CMD");
	parse_fails("FROM scratch\nHEALTHCHECK CMD []\n", "Missing command after HEALTHCHECK CMD");
	parse_fails("FROM scratch\nHEALTHCHECK check x\n",
	            "Dockerfile:2:13: Unknown type \"CHECK\" in HEALTHCHECK (try CMD)");
	parse_fails("FROM scratch\nHEALTHCHECK NONE x\n", "HEALTHCHECK NONE takes no arguments");

	/* the durations and counts Docker accepts */
	df = parse_ok("FROM scratch\nHEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=0 "
	              "--start-interval=2ms --retries=3 CMD x\n");
	assert_int_equal(ins_at(df, 1)->n_flags, 5);
	sw_df_free(df);
}

static void test_builder__from_and_structure(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("ARG BASE=alpine\n"
	                             "ARG A B=2\n"
	                             "FROM ${BASE} as Build-1.x_y\n"
	                             "FROM build-1.x_y\n");
	assert_int_equal(ins_at(df, 0)->kind, SW_DF_ARG);
	assert_args(ins_at(df, 0)->args, "BASE=alpine", NULL);
	assert_args(ins_at(df, 1)->args, "A", "B=2", NULL);
	assert_args(ins_at(df, 2)->args, "${BASE}", "as", "Build-1.x_y", NULL);
	sw_df_free(df);

	parse_fails(
	        "FROM alpine AS 1st\n",
	        "Dockerfile:1:16: invalid name for build stage: \"1st\", name can't start with a "
	        "number or contain symbols");
	parse_fails("FROM alpine AS a/b\n", "invalid name for build stage: \"a/b\"");
	parse_fails("FROM alpine AS\n",
	            "Dockerfile:1:13: FROM requires either one or three arguments");
	parse_fails("FROM alpine IS x\n", "FROM requires either one or three arguments");
	parse_fails("FROM\n", "Dockerfile:1:1: FROM requires either one or three arguments");
	parse_fails("", "Dockerfile:1:1: file with no instructions");
	parse_fails("# only\n# comments\n\n", "Dockerfile:3:1: file with no instructions");
	parse_fails("ARG A\nRUN x\n", "Dockerfile:2:1: no build stage in current context");
	parse_fails("ARG A\n", "Dockerfile:1:1: dockerfile contains no stages to build");
	parse_fails(
	        "FROM scratch\nCOPPY a b\n",
	        "Dockerfile:2:1: unknown instruction: COPPY (did you mean COPY?): \"COPPY a b\"");
	parse_fails("FROM scratch\n  workdri /x\n",
	            "Dockerfile:2:3: unknown instruction: workdri (did you mean workdir?)");
	parse_fails("FROM scratch\nRn x\n", "unknown instruction: Rn (did you mean run?)");
	parse_fails("FROM scratch\nXYZZY x\n", "Dockerfile:2:1: unknown instruction: XYZZY: ");
	parse_fails("FROM scratch\n\\\n", "Dockerfile:2:1: unknown instruction: ");
	static const char nul[] = "FROM scratch\nRUN a\0\n";
	sw_dockerfile *bad = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_df_parse(&bad, nul, sizeof(nul) - 1, "Dockerfile", &err),
	                 SW_ERR_INVALID);
	assert_string_equal(sw_error_msg(err),
	                    "Dockerfile:2:6: the Dockerfile contains a NUL byte");
	sw_error_free(err);
}

static void test_builder__argument_counts(void **state)
{
	(void)state;
	static const struct {
		const char *line, *msg;
	} cases[] = {
		{ "COPY a", "COPY requires at least two arguments, but only one was provided. "
		            "Destination could not be determined" },
		{ "ADD [\"a\"]", "ADD requires at least two arguments" },
		{ "COPY", "COPY requires at least two arguments" },
		{ "WORKDIR", "WORKDIR requires exactly one argument" },
		{ "USER", "USER requires exactly one argument" },
		{ "STOPSIGNAL", "STOPSIGNAL requires exactly one argument" },
		{ "MAINTAINER", "MAINTAINER requires exactly one argument" },
		{ "EXPOSE", "EXPOSE requires at least one argument" },
		{ "VOLUME", "VOLUME requires at least one argument" },
		{ "VOLUME []", "VOLUME requires at least one argument" },
		{ "ENV", "ENV requires at least one argument" },
		{ "LABEL", "LABEL requires at least one argument" },
		{ "ARG", "ARG requires at least one argument" },
		{ "ONBUILD", "ONBUILD requires at least one argument" },
		{ "HEALTHCHECK", "HEALTHCHECK requires at least one argument" },
		{ "SHELL", "SHELL requires at least one argument" },
	};
	for (size_t k = 0; k < SW_ARRAY_SIZE(cases); k++) {
		char src[256];
		snprintf(src, sizeof(src), "FROM scratch\n%s\n", cases[k].line);
		char want[256];
		snprintf(want, sizeof(want), "Dockerfile:2:1: %s", cases[k].msg);
		parse_fails(src, want);
	}
	/* RUN, CMD and ENTRYPOINT may be empty: Docker runs `sh -c ""` */
	sw_dockerfile *df = parse_ok("FROM scratch\nCMD\nENTRYPOINT\nRUN\nRUN --network=none\n");
	for (size_t k = 1; k < 5; k++) {
		assert_false(ins_at(df, k)->json_form);
		assert_args(ins_at(df, k)->args, "", NULL);
	}
	sw_df_free(df);
}

static void test_builder__env_label_arg(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("FROM scratch\n"
	                             "ENV A=1 B=\"x y\" C=a\\ b D='$A' E=\n"
	                             "ENV LEGACY  value with   spaces \n"
	                             "ENV Q \"quoted value\"\n"
	                             "LABEL \"com.example.a b\"=\"v 1\" k=v\n"
	                             "LABEL version 1.0\n"
	                             "ARG X Y=\"two words\" Z=\n"
	                             "ENV K=é\xc2\xa0V=2\n");
	assert_args(ins_at(df, 1)->args, "A=1", "B=\"x y\"", "C=a\\ b", "D='$A'", "E=", NULL);
	assert_args(ins_at(df, 2)->args, "LEGACY=value with   spaces", NULL);
	assert_args(ins_at(df, 3)->args, "Q=\"quoted value\"", NULL);
	assert_args(ins_at(df, 4)->args, "\"com.example.a b\"=\"v 1\"", "k=v", NULL);
	assert_args(ins_at(df, 5)->args, "version=1.0", NULL);
	assert_args(ins_at(df, 6)->args, "X", "Y=\"two words\"", "Z=", NULL);
	/* a non-breaking space separates words, as Go's unicode.IsSpace says */
	assert_args(ins_at(df, 7)->args, "K=\xc3\xa9", "V=2", NULL);
	sw_df_free(df);

	parse_fails("FROM scratch\nENV ONLYKEY\n", "Dockerfile:2:5: ENV must have two arguments");
	parse_fails("FROM scratch\nLABEL ONLYKEY\n", "LABEL must have two arguments");
	parse_fails("FROM scratch\nENV A=1 B\n",
	            "Dockerfile:2:9: Syntax error - can't find = in \"B\". Must be of the form: "
	            "name=value");
	parse_fails("FROM scratch\nENV A=1 =2\n", "Dockerfile:2:9: ENV names can not be blank");
	parse_fails("FROM scratch\nLABEL =x\n", "LABEL names can not be blank");
	parse_fails("FROM scratch\nARG ok =x\n", "Dockerfile:2:8: ARG names can not be blank");
}

static void test_builder__onbuild(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("FROM scratch\n"
	                             "ONBUILD RUN --mount=type=cache,target=/c make\n"
	                             "onbuild   COPY . /app\n"
	                             "ONBUILD RUN <<EOF\n"
	                             "echo hi\n"
	                             "EOF\n");
	const sw_df_instruction *i = ins_at(df, 1);
	assert_int_equal(i->kind, SW_DF_ONBUILD);
	assert_args(i->args, "RUN --mount=type=cache,target=/c make", NULL);
	assert_non_null(i->onbuild);
	assert_int_equal(i->onbuild->kind, SW_DF_RUN);
	assert_int_equal(i->onbuild->column, 9);
	assert_int_equal(i->onbuild->n_flags, 1);
	assert_string_equal(i->onbuild->flags[0].value, "type=cache,target=/c");
	assert_args(i->onbuild->args, "make", NULL);
	i = ins_at(df, 2);
	assert_int_equal(i->onbuild->kind, SW_DF_COPY);
	assert_args(i->onbuild->args, ".", "/app", NULL);
	i = ins_at(df, 3);
	assert_args(i->args, "RUN <<EOF\necho hi\nEOF", NULL);
	assert_int_equal(i->n_heredocs, 1);
	assert_int_equal(i->onbuild->n_heredocs, 1);
	assert_string_equal(i->onbuild->heredocs[0].content, "echo hi\n");
	sw_df_free(df);

	parse_fails("FROM scratch\nONBUILD ONBUILD RUN x\n",
	            "Dockerfile:2:9: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
	parse_fails("FROM scratch\nONBUILD FROM alpine\n",
	            "Dockerfile:2:9: FROM isn't allowed as an ONBUILD trigger");
	parse_fails("FROM scratch\nONBUILD MAINTAINER me\n",
	            "MAINTAINER isn't allowed as an ONBUILD trigger");
	/* Docker finds a wrong trigger only in the child build: recorded, not parsed */
	df = parse_ok("FROM scratch\nONBUILD COPPY a b\nONBUILD COPY a\nONBUILD RUN --bad=1 x\n");
	for (size_t k = 1; k < 4; k++) {
		assert_int_equal(ins_at(df, k)->kind, SW_DF_ONBUILD);
		assert_null(ins_at(df, k)->onbuild);
	}
	assert_args(ins_at(df, 1)->args, "COPPY a b", NULL);
	sw_df_free(df);
	/* ... but what the parser itself rejects stays an error */
	parse_fails("FROM scratch\nONBUILD CMD [\"a\", 1]\n",
	            "Dockerfile:2:13: when using JSON array syntax");
}

/* ---------------------------------------------------------------- substitution */

static const char *const env_table[][2] = {
	{ "PWD", "/home" },
	{ "SHELL", "bash" },
	{ "EMPTY", "" },
	{ "KOREAN", "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4" },
	{ "SPACES", "a b  c" },
	{ "FILE", "archive.tar.gz" },
	{ "PATHV", "/usr/local/bin" },
};

static const char *lookup(const char *name, void *payload)
{
	(void)payload;
	for (size_t i = 0; i < SW_ARRAY_SIZE(env_table); i++)
		if (strcmp(env_table[i][0], name) == 0)
			return env_table[i][1];
	return NULL;
}

static void test_builder__expand_table(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out; /* out NULL: an error containing `err` */
		const char *err;
	} cases[] = {
		{ "hello", "hello", NULL },
		{ "he'll'o", "hello", NULL },
		{ "he\"ll\"o", "hello", NULL },
		{ "$PWD", "/home", NULL },
		{ "${PWD}", "/home", NULL },
		{ "'$PWD'", "$PWD", NULL },
		{ "\"$PWD\"", "/home", NULL },
		{ "\\$PWD", "$PWD", NULL },
		{ "\"\\$PWD\"", "$PWD", NULL },
		{ "$PWD$SHELL", "/homebash", NULL },
		{ "${PWD}x${SHELL}", "/homexbash", NULL },
		{ "$UNSET", "", NULL },
		{ "x${UNSET}y", "xy", NULL },
		{ "${UNSET:-def}", "def", NULL },
		{ "${EMPTY:-def}", "def", NULL },
		{ "${EMPTY-def}", "", NULL },
		{ "${UNSET-def}", "def", NULL },
		{ "${PWD:-def}", "/home", NULL },
		{ "${PWD:+alt}", "alt", NULL },
		{ "${EMPTY:+alt}", "", NULL },
		{ "${EMPTY+alt}", "alt", NULL },
		{ "${UNSET+alt}", "", NULL },
		{ "${UNSET:-$PWD}", "/home", NULL },
		{ "${UNSET:-'a b'}", "a b", NULL },
		{ "${UNSET:-${SHELL:-x}}", "bash", NULL },
		{ "$", "$", NULL },
		{ "a$", "a$", NULL },
		{ "$1", "", NULL },
		{ "$$", "", NULL },
		{ "$-x", "x", NULL },
		{ "\\\\", "\\", NULL },
		{ "a\\ b", "a b", NULL },
		{ "'a\\b'", "a\\b", NULL },
		{ "\"a\\b\"", "a\\b", NULL },
		{ "\"a\\\"b\"", "a\"b", NULL },
		{ "\"it's\"", "it's", NULL },
		{ "\\", "", NULL },
		{ "${KOREAN}!", "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4!", NULL },
		{ "${FILE%.gz}", "archive.tar", NULL },
		{ "${FILE%%.*}", "archive", NULL },
		{ "${FILE%.*}", "archive.tar", NULL },
		{ "${FILE#*.}", "tar.gz", NULL },
		{ "${FILE##*.}", "gz", NULL },
		{ "${FILE#nomatch}", "archive.tar.gz", NULL },
		{ "${SHELL#?}", "ash", NULL },
		{ "${UNSET#x}", "", NULL },
		{ "${PATHV/local/opt}", "/usr/opt/bin", NULL },
		{ "${PATHV//\\//:}", ":usr:local:bin", NULL },
		{ "${SPACES// /_}", "a_b__c", NULL },
		{ "${SPACES/ */}", "a", NULL },
		{ "${SHELL/#/x}", "bash", NULL },
		{ "${UNSET:?must be set}", NULL, "UNSET: must be set" },
		{ "${UNSET?}", NULL, "UNSET: is not allowed to be unset" },
		{ "${EMPTY:?}", NULL, "EMPTY: is not allowed to be empty" },
		{ "${EMPTY?x}", "", NULL },
		{ "${PWD:?x}", "/home", NULL },
		{ "${PWD", NULL, "syntax error: missing '}'" },
		{ "${PWD:-x", NULL, "syntax error: missing '}'" },
		{ "${}", NULL, "syntax error: bad substitution" },
		{ "${:x}", NULL, "syntax error: bad substitution" },
		{ "${PWD:=x}", NULL, "unsupported modifier (:=) in substitution" },
		{ "${PWD:#x}", NULL, "unsupported modifier (:#) in substitution" },
		{ "${PWD!}", NULL, "unsupported modifier (!) in substitution" },
		{ "${FILE#\\.gz}", NULL,
		  "invalid pattern (\\.gz) in substitution: invalid escape '\\.'" },
		/* % works on the reversed pattern, and says so, as BuildKit does */
		{ "${FILE%\\.gz}", NULL, "invalid pattern (zg\\.) in substitution" },
		{ "${PWD/x", NULL, "syntax error: missing '/' in ${}" },
		{ "'open", NULL,
		  "unexpected end of statement while looking for matching single-quote" },
		{ "\"open", NULL,
		  "unexpected end of statement while looking for matching double-quote" },
	};
	sw_dockerfile *df = parse_ok("FROM scratch\nENV X=1\n");
	const sw_df_instruction *ins = ins_at(df, 1);
	for (size_t k = 0; k < SW_ARRAY_SIZE(cases); k++) {
		char *out = NULL;
		sw_error *err = NULL;
		int rc = sw_df_expand(&out, NULL, df, ins, cases[k].in, lookup, NULL, &err);
		if (cases[k].out) {
			if (rc < 0)
				fail_msg("\"%s\": %s", cases[k].in, sw_error_msg(err));
			if (strcmp(out, cases[k].out) != 0)
				fail_msg("\"%s\" gave \"%s\", expected \"%s\"", cases[k].in, out,
				         cases[k].out);
		} else {
			if (rc >= 0)
				fail_msg("\"%s\" gave \"%s\", expected an error", cases[k].in, out);
			assert_null(out);
			if (!strstr(sw_error_msg(err), cases[k].err) ||
			    !strstr(sw_error_msg(err), "Dockerfile:2:1: failed to process"))
				fail_msg("\"%s\": error \"%s\" lacks \"%s\"", cases[k].in,
				         sw_error_msg(err), cases[k].err);
			sw_error_free(err);
		}
		free(out);
	}
	sw_df_free(df);
}

static void test_builder__expand_words_and_escape(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		const char *words[5];
	} cases[] = {
		{ "a b  c", { "a", "b", "c" } },
		{ "'a b' c", { "a b", "c" } },
		{ "$SPACES", { "a", "b", "c" } },
		{ "\"$SPACES\"", { "a b  c" } },
		{ "x$SPACES", { "xa", "b", "c" } },
		{ "a\\ b", { "a b" } },
		{ "'' a \"\"", { "a" } },
		{ "80/tcp ${UNSET:-90/udp}", { "80/tcp", "90/udp" } },
		{ "80${UNSET:-/tcp}", { "80/tcp" } },
		{ "", { NULL } },
	};
	sw_dockerfile *df = parse_ok("FROM scratch\nEXPOSE 1\n");
	for (size_t k = 0; k < SW_ARRAY_SIZE(cases); k++) {
		char **words = NULL;
		char *word = NULL;
		sw_error *err = NULL;
		if (sw_df_expand(&word, &words, df, ins_at(df, 1), cases[k].in, lookup, NULL,
		                 &err) < 0)
			fail_msg("%s", sw_error_msg(err));
		size_t n = 0;
		while (cases[k].words[n])
			n++;
		if (sw_strv_len(words) != n)
			fail_msg("\"%s\": %zu words, expected %zu", cases[k].in, sw_strv_len(words),
			         n);
		for (size_t i = 0; i < n; i++)
			assert_string_equal(words[i], cases[k].words[i]);
		sw_strv_free(words);
		free(word);
	}
	sw_df_free(df);

	/* with the backtick escape, backslash is an ordinary character */
	df = parse_ok("# escape=`\nFROM scratch\nWORKDIR x\n");
	char *out = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_df_expand(&out, NULL, df, ins_at(df, 1), "C:\\dir `$PWD \"`\"\"",
	                              lookup, NULL, &err),
	                 0);
	assert_string_equal(out, "C:\\dir $PWD \"");
	free(out);
	sw_df_free(df);
}

static void test_builder__expand_heredoc_and_kinds(void **state)
{
	(void)state;
	sw_dockerfile *df = parse_ok("FROM scratch\n"
	                             "COPY <<EOF <<'RAW' /\n"
	                             "home=$PWD \"${SHELL}\" 'x' \\$PWD\n"
	                             "EOF\n"
	                             "home=$PWD\n"
	                             "RAW\n");
	const sw_df_instruction *i = ins_at(df, 1);
	char *out = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_df_expand_heredoc(&out, df, i, &i->heredocs[0], lookup, NULL, &err), 0);
	assert_string_equal(out, "home=/home \"bash\" 'x' $PWD\n");
	free(out);
	assert_int_equal(sw_df_expand_heredoc(&out, df, i, &i->heredocs[1], lookup, NULL, &err), 0);
	assert_string_equal(out, "home=$PWD\n");
	free(out);
	sw_df_free(df);

	static const sw_df_kind yes[] = { SW_DF_FROM,   SW_DF_ARG,     SW_DF_ENV,       SW_DF_LABEL,
		                          SW_DF_ADD,    SW_DF_COPY,    SW_DF_EXPOSE,    SW_DF_USER,
		                          SW_DF_VOLUME, SW_DF_WORKDIR, SW_DF_STOPSIGNAL };
	static const sw_df_kind no[] = { SW_DF_RUN,    SW_DF_CMD,         SW_DF_ENTRYPOINT,
		                         SW_DF_SHELL,  SW_DF_HEALTHCHECK, SW_DF_MAINTAINER,
		                         SW_DF_ONBUILD };
	for (size_t k = 0; k < SW_ARRAY_SIZE(yes); k++)
		assert_true(sw_df_kind_expands(yes[k]));
	for (size_t k = 0; k < SW_ARRAY_SIZE(no); k++)
		assert_false(sw_df_kind_expands(no[k]));
}

/* ---------------------------------------------------------------- .dockerignore */

static void test_builder__dockerignore_table(void **state)
{
	(void)state;
	static const struct {
		const char *patterns; /* lines */
		const char *path;
		bool excluded;
	} cases[] = {
		{ "foo", "foo", true },
		{ "foo", "foo/bar", true },
		{ "foo", "a/foo", false },
		{ "foo", "foobar", false },
		{ "/foo", "foo", true },
		{ "foo/", "foo/x", true },
		{ "*.md", "README.md", true },
		{ "*.md", "docs/a.md", false },
		{ "**/*.md", "docs/a.md", true },
		{ "**/*.md", "a.md", true },
		{ "**/*.md", "a/b/c/d.md", true },
		{ "docs/**", "docs/a/b", true },
		{ "docs/**", "docs", false },
		{ "**", "anything/at/all", true },
		{ "a/**/b", "a/b", true },
		{ "a/**/b", "a/x/y/b", true },
		{ "a/**/b", "a/x/y/bc", false },
		{ "?.txt", "a.txt", true },
		{ "?.txt", "ab.txt", false },
		{ "?.txt", "\xc3\xa9.txt", true },
		{ "[a-c].txt", "b.txt", true },
		{ "[a-c].txt", "d.txt", false },
		{ "[^a-c].txt", "d.txt", true },
		{ "[\\]x].txt", "].txt", true },
		{ "*\n!keep", "keep", false },
		{ "*\n!keep", "other", true },
		{ "dir\n!dir/keep", "dir/keep", false },
		{ "dir\n!dir/keep", "dir/other", true },
		{ "dir\n!dir/keep", "dir/keep/sub", false },
		{ "!dir/keep\ndir", "dir/keep", true },
		{ "# comment", "# comment", false },
		{ " #notcomment", "#notcomment", true },
		{ "  spaced  \t", "spaced", true },
		{ "a/../b", "b", true },
		{ "./c", "c", true },
		{ "*/temp*", "somedir/temporary.txt", true },
		{ "*/temp*", "temporary.txt", false },
		{ "*/*/temp*", "somedir/subdir/temporary.txt", true },
		{ "temp?", "tempa", true },
		{ "*.md\n!README*.md\nREADME-secret.md", "README-secret.md", true },
		{ "*.md\n!README*.md\nREADME-secret.md", "README.md", false },
		{ "*.md\n!README*.md\nREADME-secret.md", "other.md", true },
		{ "\\*", "*", true },
		{ "\\*", "a", false },
		{ "**/node_modules", "x/node_modules/y", true },
		{ "**/.git", ".git", true },
		{ "foo*", "foobar/baz", true },
		{ "**.go", "dir/x.go", true },
		{ "**.go", "xgo", false },
		{ "*", ".", false },
		{ "a.b", "axb", false },
		{ "a+(b)", "a+(b)", true },
		{ "\xef\xbb\xbf"
		  "bom\r\nx",
		  "bom", true },
		{ "! spaced-bang", "spaced-bang", false },
		{ "x\n! x", "x", false },
	};
	for (size_t k = 0; k < SW_ARRAY_SIZE(cases); k++) {
		sw_dockerignore *di = NULL;
		sw_error *err = NULL;
		if (sw_dockerignore_parse(&di, cases[k].patterns, strlen(cases[k].patterns),
		                          ".dockerignore", &err) < 0)
			fail_msg("%s", sw_error_msg(err));
		if (sw_dockerignore_match(di, cases[k].path) != cases[k].excluded)
			fail_msg("patterns \"%s\" path \"%s\": expected %s", cases[k].patterns,
			         cases[k].path, cases[k].excluded ? "excluded" : "included");
		sw_dockerignore_free(di);
	}
}

static void test_builder__dockerignore_rules(void **state)
{
	(void)state;
	sw_dockerignore *di = NULL;
	sw_error *err = NULL;
	const char *src = "dir\n!dir/keep\nother\n";
	assert_int_equal(sw_dockerignore_parse(&di, src, strlen(src), "x", &err), 0);
	assert_true(sw_dockerignore_may_include_under(di, "dir"));
	assert_false(sw_dockerignore_may_include_under(di, "other"));
	assert_false(sw_dockerignore_may_include_under(di, "dir/keep2"));
	assert_true(sw_dockerignore_match(di, "other/x"));
	assert_false(sw_dockerignore_match(di, "dirx"));
	sw_dockerignore_free(di);

	src = "dir\n";
	assert_int_equal(sw_dockerignore_parse(&di, src, strlen(src), "x", &err), 0);
	assert_false(sw_dockerignore_may_include_under(di, "dir"));
	sw_dockerignore_free(di);

	src = "dir\n!**/keep\n";
	assert_int_equal(sw_dockerignore_parse(&di, src, strlen(src), "x", &err), 0);
	assert_true(sw_dockerignore_may_include_under(di, "dir"));
	assert_false(sw_dockerignore_match(di, "dir/a/keep"));
	sw_dockerignore_free(di);

	assert_int_equal(sw_dockerignore_parse(&di, "", 0, "x", &err), 0);
	assert_false(sw_dockerignore_match(di, "anything"));
	sw_dockerignore_free(di);

	assert_int_equal(sw_dockerignore_parse(&di, "a\n!\n", 4, "ign", &err), SW_ERR_INVALID);
	assert_null(di);
	assert_string_equal(sw_error_msg(err), "ign:2: illegal exclusion pattern: \"!\"");
	sw_error_clear(&err);
	assert_int_equal(sw_dockerignore_parse(&di, "ok\n[a-\n", 7, "ign", &err), SW_ERR_INVALID);
	assert_string_equal(sw_error_msg(err), "ign:2: syntax error in pattern \"[a-\"");
	sw_error_clear(&err);
	assert_int_equal(sw_dockerignore_parse(&di, "[]\n", 3, "ign", &err), SW_ERR_INVALID);
	sw_error_clear(&err);
	assert_int_equal(sw_dockerignore_parse(&di, "a\\", 2, "ign", &err), SW_ERR_INVALID);
	sw_error_clear(&err);
}

static void write_file(const char *dir, const char *name, const char *content)
{
	char *p = sw_path_join(dir, name);
	sw_error *err = NULL;
	if (sw_fs_write_atomic(p, content, strlen(content), 0644, &err) < 0)
		fail_msg("%s", sw_error_msg(err));
	free(p);
}

static void test_builder__dockerignore_load(void **state)
{
	(void)state;
	char *tmp = NULL;
	sw_error *err = NULL;
	assert_int_equal(sw_fs_mkdtemp(&tmp, sw_fs_tmpdir(), "sw-dockerignore-", &err), 0);
	sw_dockerignore *di = NULL;

	/* nothing: an empty set */
	assert_int_equal(sw_dockerignore_load(&di, tmp, NULL, &err), 0);
	assert_false(sw_dockerignore_match(di, "a"));
	sw_dockerignore_free(di);

	write_file(tmp, ".dockerignore", "from-root\n");
	assert_int_equal(sw_dockerignore_load(&di, tmp, NULL, &err), 0);
	assert_true(sw_dockerignore_match(di, "from-root"));
	sw_dockerignore_free(di);

	/* <Dockerfile>.dockerignore beside the Dockerfile wins */
	write_file(tmp, "Dockerfile.dockerignore", "from-beside\n");
	assert_int_equal(sw_dockerignore_load(&di, tmp, NULL, &err), 0);
	assert_true(sw_dockerignore_match(di, "from-beside"));
	assert_false(sw_dockerignore_match(di, "from-root"));
	sw_dockerignore_free(di);

	char *sub = sw_path_join(tmp, "build");
	assert_int_equal(sw_fs_mkdir_p(sub, 0755, &err), 0);
	write_file(sub, "app.Dockerfile.dockerignore", "from-app\n");
	char *df = sw_path_join(sub, "app.Dockerfile");
	assert_int_equal(sw_dockerignore_load(&di, tmp, df, &err), 0);
	assert_true(sw_dockerignore_match(di, "from-app"));
	sw_dockerignore_free(di);
	free(df);
	df = sw_path_join(sub, "other.Dockerfile");
	assert_int_equal(sw_dockerignore_load(&di, tmp, df, &err), 0);
	assert_true(sw_dockerignore_match(di, "from-root"));
	sw_dockerignore_free(di);
	free(df);

	write_file(tmp, ".dockerignore", "!\n");
	df = sw_path_join(sub, "other.Dockerfile");
	assert_int_equal(sw_dockerignore_load(&di, tmp, df, &err), SW_ERR_INVALID);
	assert_non_null(strstr(sw_error_msg(err), "/.dockerignore:1: illegal exclusion pattern"));
	sw_error_clear(&err);
	free(df);
	free(sub);

	assert_int_equal(sw_fs_rm_rf(tmp, &err), 0);
	free(tmp);
}

/* ---------------------------------------------------------------- the broken suite */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_builder__broken_suite(void **state)
{
	(void)state;
	const char *src = getenv("SW_TEST_SRCDIR");
	if (!src || !*src)
		fail_msg("SW_TEST_SRCDIR is not set (run through ctest)");
	char *dir = sw_path_join(src, "tests/build/broken");
	DIR *d = opendir(dir);
	if (!d)
		fail_msg("cannot open %s", dir);
	char **names = NULL;
	for (struct dirent *de; (de = readdir(d));) {
		size_t l = strlen(de->d_name);
		if (l > 11 && strcmp(de->d_name + l - 11, ".Dockerfile") == 0)
			sw_strv_push(&names, de->d_name);
	}
	closedir(d);
	size_t n = sw_strv_len(names);
	if (n)
		qsort(names, n, sizeof(char *), cmp_str);
	int ran = 0;
	for (size_t k = 0; k < n; k++) {
		char *path = sw_path_join(dir, names[k]);
		char *exp_path = sw_xasprintf("%.*s.expected", (int)(strlen(path) - 11), path);
		char *buf = NULL, *expected = NULL;
		size_t len = 0, elen = 0;
		sw_error *err = NULL;
		if (sw_fs_read_file(&buf, &len, path, 1 << 20, &err) < 0 ||
		    sw_fs_read_file(&expected, &elen, exp_path, 1 << 16, &err) < 0)
			fail_msg("%s", sw_error_msg(err));
		while (elen > 0 && (expected[elen - 1] == '\n' || expected[elen - 1] == '\r'))
			expected[--elen] = '\0';
		if (!elen)
			fail_msg("%s is empty", exp_path);
		sw_dockerfile *df = NULL;
		if (sw_df_parse(&df, buf, len, names[k], &err) >= 0)
			fail_msg("%s parsed without error", names[k]);
		if (!strstr(sw_error_msg(err), expected))
			fail_msg("%s: error\n  %s\nlacks\n  %s", names[k], sw_error_msg(err),
			         expected);
		/* the message names the file with line and column */
		char *prefix = sw_xasprintf("%s:", names[k]);
		assert_non_null(strstr(expected, prefix));
		free(prefix);
		sw_error_free(err);
		free(buf);
		free(expected);
		free(exp_path);
		free(path);
		ran++;
	}
	sw_strv_free(names);
	free(dir);
	if (ran < 25)
		fail_msg("only %d broken Dockerfiles ran, expected at least 25", ran);
	print_message("broken suite: %d Dockerfiles\n", ran);
}

int test_builder_dockerfile_run(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_builder__basic_forms),
		cmocka_unit_test(test_builder__directives),
		cmocka_unit_test(test_builder__comments_continuations),
		cmocka_unit_test(test_builder__heredocs),
		cmocka_unit_test(test_builder__json_forms),
		cmocka_unit_test(test_builder__flags),
		cmocka_unit_test(test_builder__from_and_structure),
		cmocka_unit_test(test_builder__argument_counts),
		cmocka_unit_test(test_builder__env_label_arg),
		cmocka_unit_test(test_builder__onbuild),
		cmocka_unit_test(test_builder__expand_table),
		cmocka_unit_test(test_builder__expand_words_and_escape),
		cmocka_unit_test(test_builder__expand_heredoc_and_kinds),
		cmocka_unit_test(test_builder__dockerignore_table),
		cmocka_unit_test(test_builder__dockerignore_rules),
		cmocka_unit_test(test_builder__dockerignore_load),
		cmocka_unit_test(test_builder__broken_suite),
	};
	return cmocka_run_group_tests_name("builder_dockerfile", tests, NULL, NULL);
}
