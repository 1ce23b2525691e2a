#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `slipway run` outcomes beyond a plain pass, each followed by a check that nothing is left
# (lib_run.sh's assert_clean: mounts, runtime containers, network namespaces, slirp4netns,
# scratch folders, secret files, job processes):
#   - a timeout: reported "timed out" (not "failed"), exit 1, the container's processes gone
#   - allow_failure: the pipeline passes, the job shows "allowed failure"
#   - retry: a job that passes on its second attempt (SLIPWAY_JOB_ATTEMPT), one that never does
#   - `when`: branch patterns, tags, changed paths
#   - a service ready by a command; a service that never gets ready (exit 3, the job never
#     runs); `slipway lint` of a broken and a good file
#   - a job cache restored on the second run, keyed by ${checksum(FILE)}
#   - a secret printed in two chunks with a pause between them, and in base64: masked in the
#     console, the log file, the events and the JUnit report
#   - SIGTERM while a job runs: exit 143, the job "cancelled", nothing promoted; a second SIGTERM
#     ends a job that ignores SIGTERM at once instead of after the grace
#   - SIGKILL of slipway while a job and a service run (private network: slirp4netns), then the
#     next `slipway run` removes everything the killed one left
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"
# shellcheck source=tests/integration/lib_run.sh
source "$SW_TEST_SRCDIR/tests/integration/lib_run.sh"

sw_tmpdir
run_setup

# ---------------------------------------------------------------- timeout
note "timeout"
set_pipeline <<'EOF2'
stages:
  - name: test
    jobs:
      - name: slow
        run: sleep 60
        timeout: 2s
EOF2
run_pipeline timeout
assert_eq 1 "$RC" "exit code of a timed-out pipeline (stderr: $ERR)"
assert_eq "timed out" "$(job_field "$T/timeout.events" slow state)" "state of the slow job"
assert_contains "$OUT$ERR" "timed out"
assert_clean "after a timeout"

# ---------------------------------------------------------------- allow_failure and retry
note "allow_failure, retry"
set_pipeline <<'EOF2'
stages:
  - name: test
    jobs:
      - name: flaky-allowed
        run: exit 3
        allow_failure: true
      - name: second-time-lucky
        run:
          - echo "attempt $SLIPWAY_JOB_ATTEMPT"
          - test "$SLIPWAY_JOB_ATTEMPT" -ge 2
        retry: 2
EOF2
run_pipeline retry
assert_eq 0 "$RC" "exit code with an allowed failure and a retried job (stderr: $ERR)"
assert_eq "allowed failure" "$(job_field "$T/retry.events" flaky-allowed state)"
assert_eq "passed" "$(job_field "$T/retry.events" second-time-lucky state)"
assert_eq 2 "$(job_field "$T/retry.events" second-time-lucky attempt)" "attempts used"
assert_contains "$(cat "$T/retry.out.d/logs/second-time-lucky.log")" "attempt 2"

set_pipeline <<'EOF2'
stages:
  - name: test
    jobs:
      - name: never
        run: "false"
        retry: 1
EOF2
run_pipeline retry-fail
assert_eq 1 "$RC" "a job failing on every attempt fails the pipeline"
assert_eq "failed" "$(job_field "$T/retry-fail.events" never state)"
assert_eq 2 "$(job_field "$T/retry-fail.events" never attempt)" "attempts of the failing job"
assert_clean "after allow_failure and retry"

# ---------------------------------------------------------------- when
note "when: branch, tag, changes"
mkdir -p "$REPO/src" "$REPO/docs"
echo one >"$REPO/docs/readme.txt"
set_pipeline "docs only" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: always
        run: "true"
      - name: on-main
        run: "true"
        when: { branch: [main] }
      - name: on-release
        run: "true"
        when: { branch: ["release/*"] }
      - name: on-tag
        run: "true"
        when: { tag: true }
      - name: src-changed
        run: "true"
        when: { changes: ["src/**"] }
      - name: docs-changed
        run: "true"
        when: { changes: ["docs/**"] }
EOF2
run_pipeline when-main
assert_eq 0 "$RC" "when pipeline on main (stderr: $ERR)"
assert_eq passed "$(job_field "$T/when-main.events" always state)"
assert_eq passed "$(job_field "$T/when-main.events" on-main state)"
assert_eq skipped "$(job_field "$T/when-main.events" on-release state)"
assert_eq skipped "$(job_field "$T/when-main.events" on-tag state)"
assert_eq skipped "$(job_field "$T/when-main.events" src-changed state)"
assert_eq passed "$(job_field "$T/when-main.events" docs-changed state)"

git -C "$REPO" checkout -q -b release/1.0
echo two >"$REPO/src/main.c"
git -C "$REPO" add -A
git -C "$REPO" commit -q -m "src change"
git -C "$REPO" tag v1.0
run_pipeline when-release --rev release/1.0
assert_eq 0 "$RC" "when pipeline on release/1.0 (stderr: $ERR)"
assert_eq skipped "$(job_field "$T/when-release.events" on-main state)"
assert_eq passed "$(job_field "$T/when-release.events" on-release state)"
assert_eq passed "$(job_field "$T/when-release.events" src-changed state)"
assert_eq skipped "$(job_field "$T/when-release.events" docs-changed state)"
run_pipeline when-tag --rev v1.0
assert_eq 0 "$RC" "when pipeline on tag v1.0 (stderr: $ERR)"
assert_eq passed "$(job_field "$T/when-tag.events" on-tag state)"
git -C "$REPO" checkout -q main

