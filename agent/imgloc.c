/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image locations as the command line names them (oci:DIR:TAG, docker://REF, or a name in the
 * default local store) and the registry options the image commands share.
 */
#include "agent/agent.h"

#include <string.h>

char *sw_cli_default_store_dir(void)
{
	return sw_oci_store_default_dir();
}

int sw_imgloc_parse(sw_imgloc *out, const char *s, sw_error **err)
{
	memset(out, 0, sizeof(*out));
	if (strncmp(s, "docker://", 9) == 0) {
		out->kind = SW_IMGLOC_REGISTRY;
		if (sw_oci_ref_parse(&out->ref, s + 9, err) < 0)
			return sw_error_wrap(err, "image reference '%s'", s);
		return 0;
	}
	out->kind = SW_IMGLOC_LAYOUT;
	if (strncmp(s, "oci:", 4) == 0) {
		const char *p = s + 4;
		const char *slash = strrchr(p, '/');
		const char *colon = strrchr(slash ? slash : p, ':');
		if (colon) {
			out->dir = sw_xstrndup(p, (size_t)(colon - p));
			out->tag = sw_xstrdup(colon + 1);
		} else {
			out->dir = sw_xstrdup(p);
			out->tag = sw_xstrdup("latest");
		}
		if (!out->dir[0] || !out->tag[0]) {
			sw_imgloc_clear(out);
			return sw_error_set(err, SW_ERR_INVALID,
			                    "image reference '%s': expected oci:DIR[:TAG]", s);
		}
		return 0;
	}
	if (!s[0] || strchr(s, '/') == s || strstr(s, "://")) {
		return sw_error_set(err, SW_ERR_INVALID,
		                    "image reference '%s': expected oci:DIR[:TAG], "
		                    "docker://HOST/REPO[:TAG] or NAME[:TAG]",
		                    s);
	}
	out->dir = sw_cli_default_store_dir();
	out->is_default_store = true;
	/* a name without a tag means :latest, as docker does */
	const char *slash = strrchr(s, '/');
	const char *colon = strrchr(slash ? slash : s, ':');
	if (strncmp(s, "sha256:", 7) == 0 || colon)
		out->tag = sw_xstrdup(s);
	else
		out->tag = sw_xasprintf("%s:latest", s);
	return 0;
}

void sw_imgloc_clear(sw_imgloc *l)
{
	free(l->dir);
	free(l->tag);
	sw_oci_ref_clear(&l->ref);
	memset(l, 0, sizeof(*l));
}

const sw_oci_registry_opts *sw_cli_registry_opts(void)
{
	static sw_oci_registry_opts opts;
	static char **insecure;
	static bool done;
	if (done)
		return &opts;
	done = true;
	opts.http.max_retries = -1;
	const char *ins = getenv("SLIPWAY_INSECURE_REGISTRIES");
	if (ins && *ins) {
		cleanup_free char *copy = sw_xstrdup(ins);
		char *save = NULL;
		for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
			sw_strv_push(&insecure, t);
		opts.insecure = (const char *const *)insecure;
	}
	opts.http.ca_file = getenv("SLIPWAY_REGISTRY_CA");
	return &opts;
}
