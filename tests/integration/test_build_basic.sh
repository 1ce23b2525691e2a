#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `slipway build` end to end, with runc and overlayfs, checked by independent tools. A busybox
# base image is imported; a Dockerfile with COPY, RUN (writes files, deletes /bin/ls from the
# base), ARG, ENV, WORKDIR, COPY --chown, USER and CMD builds; `umoci unpack` of the
# --output layout shows the new files, /bin/ls gone and the owners; the config has Env,
# WorkingDir, User and Cmd. Then the cache: a second build is all CACHED (no container runs)
# with the same digest; touching a file keeps the cache; changing its bytes re-runs from its
# COPY on and not before; a changed --build-arg re-runs from its first use. A failing RUN
# exits 1 with its exit code and output; a build killed with SIGKILL in the middle of a RUN is
# cleaned up by the next one; SOURCE_DATE_EPOCH gives the same digest on two empty caches;
# --push reaches a real registry (skopeo inspect), and --cache-to / --cache-from let an empty
# cache reuse the layers. After every build: no mounts, no runc containers, no scratch folders.
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"

sw_tmpdir
unset SOURCE_DATE_EPOCH SLIPWAY_CACHE_MAX_BYTES

# If the test fails half-way, nothing of a build may outlive it: containers first, then mounts.
build_cleanup() {
	local root st
	for st in "$T"/state*; do
		root=$st/exec/runtime/runc
		[ -d "$root" ] || continue
		for c in $(runc --root "$root" list -q 2>/dev/null); do
			runc --root "$root" delete -f "$c" >/dev/null 2>&1 || true
		done
	done
	{ grep -F " $T/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	return 0
}
trap 'rc=$?; build_cleanup; (exit $rc); sw_cleanup' EXIT

use_state() {
	export SLIPWAY_STATE_DIR=$T/$1
}

# assert_clean: nothing of a build is left in the state folder.
assert_clean() {
	local st=$SLIPWAY_STATE_DIR
	if grep -F " $T/" /proc/self/mounts >"$T/mounts.left"; then
		fail "mounts left behind: $(cat "$T/mounts.left")"
	fi
	local left
	left=$(runc --root "$st/exec/runtime/runc" list -q 2>/dev/null || true)
	[ -z "$left" ] || fail "runc containers left behind: $left"
	left=$(ls -A "$st/cache/tmp" 2>/dev/null || true)
	[ -z "$left" ] || fail "scratch folders left in cache/tmp: $left"
	local f
	for f in "$st"/exec/* "$st"/exec/.[!.]*; do
		[ -e "$f" ] || continue
		[ "${f##*/}" = runtime ] || fail "container folder left in exec/: $f"
	done
}

# step_state TITLE_PART: CACHED, DONE or ERROR for the step whose title contains TITLE_PART in
# the last build's plain progress ($T/$LAST.err).
step_state() {
	python3 - "$T/$LAST.err" "$1" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
want = sys.argv[2]
num = None
for l in lines:
    m = re.match(r"#(\d+) (\[.*)$", l)
    if m and want in m.group(2):
        num = m.group(1)
if num is None:
    print("MISSING")
    sys.exit(0)
state = "RUNNING"
for l in lines:
    if l == "#%s CACHED" % num:
        state = "CACHED"
    elif l.startswith("#%s DONE" % num):
        state = "DONE"
    elif l.startswith("#%s ERROR" % num):
        state = "ERROR"
print(state)
PY
}

assert_step() {
	assert_eq "$2" "$(step_state "$1")" "step '$1' in build $LAST"
}