# ---------------------------------------------------------------- job caches
note "job cache"
echo "lock 1" >"$REPO/deps.lock"
set_pipeline "cache" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: deps
        run:
          - if [ -f vendor/stamp ]; then echo "restored $(cat vendor/stamp)"; else mkdir -p vendor && echo "made-$SLIPWAY_PIPELINE_ID" > vendor/stamp && echo fresh; fi
        cache: { key: "deps-${checksum(deps.lock)}", paths: [vendor] }
EOF2
run_pipeline cache1
assert_eq 0 "$RC" "first cached run (stderr: $ERR)"
first=$(cat "$T/cache1.out.d/logs/deps.log")
assert_contains "$first" "fresh"
run_pipeline cache2
assert_eq 0 "$RC" "second cached run (stderr: $ERR)"
second=$(cat "$T/cache2.out.d/logs/deps.log")
assert_contains "$second" "restored made-"
echo "lock 2" >"$REPO/deps.lock"
git -C "$REPO" commit -q -am "new lock"
run_pipeline cache3
assert_contains "$(cat "$T/cache3.out.d/logs/deps.log")" "fresh" "a new lock file is a new key"
assert_clean "after the cached runs"

# ---------------------------------------------------------------- secrets
note "secret masking"
SECRET="s3cr3t-$RANDOM-value-$RANDOM"
B64=$(printf '%s' "$SECRET" | base64)
set_pipeline "secrets" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: leaky
        secrets: [API_TOKEN]
        run:
          - printf '%s' "$(echo "$API_TOKEN" | cut -c1-7)"; sleep 0.5; echo "$API_TOKEN" | cut -c8-
          - echo "b64 $(printf '%s' "$API_TOKEN" | base64)"
          - echo "whole $API_TOKEN"
          - printf '<testsuite name="s" tests="1" failures="1"><testcase name="t"><failure message="%s"/></testcase></testsuite>' "$API_TOKEN" > report.xml
          - exit 1
        reports: { junit: report.xml }
        artifacts: { paths: [report.xml], when: always }
EOF2
API_TOKEN=$SECRET run_pipeline secret --secret API_TOKEN --junit "$T/secret.junit.xml"
assert_eq 1 "$RC" "the leaky job fails"
for f in "$T/secret.out" "$T/secret.err" "$T/secret.events" "$T/secret.junit.xml" \
	"$T/secret.out.d/logs/leaky.log"; do
	[ -f "$f" ] || fail "missing $f"
	if grep -qF -- "$SECRET" "$f"; then
		fail "the secret is in $f: $(grep -F -- "$SECRET" "$f" | head -3)"
	fi
	if grep -qF -- "$B64" "$f"; then
		fail "the secret's base64 form is in $f"
	fi
done
assert_contains "$(cat "$T/secret.out.d/logs/leaky.log")" "[MASKED]"
if grep -rqF -- "$SECRET" "$STATE" 2>/dev/null; then
	fail "the secret reached the state folder: $(grep -rlF -- "$SECRET" "$STATE" | head)"
fi
assert_clean "after the secret job"

# ---------------------------------------------------------------- readiness by command; never ready
note "services: readiness by a command; a service that never gets ready"
set_pipeline "ready-run" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: late-web
        services:
          - name: web
            image: "${SLIPWAY_IMAGE}"
            command: ["sh", "-c", "sleep 1; echo up > /up.txt; exec httpd -f -p 8080 -h /"]
            ready: { run: "wget -q -O /dev/null http://127.0.0.1:8080/up.txt", timeout: 30s, interval: 200ms }
        run: wget -q -O - http://web:8080/up.txt
EOF2
run_pipeline ready-run
assert_eq 0 "$RC" "a service ready by command (stderr: $ERR)"
assert_contains "$(cat "$T/ready-run.out.d/logs/late-web.log")" "up"
set_pipeline "never-ready" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: lonely
        services:
          - name: db
            image: bb:1
            command: ["sleep", "60"]
            ready: { tcp: 5432, timeout: 2s }
        run: echo "must not run"
EOF2
run_pipeline never-ready
assert_eq 3 "$RC" "a service that never gets ready is an infrastructure error (stderr: $ERR)"
assert_eq error "$(job_field "$T/never-ready.events" lonely state)"
assert_contains "$(job_field "$T/never-ready.events" lonely message)" "db"
assert_not_contains "$(cat "$T/never-ready.out.d/logs/lonely.log")" "must not run"
assert_clean "after the services"

