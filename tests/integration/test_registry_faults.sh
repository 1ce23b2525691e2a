#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Pushes and pulls through tools/faultproxy.py in front of the real distribution registry: 503s
# and dropped connections mid-upload (a monolithic PUT, and PATCH/PUT of a ~40 MB layer that
# takes the chunked path) are retried and the push completes; a permanent 500 fails the push
# with an error naming the blob and leaves no tag in the registry (checked on the registry
# itself, not through the proxy); a download dropped mid-body is retried and verified; a
# manifest or blob whose bytes do not match their digest fails the pull and tags nothing.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

sw_tmpdir
start_registry plain
start_faultproxy
REG=$REGISTRY

rootfs_tar "$T/rootfs.tar"

# A rootfs with a ~40 MiB file of random bytes: its gzip layer stays above the 16 MiB of
# slipway's monolithic upload limit (and PATCH chunk), so pushing it takes the chunked path.
mkdir -p "$T/bigroot/bin" "$T/bigroot/data"
cp "$ROOTFS_BUSYBOX" "$T/bigroot/bin/busybox"
head -c $((40 << 20)) /dev/urandom >"$T/bigroot/data/random.bin"
tar -C "$T/bigroot" -cf "$T/big.tar" .
rm -rf "$T/bigroot"

# fresh NAME TAR: import TAR into the new layout oci:$T/NAME:base with a state folder of its own,
# so no earlier push taught slipway where the blobs are (no cross-repository mounts). Sets $D,
# $CONFIG and $LAYER.
fresh() {
	export SLIPWAY_STATE_DIR="$T/state-$1"
	run_ok "import-$1" "$SLIPWAY" image import "$2" "oci:$T/$1:base"
	D=$(layout_digest "$T/$1" base)
	[ -n "$D" ] || fail "import of $2 left no 'base' tag in $T/$1"
	local blobs
	mapfile -t blobs < <(layout_image_blobs "$T/$1" "$D")
	CONFIG=${blobs[0]}
	LAYER=${blobs[1]}
}

# proxy_log_has TEXT: the proxy's request log has a line containing TEXT.
proxy_log_has() {
	proxy_stats | json_get "any('$1' in line for line in d['log'])" | grep -qx true
}

# ---------------------------------------------------------------- pushes that recover

note "503 twice on blob upload PUTs: the push retries and completes"
fresh s503 "$T/rootfs.tar"
proxy_reset
proxy_faults '[{"method":"PUT","path_re":"/blobs/uploads/","action":"status","status":503,
	"times":2}]'
run_ok push503 "$SLIPWAY" image copy "oci:$T/s503:base" "docker://$PROXY/faults/s503:1"
assert_eq "$D" "$OUT" "digest printed by the push through 503s"
assert_eq 2 "$(proxy_count faults)" "503s served"
assert_eq 2 "$(summary_num "$ERR" uploaded)" "blobs uploaded through 503s"
registry_check_image "$REG" faults/s503 1 "$D" "$T/s503"

note "429 with Retry-After: 2 on a blob HEAD: the push waits as told and completes"
fresh s429 "$T/rootfs.tar"
proxy_reset
proxy_faults '[{"method":"HEAD","path_re":"/blobs/","action":"status","status":429,
	"headers":{"Retry-After":"2"},"times":1}]'
start=$(date +%s%N)
run_ok push429 "$SLIPWAY" image copy "oci:$T/s429:base" "docker://$PROXY/faults/s429:1"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
assert_eq "$D" "$OUT" "digest printed by the push through a 429"
assert_eq 1 "$(proxy_count faults)" "429s served"
[ "$elapsed_ms" -ge 1900 ] || fail "the push took ${elapsed_ms} ms: Retry-After: 2 was not honoured"
registry_check_image "$REG" faults/s429 1 "$D" "$T/s429"

note "500 once on the manifest PUT: the push retries and completes"
fresh m500 "$T/rootfs.tar"
proxy_faults '[{"method":"PUT","path_re":"/manifests/","action":"status","status":500,
	"times":1}]'
