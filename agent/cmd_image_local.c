/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The local `slipway image` commands: `import` (a root filesystem tarball becomes a one-layer
 * image in an OCI image layout or the default store), `inspect` (manifest digest, config and
 * layers as JSON; docker:// references are handed to the registry side) and `ls` (the images of
 * a layout as a table or JSON).
 */
#include "agent/agent.h"

#include <getopt.h>
#include <string.h>

/* ---------------------------------------------------------------- shared helpers */

static const char import_usage[] =
        "usage: slipway image import [--platform OS/ARCH[/VARIANT]]\n"
        "                            [--compression gzip|zstd|none] ROOTFS.tar DST\n"
        "\n"
        "Make a one-layer image from a root filesystem tarball and store it, tagged,\n"
        "in a local OCI image layout. Prints the manifest digest (sha256:...) on stdout.\n"
        "\n"
        "ROOTFS.tar is a tar archive of the root filesystem, plain or compressed (any\n"
        "format libarchive reads). Its entries must be relative paths without '..';\n"
        "they are re-packed, in their order, as the image's only layer. The image\n"
        "config gets the platform, the layer's diff ID, one history entry\n"
        "\"slipway image import BASENAME\", the environment\n"
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, and as its\n"
        "creation time SOURCE_DATE_EPOCH when that is set (importing the same tarball\n"
        "again then gives the same digest), else the current time.\n"
        "\n"
        "DST:\n"
        "  oci:DIR[:TAG]  an OCI image layout folder, created when missing\n"
        "                 (TAG default 'latest')\n"
        "  NAME[:TAG]     the local store in the state folder (TAG default 'latest')\n"
        "A registry is not a DST: import first, then use 'slipway image copy'.\n"
        "\n"
        "options:\n"
        "  --platform OS/ARCH[/VARIANT]  platform written in the image config\n"
        "                                (default: this machine's, e.g. linux/amd64)\n"
        "  --compression ALGO            layer compression: gzip (default), zstd, none\n"
        "  -h, --help                    show this help\n";

static const char inspect_usage[] =
        "usage: slipway image inspect [--platform OS/ARCH[/VARIANT]] [--raw] REF\n"
        "\n"
        "Print an image's manifest digest, config and layers as JSON:\n"
        "  name         REF as given\n"
        "  digest       the manifest digest\n"
        "  mediaType    the manifest media type\n"
        "  size         the manifest size in bytes\n"
        "  platform     OS/ARCH[/VARIANT], from the config\n"
        "  indexDigest  only when REF names an index: its digest (the manifest shown\n"
        "               is the one for the platform)\n"
        "  config       the whole image config\n"
        "  layers       [{digest, size, mediaType, diffID}]\n"
        "  manifest     the whole manifest\n"
        "\n"
        "REF:\n"
        "  oci:DIR[:TAG]                  an OCI image layout (TAG default 'latest')\n"
        "  NAME[:TAG], sha256:DIGEST      the local store (TAG default 'latest')\n"
        "  docker://HOST[:PORT]/REPO[:TAG|@DIGEST]  a registry\n"
        "\n"
        "options:\n"
        "  --platform OS/ARCH[/VARIANT]  the manifest to pick from an index\n"
        "                                (default: this machine's platform)\n"
        "  --raw                         print the manifest (or index) that REF names,\n"
        "                                byte for byte as stored, no newline added;\n"
        "                                with --platform, an index is first narrowed\n"
        "                                to that platform's manifest\n"
        "  -h, --help                    show this help\n";

