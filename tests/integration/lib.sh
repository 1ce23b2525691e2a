# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Harness for the registry integration tests, sourced by tests/integration/test_*.sh. It makes a
# temporary folder per test ($T, removed on exit together with every process the test started,
# each stopped by its PID), starts the real distribution registry (`docker-registry serve`) on
# 127.0.0.1 with a generated config (plain, htpasswd Basic auth, or Bearer tokens from
# tools/tokenserver.py), starts tools/faultproxy.py in front of it, and offers small assertion
# and JSON helpers (python3 standard library only). Ports are chosen free at start; a server
# that loses the race for its port is started again on another.
#
# Main helpers (each documented where it is defined):
#   sw_tmpdir                          $T, the cleanup trap; isolates SLIPWAY_STATE_DIR,
#                                      DOCKER_CONFIG and skopeo's auth file inside $T
#   start_registry plain | htpasswd USER PASS | token USER PASS [TOKENSERVER OPTIONS]
#                                      exports REGISTRY=127.0.0.1:PORT (and TOKENSERVER)
#   start_faultproxy [--rules JSON]    exports PROXY; proxy_faults, proxy_stats, proxy_count,
#                                      proxy_reset
#   run / run_ok / run_fails NAME CMD  capture $OUT, $ERR, $RC
#   fail, assert_eq, assert_ne, assert_contains, assert_not_contains, assert_file_eq
#   json_get, layout_digest, layout_image_blobs, layout_verify, summary_num,
#   registry_manifest_code, registry_manifest_digest, registry_check_image, rootfs_tar
#
# Environment from ctest: SLIPWAY (the binary), SW_TEST_SRCDIR (repo root), SW_TEST_BINDIR.
# By hand: SLIPWAY=build/slipway bash tests/integration/test_registry_roundtrip.sh
# SW_TEST_KEEP=1 keeps $T for inspection.

set -euo pipefail

: "${SW_TEST_SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${SLIPWAY:=${SW_TEST_BINDIR:-$SW_TEST_SRCDIR/build}/slipway}"
SW_ITEST_DIR="$SW_TEST_SRCDIR/tests/integration"
SW_TOOLS="$SW_ITEST_DIR/tools"
export SLIPWAY SW_TEST_SRCDIR

# The busybox rootfs comes from lib_rootfs.sh (sw_make_busybox_tar). It is sourced first, so
# the functions below (fail, sw_tmpdir, ...) are the ones the registry tests get.
# shellcheck source=tests/integration/lib_rootfs.sh
. "$SW_ITEST_DIR/lib_rootfs.sh"

SW_PIDS=()
SW_LOGS=()
SW_NREG=0
SW_NPROXY=0
T=

# ---------------------------------------------------------------- assertions

# fail MSG...: print and exit 1 (the EXIT trap cleans up).
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# note MSG...: progress on stderr, shown by ctest --output-on-failure.
note() {
	echo "--- $*" >&2
}

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
	[ "$1" = "$2" ] || fail "${3:-value}: expected '$1', got '$2'"
}

# assert_ne UNEXPECTED ACTUAL [WHAT]
assert_ne() {
	[ "$1" != "$2" ] || fail "${3:-value}: expected something other than '$1'"
}

# assert_contains HAYSTACK NEEDLE [WHAT]: case-insensitive substring check.
assert_contains() {
	local h=${1,,} n=${2,,}
	[[ $h == *"$n"* ]] || fail "${3:-text} does not contain '$2'; it is: $1"
}

# assert_not_contains HAYSTACK NEEDLE [WHAT]
assert_not_contains() {
	local h=${1,,} n=${2,,}
	[[ $h != *"$n"* ]] || fail "${3:-text} contains '$2' and must not; it is: $1"
}

# assert_file_eq A B [WHAT]: byte-identical files.
assert_file_eq() {
	cmp -s "$1" "$2" || fail "${3:-files}: $1 and $2 differ"
}

# ---------------------------------------------------------------- running commands

