#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The `slipway agent` daemon end to end with runc, on a local git repository watched over
# file://: `--once` runs the new commit's pipeline and exits 0 (a second `--once` finds nothing
# new); a second agent on the same state folder is refused with a message naming the first one's
# pid; SIGHUP with a broken file is refused (logged with FILE:LINE:COLUMN, the agent goes on),
# SIGHUP with a good one applies (a repository added is polled and its pipeline runs); SIGTERM
# while a pipeline runs lets it finish (its output complete, state passed) and exits 0 without
# taking the next commit, which a restart then runs; SIGINT cancels it at once (exit 130, state
# cancelled); nothing is left behind (mounts, containers).
. "$(dirname "$0")/lib.sh"

sw_tmpdir
command -v runc >/dev/null || {
	echo "SKIP: runc is not installed"
	exit 0
}
export GIT_AUTHOR_NAME="slipway test" GIT_AUTHOR_EMAIL=test@example.com
export GIT_COMMITTER_NAME="slipway test" GIT_COMMITTER_EMAIL=test@example.com
export GIT_CONFIG_NOSYSTEM=1 HOME=$T
# shellcheck source=tests/integration/lib_run.sh
. "$SW_ITEST_DIR/lib_run.sh"
# shellcheck source=tests/integration/lib_agent.sh
. "$SW_ITEST_DIR/lib_agent.sh"
run_setup # bb:1, $REPO (Dockerfile FROM bb:1), $STATE

# conf FILE [EXTRA]: one repository (app = $REPO), one pipeline at a time, metrics off
conf() {
	cat >"$1" <<EOF
concurrency: 1
state_dir: $STATE
executor: { backend: oci, runtime: runc }
log: { format: text, level: info }
metrics: { listen: "" }
shutdown_timeout: 60s
kill_grace: 2s
repos:
  - name: app
    url: file://$REPO
    branches: [main]
    poll: 1s
${2:-}
EOF
}

# pipe_job SCRIPT: a one-job pipeline
pipe_job() {
	cat <<EOF
stages:
  - name: test
    jobs:
      - name: work
        run: [ $1 ]
EOF
}

log_has() { grep -qF -- "$1" "$T/agent.log"; }
job_log() { cat "$STATE/agent/runs/git_app_$1/${2:-1}/logs/"*work* 2>/dev/null || true; }

AGENT_CONF=$T/agent.yml
conf "$AGENT_CONF"

# ---------------------------------------------------------------- --once
pipe_job '"echo hello-from-once"' | set_pipeline "first"
SHA1=$(git -C "$REPO" rev-parse HEAD)
run once "$SLIPWAY" agent -c "$AGENT_CONF" --once
[ "$RC" -eq 0 ] || fail "agent --once exited $RC: $ERR"
assert_eq "$(journal_field "$SHA1" state)" passed
assert_eq "$(journal_field "$SHA1" attempts)" 1
assert_contains "$(job_log "$SHA1")" "hello-from-once"
[ -f "$STATE/agent/runs/git_app_$SHA1/1/events.jsonl" ] || fail "no events.jsonl for $SHA1"
assert_contains "$ERR" "git:app:$SHA1: passed"
# nothing new: a second --once runs nothing
run once2 "$SLIPWAY" agent -c "$AGENT_CONF" --once
[ "$RC" -eq 0 ] || fail "second agent --once exited $RC: $ERR"
assert_eq "$(journal_count "$SHA1")" 1
assert_not_contains "$ERR" "running the pipeline"

# a missing or broken config at start: exit 1 with the place
run bad "$SLIPWAY" agent -c "$T/nope.yml"
assert_eq "$RC" 1
assert_contains "$ERR" "$T/nope.yml"
printf 'repos: [ { url: /r } ]\nconcurency: 2\n' >"$T/bad.yml"
run bad2 "$SLIPWAY" agent -c "$T/bad.yml"
assert_eq "$RC" 1
assert_contains "$ERR" "$T/bad.yml:2:1: unknown key 'concurency' in the configuration (did you mean 'concurrency'?)"

# ---------------------------------------------------------------- one agent per state folder
agent_start
# the agent holds the lock once its pid is in the pid file (lib_agent.sh's agent_start writes
# a "--- agent started" line of its own into the log, so the log cannot tell)
pid_file_is() { [ "$(tr -d '\n' <"$STATE/agent/agent.pid" 2>/dev/null)" = "$1" ]; }
wait_until 30 "the agent to take the state folder" pid_file_is "$AGENT_PID"
run second "$SLIPWAY" agent -c "$AGENT_CONF" --once
assert_eq "$RC" 1
assert_contains "$ERR" "another slipway agent (pid $AGENT_PID) is running on the state folder $STATE"