static const char ls_usage[] =
        "usage: slipway image ls [--quiet] [--json] [oci:DIR]\n"
        "\n"
        "List the images of an OCI image layout (default: the local store in the state\n"
        "folder), sorted by name, as a table:\n"
        "  NAME      the tag (annotation org.opencontainers.image.ref.name), or <none>\n"
        "  DIGEST    the manifest (or index) digest: sha256: and its first 12 digits\n"
        "  SIZE      config plus layers as stored (compressed), in B, kB, MB, GB\n"
        "            (powers of 1000); for an index, its image for this machine\n"
        "  PLATFORM  OS/ARCH[/VARIANT] from the config; for an index, the platforms\n"
        "            it lists, separated by commas\n"
        "An empty store prints only the header. What cannot be read shows as '-',\n"
        "with a warning on stderr.\n"
        "\n"
        "options:\n"
        "  -q, --quiet  print only the names (the full digest for an entry without one)\n"
        "  --json       print a JSON array of {name (null when none), digest, mediaType,\n"
        "               size (bytes, null when unknown), platform}\n"
        "  -h, --help   show this help\n";

/* Open the layout a command reads; a missing default store reads as empty (*out = NULL). */
static int open_for_reading(sw_oci_store **out, const char *dir, bool is_default, sw_error **err)
{
	*out = NULL;
	sw_error *e = NULL;
	int r = sw_oci_store_open(out, dir, false, &e);
	if (r == SW_ERR_NOT_FOUND && is_default) {
		sw_error_free(e);
		return 0;
	}
	if (r < 0) {
		*err = e;
		return r;
	}
	return 0;
}

/* ---------------------------------------------------------------- import */

int sw_cmd_image_import(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "platform", required_argument, NULL, 'p' },
		{ "compression", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (sw_cli_wants_help(argc, argv)) {
		fputs(import_usage, stdout);
		return 0;
	}
	const char *platform_arg = NULL;
	sw_oci_layer_opts lopts = { .compression = SW_OCI_COMPRESS_GZIP, .source_date_epoch = -1 };
	optind = 0;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			platform_arg = optarg;
			break;
		case 'c':
			if (strcmp(optarg, "gzip") == 0)
				lopts.compression = SW_OCI_COMPRESS_GZIP;
			else if (strcmp(optarg, "zstd") == 0)
				lopts.compression = SW_OCI_COMPRESS_ZSTD;
			else if (strcmp(optarg, "none") == 0)
				lopts.compression = SW_OCI_COMPRESS_NONE;
			else
				return sw_cli_usage_error(
				        "image", "import",
				        "unknown compression '%s' (use gzip, zstd or none)",
				        optarg);
			break;
		case 'h':
			fputs(import_usage, stdout);
			return 0;
		default:
			return sw_cli_bad_option("image", "import", c, argv);
		}
	}
	if (argc - optind != 2)
		return sw_cli_usage_error("image", "import",
		                          "expected ROOTFS.tar and DST, got %d argument%s",
		                          argc - optind, argc - optind == 1 ? "" : "s");
	const char *tar_path = argv[optind];
	const char *dst = argv[optind + 1];

	cleanup_error sw_error *err = NULL;
	sw_oci_platform plat = { 0 };
	if (platform_arg && sw_oci_platform_parse(&plat, platform_arg, &err) < 0) {
		int rc = sw_cli_usage_error("image", "import", "--platform: %s", sw_error_msg(err));
		return rc;
	}
	if (platform_arg && (!plat.os || !plat.architecture)) {
		sw_oci_platform_clear(&plat);
		return sw_cli_usage_error("image", "import",
		                          "--platform '%s': expected OS/ARCH[/VARIANT]",
		                          platform_arg);
	}
	if (strncmp(dst, "docker://", 9) == 0) {
		sw_oci_platform_clear(&plat);
		return sw_cli_usage_error(
		        "image", "import",
		        "DST '%s' is a registry; import writes to a local layout. "
		        "Import into oci:DIR:TAG (or NAME[:TAG]) first, then push it with "
		        "'slipway image copy oci:DIR:TAG %s'",
		        dst, dst);
	}
	sw_imgloc loc;
	if (sw_imgloc_parse(&loc, dst, &err) < 0) {
		sw_oci_platform_clear(&plat);
		return sw_cli_usage_error("image", "import", "%s", sw_error_msg(err));
	}

	/* SOURCE_DATE_EPOCH makes the import reproducible: mtimes are clamped to it as well */
	const char *sde = getenv("SOURCE_DATE_EPOCH");
	if (sde && *sde) {
		char *end = NULL;
		long long v = strtoll(sde, &end, 10);
		if (end && !*end && v >= 0)
			lopts.source_date_epoch = v;
	}

	int rc = 0;
	sw_oci_store *store = NULL;
	sw_oci_descriptor desc = { 0 };
	if (sw_oci_store_open(&store, loc.dir, true, &err) < 0 ||
	    sw_oci_image_import(&desc, store, tar_path, loc.tag, platform_arg ? &plat : NULL,
	                        &lopts, &err) < 0) {
		rc = sw_cli_fail(err);
	} else {
		printf("%s\n", desc.digest.s);
		if (fflush(stdout) != 0)
			rc = 1;
	}
	sw_oci_descriptor_clear(&desc);
	sw_oci_store_free(store);
	sw_imgloc_clear(&loc);
	sw_oci_platform_clear(&plat);
	return rc;
}

