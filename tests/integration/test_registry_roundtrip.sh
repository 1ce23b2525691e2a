#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Push, pull and registry-to-registry copy against the real distribution registry, checked with
# independent tools: a busybox rootfs imported by slipway is pushed (skopeo inspect reads it with
# the same digest), pulled back into a new layout (same manifest digest, identical blobs, umoci
# unpacks it and bin/busybox is the right file), images that skopeo pushed (Docker schema 2,
# zstd) are pulled by slipway, and a fault proxy counts the requests to show that pushing an
# unchanged image uploads nothing and that a push to a second repository mounts the blobs.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

sw_tmpdir
start_registry plain
start_faultproxy
REG=$REGISTRY

note "import a busybox rootfs"
rootfs_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" "oci:$T/src:base"
D=$(layout_digest "$T/src" base)
[ -n "$D" ] || fail "import left no 'base' tag in $T/src/index.json"
mapfile -t BLOBS < <(layout_image_blobs "$T/src" "$D")
assert_eq 2 "${#BLOBS[@]}" "blobs (config + one layer) of the imported image"

note "push (oci -> docker://) through the counting proxy"
run_ok push "$SLIPWAY" image copy "oci:$T/src:base" "docker://$PROXY/itest/busybox:1"
assert_eq "$D" "$OUT" "digest printed by the push"
assert_contains "$ERR" "copied" "push summary"
assert_eq 2 "$(summary_num "$ERR" uploaded)" "blobs uploaded by the first push"
assert_eq 0 "$(summary_num "$ERR" "already present")" "blobs already present at the first push"
assert_eq 1 "$(proxy_count "PUT manifest")" "manifest PUTs of the first push"

note "skopeo reads what slipway pushed"
skopeo inspect --tls-verify=false "docker://$REG/itest/busybox:1" >"$T/skopeo-inspect.json" ||
	fail "skopeo inspect of the pushed image failed"
assert_eq "$D" "$(json_get "d['Digest']" "$T/skopeo-inspect.json")" "digest seen by skopeo"
assert_eq "${BLOBS[1]}" "$(json_get "d['Layers'][0]" "$T/skopeo-inspect.json")" \
	"layer seen by skopeo"
skopeo inspect --raw --tls-verify=false "docker://$REG/itest/busybox:1" >"$T/raw-manifest"
assert_file_eq "$(layout_blob_path "$T/src" "$D")" "$T/raw-manifest" "pushed manifest bytes"
assert_eq "$D" "$(registry_manifest_digest "$REG" itest/busybox 1)" "registry's digest"

note "pull (docker:// -> oci:) into a new layout"
run_ok pull "$SLIPWAY" image copy "docker://$PROXY/itest/busybox:1" "oci:$T/pulled:p"
assert_eq "$D" "$OUT" "digest printed by the pull"
assert_eq "$D" "$(layout_digest "$T/pulled" p)" "digest tagged in the pulled layout"
for b in "$D" "${BLOBS[@]}"; do
	assert_file_eq "$(layout_blob_path "$T/src" "$b")" "$(layout_blob_path "$T/pulled" "$b")" \
		"blob $b after push and pull"
done
layout_verify "$T/pulled"
[ "$(summary_num "$ERR" downloaded)" -ge 2 ] || fail "pull summary: fewer than 2 downloads: $ERR"

note "umoci unpacks the pulled layout"
rootless=()
[ "$(id -u)" -eq 0 ] || rootless=(--rootless)
umoci unpack "${rootless[@]}" --image "$T/pulled:p" "$T/bundle" >"$T/umoci.log" 2>&1 ||
	fail "umoci unpack failed: $(cat "$T/umoci.log")"
assert_file_eq "$ROOTFS_BUSYBOX" "$T/bundle/rootfs/bin/busybox" "bin/busybox after the round trip"

note "pull by digest"
run_ok pull-digest "$SLIPWAY" image copy "docker://$PROXY/itest/busybox@$D" "oci:$T/bydigest:d"
assert_eq "$D" "$OUT" "digest printed by the pull by digest"
assert_eq "$D" "$(layout_digest "$T/bydigest" d)" "digest tagged after the pull by digest"

note "slipway pulls a Docker schema 2 image that skopeo pushed"
skopeo copy --quiet --policy "$SKOPEO_POLICY" --dest-tls-verify=false --format v2s2 \
	"oci:$T/src:base" "docker://$REG/itest/from-skopeo:v2s2" >"$T/skopeo-copy.log" 2>&1 ||
	fail "skopeo copy --format v2s2 failed: $(cat "$T/skopeo-copy.log")"
skopeo inspect --tls-verify=false "docker://$REG/itest/from-skopeo:v2s2" >"$T/sk2.json"
D2=$(json_get "d['Digest']" "$T/sk2.json")
assert_ne "$D" "$D2" "digest of the Docker schema 2 manifest"
run_ok pull-v2s2 "$SLIPWAY" image copy "docker://$PROXY/itest/from-skopeo:v2s2" \
	"oci:$T/v2s2:s"
assert_eq "$D2" "$OUT" "digest printed by the pull of skopeo's image"
assert_eq "$D2" "$(layout_digest "$T/v2s2" s)" "digest tagged after pulling skopeo's image"
assert_eq application/vnd.docker.distribution.manifest.v2+json \
	"$(layout_media_type "$T/v2s2" "$D2")" "media type of the pulled manifest"
