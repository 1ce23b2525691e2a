# SPDX-License-Identifier: Apache-2.0
# Root filesystems for tests and the demo, sourced by lib.sh (it uses lib.sh's `fail`):
#   sw_make_busybox_rootfs DIR    a busybox root filesystem from Debian's busybox-static:
#                                 bin/busybox, a symlink in bin/ for every applet of
#                                 `busybox --list` (sh, ls, cat, echo, ...), etc/passwd,
#                                 etc/group, root/ and tmp/
#   sw_make_busybox_tar OUT.tar   that root filesystem as a tarball (numeric owners 0:0, sorted,
#                                 mtimes 2023-11-14T22:13:20Z, entries without a "./" prefix)
#   sw_json FILE KEY.PATH         print a value of a JSON file ("layers.0.diffID"; objects and
#                                 arrays come out as compact JSON, strings raw)

SW_BUSYBOX=${SW_BUSYBOX:-/bin/busybox}
SW_TEST_PASSWD='root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false'

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