# build NAME ARGS...: a plain-progress build that must succeed; its digest in $DIGEST.
build() {
	LAST=$1
	shift
	run_ok "$LAST" "$SLIPWAY" build --progress plain "$@"
	DIGEST=$(tail -n 1 "$T/$LAST.out")
	[[ $DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || fail "build $LAST printed '$DIGEST'"
	assert_clean
}

# ---------------------------------------------------------------- the base image and context

sw_make_busybox_tar "$T/rootfs.tar"
use_state state
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1

ctx=$T/ctx
mkdir -p "$ctx/files/sub"
echo "plain text" >"$ctx/plain.txt"
echo "file a" >"$ctx/files/a.txt"
echo "file b" >"$ctx/files/sub/b.txt"
echo "ignored" >"$ctx/files/ignored.log"
printf '*.log\n**/*.log\n' >"$ctx/.dockerignore"
cat >"$ctx/Dockerfile" <<'EOF'
FROM bb:1
COPY plain.txt /etc/plain.txt
RUN rm /bin/ls && echo new > /new.txt
ARG GREETING=hello
ENV APP_HOME=/app MODE=test
WORKDIR $APP_HOME
COPY --chown=nobody:nogroup files/ ./files/
RUN echo "$GREETING" > /app/greeting.txt && cat /app/files/a.txt > /app/seen.txt
USER nobody
RUN id -u > /tmp/uid.txt && pwd > /tmp/pwd.txt
CMD ["sh", "-c", "cat /app/greeting.txt"]
EOF

# ---------------------------------------------------------------- first build

note "first build"
build b1 -t app:1 --output "oci:$T/out:app" "$ctx"
d1=$DIGEST
for s in "COPY plain.txt" "RUN rm /bin/ls" "WORKDIR" "COPY --chown" "RUN echo" "RUN id -u"; do
	assert_step "$s" DONE
done
assert_step "FROM bb:1" CACHED
assert_eq "$d1" "$(layout_digest "$T/out" app)" "digest in the --output layout"
layout_verify "$T/out"

umoci unpack --image "$T/out:app" "$T/bundle" >"$T/umoci.log" 2>&1 ||
	fail "umoci unpack: $(cat "$T/umoci.log")"
r=$T/bundle/rootfs
[ ! -e "$r/bin/ls" ] || fail "/bin/ls deleted by RUN is still in the image"
[ -x "$r/bin/busybox" ] || fail "/bin/busybox of the base is missing"
assert_eq new "$(cat "$r/new.txt")" "file written by RUN"
assert_eq "plain text" "$(cat "$r/etc/plain.txt")" "COPY plain.txt"
assert_eq "file a" "$(cat "$r/app/files/a.txt")" "COPY files/a.txt"
assert_eq "file b" "$(cat "$r/app/files/sub/b.txt")" "COPY files/sub/b.txt"
[ ! -e "$r/app/files/ignored.log" ] || fail ".dockerignore'd file was copied"
assert_eq "65534:65534" "$(stat -c %u:%g "$r/app/files/a.txt")" "owner of a --chown file"
assert_eq "65534:65534" "$(stat -c %u:%g "$r/app/files/sub")" "owner of a --chown folder"
assert_eq "0:0" "$(stat -c %u:%g "$r/etc/plain.txt")" "owner of a plain COPY"
assert_eq "0:0" "$(stat -c %u:%g "$r/app")" "owner of the WORKDIR"
assert_eq hello "$(cat "$r/app/greeting.txt")" "build arg default in RUN"
assert_eq "file a" "$(cat "$r/app/seen.txt")" "RUN sees the COPY before it"
assert_eq 65534 "$(cat "$r/tmp/uid.txt")" "RUN after USER runs as nobody"
assert_eq /app "$(cat "$r/tmp/pwd.txt")" "RUN runs in the WORKDIR"

manifest=$(layout_blob_path "$T/out" "$d1")
config=$(layout_blob_path "$T/out" "$(json_get "d['config']['digest']" "$manifest")")
assert_eq nobody "$(json_get "d['config']['User']" "$config")" "config User"
assert_eq /app "$(json_get "d['config']['WorkingDir']" "$config")" "config WorkingDir"
assert_eq '["sh", "-c", "cat /app/greeting.txt"]' "$(json_get "d['config']['Cmd']" "$config")" \
	"config Cmd"
assert_contains "$(json_get "d['config']['Env']" "$config")" "APP_HOME=/app" "config Env"
assert_eq 7 "$(json_get "len(d['rootfs']['diff_ids'])" "$config")" "layers (base + 6)"
assert_eq "$(json_get "len(d['rootfs']['diff_ids'])" "$config")" \
	"$(json_get "len([h for h in d['history'] if not h.get('empty_layer')])" "$config")" \
	"non-empty history entries"

# ---------------------------------------------------------------- the cache

note "second build: all cached, same digest"
build b2 -t app:1 "$ctx"
assert_eq "$d1" "$DIGEST" "digest of a cached rebuild"
assert_not_contains "$ERR" " DONE" "output of a fully cached build"
for s in "COPY plain.txt" "RUN rm /bin/ls" "WORKDIR" "COPY --chown" "RUN echo" "RUN id -u"; do
	assert_step "$s" CACHED
done

note "touching a file keeps the cache"
touch -d '2001-01-01' "$ctx/files/a.txt" "$ctx/plain.txt"
build b3 "$ctx"
assert_eq "$d1" "$DIGEST" "digest after touch"
assert_not_contains "$ERR" " DONE" "output after touch"

note "changing a file's bytes re-runs from its COPY on"
echo "file a, changed" >"$ctx/files/a.txt"
build b4 --output "oci:$T/out4:app" "$ctx"
assert_ne "$d1" "$DIGEST" "digest after a change"
assert_step "COPY plain.txt" CACHED
assert_step "RUN rm /bin/ls" CACHED
assert_step "WORKDIR" CACHED
assert_step "COPY --chown" DONE
assert_step "RUN echo" DONE
assert_step "RUN id -u" DONE
umoci unpack --image "$T/out4:app" "$T/bundle4" >"$T/umoci4.log" 2>&1 ||
	fail "umoci unpack: $(cat "$T/umoci4.log")"
assert_eq "file a, changed" "$(cat "$T/bundle4/rootfs/app/seen.txt")" "RUN saw the new bytes"

note "a changed build arg re-runs from its first use"
build b5 --build-arg GREETING=bonjour --output "oci:$T/out5:app" "$ctx"
assert_step "COPY plain.txt" CACHED
assert_step "RUN rm /bin/ls" CACHED
assert_step "WORKDIR" CACHED
assert_step "COPY --chown" CACHED
assert_step "RUN echo" DONE
umoci unpack --image "$T/out5:app" "$T/bundle5" >"$T/umoci5.log" 2>&1 ||
	fail "umoci unpack: $(cat "$T/umoci5.log")"
assert_eq bonjour "$(cat "$T/bundle5/rootfs/app/greeting.txt")" "build arg value in RUN"
build b6 --build-arg UNUSED=1 "$ctx"
assert_not_contains "$ERR" " DONE" "output with an unused build arg"
assert_contains "$ERR" "[UNUSED] were not consumed" "unused build arg warning"

note "--no-cache runs everything"
build b7 --no-cache "$ctx"
assert_step "COPY plain.txt" DONE
assert_step "RUN id -u" DONE

# ---------------------------------------------------------------- failures

note "a failing RUN"
fctx=$T/fail
mkdir -p "$fctx"
cat >"$fctx/Dockerfile" <<'EOF'
FROM bb:1
RUN echo fine
RUN echo "first line"; echo "bad output" >&2; exit 3
RUN echo never
EOF
LAST=f1
run_fails f1 "$SLIPWAY" build --progress plain "$fctx"
assert_eq 1 "$RC" "exit status of a failed build"
assert_contains "$ERR" "RUN step 3 (Dockerfile:3): exit code 3" "error of a failed RUN"
assert_contains "$ERR" "bad output" "the failed RUN's output in the error"
assert_contains "$ERR" "#3 ERROR: exit code 3" "progress of a failed RUN"
assert_eq MISSING "$(step_state "RUN echo never")" "steps after a failure"
assert_clean

note "a broken Dockerfile names the place"
printf 'FROM bb:1\nCOPPY a /a\n' >"$fctx/Dockerfile"
run_fails f2 "$SLIPWAY" build --progress plain "$fctx"
assert_contains "$ERR" "Dockerfile:2" "parse error place"
printf 'FROM bb:1\nCOPY nothere /a\n' >"$fctx/Dockerfile"
run_fails f3 "$SLIPWAY" build --progress plain "$fctx"
assert_contains "$ERR" "nothere" "missing source"
assert_clean

note "a build killed by SIGKILL during a RUN, then the next build"
kctx=$T/kill
mkdir -p "$kctx"
printf 'FROM bb:1\nRUN echo started && sleep 30\n' >"$kctx/Dockerfile"
"$SLIPWAY" build --progress plain "$kctx" >"$T/k1.out" 2>"$T/k1.err" &
kpid=$!
disown "$kpid" # no "Killed" job report
sw_track_pid "$kpid"
# the RUN's own output line ("#2 0.031 started"), not its title, says the container runs
for ((i = 0; i < 400; i++)); do
	grep -qE '^#2 [0-9.]+ started' "$T/k1.err" && break
	kill -0 "$kpid" 2>/dev/null || fail "the build to kill ended early: $(cat "$T/k1.err")"
	sleep 0.05
done
grep -qE '^#2 [0-9.]+ started' "$T/k1.err" || fail "the RUN never started: $(cat "$T/k1.err")"
kill -KILL "$kpid"
for ((i = 0; i < 200; i++)); do
	# gone, or a zombie bash has not reaped yet
	[ -e "/proc/$kpid" ] || break
	[ "$(awk '{print $3}' "/proc/$kpid/stat" 2>/dev/null)" != Z ] || break
	sleep 0.05
done
sw_stop_pid "$kpid"
left=$(runc --root "$SLIPWAY_STATE_DIR/exec/runtime/runc" list -q 2>/dev/null || true)
[ -n "$left" ] || fail "the killed build left no container: nothing to test"
grep -qF " $T/" /proc/self/mounts || fail "the killed build left no mount: nothing to test"
build k2 "$ctx"
assert_eq "" "$(runc --root "$SLIPWAY_STATE_DIR/exec/runtime/runc" list -q 2>/dev/null)" \
	"containers after the next build"

note "independent stages build in parallel"
pctx=$T/par
mkdir -p "$pctx"
cat >"$pctx/Dockerfile" <<'EOF'
FROM bb:1 AS left
RUN sleep 1 && echo left > /left.txt
FROM bb:1 AS right
RUN sleep 1 && echo right > /right.txt
FROM bb:1 AS unused
RUN exit 1
FROM scratch
COPY --from=left /left.txt /
COPY --from=right /right.txt /
EOF
build par1 --output "oci:$T/outp:x" "$pctx"
assert_step "RUN sleep 1 && echo left" DONE
assert_step "RUN sleep 1 && echo right" DONE
assert_eq MISSING "$(step_state "RUN exit 1")" "the stage nothing needs"
if [ "$(nproc)" -gt 1 ]; then
	# both RUNs started before either ended
	order=$(grep -E '^#[0-9]+ (\[(left|right) 2/2\]|DONE)' "$T/par1.err" | cut -c1-20 |
		tr '\n' '|')
	[[ $order =~ ^#[0-9]+\ \[(left|right)\ 2/2\][^|]*\|#[0-9]+\ \[(left|right) ]] ||
		fail "the two stages did not run at the same time: $order"
fi
umoci unpack --image "$T/outp:x" "$T/bundlep" >"$T/umocip.log" 2>&1 ||
	fail "umoci unpack: $(cat "$T/umocip.log")"
assert_eq left "$(cat "$T/bundlep/rootfs/left.txt")" "file from the first stage"
assert_eq right "$(cat "$T/bundlep/rootfs/right.txt")" "file from the second stage"

# ---------------------------------------------------------------- reproducible builds

note "SOURCE_DATE_EPOCH: the same digest from two empty caches"
for st in repro1 repro2; do
	use_state "$st"
	SOURCE_DATE_EPOCH=1700000000 run_ok "import-$st" "$SLIPWAY" image import "$T/rootfs.tar" bb:1
	SOURCE_DATE_EPOCH=1700000000 build "r-$st" --output "oci:$T/out-$st:app" "$ctx"
	eval "digest_$st=\$DIGEST"
done
# shellcheck disable=SC2154 # set by the eval above
assert_eq "$digest_repro1" "$digest_repro2" "digest of two reproducible builds"
cfg=$(layout_blob_path "$T/out-repro1" \
	"$(json_get "d['config']['digest']" "$(layout_blob_path "$T/out-repro1" "$digest_repro1")")")
assert_eq 2023-11-14T22:13:20Z "$(json_get "d['created']" "$cfg")" "created from SOURCE_DATE_EPOCH"

# ---------------------------------------------------------------- registry: push and cache

note "--push and --cache-to, then --cache-from on an empty cache"
start_registry plain
use_state repro1
SOURCE_DATE_EPOCH=1700000000 build p1 --push "$REGISTRY/app:1" --cache-to "$REGISTRY/cache" \
	"$ctx"
pd=$DIGEST
skopeo inspect --tls-verify=false "docker://$REGISTRY/app:1" >"$T/skopeo.json" ||
	fail "skopeo inspect of the pushed image failed"
assert_eq "$pd" "$(sw_json "$T/skopeo.json" Digest)" "digest skopeo sees in the registry"
assert_contains "$ERR" "exported 6 cache entries" "cache export"

use_state fresh
SOURCE_DATE_EPOCH=1700000000 run_ok import-fresh "$SLIPWAY" image import "$T/rootfs.tar" bb:1
SOURCE_DATE_EPOCH=1700000000 build c1 --cache-from "$REGISTRY/cache" "$ctx"
assert_not_contains "$ERR" " DONE" "build from the registry cache"
assert_eq "$pd" "$DIGEST" "digest of the build from the registry cache"
# and the local cache has the entries now
SOURCE_DATE_EPOCH=1700000000 build c2 "$ctx"
assert_not_contains "$ERR" " DONE" "rebuild after the registry cache"

# keys the registry does not have are plain misses (no warning), the rest still hit
echo "file a, once more" >"$ctx/files/a.txt"
use_state fresh2
SOURCE_DATE_EPOCH=1700000000 run_ok import-fresh2 "$SLIPWAY" image import "$T/rootfs.tar" bb:1
SOURCE_DATE_EPOCH=1700000000 build c3 --cache-from "$REGISTRY/cache" "$ctx"
assert_step "RUN rm /bin/ls" CACHED
assert_step "COPY --chown" DONE
assert_step "RUN id -u" DONE
assert_not_contains "$ERR" "warning" "misses in the registry cache"

note "a base image that is not in the store is pulled (once)"
use_state repro1
run_ok copy-base "$SLIPWAY" image copy bb:1 "docker://$REGISTRY/base/bb:1"
use_state pulled
ptx=$T/pull
mkdir -p "$ptx"
printf 'FROM %s/base/bb:1\nRUN echo pulled > /p.txt\n' "$REGISTRY" >"$ptx/Dockerfile"
build pl1 "$ptx"
assert_contains "$ERR" "pulling docker://$REGISTRY/base/bb:1" "pull message"
assert_step "FROM $REGISTRY/base/bb:1" DONE
build pl2 "$ptx"
assert_not_contains "$ERR" "pulling" "second build with the pulled base"
assert_step "FROM $REGISTRY/base/bb:1" CACHED

echo "PASS"