layout_verify "$T/v2s2"
# ... and into the default store, where `image inspect` shows it.
run_ok pull-store "$SLIPWAY" image copy "docker://$PROXY/itest/from-skopeo:v2s2" fromskopeo:v2s2
assert_eq "$D2" "$OUT" "digest printed by the pull into the default store"
run_ok inspect "$SLIPWAY" image inspect fromskopeo:v2s2
python3 -c 'import json,sys; json.loads(sys.stdin.read())' <<<"$OUT" ||
	fail "image inspect did not print JSON: $OUT"
assert_contains "$OUT" "$D2" "image inspect output"
for l in $(json_get "' '.join(d['Layers'])" "$T/sk2.json"); do
	assert_contains "$OUT" "$l" "image inspect output (layer)"
done
assert_contains "$OUT" application/vnd.docker.image.rootfs.diff.tar.gzip \
	"image inspect output (layer media type)"

note "slipway pulls a zstd-compressed OCI image that skopeo made and pushed"
if skopeo copy --quiet --policy "$SKOPEO_POLICY" --dest-compress-format zstd \
	--dest-compress "oci:$T/src:base" "oci:$T/sk-zstd:z" >"$T/skopeo-zstd.log" 2>&1 &&
	skopeo copy --quiet --policy "$SKOPEO_POLICY" --dest-tls-verify=false --preserve-digests \
		"oci:$T/sk-zstd:z" "docker://$REG/itest/from-skopeo-zstd:1" >>"$T/skopeo-zstd.log" 2>&1
then
	D3=$(skopeo inspect --tls-verify=false "docker://$REG/itest/from-skopeo-zstd:1" |
		json_get "d['Digest']")
	assert_eq "$D3" "$(layout_digest "$T/sk-zstd" z)" "digest of skopeo's zstd image"
	run_ok pull-zstd "$SLIPWAY" image copy "docker://$PROXY/itest/from-skopeo-zstd:1" \
		"oci:$T/zstd:z"
	assert_eq "$D3" "$OUT" "digest printed by the pull of the zstd image"
	assert_contains "$(cat "$(layout_blob_path "$T/zstd" "$D3")")" "tar+zstd" \
		"zstd manifest as pulled"
	layout_verify "$T/zstd"
else
	note "skopeo cannot write zstd here; skipped: $(tail -n 3 "$T/skopeo-zstd.log")"
fi

note "registry -> registry: another repository and another registry"
run_ok r2r "$SLIPWAY" image copy "docker://$PROXY/itest/busybox:1" "docker://$PROXY/itest/copy:2"
assert_eq "$D" "$OUT" "digest printed by the registry to registry copy"
assert_eq "$D" "$(skopeo inspect --tls-verify=false "docker://$REG/itest/copy:2" |
	json_get "d['Digest']")" "digest of the copy seen by skopeo"
start_registry plain
REG2=$REGISTRY
run_ok r2r-other "$SLIPWAY" image copy "docker://$PROXY/itest/busybox:1" \
	"docker://$REG2/elsewhere/busybox:3"
assert_eq "$D" "$OUT" "digest printed by the copy to another registry"
skopeo copy --quiet --policy "$SKOPEO_POLICY" --src-tls-verify=false \
	"docker://$REG2/elsewhere/busybox:3" "oci:$T/from-reg2:x" >"$T/skopeo-reg2.log" 2>&1 ||
	fail "skopeo could not pull the copy from the second registry: $(cat "$T/skopeo-reg2.log")"
for b in "${BLOBS[@]}"; do
	assert_file_eq "$(layout_blob_path "$T/src" "$b")" "$(layout_blob_path "$T/from-reg2" "$b")" \
		"blob $b copied registry to registry"
done

note "pushing the unchanged image again uploads no blob"
proxy_reset
run_ok push-again "$SLIPWAY" image copy "oci:$T/src:base" "docker://$PROXY/itest/busybox:1"
assert_eq "$D" "$OUT" "digest printed by the second push"
assert_eq 0 "$(summary_num "$ERR" uploaded)" "blobs uploaded by the second push"
assert_eq 2 "$(summary_num "$ERR" "already present")" "blobs already present at the second push"
assert_eq 0 "$(proxy_count "POST upload")" "POSTs to /blobs/uploads/ in the second push"
assert_eq 0 "$(proxy_count "PATCH upload")" "PATCHes to /blobs/uploads/ in the second push"
assert_eq 0 "$(proxy_count "PUT upload")" "PUTs to /blobs/uploads/ in the second push"

note "pushing to a second repository of the same registry mounts the blobs"
proxy_reset
run_ok push-mount "$SLIPWAY" image copy "oci:$T/src:base" "docker://$PROXY/itest/mounted:1"
assert_eq "$D" "$OUT" "digest printed by the push to a second repository"
assert_eq 2 "$(summary_num "$ERR" mounted)" "blobs mounted by the push to a second repository"
assert_eq 0 "$(summary_num "$ERR" uploaded)" "blobs uploaded by the push to a second repository"
[ "$(proxy_count mounts)" -ge 2 ] || fail "no POST ...?mount= seen: $(proxy_stats)"
assert_eq 0 "$(proxy_count "PATCH upload")" "PATCHes in the mounting push"
assert_eq 0 "$(proxy_count "PUT upload")" "PUTs to /blobs/uploads/ in the mounting push"
assert_eq "$D" "$(registry_manifest_digest "$REG" itest/mounted 1)" "digest in the second repo"
for b in "${BLOBS[@]}"; do
	assert_eq 200 "$(registry_blob_code "$REG" itest/mounted "$b")" "blob $b in itest/mounted"
done

note "all passed"
