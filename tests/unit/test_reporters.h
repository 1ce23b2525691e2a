/* SPDX-License-Identifier: Apache-2.0 */
/* Group runners of the reporters unit test program, one per area file; each returns failures. */
#ifndef SW_TEST_REPORTERS_H
#define SW_TEST_REPORTERS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "reporters/reporters.h"
#include "reporters/reporters_internal.h"

int test_reporters_mask_run(void);
int test_reporters_events_run(void);
int test_reporters_junit_run(void);
int test_reporters_console_run(void);

#define CHECK_OK(expr)                                                \
	do {                                                          \
		sw_error *err = NULL;                                 \
		int check_r_ = (expr);                                \
		if (check_r_ < 0)                                     \
			fail_msg("%s: %s", #expr, sw_error_msg(err)); \
		sw_error_free(err);                                   \
	} while (0)

#endif
