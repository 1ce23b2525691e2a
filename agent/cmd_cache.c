/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `slipway cache`: `ls` (the build cache entries, most recently used first, as a table or
 * JSON, with the bytes the cache holds) and `prune` (remove least recently used entries with
 * their layer blobs and unpacked snapshots down to a size, printing what went).
 */
#include "agent/agent.h"
#include "cache/cache.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char usage[] =
        "usage: slipway cache COMMAND ...\n"
        "\n"
        "The build cache: what each build step produced (keyed by the step's cache key),\n"
        "the layer blobs in the local store, and the unpacked layers builds mount.\n"
        "\n"
        "commands:\n"
        "  ls [--json]               list the entries, most recently used first\n"
        "  prune [--keep-bytes N]    remove the least recently used down to N bytes\n"
        "\n"
        "Run 'slipway cache COMMAND --help' for a command's own help.\n";

static const char ls_usage[] =
        "usage: slipway cache ls [--json]\n"
        "\n"
        "List the build cache entries of the state folder, most recently used first:\n"
        "  KEY         the step's cache key: sha256: and its first 12 digits\n"
        "  LAYER       the layer blob in the local store: sha256: and 12 digits\n"
        "  SIZE        the blob's size (compressed), in B, kB, MB, GB (powers of 1000)\n"
        "  LAST USED   when a build last used it\n"
        "  CREATED BY  the step that made it (cut to fit 100 columns)\n"
        "then one line with the totals: the entries, the bytes of their layer blobs, and\n"
        "the bytes of the unpacked layers (snapshots, counted on disk).\n"
        "\n"
        "options:\n"
        "  --json      print {entries: [{key, diffID, blob {mediaType, digest, size},\n"
        "              createdBy, created, lastUsed (RFC 3339 UTC), snapshot (whether the\n"
        "              unpacked layer is there)}], usage {entries, blobBytes,\n"
        "              snapshotBytes}}\n"
        "  -h, --help  show this help\n";

static const char prune_usage[] =
        "usage: slipway cache prune [--keep-bytes N]\n"
        "\n"
        "Remove build cache entries, least recently used first, until the cache holds at\n"
        "most N bytes (layer blobs plus unpacked layers). An entry goes with its layer\n"
        "blob and its unpacked layer unless an image in the local store or a remaining\n"
        "entry still uses them; unpacked layers of base images go by their own last use.\n"
        "Prints each thing removed, then the bytes freed and what is left.\n"
        "\n"
        "While other slipway processes use the cache (builds running), unpacked layers are\n"
        "kept (they may be mounted) and so are entries used since the oldest of those\n"
        "processes started; prune says so. Set SLIPWAY_CACHE_MAX_BYTES to make builds\n"
        "prune by themselves (down to 80% of it) when the cache grows past it.\n"
        "\n"
        "options:\n"
        "  --keep-bytes N  the bytes to keep (default 0: remove everything not in use);\n"
        "                  N takes a unit: k, M, G, T (powers of 1000) or KiB, MiB, GiB,\n"
        "                  TiB (powers of 1024), e.g. 10G or 512MiB\n"
        "  -h, --help      show this help\n";

/* ---------------------------------------------------------------- helpers */

/* The state folder: --state-dir (main puts it in SLIPWAY_STATE_DIR), else the folder the
 * default store lives in. Caller frees. */
static char *state_dir(void)
{
	const char *s = getenv("SLIPWAY_STATE_DIR");
	if (s && *s)
		return sw_xstrdup(s);
	cleanup_free char *store = sw_cli_default_store_dir();
	return sw_xstrdup(dirname(store));
}

/* The store and the cache of the state folder; *out_cache stays NULL when the state folder
 * has no cache yet (nothing to list or prune, and nothing is created). */
