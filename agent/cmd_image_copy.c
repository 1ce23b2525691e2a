/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway image copy SRC DST` between OCI image layouts and registries in every direction
 * (push, pull, registry to registry through the local store, layout to layout), and the
 * registry side of `slipway image inspect docker://REF` (manifest and config fetched, nothing
 * stored). The copy prints the manifest digest on stdout and one summary line on stderr.
 */
#include "agent/agent.h"

#include <getopt.h>
#include <inttypes.h>
#include <string.h>

static void copy_json_decrefp(json_t **j)
{
	if (*j)
		json_decref(*j);
}
#define cleanup_jsonp __attribute__((cleanup(copy_json_decrefp)))

static const char copy_usage[] =
        "usage: slipway image copy [--platform OS/ARCH[/VARIANT]] [--src-creds USER:PASS]\n"
        "                          [--dest-creds USER:PASS] [--quiet] SRC DST\n"
        "\n"
        "Copy an image between OCI image layouts and registries, in any direction: push\n"
        "(layout to registry), pull (registry to layout), registry to registry (through the\n"
        "local store, which then keeps the blobs) and layout to layout. Blobs the destination\n"
        "already has are not sent again; a blob known to be in another repository of the same\n"
        "registry is mounted from there. Prints the manifest digest (sha256:...) on stdout, and\n"
        "a summary on stderr:\n"
        "  slipway: copied SRC -> DST: N blobs uploaded, N already present, N mounted,\n"
        "  N downloaded, BYTES bytes up, BYTES down\n"
        "\n"
        "SRC and DST:\n"
        "  oci:DIR[:TAG]                            an OCI image layout (TAG default 'latest');\n"
        "                                           a destination folder is created when missing\n"
        "  docker://HOST[:PORT]/REPO[:TAG|@DIGEST]  a registry (TAG default 'latest'); plain\n"
        "                                           http for 127.0.0.0/8, ::1, localhost and the\n"
        "                                           hosts in SLIPWAY_INSECURE_REGISTRIES\n"
        "                                           (comma-separated), https otherwise\n"
        "  NAME[:TAG]                               the local store under the state folder\n"
        "\n"
        "Credentials come from --src-creds/--dest-creds, else from the Docker config file\n"
        "($DOCKER_CONFIG/config.json or ~/.docker/config.json, \"auths\" entries). Anonymous\n"
        "access, Basic and Bearer token authentication are supported.\n"
        "\n"
        "options:\n"
        "  --platform OS/ARCH[/VARIANT]  which image of a multi-platform index to copy (default:\n"
        "                                this machine's platform when pulling; a layout's index\n"
        "                                is pushed whole unless --platform is given)\n"
        "  --src-creds USER:PASS         credentials for the source registry\n"
        "  --dest-creds USER:PASS        credentials for the destination registry\n"
        "  -q, --quiet                   no summary line on stderr\n"
        "  -h, --help                    show this help\n"
        "\n"
        "environment: SLIPWAY_INSECURE_REGISTRIES, SLIPWAY_REGISTRY_CA (extra CA bundle),\n"
        "DOCKER_CONFIG.\n";

/* Registry options for one side: the environment's, with USER:PASS for `host` first. */
typedef struct side_opts {
	sw_oci_registry_opts opts;
	sw_oci_credentials *creds;
	size_t n;
} side_opts;

static void side_opts_init(side_opts *so, const char *host, const char *userpass)
{
	memset(so, 0, sizeof(*so));
	so->opts = *sw_cli_registry_opts();
	if (!userpass)
		return;
	const sw_oci_registry_opts *base = sw_cli_registry_opts();
	so->n = 1 + base->n_credentials;
	so->creds = sw_xcalloc(so->n, sizeof(*so->creds));
	const char *colon = strchr(userpass, ':');
	so->creds[0].registry = sw_xstrdup(host);
	so->creds[0].username = sw_xstrndup(userpass, (size_t)(colon - userpass));
	so->creds[0].password = sw_xstrdup(colon + 1);
	for (size_t i = 0; i < base->n_credentials; i++) {
		so->creds[i + 1].registry = sw_xstrdup(base->credentials[i].registry);
		so->creds[i + 1].username = sw_xstrdup(base->credentials[i].username);
		so->creds[i + 1].password = sw_xstrdup(base->credentials[i].password);
	}
	so->opts.credentials = so->creds;
	so->opts.n_credentials = so->n;
}