# run NAME CMD...: run CMD with stdout in $T/NAME.out and stderr in $T/NAME.err; its exit
# status in $RC, $OUT and $ERR hold the texts. Never fails by itself.
run() {
	local name=$1
	shift
	set +e
	"$@" >"$T/$name.out" 2>"$T/$name.err"
	RC=$?
	set -e
	OUT=$(cat "$T/$name.out")
	ERR=$(cat "$T/$name.err")
	# A sanitizer report fails the test whatever the exit status (ASan+UBSan builds).
	case $ERR in
	*"ERROR: AddressSanitizer"* | *"ERROR: LeakSanitizer"* | *"runtime error:"*)
		fail "'$*' hit a sanitizer: $ERR"
		;;
	esac
}

# run_ok NAME CMD...: as run, and fail the test (showing stderr) unless CMD exits 0.
run_ok() {
	run "$@"
	[ "$RC" -eq 0 ] || fail "'${*:2}' exited $RC; stderr: $ERR"
}

# run_fails NAME CMD...: as run, and fail the test unless CMD exits non-zero.
run_fails() {
	run "$@"
	[ "$RC" -ne 0 ] || fail "'${*:2}' succeeded and should have failed; stdout: $OUT stderr: $ERR"
}

# json_get EXPR [FILE]: evaluate the Python expression EXPR with `d` bound to the JSON read
# from FILE (default stdin). Strings print as they are, other values as JSON.
json_get() {
	python3 -c '
import json, sys
src = open(sys.argv[2]) if len(sys.argv) > 2 else sys.stdin
d = json.load(src)
v = eval(sys.argv[1], {"d": d, "len": len, "sorted": sorted, "any": any, "all": all})
print(v if isinstance(v, str) else json.dumps(v))
' "$@"
}

# sha256_of FILE: "sha256:<hex>".
sha256_of() {
	echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"
}

# ---------------------------------------------------------------- temporary folder, processes

