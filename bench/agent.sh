#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Agent benchmark, two parts:
#   idle      `slipway agent` watching 20 file:// repositories with a 1 s poll, for IDLE seconds
#             (default 60): resident memory at the end (VmRSS) and its peak (VmHWM) from
#             /proc/PID/status (and its split: RssAnon, RssFile), CPU time (utime + stime from /proc/PID/stat) over the idle time.
#             The repositories' heads are seen by a first agent (their commits have no pipeline
#             file, so each run ends at once) which is then stopped: the measured agent is a
#             fresh process with nothing to do but poll.
#   latency   the example repository (examples/app, set up as scripts/demo.sh does, promoting to
#             a registry on 127.0.0.1) watched with a 1 s poll: from `git commit` to the commit's
#             tag being in the registry, against the time `slipway run` takes for the same
#             pipeline on the same kind of change (a one-line change to src/greet.sh, warm
#             caches; a clone the agent does not watch). ROUNDS rounds (default 3), medians.
# Goals: idle resident memory <= 10 MB.
# usage: bench/agent.sh [ROUNDS] [IDLE]   (SLIPWAY=path/to/slipway, default build/slipway;
#        IDLE_POLL=1h: the idle repositories are polled once, at start, instead of every 1 s)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
IDLE=${2:-60}
IDLE_POLL=${IDLE_POLL:-1s} # the idle repositories' poll interval (1h: the first polls only)
: "${SLIPWAY:=$PWD/build/slipway}"
SW_TEST_SRCDIR=$PWD
export SLIPWAY SW_TEST_SRCDIR
[ -x "$SLIPWAY" ] || bash scripts/build.sh build >/dev/null
# shellcheck source=tests/integration/lib.sh
source tests/integration/lib.sh

sw_tmpdir
unset SOURCE_DATE_EPOCH
STATE=$SLIPWAY_STATE_DIR
HZ=$(getconf CLK_TCK)

