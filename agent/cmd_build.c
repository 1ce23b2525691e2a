/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway build [options] CONTEXT`: parse the command line into sw_build_opts, show progress
 * (live on a terminal, plain lines elsewhere) on stderr, stop cleanly on SIGINT/SIGTERM, and
 * print the image's manifest digest on stdout.
 */
#include "agent/agent.h"
#include "builder/builder.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static const char build_usage[] =
        "usage: slipway build [-f FILE] [-t NAME]... [--build-arg K=V]... [--target STAGE]\n"
        "                     [--no-cache] [--cache-from REF]... [--cache-to REF]\n"
        "                     [--secret id=ID,src=PATH]... [--network none|host|default]\n"
        "                     [--platform OS/ARCH[/VARIANT]] [--output oci:DIR[:TAG]]\n"
        "                     [--push REF]... [--runtime runc|crun|PATH]\n"
        "                     [--compression gzip|zstd] [--quiet] [--progress auto|tty|plain]\n"
        "                     CONTEXT\n"
        "\n"
        "Build an image from a Dockerfile with no daemon. Every step's cache key is computed\n"
        "first (from the base image, the instruction, the build args and env it uses and the\n"
        "content of the files it copies); cached layers are reused, the other RUN steps run in\n"
        "containers (runc or crun) over overlayfs. The image goes to the local store under its\n"
        "-t names; its manifest digest (sha256:...) is printed on stdout.\n"
        "\n"
        "options:\n"
        "  -f, --file FILE          the Dockerfile (default: CONTEXT/Dockerfile)\n"
        "  -t, --tag NAME           store the image as NAME[:TAG] (TAG default 'latest')\n"
        "  --build-arg K=V          set a build argument (K alone: from the environment)\n"
        "  --target STAGE           build this stage (default: the last one)\n"
        "  --no-cache               run every step, ignoring the build cache\n"
        "  --cache-from REF         also look for cached layers in this registry repository\n"
        "  --cache-to REF           push every step's layer to this registry repository\n"
        "  --secret id=ID,src=PATH  a file RUN --mount=type=secret,id=ID can read; it is in no\n"
        "                           layer, history entry or cache key\n"
        "  --network MODE           RUN steps' network: none (default, loopback only) or host;\n"
        "                           default means none\n"
        "  --platform P             the target platform (default: this machine's)\n"
        "  --output oci:DIR[:TAG]   also write the image to an OCI layout folder\n"
        "  --push REF               push the image to a registry (docker:// optional)\n"
        "  --runtime R              the OCI runtime: runc (default), crun or a path\n"
        "  --compression C          gzip (default) or zstd for new layers\n"
        "  -q, --quiet              no progress, only the digest\n"
        "  --progress MODE          auto (default: tty on a terminal), tty or plain\n"
        "  -h, --help               show this help\n"
        "\n"
        "environment: SOURCE_DATE_EPOCH (reproducible images: mtimes clamped, fixed creation\n"
        "time), SLIPWAY_CACHE_MAX_BYTES (prune the cache after the build), SLIPWAY_STATE_DIR,\n"
        "SLIPWAY_INSECURE_REGISTRIES, DOCKER_CONFIG.\n"
        "\n"
        "exit status: 0 built, 1 the build failed, 2 usage error, 130 interrupted.\n";

static volatile sig_atomic_t build_cancel;

static void on_signal(int sig)
{
	(void)sig;
	build_cancel = 1;
}

static int usage_error(const char *fmt, ...) SW_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "slipway: error: build: %s\nRun 'slipway build --help' for usage.\n", m);
	return 2;
}

/* "id=ID,src=PATH" (also source=, type=file). */
static int parse_secret(sw_build_secret *out, char **id_store, char **src_store, const char *s)
{
	cleanup_free char *copy = sw_xstrdup(s);
	char *save = NULL;
	char *id = NULL, *src = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq)
			return -1;
		*eq = 0;
		const char *v = eq + 1;
		if (strcmp(tok, "id") == 0)
			id = (char *)v;
		else if (strcmp(tok, "src") == 0 || strcmp(tok, "source") == 0)
			src = (char *)v;
		else if (strcmp(tok, "type") == 0 && strcmp(v, "file") == 0)
			continue;
		else
			return -1;
	}
	if (!id || !id[0])
		return -1;
	if (!src || !src[0])
		return -1;
	*id_store = sw_xstrdup(id);
	*src_store = sw_xstrdup(src);
	out->id = *id_store;
	out->src = *src_store;
	return 0;
}

int sw_cmd_build(int argc, char **argv)
{
	enum {
		O_BUILD_ARG = 256,
		O_TARGET,
		O_NO_CACHE,
		O_CACHE_FROM,
		O_CACHE_TO,
		O_SECRET,
		O_NETWORK,
		O_PLATFORM,
		O_OUTPUT,
		O_PUSH,
		O_RUNTIME,
		O_COMPRESSION,
		O_PROGRESS,
	};
	static const struct option opts[] = {
		{ "file", required_argument, NULL, 'f' },
		{ "tag", required_argument, NULL, 't' },
		{ "build-arg", required_argument, NULL, O_BUILD_ARG },
		{ "target", required_argument, NULL, O_TARGET },
		{ "no-cache", no_argument, NULL, O_NO_CACHE },
		{ "cache-from", required_argument, NULL, O_CACHE_FROM },
		{ "cache-to", required_argument, NULL, O_CACHE_TO },
		{ "secret", required_argument, NULL, O_SECRET },
		{ "network", required_argument, NULL, O_NETWORK },
		{ "platform", required_argument, NULL, O_PLATFORM },
		{ "output", required_argument, NULL, O_OUTPUT },
		{ "push", required_argument, NULL, O_PUSH },
		{ "runtime", required_argument, NULL, O_RUNTIME },
		{ "compression", required_argument, NULL, O_COMPRESSION },
		{ "quiet", no_argument, NULL, 'q' },
		{ "progress", required_argument, NULL, O_PROGRESS },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	sw_build_opts bo;
	memset(&bo, 0, sizeof(bo));
	bo.source_date_epoch = -1;
	bo.compression = SW_OCI_COMPRESS_GZIP;
	cleanup_strv char **tags = NULL, **build_args = NULL, **cache_from = NULL, **push = NULL;
	cleanup_strv char **secret_strs = NULL;
	sw_build_secret *secrets = NULL;
	size_t n_secrets = 0;
	sw_oci_platform platform;
	memset(&platform, 0, sizeof(platform));
	bool have_platform = false;
	bool quiet = false;
	sw_progress_mode pmode = SW_PROGRESS_AUTO;
	int rc = 2;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+f:t:qh", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			bo.dockerfile = optarg;
			break;
		case 't':
			sw_strv_push(&tags, optarg);
			break;
		case O_BUILD_ARG:
			sw_strv_push(&build_args, optarg);
			break;
		case O_TARGET:
			bo.target = optarg;
			break;
		case O_NO_CACHE:
			bo.no_cache = true;
			break;
		case O_CACHE_FROM:
			sw_strv_push(&cache_from, optarg);
			break;
		case O_CACHE_TO:
			bo.cache_to = optarg;
			break;
		case O_SECRET: {
			secrets = sw_xrealloc(secrets, (n_secrets + 1) * sizeof(*secrets));
			char *id = NULL, *src = NULL;
			if (parse_secret(&secrets[n_secrets], &id, &src, optarg) < 0) {
				rc = usage_error("--secret '%s': expected id=ID,src=PATH", optarg);
				goto out;
			}
			sw_strv_push(&secret_strs, id);
			sw_strv_push(&secret_strs, src);
			free(id);
			free(src);
			size_t n = sw_strv_len(secret_strs);
			secrets[n_secrets].id = secret_strs[n - 2];
			secrets[n_secrets].src = secret_strs[n - 1];
			if (access(secrets[n_secrets].src, R_OK) < 0) {
				rc = usage_error("--secret id=%s: cannot read '%s': %s",
				                 secrets[n_secrets].id, secrets[n_secrets].src,
				                 strerror(errno));
				goto out;
			}
			n_secrets++;
			break;
		}
		case O_NETWORK:
			if (strcmp(optarg, "none") != 0 && strcmp(optarg, "host") != 0 &&
			    strcmp(optarg, "default") != 0) {
				rc = usage_error(
				        "--network must be none, host or default, not '%s'",
				        optarg);
				goto out;
			}
			bo.network = optarg;
			break;
		case O_PLATFORM: {
			sw_error *e = NULL;
			sw_oci_platform_clear(&platform);
			if (sw_oci_platform_parse(&platform, optarg, &e) < 0) {
				rc = usage_error("--platform '%s': %s", optarg, sw_error_msg(e));
				sw_error_free(e);
				goto out;
			}
			have_platform = true;
			break;
		}
		case O_OUTPUT:
			if (strncmp(optarg, "oci:", 4) != 0 || !optarg[4]) {
				rc = usage_error("--output '%s': expected oci:DIR[:TAG]", optarg);
				goto out;
			}
			bo.output = optarg;
			break;
		case O_PUSH:
			sw_strv_push(&push, optarg);
			break;
		case O_RUNTIME:
			bo.runtime = optarg;
			break;
		case O_COMPRESSION:
			if (strcmp(optarg, "gzip") == 0) {
				bo.compression = SW_OCI_COMPRESS_GZIP;
			} else if (strcmp(optarg, "zstd") == 0) {
				bo.compression = SW_OCI_COMPRESS_ZSTD;
			} else {
				rc = usage_error("--compression must be gzip or zstd, not '%s'",
				                 optarg);
				goto out;
			}
			break;
		case 'q':
			quiet = true;
			break;
		case O_PROGRESS:
			if (strcmp(optarg, "auto") == 0) {
				pmode = SW_PROGRESS_AUTO;
			} else if (strcmp(optarg, "tty") == 0) {
				pmode = SW_PROGRESS_TTY;
			} else if (strcmp(optarg, "plain") == 0) {
				pmode = SW_PROGRESS_PLAIN;
			} else {
				rc = usage_error("--progress must be auto, tty or plain, not '%s'",
				                 optarg);
				goto out;
			}
			break;
		case 'h':
			fputs(build_usage, stdout);
			rc = 0;
			goto out;
		default:
			fputs(build_usage, stderr);
			rc = 2;
			goto out;
		}
	}
	if (optind + 1 != argc) {
		rc = usage_error(optind >= argc ? "no CONTEXT folder given"
		                                : "exactly one CONTEXT folder is expected");
		goto out;
	}
	bo.context_dir = argv[optind];
	bo.tags = (const char *const *)tags;
	bo.build_args = (const char *const *)build_args;
	bo.cache_from = (const char *const *)cache_from;
	bo.push = (const char *const *)push;
	bo.secrets = secrets;
	bo.n_secrets = n_secrets;
	bo.platform = have_platform ? &platform : NULL;
	bo.state_dir = sw_cli.state_dir;
	bo.registry = sw_cli_registry_opts();
	bo.cancel = &build_cancel;

	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	sw_progress *prog = sw_progress_new(quiet ? SW_PROGRESS_QUIET : pmode, stderr);
	bo.on_event = sw_progress_event;
	bo.payload = prog;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sw_build_result res;
	sw_error *err = NULL;
	int brc = sw_build_run(&res, &bo, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	sw_progress_finish(prog);
	sw_progress_free(prog);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (brc < 0) {
		rc = sw_cli_fail(err);
		if (sw_error_code_of(err) == SW_ERR_CANCELLED || build_cancel)
			rc = 130;
		sw_error_free(err);
		goto out;
	}
	printf("%s\n", res.manifest.digest.s);
	fflush(stdout);
	if (!quiet) {
		double secs =
		        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		fprintf(stderr, "slipway: built %s%s in %.2fs (%u steps, %u cached)\n",
		        res.manifest.digest.s, tags ? "" : " (untagged)", secs, res.steps,
		        res.cached_steps);
	}
	sw_build_result_clear(&res);
	rc = 0;
out:
	free(secrets);
	sw_oci_platform_clear(&platform);
	return rc;
}
