#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# slipway's main job end to end on the bundled example (examples/hello). Until the pipeline
# runner lands, that job is: make a busybox base image offline, build the example's image from
# its Dockerfile with `slipway build` (RUN steps in runc over overlayfs), build it again (all
# cached), push it to a real registry on 127.0.0.1, pull it back into a fresh OCI layout and
# check that nothing changed on the way. Installs missing Debian packages and builds first;
# leaves nothing behind.
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
base=$(show "$SLIPWAY" image import "$T/busybox-rootfs.tar" busybox:demo)
echo "$base"

step "3. build the example's image (examples/hello/Dockerfile) with slipway build"
built=$(show "$SLIPWAY" build --progress plain -t hello:demo examples/hello)
echo "$built"

step "4. build it again: every step comes from the cache, no container runs"
again=$(show "$SLIPWAY" build --progress plain -t hello:demo examples/hello 2>"$T/again.log")
grep -E "^#[0-9]+ (\[|CACHED)" "$T/again.log" | head -20
[ "$again" = "$built" ] || fail "the cached rebuild gave $again, not $built"
show "$SLIPWAY" image ls

step "5. start a real registry (docker-registry) on 127.0.0.1"
start_registry plain
echo "registry at $REGISTRY"

step "6. push the image to the registry"
pushed=$(show "$SLIPWAY" image copy hello:demo "docker://$REGISTRY/demo/hello:1")
echo "$pushed"

step "6b. an independent reader: skopeo inspects what slipway pushed"
seen=$(show skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY/demo/hello:1")
echo "$seen"

step "7. pull it back into a fresh OCI image layout"
pulled=$(show "$SLIPWAY" image copy "docker://$REGISTRY/demo/hello:1" "oci:$T/pulled:hello")
echo "$pulled"

step "8. inspect what came back"
show "$SLIPWAY" image inspect "oci:$T/pulled:hello" >"$T/inspect.json"
python3 - "$T/inspect.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("digest:   ", d["digest"])
print("platform: ", d["platform"])
for l in d["layers"]:
    print("layer:    ", l["digest"], l["size"], "bytes, diffID", l["diffID"])
PY

step "9. check"
[ "$built" = "$pushed" ] || fail "the pushed digest $pushed is not the built $built"
[ "$built" = "$seen" ] || fail "skopeo sees $seen in the registry, not the built $built"
[ "$built" = "$pulled" ] || fail "the pulled digest $pulled is not the built $built"
echo "the built image went to the registry and back unchanged: $built"