# ---------------------------------------------------------------- lint
note "slipway lint"
printf 'stages:\n  - name: t\n    jobs:\n      - name: a\n        run: x\n        timeout: soon\n        servces: []\n' >"$T/bad.yml"
run lint-bad "$SLIPWAY" lint "$T/bad.yml"
assert_eq 2 "$RC" "lint of a broken file"
assert_contains "$ERR" "bad.yml:6:18"
assert_contains "$ERR" "bad.yml:7:9"
assert_contains "$ERR" "did you mean 'services'"
run_ok lint-good "$SLIPWAY" lint "$REPO/.slipway.yml"
assert_contains "$OUT" ": ok"
run_pipeline bad-run --file ../bad.yml
assert_eq 2 "$RC" "a pipeline file outside the checkout is refused"

# ---------------------------------------------------------------- SIGTERM
note "SIGTERM cancels"
set_pipeline "cancel" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: sleeper
        run: sleep 120
  - name: after
    jobs:
      - name: later
        run: "true"
EOF2
# wait_running EVENTS JOB PID: until JOB's state is running (bounded)
wait_running() {
	local i
	for ((i = 0; i < 600; i++)); do
		[ "$(job_field "$1" "$2" state)" = running ] && return 0
		kill -0 "$3" 2>/dev/null || fail "slipway exited before $2 ran: $(cat "$T/bg.err")"
		sleep 0.1
	done
	fail "$2 never ran: $(cat "$T/bg.err")"
}
"$SLIPWAY" run --repo "$REPO" --events "$T/term.events" --output "$T/term.out.d" \
	--progress plain >"$T/bg.out" 2>"$T/bg.err" &
bg=$!
sw_track_pid "$bg"
wait_running "$T/term.events" sleeper "$bg"
sleep 0.5
kill -TERM "$bg"
set +e
wait "$bg"
rc=$?
set -e
sw_stop_pid "$bg"
assert_eq 143 "$rc" "exit code after SIGTERM (stderr: $(cat "$T/bg.err"))"
assert_eq cancelled "$(job_field "$T/term.events" sleeper state)"
[ "$(job_field "$T/term.events" later state)" != passed ] || fail "a job ran after the cancel"
assert_clean "after SIGTERM"

# ---------------------------------------------------------------- a second SIGTERM: no grace
note "a second SIGTERM kills at once"
set_pipeline "stubborn" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: stubborn
        run: ["trap '' TERM; echo up; while true; do sleep 1; done"]
EOF2
"$SLIPWAY" run --repo "$REPO" --events "$T/stub.events" --output "$T/stub.out.d" \
	--progress plain >"$T/bg.out" 2>"$T/bg.err" &
bg=$!
sw_track_pid "$bg"
wait_running "$T/stub.events" stubborn "$bg"
sleep 0.5
kill -TERM "$bg"
sleep 1
kill -0 "$bg" 2>/dev/null || fail "the job ignoring SIGTERM ended before its grace: $(cat "$T/bg.err")"
t0=$(date +%s%N)
kill -TERM "$bg"
set +e
wait "$bg"
rc=$?
set -e
t1=$(date +%s%N)
sw_stop_pid "$bg"
assert_eq 143 "$rc" "exit code after two SIGTERMs"
[ $(((t1 - t0) / 1000000)) -lt 5000 ] ||
	fail "the second SIGTERM took $(((t1 - t0) / 1000000)) ms to end the run (the grace is 10 s)"
assert_eq cancelled "$(job_field "$T/stub.events" stubborn state)"
assert_clean "after two SIGTERMs"

# ---------------------------------------------------------------- SIGKILL, then the next run
note "SIGKILL, then the next run cleans up"
set_pipeline "kill" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: victim
        network: private
        services:
          - name: web
            image: "${SLIPWAY_IMAGE}"
            command: ["httpd", "-f", "-p", "8080", "-h", "/"]
            ready: { tcp: 8080, timeout: 30s }
        run: sleep 120
EOF2
"$SLIPWAY" run --repo "$REPO" --events "$T/kill.events" --output "$T/kill.out.d" \
	--progress plain >"$T/bg.out" 2>"$T/bg.err" &
bg=$!
sw_track_pid "$bg"
wait_running "$T/kill.events" victim "$bg"
sleep 0.5
[ -n "$(token_pids)" ] || fail "no job process carries the token while the job runs"
kill -KILL "$bg"
wait "$bg" 2>/dev/null || true
sw_stop_pid "$bg"
# the killed run left things behind (or this part would prove nothing): its mounts, its
# network namespace, its boxes
left=$(awk -v d="$T" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | wc -l)
left_ns=$(find "$STATE/exec/netns" -mindepth 1 -maxdepth 1 ! -name '*.owner' ! -name '*.log' 2>/dev/null | wc -l)
note "after SIGKILL: $left mounts, $left_ns network namespaces, $(token_pids | wc -w) job processes"
[ "$left" -gt 0 ] || [ "$left_ns" -gt 0 ] || fail "the SIGKILL left nothing to clean up"
set_pipeline "quick" <<'EOF2'
stages:
  - name: test
    jobs:
      - name: quick
        run: "true"
EOF2
run_pipeline after-kill
assert_eq 0 "$RC" "the run after a SIGKILL (stderr: $ERR)"
assert_clean "after SIGKILL and the next run"
echo "ok"
