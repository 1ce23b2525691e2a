/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agent: the `slipway` command line. main() parses the top level and dispatches to the command
 * functions declared here, one file per command family.
 */
#ifndef SW_AGENT_H
#define SW_AGENT_H

#include "common/common.h"
#include "oci/oci.h"

/* Global options every command sees. */
typedef struct sw_cli_globals {
	const char *state_dir; /* --state-dir or $SLIPWAY_STATE_DIR; NULL: default */
} sw_cli_globals;

extern sw_cli_globals sw_cli;

/* Each returns the process exit code. argv[0] is the command's own name. */
int sw_cmd_image(int argc, char **argv);
int sw_cmd_image_copy(int argc, char **argv);
int sw_cmd_image_import(int argc, char **argv);
int sw_cmd_image_inspect(int argc, char **argv);
/* `image inspect` of a docker:// REF (the registry side); sw_cmd_image_inspect hands over the
 * same argc/argv when REF is docker://. */
int sw_cmd_image_inspect_remote(int argc, char **argv);
int sw_cmd_image_ls(int argc, char **argv);
/* `slipway cache ls|prune` (agent/cmd_cache.c). */
int sw_cmd_cache(int argc, char **argv);
/* `slipway build` (agent/cmd_build.c). */
int sw_cmd_build(int argc, char **argv);
/* `slipway run` (agent/cmd_run.c): the pipeline of a commit. */
int sw_cmd_run(int argc, char **argv);
/* `slipway lint [FILE]` (agent/cmd_lint.c): check a pipeline file. */
int sw_cmd_lint(int argc, char **argv);

/*
 * The build progress renderer (agent/progress.c): sw_progress_event is an sw_build_event_cb
 * (payload: the sw_progress). TTY: a live view redrawn at most 10 times a second; PLAIN: one
 * line per event ("#3 [2/5] RUN make", "#3 0.512 output", "#3 DONE 1.2s"); AUTO: TTY when
 * `out` is a terminal. Writes to `out` only.
 */
typedef enum {
	SW_PROGRESS_AUTO,
	SW_PROGRESS_TTY,
	SW_PROGRESS_PLAIN,
	SW_PROGRESS_QUIET,
} sw_progress_mode;
typedef struct sw_progress sw_progress;
struct sw_build_event;
sw_progress *sw_progress_new(sw_progress_mode mode, FILE *out);
void sw_progress_event(const struct sw_build_event *ev, void *payload);
/* Stop the live view (its last state stays on screen). Idempotent. */
void sw_progress_finish(sw_progress *p);
void sw_progress_free(sw_progress *p);

/*
 * Where an image is, as named on the command line:
 *   oci:DIR[:TAG]                          an OCI image layout folder (TAG default "latest")
 *   docker://HOST[:PORT]/REPO[:TAG|@DIGEST] a registry
 *   NAME[:TAG] or sha256:...               the default local store
 */
typedef enum { SW_IMGLOC_LAYOUT, SW_IMGLOC_REGISTRY } sw_imgloc_kind;

typedef struct sw_imgloc {
	sw_imgloc_kind kind;
	char *dir; /* layout folder (LAYOUT) */
	char *tag; /* name inside the layout (LAYOUT), e.g. "app:1" or "latest" */
	bool is_default_store;
	sw_oci_ref ref; /* REGISTRY */
} sw_imgloc;

int sw_imgloc_parse(sw_imgloc *out, const char *s, sw_error **err) SW_WUR;
void sw_imgloc_clear(sw_imgloc *l);
/* The store folder to use by default (SLIPWAY_STATE_DIR aware). Caller frees. */
char *sw_cli_default_store_dir(void);
/* Registry options from the environment: SLIPWAY_INSECURE_REGISTRIES (comma list),
 * SLIPWAY_REGISTRY_CA, DOCKER_CONFIG; the result stays valid until the process exits. */
const sw_oci_registry_opts *sw_cli_registry_opts(void);

/*
 * A usage error of `slipway FAMILY CMD`: the message, a pointer to --help, exit code 2.
 * FAMILY is "image", "cache", ...; CMD the subcommand.
 */
int sw_cli_usage_error(const char *family, const char *cmd, const char *fmt, ...) SW_PRINTF(3, 4);
/* getopt's complaint (c is '?' or ':') about argv[optind - 1], as a usage error. */
int sw_cli_bad_option(const char *family, const char *cmd, int c, char **argv);
/* Is -h or --help among the arguments (before a "--")? */
bool sw_cli_wants_help(int argc, char **argv);
/* Sizes as people read them: 512B, 4.26MB, 1.1GB (powers of 1000); "-" when negative. */
void sw_cli_human_size(char *buf, size_t n, int64_t v);
/*
 * The JSON of `slipway image inspect` (local and remote alike): name, digest, mediaType, size,
 * platform, indexDigest (when `top` is an index), config, layers, manifest. The caller owns it.
 */
json_t *sw_cli_inspect_json(const char *ref, const sw_oci_descriptor *top,
                            const sw_oci_descriptor *desc, const sw_oci_manifest *m,
                            const sw_oci_config *cfg, json_t *manifest_json, json_t *config_json);
/* Print JSON indented by 2 with a newline on stdout. */
int sw_cli_print_json(json_t *o, sw_error **err) SW_WUR;
/* "os/arch[/variant]" of an image config, "unknown" when it has none. Caller frees. */
char *sw_cli_config_platform(const sw_oci_config *cfg);

/* Print an error as "slipway: error: MSG" and return exit code 1. */
int sw_cli_fail(const sw_error *err);
/* True when argv[i] is -h or --help. */
bool sw_cli_is_help(const char *arg);

#endif
