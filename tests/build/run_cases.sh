#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The builder's conformance suite: every folder tests/build/cases/NAME/ is a build context with a
# Dockerfile and an expected.json. Each case is built with `slipway build --output oci:...`, the
# result is unpacked by an independent tool (`umoci unpack`, as root so owners and modes are
# kept, whiteouts applied by umoci: a file a RUN deleted must not be there) and checked against
# expected.json by fscheck.py: files that must exist (type, mode, uid/gid, link target, content
# or sha256), paths that must not, config fields.
#
# With Docker (--docker yes, or auto when dockerd is installed), the runner also starts its own
# dockerd (lib_docker.sh), builds every case with `DOCKER_BUILDKIT=1 docker build --network none`
# from the same busybox base (imported both ways with the same PATH), exports the image with
# `skopeo copy docker-daemon:... oci:...`, checks expected.json against Docker's image as well
# (so the expectations themselves are Docker's behaviour), and compares the two images file by
# file and config field by config field. Paths ignored in that comparison, because the container
# runtimes make them as mount points and Docker leaves them behind (BuildKit leaves empty /proc,
# /sys and /dev folders in the layer of any RUN over a base that lacks them):
#   /proc /sys /dev (and anything under them), /etc/hosts, /etc/resolv.conf, /etc/hostname,
#   /.dockerenv
# A case whose expected.json has "docker": "REASON" is not built with Docker (a feature the
# Debian dockerd's built-in Dockerfile frontend lacks, or a network the case needs).
#
# expected.json keys (all optional):
#   about          what the case shows (documentation only)
#   dockerfile     the Dockerfile (-f), relative to the case folder (it may be another case's)
#   build_args     {"K": "V"}; target: the --target stage
#   rounds         [{"build_args": {...}}, ...]: build once per round (the same state folder),
#                  checking after the last; round build_args override the top-level ones
#   secrets        {"ID": "VALUE"}: VALUE is written to a file outside the context and given as
#                  --secret id=ID,src=FILE; afterwards VALUE must appear in no blob of the output
#                  layout (layers decompressed), nowhere under the state folder
#   serve          a folder of the case served over http on 127.0.0.1 for the build; its URL is
#                  the build arg BASE_URL
#   docker         a reason not to compare with Docker
#   docker_ignore  ["PATH", ...] more paths left out of the comparison, with the reason in about
#   files          {"/path": {type: file|dir|symlink|hardlink|fifo, mode: "0755", uid, gid,
#                  target (symlink target, or the path a hard link shares its inode with),
#                  content (exact text) or sha256}}: what must exist, and how
#   absent         ["/path", ...]: what must not exist
#   config         {"Env": [...], "Cmd": null, ...}: fields of the image config's "config",
#                  compared exactly (null: absent or empty)
#
# usage: tests/build/run_cases.sh [--docker auto|yes|no] [--no-slipway] [CASE...]
#   --no-slipway: Docker only, to check new expectations against Docker's behaviour
# env: SLIPWAY (the binary; default build/slipway), SW_TEST_KEEP=1 keeps the temporary folder.
# Prints one line per case and check, then "conformance: N passed, N failed, N skipped"; exits 1
# when anything failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${SW_TEST_SRCDIR:=$(cd "$HERE/../.." && pwd)}"
export SW_TEST_SRCDIR
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"
# shellcheck source=tests/build/lib_docker.sh
source "$HERE/lib_docker.sh"

use_docker=auto
use_slipway=1
cases=()
while [ $# -gt 0 ]; do
	case $1 in
	--docker)
		use_docker=$2
		shift 2
		;;
	--no-slipway)
		use_slipway=0
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	-*)
		echo "unknown option $1" >&2
		exit 2
		;;
	*)
		cases+=("$1")
		shift
		;;
	esac
