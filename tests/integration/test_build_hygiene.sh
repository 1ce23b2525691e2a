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
# shellcheck source=tests/build/lib_docker.sh
source "$SW_TEST_SRCDIR/tests/build/lib_docker.sh" # for unmount_under

sw_tmpdir
unset SOURCE_DATE_EPOCH
mkdir -p "$T/tmp"
export TMPDIR=$T/tmp
STATE=$SLIPWAY_STATE_DIR
TOKEN=hygiene-$$-$RANDOM$RANDOM
KILLED_PID=

# Whatever the test ends with, nothing of a build may outlive it: its container processes, its
# runtime containers, its mounts (a failing run leaves what slipway left).
reap_all() {
	local p rt id
	for p in $(token_pids); do
		kill -9 "$p" 2>/dev/null || true
	done
	for rt in runc crun; do
		if [ ! -d "$STATE/exec/runtime/$rt" ] || ! command -v "$rt" >/dev/null; then
			continue
		fi
		for id in $("$rt" --root "$STATE/exec/runtime/$rt" list -q 2>/dev/null); do
			"$rt" --root "$STATE/exec/runtime/$rt" delete --force "$id" >/dev/null 2>&1 || true
		done
	done
	unmount_under "$T"
}

# token_pids: processes whose environment holds $TOKEN (the killed build's container).
token_pids() {
	local e p
	for e in /proc/[0-9]*/environ; do
		p=${e#/proc/}
		p=${p%/environ}
		[ "$p" != $$ ] || continue
		if tr '\0' '\n' 2>/dev/null <"$e" | grep -qx "SW_HYGIENE_TOKEN=$TOKEN"; then
			echo "$p"
		fi
	done
}

# state_pids: processes whose command line names the state folder (runc --root STATE/...).
state_pids() {
	local c p
	for c in /proc/[0-9]*/cmdline; do
		p=${c#/proc/}
		p=${p%/cmdline}
		if [ "$p" = $$ ] || [ "$p" = "$BASHPID" ]; then
			continue
		fi
		if tr '\0' ' ' 2>/dev/null <"$c" | grep -qF -- "$STATE/"; then
			echo "$p $(tr '\0' ' ' 2>/dev/null <"$c")"
		fi
	done
}

# shellcheck disable=SC2154 # sw_rc is set by the trap itself
trap 'sw_rc=$?; set +e; reap_all; (exit $sw_rc); sw_cleanup' EXIT

sw_make_busybox_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1

# assert_clean WHEN: nothing of any build is left.
assert_clean() {
	local when=$1 m rt left
	m=$(awk -v d="$T" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo)
	[ -z "$m" ] || fail "$when: mounts left under $T: $m"
	for rt in runc crun; do
		[ -d "$STATE/exec/runtime/$rt" ] || continue
		command -v "$rt" >/dev/null || continue
		left=$("$rt" --root "$STATE/exec/runtime/$rt" list -q 2>&1) ||
			fail "$when: $rt list failed: $left"
		[ -z "$left" ] || fail "$when: $rt containers left: $left"
	done
	if [ -d "$STATE/exec" ]; then
		left=$(find "$STATE/exec" -mindepth 1 -maxdepth 1 ! -name runtime)
		[ -z "$left" ] || fail "$when: left under $STATE/exec: $left"
		if [ -d "$STATE/exec/runtime" ]; then
			left=$(find "$STATE/exec/runtime" -mindepth 2)
			[ -z "$left" ] || fail "$when: runtime state left: $left"
		fi
	fi
	if [ -d "$STATE/cache/tmp" ]; then
		left=$(find "$STATE/cache/tmp" -mindepth 1 -maxdepth 1)
		[ -z "$left" ] || fail "$when: scratch folders left under $STATE/cache/tmp: $left"
	fi
	left=$(find "$T/tmp" -mindepth 1 -maxdepth 1)
	[ -z "$left" ] || fail "$when: left in TMPDIR: $left"
	left=$(token_pids)
	[ -z "$left" ] || fail "$when: processes of a build still alive: $(for p in $left; do
		tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline"
		echo
	done)"
	left=$(state_pids)
	[ -z "$left" ] || fail "$when: processes using the state folder still alive: $left"
}

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
RUN SW_HYGIENE_TOKEN=$TOKEN sh -c 'sleep 300 &' && echo ok > ok.txt
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
ENV SW_HYGIENE_TOKEN=$TOKEN
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
