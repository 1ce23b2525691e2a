#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages slipway needs to build, test and run its demo, through apt-get,
# and only those that are missing: running it again on a ready machine does nothing.
set -euo pipefail

pkgs=(
	# build
	build-essential cmake ninja-build pkg-config clang clang-format libclang-rt-14-dev
	libcurl4-openssl-dev libjansson-dev libarchive-dev libssl-dev libyaml-dev libgit2-dev
	libzstd-dev zlib1g-dev libcmocka-dev libxml2-dev libmicrohttpd-dev
	# real components used by the demo and the tests
	docker-registry skopeo umoci busybox-static apache2-utils python3 curl openssl zstd
	runc crun docker.io debootstrap iproute2 slirp4netns git
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "slipway: installing missing Debian packages: ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
