/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The builder module's unit test program: the Dockerfile frontend (test_builder_dockerfile.c),
 * the build context and copying (test_builder_context.c) and the engine
 * (test_builder_engine.c) each export one group runner; this file runs them all.
 */
#include <stdio.h>

__attribute__((weak)) int test_builder_dockerfile_run(void);
__attribute__((weak)) int test_builder_context_run(void);
__attribute__((weak)) int test_builder_engine_run(void);

int main(void)
{
	int failed = 0;
	int (*const groups[])(void) = { test_builder_dockerfile_run, test_builder_context_run,
		                        test_builder_engine_run };
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
		if (!groups[i]) {
			fprintf(stderr, "test_builder: group %zu has no tests\n", i);
			failed++;
			continue;
		}
		failed += groups[i]();
	}
	return failed ? 1 : 0;
}
