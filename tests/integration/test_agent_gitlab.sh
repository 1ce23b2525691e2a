#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `slipway agent` as a GitLab runner, against tools/gitlabserver.py (the runner API written
# from the spec) on 127.0.0.1 and the real registry: a refused token (clear error, retried) then
# verified; long polling (the server holds the request, last_update comes back); a passing job
# (the whole trace with its crc32 and byte size, success, a masked variable never in the trace,
# a file variable as a file, after_script, a raw variable); a failing job (script_failure and
# its exit code); a timeout (job_execution_timeout); 5xx and a 416 during the trace (retried,
# resumed from Range, the stored trace byte-exact); cancellation through Job-Status; artifacts
# uploaded as zip (its file list) and downloaded by a dependent job; SLIPWAY_BUILD pushing
# $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA, a later job using it from the local store without a pull,
# and SLIPWAY_PROMOTE tagging the tested digest; nothing left behind.
. "$(dirname "$0")/lib.sh"
sw_tmpdir
command -v runc >/dev/null || {
	echo "SKIP: runc is not installed"
	exit 0
}
# shellcheck source=tests/integration/lib_run.sh
. "$SW_ITEST_DIR/lib_run.sh"
# shellcheck source=tests/integration/lib_agent.sh
. "$SW_ITEST_DIR/lib_agent.sh"
run_setup
start_registry plain
echo "hello" >"$REPO/hello.txt"
cat >"$REPO/Dockerfile" <<'DF'
FROM bb:1
RUN echo "built by slipway" > /built.txt
DF
git -C "$REPO" add -A
git -C "$REPO" commit -q -m "app"
SHA=$(git -C "$REPO" rev-parse HEAD)

# ---------------------------------------------------------------- the server and the agent
python3 "$SW_TOOLS/gitlabserver.py" --port-file "$T/gl.port" --hold 3 --trace-interval 1 \
	>"$T/gitlab.log" 2>&1 &
sw_track_pid $! "$T/gitlab.log"
for _ in $(seq 50); do [ -s "$T/gl.port" ] && break; sleep 0.1; done
[ -s "$T/gl.port" ] || fail "gitlabserver did not start: $(cat "$T/gitlab.log")"
GL="http://127.0.0.1:$(cat "$T/gl.port")"

# gl METHOD PATH [JSON]: a control call; prints the answer
gl() {
	curl -fsS -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "$GL$2"
}
# jq_ JSON-TEXT PYEXPR: evaluate PYEXPR with d = the parsed JSON
jq_() {
	python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=eval(sys.argv[2]); print(v if isinstance(v,str) else json.dumps(v))' "$1" "$2"
}
add_job() { jq_ "$(gl POST /control/jobs "$1")" 'd["id"]'; }
job() { gl GET "/control/jobs/$1"; }
job_final() { [ "$(jq_ "$(job "$1")" 'd["final"] is not None')" = true ]; }
trace_has() {
	local tr
	tr=$(jq_ "$(job "$1")" 'd["trace"]')
	grep -q -- "$2" <<<"$tr"
}

export GITLAB_TOKEN=glrt-slipway-test-token
AGENT_CONF=$T/agent.yml
cat >"$AGENT_CONF" <<EOF
concurrency: 4
state_dir: $STATE
executor: { backend: oci, runtime: runc }
log: { format: text, level: info }
metrics: { listen: "" }
shutdown_timeout: 60s
gitlab:
  - name: gl
    url: $GL
    token: { env: GITLAB_TOKEN }
    poll: 1s
    limit: 4
EOF
agent_start

