# SPDX-License-Identifier: Apache-2.0
# Helpers shared by the integration tests (source this file; it sets nothing off by itself):
#   fail MSG...                   print "FAIL: MSG" on stderr and exit 1
#   sw_tmpdir                     make a temporary folder, in $SW_TMP, removed on exit (with the
#                                 commands queued by sw_on_exit run first, last queued first)
#   sw_on_exit CMD...             queue a cleanup command (e.g. stopping a server by its PID)
#   sw_make_busybox_rootfs DIR    a busybox root filesystem from Debian's busybox-static:
#                                 bin/busybox, a symlink in bin/ for every applet of
#                                 `busybox --list` (sh, ls, cat, echo, ...), etc/passwd,
#                                 etc/group, root/ and tmp/
#   sw_make_busybox_tar OUT.tar   that root filesystem as a tarball (numeric owners 0:0, sorted,
#                                 mtimes 2023-11-14T22:13:20Z, entries without a "./" prefix)
#   sw_json FILE KEY.PATH         print a value of a JSON file ("layers.0.diffID"; objects and
#                                 arrays come out as compact JSON, strings raw)
#   sw_expect_eq WANT GOT WHAT    fail unless the two strings are equal
#   sw_expect_contains HAYSTACK NEEDLE WHAT

SW_BUSYBOX=${SW_BUSYBOX:-/bin/busybox}
SW_TEST_PASSWD='root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false'

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

SW_EXIT_CMDS=()

sw_on_exit() {
	SW_EXIT_CMDS+=("$*")
}

sw__cleanup() {
	local rc=$? i
	for ((i = ${#SW_EXIT_CMDS[@]} - 1; i >= 0; i--)); do
		eval "${SW_EXIT_CMDS[$i]}" || true
	done
	if [ -n "${SW_TMP:-}" ] && [ -d "$SW_TMP" ]; then
		rm -rf -- "$SW_TMP"
	fi
	exit "$rc"
}

sw_tmpdir() {
	SW_TMP=$(mktemp -d "${TMPDIR:-/tmp}/slipway-test.XXXXXX")
	export SW_TMP
	trap sw__cleanup EXIT
	trap 'exit 130' INT TERM
}

sw_make_busybox_rootfs() {
	local root=$1 applet
	[ -x "$SW_BUSYBOX" ] || fail "$SW_BUSYBOX not found (install the busybox-static package)"
	mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
	chmod 1777 "$root/tmp"
	chmod 0700 "$root/root"
	cp "$SW_BUSYBOX" "$root/bin/busybox"
	chmod 0755 "$root/bin/busybox"
	for applet in $("$SW_BUSYBOX" --list); do
		case $applet in
		busybox | */*) continue ;;
		esac
		ln -sf busybox "$root/bin/$applet"
	done
	for applet in sh ls cat echo; do
		[ -L "$root/bin/$applet" ] || fail "busybox has no '$applet' applet"
	done
	printf '%s\n' "$SW_TEST_PASSWD" >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
}

sw_make_busybox_tar() {
	local out root
	out=$(realpath -m -- "$1")
	root=$(mktemp -d "${TMPDIR:-/tmp}/slipway-rootfs.XXXXXX")
	sw_make_busybox_rootfs "$root"
	(cd "$root" && tar --numeric-owner --owner=0 --group=0 --sort=name \
		--mtime=@1700000000 -cf "$out" bin etc root tmp)
	rm -rf -- "$root"
}

sw_json() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    v = json.load(f)
for k in sys.argv[2].split('.') if sys.argv[2] else []:
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v, separators=(',', ':')))
EOF
}

sw_expect_eq() {
	[ "$1" = "$2" ] || fail "$3: expected '$1', got '$2'"
}

sw_expect_contains() {
	case $1 in
	*"$2"*) ;;
	*) fail "$3: '$2' not found in: $1" ;;
	esac
}
