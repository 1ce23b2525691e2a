#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `slipway run` end to end with runc and the real registry: a passing pipeline (parallel jobs,
# `needs` starting a job before its previous stage is done, artifacts, a service with a TCP
# readiness check reached by name, a secret masked in the log, the events, the JUnit report
# and the output folder) whose tested image is promoted (the registry's digest equals the built
# one, checked with skopeo); a failing pipeline (exit 1, later stage skipped, nothing
# promoted); a broken pipeline file (exit 2 with FILE:LINE:COLUMN); a missing secret (exit 3);
# and nothing left behind (mounts, runtime state, scratch folders, secret files).
. "$(dirname "$0")/lib.sh"

sw_tmpdir
command -v runc >/dev/null || {
	echo "SKIP: runc is not installed"
	exit 0
}
start_registry plain

sw_make_busybox_tar "$T/busybox.tar"
run_ok import "$SLIPWAY" image import "$T/busybox.tar" busybox:demo

# ---------------------------------------------------------------- the repository
R="$T/app"
mkdir -p "$R/src"
cat >"$R/Dockerfile" <<'EOF'
FROM busybox:demo
RUN echo "built image" > /built.txt
EOF
echo 'int main(void) { return 0; }' >"$R/src/main.c"
cat >"$R/.slipway.yml" <<EOF
env:
  GREETING: "hello \${SLIPWAY_PROJECT}"
stages:
  - name: prep
    jobs:
      - name: lint
        run: echo "lint ok \$GREETING"
      - name: slow
        run: [ "sleep 3", "echo slow done" ]
  - name: test
    jobs:
      - name: unit
        needs: [lint]
        run:
          - cat /built.txt
          - test "\$CI_PROJECT_DIR" = /builds/app
          - test "\$PWD" = /builds/app
          - test -f src/main.c
          - mkdir -p out && echo "report of \$SLIPWAY_JOB_NAME" > out/report.txt
          - echo scribble > src/main.c
        artifacts: { paths: ["out/*.txt"] }
      - name: isolated
        needs: [lint]
        run:
          - grep -q 'int main' src/main.c
          - test ! -e out
      - name: svc
        services:
          - name: db
            image: busybox:demo
            command: ["sh", "-c", "trap 'exit 0' TERM; while :; do nc -l -p 5432 -e /bin/echo pong & wait \$!; done"]
            ready: { tcp: 5432, timeout: 30s }
        run:
          - nc db 5432 > got.txt
          - cat got.txt
          - grep -q pong got.txt
      - name: own-image
        image: busybox:demo
        run: [ "test ! -e /built.txt", "test -f src/main.c" ]
      - name: pulled
        image: $REGISTRY/lib/bb:1
        run: [ "test ! -e /built.txt", "echo pulled image ok" ]
      - name: secret
        secrets: [API_TOKEN, { name: CERT, file: true }]
        run:
          - echo "token is \$API_TOKEN"
          - printf '%s' "\$API_TOKEN" | base64
          - cat "\$CERT"
          - test "\$CERT" = /run/secrets/CERT
promote:
  - to: $REGISTRY/team/app
    tags: ["\${SLIPWAY_COMMIT_SHORT_SHA}", latest]
EOF
cat >"$R/fail.yml" <<EOF
stages:
  - name: test
    jobs:
      - name: bad
        run: [ "echo about to fail", "exit 3", "echo never" ]
      - name: tolerated
        allow_failure: true
        run: exit 1
  - name: deploy
    jobs:
      - name: after
        run: echo should not run
      - name: cleanup
        when: { status: on_failure }
        run: echo cleaning up
promote:
  - to: $REGISTRY/team/failed
    tags: [latest]
EOF
cat >"$R/broken.yml" <<'EOF'
stages:
  - name: test
    jobs:
      - name: x
        run: echo x
        colour: blue
EOF
cat >"$R/needsecret.yml" <<'EOF'
stages:
  - name: test
    jobs:
      - name: s
        secrets: [NOBODY_GAVE_THIS]
        run: echo "$NOBODY_GAVE_THIS"
EOF
git -C "$R" init -q -b main
git -C "$R" add -A
git -C "$R" -c user.name=t -c user.email=t@example.com commit -q -m "first commit"
SHA=$(git -C "$R" rev-parse HEAD)
SHORT=${SHA:0:8}

TOKEN="s3cr3t-T0ken-value"
CERT_VALUE="cert-contents-9f8e7d"
echo "$CERT_VALUE" >"$T/cert.txt"

mounts_now() {
	grep -c "$T" /proc/self/mounts || true
}

# a job image that is only in the registry: pulled at its first use
run_ok push_bb "$SLIPWAY" image copy busybox:demo "docker://$REGISTRY/lib/bb:1"