# ---------------------------------------------------------------- verify: refused, then taken
wait_until 20 "a verify call" grep -q "refused the runner token" "$T/agent.log"
refusal=$(grep -m1 "refused the runner token" "$T/agent.log")
assert_contains "$refusal" "HTTP 403: 403 Forbidden" "the refusal"
assert_contains "$refusal" "retrying in" "the refusal"
assert_not_contains "$(cat "$T/agent.log")" "$GITLAB_TOKEN"
gl POST /control/tokens "{\"accept\": [\"$GITLAB_TOKEN\"]}" >/dev/null
wait_until 30 "the token verified after a retry" grep -q "runner token verified" "$T/agent.log"
stats=$(gl GET /control/stats)
[ "$(jq_ "$stats" 'len(d["verify"])')" -ge 2 ] || fail "verify was not retried: $stats"
[ "$(jq_ "$stats" 'd["verify"][-1]["system_id"][:2]')" = s_ ] || fail "no system_id: $stats"
# the features advertised are what slipway does
feat=$(jq_ "$stats" 'd["verify"][-1]["info"]["features"]')
for f in artifacts cancelable masking variables services image trace_checksum trace_size \
	raw_variables; do
	[ "$(jq_ "$feat" "d[\"$f\"]")" = true ] || fail "feature $f not advertised: $feat"
done
for f in cache session terminal vault_secrets; do
	[ "$(jq_ "$feat" "d[\"$f\"]")" = false ] || fail "feature $f advertised: $feat"
done

# ---------------------------------------------------------------- long polling
held() {
	jq_ "$(gl GET /control/stats)" \
		'len([r for r in d["requests"] if r.get("last_update") and r.get("held", 0) >= 2.5])'
}
held_ok() { [ "$(held)" -ge 1 ]; }
wait_until 20 "a long-polled request held by the server" held_ok
stats=$(gl GET /control/stats)
lu=$(jq_ "$stats" '[r for r in d["requests"] if r.get("held")][0]["last_update"]')
[ "$lu" = "$(jq_ "$stats" 'str(d["queue_value"])')" ] ||
	fail "last_update $lu is not the server's X-GitLab-Last-Update: $stats"

# ---------------------------------------------------------------- four jobs at once
REPO_URL="file://$REPO"
common="\"repo_url\": \"$REPO_URL\", \"sha\": \"$SHA\", \"image\": \"bb:1\""
SECRET=masked-s3cr3t-$RANDOM$RANDOM
PASS=$(add_job "{$common, \"name\": \"pass\", \"timeout\": 120,
  \"script\": [\"echo hello from \$CI_JOB_NAME\", \"cat hello.txt\", \"echo the secret is \$MY_SECRET\",
               \"cat \$MY_FILE\", \"echo raw=\$RAW_VAR\", \"echo plain=\$PLAIN\"],
  \"after_script\": [\"echo after script ran\"],
  \"variables\": [
    {\"key\": \"MY_SECRET\", \"value\": \"$SECRET\", \"public\": false, \"masked\": true},
    {\"key\": \"MY_FILE\", \"value\": \"file-content-xyz\", \"public\": false, \"masked\": false, \"file\": true},
    {\"key\": \"RAW_VAR\", \"value\": \"a\$HOME-b\", \"public\": true, \"masked\": false, \"raw\": true},
    {\"key\": \"PLAIN\", \"value\": \"plain-value\", \"public\": true, \"masked\": false}]}")
FAIL=$(add_job "{$common, \"name\": \"fail\", \"script\": [\"echo about to fail\", \"exit 3\"],
  \"variables\": [{\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}]}")
SLOW=$(add_job "{$common, \"name\": \"slow\", \"timeout\": 3, \"script\": [\"echo sleeping\", \"sleep 60\"],
  \"variables\": [{\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}]}")
NOISY=$(add_job "{$common, \"name\": \"noisy\",
  \"script\": [\"for i in 1 2 3 4 5 6 7 8; do echo line-\$i-abcdefghijklmnopqrstuvwxyz; sleep 1; done\"],
  \"variables\": [{\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}]}")
gl POST "/control/jobs/$NOISY/faults" '{"fail5xx": 2, "truncate_at_patch": 4}' >/dev/null

for id in "$PASS" "$FAIL" "$SLOW" "$NOISY"; do
	wait_until 120 "the final update of job $id" job_final "$id"
done

# the passing job: state, trace, checksum and size
j=$(job "$PASS")
[ "$(jq_ "$j" 'd["final"]["state"]')" = success ] || fail "pass: $(jq_ "$j" 'd["final"]') $(jq_ "$j" 'd["trace"]')"
[ "$(jq_ "$j" 'd["final"]["checksum"]')" = "$(jq_ "$j" 'd["trace_crc"]')" ] ||
	fail "pass: checksum $(jq_ "$j" 'd["final"]["checksum"]') but the trace is $(jq_ "$j" 'd["trace_crc"]')"
[ "$(jq_ "$j" 'd["final"]["output"]["bytesize"]')" = "$(jq_ "$j" 'd["trace_len"]')" ] ||
	fail "pass: bytesize differs from the trace's $(jq_ "$j" 'd["trace_len"]')"
[ "$(jq_ "$j" 'd["puts"][0]["state"]')" = running ] || fail "pass: not accepted with PUT running"
[ "$(jq_ "$j" 'd["puts"][0]["job_token_header"]')" = true ] || fail "pass: no JOB-TOKEN header"
tr=$(jq_ "$j" 'd["trace"]')
for want in "hello from pass" "^hello$" "the secret is \[MASKED\]" "file-content-xyz" \
	'raw=a\$HOME-b' "plain=plain-value" "after script ran" '\$ cat hello.txt'; do
	grep -q -- "$want" <<<"$tr" || fail "pass: '$want' not in the trace: $tr"
done
assert_not_contains "$tr" "$SECRET"
assert_not_contains "$tr" "$(jq_ "$j" 'd["id"]') glcbt-"
grep -rqs -- "$SECRET" "$STATE/agent" && fail "the masked value is in the agent's files"
assert_not_contains "$(cat "$T/agent.log")" "$SECRET"

# the failing job
j=$(job "$FAIL")
[ "$(jq_ "$j" 'd["final"]["state"]')" = failed ] || fail "fail: $(jq_ "$j" 'd["final"]')"
[ "$(jq_ "$j" 'd["final"]["failure_reason"]')" = script_failure ] || fail "fail: $(jq_ "$j" 'd["final"]')"
[ "$(jq_ "$j" 'd["final"]["exit_code"]')" = 3 ] || fail "fail: $(jq_ "$j" 'd["final"]')"
trace_has "$FAIL" "about to fail" || fail "fail: trace $(jq_ "$j" 'd["trace"]')"

# the timeout
j=$(job "$SLOW")
[ "$(jq_ "$j" 'd["final"]["failure_reason"]')" = job_execution_timeout ] ||
	fail "slow: $(jq_ "$j" 'd["final"]') $(jq_ "$j" 'd["trace"]')"

# 5xx and 416 during the trace: retried, resumed, byte-exact
j=$(job "$NOISY")
[ "$(jq_ "$j" 'd["final"]["state"]')" = success ] || fail "noisy: $(jq_ "$j" 'd["final"]')"
[ "$(jq_ "$j" 'd["n5xx"]')" = 2 ] || fail "noisy: 5xx answers: $(jq_ "$j" 'd["n5xx"]')"
[ "$(jq_ "$j" 'd["n416"]')" -ge 1 ] || fail "noisy: no 416 happened (truncated to $(jq_ "$j" 'd["truncated_to"]'))"
[ "$(jq_ "$j" 'd["final"]["checksum"]')" = "$(jq_ "$j" 'd["trace_crc"]')" ] ||
	fail "noisy: the stored trace is not what the runner sent: $(jq_ "$j" 'd["trace"]')"
tr=$(jq_ "$j" 'd["trace"]')
for i in 1 2 3 4 5 6 7 8; do
	[ "$(grep -c "^line-$i-abcdefghijklmnopqrstuvwxyz$" <<<"$tr")" = 1 ] ||
		fail "noisy: line $i not exactly once: $tr"
done

# ---------------------------------------------------------------- cancellation
CANCEL=$(add_job "{$common, \"name\": \"cancel-me\",
  \"script\": [\"for i in \$(seq 1 120); do echo tick \$i; sleep 1; done\"],
  \"variables\": [{\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}]}")
wait_until 60 "job cancel-me ticking" trace_has "$CANCEL" "tick 2"
gl POST "/control/jobs/$CANCEL/cancel" '{"status": "canceling"}' >/dev/null
t0=$(date +%s)
wait_until 40 "cancel-me ended" job_final "$CANCEL"
t1=$(date +%s)
[ $((t1 - t0)) -le 25 ] || fail "cancel took $((t1 - t0))s"
j=$(job "$CANCEL")
[ "$(jq_ "$j" 'd["final"]["state"]')" = failed ] || fail "cancel: $(jq_ "$j" 'd["final"]')"
[ "$(jq_ "$j" 'd["final"]["failure_reason"]')" = job_canceled ] || fail "cancel: $(jq_ "$j" 'd["final"]')"
trace_has "$CANCEL" "tick 100" && fail "cancel: the job ran on"

# ---------------------------------------------------------------- artifacts
MAKE=$(add_job "{$common, \"name\": \"make\",
  \"script\": [\"mkdir -p out/sub && echo artifact-data > out/a.txt && echo b > out/sub/b.txt && echo no > other.txt\"],
  \"artifacts\": [{\"name\": \"build-out\", \"paths\": [\"out/\"], \"when\": \"on_success\", \"expire_in\": \"1 week\", \"artifact_type\": \"archive\", \"artifact_format\": \"zip\"}],
  \"variables\": [{\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}]}")
wait_until 60 "job make ended" job_final "$MAKE"
j=$(job "$MAKE")
[ "$(jq_ "$j" 'd["final"]["state"]')" = success ] || fail "make: $(jq_ "$j" 'd["final"]') $(jq_ "$j" 'd["trace"]')"
[ "$(jq_ "$j" 'sorted(d["artifacts"])')" = '["out/", "out/a.txt", "out/sub/", "out/sub/b.txt"]' ] ||
	fail "make: artifacts zip holds $(jq_ "$j" 'd["artifacts"]')"
[ "$(jq_ "$j" 'd["artifact_filename"]')" = build-out.zip ] || fail "make: $(jq_ "$j" 'd["artifact_filename"]')"
[ "$(jq_ "$j" 'd["artifact_query"]["artifact_format"]')" = zip ] || fail "make: $(jq_ "$j" 'd["artifact_query"]')"
[ "$(jq_ "$j" 'd["artifact_query"]["expire_in"]')" = "1 week" ] || fail "make: $(jq_ "$j" 'd["artifact_query"]')"
USE=$(add_job "{$common, \"name\": \"use\", \"dependencies\": [$MAKE],
  \"script\": [\"cat out/a.txt out/sub/b.txt\", \"test ! -e other.txt\"],
  \"variables\": [{\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}]}")
wait_until 60 "job use ended" job_final "$USE"
j=$(job "$USE")
[ "$(jq_ "$j" 'd["final"]["state"]')" = success ] || fail "use: $(jq_ "$j" 'd["trace"]')"
trace_has "$USE" "^artifact-data$" || fail "use: $(jq_ "$j" 'd["trace"]')"

# ---------------------------------------------------------------- SLIPWAY_BUILD and SLIPWAY_PROMOTE
IMG="$REGISTRY/group/app"
regvars="{\"key\": \"CI_REGISTRY\", \"value\": \"$REGISTRY\", \"public\": true, \"masked\": false},
  {\"key\": \"CI_REGISTRY_IMAGE\", \"value\": \"$IMG\", \"public\": true, \"masked\": false},
  {\"key\": \"CI_REGISTRY_USER\", \"value\": \"gitlab-ci-token\", \"public\": true, \"masked\": false},
  {\"key\": \"CI_REGISTRY_PASSWORD\", \"value\": \"registry-pass-$RANDOM$RANDOM\", \"public\": false, \"masked\": true},
  {\"key\": \"SLIPWAY_NETWORK\", \"value\": \"none\", \"public\": true, \"masked\": false}"
BUILD=$(add_job "{\"repo_url\": \"$REPO_URL\", \"sha\": \"$SHA\", \"name\": \"build\", \"image\": \"bb:1\",
  \"script\": [\"echo build job\"],
  \"variables\": [$regvars, {\"key\": \"SLIPWAY_BUILD\", \"value\": \"Dockerfile\", \"public\": true, \"masked\": false}]}")
wait_until 120 "job build ended" job_final "$BUILD"
j=$(job "$BUILD")
[ "$(jq_ "$j" 'd["final"]["state"]')" = success ] || fail "build: $(jq_ "$j" 'd["trace"]')"
DIGEST=$(registry_manifest_digest "$REGISTRY" group/app "$SHA")
[ -n "$DIGEST" ] || fail "build: $IMG:$SHA is not in the registry"
run_ok ls "$SLIPWAY" image ls
assert_contains "$OUT" "$IMG:$SHA"
gets_before=$(grep -c "GET /v2/group/app/manifests" "$REGISTRY_LOG" || true)
TEST=$(add_job "{\"repo_url\": \"$REPO_URL\", \"sha\": \"$SHA\", \"name\": \"test-image\",
  \"image\": \"$IMG:$SHA\", \"script\": [\"cat /built.txt\"],
  \"variables\": [$regvars, {\"key\": \"SLIPWAY_PROMOTE\", \"value\": \"latest, v1\", \"public\": true, \"masked\": false}]}")
wait_until 120 "job test-image ended" job_final "$TEST"
j=$(job "$TEST")
[ "$(jq_ "$j" 'd["final"]["state"]')" = success ] || fail "test-image: $(jq_ "$j" 'd["trace"]')"
trace_has "$TEST" "^built by slipway$" || fail "test-image: $(jq_ "$j" 'd["trace"]')"
trace_has "$TEST" "from the local store" || fail "test-image: promotion did not use the store"
gets_after=$(grep -c "GET /v2/group/app/manifests" "$REGISTRY_LOG" || true)
[ "$gets_after" = "$gets_before" ] || fail "test-image: the image was pulled ($gets_before -> $gets_after GETs)"
for tag in latest v1; do
	[ "$(registry_manifest_digest "$REGISTRY" group/app "$tag")" = "$DIGEST" ] ||
		fail "promote: $IMG:$tag is not $DIGEST"
done

# ---------------------------------------------------------------- the end
agent_stop
assert_not_contains "$(cat "$T/agent.log")" "glcbt-"
ls "$STATE/agent/gitlab/"*.token >/dev/null 2>&1 && fail "job tokens left: $(ls "$STATE/agent/gitlab")"
[ -z "$(ls -A "$STATE/agent/gitlab/jobs" 2>/dev/null)" ] || fail "job folders left: $(ls "$STATE/agent/gitlab/jobs")"
assert_clean "after the GitLab jobs"
echo "PASS: test_agent_gitlab"
