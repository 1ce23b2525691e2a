#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# OCI image layouts written by slipway, checked with independent tools: a busybox root filesystem
# tarball is imported with `slipway image import`, then `umoci unpack` must give back the same
# files and `skopeo inspect` the same digest; `slipway image inspect` and `image ls` describe it;
# SOURCE_DATE_EPOCH makes imports reproducible; the default store under SLIPWAY_STATE_DIR works;
# a hostile tarball (a "../" entry) is refused with a message naming the entry.
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"

sw_tmpdir
tmp=$T
unset SOURCE_DATE_EPOCH
export SLIPWAY_STATE_DIR=$tmp/state-unused

sw_make_busybox_tar "$tmp/rootfs.tar"

echo "== import into an OCI layout"
digest=$("$SLIPWAY" image import "$tmp/rootfs.tar" "oci:$tmp/layout:bb")
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || fail "import printed '$digest', not a digest"
[ -f "$tmp/layout/oci-layout" ] || fail "no oci-layout file"
[ -f "$tmp/layout/blobs/sha256/${digest#sha256:}" ] || fail "manifest blob missing"

echo "== umoci unpacks it"
umoci unpack --rootless --image "$tmp/layout:bb" "$tmp/bundle" >"$tmp/umoci.log" 2>&1 ||
	{ cat "$tmp/umoci.log" >&2; fail "umoci unpack failed"; }
rootfs=$tmp/bundle/rootfs
assert_eq "$(sha256sum </bin/busybox | cut -d' ' -f1)" \
	"$(sha256sum <"$rootfs/bin/busybox" | cut -d' ' -f1)" "bin/busybox content"
[ -x "$rootfs/bin/busybox" ] || fail "bin/busybox is not executable"
[ -L "$rootfs/bin/sh" ] || fail "bin/sh is not a symlink"
assert_eq busybox "$(readlink "$rootfs/bin/sh")" "bin/sh target"
assert_eq busybox "$(readlink "$rootfs/bin/cat")" "bin/cat target"
assert_eq "$SW_TEST_PASSWD" "$(cat "$rootfs/etc/passwd")" "etc/passwd"
assert_eq 1777 "$(stat -c %a "$rootfs/tmp")" "tmp mode"
assert_eq "$(wc -l < <(busybox --list | grep -v -e '^busybox$' -e /))" \
	"$(find "$rootfs/bin" -type l | wc -l)" "number of applet symlinks"

echo "== skopeo reads it"
skopeo inspect "oci:$tmp/layout:bb" >"$tmp/skopeo.json"
assert_eq "$digest" "$(sw_json "$tmp/skopeo.json" Digest)" "skopeo digest"
assert_eq linux "$(sw_json "$tmp/skopeo.json" Os)" "skopeo os"
skopeo inspect --raw "oci:$tmp/layout:bb" >"$tmp/skopeo-raw.json"
assert_eq "${digest#sha256:}" "$(sha256sum <"$tmp/skopeo-raw.json" | cut -d' ' -f1)" \
	"skopeo raw manifest digest"

echo "== slipway image inspect"
"$SLIPWAY" image inspect "oci:$tmp/layout:bb" >"$tmp/inspect.json"
assert_eq "$digest" "$(sw_json "$tmp/inspect.json" digest)" "inspect digest"
assert_eq "oci:$tmp/layout:bb" "$(sw_json "$tmp/inspect.json" name)" "inspect name"
assert_eq application/vnd.oci.image.manifest.v1+json \
	"$(sw_json "$tmp/inspect.json" mediaType)" "inspect mediaType"
layer=$(sw_json "$tmp/inspect.json" layers.0.digest)
diff_id=sha256:$(gzip -dc <"$tmp/layout/blobs/sha256/${layer#sha256:}" | sha256sum | cut -d' ' -f1)
assert_eq "$diff_id" "$(sw_json "$tmp/inspect.json" layers.0.diffID)" "inspect diffID"
assert_eq "$diff_id" "$(sw_json "$tmp/inspect.json" config.rootfs.diff_ids.0)" "config diff_id"
assert_eq "$(sw_json "$tmp/skopeo.json" Architecture)" \
	"$(sw_json "$tmp/inspect.json" config.architecture)" "architecture"
assert_eq "linux/$(sw_json "$tmp/skopeo.json" Architecture)" \
	"$(sw_json "$tmp/inspect.json" platform)" "platform"
assert_eq '["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]' \
	"$(sw_json "$tmp/inspect.json" config.config.Env)" "config Env"
