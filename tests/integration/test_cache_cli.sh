#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `slipway cache ls` and `slipway cache prune` on a state folder: an empty one (nothing listed,
# nothing created), then one holding images in the store and build cache entries (written here
# in the index's JSON format, pointing at real layer blobs): the table (most recently used
# first, short digests, relative times, CREATED BY cut to fit 100 columns, the totals), the JSON,
# prune with --keep-bytes (the oldest entry goes first, with its blob), prune of everything (a
# tagged image keeps its layer blob and stays whole), --help and usage errors.
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"
# shellcheck source=tests/integration/lib_rootfs.sh
source "$SW_TEST_SRCDIR/tests/integration/lib_rootfs.sh"

sw_tmpdir
state=$SLIPWAY_STATE_DIR

echo "== help and usage errors"
for args in "cache --help" "cache ls --help" "cache prune -h"; do
	# shellcheck disable=SC2086
	run_ok help "$SLIPWAY" $args
	assert_contains "$OUT" "usage: slipway cache" "$args"
done
run_fails bad "$SLIPWAY" cache prune --keep-bytes 10x
assert_eq 2 "$RC" "exit code of a bad size"
assert_contains "$ERR" "unknown unit 'x'"
run_fails bad "$SLIPWAY" cache ls extra
assert_eq 2 "$RC" "exit code of an extra argument"
run_fails bad "$SLIPWAY" cache frobnicate
assert_contains "$ERR" "unknown cache command 'frobnicate'"

echo "== an empty state folder"
run_ok ls "$SLIPWAY" cache ls
assert_contains "$OUT" "KEY"
assert_contains "$OUT" "total: 0 entries"
run_ok ls "$SLIPWAY" cache ls --json
assert_eq 0 "$(json_get 'len(d["entries"])' "$T/ls.out")" "entries"
run_ok prune "$SLIPWAY" cache prune
assert_contains "$OUT" "removed 0 entries"
[ ! -e "$state/cache" ] || fail "ls and prune created $state/cache"

echo "== a store with images and a cache with entries"
sw_make_busybox_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" base:1
run_ok inspect "$SLIPWAY" image inspect base:1
base_blob=$(json_get 'd["layers"][0]["digest"]' "$T/inspect.out")
base_diff=$(json_get 'd["layers"][0]["diffID"]' "$T/inspect.out")
base_size=$(json_get 'd["layers"][0]["size"]' "$T/inspect.out")
base_mt=$(json_get 'd["layers"][0]["mediaType"]' "$T/inspect.out")

# two layers that no image uses: imported into a side layout, their blobs copied into the store
layer_of() { # NAME CONTENT -> sets L_BLOB L_DIFF L_SIZE
	mkdir -p "$T/src-$1"
	printf '%s\n' "$2" >"$T/src-$1/file-$1"
	tar -C "$T/src-$1" -cf "$T/$1.tar" .
	run_ok "import-$1" "$SLIPWAY" image import "$T/$1.tar" "oci:$T/side:$1"
	run_ok "inspect-$1" "$SLIPWAY" image inspect "oci:$T/side:$1"
	L_BLOB=$(json_get 'd["layers"][0]["digest"]' "$T/inspect-$1.out")
	L_DIFF=$(json_get 'd["layers"][0]["diffID"]' "$T/inspect-$1.out")
	L_SIZE=$(json_get 'd["layers"][0]["size"]' "$T/inspect-$1.out")
	cp "$T/side/blobs/sha256/${L_BLOB#sha256:}" "$state/store/blobs/sha256/"
}
layer_of one "first layer"
one_blob=$L_BLOB one_diff=$L_DIFF one_size=$L_SIZE
layer_of two "second layer"
two_blob=$L_BLOB two_diff=$L_DIFF two_size=$L_SIZE

