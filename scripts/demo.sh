#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# slipway's main job end to end on the bundled busybox example. Until the builder and the
# pipeline runner land, that job is: make the busybox base image offline, push it to a real
# registry on 127.0.0.1, pull it back into a fresh OCI layout and check that nothing changed on
# the way. Installs missing Debian packages and builds first; leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh build >/dev/null

SLIPWAY=$PWD/build/slipway
SW_TEST_SRCDIR=$PWD
# The test harness starts and stops the registry and owns the temporary folder ($T).
# shellcheck source=../tests/integration/lib.sh
source tests/integration/lib.sh
sw_tmpdir # $T, removed at exit; the local store goes there too (SLIPWAY_STATE_DIR=$T/state)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. a busybox root filesystem from Debian's busybox-static, as a tarball"
sw_make_busybox_tar "$T/busybox-rootfs.tar"
ls -l "$T/busybox-rootfs.tar"

step "2. import it as a one-layer OCI image into the local store"
imported=$(show "$SLIPWAY" image import "$T/busybox-rootfs.tar" busybox:demo)
echo "$imported"
show "$SLIPWAY" image ls

step "3. start a real registry (docker-registry) on 127.0.0.1"
start_registry plain
echo "registry at $REGISTRY"

step "4. push the image to the registry"
pushed=$(show "$SLIPWAY" image copy busybox:demo "docker://$REGISTRY/demo/busybox:1")
echo "$pushed"

step "4b. an independent reader: skopeo inspects what slipway pushed"
seen=$(show skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY/demo/busybox:1")
echo "$seen"

step "5. pull it back into a fresh OCI image layout"
pulled=$(show "$SLIPWAY" image copy "docker://$REGISTRY/demo/busybox:1" "oci:$T/pulled:busybox")
echo "$pulled"

step "6. inspect what came back"
show "$SLIPWAY" image inspect "oci:$T/pulled:busybox" >"$T/inspect.json"
python3 - "$T/inspect.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("digest:   ", d["digest"])
print("platform: ", d["platform"])
for l in d["layers"]:
    print("layer:    ", l["digest"], l["size"], "bytes, diffID", l["diffID"])
PY

step "7. check"
[ "$imported" = "$pushed" ] || fail "the pushed digest $pushed is not the imported $imported"
[ "$imported" = "$seen" ] || fail "skopeo sees $seen in the registry, not the imported $imported"
[ "$imported" = "$pulled" ] || fail "the pulled digest $pulled is not the imported $imported"
echo "the image went to the registry and back unchanged: $imported"
