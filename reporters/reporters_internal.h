/* SPDX-License-Identifier: Apache-2.0 */
/*
 * reporters, internal: what the module's tests and fuzz targets need beyond reporters.h (a
 * clock hook for the console so its output can be compared byte for byte, an in-memory JUnit
 * merge and serializer for the fuzzer, the masking filter's held-back byte count).
 */
#ifndef SW_REPORTERS_INTERNAL_H
#define SW_REPORTERS_INTERNAL_H

#include "reporters/reporters.h"

/* Bytes the masking filter currently holds back (always < the longest pattern). */
size_t sw_mask__held(const sw_mask *m);

/*
 * Merge a JUnit document held in memory; `name` stands for the file in error messages. The
 * same rules as sw_junit_merge_file.
 */
int sw_junit__merge_buffer(sw_junit *j, const char *job, const char *name, const char *buf,
                           size_t len, sw_error **err) SW_WUR;
/* The report sw_junit_write would write; *out is the caller's to free. */
void sw_junit__serialize(const sw_junit *j, char **out, size_t *len);

/* Replace the console's monotonic clock (milliseconds) for tests; call before any job event. */
typedef int64_t (*sw_console_clock_fn)(void *payload);
void sw_console__set_clock(sw_console *c, sw_console_clock_fn clock, void *payload);
/* Replace the terminal width probe (TTY mode) for tests; 0 restores the probe. */
void sw_console__set_width(sw_console *c, int columns);

#endif
