/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Replays a fuzz target's corpus as an ordinary test: every file of the folders (or files) named
 * on the command line is fed to LLVMFuzzerTestOneInput once (after libgit2's fuzzers).
 */
#include "common/common.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	cleanup_free char *buf = NULL;
	size_t len = 0;
	cleanup_error sw_error *err = NULL;
	if (sw_fs_read_file(&buf, &len, path, (size_t)64 << 20, &err) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(err));
		return -1;
	}
	LLVMFuzzerTestOneInput((const uint8_t *)buf, len);
	return 0;
}

int main(int argc, char **argv)
{
	int n = 0, failed = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			failed += run_file(argv[i]) < 0;
			n++;
			continue;
		}
		DIR *d = opendir(argv[i]);
		struct dirent *de;
		while (d && (de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			cleanup_free char *p = sw_path_join(argv[i], de->d_name);
			failed += run_file(p) < 0;
			n++;
		}
		if (d)
			closedir(d);
	}
	printf("%d passed, %d failed\n", n - failed, failed);
	return failed ? 1 : 0;
}