now() { date +%s.%N; }
elapsed() {
	python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"
}
median() {
	printf '%s\n' "$@" | sort -g |
		awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
commit() { git -C "$1" -c user.email=b@example.com -c user.name=bench commit -q "${@:2}"; }

AGENT_PID=
agent_start() { # CONF LOG
	"$SLIPWAY" agent -c "$1" >>"$2" 2>&1 &
	AGENT_PID=$!
	sw_track_pid "$AGENT_PID" "$2"
}
agent_stop() {
	kill -TERM "$AGENT_PID" 2>/dev/null || true
	wait "$AGENT_PID" || fail "the agent exited $? after SIGTERM"
	sw_stop_pid "$AGENT_PID"
}
# items_done N: the journal holds N items, none queued or running
items_done() {
	python3 - "$STATE/agent/journal.json" "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (FileNotFoundError, ValueError):
    sys.exit(1)
items = d.get("items", [])
busy = [w for w in items if w.get("state") in ("queued", "running")]
sys.exit(0 if len(items) >= int(sys.argv[2]) and not busy else 1)
PY
}
wait_for() { # SECONDS WHAT CMD...
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	fail "timed out waiting for $what"
}

# ---------------------------------------------------------------- idle, 20 repositories
{
	echo "concurrency: 2"
	echo "state_dir: $STATE"
	echo "metrics: { listen: \"127.0.0.1:$(free_port)\" }"
	echo "repos:"
	for ((i = 1; i <= 20; i++)); do
		R=$T/repos/r$i
		mkdir -p "$R"
		git -C "$R" init -q -b main
		echo "repository $i" >"$R/README"
		git -C "$R" add -A
		commit "$R" -m "r$i"
		printf '  - { name: r%d, url: "file://%s", poll: %s }\n' "$i" "$R" "$IDLE_POLL"
	done
} >"$T/idle.yml"
agent_start "$T/idle.yml" "$T/idle-prime.log"
wait_for 300 "the 20 repositories' first runs" items_done 20
agent_stop

agent_start "$T/idle.yml" "$T/idle.log"
sleep 3 # startup: config, journal, first fetch of every mirror
c0=$(cpu_ticks "$AGENT_PID")
rss0=$(status_kb "$AGENT_PID" VmRSS)
sleep "$IDLE"
c1=$(cpu_ticks "$AGENT_PID")
rss=$(status_kb "$AGENT_PID" VmRSS)
hwm=$(status_kb "$AGENT_PID" VmHWM)
anon=$(status_kb "$AGENT_PID" RssAnon)
file=$(status_kb "$AGENT_PID" RssFile)
threads=$(status_kb "$AGENT_PID" Threads)
polls=$(curl -fsS --max-time 5 "http://$(awk -F'"' '/listen/ { print $2 }' "$T/idle.yml")/metrics" |
	awk '$1 ~ /^slipway_polls_total/ { s += $2 } END { print s + 0 }')
agent_stop
cpu_s=$(python3 -c "import sys; print('%.2f' % ((int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3])))" "$c0" "$c1" "$HZ")
cpu_pct=$(python3 -c "import sys; print('%.2f' % (100.0 * float(sys.argv[1]) / float(sys.argv[2])))" "$cpu_s" "$IDLE")

# ---------------------------------------------------------------- latency, the example
rm -rf "$STATE/agent"
sw_make_busybox_tar "$T/rootfs.tar"
"$SLIPWAY" image import "$T/rootfs.tar" busybox:demo >/dev/null
start_registry plain
APP=$T/app
cp -a examples/app "$APP"
git -C "$APP" init -q -b main
git -C "$APP" add -A
commit "$APP" -m "the example app"
git clone -q "$APP" "$T/app-run" # for `slipway run`, not watched
cat >"$T/app.yml" <<EOF
concurrency: 2
state_dir: $STATE
metrics: { listen: "" }
repos:
  - name: app
    url: file://$APP
    branches: [main]
    poll: 1s
    vars: { REGISTRY: "$REGISTRY" }
EOF
promoted() { [ "$(registry_manifest_code "$REGISTRY" demo/app "$1")" = 200 ]; }
agent_start "$T/app.yml" "$T/app-agent.log"
# warm-up: the first poll starts the head
wait_for 300 "the first pipeline of the example" promoted "$(git -C "$APP" rev-parse HEAD)"
"$SLIPWAY" run --repo "$T/app-run" --var "REGISTRY=$REGISTRY" --progress quiet \
	--output "$T/run-out" >"$T/run.log" 2>&1 || fail "slipway run failed: $(tail "$T/run.log")"
declare -a lat run
for ((r = 1; r <= ROUNDS; r++)); do
	sleep 1.5 # let the agent settle on its poll rhythm
	echo "# change $r" >>"$APP/src/greet.sh"
	t0=$(now)
	commit "$APP" -am "change $r"
	sha=$(git -C "$APP" rev-parse HEAD)
	while ! promoted "$sha"; do
		sleep 0.05
		kill -0 "$AGENT_PID" || fail "the agent died: $(tail "$T/app-agent.log")"
		python3 -c "import sys, time; sys.exit(time.time() - float(sys.argv[1]) > 300)" "$t0" ||
			fail "round $r: not promoted after 300 s"
	done
	lat+=("$(elapsed "$t0" "$(now)")")
	echo "# change $r" >>"$T/app-run/src/greet.sh"
	commit "$T/app-run" -am "change $r"
	t0=$(now)
	"$SLIPWAY" run --repo "$T/app-run" --var "REGISTRY=$REGISTRY" --progress quiet \
		--output "$T/run-out" >"$T/run.log" 2>&1 || fail "slipway run failed: $(tail "$T/run.log")"
	run+=("$(elapsed "$t0" "$(now)")")
done
agent_stop

echo
echo "agent benchmark"
printf 'idle, 20 repositories, %s poll, %s s: VmRSS %s kB (at start %s kB), VmHWM %s kB, ' \
	"$IDLE_POLL" "$IDLE" "$rss" "$rss0" "$hwm"
printf '%s threads, CPU %s s (%s%%), %s polls\n' "$threads" "$cpu_s" "$cpu_pct" "$polls"
printf '  of VmRSS: RssAnon %s kB (the agent'"'"'s own), RssFile %s kB (shared library pages)\n' \
	"$anon" "$file"
met=$([ "$rss" -le 10240 ] && echo met || echo "NOT met")
echo "  goal VmRSS <= 10 MB: $met"
echo "latency, example app, median of $ROUNDS: commit -> promoted $(median "${lat[@]}") s;" \
	"slipway run $(median "${run[@]}") s"
echo "  all: commit->promoted ${lat[*]}; slipway run ${run[*]}"
