/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The unit tests of the GitLab runner's pure parts (tests/unit/test_agent_gitlab.c), run by
 * test_agent.c's main.
 */
#ifndef SW_TEST_AGENT_GITLAB_H
#define SW_TEST_AGENT_GITLAB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

void test_agent__gitlab_parse_fixture(void **state);
void test_agent__gitlab_parse_odd(void **state);
void test_agent__gitlab_pipeline(void **state);
void test_agent__gitlab_protocol_helpers(void **state);
void test_agent__gitlab_zip(void **state);
void test_agent__gitlab_trace_limit(void **state);

#define SW_TEST_AGENT_GITLAB_TESTS                                     \
	cmocka_unit_test(test_agent__gitlab_parse_fixture),            \
	        cmocka_unit_test(test_agent__gitlab_parse_odd),        \
	        cmocka_unit_test(test_agent__gitlab_pipeline),         \
	        cmocka_unit_test(test_agent__gitlab_protocol_helpers), \
	        cmocka_unit_test(test_agent__gitlab_zip),              \
	        cmocka_unit_test(test_agent__gitlab_trace_limit)

#endif
