/* SPDX-License-Identifier: Apache-2.0 */
/* Group runners of the oci unit test program, one per area file; each returns failures. */
#ifndef SW_TEST_OCI_H
#define SW_TEST_OCI_H

/* Weak, so the program links while an area has no tests yet; a missing area counts as a failure
 * in main(). */
__attribute__((weak)) int test_oci_model_run(void);
__attribute__((weak)) int test_oci_layer_run(void);
__attribute__((weak)) int test_oci_store_run(void);
__attribute__((weak)) int test_oci_registry_run(void);

#endif
