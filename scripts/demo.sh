#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# slipway's main job end to end on the bundled example (examples/app): a commit goes in; its
# image is built, its test stages run in isolated containers made from that image (unit tests
# with a JUnit report, a job that talks to the app running as a service container, a check
# job), and only then is the very image that was tested promoted to a real registry on
# 127.0.0.1, which this script starts. Installs missing Debian packages and builds first; leaves
# nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh build >/dev/null

SLIPWAY=$PWD/build/slipway
SW_TEST_SRCDIR=$PWD
# The test harness starts and stops the registry and owns the temporary folder ($T).
# shellcheck source=../tests/integration/lib.sh
source tests/integration/lib.sh
sw_tmpdir # $T, removed at exit; slipway's state goes there too (SLIPWAY_STATE_DIR=$T/state)

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

step "1. a busybox base image, made offline from Debian's busybox-static and imported"
sw_make_busybox_tar "$T/busybox-rootfs.tar"
show "$SLIPWAY" image import "$T/busybox-rootfs.tar" busybox:demo

step "2. the example repository: examples/app committed into a fresh git repository"
APP=$T/app
cp -a examples/app "$APP"
git -C "$APP" init -q -b main
git -C "$APP" add -A
git -C "$APP" -c user.email=demo@example.com -c user.name=demo commit -q -m "the example app"
sha=$(git -C "$APP" rev-parse HEAD)
git -C "$APP" log --oneline | cat
cat "$APP/.slipway.yml"

step "3. a real registry (Debian's docker-registry) on 127.0.0.1 to promote to"
start_registry plain
echo "registry at $REGISTRY"

step "4. check the pipeline file"
show "$SLIPWAY" lint "$APP/.slipway.yml"

step "5. run the pipeline: build, test stages in containers, promotion"
set +e
show "$SLIPWAY" run --repo "$APP" --var "REGISTRY=$REGISTRY" --events "$T/events.jsonl" \
	--junit "$T/junit.xml" --output "$T/out"
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "slipway run exited $rc"

step "6. what came out"
echo "artifacts and logs:"
(cd "$T/out" && find . -type f | sort | sed 's/^/  /')
python3 - "$T/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
for s in root.iter("testsuite"):
    print("  junit suite %-28s tests=%s failures=%s" % (s.get("name"), s.get("tests"), s.get("failures")))
PY
echo "events: $(wc -l <"$T/events.jsonl") state changes in $T/events.jsonl"

step "7. check: the registry holds the very image that was tested"
built=$("$SLIPWAY" image inspect "app:${sha:0:8}" | json_get 'd["digest"]')
echo "built and tested: $built"
for tag in "$sha" main latest; do
	seen=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$REGISTRY/demo/app:$tag")
	echo "registry $REGISTRY/demo/app:$tag -> $seen"
	[ "$seen" = "$built" ] || fail "the registry's $tag is $seen, not the tested $built"
done
echo "promoted the tested image unchanged: $built"
