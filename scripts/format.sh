#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Formats every C file with the repository's .clang-format; with --check, changes nothing and
# fails when a file is not formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard '*.c' '*.h')
[ ${#files[@]} -gt 0 ] || exit 0
if [ "${1:-}" = --check ]; then
	clang-format --dry-run -Werror "${files[@]}"
else
	clang-format -i "${files[@]}"
fi