static void side_opts_clear(side_opts *so)
{
	for (size_t i = 0; i < so->n; i++)
		sw_oci_credentials_clear(&so->creds[i]);
	free(so->creds);
	memset(so, 0, sizeof(*so));
}

static void stats_add(sw_oci_transfer_stats *sum, const sw_oci_registry *r)
{
	if (!r)
		return;
	const sw_oci_transfer_stats *s = sw_oci_registry_stats(r);
	sum->blobs_uploaded += s->blobs_uploaded;
	sum->blobs_skipped += s->blobs_skipped;
	sum->blobs_mounted += s->blobs_mounted;
	sum->blobs_downloaded += s->blobs_downloaded;
	sum->bytes_up += s->bytes_up;
	sum->bytes_down += s->bytes_down;
	sum->requests += s->requests;
}

/* Resolve a layout's TAG to what is copied: the entry itself, or its manifest for `want`. */
static int layout_source(sw_oci_descriptor *out, sw_oci_store *s, const sw_imgloc *loc,
                         const sw_oci_platform *want, sw_error **err)
{
	sw_oci_descriptor top;
	if (sw_oci_store_resolve(&top, s, loc->tag, err) < 0)
		return sw_error_wrap(err, "%s", loc->dir);
	if (want && top.media_type && sw_oci_media_type_is_index(top.media_type)) {
		sw_oci_descriptor_clear(&top);
		if (sw_oci_store_load_image(out, NULL, NULL, s, loc->tag, want, err) < 0)
			return sw_error_wrap(err, "%s", loc->dir);
		return 0;
	}
	*out = top;
	return 0;
}

static int open_store(sw_oci_store **out, const sw_imgloc *loc, bool create, sw_error **err)
{
	if (sw_oci_store_open(out, loc->dir, create, err) < 0) {
		if (!create && loc->is_default_store && sw_error_code_of(*err) == SW_ERR_NOT_FOUND)
			return sw_error_wrap(err, "image '%s' not found (the local store is empty)",
			                     loc->tag);
		return sw_error_code_of(*err);
	}
	return 0;
}

typedef struct copy_job {
	const char *src_arg, *dst_arg;
	sw_imgloc src, dst;
	const sw_oci_platform *want;
	side_opts src_opts, dst_opts;
	sw_oci_registry *src_reg, *dst_reg;
	sw_oci_store *src_store, *dst_store, *cache;
	sw_oci_descriptor desc;
} copy_job;

static int run_copy(copy_job *j, sw_error **err)
{
	bool from_reg = j->src.kind == SW_IMGLOC_REGISTRY;
	bool to_reg = j->dst.kind == SW_IMGLOC_REGISTRY;
	if (from_reg &&
	    sw_oci_registry_new(&j->src_reg, j->src.ref.registry, &j->src_opts.opts, err) < 0)
		return sw_error_code_of(*err);
	if (to_reg &&
	    sw_oci_registry_new(&j->dst_reg, j->dst.ref.registry, &j->dst_opts.opts, err) < 0)
		return sw_error_code_of(*err);

	if (!from_reg && !to_reg) {
		if (open_store(&j->src_store, &j->src, false, err) < 0 ||
		    layout_source(&j->desc, j->src_store, &j->src, j->want, err) < 0 ||
		    open_store(&j->dst_store, &j->dst, true, err) < 0)
			return sw_error_code_of(*err);
		return sw_oci_store_copy_image(j->dst_store, j->src_store, &j->desc, j->dst.tag,
		                               err);
	}
	if (!from_reg) {
		if (open_store(&j->src_store, &j->src, false, err) < 0 ||
		    layout_source(&j->desc, j->src_store, &j->src, j->want, err) < 0)
			return sw_error_code_of(*err);
		return sw_oci_registry_push(j->dst_reg, j->src_store, &j->desc, &j->dst.ref, err);
	}
	if (!to_reg) {
		if (open_store(&j->dst_store, &j->dst, true, err) < 0)
			return sw_error_code_of(*err);
		if (sw_oci_registry_pull(&j->desc, j->src_reg, j->dst_store, &j->src.ref, j->want,
		                         err) < 0)
			return sw_error_code_of(*err);
		if (sw_oci_store_tag(j->dst_store, j->dst.tag, &j->desc, err) < 0)
			return sw_error_wrap(err, "tag %s in %s", j->dst.tag, j->dst.dir);
		return 0;
	}
	/* registry to registry: through the local store, which keeps the blobs as a cache */
	cleanup_free char *dir = sw_cli_default_store_dir();
	if (sw_oci_store_open(&j->cache, dir, true, err) < 0)
		return sw_error_wrap(err, "local store");
	if (sw_oci_registry_pull(&j->desc, j->src_reg, j->cache, &j->src.ref, j->want, err) < 0)
		return sw_error_code_of(*err);
	return sw_oci_registry_push(j->dst_reg, j->cache, &j->desc, &j->dst.ref, err);
}