assert_eq "slipway image import rootfs.tar" \
	"$(sw_json "$tmp/inspect.json" config.history.0.created_by)" "history"
assert_eq "$layer" "$(sw_json "$tmp/inspect.json" manifest.layers.0.digest)" "manifest"
# --raw gives the stored bytes: they hash to the digest
"$SLIPWAY" image inspect --raw "oci:$tmp/layout:bb" >"$tmp/raw.json"
assert_eq "${digest#sha256:}" "$(sha256sum <"$tmp/raw.json" | cut -d' ' -f1)" "raw bytes"
cmp -s "$tmp/raw.json" "$tmp/skopeo-raw.json" || fail "--raw differs from skopeo's raw manifest"

echo "== slipway image ls"
out=$("$SLIPWAY" image ls "oci:$tmp/layout")
echo "$out"
assert_eq "NAME" "$(head -1 <<<"$out" | awk '{print $1}')" "ls header"
line=$(grep '^bb ' <<<"$out") || fail "ls does not list bb"
assert_contains "$line" "sha256:${digest:7:12} " "ls digest column"
assert_contains "$line" "linux/" "ls platform column"
assert_eq bb "$("$SLIPWAY" image ls --quiet "oci:$tmp/layout")" "ls --quiet"
"$SLIPWAY" image ls --json "oci:$tmp/layout" >"$tmp/ls.json"
assert_eq "$digest" "$(sw_json "$tmp/ls.json" 0.digest)" "ls --json digest"
size=$(sw_json "$tmp/ls.json" 0.size)
want_size=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))
print(m["config"]["size"] + sum(l["size"] for l in m["layers"]))' "$tmp/raw.json")
assert_eq "$want_size" "$size" "ls --json size"

echo "== a second tag, retagging, zstd"
d2=$("$SLIPWAY" image import --compression zstd --platform linux/arm64/v8 "$tmp/rootfs.tar" \
	"oci:$tmp/layout:bb-arm")
[ "$d2" != "$digest" ] || fail "a different platform gave the same digest"
"$SLIPWAY" image inspect "oci:$tmp/layout:bb-arm" >"$tmp/arm.json"
assert_eq linux/arm64/v8 "$(sw_json "$tmp/arm.json" platform)" "arm64 platform"
assert_eq application/vnd.oci.image.layer.v1.tar+zstd \
	"$(sw_json "$tmp/arm.json" layers.0.mediaType)" "zstd layer"
assert_eq "$diff_id" "$(sw_json "$tmp/arm.json" layers.0.diffID)" "zstd diffID"
skopeo inspect --raw "oci:$tmp/layout:bb-arm" >/dev/null || fail "skopeo cannot read bb-arm"

