/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reporters unit test program: runs the groups of the area files (masking, events, JUnit,
 * console) and fails when any case fails.
 */
#include "test_reporters.h"

int main(void)
{
	int failed = 0;
	int (*const groups[])(void) = { test_reporters_mask_run, test_reporters_events_run,
		                        test_reporters_junit_run, test_reporters_console_run };
	for (size_t i = 0; i < SW_ARRAY_SIZE(groups); i++)
		failed += groups[i]();
	return failed ? 1 : 0;
}
