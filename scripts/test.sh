#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The whole test suite, as CI runs it: installs missing Debian packages, checks the formatting,
# builds with gcc and -Werror and runs every test (unit, fuzz corpora, integration against the
# real registry, skopeo and umoci), then builds with clang + ASan/UBSan and runs them again.
# SLIPWAY_TEST_QUICK=1 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh

echo "== format check"
bash scripts/format.sh --check

echo "== gcc build (-Werror) and tests"
bash scripts/build.sh build
ctest --test-dir build --output-on-failure -j2

if [ "${SLIPWAY_TEST_QUICK:-0}" != 1 ]; then
	echo "== clang ASan+UBSan build and tests"
	CC=clang bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DSLIPWAY_SANITIZE=ON
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --test-dir build-asan --output-on-failure -j2
fi
echo "== all tests passed"