echo "== an index (written by another tool) over both"
ix=$(python3 - "$tmp/layout" "$digest" "$d2" <<'EOF'
import hashlib, json, os, sys
layout, amd, arm = sys.argv[1:]
def size(d):
    return os.path.getsize(os.path.join(layout, "blobs/sha256", d[7:]))
mt = "application/vnd.oci.image.manifest.v1+json"
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [
             {"mediaType": mt, "digest": amd, "size": size(amd),
              "platform": {"os": "linux", "architecture": "amd64"}},
             {"mediaType": mt, "digest": arm, "size": size(arm),
              "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}
raw = json.dumps(index, indent=1).encode()
d = "sha256:" + hashlib.sha256(raw).hexdigest()
with open(os.path.join(layout, "blobs/sha256", d[7:]), "wb") as f:
    f.write(raw)
with open(os.path.join(layout, "index.json")) as f:
    top = json.load(f)
top["manifests"].append({"mediaType": index["mediaType"], "digest": d, "size": len(raw),
                         "annotations": {"org.opencontainers.image.ref.name": "multi"}})
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(top, f)
print(d)
EOF
)
"$SLIPWAY" image inspect --platform linux/amd64 "oci:$tmp/layout:multi" >"$tmp/multi.json"
assert_eq "$digest" "$(sw_json "$tmp/multi.json" digest)" "index narrowed to amd64"
assert_eq "$ix" "$(sw_json "$tmp/multi.json" indexDigest)" "indexDigest"
"$SLIPWAY" image inspect --platform linux/arm64 "oci:$tmp/layout:multi" >"$tmp/multi-arm.json"
assert_eq "$d2" "$(sw_json "$tmp/multi-arm.json" digest)" "index narrowed to arm64"
assert_eq linux/arm64/v8 "$(sw_json "$tmp/multi-arm.json" platform)" "arm64 from the index"
assert_eq "${ix#sha256:}" \
	"$("$SLIPWAY" image inspect --raw "oci:$tmp/layout:multi" | sha256sum | cut -d' ' -f1)" \
	"--raw of an index"
assert_eq "${d2#sha256:}" "$("$SLIPWAY" image inspect --raw --platform linux/arm64/v8 \
	"oci:$tmp/layout:multi" | sha256sum | cut -d' ' -f1)" "--raw --platform of an index"
rc=0
"$SLIPWAY" image inspect --platform linux/s390x "oci:$tmp/layout:multi" 2>"$tmp/s390x.err" ||
	rc=$?
assert_eq 1 "$rc" "exit code of a platform the index lacks"
assert_contains "$(cat "$tmp/s390x.err")" "linux/arm64" "the error lists the platforms"
line=$("$SLIPWAY" image ls "oci:$tmp/layout" | grep '^multi ') || fail "ls does not list multi"
assert_contains "$line" "sha256:${ix:7:12} " "ls index digest"
assert_contains "$line" "linux/amd64,linux/arm64/v8" "ls index platforms"
assert_eq "$ix" "$(skopeo inspect --raw "oci:$tmp/layout:multi" | sha256sum |
	sed 's/^/sha256:/; s/ .*//')" "skopeo reads the index"
# drop it again so that the counts below stay simple
python3 - "$tmp/layout" <<'EOF'
import json, os, sys
p = os.path.join(sys.argv[1], "index.json")
top = json.load(open(p))
top["manifests"] = [m for m in top["manifests"]
                    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != "multi"]
json.dump(top, open(p, "w"))
EOF
"$SLIPWAY" image import --compression none "$tmp/rootfs.tar" "oci:$tmp/layout:bb-arm" >/dev/null
assert_eq 2 "$("$SLIPWAY" image ls --quiet "oci:$tmp/layout" | wc -l)" "retag replaces"
umoci unpack --rootless --image "$tmp/layout:bb-arm" "$tmp/bundle2" >/dev/null 2>&1 ||
	fail "umoci cannot unpack the uncompressed layer"
cmp -s "$tmp/bundle2/rootfs/bin/busybox" /bin/busybox || fail "bundle2 busybox differs"

echo "== reproducible with SOURCE_DATE_EPOCH"
a=$(SOURCE_DATE_EPOCH=1700000000 "$SLIPWAY" image import "$tmp/rootfs.tar" "oci:$tmp/repro:a")
sleep 1
b=$(SOURCE_DATE_EPOCH=1700000000 "$SLIPWAY" image import "$tmp/rootfs.tar" "oci:$tmp/repro2:b")
assert_eq "$a" "$b" "digests of two imports with SOURCE_DATE_EPOCH"
"$SLIPWAY" image inspect "oci:$tmp/repro:a" >"$tmp/repro.json"
assert_eq 2023-11-14T22:13:20Z "$(sw_json "$tmp/repro.json" config.created)" "created"

echo "== the default store"
export SLIPWAY_STATE_DIR=$tmp/state
empty=$("$SLIPWAY" image ls)
assert_eq 1 "$(wc -l <<<"$empty")" "an empty store prints only the header"
assert_contains "$empty" "NAME" "empty ls header"
[ ! -e "$tmp/state/store" ] || fail "ls created the store"
d3=$("$SLIPWAY" image import "$tmp/rootfs.tar" busybox:1)
[ -f "$tmp/state/store/oci-layout" ] || fail "the default store is not under SLIPWAY_STATE_DIR"
"$SLIPWAY" image ls | grep -q "^busybox:1 .*sha256:${d3:7:12}" || fail "image ls misses busybox:1"
"$SLIPWAY" image inspect busybox:1 >"$tmp/def.json"
assert_eq "$d3" "$(sw_json "$tmp/def.json" digest)" "inspect from the default store"
"$SLIPWAY" image inspect "$d3" >/dev/null || fail "inspect by digest"
d4=$("$SLIPWAY" image import "$tmp/rootfs.tar" busybox)
"$SLIPWAY" image ls --quiet | grep -qx "busybox:latest" || fail "NAME without a tag is :latest"
skopeo inspect "oci:$tmp/state/store:busybox:latest" >"$tmp/skopeo-def.json"
assert_eq "$d4" "$(sw_json "$tmp/skopeo-def.json" Digest)" "skopeo on the default store"
# --state-dir wins over the environment
"$SLIPWAY" --state-dir "$tmp/state2" image import "$tmp/rootfs.tar" other:1 >/dev/null
[ -f "$tmp/state2/store/oci-layout" ] || fail "--state-dir was not used"

echo "== a hostile tarball is refused"
python3 - "$tmp/evil.tar" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for name, data in (("ok.txt", b"fine\n"), ("../evil.txt", b"escaped\n")):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
EOF
rc=0
"$SLIPWAY" image import "$tmp/evil.tar" "oci:$tmp/evil-layout:x" >"$tmp/evil.out" 2>"$tmp/evil.err" ||
	rc=$?
assert_eq 1 "$rc" "exit code of a hostile import"
err=$(cat "$tmp/evil.err")
assert_contains "$err" "slipway: error:" "hostile import message"
assert_contains "$err" "../evil.txt" "hostile import names the entry"
[ ! -s "$tmp/evil.out" ] || fail "a failed import printed a digest"
[ ! -e "$tmp/evil.txt" ] || fail "the hostile entry was written"
rc=0
"$SLIPWAY" image inspect "oci:$tmp/evil-layout:x" 2>/dev/null || rc=$?
assert_eq 1 "$rc" "a failed import leaves no tag"

echo "== usage and errors"
"$SLIPWAY" image import --help | grep -q "^usage: slipway image import" || fail "import --help"
"$SLIPWAY" image inspect --help | grep -q "^usage: slipway image inspect" || fail "inspect --help"
"$SLIPWAY" image ls --help | grep -q "^usage: slipway image ls" || fail "ls --help"
for args in "import" "import $tmp/rootfs.tar" "import --bogus a b" "import --compression lz4 a b" \
	"import --platform nope a b" "inspect" "inspect a b" "ls a" "ls --bogus" "ls oci:a oci:b"; do
	rc=0
	# shellcheck disable=SC2086
	"$SLIPWAY" image $args >/dev/null 2>"$tmp/usage.err" || rc=$?
	assert_eq 2 "$rc" "exit code of 'image $args'"
	grep -q "^slipway: error: " "$tmp/usage.err" || fail "'image $args' printed no error"
done
rc=0
"$SLIPWAY" image import "$tmp/rootfs.tar" docker://127.0.0.1:5000/bb:1 2>"$tmp/docker.err" || rc=$?
assert_eq 2 "$rc" "exit code of an import into docker://"
assert_contains "$(cat "$tmp/docker.err")" "slipway image copy" "docker:// import hint"
rc=0
"$SLIPWAY" image inspect "oci:$tmp/layout:nope" 2>"$tmp/nf.err" || rc=$?
assert_eq 1 "$rc" "exit code of inspecting a missing tag"
assert_contains "$(cat "$tmp/nf.err")" "image 'nope' not found in $tmp/layout" "not found"
rc=0
"$SLIPWAY" image ls "oci:$tmp/nowhere" 2>"$tmp/nw.err" || rc=$?
assert_eq 1 "$rc" "exit code of ls on a missing layout"
assert_contains "$(cat "$tmp/nw.err")" "$tmp/nowhere" "ls error names the folder"
rc=0
"$SLIPWAY" image import "$tmp/missing.tar" "oci:$tmp/layout:m" 2>"$tmp/miss.err" || rc=$?
assert_eq 1 "$rc" "exit code of importing a missing file"
assert_contains "$(cat "$tmp/miss.err")" "missing.tar" "missing tarball named"

echo "== other tools tolerate slipway's private files in the layout"
[ -d "$tmp/layout/.slipway" ] || fail "expected the .slipway folder in the layout"
umoci gc --layout "$tmp/layout" || fail "umoci gc failed on a slipway layout"
"$SLIPWAY" image inspect "oci:$tmp/layout:bb" >/dev/null || fail "inspect after umoci gc"
umoci tag --image "$tmp/layout:bb" bb-umoci || fail "umoci tag failed"
"$SLIPWAY" image inspect "oci:$tmp/layout:bb-umoci" >"$tmp/umoci-tag.json"
assert_eq "$digest" "$(sw_json "$tmp/umoci-tag.json" digest)" "a tag umoci wrote"
skopeo copy -q "oci:$tmp/layout:bb" "oci:$tmp/layout:bb-skopeo" || fail "skopeo copy failed"
"$SLIPWAY" image import "$tmp/rootfs.tar" "oci:$tmp/layout:after-skopeo" >/dev/null
"$SLIPWAY" image inspect "oci:$tmp/layout:bb-skopeo" >"$tmp/sk-tag.json"
assert_eq "$digest" "$(sw_json "$tmp/sk-tag.json" digest)" "a tag skopeo wrote"

echo "PASS"
