#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builder benchmark: `slipway build` and `DOCKER_BUILDKIT=1 docker build --network none` side by
# side in the same run, on the workload of ../shared/bench/make-build-workload.sh (2,000 files,
# about 15 MB, over a Debian minbase bookworm base image that both have locally), in three
# scenarios, ROUNDS rounds each (default 3), taking the medians:
#   cold      slipway: a state folder holding only the base image; BuildKit: `docker builder
#             prune -af` and the previous result removed first
#   (cold, base unpacked: for information, slipway's state folder also holds the base image's
#             unpacked layer, as Docker's does after `docker import`; compared with the same
#             BuildKit cold times)
#   warm      nothing changed since the previous build
#   one-file  one line appended to src/pkg7/f3.txt since the previous build
# Prints a table with the ratios slipway/BuildKit and the goals (warm <= 0.2, one-file <= 0.6,
# cold <= 0.8). Docker is Debian's dockerd, started here with everything under the temporary
# folder (tests/build/lib_docker.sh) and stopped by PID at the end.
# The base rootfs comes from `debootstrap --variant=minbase bookworm` (needs Debian's mirror) and
# is kept as a tarball in bench/.cache/ (or $SW_BENCH_CACHE), so reruns do not bootstrap again.
# usage: bench/build.sh [ROUNDS]   (SLIPWAY=path/to/slipway, default build/slipway)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
: "${SLIPWAY:=$PWD/build/slipway}"
SW_TEST_SRCDIR=$PWD
export SLIPWAY SW_TEST_SRCDIR
[ -x "$SLIPWAY" ] || bash scripts/build.sh build >/dev/null
WORKLOAD_SCRIPT=../shared/bench/make-build-workload.sh
if [ ! -f "$WORKLOAD_SCRIPT" ]; then
	echo "no $WORKLOAD_SCRIPT (shared/ beside the repository)" >&2
	exit 1
fi
# shellcheck source=tests/integration/lib.sh
source tests/integration/lib.sh
# shellcheck source=tests/build/lib_docker.sh
source tests/build/lib_docker.sh
have_dockerd || fail "the builder benchmark compares with BuildKit: install docker.io"
command -v debootstrap >/dev/null || fail "install debootstrap"

CACHE=${SW_BENCH_CACHE:-$PWD/bench/.cache}
BASE_TAR=$CACHE/debian-minbase-bookworm.tar
BASE_REF=debian-minbase:bookworm

sw_tmpdir
sw_docker_trap
unset SOURCE_DATE_EPOCH

# ---- the base image
if [ ! -s "$BASE_TAR" ]; then
	mkdir -p "$CACHE"
	echo "bootstrapping Debian bookworm (minbase) once, into $BASE_TAR ..."
	debootstrap --variant=minbase bookworm "$T/debian" http://deb.debian.org/debian \
		>"$T/debootstrap.log" 2>&1 || fail "debootstrap failed: $(tail -n 20 "$T/debootstrap.log")"
	tar --numeric-owner -C "$T/debian" -cf "$BASE_TAR.tmp" .
	mv "$BASE_TAR.tmp" "$BASE_TAR"
	rm -rf "$T/debian"
fi
echo "base image: $(($(stat -c %s "$BASE_TAR") >> 20)) MiB rootfs tarball"

start_dockerd
docker_import "$BASE_TAR" "$BASE_REF"

STATES=$T/states
import_base() {
	rm -rf "$SLIPWAY_STATE_DIR"
	"$SLIPWAY" image import "$BASE_TAR" "$BASE_REF" >/dev/null
}
# A state folder with the base image and its unpacked layer (a build of `RUN true` made it; that
# step's cache entry is no use to the workload), copied in for the "cold, base unpacked" runs.
export SLIPWAY_STATE_DIR=$STATES/base-unpacked
import_base
mkdir -p "$T/prep"
printf 'FROM %s\nRUN true\n' "$BASE_REF" >"$T/prep/Dockerfile"
"$SLIPWAY" build --quiet "$T/prep" >/dev/null
export SLIPWAY_STATE_DIR=$STATES/sw
import_base

