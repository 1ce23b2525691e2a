#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Nothing is left behind by `slipway build`: after a successful build (one of whose RUN steps
# leaves a process running in the background), after a failed build (a
# RUN exiting 3: slipway exits 1 and says "exit code 3" with the step's last output), and after a
# build killed with SIGKILL in the middle of a `RUN sleep` followed by the next build, there are
#   - no mounts under the test's folder (/proc/self/mountinfo),
#   - no runtime containers (`runc --root STATE/exec/runtime/runc list -q` is empty; crun too),
#   - no scratch folders under STATE/cache/tmp, STATE/exec (but for the runtime's own root
#     folders) and $TMPDIR,
#   - no process of the killed build (its container's sleep, its runc) alive.
# The container's processes are told apart from anything else on the machine by a random token
# in their environment (an ENV set from a build arg).
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"

sw_tmpdir
unset SOURCE_DATE_EPOCH
mkdir -p "$T/tmp"
export TMPDIR=$T/tmp
# lib_run.sh: TOKEN (processes carrying SW_RUN_TOKEN=$TOKEN), token_pids, state_pids,
# reap_all in the EXIT trap, assert_clean (mounts, runtime containers, boxes, scratch folders,
# TMPDIR, processes)
# shellcheck source=tests/integration/lib_run.sh
source "$SW_TEST_SRCDIR/tests/integration/lib_run.sh"
STATE=$SLIPWAY_STATE_DIR
# shellcheck disable=SC2154 # sw_rc is set by the trap itself
trap 'sw_rc=$?; set +e; reap_all; (exit $sw_rc); sw_cleanup' EXIT

sw_make_busybox_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1

ctx=$T/ctx
mkdir -p "$ctx"
echo data >"$ctx/data.txt"

echo "== a successful build (one RUN leaves a process in the background)"
cat >"$ctx/Dockerfile" <<'DF'
FROM bb:1
ARG TOKEN
COPY data.txt /data.txt
RUN cat /data.txt > /copy.txt && mkdir /made
WORKDIR /made
# the step ends when its main process does; what it left running is killed with it
RUN SW_RUN_TOKEN=$TOKEN sh -c 'sleep 300 &' && echo ok > ok.txt
DF
run_ok ok timeout 120 "$SLIPWAY" build --progress plain -t hygiene:ok --build-arg "TOKEN=$TOKEN" \
	"$ctx"
assert_clean "after a successful build"

echo "== a failed build"
cat >"$ctx/Dockerfile" <<'DF'
FROM bb:1
COPY data.txt /data.txt
RUN echo "last words before failing" && exit 3
RUN echo never
DF
run fails "$SLIPWAY" build --progress plain -t hygiene:fail "$ctx"
assert_eq 1 "$RC" "exit status of a build whose RUN exits 3"
assert_contains "$ERR" "exit code 3" "the failed build's message"
assert_contains "$ERR" "last words before failing" "the failed build's message"
assert_not_contains "$ERR" "never" "output of the failed build"
assert_clean "after a failed build"

echo "== a build killed with SIGKILL during a RUN"
cat >"$ctx/Dockerfile" <<'DF'
FROM bb:1
ARG TOKEN
ENV SW_RUN_TOKEN=$TOKEN
COPY data.txt /data.txt
RUN echo "sleeping now" && sleep 30
DF
"$SLIPWAY" build --progress plain -t hygiene:killed --build-arg "TOKEN=$TOKEN" \
	"$ctx" >"$T/killed.out" 2>"$T/killed.err" &
KILLED_PID=$!
disown "$KILLED_PID" # no "Killed" notice from the shell
sw_track_pid "$KILLED_PID" "$T/killed.err"
for ((i = 0; i < 600; i++)); do
	[ -z "$(token_pids)" ] || break
	kill -0 "$KILLED_PID" 2>/dev/null || fail "the build ended before its RUN: $(cat "$T/killed.err")"
	sleep 0.1
done
[ -n "$(token_pids)" ] || fail "the RUN sleep 30 did not start in 60 s: $(cat "$T/killed.err")"
kill -9 "$KILLED_PID"
for ((i = 0; i < 100; i++)); do
	kill -0 "$KILLED_PID" 2>/dev/null || break
	sleep 0.05
done
sw_stop_pid "$KILLED_PID"

echo "== the next build cleans up after it"
cat >"$ctx/Dockerfile" <<'DF'
FROM bb:1
COPY data.txt /data.txt
RUN echo next > /next.txt
DF
run_ok next "$SLIPWAY" build --progress plain -t hygiene:next "$ctx"
assert_clean "after a killed build and the next build"

echo "PASS build hygiene"