static int open_cache(sw_cache **out_cache, sw_oci_store **out_store, sw_error **err)
{
	*out_cache = NULL;
	*out_store = NULL;
	cleanup_free char *state = state_dir();
	cleanup_free char *cdir = sw_path_join(state, "cache");
	struct stat st;
	if (stat(cdir, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return sw_error_os(err, errno, "build cache '%s'", cdir);
	}
	cleanup_free char *sdir = sw_path_join(state, "store");
	int r = sw_oci_store_open(out_store, sdir, true, err);
	if (r < 0)
		return r;
	r = sw_cache_open(out_cache, state, *out_store, err);
	if (r < 0) {
		sw_oci_store_free(*out_store);
		*out_store = NULL;
	}
	return r;
}

/* "5 minutes ago", "3 days ago". */
static void relative_time(char *buf, size_t n, int64_t then, int64_t now)
{
	static const struct {
		int64_t secs;
		const char *one, *many;
	} steps[] = {
		{ 365 * 86400, "year", "years" }, { 30 * 86400, "month", "months" },
		{ 7 * 86400, "week", "weeks" },   { 86400, "day", "days" },
		{ 3600, "hour", "hours" },        { 60, "minute", "minutes" },
		{ 1, "second", "seconds" },
	};
	int64_t d = now - then;
	if (d < 1) {
		snprintf(buf, n, "just now");
		return;
	}
	for (size_t i = 0; i < SW_ARRAY_SIZE(steps); i++) {
		if (d >= steps[i].secs) {
			int64_t k = d / steps[i].secs;
			snprintf(buf, n, "%lld %s ago", (long long)k,
			         k == 1 ? steps[i].one : steps[i].many);
			return;
		}
	}
}

static void rfc3339(char *buf, size_t n, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One line of text at most `width` columns: control characters (a heredoc's newlines) become
 * spaces, runs of spaces one, and a cut ends in "..." without splitting a UTF-8 character. */
static char *fit_text(const char *s, size_t width)
{
	size_t len = strlen(s);
	char *flat = sw_xmalloc(len + 1);
	size_t j = 0;
	for (size_t i = 0; i < len; i++) {
		char ch = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
		if (ch == ' ' && (j == 0 || flat[j - 1] == ' '))
			continue;
		flat[j++] = ch;
	}
	while (j > 0 && flat[j - 1] == ' ')
		j--;
	flat[j] = '\0';
	/* columns: count UTF-8 lead bytes */
	size_t cols = 0, cut = 0;
	for (size_t i = 0; i < j; i++) {
		if (((unsigned char)flat[i] & 0xc0) == 0x80)
			continue;
		if (cols == width - 3)
			cut = i;
		cols++;
	}
	if (cols > width && width > 3)
		strcpy(flat + cut, "...");
	return flat;
}

/* ---------------------------------------------------------------- ls */

#define COL_CREATED_BY 29 /* 100 columns minus the others and their separators */

static void print_entries(const sw_cache_entry *v, size_t n, const sw_cache_usage *u)
{
	int64_t now = (int64_t)time(NULL);
	printf("%-19s   %-19s   %-7s   %-14s   %s\n", "KEY", "LAYER", "SIZE", "LAST USED",
	       "CREATED BY");
	for (size_t i = 0; i < n; i++) {
		char key[32], layer[32], size[32], used[48];
		snprintf(key, sizeof(key), "sha256:%.12s", v[i].key + 7);
		snprintf(layer, sizeof(layer), "sha256:%.12s",
		         sw_oci_digest_hex(&v[i].blob.digest));
		sw_cli_human_size(size, sizeof(size), (uint64_t)v[i].blob.size);
		relative_time(used, sizeof(used), v[i].last_used, now);
		cleanup_free char *by =
		        fit_text(v[i].created_by ? v[i].created_by : "", COL_CREATED_BY);
		printf("%-19s   %-19s   %-7s   %-14s   %s\n", key, layer, size, used, by);
	}
	char blobs[32], snaps[32], total[32];
	sw_cli_human_size(blobs, sizeof(blobs), u->blob_bytes);
	sw_cli_human_size(snaps, sizeof(snaps), u->snapshot_bytes);
	sw_cli_human_size(total, sizeof(total), u->blob_bytes + u->snapshot_bytes);
	printf("total: %llu entr%s, layer blobs %s, unpacked layers %s, %s in all\n",
	       (unsigned long long)u->entries, u->entries == 1 ? "y" : "ies", blobs, snaps, total);
}

static json_t *entries_json(const sw_cache_entry *v, size_t n, sw_cache *c, const sw_cache_usage *u)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		char created[32], used[32];
		rfc3339(created, sizeof(created), v[i].created);
		rfc3339(used, sizeof(used), v[i].last_used);
		json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s, s:I}, s:s, s:s, s:s, s:b}", "key",
		                      v[i].key, "diffID", v[i].diff_id.s, "blob", "mediaType",
		                      v[i].blob.media_type, "digest", v[i].blob.digest.s, "size",
		                      (json_int_t)v[i].blob.size, "createdBy",
		                      v[i].created_by ? v[i].created_by : "", "created", created,
		                      "lastUsed", used, "snapshot",
		                      c ? sw_cache_snapshot_has(c, &v[i].diff_id) : 0);
		if (o)
			json_array_append_new(a, o);
	}
	return json_pack("{s:o, s:{s:I, s:I, s:I}}", "entries", a, "usage", "entries",
	                 (json_int_t)u->entries, "blobBytes", (json_int_t)u->blob_bytes,
	                 "snapshotBytes", (json_int_t)u->snapshot_bytes);
}