# ---- the workload (the shared script, called as it is)
W=$T/workload
bash "$WORKLOAD_SCRIPT" "$W" "$BASE_REF"
echo "context: $(find "$W" -type f | wc -l) files, $(($(du -sb "$W" | cut -f1) >> 20)) MiB"

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

declare -A times
# time_sw KEY / time_dk KEY: one build, its seconds added to times[KEY]; the log in
# $T/last-*.log.
time_sw() {
	local t0 t1
	sync
	t0=$(now)
	"$SLIPWAY" build --progress plain -t bench:latest "$W" >"$T/last-sw.out" 2>"$T/last-sw.log" ||
		fail "slipway build failed: $(tail -n 30 "$T/last-sw.log")"
	t1=$(now)
	times[$1]="${times[$1]:-} $(elapsed "$t0" "$t1")"
}
time_dk() {
	local t0 t1
	sync
	t0=$(now)
	"$DOCKER" build --network none --progress plain -t bench:latest "$W" >"$T/last-dk.log" 2>&1 ||
		fail "docker build failed: $(tail -n 30 "$T/last-dk.log")"
	t1=$(now)
	times[$1]="${times[$1]:-} $(elapsed "$t0" "$t1")"
}
docker_cold() {
	"$DOCKER" rmi -f bench:latest >/dev/null 2>&1 || true
	"$DOCKER" builder prune -af >/dev/null
}

for ((r = 1; r <= ROUNDS; r++)); do
	echo "round $r/$ROUNDS"
	# cold: alternate which tool goes first
	import_base
	docker_cold
	if ((r % 2)); then
		time_sw sw_cold
		time_dk dk_cold
	else
		time_dk dk_cold
		time_sw sw_cold
	fi
	# cold with the base image's layer already unpacked (slipway only; see the header)
	rm -rf "$SLIPWAY_STATE_DIR"
	cp -a "$STATES/base-unpacked" "$SLIPWAY_STATE_DIR"
	time_sw sw_coldu
	time_sw sw_warm
	grep -q CACHED "$T/last-sw.log" ||
		fail "slipway's warm build had no cache hits: $(cat "$T/last-sw.log")"
	time_dk dk_warm
	echo "line appended in round $r" >>"$W/src/pkg7/f3.txt"
	time_sw sw_one
	time_dk dk_one
done

echo
echo "builder benchmark: $(find "$W/src" -type f | wc -l) files over $BASE_REF," \
	"median of $ROUNDS rounds (seconds)"
printf '%-10s %10s %10s %8s %6s %s\n' scenario slipway buildkit ratio goal ""
for s in cold coldu warm one; do
	# shellcheck disable=SC2086 # the times are words
	sw=$(median ${times[sw_$s]})
	# shellcheck disable=SC2086
	dk=$(median ${times[dk_${s%u}]})
	q=$(ratio "$sw" "$dk")
	case $s in
	cold) goal=0.8 name=cold ;;
	coldu) goal=0.8 name=cold-unpk ;;
	warm) goal=0.2 name=warm ;;
	one) goal=0.6 name=one-file ;;
	esac
	met=$(python3 -c "import sys; print('met' if float(sys.argv[1]) <= float(sys.argv[2])
else 'NOT met')" "$q" "$goal")
	printf '%-10s %10s %10s %8s %6s %s\n' "$name" "$sw" "$dk" "$q" "<=$goal" "$met"
done
echo "(cold-unpk: cold with the base image's layer already unpacked, as Docker has it;" \
	"information only)"
echo "all times (s):"
for k in sw_cold sw_coldu dk_cold sw_warm dk_warm sw_one dk_one; do
	printf '  %-8s %s\n' "$k" "${times[$k]}"
done