/* ---------------------------------------------------------------- inspect */

/* Read a stored (verified) blob and parse it as JSON; the raw bytes too when asked. */
static int read_json_blob(json_t **out, sw_oci_store *s, const sw_digest *d, size_t max,
                          sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = sw_oci_store_read_blob(&buf, &len, s, d, max, err);
	if (r < 0)
		return r;
	json_error_t jerr;
	*out = json_loadb(buf, len, 0, &jerr);
	if (!*out)
		return sw_error_lib(err, SW_ERR_INVALID, SW_ERRSRC_JSON, 0, "blob %s: not JSON: %s",
		                    d->s, jerr.text);
	return 0;
}

static int write_raw_blob(sw_oci_store *s, const sw_digest *d, sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = sw_oci_store_read_blob(&buf, &len, s, d, SW_OCI_MAX_MANIFEST_BYTES, err);
	if (r < 0)
		return r;
	if (fwrite(buf, 1, len, stdout) != len || fflush(stdout) != 0)
		return sw_error_set(err, SW_ERR_GENERIC, "write to stdout failed");
	return 0;
}

static int inspect_local(const char *ref, const sw_imgloc *loc, const sw_oci_platform *want,
                         bool raw, sw_error **err)
{
	sw_oci_store *s = NULL;
	int r = open_for_reading(&s, loc->dir, loc->is_default_store, err);
	if (r < 0)
		return r;
	if (!s)
		return sw_error_set(err, SW_ERR_NOT_FOUND,
		                    "image '%s' not found in %s (the store is empty)", loc->tag,
		                    loc->dir);
	sw_oci_descriptor top = { 0 }, desc = { 0 };
	sw_oci_manifest m = { 0 };
	sw_oci_config cfg = { 0 };
	json_t *mj = NULL, *cj = NULL, *o = NULL;
	r = sw_oci_store_resolve(&top, s, loc->tag, err);
	if (r < 0)
		goto out;
	if (raw && !(want && sw_oci_media_type_is_index(top.media_type))) {
		r = write_raw_blob(s, &top.digest, err);
		goto out;
	}
	r = sw_oci_store_load_image(&desc, &m, &cfg, s, loc->tag, want, err);
	if (r < 0)
		goto out;
	if (raw) {
		r = write_raw_blob(s, &desc.digest, err);
		goto out;
	}
	r = read_json_blob(&mj, s, &desc.digest, SW_OCI_MAX_MANIFEST_BYTES, err);
	if (r < 0)
		goto out;
	r = read_json_blob(&cj, s, &m.config.digest, SW_OCI_MAX_CONFIG_BYTES, err);
	if (r < 0)
		goto out;
	o = sw_cli_inspect_json(ref, &top, &desc, &m, &cfg, mj, cj);
	r = sw_cli_print_json(o, err);
out:
	if (o)
		json_decref(o);
	if (mj)
		json_decref(mj);
	if (cj)
		json_decref(cj);
	sw_oci_config_clear(&cfg);
	sw_oci_manifest_clear(&m);
	sw_oci_descriptor_clear(&desc);
	sw_oci_descriptor_clear(&top);
	sw_oci_store_free(s);
	return r;
}

