#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `slipway agent`'s /metrics and /healthz: one pipeline (an image built from a Dockerfile with a
# RUN step, two jobs, a promotion to the real registry) run by the agent from a watched file://
# repository, next to a repository that does not exist; then a scrape whose numbers are checked
# against the run's own events: pipelines_total{result="passed"} 1, nothing running or queued,
# the histogram counts (one pipeline, the build steps, two jobs), cache hits and misses equal to
# the build's cached and built steps, the bytes pushed equal to the promotion's, polls counted
# for both repositories and errors only for the missing one. A second commit (same Dockerfile)
# adds cache hits only. /healthz answers "ok", other paths 404, and the server listens on
# 127.0.0.1 only (its listening socket).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_run.sh"
. "$(dirname "$0")/lib_agent.sh"

sw_tmpdir
command -v runc >/dev/null || {
	echo "SKIP: runc is not installed"
	exit 0
}
run_setup
start_registry plain

cat >>"$REPO/Dockerfile" <<'DF'
RUN echo built > /built.txt
DF
cat >"$REPO/.slipway.yml" <<EOF
stages:
  - name: test
    jobs:
      - name: one
        run: [ "cat /built.txt", "sleep 1" ]
      - name: two
        run: echo two
promote:
  - to: $REGISTRY/team/metrics
    tags: [latest]
EOF
commit_file README "first" "first"
C1=$SHA

MPORT=$(free_port)
# shellcheck disable=SC2034 # read by agent_config (lib_agent.sh)
METRICS_ADDR="127.0.0.1:$MPORT"
agent_config "$T/agent.yml" "  - name: gone
    url: file://$T/no-such-repository
    poll: 1s"
agent_start
M="http://127.0.0.1:$MPORT"

healthy() {
	[ "$(curl -s --max-time 5 "$M/healthz" || true)" = ok ]
}
wait_until 30 "/healthz" healthy
assert_eq 404 "$(http_code "$M/nope")" "GET /nope"
assert_eq 404 "$(http_code "$M/")" "GET /"

