#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Crash recovery of `slipway agent`: a watched file:// repository whose pipeline builds (a slow
# RUN step), tests (a job as slow as the commit's slow.txt says) and promotes to the real
# registry through the fault proxy. The agent is killed with SIGKILL (a) while building, (b)
# while the job runs, (c) while pushing (a layer upload held by a delay rule), and restarted
# each time. Each time: the interrupted commit's pipeline completes exactly once more (one work
# item for the commit in the journal, state passed, attempts 2, one passing run), the digest in
# the registry is the one built (and the same in both attempts when the first one got that
# far), a commit made while the agent was dead is run too, each tag is PUT once, and nothing
# is left behind
# (containers, mounts, scratch folders, processes), then the agent drains on SIGTERM with 0.
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
start_faultproxy

cat >>"$REPO/Dockerfile" <<'DF'
RUN sleep 5 && head -c 3000000 /dev/urandom > /big.bin
COPY stamp.txt /stamp.txt
DF
cat >"$REPO/.slipway.yml" <<EOF
stages:
  - name: test
    jobs:
      - name: slow
        run:
          - cat /stamp.txt
          - sleep \$(cat slow.txt)
promote:
  - to: $PROXY/team/app
    tags: ["\${SLIPWAY_COMMIT_SHORT_SHA}"]
EOF
echo 1 >"$REPO/slow.txt"
commit_file stamp.txt "one" "one"
C1=$SHA

agent_config "$T/agent.yml"

# check_recovered SHA EXTRA_SHA BUILT_IN_ATTEMPT1: after the restart, SHA passed on its second
# attempt, once; EXTRA_SHA (made while the agent was dead) passed on its first.
check_recovered() {
	local sha=$1 extra=$2 same=$3 f n reg d1 d2
	wait_until 150 "commit ${sha:0:8} to pass on attempt 2" state_is "$sha" passed 2
	wait_until 150 "commit ${extra:0:8} (made while the agent was dead) to pass" \
		state_is "$extra" passed 1
	assert_eq 1 "$(journal_count "$sha")" "work items for ${sha:0:8}"
	assert_eq 1 "$(journal_count "$extra")" "work items for ${extra:0:8}"
	# two attempts, exactly one of which finished (passed)
	n=0
	for f in $(run_events "$sha"); do
		if python3 - "$f" <<'PY'; then
import json, sys
ok = False
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue  # the last line of a killed run may be torn
    ok = ok or (e.get("type") == "pipeline" and e.get("state") == "passed")
sys.exit(0 if ok else 1)
PY
			n=$((n + 1))
		fi
	done
	assert_eq 1 "$n" "passing runs of ${sha:0:8}"
	assert_eq 2 "$(run_events "$sha" | wc -l)" "attempts of ${sha:0:8} (run folders)"
	d2=$(built_digest "$(run_events "$sha" 2)")
	[ -n "$d2" ] || fail "attempt 2 of ${sha:0:8} built nothing"
	reg=$(registry_manifest_digest "$REGISTRY" team/app "${sha:0:8}")
	assert_eq "$d2" "$reg" "the digest promoted for ${sha:0:8} (built one vs registry)"
	if [ "$same" = yes ]; then
		d1=$(built_digest "$(run_events "$sha" 1)")
		assert_eq "$d1" "$d2" "the digest built by attempts 1 and 2 of ${sha:0:8}"
	fi
	reg=$(registry_manifest_digest "$REGISTRY" team/app "${extra:0:8}")
	assert_eq "$(built_digest "$(run_events "$extra" 1)")" "$reg" \
		"the digest promoted for ${extra:0:8}"
	wait_until 30 "the agent to be idle" agent_idle
	assert_clean "after recovery of ${sha:0:8}"
}

# agent_idle: no work item queued or running.
agent_idle() {
	python3 - "$STATE/agent/journal.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(1 if any(w.get("state") in ("queued", "running") for w in d.get("items", [])) else 0)
PY
}

# ---------------------------------------------------------------- (a) while building
note "(a) SIGKILL while building"
agent_start
wait_until 60 "the build of ${C1:0:8} to reach its RUN step" event_seen "$C1" \
	'e.get("type") == "build_step" and e.get("state") == "started" and "sleep" in e.get("title", "") and not e.get("cached")'
sleep 1
agent_kill9
assert_eq running "$(journal_field "$C1" state)" "state of ${C1:0:8} at the kill"
echo 0 >"$REPO/slow.txt"
commit_file stamp.txt "one-b" "made while the agent was dead (a)"
D1=$SHA
agent_start
check_recovered "$C1" "$D1" no

# ---------------------------------------------------------------- (b) while the job runs
note "(b) SIGKILL while the job runs"
echo 8 >"$REPO/slow.txt"
commit_file stamp.txt "two" "two"
C2=$SHA
wait_until 60 "the job of ${C2:0:8} to run" event_seen "$C2" \
	'e.get("type") == "job" and e.get("name") == "slow" and e.get("state") == "running"'
sleep 1.5
agent_kill9
assert_eq running "$(journal_field "$C2" state)" "state of ${C2:0:8} at the kill"
echo 0 >"$REPO/slow.txt"
commit_file stamp.txt "two-b" "made while the agent was dead (b)"
D2=$SHA
agent_start
check_recovered "$C2" "$D2" yes

# ---------------------------------------------------------------- (c) while pushing
note "(c) SIGKILL while pushing"
proxy_faults '[{"method": "PUT", "path_re": "/blobs/uploads/", "action": "delay", "seconds": 20, "times": 1}]'
echo 0 >"$REPO/slow.txt"
commit_file stamp.txt "three" "three"
C3=$SHA
push_held() {
	[ "$(proxy_count faults)" -ge 1 ]
}
wait_until 90 "the push of ${C3:0:8} to be held by the proxy" push_held
sleep 1
agent_kill9
assert_eq running "$(journal_field "$C3" state)" "state of ${C3:0:8} at the kill"
assert_eq 404 "$(registry_manifest_code "$REGISTRY" team/app "${C3:0:8}")" \
	"${C3:0:8} in the registry before the restart"
commit_file stamp.txt "three-b" "made while the agent was dead (c)"
D3=$SHA
agent_start
check_recovered "$C3" "$D3" yes

# ---------------------------------------------------------------- no repeats, drain
note "no commit runs again after a clean restart"
agent_stop
agent_start
sleep 4
for s in "$C1" "$D1" "$C2" "$D2" "$C3" "$D3"; do
	assert_eq 1 "$(journal_count "$s")" "work items for ${s:0:8} after a restart"
done
assert_eq 2 "$(journal_field "$C3" attempts)" "attempts of ${C3:0:8} after a clean restart"
assert_eq 1 "$(journal_field "$D3" attempts)" "attempts of ${D3:0:8} after a clean restart"
agent_stop
# nothing promoted twice: one PUT of each commit's tag through the proxy (the push held in (c)
# never got to its manifest)
proxy_stats >"$T/proxy-stats.json"
for s in "$C1" "$D1" "$C2" "$D2" "$C3" "$D3"; do
	n=$(json_get "sum(1 for l in d['log'] if l.startswith('PUT /v2/team/app/manifests/${s:0:8} '))" \
		<"$T/proxy-stats.json")
	assert_eq 1 "$n" "PUTs of the tag ${s:0:8}"
done
assert_clean "at the end"
note "ok"