static void copy_job_clear(copy_job *j)
{
	sw_oci_registry_free(j->src_reg);
	sw_oci_registry_free(j->dst_reg);
	sw_oci_store_free(j->src_store);
	sw_oci_store_free(j->dst_store);
	sw_oci_store_free(j->cache);
	sw_oci_descriptor_clear(&j->desc);
	side_opts_clear(&j->src_opts);
	side_opts_clear(&j->dst_opts);
	sw_imgloc_clear(&j->src);
	sw_imgloc_clear(&j->dst);
}

static bool valid_creds(const char *s)
{
	const char *colon = strchr(s, ':');
	return colon && colon != s;
}

int sw_cmd_image_copy(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "platform", required_argument, NULL, 'p' },
		{ "src-creds", required_argument, NULL, 's' },
		{ "dest-creds", required_argument, NULL, 'd' },
		{ "dst-creds", required_argument, NULL, 'd' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (sw_cli_wants_help(argc, argv)) {
		fputs(copy_usage, stdout);
		return 0;
	}
	const char *platform_arg = NULL, *src_creds = NULL, *dst_creds = NULL;
	bool quiet = false;
	optind = 0;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":qh", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			platform_arg = optarg;
			break;
		case 's':
			src_creds = optarg;
			break;
		case 'd':
			dst_creds = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			fputs(copy_usage, stdout);
			return 0;
		case ':':
			return sw_cli_usage_error("image", "copy", "option '%s' needs a value",
			                          argv[optind - 1]);
		default:
			return sw_cli_usage_error("image", "copy", "unknown option '%s'",
			                          argv[optind - 1]);
		}
	}
	if (argc - optind != 2)
		return sw_cli_usage_error("image", "copy",
		                          "expected SRC and DST, got %d argument%s", argc - optind,
		                          argc - optind == 1 ? "" : "s");
	if (src_creds && !valid_creds(src_creds))
		return sw_cli_usage_error("image", "copy", "--src-creds: expected USER:PASS");
	if (dst_creds && !valid_creds(dst_creds))
		return sw_cli_usage_error("image", "copy", "--dest-creds: expected USER:PASS");

	cleanup_error sw_error *err = NULL;
	sw_oci_platform plat = { 0 };
	if (platform_arg) {
		if (sw_oci_platform_parse(&plat, platform_arg, &err) < 0)
			return sw_cli_usage_error("image", "copy", "--platform: %s",
			                          sw_error_msg(err));
		if (!plat.os || !plat.architecture) {
			sw_oci_platform_clear(&plat);
			return sw_cli_usage_error("image", "copy",
			                          "--platform '%s': expected OS/ARCH[/VARIANT]",
			                          platform_arg);
		}
	}
	copy_job j;
	memset(&j, 0, sizeof(j));
	j.src_arg = argv[optind];
	j.dst_arg = argv[optind + 1];
	j.want = platform_arg ? &plat : NULL;
	int rc = 0;
	if (sw_imgloc_parse(&j.src, j.src_arg, &err) < 0 ||
	    sw_imgloc_parse(&j.dst, j.dst_arg, &err) < 0) {
		rc = sw_cli_usage_error("image", "copy", "%s", sw_error_msg(err));
		goto out;
	}
	if (src_creds && j.src.kind != SW_IMGLOC_REGISTRY) {
		rc = sw_cli_usage_error("image", "copy", "--src-creds: SRC is not a registry");
		goto out;
	}
	if (dst_creds && j.dst.kind != SW_IMGLOC_REGISTRY) {
		rc = sw_cli_usage_error("image", "copy", "--dest-creds: DST is not a registry");
		goto out;
	}
	side_opts_init(&j.src_opts, j.src.kind == SW_IMGLOC_REGISTRY ? j.src.ref.registry : "",
	               src_creds);
	side_opts_init(&j.dst_opts, j.dst.kind == SW_IMGLOC_REGISTRY ? j.dst.ref.registry : "",
	               dst_creds);

	if (run_copy(&j, &err) < 0) {
		sw_error_wrap(&err, "copy %s -> %s", j.src_arg, j.dst_arg);
		rc = sw_cli_fail(err);
		goto out;
	}
	printf("%s\n", j.desc.digest.s);
	if (fflush(stdout) != 0)
		rc = 1;
	if (!quiet) {
		sw_oci_transfer_stats t = { 0 };
		stats_add(&t, j.src_reg);
		stats_add(&t, j.dst_reg);
		fprintf(stderr,
		        "slipway: copied %s -> %s: %" PRIu64 " blobs uploaded, %" PRIu64
		        " already present, %" PRIu64 " mounted, %" PRIu64 " downloaded, %" PRIu64
		        " bytes up, %" PRIu64 " bytes down\n",
		        j.src_arg, j.dst_arg, t.blobs_uploaded, t.blobs_skipped, t.blobs_mounted,
		        t.blobs_downloaded, t.bytes_up, t.bytes_down);
	}
