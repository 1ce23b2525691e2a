# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Helpers for the `slipway run` end-to-end tests, sourced after lib.sh and sw_tmpdir:
#   run_setup                  a busybox base image bb:1 in the store, $REPO a git repository
#                              whose Dockerfile is FROM bb:1 with ENV SW_RUN_TOKEN=$TOKEN (so
#                              every job and service process carries the token), TMPDIR in $T
#   set_pipeline [MSG]         commit stdin as $REPO/.slipway.yml (and whatever else changed)
#   run_pipeline NAME ARGS...  `slipway run --repo $REPO --events $T/NAME.events --output
#                              $T/NAME.out.d --progress plain ARGS...` through run (RC/OUT/ERR)
#   job_field EVENTS JOB FIELD the FIELD of JOB's last "job" event
#   assert_clean WHEN          nothing of any run is left: mounts under $T, runtime containers,
#                              boxes and network namespaces under STATE/exec, scratch folders,
#                              processes carrying $TOKEN or naming the state folder
#   reap_all                   kill what a failing test left (installed in the EXIT trap)

# shellcheck source=tests/build/lib_docker.sh
source "$SW_TEST_SRCDIR/tests/build/lib_docker.sh" # for unmount_under

TOKEN=run-$$-$RANDOM$RANDOM

run_setup() {
	unset SOURCE_DATE_EPOCH
	mkdir -p "$T/tmp"
	export TMPDIR=$T/tmp
	STATE=$SLIPWAY_STATE_DIR
	# shellcheck disable=SC2154 # sw_rc is set by the trap itself
	trap 'sw_rc=$?; set +e; reap_all; (exit $sw_rc); sw_cleanup' EXIT
	sw_make_busybox_tar "$T/rootfs.tar"
	run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1
	REPO=$T/repo
	mkdir -p "$REPO"
	git -C "$REPO" init -q -b main
	git -C "$REPO" config user.email test@example.com
	git -C "$REPO" config user.name "slipway test"
	cat >"$REPO/Dockerfile" <<DF
FROM bb:1
ENV SW_RUN_TOKEN=$TOKEN
WORKDIR /srv
DF
}

set_pipeline() {
	cat >"$REPO/.slipway.yml"
	git -C "$REPO" add -A
	git -C "$REPO" commit -q -m "${1:-pipeline}"
}

run_pipeline() {
	local name=$1
	shift
	rm -rf "$T/$name.out.d"
	run "$name" "$SLIPWAY" run --repo "$REPO" --events "$T/$name.events" \
		--output "$T/$name.out.d" --progress plain "$@"
}

# job_field EVENTS JOB FIELD: FIELD of the last event of type "job" about JOB ("" if none).
job_field() {
	python3 - "$@" <<'PY'
import json, sys
path, job, field = sys.argv[1:4]
val = ""
try:
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        e = json.loads(line)
        if e.get("type") == "job" and (e.get("job") == job or e.get("name") == job):
            if field in e:
                val = e[field]
except FileNotFoundError:
    pass
print(val if isinstance(val, str) else json.dumps(val))
PY
}

# token_pids: processes whose environment holds $TOKEN (job and service containers).
token_pids() {
	local e p
	for e in /proc/[0-9]*/environ; do
		p=${e#/proc/}
		p=${p%/environ}
		[ "$p" != $$ ] || continue
		if tr '\0' '\n' 2>/dev/null <"$e" | grep -qx "SW_RUN_TOKEN=$TOKEN"; then
			echo "$p"
		fi
	done
}

# state_pids: processes whose command line names the state folder (runc --root STATE/...,
# slirp4netns on a namespace file under STATE/exec/netns).
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

reap_all() {
	local p rt id
	for p in $(token_pids) $(state_pids | cut -d' ' -f1); do
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
		left=$(find "$STATE/exec" -mindepth 1 -maxdepth 1 ! -name runtime ! -name netns)
		[ -z "$left" ] || fail "$when: left under $STATE/exec: $left"
		if [ -d "$STATE/exec/runtime" ]; then
			left=$(find "$STATE/exec/runtime" -mindepth 2)
			[ -z "$left" ] || fail "$when: runtime state left: $left"
		fi
		if [ -d "$STATE/exec/netns" ]; then
			left=$(find "$STATE/exec/netns" -mindepth 1)
			[ -z "$left" ] || fail "$when: network namespaces left: $left"
		fi
	fi
	if [ -d "$STATE/cache/tmp" ]; then
		left=$(find "$STATE/cache/tmp" -mindepth 1 -maxdepth 1)
		[ -z "$left" ] || fail "$when: scratch folders left under $STATE/cache/tmp: $left"
	fi
	left=$(find "$T/tmp" -mindepth 1 -maxdepth 1)
	[ -z "$left" ] || fail "$when: left in TMPDIR: $left"
	left=$(token_pids)
	[ -z "$left" ] || fail "$when: processes of a job still alive: $(for p in $left; do
		tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline"
		echo
	done)"
	left=$(state_pids)
	[ -z "$left" ] || fail "$when: processes using the state folder still alive: $left"
	left=$(find /dev/shm -maxdepth 1 -user "$(id -u)" -name '*slipway*' -newer "$T/rootfs.tar" 2>/dev/null)
	[ -z "$left" ] || fail "$when: secret files left in /dev/shm: $left"
}
