#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configures and builds slipway into build/ (or the folder given as $1) with gcc, warnings as
# errors. Extra arguments go to cmake. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLIPWAY_WERROR=ON "$@" >/dev/null
ninja -C "$dir"
