#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `slipway agent` watching git repositories, end to end with runc and the real registry: one
# repository over file:// (branches main and dev, tags v*) and one over `git daemon` on
# 127.0.0.1 (git://), both with a pipeline that promotes the commit's image to the registry
# named by the repository's `vars`. Checked: the head of each branch is built and promoted at
# the first poll (the registry's digest is the one the run built, read from the run's
# events.jsonl); a new commit; a second branch; a force-push (the new head only, not the commit
# it replaced); a tag; and a third repository over http whose server refuses the credentials:
# reported in the log (URL without password, not in a loop) while the others go on. SIGTERM
# drains and exits 0.
. "$(dirname "$0")/lib.sh"

sw_tmpdir
command -v runc >/dev/null || {
	echo "SKIP: runc is not installed"
	exit 0
}
command -v skopeo >/dev/null || {
	echo "SKIP: skopeo is not installed"
	exit 0
}
start_registry plain
STATE=$SLIPWAY_STATE_DIR
mkdir -p "$T/tmp"
export TMPDIR=$T/tmp
export GIT_AUTHOR_NAME="slipway test" GIT_AUTHOR_EMAIL=test@example.com
export GIT_COMMITTER_NAME="slipway test" GIT_COMMITTER_EMAIL=test@example.com
export GIT_CONFIG_NOSYSTEM=1 HOME=$T

sw_make_busybox_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1

# a work tree with a pipeline that builds an image carrying version.txt and promotes it as
# <branch>-<short sha> on branches and <tag> on tags, to $REGISTRY/team/<project>
make_repo() {
	local dir=$1
	mkdir -p "$dir"
	git -C "$dir" init -q -b main
	cat >"$dir/Dockerfile" <<'DF'
FROM bb:1
COPY version.txt /version.txt
DF
	cat >"$dir/.slipway.yml" <<'YML'
stages:
  - name: test
    jobs:
      - name: check
        run:
          - cat /version.txt
          - echo "branch=$SLIPWAY_BRANCH tag=$SLIPWAY_TAG ref=$SLIPWAY_REF_NAME"
          - test -n "$SLIPWAY_REF_NAME"
promote:
  - to: "${REGISTRY}/team/${SLIPWAY_PROJECT}"
    tags: ["${SLIPWAY_BRANCH}-${SLIPWAY_COMMIT_SHORT_SHA}"]
    when: { branch: "*" }
  - to: "${REGISTRY}/team/${SLIPWAY_PROJECT}"
    tags: ["${SLIPWAY_TAG}"]
    when: { tag: true }
YML
	echo "1 of $dir" >"$dir/version.txt"
	git -C "$dir" add -A
	git -C "$dir" commit -q -m "first"
}

commit() { # DIR MSG
	echo "$2" >>"$1/version.txt"
	git -C "$1" commit -q -am "$2"
}

APP=$T/app
make_repo "$APP"
# the git:// repository: a bare repository served by git daemon, fed from a work tree
make_repo "$T/rw"
mkdir -p "$T/srv"
git clone -q --bare "$T/rw" "$T/srv/remote.git"
git -C "$T/rw" remote add origin "$T/srv/remote.git"
GPORT=$(free_port)
git daemon --reuseaddr --base-path="$T/srv" --export-all --port="$GPORT" --listen=127.0.0.1 \
	>"$T/gitdaemon.log" 2>&1 &
sw_track_pid $! "$T/gitdaemon.log"

# an http server that refuses every request (401)
HPORT=$(free_port)
cat >"$T/refuse.py" <<'PY'
import http.server, sys
n = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global n
        n += 1
        open(sys.argv[2], "w").write(str(n))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_POST = do_GET
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$T/refuse.py" "$HPORT" "$T/refused.count" >"$T/refuse.log" 2>&1 &
sw_track_pid $! "$T/refuse.log"
for _ in $(seq 100); do
	python3 -c "import socket; socket.create_connection(('127.0.0.1', $GPORT), 1).close();
socket.create_connection(('127.0.0.1', $HPORT), 1).close()" 2>/dev/null && break
	sleep 0.1
done

export LOCKED_PW=wrong-pass-4711
cat >"$T/agent.yml" <<EOF
concurrency: 1
state_dir: $STATE
executor: { backend: oci, runtime: runc }
log: { format: text, level: info }
metrics: { listen: "" }
repos:
  - name: app
    url: file://$APP
    branches: [main, dev]
    tags: ["v*"]
    every_commit: true
    poll: 1s
    vars: { REGISTRY: "$REGISTRY" }
  - name: remote
    url: git://127.0.0.1:$GPORT/remote.git
    branches: [main]
    poll: 1s
    vars: { REGISTRY: "$REGISTRY" }
  - name: locked
    url: http://127.0.0.1:$HPORT/team/locked.git
    username: ci
    password: { env: LOCKED_PW }
    poll: 1s
EOF

"$SLIPWAY" agent -c "$T/agent.yml" >"$T/agent.out" 2>"$T/agent.log" &
AGENT=$!
sw_track_pid "$AGENT" "$T/agent.log"

