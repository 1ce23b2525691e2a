# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# A private Docker daemon for comparing slipway's builder with BuildKit, sourced after
# tests/integration/lib.sh (it uses $T, fail and note). start_dockerd runs Debian's dockerd with
# everything under $T (data root, exec root, socket, pid file; no bridge, no iptables) and
# exports DOCKER_HOST and DOCKER_BUILDKIT=1; stop_dockerd stops it by its PID (TERM, then KILL
# after 30 s), unmounts whatever it left mounted under $T/docker and $T/dexec, deepest first, and
# removes both folders. sw_docker_trap installs an EXIT trap that does that before lib.sh's
# sw_cleanup. The client is /usr/bin/docker (Debian's, API 1.41).

DOCKER=/usr/bin/docker
DOCKERD_PID=

# have_dockerd: is a Docker daemon installed (and its client)?
have_dockerd() {
	command -v dockerd >/dev/null 2>&1 && [ -x "$DOCKER" ]
}

# unmount_under DIR: unmount every mount point at or below DIR, deepest first.
unmount_under() {
	local dir mp
	dir=$(realpath -m -- "$1")
	# mountinfo's field 5 is the mount point (octal escapes for spaces; none in our paths).
	while read -r mp; do
		umount -l "$mp" 2>/dev/null || true
	done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' \
		/proc/self/mountinfo | sort -r)
}

start_dockerd() {
	sw_need_tmpdir start_dockerd
	local log="$T/dockerd.log" i
	mkdir -p "$T/docker" "$T/dexec"
	dockerd --bridge=none --iptables=false --ip6tables=false --data-root "$T/docker" \
		--exec-root "$T/dexec" -H "unix://$T/docker.sock" --pidfile "$T/docker.pid" \
		>"$log" 2>&1 &
	DOCKERD_PID=$!
	SW_LOGS+=("$log")
	export DOCKER_HOST="unix://$T/docker.sock" DOCKER_BUILDKIT=1
	for ((i = 0; i < 300; i++)); do
		if "$DOCKER" version >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited at start: $(tail -n 20 "$log")"
		sleep 0.1
	done
	fail "dockerd did not answer in 30 s: $(tail -n 20 "$log")"
}

stop_dockerd() {
	[ -n "$DOCKERD_PID" ] || return 0
	local i
	kill "$DOCKERD_PID" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		kill -0 "$DOCKERD_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$DOCKERD_PID" 2>/dev/null || true
	wait "$DOCKERD_PID" 2>/dev/null || true
	DOCKERD_PID=
	# dockerd's own containerd normally ends with it; not after a KILL.
	local cpid
	cpid=$(cat "$T/dexec/containerd/containerd.pid" 2>/dev/null || true)
	if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null &&
		grep -q containerd "/proc/$cpid/comm" 2>/dev/null; then
		kill "$cpid" 2>/dev/null || true
		sleep 1
		kill -9 "$cpid" 2>/dev/null || true
	fi
	unmount_under "$T/docker"
	unmount_under "$T/dexec"
	rm -rf "$T/docker" "$T/dexec"
}

# sw_docker_trap: stop the daemon (and clean its folders) before lib.sh's cleanup runs, keeping
# the script's exit status for it (set +e: under errexit, `(exit 1)` would end the trap before
# the cleanup).
sw_docker_trap() {
	# shellcheck disable=SC2154 # sw_rc is set by the trap itself
	trap 'sw_rc=$?; set +e; stop_dockerd; (exit $sw_rc); sw_cleanup' EXIT
}

# docker_import_busybox ROOTFS.tar NAME:TAG: the same rootfs as slipway's base, with the PATH
# that `slipway image import` records.
SW_IMPORT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
docker_import() {
	"$DOCKER" import --change "ENV PATH=$SW_IMPORT_PATH" "$1" "$2" >/dev/null
}
