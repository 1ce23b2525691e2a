/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers every command of the `slipway` command line shares: how errors and usage errors are
 * printed (exit codes 1 and 2), help detection, and the human forms of sizes and platforms.
 */
#include "agent/agent.h"

#include <getopt.h>
#include <string.h>

int sw_cli_fail(const sw_error *err)
{
	cleanup_free char *m = sw_redact(sw_error_msg(err));
	fprintf(stderr, "slipway: error: %s\n", m);
	return 1;
}

bool sw_cli_is_help(const char *arg)
{
	return arg && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0);
}

bool sw_cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return false;
		if (sw_cli_is_help(argv[i]))
			return true;
	}
	return false;
}

int sw_cli_usage_error(const char *family, const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cleanup_free char *m = sw_xvasprintf(fmt, ap);
	va_end(ap);
	fprintf(stderr, "slipway: error: %s %s: %s\nRun 'slipway %s %s --help' for usage.\n",
	        family, cmd, m, family, cmd);
	return 2;
}

int sw_cli_bad_option(const char *family, const char *cmd, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "?";
	if (c == ':')
		return sw_cli_usage_error(family, cmd, "option '%s' needs a value", arg);
	return sw_cli_usage_error(family, cmd, "unknown option '%s'", arg);
}

void sw_cli_human_size(char *buf, size_t n, int64_t v)
{
	static const char *const units[] = { "B", "kB", "MB", "GB", "TB", "PB", "EB" };
	if (v < 0) {
		snprintf(buf, n, "-");
		return;
	}
	double x = (double)v;
	size_t u = 0;
	while (x >= 999.5 && u + 1 < SW_ARRAY_SIZE(units)) {
		x /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%lldB", (long long)v);
	else if (x < 9.995)
		snprintf(buf, n, "%.2f%s", x, units[u]);
	else if (x < 99.95)
		snprintf(buf, n, "%.1f%s", x, units[u]);
	else
		snprintf(buf, n, "%.0f%s", x, units[u]);
}

char *sw_cli_config_platform(const sw_oci_config *cfg)
{
	sw_oci_platform p = { .os = cfg->os,
		              .architecture = cfg->architecture,
		              .variant = cfg->variant };
	if (!p.os || !p.architecture)
		return sw_xstrdup("unknown");
	return sw_oci_platform_str(&p);
}

json_t *sw_cli_inspect_json(const char *ref, const sw_oci_descriptor *top,
                            const sw_oci_descriptor *desc, const sw_oci_manifest *m,
                            const sw_oci_config *cfg, json_t *manifest_json, json_t *config_json)
{
	json_t *o = json_object();
	json_object_set_new(o, "name", json_string(ref));
	json_object_set_new(o, "digest", json_string(desc->digest.s));
	json_object_set_new(o, "mediaType", json_string(desc->media_type));
	json_object_set_new(o, "size", json_integer(desc->size));
	cleanup_free char *plat = sw_cli_config_platform(cfg);
	json_object_set_new(o, "platform", json_string(plat));
	if (!sw_oci_digest_eq(&top->digest, &desc->digest))
		json_object_set_new(o, "indexDigest", json_string(top->digest.s));
	json_object_set(o, "config", config_json);
	json_t *layers = json_array();
	for (size_t i = 0; i < m->n_layers; i++) {
		const sw_oci_descriptor *l = &m->layers[i];
		json_t *lj = json_object();
		json_object_set_new(lj, "digest", json_string(l->digest.s));
		json_object_set_new(lj, "size", json_integer(l->size));
		json_object_set_new(lj, "mediaType", json_string(l->media_type));
		json_object_set_new(lj, "diffID",
		                    i < cfg->n_diff_ids ? json_string(cfg->diff_ids[i].s)
		                                        : json_null());
		json_array_append_new(layers, lj);
	}
	json_object_set_new(o, "layers", layers);
	json_object_set(o, "manifest", manifest_json);
	return o;
}

int sw_cli_print_json(json_t *o, sw_error **err)
{
	if (json_dumpf(o, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF ||
	    fflush(stdout) != 0)
		return sw_error_set(err, SW_ERR_GENERIC, "write to stdout failed");
	return 0;
}