# metric NAME{LABELS}: the value of one sample ("" when absent)
metric() {
	curl -fsS --max-time 10 "$M/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}

wait_until 120 "commit ${C1:0:8} to pass" state_is "$C1" passed 1
# passed_count N: the scrape says N pipelines of app passed
passed_count() {
	[ "$(metric 'slipway_pipelines_total{source="app",result="passed"}')" = "$1" ]
}
wait_until 30 "the pipeline to be counted" passed_count 1

EV=$(run_events "$C1" 1)
[ -f "$EV" ] || fail "no events of ${C1:0:8}"
read -r STEPS CACHED PUSHED < <(python3 - "$EV" <<'PY'
import json, sys
steps = cached = pushed = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["type"] == "build" and e["state"] == "done":
        steps, cached = e["steps"], e["cached_steps"]
    if e["type"] == "promotion" and e["state"] == "pushed":
        pushed += e.get("bytes", 0)
print(steps, cached, pushed)
PY
)
[ "$STEPS" -ge 2 ] || fail "the build had $STEPS steps"
[ "$PUSHED" -gt 0 ] || fail "the promotion event has no bytes"

SCRAPE=$(curl -fsS --max-time 10 -D "$T/headers" "$M/metrics")
echo "$SCRAPE" >"$T/scrape1.txt"
assert_contains "$(tr -d '\r' <"$T/headers")" "Content-Type: text/plain; version=0.0.4"
val() {
	awk -v k="$1" '$1 == k { print $2 }' "$T/scrape1.txt"
}
assert_eq 1 "$(val 'slipway_pipelines_total{source="app",result="passed"}')" "pipelines passed"
assert_eq "" "$(val 'slipway_pipelines_total{source="app",result="failed"}')" "pipelines failed"
assert_eq 0 "$(val slipway_jobs_running)" "jobs running"
assert_eq 0 "$(val slipway_jobs_queued)" "jobs queued"
assert_eq 1 "$(val slipway_pipeline_duration_seconds_count)" "pipeline histogram count"
assert_eq 1 "$(val 'slipway_pipeline_duration_seconds_bucket{le="+Inf"}')" "pipeline +Inf bucket"
assert_eq "$STEPS" "$(val 'slipway_step_duration_seconds_count{kind="build"}')" \
	"build step histogram count"
assert_eq 2 "$(val 'slipway_step_duration_seconds_count{kind="job"}')" "job histogram count"
assert_eq 2 "$(val 'slipway_step_duration_seconds_bucket{kind="job",le="+Inf"}')" \
	"job +Inf bucket"
# every bucket of both step histograms against the durations in the run's events
python3 - "$EV" "$T/scrape1.txt" <<'PY' || fail "the step histograms do not match the events"
import json, re, sys
dur = {"build": [], "job": []}
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["type"] == "build_step" and e["state"] in ("done", "failed"):
        dur["build"].append(e.get("duration_ms", 0) / 1000.0)
    if e["type"] == "job" and e["state"] not in ("running", "retrying") and "duration_ms" in e:
        dur["job"].append(e["duration_ms"] / 1000.0)
n = 0
for line in open(sys.argv[2]):
    m = re.match(r'slipway_step_duration_seconds_bucket\{kind="(\w+)",le="([^"]+)"\} (\d+)$', line)
    if not m:
        continue
    le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
    want = sum(1 for d in dur[m.group(1)] if d <= le)
    assert int(m.group(3)) == want, (line, want, dur)
    n += 1
assert n == 32, n
PY
assert_eq "$CACHED" "$(val slipway_cache_hits_total)" "cache hits"
assert_eq "$((STEPS - CACHED))" "$(val slipway_cache_misses_total)" "cache misses"
[ "$((STEPS - CACHED))" -ge 1 ] || fail "the RUN step was not built"
assert_eq "$PUSHED" "$(val slipway_registry_bytes_pushed_total)" "bytes pushed"
P=$(val 'slipway_polls_total{source="app"}')
[ -n "$P" ] && [ "$P" -gt 0 ] || fail "polls_total of app is '$P'"
assert_eq 0 "$(val 'slipway_poll_errors_total{source="app"}')" "poll errors of app"
E=$(val 'slipway_poll_errors_total{source="gone"}')
[ -n "$E" ] && [ "$E" -gt 0 ] || fail "poll_errors_total of the missing repository is '$E'"
for fam in jobs_running:gauge pipelines_total:counter pipeline_duration_seconds:histogram \
	step_duration_seconds:histogram cache_hits_total:counter registry_bytes_pulled_total:counter \
	polls_total:counter poll_errors_total:counter; do
	assert_contains "$SCRAPE" "# TYPE slipway_${fam%%:*} ${fam#*:}"
	assert_contains "$SCRAPE" "# HELP slipway_${fam%%:*} "
done

# the same Dockerfile again: every build step is a cache hit
note "a second commit: cache hits only"
commit_file README "second" "second"
C2=$SHA
wait_until 120 "commit ${C2:0:8} to pass" state_is "$C2" passed 1
wait_until 30 "the second pipeline to be counted" passed_count 2
curl -fsS --max-time 10 "$M/metrics" >"$T/scrape1.txt"
assert_eq "$((CACHED + STEPS))" "$(val slipway_cache_hits_total)" "cache hits after the second"
assert_eq "$((STEPS - CACHED))" "$(val slipway_cache_misses_total)" \
	"cache misses after the second"
assert_eq 2 "$(val slipway_pipeline_duration_seconds_count)" "pipelines in the histogram"
assert_eq 4 "$(val 'slipway_step_duration_seconds_count{kind="job"}')" "jobs in the histogram"

# loopback only: the one listening socket on the port is bound to 127.0.0.1
assert_eq "127.0.0.1:$MPORT" "$(ss -Hltn "sport = :$MPORT" | awk '{ print $4 }')" \
	"the metrics listening socket"

agent_stop
assert_eq 000 "$(http_code "$M/healthz")" "/healthz after the agent stopped"
assert_clean "at the end"
note "ok"