mkdir -p "$state/cache/index"
now=$(date +%s)
put_entry() { # SEED BLOB DIFF SIZE MEDIATYPE AGE CREATED_BY -> prints the key
	local key
	key="sha256:$(printf '%s' "$1" | sha256sum | cut -d' ' -f1)"
	python3 - "$state/cache/index/${key#sha256:}.json" "$key" "$2" "$3" "$4" "$5" \
		"$((now - $6))" "$7" <<'EOF'
import json, sys
p, key, blob, diff, size, mt, used, by = sys.argv[1:]
with open(p, "w") as f:
    json.dump({"key": key, "diffID": diff,
               "blob": {"mediaType": mt, "digest": blob, "size": int(size)},
               "createdBy": by, "created": int(used) - 60, "lastUsed": int(used)}, f)
EOF
	echo "$key"
}
long_by=$'RUN /bin/sh -c set -e; apt-get update && apt-get install -y --no-install-recommends build-essential\n  curl git'
k_base=$(put_entry base "$base_blob" "$base_diff" "$base_size" "$base_mt" 7200 "FROM base:1")
k_one=$(put_entry one "$one_blob" "$one_diff" "$one_size" application/vnd.oci.image.layer.v1.tar+gzip 90000 "COPY one /")
k_two=$(put_entry two "$two_blob" "$two_diff" "$two_size" application/vnd.oci.image.layer.v1.tar+gzip 300 "$long_by")

run_ok ls "$SLIPWAY" cache ls
note "$OUT"
mapfile -t lines <"$T/ls.out"
assert_eq 5 "${#lines[@]}" "lines of cache ls (header, 3 entries, total)"
assert_contains "${lines[0]}" "CREATED BY"
assert_contains "${lines[1]}" "sha256:${k_two:7:12}"
assert_contains "${lines[1]}" "sha256:${two_blob:7:12}"
assert_contains "${lines[1]}" "5 minutes ago"
assert_contains "${lines[1]}" "RUN /bin/sh -c set -e;"
assert_contains "${lines[1]}" "..."
assert_contains "${lines[2]}" "sha256:${k_base:7:12}"
assert_contains "${lines[2]}" "2 hours ago"
assert_contains "${lines[2]}" "FROM base:1"
assert_contains "${lines[3]}" "sha256:${k_one:7:12}"
assert_contains "${lines[3]}" "1 day ago"
for l in "${lines[@]}"; do
	[ "${#l}" -le 100 ] || fail "line wider than 100 columns: '$l'"
done
assert_contains "${lines[4]}" "total: 3 entries"

run_ok ls "$SLIPWAY" cache ls --json
assert_eq 3 "$(json_get 'len(d["entries"])' "$T/ls.out")" "entries"
assert_eq "$k_two" "$(json_get 'd["entries"][0]["key"]' "$T/ls.out")" "first entry"
assert_eq "$long_by" "$(json_get 'd["entries"][0]["createdBy"]' "$T/ls.out")" "createdBy"
assert_eq "$two_diff" "$(json_get 'd["entries"][0]["diffID"]' "$T/ls.out")" "diffID"
assert_eq "$k_one" "$(json_get 'd["entries"][2]["key"]' "$T/ls.out")" "last entry"
assert_eq "$((base_size + one_size + two_size))" \
	"$(json_get 'd["usage"]["blobBytes"]' "$T/ls.out")" "blobBytes"
[[ $(json_get 'd["entries"][0]["lastUsed"]' "$T/ls.out") =~ ^20[0-9-]+T[0-9:]+Z$ ]] ||
	fail "lastUsed is not RFC 3339"

echo "== prune --keep-bytes: the least recently used goes first"
run_ok prune "$SLIPWAY" cache prune --keep-bytes "$((base_size + two_size))"
note "$OUT"
assert_contains "$OUT" "removed entry     $k_one"
assert_contains "$OUT" "removed blob      $one_blob"
assert_contains "$OUT" "removed 1 entry, 1 layer blob"
[ ! -e "$state/store/blobs/sha256/${one_blob#sha256:}" ] || fail "blob of the pruned entry is still there"
[ ! -e "$state/cache/index/${k_one#sha256:}.json" ] || fail "pruned entry still there"
[ -e "$state/cache/index/${k_two#sha256:}.json" ] || fail "entry two was pruned"

echo "== prune everything: the tagged image keeps its layer"
run_ok prune "$SLIPWAY" cache prune
note "$OUT"
assert_contains "$OUT" "removed 2 entries, 1 layer blob"
assert_contains "$OUT" "the cache holds 0B"
[ -e "$state/store/blobs/sha256/${base_blob#sha256:}" ] || fail "the tagged image lost its layer"
[ ! -e "$state/store/blobs/sha256/${two_blob#sha256:}" ] || fail "blob two is still there"
run_ok inspect "$SLIPWAY" image inspect base:1
run_ok ls "$SLIPWAY" cache ls
assert_contains "$OUT" "total: 0 entries"
[ -z "$(ls -A "$state/cache/tmp")" ] || fail "leftovers in cache/tmp: $(ls -A "$state/cache/tmp")"
echo "PASS"