# ---------------------------------------------------------------- passing pipeline
note "a passing pipeline, promoted"
OUTDIR="$T/out1"
API_TOKEN=$TOKEN run pass "$SLIPWAY" run --repo "$R" --progress plain --output "$OUTDIR" \
	--events "$T/events.jsonl" --junit "$T/junit.xml" --secret API_TOKEN \
	--secret-file "CERT=$T/cert.txt"
[ "$RC" -eq 0 ] || fail "run exited $RC: $ERR"
assert_eq "$OUTDIR" "$OUT" "the output folder on stdout"
assert_contains "$ERR" "[prep/lint] lint ok hello app"
assert_contains "$ERR" "[test/unit] \$ cat /built.txt"
assert_contains "$ERR" "[test/unit] built image"
assert_contains "$ERR" "[test/svc] pong"
assert_contains "$ERR" "[test/pulled] pulled image ok"
assert_not_contains "$ERR" "$TOKEN" "the console"
assert_not_contains "$ERR" "$CERT_VALUE" "the console"
assert_contains "$ERR" "token is [MASKED]"

# artifacts, logs
assert_eq "report of unit" "$(cat "$OUTDIR/artifacts/unit/out/report.txt")" "the artifact"
[ -f "$OUTDIR/logs/secret.log" ] || fail "no log of job secret"
LOG=$(cat "$OUTDIR/logs/secret.log")
assert_contains "$LOG" "token is [MASKED]"
assert_not_contains "$LOG" "$TOKEN" "the secret job's log"
assert_not_contains "$LOG" "$(printf '%s' "$TOKEN" | base64)" "the secret job's log (base64)"
assert_not_contains "$LOG" "$CERT_VALUE" "the secret job's log (file secret)"
if grep -rqF "$TOKEN" "$OUTDIR" "$T/events.jsonl" "$T/junit.xml" "$SLIPWAY_STATE_DIR"; then
	fail "the secret's value reached a file: $(grep -rlF "$TOKEN" "$OUTDIR" "$SLIPWAY_STATE_DIR")"
fi

# events: every job passed; `needs` let unit start before slow was done; lint and slow ran
# at once (parallel)
python3 - "$T/events.jsonl" <<'EOF' || fail "events check failed"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
t = {}
for e in ev:
    if e["type"] == "job":
        t.setdefault((e["name"], e["state"]), e["time"])
final = {e["name"]: e["state"] for e in ev if e["type"] == "job" and e["state"] not in ("running",)}
for j in ["lint", "slow", "unit", "isolated", "svc", "own-image", "pulled", "secret"]:
    assert final.get(j) == "passed", (j, final.get(j))
assert t[("unit", "running")] < t[("slow", "passed")], "unit waited for slow"
assert t[("slow", "running")] < t[("lint", "passed")], "lint and slow did not run at once"
assert t[("svc", "running")] >= t[("slow", "passed")], "svc (no needs) started before its stage"
svc = [e["state"] for e in ev if e["type"] == "service" and e["name"] == "db"]
assert svc[:2] == ["started", "ready"], svc
assert ev[0]["type"] == "pipeline" and ev[0]["state"] == "started"
assert ev[-1]["type"] == "pipeline" and ev[-1]["state"] == "passed", ev[-1]
pushed = [e for e in ev if e["type"] == "promotion" and e["state"] == "pushed"]
assert len(pushed) == 3, pushed
print("events ok")
EOF
python3 - "$T/events.jsonl" "$OUTDIR/events.jsonl" <<'EOF' || fail "--events and OUT/events.jsonl differ"
import json, sys
a, b = ([{k: v for k, v in json.loads(l).items() if k != "time"} for l in open(f)]
        for f in sys.argv[1:3])
assert a == b
EOF

# JUnit: one testcase per job
python3 - "$T/junit.xml" <<'EOF' || fail "junit check failed"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.findall(".//testcase")
names = sorted(c.get("name") for c in cases)
assert names == sorted(["lint", "slow", "unit", "isolated", "svc", "own-image", "pulled",
                        "secret"]), names
assert not root.findall(".//failure"), "a failure in a passing pipeline"
EOF
cmp -s "$T/junit.xml" "$OUTDIR/junit.xml" || fail "--junit and OUT/junit.xml differ"

