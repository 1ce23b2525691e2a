/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway lint [FILE]`: check a pipeline file without running anything. Every problem the
 * parser finds is printed as "FILE:LINE:COLUMN: message" on stderr (exit 2); a good file prints
 * "FILE: ok" on stdout (exit 0); a file that cannot be read is exit 1. FILE "-" is stdin.
 */
#include "agent/agent.h"
#include "pipeline/pipeline.h"

#include <getopt.h>
#include <string.h>

static const char lint_usage[] =
        "usage: slipway lint [FILE]\n"
        "\n"
        "Check a pipeline file (default: .slipway.yml) without running anything: YAML\n"
        "syntax, unknown keys (with the nearest known key as a hint), wrong types, bad\n"
        "durations, names, needs that do not point to a job of an earlier stage, services\n"
        "without an image, promotions without a registry repository or tags, and more\n"
        "(docs/pipeline.md is the reference). Every problem is printed on stderr as\n"
        "FILE:LINE:COLUMN: message. FILE '-' reads standard input.\n"
        "\n"
        "options:\n"
        "  -h, --help  show this help\n"
        "\n"
        "exit status: 0 the file is good (\"FILE: ok\" on stdout), 1 it cannot be read,\n"
        "2 it has problems (or a usage error).\n";

#define LINT_MAX_BYTES ((size_t)4 << 20)

static int usage_error(const char *fmt, ...) SW_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "slipway: error: lint: %s\nRun 'slipway lint --help' for usage.\n", m);
	return 2;
}

static int read_stdin(char **out, size_t *out_len, sw_error **err)
{
	sw_buf b = SW_BUF_INIT(LINT_MAX_BYTES);
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
		if (sw_buf_append(&b, chunk, n, err) < 0) {
			sw_buf_free(&b);
			return sw_error_wrap(err, "read standard input");
		}
	}
	if (ferror(stdin)) {
		sw_buf_free(&b);
		return sw_error_set(err, SW_ERR_GENERIC, "read standard input: I/O error");
	}
	*out = sw_buf_steal(&b, out_len);
	return 0;
}

int sw_cmd_lint(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(lint_usage, stdout);
			return 0;
		default: {
			const char *arg = optind > 0 ? argv[optind - 1] : "?";
			return usage_error("unknown option '%s'", arg);
		}
		}
	}
	if (argc - optind > 1)
		return usage_error("too many arguments (one FILE at most)");
	const char *path = optind < argc ? argv[optind] : ".slipway.yml";

	cleanup_free char *buf = NULL;
	size_t len = 0;
	cleanup_error sw_error *err = NULL;
	int r = !strcmp(path, "-") ? read_stdin(&buf, &len, &err)
	                           : sw_fs_read_file(&buf, &len, path, LINT_MAX_BYTES, &err);
	if (r < 0)
		return sw_cli_fail(err);
	const char *name = !strcmp(path, "-") ? "<stdin>" : path;
	cleanup_strv char **problems = NULL;
	if (sw_pipeline_lint(&problems, buf, len, name, &err) < 0)
		return sw_cli_fail(err);
	for (size_t i = 0; problems[i]; i++)
		fprintf(stderr, "%s\n", problems[i]);
	if (problems[0])
		return 2;
	printf("%s: ok\n", name);
	return 0;
}
