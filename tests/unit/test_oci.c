/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The oci module's unit test program. Each area lives in its own file (test_oci_model.c,
 * test_oci_layer.c, test_oci_store.c, test_oci_registry.c) and exports one group runner; this
 * file runs them all and fails when any fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>

#include "tests/unit/test_oci.h"

int main(void)
{
	int failed = 0;
	int (*const groups[])(void) = { test_oci_model_run, test_oci_layer_run, test_oci_store_run,
		                        test_oci_registry_run };
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		if (!groups[i]) {
			fprintf(stderr, "test_oci: group %zu has no tests\n", i);
			failed++;
			continue;
		}
		failed += groups[i]();
	}
	return failed ? 1 : 0;
}