sw_cleanup() {
	local rc=$? i pid
	trap - EXIT
	for ((i = ${#SW_PIDS[@]} - 1; i >= 0; i--)); do
		pid=${SW_PIDS[i]}
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [ "$rc" -ne 0 ] && [ -n "$T" ]; then
		local log
		for log in "${SW_LOGS[@]}"; do
			[ -f "$log" ] || continue
			echo "=== last lines of $log" >&2
			tail -n 25 "$log" >&2 || true
		done
	fi
	if [ -n "$T" ] && [ -d "$T" ]; then
		if [ "${SW_TEST_KEEP:-0}" = 1 ]; then
			echo "kept $T" >&2
		else
			rm -rf "$T"
		fi
	fi
	exit "$rc"
}

# sw_tmpdir: make $T and install the cleanup trap. It also isolates the test from the user's
# setup: slipway's state folder, Docker config and the containers auth file all live in $T.
sw_tmpdir() {
	T=$(mktemp -d "${TMPDIR:-/tmp}/slipway-itest.XXXXXX")
	trap sw_cleanup EXIT
	trap 'exit 130' INT TERM
	export SLIPWAY_STATE_DIR="$T/state"
	mkdir -p "$T/docker-empty"
	export DOCKER_CONFIG="$T/docker-empty"
	export REGISTRY_AUTH_FILE="$T/containers-auth.json"
	echo '{}' >"$REGISTRY_AUTH_FILE"
	unset SLIPWAY_INSECURE_REGISTRIES SLIPWAY_REGISTRY_CA
	# skopeo's signature policy, explicit so the test does not depend on /etc/containers.
	SKOPEO_POLICY="$T/policy.json"
	echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$SKOPEO_POLICY"
	[ -x "$SLIPWAY" ] || fail "slipway binary not found at '$SLIPWAY'"
}

# sw_track_pid PID [LOG]: stop PID at exit; show LOG's tail if the test fails.
sw_track_pid() {
	SW_PIDS+=("$1")
	[ $# -lt 2 ] || SW_LOGS+=("$2")
}

# sw_stop_pid PID: stop one tracked process now (and forget it, so the cleanup never signals a
# recycled PID).
sw_stop_pid() {
	local keep=() p
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	for p in "${SW_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	SW_PIDS=("${keep[@]}")
}

# sw_need_tmpdir WHO: servers live in $T and are stopped by sw_cleanup; both come from this
# file's sw_tmpdir.
sw_need_tmpdir() {
	if [ -z "$T" ] || [ ! -d "$T" ]; then
		fail "$1: call lib.sh's sw_tmpdir first"
	fi
	[[ $(trap -p EXIT) == *sw_cleanup* ]] ||
		fail "$1: the EXIT trap is not sw_cleanup; the servers would outlive the test"
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# http_code URL [CURL ARGS...]: the HTTP status of a GET ("000" when nothing answers).
http_code() {
	local url=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}

# wait_port_file FILE PID LOG NAME: wait (bounded) for a python server to write its port.
wait_port_file() {
	local file=$1 pid=$2 log=$3 name=$4 i
	for ((i = 0; i < 200; i++)); do
		[ -s "$file" ] && return 0
		kill -0 "$pid" 2>/dev/null || fail "$name exited at start: $(tail -n 20 "$log")"
		sleep 0.05
	done
	fail "$name did not start in 10 s: $(tail -n 20 "$log")"
}

# ---------------------------------------------------------------- the registry

# start_registry plain | htpasswd USER PASS | token USER PASS [TOKENSERVER OPTIONS...]
# Starts a fresh registry (its own storage under $T) and exports REGISTRY=127.0.0.1:PORT; sets
# REGISTRY_DIR (its folder: config.yml, data/, registry.log), REGISTRY_LOG and REGISTRY_PID. For token mode
# it also starts tools/tokenserver.py (key and certificate made here) and exports TOKENSERVER.
start_registry() {
	local mode=${1:-plain}
	sw_need_tmpdir start_registry
	SW_NREG=$((SW_NREG + 1))
	local dir="$T/registry$SW_NREG"
	mkdir -p "$dir/data"
	local auth=""
	case "$mode" in
	plain) ;;
	htpasswd)
		[ $# -ge 3 ] || fail "start_registry htpasswd USER PASS"
		htpasswd -Bbn "$2" "$3" >"$dir/htpasswd" 2>/dev/null ||
			fail "htpasswd could not make $dir/htpasswd"
		auth="auth:
  htpasswd:
    realm: slipway-test
    path: $dir/htpasswd"
		;;
	token)
		[ $# -ge 3 ] || fail "start_registry token USER PASS [OPTIONS]"
		local user=$2 pass=$3
		shift 3
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=slipway-test \
			-keyout "$dir/key.pem" -out "$dir/cert.pem" >"$dir/openssl.log" 2>&1 ||
			fail "openssl could not make the token key: $(cat "$dir/openssl.log")"
		local tlog="$dir/tokenserver.log"
		python3 "$SW_TOOLS/tokenserver.py" --port 0 --port-file "$dir/token.port" \
			--key "$dir/key.pem" --cert "$dir/cert.pem" --issuer slipway-test \
			--service test-registry --user "$user" --password "$pass" "$@" >"$tlog" 2>&1 &
		local tpid=$!
		sw_track_pid "$tpid" "$tlog"
		wait_port_file "$dir/token.port" "$tpid" "$tlog" tokenserver
		TOKENSERVER="127.0.0.1:$(cat "$dir/token.port")"
		export TOKENSERVER
		auth="auth:
  token:
    realm: http://$TOKENSERVER/token
    service: test-registry
    issuer: slipway-test
    rootcertbundle: $dir/cert.pem"
		;;
	*) fail "start_registry: unknown mode '$mode'" ;;
	esac

	local attempt port pid log="$dir/registry.log" i code
	for ((attempt = 1; attempt <= 5; attempt++)); do
		port=$(free_port)
		cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: slipway-test-secret-$SW_NREG
  headers:
    X-Content-Type-Options: [nosniff]
$auth
EOF
		: >"$log"
		# The registry reads REGISTRY_* variables as config overrides (REGISTRY_AUTH_FILE
		# would become auth.file): start it without any of them.
		local unset_args=() v
		for v in "${!REGISTRY_@}"; do
			unset_args+=(-u "$v")
		done
		env "${unset_args[@]}" docker-registry serve "$dir/config.yml" >>"$log" 2>&1 &
		pid=$!
		sw_track_pid "$pid"
		for ((i = 0; i < 200; i++)); do
			code=$(http_code "http://127.0.0.1:$port/v2/")
			if [ "$code" = 200 ] || [ "$code" = 401 ]; then
				SW_LOGS+=("$log")
				REGISTRY="127.0.0.1:$port"
				# shellcheck disable=SC2034 # for the tests
				REGISTRY_DIR=$dir
				# shellcheck disable=SC2034
				REGISTRY_LOG=$log
				# shellcheck disable=SC2034
				REGISTRY_PID=$pid
				export REGISTRY
				return 0
			fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		sw_stop_pid "$pid"
		if grep -q "address already in use" "$log"; then
			continue
		fi
		fail "registry ($mode) did not start on 127.0.0.1:$port: $(tail -n 20 "$log")"
	done
	fail "registry ($mode): no free port after 5 attempts: $(tail -n 20 "$log")"
}

# registry_manifest_code HOST REPO REF [CURL ARGS...]: the HTTP status of a GET of the manifest
# straight from the registry (pass -u USER:PASS for an htpasswd registry).
registry_manifest_code() {
	local host=$1 repo=$2 ref=$3
	shift 3
	http_code "http://$host/v2/$repo/manifests/$ref" "$@" \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.oci.image.index.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json'
}

# registry_manifest_digest HOST REPO REF [CURL ARGS...]: Docker-Content-Digest of a manifest.
registry_manifest_digest() {
	local host=$1 repo=$2 ref=$3
	shift 3
	curl -fsS -I --max-time 10 "$@" "http://$host/v2/$repo/manifests/$ref" \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.oci.image.index.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' |
		tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# registry_blob_code HOST REPO DIGEST [CURL ARGS...]: HTTP status of a HEAD of a blob.
registry_blob_code() {
	local host=$1 repo=$2 digest=$3
	shift 3
	curl -s -I -o /dev/null -w '%{http_code}' --max-time 10 "$@" \
		"http://$host/v2/$repo/blobs/$digest" || true
}

# registry_check_image HOST REPO TAG DIGEST LAYOUT: straight from the registry (no proxy), TAG
# resolves to DIGEST, and the manifest and every blob it names (those of LAYOUT's copy of the
# manifest) download with content that hashes to their digests.
registry_check_image() {
	local host=$1 repo=$2 tag=$3 digest=$4 layout=$5 b got
	assert_eq "$digest" "$(registry_manifest_digest "$host" "$repo" "$tag")" \
		"digest of $repo:$tag in the registry"
	for b in $(layout_image_blobs "$layout" "$digest"); do
		got=$({ curl -fsS --max-time 120 "http://$host/v2/$repo/blobs/$b" || true; } |
			sha256sum | cut -d' ' -f1)
		assert_eq "${b#sha256:}" "$got" "content of blob $b in $repo"
	done
}

# tokenserver_stats: the token server's counts as JSON.
tokenserver_stats() {
	curl -fsS --max-time 10 "http://$TOKENSERVER/stats"
}

# ---------------------------------------------------------------- the fault proxy

# start_faultproxy [--upstream HOST:PORT] [--rules JSON]: a tools/faultproxy.py in front of
# $REGISTRY (or the given upstream); exports PROXY=127.0.0.1:PORT and PROXY_LOG.
# shellcheck disable=SC2120 # arguments are optional
start_faultproxy() {
	local upstream=${REGISTRY:-}
	local args=()
	while [ $# -gt 0 ]; do
		case "$1" in
		--upstream)
			upstream=$2
			shift 2
			;;
		*)
			args+=("$1")
			shift
			;;
		esac
	done
	sw_need_tmpdir start_faultproxy
	[ -n "$upstream" ] || fail "start_faultproxy: no upstream (start a registry first)"
	SW_NPROXY=$((SW_NPROXY + 1))
	local dir="$T/proxy$SW_NPROXY"
	mkdir -p "$dir"
	local log="$dir/faultproxy.log"
	python3 "$SW_TOOLS/faultproxy.py" --upstream "$upstream" --port 0 \
		--port-file "$dir/port" "${args[@]}" >"$log" 2>&1 &
	local pid=$!
	sw_track_pid "$pid" "$log"
	wait_port_file "$dir/port" "$pid" "$log" faultproxy
	PROXY="127.0.0.1:$(cat "$dir/port")"
	PROXY_LOG=$log
	export PROXY PROXY_LOG
}

# proxy_stats: the proxy's counts as JSON (see tools/faultproxy.py).
proxy_stats() {
	curl -fsS --max-time 10 "http://$PROXY/__stats"
}

# proxy_count KEY: one count of the stats' by_kind ("POST upload") or by_method ("GET") table,
# or a top-level number ("mounts", "faults", "total"); 0 when absent.
proxy_count() {
	proxy_stats | json_get "
(d['by_kind'].get('$1') if ' ' in '$1' else d['by_method'].get('$1', d.get('$1'))) or 0"
}

proxy_reset() {
	curl -fsS --max-time 10 -X POST "http://$PROXY/__reset" >/dev/null
}

# proxy_faults JSON: replace the proxy's fault rules ('[]' clears them).
proxy_faults() {
	curl -fsS --max-time 10 -X POST -H 'Content-Type: application/json' --data-binary "$1" \
		"http://$PROXY/__faults" >/dev/null || fail "proxy rejected the rules $1"
}

# ---------------------------------------------------------------- images

# The busybox binary that rootfs_tar puts at bin/busybox.
# shellcheck disable=SC2034 # used by the tests
ROOTFS_BUSYBOX=$SW_BUSYBOX

# rootfs_tar DEST: a busybox root filesystem tarball (lib_rootfs.sh's sw_make_busybox_tar).
rootfs_tar() {
	sw_make_busybox_tar "$1"
}

# layout_digest DIR TAG: the digest index.json of the OCI layout DIR gives for TAG (its
# org.opencontainers.image.ref.name annotation); empty when there is none.
layout_digest() {
	python3 - "$1" "$2" <<'PY'
import json, os, sys
path = os.path.join(sys.argv[1], "index.json")
if os.path.exists(path):
    for m in json.load(open(path)).get("manifests", []):
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == sys.argv[2]:
            print(m["digest"])
            break
PY
}

# layout_blob_path DIR DIGEST
layout_blob_path() {
	echo "$1/blobs/${2%%:*}/${2#*:}"
}

# layout_image_blobs DIR MANIFEST_DIGEST: the config and layer digests of a manifest, one a line.
layout_image_blobs() {
	python3 - "$(layout_blob_path "$1" "$2")" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(m["config"]["digest"])
for l in m.get("layers", []):
    print(l["digest"])
PY
}

# layout_media_type DIR DIGEST: the mediaType field of a manifest blob.
layout_media_type() {
	json_get "d.get('mediaType', '')" "$(layout_blob_path "$1" "$2")"
}

# layout_verify DIR: every blob's content hashes to its file name.
layout_verify() {
	local f
	for f in "$1"/blobs/sha256/*; do
		[ -f "$f" ] || continue
		[ "$(sha256sum "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] ||
			fail "layout $1: blob $(basename "$f") does not match its digest"
	done
}

# summary_num TEXT WHAT: the number before WHAT ("uploaded", "already present", "mounted",
# "downloaded") in slipway's copy summary line; fails when the line does not have it.
summary_num() {
	local re="([0-9]+) (blobs )?$2"
	[[ $1 =~ $re ]] || fail "copy summary has no '$2' count; stderr: $1"
	echo "${BASH_REMATCH[1]}"
}
