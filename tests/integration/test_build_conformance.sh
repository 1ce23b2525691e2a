#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The builder's conformance suite (tests/build/run_cases.sh): every case under tests/build/cases/
# is built with `slipway build`, unpacked with umoci and checked against its expected.json
# (files, modes, owners, link targets, contents, paths that must not exist, config fields).
# When dockerd is installed, the runner also starts a private dockerd (stopped by PID at the
# end, its data root unmounted and removed), builds every case with
# `DOCKER_BUILDKIT=1 docker build --network none`, checks the same expectations against Docker's
# image and compares the two images file by file and config field by config field (see the
# runner's header for the paths that comparison ignores and the cases it skips).
# SW_CONFORM_DOCKER=no skips the Docker half; by hand:
#   SLIPWAY=build/slipway bash tests/integration/test_build_conformance.sh
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
export SLIPWAY SW_TEST_SRCDIR
exec bash "$SW_TEST_SRCDIR/tests/build/run_cases.sh" --docker "${SW_CONFORM_DOCKER:-auto}"
