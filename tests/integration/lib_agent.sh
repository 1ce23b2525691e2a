# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Helpers for the `slipway agent` end-to-end tests, sourced after lib.sh, lib_run.sh, sw_tmpdir
# and run_setup (which make $T, $STATE and $REPO):
#   agent_config FILE [EXTRA YAML]  write an agent.yml watching $REPO (file://, branch main,
#                                   1 s poll) with the state in $STATE; $METRICS_ADDR ("" by
#                                   default: off) as metrics.listen; EXTRA is appended
#   agent_start                     start `slipway agent -c $AGENT_CONF` in the background
#                                   (AGENT_PID; output appended to $T/agent.log)
#   agent_kill9                     SIGKILL the agent and reap it
#   agent_stop                      SIGTERM (drain) and check it exits 0
#   journal_field SHA FIELD         FIELD of the journal's work item for commit SHA ("" if
#                                   none); journal_count SHA: how many items name SHA
#   wait_until SECONDS WHAT CMD...  run CMD every 0.2 s until it succeeds, or fail naming WHAT
#   run_events SHA [ATTEMPT]        the events.jsonl files of SHA's runs (one attempt or all)
#   commit_file NAME CONTENT MSG    write $REPO/NAME and commit it; prints nothing, sets SHA
#   event_seen SHA PY-CONDITION     some event `e` of SHA's runs satisfies the condition
#   state_is SHA STATE [ATTEMPTS]   the journal's item of SHA is in STATE (after ATTEMPTS)
#   built_digest EVENTS             the digest the run built

AGENT_PID=
AGENT_CONF=
METRICS_ADDR=${METRICS_ADDR:-}

agent_config() {
	AGENT_CONF=$1
	cat >"$AGENT_CONF" <<EOF
concurrency: 2
state_dir: $STATE
executor: { backend: oci, runtime: runc }
log: { format: text, level: info }
metrics: { listen: "$METRICS_ADDR" }
shutdown_timeout: 60s
repos:
  - name: app
    url: file://$REPO
    branches: [main]
    poll: 1s
${2:-}
EOF
}

agent_start() {
	"$SLIPWAY" agent -c "$AGENT_CONF" >>"$T/agent.log" 2>&1 &
	AGENT_PID=$!
	sw_track_pid "$AGENT_PID" "$T/agent.log"
	echo "--- agent started (pid $AGENT_PID)" >>"$T/agent.log"
}

agent_kill9() {
	kill -9 "$AGENT_PID" 2>/dev/null || true
	sw_stop_pid "$AGENT_PID"
	echo "--- agent killed (SIGKILL)" >>"$T/agent.log"
	AGENT_PID=
}

agent_stop() {
	local rc=0
	kill -TERM "$AGENT_PID" 2>/dev/null || true
	wait "$AGENT_PID" || rc=$?
	sw_stop_pid "$AGENT_PID"
	AGENT_PID=
	[ "$rc" -eq 0 ] || fail "the agent exited $rc after SIGTERM: $(tail -n 20 "$T/agent.log")"
}

journal_field() {
	python3 - "$STATE/agent/journal.json" "$1" "$2" <<'PY'
import json, sys
path, sha, field = sys.argv[1:4]
try:
    d = json.load(open(path))
except (FileNotFoundError, ValueError):
    print("")
    sys.exit(0)
items = [w for w in d.get("items", []) if w.get("sha") == sha and ":tag:" not in w.get("id", "")]
v = items[-1].get(field, "") if items else ""
print(v if isinstance(v, str) else json.dumps(v))
PY
}

journal_count() {
	python3 - "$STATE/agent/journal.json" "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (FileNotFoundError, ValueError):
    print(0)
    sys.exit(0)
print(sum(1 for w in d.get("items", []) if w.get("sha") == sys.argv[2]))
PY
}

wait_until() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		if "$@"; then
			return 0
		fi
		if [ -n "$AGENT_PID" ] && ! kill -0 "$AGENT_PID" 2>/dev/null; then
			fail "the agent died while waiting for $what: $(tail -n 30 "$T/agent.log")"
		fi
		sleep 0.2
	done
	fail "timed out after ${secs}s waiting for $what; journal: $(cat "$STATE/agent/journal.json" 2>/dev/null)"
}

run_events() {
	local sha=$1 attempt=${2:-*}
	# shellcheck disable=SC2086 # the attempt is a glob when not given
	ls -d "$STATE"/agent/runs/git_app_"$sha"/$attempt/events.jsonl 2>/dev/null || true
}

# event_seen SHA PYTHON-CONDITION: some event `e` of SHA's runs satisfies the condition.
event_seen() {
	local f
	for f in $(run_events "$1"); do
		python3 - "$f" "$2" <<'PY' && return 0
import json, sys
ok = False
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if eval(sys.argv[2]):
        ok = True
sys.exit(0 if ok else 1)
PY
	done
	return 1
}

# state_is SHA STATE [ATTEMPTS]
state_is() {
	[ "$(journal_field "$1" state)" = "$2" ] || return 1
	[ $# -lt 3 ] || [ "$(journal_field "$1" attempts)" = "$3" ]
}

commit_file() {
	printf '%s\n' "$2" >"$REPO/$1"
	git -C "$REPO" add -A
	git -C "$REPO" commit -q -m "$3"
	# shellcheck disable=SC2034 # read by the tests
	SHA=$(git -C "$REPO" rev-parse HEAD)
}

# built_digest EVENTS: the digest of the image the run built ("" if none).
built_digest() {
	python3 - "$1" <<'PY'
import json, sys
d = ""
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("type") == "build" and e.get("state") == "done":
        d = e.get("digest", "")
print(d)
PY
}