int sw_cmd_image_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "platform", required_argument, NULL, 'p' },
		{ "raw", no_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (sw_cli_wants_help(argc, argv)) {
		fputs(inspect_usage, stdout);
		return 0;
	}
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
			fputs(inspect_usage, stdout);
			return 0;
		default:
			return sw_cli_bad_option("image", "inspect", c, argv);
		}
	}
	if (argc - optind != 1)
		return sw_cli_usage_error("image", "inspect", "expected one REF, got %d arguments",
		                          argc - optind);
	const char *ref = argv[optind];
	if (strncmp(ref, "docker://", 9) == 0)
		return sw_cmd_image_inspect_remote(argc, argv);

	cleanup_error sw_error *err = NULL;
	sw_oci_platform plat = { 0 };
	if (platform_arg && sw_oci_platform_parse(&plat, platform_arg, &err) < 0)
		return sw_cli_usage_error("image", "inspect", "--platform: %s", sw_error_msg(err));
	sw_imgloc loc;
	if (sw_imgloc_parse(&loc, ref, &err) < 0) {
		sw_oci_platform_clear(&plat);
		return sw_cli_usage_error("image", "inspect", "%s", sw_error_msg(err));
	}
	int rc = 0;
	if (inspect_local(ref, &loc, platform_arg ? &plat : NULL, raw, &err) < 0)
		rc = sw_cli_fail(err);
	sw_imgloc_clear(&loc);
	sw_oci_platform_clear(&plat);
	return rc;
}

/* ---------------------------------------------------------------- ls */

typedef struct ls_row {
	char *name; /* NULL when the entry has no ref.name */
	sw_oci_descriptor desc;
	int64_t size; /* -1: unknown */
	char *platform;
	size_t order;
} ls_row;

/* Size (config + layers) and platform of one image manifest. */
static int manifest_summary(int64_t *size, char **platform, sw_oci_store *s,
                            const sw_oci_descriptor *d, sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = sw_oci_store_read_blob(&buf, &len, s, &d->digest, SW_OCI_MAX_MANIFEST_BYTES, err);
	if (r < 0)
		return r;
	sw_oci_manifest m;
	r = sw_oci_manifest_parse(&m, buf, len, d->media_type, err);
	if (r < 0)
		return sw_error_wrap(err, "manifest %s", d->digest.s);
	int64_t total = m.config.size;
	for (size_t i = 0; i < m.n_layers; i++)
		total += m.layers[i].size;
	cleanup_free char *cbuf = NULL;
	size_t clen = 0;
	r = sw_oci_store_read_blob(&cbuf, &clen, s, &m.config.digest, SW_OCI_MAX_CONFIG_BYTES, err);
	sw_oci_manifest_clear(&m);
	if (r < 0)
		return r;
	sw_oci_config cfg;
	r = sw_oci_config_parse(&cfg, cbuf, clen, err);
	if (r < 0)
		return sw_error_wrap(err, "config of %s", d->digest.s);
	*platform = sw_cli_config_platform(&cfg);
	sw_oci_config_clear(&cfg);
	*size = total;
	return 0;
}