run_ok pushm500 "$SLIPWAY" image copy "oci:$T/m500:base" "docker://$PROXY/faults/m500:1"
assert_eq "$D" "$OUT" "digest printed by the push through a manifest 500"
registry_check_image "$REG" faults/m500 1 "$D" "$T/m500"

note "connection dropped in the middle of a monolithic blob PUT"
fresh dput "$T/rootfs.tar"
proxy_reset
proxy_faults "[{\"method\":\"PUT\",\"path_re\":\"${LAYER#sha256:}\",\"action\":\"drop_mid_body\",
	\"times\":1}]"
run_ok pushdput "$SLIPWAY" image copy "oci:$T/dput:base" "docker://$PROXY/faults/dput:1"
assert_eq "$D" "$OUT" "digest printed by the push through a dropped PUT"
proxy_log_has DROP-MID-BODY || fail "the PUT of the layer was never dropped: $(proxy_stats)"
registry_check_image "$REG" faults/dput 1 "$D" "$T/dput"

note "a ~40 MiB layer: connection dropped in the middle of the second PATCH"
fresh big "$T/big.tar"
BIGD=$D
BIGLAYER=$LAYER
size=$(stat -c %s "$(layout_blob_path "$T/big" "$LAYER")")
[ "$size" -gt $((16 << 20)) ] || fail "the big layer has only $size bytes"
proxy_reset
proxy_faults '[{"method":"PATCH","path_re":"/blobs/uploads/","action":"drop_mid_body",
	"times":1,"skip":1}]'
run_ok pushbig "$SLIPWAY" image copy "oci:$T/big:base" "docker://$PROXY/faults/big:1"
assert_eq "$D" "$OUT" "digest printed by the push through a dropped PATCH"
[ "$(proxy_count "PATCH upload")" -ge 3 ] ||
	fail "the big layer did not take the chunked path (PATCHes): $(proxy_stats)"
assert_eq 1 "$(proxy_count faults)" "PATCHes dropped"
registry_check_image "$REG" faults/big 1 "$D" "$T/big"

note "a ~40 MiB layer: connection dropped in the middle of its final PUT"
fresh big2 "$T/big.tar"
proxy_reset
proxy_faults "[{\"method\":\"PUT\",\"path_re\":\"${LAYER#sha256:}\",\"action\":\"drop_mid_body\",
	\"times\":1}]"
run_ok pushbig2 "$SLIPWAY" image copy "oci:$T/big2:base" "docker://$PROXY/faults/big2:1"
assert_eq "$D" "$OUT" "digest printed by the push through a dropped final PUT"
assert_eq 1 "$(proxy_count faults)" "final PUTs dropped"
registry_check_image "$REG" faults/big2 1 "$D" "$T/big2"

# ---------------------------------------------------------------- pushes that must fail cleanly

note "permanent 500 on blob uploads: the push fails, naming the blob, and no tag appears"
fresh perm "$T/rootfs.tar"
proxy_faults '[{"path_re":"/blobs/uploads/","action":"status","status":500}]'
run push-perm "$SLIPWAY" image copy "oci:$T/perm:base" "docker://$PROXY/faults/perm:1"
assert_eq 1 "$RC" "exit status of a push whose uploads always fail"
[[ $ERR == *"${CONFIG#sha256:}"* || $ERR == *"${LAYER#sha256:}"* ]] ||
	fail "the error does not name the blob ($CONFIG or $LAYER): $ERR"
assert_contains "$ERR" "$PROXY" "error of the failed push"
assert_eq "" "$OUT" "stdout of the failed push"
assert_eq 404 "$(registry_manifest_code "$REG" faults/perm 1)" \
	"manifest faults/perm:1 straight from the registry"
assert_eq 404 "$(registry_manifest_code "$REG" faults/perm "$D")" \
	"manifest faults/perm@digest straight from the registry"

