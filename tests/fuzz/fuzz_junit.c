/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the JUnit reader (sw_junit_merge_file's parser, fed from memory): whatever is
 * refused must say why and name the file; whatever is merged must serialize to a report that
 * parses again with the very same totals. Any broken promise aborts.
 */
#include "reporters/reporters.h"
#include "reporters/reporters_internal.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sw_junit *j = sw_junit_new("fuzz");
	sw_error *err = NULL;
	if (sw_junit__merge_buffer(j, "job", "in.xml", (const char *)data, size, &err) < 0) {
		if (!err || strncmp(sw_error_msg(err), "in.xml", 6) != 0)
			abort();
		sw_error_free(err);
		sw_junit_free(j);
		return 0;
	}
	if (err)
		abort();
	unsigned t1, f1, e1, s1, t2, f2, e2, s2;
	sw_junit_counts(j, &t1, &f1, &e1, &s1);
	char *out = NULL;
	size_t len = 0;
	sw_junit__serialize(j, &out, &len);
	sw_junit *again = sw_junit_new("again");
	if (sw_junit__merge_buffer(again, "re", "out.xml", out, len, &err) < 0) {
		fprintf(stderr, "%s\n", sw_error_msg(err));
		abort();
	}
	sw_junit_counts(again, &t2, &f2, &e2, &s2);
	if (t1 != t2 || f1 != f2 || e1 != e2 || s1 != s2)
		abort();
	free(out);
	sw_junit_free(again);
	sw_junit_free(j);
	return 0;
}