# promotion: the registry holds the digest that was built and tested
BUILT=$(python3 -c '
import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"] == "build" and e["state"] == "done":
        print(e["digest"])' "$T/events.jsonl")
[ -n "$BUILT" ] || fail "no build digest in the events"
run_ok store "$SLIPWAY" image inspect "app:$SHORT"
assert_eq "$BUILT" "$(echo "$OUT" | json_get 'd["digest"]')" "the store's app:$SHORT"
for tag in "$SHORT" latest; do
	run_ok skopeo skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/team/app:$tag"
	assert_eq "$BUILT" "sha256:$(printf '%s' "$OUT" | sha256sum | cut -d' ' -f1)" \
		"the registry's digest of team/app:$tag"
done
assert_eq 200 "$(registry_manifest_code "$REGISTRY" team/app "$BUILT")" "team/app@digest"

# running it again promotes again, harmlessly (same digest, cached build)
note "the same pipeline again (idempotent promotion)"
API_TOKEN=$TOKEN run_ok pass2 "$SLIPWAY" run --repo "$R" --progress plain \
	--secret API_TOKEN --secret-file "CERT=$T/cert.txt"
assert_contains "$OUT" "$SLIPWAY_STATE_DIR/runs/2" "the default output folder"
run_ok skopeo2 skopeo inspect --tls-verify=false --raw "docker://$REGISTRY/team/app:latest"
assert_eq "$BUILT" "sha256:$(printf '%s' "$OUT" | sha256sum | cut -d' ' -f1)" "latest again"
assert_eq 2 "$(cat "$SLIPWAY_STATE_DIR/runs/last-id")" "the pipeline id counter"

# ---------------------------------------------------------------- failing pipeline
note "a failing pipeline: exit 1, nothing promoted"
run fail "$SLIPWAY" run --repo "$R" --file fail.yml --progress plain --output "$T/out2"
assert_eq 1 "$RC" "exit code of a failing pipeline; stderr: $ERR"
assert_contains "$ERR" "[test/bad] about to fail"
assert_not_contains "$ERR" "never"
assert_not_contains "$ERR" "should not run"
assert_contains "$ERR" "[deploy/cleanup] cleaning up"
assert_contains "$(cat "$T/out2/logs/bad.log")" "exit code 3"
python3 - "$T/out2/events.jsonl" <<'EOF' || fail "events of the failed pipeline"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
final = {}
for e in ev:
    if e["type"] == "job" and e["state"] != "running":
        final[e["name"]] = e
assert final["bad"]["state"] == "failed" and final["bad"]["exit_code"] == 3, final["bad"]
assert final["tolerated"]["state"] != "passed", final["tolerated"]
assert final["after"]["state"] == "skipped", final["after"]
assert final["cleanup"]["state"] == "passed", final["cleanup"]
assert not [e for e in ev if e["type"] == "promotion" and e["state"] == "pushed"]
assert ev[-1]["state"] == "failed" and ev[-1]["exit_code"] == 1, ev[-1]
EOF
grep -q '<failure' "$T/out2/junit.xml" || fail "no <failure> in the junit of a failed pipeline"
assert_contains "$(cat "$T/out2/junit.xml")" "about to fail" "the junit log tail"
assert_eq 404 "$(registry_manifest_code "$REGISTRY" team/failed latest)" "a failed pipeline's promotion"

# ---------------------------------------------------------------- broken pipeline file
note "a broken pipeline file: exit 2 with FILE:LINE:COLUMN"
run broken "$SLIPWAY" run --repo "$R" --file broken.yml --progress plain
assert_eq 2 "$RC" "exit code of a broken pipeline file; stderr: $ERR"
assert_contains "$ERR" "broken.yml:6:"
assert_contains "$ERR" "colour"
run nofile "$SLIPWAY" run --repo "$R" --file nosuch.yml
assert_eq 2 "$RC" "exit code of a missing pipeline file; stderr: $ERR"
assert_contains "$ERR" "nosuch.yml"
run badopt "$SLIPWAY" run --repo "$R" --jobs zero
assert_eq 2 "$RC" "exit code of a bad option"

# ---------------------------------------------------------------- a secret nobody gave
note "a secret nobody gave: the job errs before it starts (exit 3)"
run nosecret "$SLIPWAY" run --repo "$R" --file needsecret.yml --progress plain
assert_eq 3 "$RC" "exit code of a missing secret; stderr: $ERR"
assert_contains "$ERR" "NOBODY_GAVE_THIS"

# ---------------------------------------------------------------- nothing left behind
note "nothing left behind"
assert_eq 0 "$(mounts_now)" "mounts under $T"
left=$(find "$SLIPWAY_STATE_DIR/exec" -mindepth 1 -maxdepth 1 ! -name runtime ! -name netns)
assert_eq "" "$left" "folders left in STATE/exec"
assert_eq "" "$(ls -A "$SLIPWAY_STATE_DIR/exec/netns" 2>/dev/null)" "network namespaces left"
assert_eq "" "$(ls -A "$SLIPWAY_STATE_DIR/cache/tmp")" "scratch folders left"
for rt in "$SLIPWAY_STATE_DIR"/exec/runtime/*; do
	[ -d "$rt" ] || continue
	assert_eq "" "$(runc --root "$rt" list -q 2>/dev/null)" "runtime containers in $rt"
done
assert_eq "" "$(ls -d /dev/shm/slipway-* 2>/dev/null | while read -r d; do
	pid=${d#/dev/shm/slipway-}
	pid=${pid%%-*}
	kill -0 "$pid" 2>/dev/null || echo "$d"
done)" "secret folders of dead processes"
echo "PASS: test_run_basic"
