#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Pipeline benchmark: `slipway run` against Docker (Debian's dockerd, started here with
# everything under the temporary folder, --bridge=none --iptables=false, stopped by PID) in the
# same run, ROUNDS rounds (default 5), medians:
#   job-step  a trivial job (`true`) from container start to exit: the duration slipway reports
#             for the job in its events (pod, workspace overlay, runc run, teardown) against the
#             wall time of `docker run --rm --network none bb:1 true`
#   pipeline  the example pipeline (examples/app: build, unit tests, a job with a service
#             container, a check job, promotion with three tags to a registry on 127.0.0.1):
#             `slipway run` against a script doing the same with `docker build`, `docker run`
#             per job (the service in its own container, the job in its network) and
#             `docker tag` + `docker push`. Each round commits a one-line change to the app
#             first, so both rebuild from the changed COPY on with warm caches otherwise.
# Goals: job-step <= 0.2, pipeline <= 0.5 of Docker's time.
# usage: bench/run.sh [ROUNDS]   (SLIPWAY=path/to/slipway, default build/slipway)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
: "${SLIPWAY:=$PWD/build/slipway}"
SW_TEST_SRCDIR=$PWD
export SLIPWAY SW_TEST_SRCDIR
[ -x "$SLIPWAY" ] || bash scripts/build.sh build >/dev/null
# shellcheck source=tests/integration/lib.sh
source tests/integration/lib.sh
# shellcheck source=tests/build/lib_docker.sh
source tests/build/lib_docker.sh
have_dockerd || fail "the pipeline benchmark compares with Docker: install docker.io"

sw_tmpdir
sw_docker_trap
unset SOURCE_DATE_EPOCH

now() { date +%s.%N; }
elapsed() {
	python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"
}
median() {
	printf '%s\n' "$@" | sort -g |
		awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'
}
ratio() {
	python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"
}

# ---- base image in both
sw_make_busybox_tar "$T/rootfs.tar"
"$SLIPWAY" image import "$T/rootfs.tar" busybox:demo >/dev/null
start_dockerd
"$DOCKER" import "$T/rootfs.tar" busybox:demo >/dev/null
start_registry plain

declare -A times

# ---- job step
TR=$T/trivial
mkdir -p "$TR"
git -C "$TR" init -q -b main
printf 'FROM busybox:demo\n' >"$TR/Dockerfile"
{
	echo "stages:"
	for ((i = 1; i <= ROUNDS; i++)); do
		printf '  - name: s%d\n    jobs:\n      - name: true%d\n        run: "true"\n' "$i" "$i"
	done
} >"$TR/.slipway.yml"
git -C "$TR" add -A
git -C "$TR" -c user.email=b@example.com -c user.name=bench commit -q -m trivial
"$SLIPWAY" run --repo "$TR" --no-promote --progress quiet --events "$T/trivial.events" \
	--output "$T/trivial.out" >/dev/null 2>"$T/trivial.err" ||
	fail "slipway run of the trivial pipeline failed: $(tail -n 30 "$T/trivial.err")"
mapfile -t sw_steps < <(python3 - "$T/trivial.events" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("type") == "job" and e.get("state") == "passed" and "duration_ms" in e:
        print("%.3f" % (e["duration_ms"] / 1000.0))
PY
)
[ "${#sw_steps[@]}" -gt 0 ] || fail "no job durations in the events"
times[sw_step]="${sw_steps[*]}"
"$DOCKER" run --rm --network none busybox:demo true # first start outside the measurement
for ((i = 1; i <= ROUNDS; i++)); do
	t0=$(now)
	"$DOCKER" run --rm --network none busybox:demo true
	t1=$(now)
	times[dk_step]="${times[dk_step]:-} $(elapsed "$t0" "$t1")"
done

# ---- whole pipeline
APP=$T/app
cp -a examples/app "$APP"
git -C "$APP" init -q -b main
git -C "$APP" add -A
git -C "$APP" -c user.email=b@example.com -c user.name=bench commit -q -m app

