#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Registry benchmark: push a new ~200 MB image to a local registry and pull it back, slipway and
# `skopeo copy` side by side in the same run, each round on a fresh registry (so no blob is
# already there), alternating which tool goes first. Prints the median times and the ratios
# slipway/skopeo (goal: <= 0.8). Also measures layer creation throughput (slipway image import
# of a ~200 MB rootfs tarball, gzip and zstd) against `gzip -6` and `zstd -3` of the same tar.
# usage: bench/registry.sh [ROUNDS]   (default 5; needs build/slipway: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SLIPWAY=$PWD/build/slipway
SW_TEST_SRCDIR=$PWD
[ -x "$SLIPWAY" ] || bash scripts/build.sh build >/dev/null
# shellcheck source=../tests/integration/lib.sh
source tests/integration/lib.sh
sw_tmpdir

# The workload: a rootfs of ~200 MB, half incompressible (random), half text, fixed seed.
python3 - "$T/rootfs" <<'PY'
import os, random, sys
random.seed(7)
root = sys.argv[1]
for d in range(20):
    p = f"{root}/usr/lib/pkg{d}"
    os.makedirs(p, exist_ok=True)
    with open(f"{p}/blob.bin", "wb") as f:
        f.write(random.randbytes(5 << 20))
    for i in range(50):
        with open(f"{p}/doc{i}.txt", "w") as f:
            n = 0
            while n < 100 << 10:
                line = "entry %d of %d: %s\n" % (i, d, "x" * random.randint(1, 60))
                f.write(line)
                n += len(line)
PY
tar --numeric-owner --sort=name --mtime=@1700000000 -C "$T/rootfs" -cf "$T/rootfs.tar" .
tar_mb=$(($(stat -c %s "$T/rootfs.tar") >> 20))
echo "workload: rootfs tarball of $tar_mb MiB"

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }

# ---- layer creation throughput
declare -A lt
for comp in gzip zstd; do
	ts=()
	for ((r = 1; r <= 3; r++)); do
		rm -rf "$T/imp"
		t0=$(now)
		"$SLIPWAY" image import --compression "$comp" "$T/rootfs.tar" "oci:$T/imp:x" >/dev/null
		t1=$(now)
		ts+=("$(elapsed "$t0" "$t1")")
	done
	lt[sw_$comp]=$(median "${ts[@]}")
	ts=()
	for ((r = 1; r <= 3; r++)); do
		t0=$(now)
		if [ "$comp" = gzip ]; then gzip -6 -c "$T/rootfs.tar" >"$T/ref.out"; else zstd -q -3 -c "$T/rootfs.tar" >"$T/ref.out"; fi
		t1=$(now)
		ts+=("$(elapsed "$t0" "$t1")")
	done
	lt[ref_$comp]=$(median "${ts[@]}")
done

# ---- the image both tools copy
"$SLIPWAY" image import "$T/rootfs.tar" "oci:$T/src:bench" >/dev/null
img_mb=$(($(du -sb "$T/src/blobs" | cut -f1) >> 20))
echo "image: $img_mb MiB compressed"

sw_push=() sk_push=() sw_pull=() sk_pull=()
run_slipway() {
	local t0 t1
	t0=$(now)
	"$SLIPWAY" image copy --quiet "oci:$T/src:bench" "docker://$REGISTRY/bench/sw:1" >/dev/null
	t1=$(now)
	sw_push+=("$(elapsed "$t0" "$t1")")
	rm -rf "$T/sw-pull"
	t0=$(now)
	"$SLIPWAY" image copy --quiet "docker://$REGISTRY/bench/sw:1" "oci:$T/sw-pull:bench" >/dev/null
	t1=$(now)
	sw_pull+=("$(elapsed "$t0" "$t1")")
}
run_skopeo() {
	local t0 t1
	t0=$(now)
	skopeo --policy "$SKOPEO_POLICY" copy -q --dest-tls-verify=false "oci:$T/src:bench" "docker://$REGISTRY/bench/sk:1"
	t1=$(now)
	sk_push+=("$(elapsed "$t0" "$t1")")
	rm -rf "$T/sk-pull"
	t0=$(now)
	skopeo --policy "$SKOPEO_POLICY" copy -q --src-tls-verify=false "docker://$REGISTRY/bench/sk:1" "oci:$T/sk-pull:bench"
	t1=$(now)
	sk_pull+=("$(elapsed "$t0" "$t1")")
}
for ((r = 1; r <= ROUNDS; r++)); do
	start_registry plain
	if ((r % 2)); then run_slipway; run_skopeo; else run_skopeo; run_slipway; fi
	sw_stop_pid "$REGISTRY_PID"
	rm -rf "$REGISTRY_DIR"
done

p_sw=$(median "${sw_push[@]}") p_sk=$(median "${sk_push[@]}")
l_sw=$(median "${sw_pull[@]}") l_sk=$(median "${sk_pull[@]}")
echo
echo "registry round trip, $img_mb MiB image, median of $ROUNDS rounds (seconds):"
printf '  push  slipway %s  skopeo %s  ratio %s\n' "$p_sw" "$p_sk" "$(ratio "$p_sw" "$p_sk")"
printf '  pull  slipway %s  skopeo %s  ratio %s\n' "$l_sw" "$l_sk" "$(ratio "$l_sw" "$l_sk")"
printf '  both  ratio %s\n' "$(ratio "$(python3 -c "print($p_sw+$l_sw)")" "$(python3 -c "print($p_sk+$l_sk)")")"
echo "layer creation from a $tar_mb MiB tarball (median of 3, seconds):"
for comp in gzip zstd; do
	printf '  %s  slipway import %s (%s MiB/s)  plain %s -c %s  ratio %s\n' "$comp" "${lt[sw_$comp]}" \
		"$(python3 -c "print('%.0f' % ($tar_mb / ${lt[sw_$comp]}))")" "$comp" "${lt[ref_$comp]}" \
		"$(ratio "${lt[sw_$comp]}" "${lt[ref_$comp]}")"
done