# ---------------------------------------------------------------- SIGHUP
cp "$AGENT_CONF" "$T/good.yml"
printf 'concurrency: 1\nrepos:\n  - url: file:///x\n    pol: 1s\n' >"$AGENT_CONF"
kill -HUP "$AGENT_PID"
wait_until 20 "the broken reload to be refused" log_has "reload refused"
assert_contains "$(cat "$T/agent.log")" "$AGENT_CONF:4:5: unknown key 'pol' in a repository (did you mean 'poll'?)"
sleep 1
kill -0 "$AGENT_PID" || fail "the agent died after a broken reload"

# a good one with a second repository: it is polled and its pipeline runs
REPO2=$T/repo2
mkdir -p "$REPO2"
git -C "$REPO2" init -q -b main
cp "$REPO/Dockerfile" "$REPO2/"
pipe_job '"echo hello-from-lib"' >"$REPO2/.slipway.yml"
git -C "$REPO2" add -A
git -C "$REPO2" commit -q -m lib
LIBSHA=$(git -C "$REPO2" rev-parse HEAD)
conf "$AGENT_CONF" "  - name: lib
    url: file://$REPO2
    poll: 1s"
kill -HUP "$AGENT_PID"
wait_until 20 "the reload" log_has "reloaded $AGENT_CONF: 2 repositories"
wait_until 90 "the new repository's pipeline" sh -c "[ \"\$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(\" \".join(w[\"state\"] for w in d[\"items\"] if w[\"id\"]==\"git:lib:\"+sys.argv[2]))' '$STATE/agent/journal.json' '$LIBSHA')\" = passed ]"
assert_contains "$(cat "$STATE/agent/runs/git_lib_$LIBSHA/1/logs/"*work*)" "hello-from-lib"

# ---------------------------------------------------------------- SIGTERM drains
pipe_job '"echo slow-begins", "sleep 6", "echo slow-finished"' | set_pipeline "slow"
SHA2=$(git -C "$REPO" rev-parse HEAD)
wait_until 60 "the slow pipeline to run" state_is "$SHA2" running
pipe_job '"echo next-commit"' | set_pipeline "next"
SHA3=$(git -C "$REPO" rev-parse HEAD)
wait_until 20 "the next commit to be queued" state_is "$SHA3" queued
kill -TERM "$AGENT_PID"
t0=$(date +%s)
rc=0
wait "$AGENT_PID" || rc=$?
sw_stop_pid "$AGENT_PID"
AGENT_PID=
assert_eq "$rc" 0
assert_eq "$(journal_field "$SHA2" state)" passed
out=$(job_log "$SHA2")
assert_contains "$out" "slow-begins"
assert_contains "$out" "slow-finished"
assert_eq "$(journal_field "$SHA3" state)" queued # not taken during the drain
[ ! -d "$STATE/agent/runs/git_app_$SHA3" ] || fail "the next commit was started while draining"
log_has "draining" || fail "no drain message in the log"
note "drained in $(($(date +%s) - t0))s"

# ---------------------------------------------------------------- SIGINT cancels at once
# the queued commit runs at the next start; make its pipeline long
pipe_job '"echo long-begins", "sleep 120", "echo never-here"' | set_pipeline "long"
SHA4=$(git -C "$REPO" rev-parse HEAD)
agent_start
wait_until 60 "the queued commit to run after the restart" state_is "$SHA3" passed
wait_until 60 "the long pipeline to run" sh -c "grep -qs long-begins '$STATE/agent/runs/git_app_$SHA4/1/logs/'*work*"
t0=$(date +%s)
kill -INT "$AGENT_PID"
rc=0
wait "$AGENT_PID" || rc=$?
sw_stop_pid "$AGENT_PID"
AGENT_PID=
took=$(($(date +%s) - t0))
assert_eq "$rc" 130
[ "$took" -lt 30 ] || fail "SIGINT took ${took}s to stop the agent"
assert_eq "$(journal_field "$SHA4" state)" cancelled
assert_not_contains "$(job_log "$SHA4")" "never-here"
assert_clean "after the agent stopped"
note "ok: agent daemon (--once, one agent per state, SIGHUP, SIGTERM drain, SIGINT cancel)"