docker_pipeline() { # the same work, the Docker way
	local sha
	sha=$(git -C "$APP" rev-parse HEAD)
	rm -rf "$T/dk-src" && mkdir -p "$T/dk-src"
	git -C "$APP" archive HEAD | tar -x -C "$T/dk-src"
	"$DOCKER" build -q --network none --build-arg "VERSION=${sha:0:8}" -t "app:$sha" \
		"$T/dk-src" >/dev/null
	"$DOCKER" run --rm --network none -v "$T/dk-src:/builds/app" -w /builds/app "app:$sha" \
		./test/unit.sh >/dev/null
	"$DOCKER" run -d --network none --name web "app:$sha" >/dev/null
	local i
	for ((i = 0; i < 100; i++)); do
		"$DOCKER" run --rm --network container:web "app:$sha" \
			wget -q -O /dev/null http://127.0.0.1:8080/index.html 2>/dev/null && break
		sleep 0.1
	done
	"$DOCKER" run --rm --network container:web -v "$T/dk-src:/builds/app" -w /builds/app \
		"app:$sha" sh -c 'wget -q -O - http://127.0.0.1:8080/index.html | grep -q "hello, world"'
	"$DOCKER" rm -f web >/dev/null
	"$DOCKER" run --rm --network none "app:$sha" sh -c "test \"\$(cat /srv/app/VERSION)\" = ${sha:0:8}"
	local tag
	for tag in "$sha" main latest; do
		"$DOCKER" tag "app:$sha" "$REGISTRY/dk/app:$tag"
		"$DOCKER" push -q "$REGISTRY/dk/app:$tag" >/dev/null
	done
}
slipway_pipeline() {
	"$SLIPWAY" run --repo "$APP" --var "REGISTRY=$REGISTRY" --progress quiet \
		--output "$T/sw-run" >"$T/sw-run.log" 2>&1 ||
		fail "slipway run of the example failed: $(tail -n 40 "$T/sw-run.log")"
}
# one warm-up run each (base layers unpacked or loaded, caches filled)
slipway_pipeline
docker_pipeline
for ((r = 1; r <= ROUNDS; r++)); do
	echo "# change $r" >>"$APP/src/greet.sh"
	git -C "$APP" -c user.email=b@example.com -c user.name=bench commit -q -am "change $r"
	if ((r % 2)); then
		t0=$(now); slipway_pipeline; t1=$(now)
		times[sw_pipe]="${times[sw_pipe]:-} $(elapsed "$t0" "$t1")"
		t0=$(now); docker_pipeline; t1=$(now)
		times[dk_pipe]="${times[dk_pipe]:-} $(elapsed "$t0" "$t1")"
	else
		t0=$(now); docker_pipeline; t1=$(now)
		times[dk_pipe]="${times[dk_pipe]:-} $(elapsed "$t0" "$t1")"
		t0=$(now); slipway_pipeline; t1=$(now)
		times[sw_pipe]="${times[sw_pipe]:-} $(elapsed "$t0" "$t1")"
	fi
done

echo
echo "pipeline benchmark, median of $ROUNDS (seconds)"
printf '%-10s %10s %10s %8s %6s %s\n' scenario slipway docker ratio goal ""
for s in step pipe; do
	# shellcheck disable=SC2086 # the times are words
	sw=$(median ${times[sw_$s]})
	# shellcheck disable=SC2086
	dk=$(median ${times[dk_$s]})
	q=$(ratio "$sw" "$dk")
	case $s in
	step) goal=0.2 name=job-step ;;
	pipe) goal=0.5 name=pipeline ;;
	esac
	met=$(python3 -c "import sys; print('met' if float(sys.argv[1]) <= float(sys.argv[2])
else 'NOT met')" "$q" "$goal")
	printf '%-10s %10s %10s %8s %6s %s\n' "$name" "$sw" "$dk" "$q" "<=$goal" "$met"
done
echo "all times (s):"
for k in sw_step dk_step sw_pipe dk_pipe; do
	printf '  %-8s %s\n' "$k" "${times[$k]}"
done
