/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway run [options]`: the command line of the pipeline runner. Parses the options into
 * sw_run_opts, installs the SIGINT/SIGTERM handlers (the first signal cancels the running jobs
 * with a grace period, the second without), and hands over to sw_run_pipeline (agent/run.c),
 * whose result is the exit code: 0 passed, 1 a job failed, 2 a bad pipeline file or command
 * line, 3 an infrastructure error, 130/143 cancelled.
 */
#include "agent/agent_internal.h"
#include "cache/cache.h"
#include "executor/executor.h"
#include "reporters/reporters.h"

#include <getopt.h>
#include <signal.h>
#include <string.h>

static const char run_usage[] =
        "usage: slipway run [--repo PATH|URL] [--rev REV] [--file FILE] [--no-promote]\n"
        "                   [--events FILE] [--junit FILE] [--output DIR]\n"
        "                   [--executor oci|docker] [--runtime runc|crun|PATH]\n"
        "                   [--docker-host URL] [--secret NAME[=VALUE]]...\n"
        "                   [--secret-file NAME=PATH]... [--var NAME=VALUE]...\n"
        "                   [--memory SIZE] [--pids N]\n"
        "                   [--cpus N] [--jobs N] [--progress auto|tty|plain|quiet]\n"
        "\n"
        "Run the pipeline of a commit: check it out, build its image, run the stages of\n"
        ".slipway.yml in containers (the jobs of a stage in parallel), then promote the very\n"
        "image that was tested. Reports go to the output folder (default\n"
        "STATE/runs/<pipeline id>/: logs/, artifacts/, junit.xml, events.jsonl), printed at\n"
        "the end on stdout.\n"
        "\n"
        "options:\n"
        "  --repo PATH|URL          the repository (default: .)\n"
        "  --rev REV                branch, tag or commit (default: HEAD)\n"
        "  --file FILE              the pipeline file in the repository (default .slipway.yml)\n"
        "  --no-promote             run everything but the promotion\n"
        "  --events FILE            also write the JSON-lines events to FILE\n"
        "  --junit FILE             also write the JUnit XML report to FILE\n"
        "  --output DIR             the output folder\n"
        "  --executor E             oci (default: runc/crun over overlayfs) or docker\n"
        "  --runtime R              runc (default), crun or a path (oci executor)\n"
        "  --docker-host URL        unix:///path of the Docker socket (docker executor)\n"
        "  --var NAME=VALUE         a variable for the pipeline file and every job (the file's\n"
        "                           env may override it)\n"
        "  --secret NAME=VALUE      the value of a job secret\n"
        "  --secret NAME            a job secret from the environment variable NAME\n"
        "  --secret-file NAME=PATH  a job secret read from a file\n"
        "  --memory SIZE            memory limit of each container (e.g. 512MiB)\n"
        "  --pids N                 process limit of each container\n"
        "  --cpus N                 CPU limit of each container (e.g. 1.5)\n"
        "  --jobs N                 jobs running at once (default 4)\n"
        "  --progress MODE          auto (default), tty, plain or quiet\n"
        "  -h, --help               show this help\n"
        "\n"
        "Secrets not given on the command line come from SLIPWAY_SECRET_<NAME>.\n"
        "\n"
        "exit status: 0 passed, 1 a job failed or timed out, 2 the pipeline file or the\n"
        "command line is wrong, 3 infrastructure error, 130 SIGINT, 143 SIGTERM.\n";

static volatile sig_atomic_t run_cancel;
static volatile sig_atomic_t run_cancel_signal;

static void on_signal(int sig)
{
	if (!run_cancel) {
		run_cancel_signal = sig;
		run_cancel = 1;
	} else {
		run_cancel = 2; /* a second signal: no grace */
	}
}

static int usage_error(const char *fmt, ...) SW_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "slipway: error: run: %s\nRun 'slipway run --help' for usage.\n", m);
	return SW_RUN_EXIT_PIPELINE;
}

static bool valid_secret_name(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
		      (i > 0 && c >= '0' && c <= '9')))
			return false;
	}
	return true;
}

int sw_cmd_run(int argc, char **argv)
{
	enum {
		O_REPO = 256,
		O_REV,
		O_FILE,
		O_NO_PROMOTE,
		O_EVENTS,
		O_JUNIT,
		O_OUTPUT,
		O_EXECUTOR,
		O_RUNTIME,
		O_DOCKER_HOST,
		O_SECRET,
		O_VAR,
		O_SECRET_FILE,
		O_MEMORY,
		O_PIDS,
		O_CPUS,
		O_JOBS,
		O_PROGRESS,
	};
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, O_REPO },
		{ "rev", required_argument, NULL, O_REV },
		{ "file", required_argument, NULL, O_FILE },
		{ "no-promote", no_argument, NULL, O_NO_PROMOTE },
		{ "events", required_argument, NULL, O_EVENTS },
		{ "junit", required_argument, NULL, O_JUNIT },
		{ "output", required_argument, NULL, O_OUTPUT },
		{ "executor", required_argument, NULL, O_EXECUTOR },
		{ "runtime", required_argument, NULL, O_RUNTIME },
		{ "docker-host", required_argument, NULL, O_DOCKER_HOST },
		{ "secret", required_argument, NULL, O_SECRET },
		{ "var", required_argument, NULL, O_VAR },
		{ "secret-file", required_argument, NULL, O_SECRET_FILE },
		{ "memory", required_argument, NULL, O_MEMORY },
		{ "pids", required_argument, NULL, O_PIDS },
		{ "cpus", required_argument, NULL, O_CPUS },
		{ "jobs", required_argument, NULL, O_JOBS },
		{ "progress", required_argument, NULL, O_PROGRESS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	sw_run_opts o;
	memset(&o, 0, sizeof(o));
	o.backend = SW_EXEC_BACKEND_OCI;
	o.progress = SW_CONSOLE_AUTO;
	o.max_jobs = 4;
	cleanup_strv char **secrets = NULL, **secret_files = NULL, **vars = NULL;
	int c;
	optind = 1;
	opterr = 0; /* our own message below */
	while ((c = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
		switch (c) {
		case O_REPO:
			o.repo = optarg;
			break;
		case O_REV:
			o.rev = optarg;
			break;
		case O_FILE:
			o.file = optarg;
			break;
		case O_NO_PROMOTE:
			o.no_promote = true;
			break;
		case O_EVENTS:
			o.events_path = optarg;
			break;
		case O_JUNIT:
			o.junit_path = optarg;
			break;
		case O_OUTPUT:
			o.output_dir = optarg;
			break;
		case O_EXECUTOR:
			if (strcmp(optarg, "oci") == 0)
				o.backend = SW_EXEC_BACKEND_OCI;
			else if (strcmp(optarg, "docker") == 0)
				o.backend = SW_EXEC_BACKEND_DOCKER;
			else
				return usage_error("--executor must be oci or docker, not '%s'",
				                   optarg);
			break;
		case O_RUNTIME:
			o.runtime = optarg;
			break;
		case O_DOCKER_HOST:
			o.docker_host = optarg;
			break;
		case O_SECRET: {
			const char *eq = strchr(optarg, '=');
			size_t n = eq ? (size_t)(eq - optarg) : strlen(optarg);
			if (!valid_secret_name(optarg, n))
				return usage_error("--secret: '%.*s' is not a variable name",
				                   (int)n, optarg);
			sw_strv_push(&secrets, optarg);
			break;
		}
		case O_VAR: {
			const char *eq = strchr(optarg, '=');
			if (!eq || !valid_secret_name(optarg, (size_t)(eq - optarg)))
				return usage_error("--var: expected NAME=VALUE, got '%s'", optarg);
			sw_strv_push(&vars, optarg);
			break;
		}
		case O_SECRET_FILE: {
			const char *eq = strchr(optarg, '=');
			if (!eq || !eq[1] || !valid_secret_name(optarg, (size_t)(eq - optarg)))
				return usage_error("--secret-file: expected NAME=PATH");
			if (access(eq + 1, R_OK) < 0)
				return usage_error("--secret-file %.*s: cannot read '%s'",
				                   (int)(eq - optarg), optarg, eq + 1);
			sw_strv_push(&secret_files, optarg);
			break;
		}
		case O_MEMORY: {
			sw_error *e = NULL;
			if (sw_cache_size_parse(&o.memory_limit, optarg, &e) < 0) {
				int rc = usage_error("--memory '%s': %s", optarg, sw_error_msg(e));
				sw_error_free(e);
				return rc;
			}
			break;
		}
		case O_PIDS: {
			char *end = NULL;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (!*optarg || *end || v == 0)
				return usage_error("--pids must be a positive number, not '%s'",
				                   optarg);
			o.pids_limit = v;
			break;
		}
		case O_CPUS: {
			char *end = NULL;
			double v = strtod(optarg, &end);
			if (!*optarg || *end || !(v > 0) || v > 4096)
				return usage_error("--cpus must be a positive number, not '%s'",
				                   optarg);
			o.cpu_millis = (uint32_t)(v * 1000 + 0.5);
			break;
		}
		case O_JOBS: {
			char *end = NULL;
			long v = strtol(optarg, &end, 10);
			if (!*optarg || *end || v < 1 || v > 256)
				return usage_error(
				        "--jobs must be a number from 1 to 256, not '%s'", optarg);
			o.max_jobs = (int)v;
			break;
		}
		case O_PROGRESS:
			if (strcmp(optarg, "auto") == 0)
				o.progress = SW_CONSOLE_AUTO;
			else if (strcmp(optarg, "tty") == 0)
				o.progress = SW_CONSOLE_TTY;
			else if (strcmp(optarg, "plain") == 0)
				o.progress = SW_CONSOLE_PLAIN;
			else if (strcmp(optarg, "quiet") == 0)
				o.progress = SW_CONSOLE_QUIET;
			else
				return usage_error(
				        "--progress must be auto, tty, plain or quiet, not '%s'",
				        optarg);
			break;
		case 'h':
			fputs(run_usage, stdout);
			return 0;
		default:
			if (c == ':')
				return usage_error("option '%s' needs a value", argv[optind - 1]);
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (o.backend != SW_EXEC_BACKEND_DOCKER && o.docker_host)
		return usage_error("--docker-host needs --executor docker");
	o.secret_args = secrets;
	o.secret_files = secret_files;
	o.vars = vars;
	o.cancel = &run_cancel;
	o.cancel_signal = &run_cancel_signal;

	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	int rc = sw_run_pipeline(&o);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}