note "permanent 500 on the manifest PUT: the push fails and no tag appears"
fresh mperm "$T/rootfs.tar"
proxy_faults '[{"method":"PUT","path_re":"/manifests/","action":"status","status":500}]'
run push-mperm "$SLIPWAY" image copy "oci:$T/mperm:base" "docker://$PROXY/faults/mperm:1"
assert_eq 1 "$RC" "exit status of a push whose manifest PUT always fails"
assert_contains "$ERR" manifest "error of the failed manifest push"
assert_eq 404 "$(registry_manifest_code "$REG" faults/mperm 1)" \
	"manifest faults/mperm:1 straight from the registry"
proxy_faults '[]'

# ---------------------------------------------------------------- pulls

note "download of the big layer dropped mid-body twice: the pull completes, verified"
export SLIPWAY_STATE_DIR="$T/state-pullbig"
proxy_reset
proxy_faults "[{\"method\":\"GET\",\"path_re\":\"/blobs/$BIGLAYER\",
	\"action\":\"drop_mid_response\",\"times\":2}]"
run_ok pullbig "$SLIPWAY" image copy "docker://$PROXY/faults/big:1" "oci:$T/pulled-big:p"
assert_eq "$BIGD" "$OUT" "digest printed by the pull through dropped downloads"
assert_eq 2 "$(proxy_count faults)" "downloads dropped"
assert_eq "$BIGD" "$(layout_digest "$T/pulled-big" p)" "digest tagged after the pull"
layout_verify "$T/pulled-big"
for b in "$BIGD" $(layout_image_blobs "$T/big" "$BIGD"); do
	assert_file_eq "$(layout_blob_path "$T/big" "$b")" "$(layout_blob_path "$T/pulled-big" "$b")" \
		"blob $b pulled through dropped downloads"
done

note "a manifest whose bytes do not match its digest: the pull fails, nothing is tagged"
proxy_faults '[{"method":"GET","path_re":"/manifests/","action":"corrupt_body"}]'
export SLIPWAY_STATE_DIR="$T/state-corrupt"
run pull-bad-digest "$SLIPWAY" image copy \
	"docker://$PROXY/faults/big@$BIGD" "oci:$T/bad1:x"
assert_eq 1 "$RC" "exit status of a pull by digest of a corrupted manifest"
assert_contains "$ERR" digest "error of a pull by digest of a corrupted manifest"
assert_eq "" "$(layout_digest "$T/bad1" x)" "tag after a pull of a corrupted manifest"
run pull-bad-tag "$SLIPWAY" image copy "docker://$PROXY/faults/big:1" "oci:$T/bad2:x"
assert_eq 1 "$RC" "exit status of a pull by tag of a manifest not matching Docker-Content-Digest"
assert_contains "$ERR" digest "error of a pull by tag of a corrupted manifest"
assert_eq "" "$(layout_digest "$T/bad2" x)" "tag after a pull by tag of a corrupted manifest"
run pull-bad-store "$SLIPWAY" image copy "docker://$PROXY/faults/big:1" corrupted:x
assert_eq 1 "$RC" "exit status of a pull of a corrupted manifest into the default store"
run inspect-bad "$SLIPWAY" image inspect corrupted:x
[ "$RC" -ne 0 ] || fail "a failed pull left corrupted:x in the default store: $OUT"

note "a layer whose bytes do not match its digest: the pull fails, nothing is tagged"
proxy_faults "[{\"method\":\"GET\",\"path_re\":\"/blobs/$BIGLAYER\",\"action\":\"corrupt_body\"}]"
export SLIPWAY_STATE_DIR="$T/state-corrupt-blob"
run pull-bad-blob "$SLIPWAY" image copy "docker://$PROXY/faults/big:1" "oci:$T/bad3:x"
assert_eq 1 "$RC" "exit status of a pull of a corrupted layer"
assert_contains "$ERR" digest "error of a pull of a corrupted layer"
assert_contains "$ERR" "${BIGLAYER#sha256:}" "error of a pull of a corrupted layer"
assert_eq "" "$(layout_digest "$T/bad3" x)" "tag after a pull of a corrupted layer"
[ ! -d "$T/bad3" ] || layout_verify "$T/bad3"
proxy_faults '[]'

note "all passed"