static int cache_ls(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (sw_cli_wants_help(argc, argv)) {
		fputs(ls_usage, stdout);
		return 0;
	}
	bool as_json = false;
	optind = 0;
	opterr = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (ch) {
		case 'j':
			as_json = true;
			break;
		case 'h':
			fputs(ls_usage, stdout);
			return 0;
		default:
			return sw_cli_bad_option("cache", "ls", ch, argv);
		}
	}
	if (optind < argc)
		return sw_cli_usage_error("cache", "ls", "unexpected argument '%s'", argv[optind]);

	cleanup_error sw_error *err = NULL;
	sw_oci_store *store = NULL;
	sw_cache *c = NULL;
	sw_cache_entry *v = NULL;
	size_t n = 0;
	sw_cache_usage u = { 0 };
	int rc = 0;
	if (open_cache(&c, &store, &err) < 0 ||
	    (c && (sw_cache_list(&v, &n, c, &err) < 0 || sw_cache_usage_get(&u, c, &err) < 0))) {
		rc = sw_cli_fail(err);
		goto out;
	}
	if (as_json) {
		json_t *j = entries_json(v, n, c, &u);
		char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		json_decref(j);
		if (s)
			puts(s);
		free(s);
	} else {
		print_entries(v, n, &u);
	}
out:
	sw_cache_entries_free(v, n);
	sw_cache_free(c);
	sw_oci_store_free(store);
	return rc;
}

/* ---------------------------------------------------------------- prune */

static void report_removed(const char *kind, const char *name, const char *detail, uint64_t bytes,
                           void *payload)
{
	(void)payload;
	if (strcmp(kind, "entry") == 0) {
		cleanup_free char *by = fit_text(detail ? detail : "", 60);
		printf("removed entry     %s   %s\n", name, by);
		return;
	}
	char size[32];
	sw_cli_human_size(size, sizeof(size), bytes);
	printf("removed %-9s %s   %s\n", strcmp(kind, "snapshot") == 0 ? "unpacked" : kind, name,
	       size);
}

static int cache_prune(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "keep-bytes", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	if (sw_cli_wants_help(argc, argv)) {
		fputs(prune_usage, stdout);
		return 0;
	}
	uint64_t keep = 0;
	cleanup_error sw_error *err = NULL;
	optind = 0;
	opterr = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (ch) {
		case 'k':
			if (sw_cache_size_parse(&keep, optarg, &err) < 0)
				return sw_cli_usage_error("cache", "prune", "--keep-bytes: %s",
				                          sw_error_msg(err));
			break;
		case 'h':
			fputs(prune_usage, stdout);
			return 0;
		default:
			return sw_cli_bad_option("cache", "prune", ch, argv);
		}
	}
	if (optind < argc)
		return sw_cli_usage_error("cache", "prune", "unexpected argument '%s'",
		                          argv[optind]);

	sw_oci_store *store = NULL;
	sw_cache *c = NULL;
	sw_cache_prune_stats st = { 0 };
	int rc = 0;
	if (open_cache(&c, &store, &err) < 0 ||
	    (c && sw_cache_prune_report(&st, c, keep, report_removed, NULL, &err) < 0)) {
		fflush(stdout);
		rc = sw_cli_fail(err);
		goto out;
	}
	char freed[32], left[32], blobs[32], snaps[32];
	sw_cli_human_size(freed, sizeof(freed), st.bytes_freed);
	sw_cli_human_size(left, sizeof(left), st.after.blob_bytes + st.after.snapshot_bytes);
	sw_cli_human_size(blobs, sizeof(blobs), st.after.blob_bytes);
	sw_cli_human_size(snaps, sizeof(snaps), st.after.snapshot_bytes);
	printf("removed %llu entr%s, %llu layer blob%s, %llu unpacked layer%s: %s freed\n",
	       (unsigned long long)st.entries_removed, st.entries_removed == 1 ? "y" : "ies",
	       (unsigned long long)st.blobs_removed, st.blobs_removed == 1 ? "" : "s",
	       (unsigned long long)st.snapshots_removed, st.snapshots_removed == 1 ? "" : "s",
	       freed);
	printf("the cache holds %s (%llu entr%s, layer blobs %s, unpacked layers %s)\n", left,
	       (unsigned long long)st.after.entries, st.after.entries == 1 ? "y" : "ies", blobs,
	       snaps);
	if (st.busy)
		printf("note: other slipway processes are using the cache: %llu unpacked layer%s "
		       "and the entries they may be using were kept; prune again when no build "
		       "runs\n",
		       (unsigned long long)st.snapshots_kept, st.snapshots_kept == 1 ? "" : "s");
out:
	sw_cache_free(c);
	sw_oci_store_free(store);
	return rc;
}

/* ---------------------------------------------------------------- dispatch */

int sw_cmd_cache(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage, stderr);
		return 2;
	}
	const char *sub = argv[1];
	if (sw_cli_is_help(sub) || strcmp(sub, "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
		return cache_ls(argc - 1, argv + 1);
	if (strcmp(sub, "prune") == 0)
		return cache_prune(argc - 1, argv + 1);
	fprintf(stderr, "slipway: error: unknown cache command '%s'\n\n%s", sub, usage);
	return 2;
}