out:
	copy_job_clear(&j);
	sw_oci_platform_clear(&plat);
	return rc;
}

/* ---------------------------------------------------------------- inspect docker://REF */

static const char inspect_remote_usage[] =
        "usage: slipway image inspect [--platform OS/ARCH[/VARIANT]] [--raw]\n"
        "                             docker://HOST[:PORT]/REPO[:TAG|@DIGEST]\n"
        "\n"
        "Fetch an image's manifest and config from a registry (nothing is stored) and print them\n"
        "as JSON, in the same shape as for a local image. Run 'slipway image inspect --help' for\n"
        "the fields and options.\n";

static int write_raw(const char *buf, size_t len, sw_error **err)
{
	if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0)
		return sw_error_set(err, SW_ERR_GENERIC, "write to stdout failed");
	return 0;
}

static int inspect_remote(const char *name, const sw_oci_ref *ref, const sw_oci_platform *want,
                          bool raw, sw_error **err)
{
	sw_oci_registry *r = NULL;
	if (sw_oci_registry_new(&r, ref->registry, sw_cli_registry_opts(), err) < 0)
		return sw_error_code_of(*err);
	cleanup_free char *top_buf = NULL, *buf = NULL, *cbuf = NULL;
	size_t top_len = 0, len = 0, clen = 0;
	sw_oci_descriptor top = { 0 }, desc = { 0 };
	sw_oci_manifest m = { 0 };
	sw_oci_config cfg = { 0 };
	cleanup_jsonp json_t *mj = NULL;
	cleanup_jsonp json_t *cj = NULL;
	cleanup_jsonp json_t *o = NULL;
	json_error_t jerr;
	int rc = sw_oci_registry_get_manifest(&top_buf, &top_len, &top, r, ref, err);
	if (rc < 0)
		goto out;
	bool is_index = sw_oci_media_type_is_index(top.media_type);
	if (raw && !(want && is_index)) {
		rc = write_raw(top_buf, top_len, err);
		goto out;
	}
	if (is_index) {
		sw_oci_index ix;
		const sw_oci_descriptor *pick = NULL;
		if ((rc = sw_oci_index_parse(&ix, top_buf, top_len, NULL, err)) < 0)
			goto out;
		rc = sw_oci_index_select(&pick, &ix, want, err);
		sw_oci_ref child = { .registry = ref->registry, .repository = ref->repository };
		if (rc == 0)
			child.digest = pick->digest;
		sw_oci_index_clear(&ix);
		if (rc < 0)
			goto out;
		if ((rc = sw_oci_registry_get_manifest(&buf, &len, &desc, r, &child, err)) < 0)
			goto out;
		if (!sw_oci_media_type_is_manifest(desc.media_type)) {
			rc = sw_error_set(err, SW_ERR_INVALID, "%s: not an image manifest",
			                  desc.digest.s);
			goto out;
		}
	} else {
		buf = steal_pointer(&top_buf);
		len = top_len;
		sw_oci_descriptor_copy(&desc, &top);
	}
	if (raw) {
		rc = write_raw(buf, len, err);
		goto out;
	}
	if ((rc = sw_oci_manifest_parse(&m, buf, len, NULL, err)) < 0)
		goto out;
	if ((rc = sw_oci_registry_get_blob(&cbuf, &clen, r, ref, &m.config, SW_OCI_MAX_CONFIG_BYTES,
	                                   err)) < 0) {
		sw_error_wrap(err, "config");
		goto out;
	}
	if ((rc = sw_oci_config_parse(&cfg, cbuf, clen, err)) < 0) {
		sw_error_wrap(err, "config %s", m.config.digest.s);
		goto out;
	}
	mj = json_loadb(buf, len, 0, &jerr);
	cj = json_loadb(cbuf, clen, 0, &jerr);
	if (!mj || !cj) {
		rc = sw_error_set(err, SW_ERR_INVALID, "not JSON: %s", jerr.text);
		goto out;
	}
	o = sw_cli_inspect_json(name, &top, &desc, &m, &cfg, mj, cj);
	rc = sw_cli_print_json(o, err);
out:
	sw_oci_config_clear(&cfg);
	sw_oci_manifest_clear(&m);
	sw_oci_descriptor_clear(&desc);
	sw_oci_descriptor_clear(&top);
	sw_oci_registry_free(r);
	return rc;
}

