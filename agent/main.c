/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `slipway` entry point: global options, then dispatch to a command family. Nothing else
 * lives here (like crun's src/crun.c over src/libcrun/).
 */
#include "agent/agent.h"
#include "agent/agent_internal.h"
#include "version.h"

#include <getopt.h>
#include <string.h>

sw_cli_globals sw_cli;

#if defined(__SANITIZE_ADDRESS__) || defined(__has_feature)
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
/* LeakSanitizer (sanitizer builds only): libgit2 1.5 (Debian 12) leaks pcre2 match data in its
 * config regexp search (remote lookups during clones); not ours to free. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libpcre2-8.so\n";
}
#endif
#endif

static const char usage[] =
        "usage: slipway [--log-level LEVEL] [--log-format text|json] [--state-dir DIR] COMMAND ...\n"
        "\n"
        "A daemonless CI/CD agent: builds each commit's image, tests it in containers, promotes it.\n"
        "\n"
        "commands:\n"
        "  run       run the pipeline of a commit: build, test in containers, promote\n"
        "  lint      check a pipeline file (.slipway.yml)\n"
        "  build     build an image from a Dockerfile, with the layer cache\n"
        "  image     copy, import, inspect and list OCI images\n"
        "  cache     list and prune the build cache\n"
        "  agent     the daemon: watch repositories, serve GitLab, run their pipelines\n"
        "\n"
        "options:\n"
        "  --log-level LEVEL    error, warn, info (default), debug or trace\n"
        "  --log-format FORMAT  text (default) or json (one object per line on stderr)\n"
        "  --state-dir DIR      where slipway keeps its state (default: $SLIPWAY_STATE_DIR,\n"
        "                       /var/lib/slipway as root, else ~/.local/state/slipway)\n"
        "  -h, --help           show this help\n"
        "  --version            show the version\n"
        "\n"
        "Run 'slipway COMMAND --help' for a command's own help.\n";

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *env_level = getenv("SLIPWAY_LOG_LEVEL");
	if (env_level && sw_log_level_parse(env_level) >= 0)
		sw_log_set_level((sw_log_level)sw_log_level_parse(env_level));
	int c;
	/* "+" stops at the first non-option: the command and its own options follow. */
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': {
			int lv = sw_log_level_parse(optarg);
			if (lv < 0) {
				fprintf(stderr, "slipway: error: unknown log level '%s'\n", optarg);
				return 2;
			}
			sw_log_set_level((sw_log_level)lv);
			break;
		}
		case 'f':
			if (strcmp(optarg, "json") == 0) {
				sw_log_set_sink(sw_log_sink_json, NULL);
			} else if (strcmp(optarg, "text") == 0) {
				sw_log_set_sink(NULL, NULL);
			} else {
				fprintf(stderr, "slipway: error: unknown log format '%s'\n",
				        optarg);
				return 2;
			}
			break;
		case 's':
			sw_cli.state_dir = optarg;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		case 'V':
			printf("slipway %s\n", SW_VERSION);
			return 0;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (sw_cli.state_dir)
		setenv("SLIPWAY_STATE_DIR", sw_cli.state_dir, 1);
	if (optind >= argc) {
		fputs(usage, stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	if (strcmp(cmd, "image") == 0)
		return sw_cmd_image(argc - optind, argv + optind);
	if (strcmp(cmd, "cache") == 0)
		return sw_cmd_cache(argc - optind, argv + optind);
	if (strcmp(cmd, "build") == 0)
		return sw_cmd_build(argc - optind, argv + optind);
	if (strcmp(cmd, "run") == 0)
		return sw_cmd_run(argc - optind, argv + optind);
	if (strcmp(cmd, "lint") == 0)
		return sw_cmd_lint(argc - optind, argv + optind);
	if (strcmp(cmd, "agent") == 0)
		return sw_cmd_agent(argc - optind, argv + optind);
	if (strcmp(cmd, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(cmd, "version") == 0) {
		printf("slipway %s\n", SW_VERSION);
		return 0;
	}
	fprintf(stderr, "slipway: error: unknown command '%s'\n\n%s", cmd, usage);
	return 2;
}