done
if [ ${#cases[@]} -eq 0 ]; then
	for d in "$HERE"/cases/*/; do
		cases+=("$(basename "$d")")
	done
fi
case $use_docker in
auto) if have_dockerd; then use_docker=yes; else use_docker=no; fi ;;
yes) have_dockerd || fail "--docker yes: dockerd is not installed" ;;
no) ;;
*) fail "--docker auto|yes|no" ;;
esac

if [ "$use_slipway" = 1 ]; then
	sw_tmpdir
else
	# Docker only (to check the expectations): lib.sh's sw_tmpdir wants the binary.
	SLIPWAY=/bin/true sw_tmpdir
fi
sw_docker_trap
unset SOURCE_DATE_EPOCH
FSCHECK=(python3 "$HERE/fscheck.py")
DOCKER_IGNORE=(/proc /sys /dev /etc/hosts /etc/resolv.conf /etc/hostname /.dockerenv)

npass=0 nfail=0 nskip=0
failed=()
pass() {
	npass=$((npass + 1))
	echo "PASS $1"
}
failed_check() {
	nfail=$((nfail + 1))
	failed+=("$1")
	echo "FAIL $1"
	[ -z "${2:-}" ] || sed -e 's/^/    /' "$2" | head -n 40
}
skip() {
	nskip=$((nskip + 1))
	echo "SKIP $1: $2"
}

# exp KEY_EXPR CASE: a value of the case's expected.json (Python expression on d).
exp() {
	json_get "$1" "$HERE/cases/$2/expected.json"
}

# ---------------------------------------------------------------- the base image, both ways

sw_make_busybox_tar "$T/rootfs.tar"
if [ "$use_slipway" = 1 ]; then
	run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1
fi
if [ "$use_docker" = yes ]; then
	start_dockerd
	docker_import "$T/rootfs.tar" bb:1
fi

# serve_case DIR: a python http.server on 127.0.0.1 for DIR; sets SERVE_URL and SERVE_PID.
serve_case() {
	local dir=$1 port log="$T/http.log" i attempt
	for ((attempt = 1; attempt <= 5; attempt++)); do
		port=$(free_port)
		python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$log" 2>&1 &
		SERVE_PID=$!
		sw_track_pid "$SERVE_PID" "$log"
		for ((i = 0; i < 100; i++)); do
			if [ "$(http_code "http://127.0.0.1:$port/")" = 200 ]; then
				SERVE_URL="http://127.0.0.1:$port"
				return 0
			fi
			kill -0 "$SERVE_PID" 2>/dev/null || break
			sleep 0.05
		done
		sw_stop_pid "$SERVE_PID"
	done
	fail "http.server did not start: $(cat "$log")"
}

# build_flags CASE ROUND: the build flags common to both builders, one a line.
build_flags() {
	python3 - "$HERE/cases/$1/expected.json" "$2" "$T/secrets" "${SERVE_URL:-}" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
rnd = int(sys.argv[2])
args = dict(d.get("build_args", {}))
rounds = d.get("rounds") or [{}]
args.update(rounds[rnd].get("build_args", {}))
if d.get("serve"):
    args["BASE_URL"] = sys.argv[4]
out = []
if d.get("dockerfile"):
    out += ["-f", os.path.join(os.path.dirname(sys.argv[1]), d["dockerfile"])]
for k, v in args.items():
    out += ["--build-arg", f"{k}={v}"]
if d.get("target"):
    out += ["--target", d["target"]]
for sid, val in d.get("secrets", {}).items():
    os.makedirs(sys.argv[3], exist_ok=True)
    path = os.path.join(sys.argv[3], sid)
    with open(path, "w") as f:
        f.write(val)
    out += ["--secret", f"id={sid},src={path}"]
if out:
    print("\n".join(out))
PY
}

# unpack LAYOUT:TAG DIR: `umoci unpack` (as root: owners and modes kept), its rootfs moved to DIR.
unpack() {
	rm -rf "$2" "$2.bundle"
	umoci unpack --image "$1" "$2.bundle" >"$2.log" 2>&1 || return 1
	mv "$2.bundle/rootfs" "$2"
	rm -rf "$2.bundle"
}

# ---------------------------------------------------------------- the cases

for name in "${cases[@]}"; do
	dir=$HERE/cases/$name
	[ -f "$dir/expected.json" ] || fail "case $name: no $dir/expected.json"
	W=$T/cases/$name
	mkdir -p "$W"
	SERVE_URL=
	serve=$(exp "d.get('serve', '')" "$name")
	[ -z "$serve" ] || serve_case "$dir/$serve"
	nrounds=$(exp "len(d.get('rounds') or [{}])" "$name")

	# -- slipway
	if [ "$use_slipway" = 1 ]; then
		ok=1
		for ((r = 0; r < nrounds; r++)); do
			mapfile -t flags < <(build_flags "$name" "$r")
			if ! timeout 600 "$SLIPWAY" build -t "conform-$name:latest" \
				--output "oci:$W/sw:img" "${flags[@]}" "$dir" \
				>"$W/sw-build$r.out" 2>"$W/sw-build$r.err"; then
				ok=0
				failed_check "$name: slipway build (round $((r + 1))) failed" "$W/sw-build$r.err"
				break
			fi
			if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$W/sw-build$r.err"; then
				ok=0
				failed_check "$name: slipway hit a sanitizer" "$W/sw-build$r.err"
				break
			fi
		done
		if [ $ok = 1 ] && ! unpack "$W/sw:img" "$W/sw-rootfs"; then
			ok=0
			failed_check "$name: umoci could not unpack slipway's image" "$W/sw-rootfs.log"
		fi
		if [ $ok = 1 ]; then
			if "${FSCHECK[@]}" check "$dir/expected.json" "$W/sw:img" "$W/sw-rootfs" \
				>"$W/sw-check.txt"; then
				pass "$name"
			else
				failed_check "$name: slipway's image differs from expected.json" \
					"$W/sw-check.txt"
			fi
			secrets=$(exp "' '.join(d.get('secrets', {}).values())" "$name")
			for s in $secrets; do
				if "${FSCHECK[@]}" grep "$s" "$W/sw" "$SLIPWAY_STATE_DIR" >"$W/sw-grep.txt"; then
					pass "$name: the secret is in no blob and nowhere in the state folder"
				else
					failed_check "$name: the secret leaked" "$W/sw-grep.txt"
				fi
			done
		fi
	fi

	# -- Docker
	why=$(exp "d.get('docker', '')" "$name")
	if [ "$use_docker" != yes ]; then
		:
	elif [ -n "$why" ]; then
		skip "$name (vs docker)" "$why"
	else
		ok=1
		for ((r = 0; r < nrounds; r++)); do
			mapfile -t flags < <(build_flags "$name" "$r")
			if ! timeout 600 "$DOCKER" build --network none -t "conform-$name:latest" \
				"${flags[@]}" "$dir" >"$W/dk-build$r.out" 2>"$W/dk-build$r.err"; then
				ok=0
				failed_check "$name: docker build (round $((r + 1))) failed" "$W/dk-build$r.err"
				break
			fi
		done
		if [ $ok = 1 ] && ! skopeo copy --src-daemon-host "$DOCKER_HOST" \
			"docker-daemon:conform-$name:latest" "oci:$W/dk:img" >"$W/dk-copy.log" 2>&1; then
			ok=0
			failed_check "$name: skopeo could not export Docker's image" "$W/dk-copy.log"
		fi
		if [ $ok = 1 ] && ! unpack "$W/dk:img" "$W/dk-rootfs"; then
			ok=0
			failed_check "$name: umoci could not unpack Docker's image" "$W/dk-rootfs.log"
		fi
		if [ $ok = 1 ]; then
			# The config as Docker has it (skopeo's conversion to OCI drops Healthcheck,
			# OnBuild and Shell, which OCI configs do not define).
			"$DOCKER" image inspect -f '{{json .Config}}' "conform-$name:latest" |
				python3 -c 'import json, sys; print(json.dumps({"config": json.load(sys.stdin)}))' \
					>"$W/dk-config.json"
			if "${FSCHECK[@]}" check "$dir/expected.json" "$W/dk-config.json" "$W/dk-rootfs" \
				>"$W/dk-check.txt"; then
				pass "$name (docker meets expected.json)"
			else
				failed_check "$name: Docker's image differs from expected.json" \
					"$W/dk-check.txt"
			fi
			if [ "$use_slipway" = 1 ] && [ -d "$W/sw-rootfs" ]; then
				ign=()
				mapfile -t extra < <(exp "'\n'.join(d.get('docker_ignore', []))" "$name")
				for p in "${DOCKER_IGNORE[@]}" "${extra[@]}"; do
					[ -z "$p" ] || ign+=(--ignore "$p")
				done
				if "${FSCHECK[@]}" compare "$W/sw:img" "$W/sw-rootfs" "$W/dk-config.json" \
					"$W/dk-rootfs" "${ign[@]}" >"$W/compare.txt"; then
					pass "$name (same files and config as docker)"
				else
					sed -i -e 's/first/slipway/g' -e 's/second/docker/g' "$W/compare.txt"
					failed_check "$name: slipway and docker differ" "$W/compare.txt"
				fi
			fi
		fi
	fi
	if [ -n "$serve" ]; then
		sw_stop_pid "$SERVE_PID"
	fi
	# Keep the disk use small: the unpacked trees are only needed for a failing case.
	[ "${SW_TEST_KEEP:-0}" = 1 ] || rm -rf "$W/sw-rootfs" "$W/dk-rootfs"
done

echo
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed:"
	printf '  %s\n' "${failed[@]}"
fi
echo "conformance: $npass passed, $nfail failed, $nskip skipped"
[ "$nfail" -eq 0 ]