int sw_cmd_image_inspect_remote(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "platform", required_argument, NULL, 'p' },
		{ "raw", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *platform_arg = NULL;
	bool raw = false;
	optind = 0;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			platform_arg = optarg;
			break;
		case 'r':
			raw = true;
			break;
		case 'h':
			fputs(inspect_remote_usage, stdout);
			return 0;
		case ':':
			return sw_cli_usage_error("image", "inspect", "option '%s' needs a value",
			                          argv[optind - 1]);
		default:
			return sw_cli_usage_error("image", "inspect", "unknown option '%s'",
			                          argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return sw_cli_usage_error("image", "inspect", "expected one REF, got %d arguments",
		                          argc - optind);
	const char *name = argv[optind];
	cleanup_error sw_error *err = NULL;
	sw_oci_platform plat = { 0 };
	if (platform_arg && sw_oci_platform_parse(&plat, platform_arg, &err) < 0)
		return sw_cli_usage_error("image", "inspect", "--platform: %s", sw_error_msg(err));
	sw_imgloc loc;
	if (sw_imgloc_parse(&loc, name, &err) < 0) {
		sw_oci_platform_clear(&plat);
		return sw_cli_usage_error("image", "inspect", "%s", sw_error_msg(err));
	}
	int rc = 0;
	if (loc.kind != SW_IMGLOC_REGISTRY) {
		rc = sw_cli_usage_error("image", "inspect", "'%s' is not a docker:// reference",
		                        name);
	} else if (inspect_remote(name, &loc.ref, platform_arg ? &plat : NULL, raw, &err) < 0) {
		sw_error_wrap(&err, "inspect %s", name);
		rc = sw_cli_fail(err);
	}
	sw_imgloc_clear(&loc);
	sw_oci_platform_clear(&plat);
	return rc;
}