static int index_summary(int64_t *size, char **platform, sw_oci_store *s,
                         const sw_oci_descriptor *d, sw_error **err)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	int r = sw_oci_store_read_blob(&buf, &len, s, &d->digest, SW_OCI_MAX_MANIFEST_BYTES, err);
	if (r < 0)
		return r;
	sw_oci_index ix;
	r = sw_oci_index_parse(&ix, buf, len, d->media_type, err);
	if (r < 0)
		return sw_error_wrap(err, "index %s", d->digest.s);
	sw_buf plats = SW_BUF_INIT(0);
	for (size_t i = 0; i < ix.n_manifests; i++) {
		const sw_oci_platform *p = ix.manifests[i].platform;
		if (!p || !p->os || strcmp(p->os, "unknown") == 0)
			continue;
		cleanup_free char *ps = sw_oci_platform_str(p);
		if ((plats.len && sw_buf_puts(&plats, ",", err) < 0) ||
		    sw_buf_puts(&plats, ps, err) < 0)
			break;
	}
	*platform = plats.len ? sw_buf_steal(&plats, NULL) : sw_xstrdup("-");
	sw_buf_free(&plats);
	const sw_oci_descriptor *sel = NULL;
	char *ignored = NULL;
	*size = -1;
	sw_oci_platform host = { 0 };
	sw_oci_platform_default(&host);
	int found = sw_oci_index_select(&sel, &ix, &host, NULL);
	sw_oci_platform_clear(&host);
	if (found == 0 && sw_oci_store_has_blob(s, &sel->digest) &&
	    manifest_summary(size, &ignored, s, sel, NULL) < 0)
		*size = -1;
	free(ignored);
	sw_oci_index_clear(&ix);
	return 0;
}

static void ls_describe(ls_row *row, sw_oci_store *s)
{
	cleanup_error sw_error *err = NULL;
	int r;
	row->size = -1;
	if (sw_oci_media_type_is_index(row->desc.media_type))
		r = index_summary(&row->size, &row->platform, s, &row->desc, &err);
	else
		r = manifest_summary(&row->size, &row->platform, s, &row->desc, &err);
	if (r < 0) {
		row->size = -1;
		SW_LOG(SW_LOG_WARN, "%s: %s", row->name ? row->name : row->desc.digest.s,
		       sw_error_msg(err));
	}
	if (!row->platform)
		row->platform = sw_xstrdup("-");
}

static int ls_row_cmp(const void *a, const void *b)
{
	const ls_row *x = a, *y = b;
	if (x->name && y->name) {
		int c = strcmp(x->name, y->name);
		if (c)
			return c;
	} else if (x->name || y->name) {
		return x->name ? -1 : 1;
	}
	return x->order < y->order ? -1 : x->order > y->order;
}

static void print_table(const ls_row *rows, size_t n)
{
	const char *hdr[4] = { "NAME", "DIGEST", "SIZE", "PLATFORM" };
	size_t w[3] = { strlen(hdr[0]), strlen(hdr[1]), strlen(hdr[2]) };
	char(*sizes)[32] = sw_xcalloc(n ? n : 1, sizeof(*sizes));
	char(*digests)[24] = sw_xcalloc(n ? n : 1, sizeof(*digests));
	for (size_t i = 0; i < n; i++) {
		sw_cli_human_size(sizes[i], sizeof(sizes[i]), rows[i].size);
		snprintf(digests[i], sizeof(digests[i]), "sha256:%.12s",
		         sw_oci_digest_hex(&rows[i].desc.digest));
		size_t ln = strlen(rows[i].name ? rows[i].name : "<none>");
		w[0] = ln > w[0] ? ln : w[0];
		w[1] = strlen(digests[i]) > w[1] ? strlen(digests[i]) : w[1];
		w[2] = strlen(sizes[i]) > w[2] ? strlen(sizes[i]) : w[2];
	}
	printf("%-*s   %-*s   %-*s   %s\n", (int)w[0], hdr[0], (int)w[1], hdr[1], (int)w[2], hdr[2],
	       hdr[3]);
	for (size_t i = 0; i < n; i++)
		printf("%-*s   %-*s   %-*s   %s\n", (int)w[0],
		       rows[i].name ? rows[i].name : "<none>", (int)w[1], digests[i], (int)w[2],
		       sizes[i], rows[i].platform);
	free(sizes);
	free(digests);
}

