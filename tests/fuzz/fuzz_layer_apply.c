/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the layer applier: the input is applied as a layer (with small limits) onto
 * TMP/outer/root, a fresh temporary folder, and afterwards TMP must hold nothing but "outer" and
 * "outer" nothing but "root": an entry that escaped with "..", a symlink or a hard link would show
 * there. A failure must come with a message. Any broken promise aborts. The folder is removed.
 */
#include "oci/oci.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort unless the folder `dir` holds exactly one entry, `only`. */
static void check_only(const char *dir, const char *only)
{
	DIR *d = opendir(dir);
	if (!d)
		abort();
	struct dirent *de;
	size_t n = 0;
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strcmp(de->d_name, only) != 0) {
			fprintf(stderr, "fuzz_layer_apply: '%s' appeared in %s\n", de->d_name, dir);
			abort();
		}
		n++;
	}
	closedir(d);
	if (n != 1)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cleanup_free char *tmp = NULL;
	sw_error *err = NULL;
	if (sw_fs_mkdtemp(&tmp, NULL, "sw-fuzz-layer-", &err) < 0)
		abort();
	cleanup_free char *outer = sw_path_join(tmp, "outer");
	cleanup_free char *root = sw_path_join(outer, "root");
	if (mkdir(outer, 0755) < 0 || mkdir(root, 0755) < 0)
		abort();

	sw_oci_apply_opts opts = {
		.max_entries = 256,
		.max_total_bytes = (uint64_t)4 << 20,
		.max_entry_bytes = (uint64_t)1 << 20,
	};
	sw_oci_apply_stats stats;
	int r = sw_oci_layer_apply_mem(&stats, root, data, size, &opts, &err);
	if (r < 0 && (!err || !*sw_error_msg(err)))
		abort();
	if (r == 0 && (err || stats.entries > opts.max_entries))
		abort();
	sw_error_clear(&err);

	check_only(tmp, "outer");
	check_only(outer, "root");
	struct stat st;
	if (lstat(root, &st) < 0 || !S_ISDIR(st.st_mode))
		abort();

	if (sw_fs_rm_rf(tmp, &err) < 0) {
		fprintf(stderr, "fuzz_layer_apply: %s\n", sw_error_msg(err));
		abort();
	}
	return 0;
}