# wait_run REPO SHA [SUFFIX]: the events.jsonl of the run of that work item, once finished
wait_run() {
	local id="git_$1_$2${3:-}" i f
	for ((i = 0; i < 900; i++)); do
		for f in "$STATE/agent/runs/$id"/*/events.jsonl; do
			[ -f "$f" ] || continue
			if tail -n 1 "$f" | grep -q '"type": *"pipeline"' &&
				tail -n 1 "$f" | grep -Eq '"state": *"(passed|failed|error|cancelled)"'; then
				tail -n 1 "$f" | grep -q '"passed"' ||
					fail "run $id: $(tail -n 1 "$f")"
				echo "$f"
				return 0
			fi
		done
		kill -0 "$AGENT" 2>/dev/null || fail "the agent died: $(tail -n 20 "$T/agent.log")"
		sleep 0.2
	done
	fail "no finished run of $id in 180 s"
}

# built EVENTS: the digest of the commit image the run built
built() {
	python3 -c '
import json, sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"] == "build" and e["state"] == "done":
        print(e["digest"])' "$1"
}

# assert_promoted EVENTS REPO TAG: the registry's REPO:TAG is the image the run built
assert_promoted() {
	local want got
	want=$(built "$1")
	[ -n "$want" ] || fail "no build digest in $1"
	run_ok skopeo skopeo --policy "$SKOPEO_POLICY" inspect --tls-verify=false --raw \
		"docker://$REGISTRY/team/$2:$3"
	got="sha256:$(printf '%s' "$OUT" | sha256sum | cut -d' ' -f1)"
	assert_eq "$want" "$got" "the registry's team/$2:$3"
}

short() { git -C "$1" rev-parse --short=8 "$2"; }
sha() { git -C "$1" rev-parse "$2^{commit}"; }

note "first poll: the heads of main (file://) and of the git:// repository"
A1=$(sha "$APP" main)
R1=$(sha "$T/rw" main)
ev=$(wait_run app "$A1")
assert_promoted "$ev" app "main-$(short "$APP" main)"
ev=$(wait_run remote "$R1")
assert_promoted "$ev" remote "main-$(short "$T/rw" main)"

note "a new commit on main"
commit "$APP" two
A2=$(sha "$APP" main)
ev=$(wait_run app "$A2")
assert_promoted "$ev" app "main-$(short "$APP" main)"

note "a second branch"
git -C "$APP" checkout -q -b dev
commit "$APP" dev-one
D1=$(sha "$APP" dev)
git -C "$APP" checkout -q main
ev=$(wait_run app "$D1")
assert_promoted "$ev" app "dev-$(short "$APP" dev)"
grep -q "branch=dev tag= ref=dev" "$(dirname "$ev")/logs/"* ||
	fail "SLIPWAY_BRANCH of the dev run: $(cat "$(dirname "$ev")/logs/"*)"

note "a force-push (two commits replacing one): the new head only, even with every_commit"
git -C "$APP" checkout -q --detach "$A1"
commit "$APP" rewritten-1
A3=$(sha "$APP" HEAD)
commit "$APP" rewritten-2
git -C "$APP" checkout -q -B main # main moves at once
A4=$(sha "$APP" main)
ev=$(wait_run app "$A4")
assert_promoted "$ev" app "main-$(short "$APP" main)"
[ ! -e "$STATE/agent/runs/git_app_$A3" ] || fail "a commit before the force-pushed head was run"

note "a tag"
git -C "$APP" tag -a v1.0 -m "release 1.0"
ev=$(wait_run app "$A4" "_tag_v1.0")
assert_promoted "$ev" app v1.0
grep -q "branch= tag=v1.0 ref=v1.0" "$(dirname "$ev")/logs/"* ||
	fail "SLIPWAY_TAG of the tag run: $(cat "$(dirname "$ev")/logs/"*)"

note "wrong credentials: reported, not in a loop, the others go on"
grep -q "credentials refused for http://127.0.0.1:$HPORT/team/locked.git" "$T/agent.log" ||
	fail "no 'credentials refused' in the log: $(tail -n 20 "$T/agent.log")"
assert_not_contains "$(cat "$T/agent.log")" "$LOCKED_PW" "the agent's log"
commit "$T/rw" two
git -C "$T/rw" push -q origin main
R2=$(sha "$T/rw" main)
ev=$(wait_run remote "$R2")
assert_promoted "$ev" remote "main-$(short "$T/rw" main)"
polls=$(grep -c "credentials refused" "$T/agent.log")
requests=$(cat "$T/refused.count")
[ "$requests" -le $((polls * 3 + 3)) ] ||
	fail "$requests requests to the refusing server for $polls reported polls"

note "SIGTERM: drain and exit 0"
kill -TERM "$AGENT"
rc=0
wait "$AGENT" || rc=$?
keep=()
for p in "${SW_PIDS[@]}"; do
	[ "$p" = "$AGENT" ] || keep+=("$p")
done
SW_PIDS=("${keep[@]}")
assert_eq 0 "$rc" "the agent's exit code"
[ -d "$STATE/agent/mirrors/app.git" ] && [ -d "$STATE/agent/mirrors/remote.git" ] ||
	fail "the mirrors are missing"
echo "ok"