static json_t *rows_json(const ls_row *rows, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_object();
		json_object_set_new(o, "name",
		                    rows[i].name ? json_string(rows[i].name) : json_null());
		json_object_set_new(o, "digest", json_string(rows[i].desc.digest.s));
		json_object_set_new(o, "mediaType", json_string(rows[i].desc.media_type));
		json_object_set_new(o, "size",
		                    rows[i].size >= 0 ? json_integer(rows[i].size) : json_null());
		json_object_set_new(o, "platform", json_string(rows[i].platform));
		json_array_append_new(a, o);
	}
	return a;
}

int sw_cmd_image_ls(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quiet", no_argument, NULL, 'q' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (sw_cli_wants_help(argc, argv)) {
		fputs(ls_usage, stdout);
		return 0;
	}
	bool quiet = false, as_json = false;
	optind = 0;
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":hq", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			quiet = true;
			break;
		case 'j':
			as_json = true;
			break;
		case 'h':
			fputs(ls_usage, stdout);
			return 0;
		default:
			return sw_cli_bad_option("image", "ls", c, argv);
		}
	}
	if (argc - optind > 1)
		return sw_cli_usage_error("image", "ls",
		                          "expected at most one oci:DIR, got %d arguments",
		                          argc - optind);
	if (quiet && as_json)
		return sw_cli_usage_error("image", "ls",
		                          "--quiet and --json cannot be used together");
	cleanup_free char *dir = NULL;
	bool is_default = false;
	if (argc - optind == 1) {
		const char *arg = argv[optind];
		if (strncmp(arg, "oci:", 4) != 0 || !arg[4])
			return sw_cli_usage_error("image", "ls", "'%s': expected oci:DIR", arg);
		dir = sw_xstrdup(arg + 4);
	} else {
		dir = sw_cli_default_store_dir();
		is_default = true;
	}

	cleanup_error sw_error *err = NULL;
	sw_oci_store *s = NULL;
	if (open_for_reading(&s, dir, is_default, &err) < 0)
		return sw_cli_fail(err);
	sw_oci_index ix = { 0 };
	if (s && sw_oci_store_list(&ix, s, &err) < 0) {
		sw_oci_store_free(s);
		return sw_cli_fail(err);
	}
	ls_row *rows = sw_xcalloc(ix.n_manifests ? ix.n_manifests : 1, sizeof(*rows));
	for (size_t i = 0; i < ix.n_manifests; i++) {
		const char *name =
		        sw_oci_descriptor_annotation(&ix.manifests[i], SW_OCI_ANNOT_REF_NAME);
		rows[i].name = name ? sw_xstrdup(name) : NULL;
		sw_oci_descriptor_copy(&rows[i].desc, &ix.manifests[i]);
		rows[i].order = i;
		if (!quiet)
			ls_describe(&rows[i], s);
	}
	size_t n = ix.n_manifests;
	qsort(rows, n, sizeof(*rows), ls_row_cmp);
	int rc = 0;
	if (quiet) {
		for (size_t i = 0; i < n; i++)
			printf("%s\n", rows[i].name ? rows[i].name : rows[i].desc.digest.s);
	} else if (as_json) {
		json_auto_t *a = rows_json(rows, n);
		if (json_dumpf(a, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF)
			rc = 1;
	} else {
		print_table(rows, n);
	}
	if (fflush(stdout) != 0)
		rc = 1;
	for (size_t i = 0; i < n; i++) {
		free(rows[i].name);
		free(rows[i].platform);
		sw_oci_descriptor_clear(&rows[i].desc);
	}
	free(rows);
	sw_oci_index_clear(&ix);
	sw_oci_store_free(s);
	return rc;
}
