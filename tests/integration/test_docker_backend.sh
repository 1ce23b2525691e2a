#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The docker backend of pods against a real Docker daemon: a private dockerd (Debian's docker.io,
# --bridge=none --iptables=false, everything under $T, from tests/build/lib_docker.sh) and the
# test_executor program's docker group (tests/unit/test_executor_docker.c) pointed at it with
# SW_TEST_DOCKER_HOST, then `slipway run --executor docker` on a small repository (a job, a
# service, a timeout, a failure). Afterwards no container labelled by slipway may be left.
# When dockerd is not installed or cannot start here, the test says why and passes ("skipped").
#
# By hand: SW_TEST_BINDIR=/work/build bash tests/integration/test_docker_backend.sh

# shellcheck source=tests/integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/build/lib_docker.sh
source "$SW_TEST_SRCDIR/tests/build/lib_docker.sh"

: "${SW_TEST_BINDIR:=$SW_TEST_SRCDIR/build}"
TEST_EXECUTOR="$SW_TEST_BINDIR/tests/test_executor"
[ -x "$TEST_EXECUTOR" ] || fail "test program not found at '$TEST_EXECUTOR'"
# the slipway binary is used when it is built (slipway run --executor docker)
[ -x "$SLIPWAY" ] || SLIPWAY=/bin/true

if ! have_dockerd; then
	echo "skipped: dockerd or $DOCKER is not installed (Debian package docker.io)"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "skipped: a private dockerd needs root"
	exit 0
fi

sw_tmpdir
sw_docker_trap

# start_dockerd fails the test when the daemon cannot start; here that is a skip. It runs in a
# subshell, so the daemon's PID comes back through its pid file.
if ! (start_dockerd) 2>"$T/start.err"; then
	DOCKERD_PID=$(cat "$T/docker.pid" 2>/dev/null || true)
	reason=$(tr '\n' ' ' <"$T/start.err" | cut -c1-400)
	stop_dockerd
	echo "skipped: dockerd cannot start here: ${reason:-no message}"
	exit 0
fi
DOCKERD_PID=$(cat "$T/docker.pid")
if [ -z "$DOCKERD_PID" ] || ! kill -0 "$DOCKERD_PID"; then
	fail "dockerd answered but its pid file names no live process"
fi
export DOCKER_HOST="unix://$T/docker.sock"
note "dockerd $DOCKERD_PID on $DOCKER_HOST"

note "test_executor, docker group"
SW_TEST_GROUP=docker SW_TEST_DOCKER_HOST="$DOCKER_HOST" "$TEST_EXECUTOR" >"$T/unit.log" 2>&1 ||
	{
		cat "$T/unit.log" >&2
		fail "the docker group of test_executor failed"
	}
cat "$T/unit.log" >&2
grep -q '^\[  PASSED  \] [0-9]* test(s)' "$T/unit.log" || fail "the docker group ran no tests"
if grep -q 'SKIPPED \] executor_docker' "$T/unit.log"; then
	fail "the docker group skipped although dockerd runs"
fi

if [ "$SLIPWAY" != /bin/true ]; then
	# the same job semantics through `slipway run --executor docker`: the commit's image built
	# by slipway and loaded into the daemon, a job, a job with a service reached by name, a
	# timeout, a failing job
	note "slipway run --executor docker"
	unset SOURCE_DATE_EPOCH
	sw_make_busybox_tar "$T/rootfs.tar"
	"$SLIPWAY" image import "$T/rootfs.tar" bb:1 >/dev/null
	R=$T/repo
	mkdir -p "$R"
	git -C "$R" init -q -b main
	printf 'FROM bb:1\nRUN echo built-by-slipway > /marker\n' >"$R/Dockerfile"
	echo "data" >"$R/data.txt"
	cat >"$R/.slipway.yml" <<'YML'
stages:
  - name: test
    jobs:
      - name: unit
        run:
          - cat /marker
          - cat data.txt
          - echo "in $CI_PROJECT_DIR" > out.txt
        artifacts: { paths: [out.txt] }
      - name: svc
        services:
          - name: web
            image: "${SLIPWAY_IMAGE}"
            command: ["httpd", "-f", "-p", "8080", "-h", "/"]
            ready: { tcp: 8080, timeout: 30s }
        run: wget -q -O - http://web:8080/marker
      - name: slow
        run: sleep 60
        timeout: 2s
        allow_failure: true
YML
	git -C "$R" add -A
	git -C "$R" -c user.email=t@example.com -c user.name=t commit -q -m docker
	run docker-run "$SLIPWAY" run --repo "$R" --executor docker --docker-host "$DOCKER_HOST" \
		--progress plain --output "$T/dout" --events "$T/docker.events"
	[ "$RC" -eq 0 ] || fail "slipway run --executor docker exited $RC: $ERR"
	assert_contains "$(cat "$T/dout/logs/unit.log")" "built-by-slipway"
	assert_contains "$(cat "$T/dout/logs/svc.log")" "built-by-slipway"
	assert_eq "in /builds/repo" "$(cat "$T/dout/artifacts/unit/out.txt")" "artifact of the docker job"
	grep -q '"name":"slow".*"message":"timed out after 2s"' "$T/docker.events" ||
		fail "the slow job was not reported as timed out: $(grep slow "$T/docker.events")"
	printf 'stages:\n  - name: t\n    jobs:\n      - name: bad\n        run: exit 4\n' >"$R/.slipway.yml"
	git -C "$R" -c user.email=t@example.com -c user.name=t commit -q -am fail
	run docker-fail "$SLIPWAY" run --repo "$R" --executor docker --docker-host "$DOCKER_HOST" \
		--progress plain --output "$T/dout2"
	assert_eq 1 "$RC" "exit code of a failing job under the docker backend"
	assert_contains "$(cat "$T/dout2/logs/bad.log")" "exit code 4"
fi

note "nothing left in the daemon"
left=$("$DOCKER" ps -a -q --filter label=slipway.owner)
assert_eq "" "$left" "containers labelled slipway.owner"

echo "ok: docker backend"
