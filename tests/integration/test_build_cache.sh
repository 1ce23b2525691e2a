#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The build cache, as a user sees it in `slipway build`'s plain progress ("#N [i/n] STEP",
# "#N CACHED", "#N DONE 1.2s") and in the printed image digest. Every RUN of the test's
# Dockerfile prints a marker (RAN-A, RAN-B, ...; quoted in the Dockerfile so that the step's
# title does not contain it), so a step that runs shows its marker and a cached one does not.
#   - a second build is all cache hits and gives the same digest;
#   - touching every file (same bytes, new mtimes) keeps the cache and the digest;
#   - changing one file's bytes re-runs its COPY and every step after it, and nothing before;
#   - a changed --build-arg re-runs from the first step that uses it, and nothing before;
#   - a mode change (same bytes), a new file and a changed symlink target in a copied folder
#     re-run that COPY and what follows; a change to a file no step copies, to an ignored file
#     (.dockerignore) or to a comment of the Dockerfile keeps everything cached;
#   - --no-cache runs every step;
#   - --cache-to a registry, then an empty state folder (same base image) with --cache-from:
#     every step is a hit (no RUN output) and the digest is the same (SOURCE_DATE_EPOCH set);
#   - two builds on empty caches with SOURCE_DATE_EPOCH set give the same digest.
set -euo pipefail

: "${SLIPWAY:?set SLIPWAY to the slipway binary}"
: "${SW_TEST_SRCDIR:?set SW_TEST_SRCDIR to the source tree}"
# shellcheck source=tests/integration/lib.sh
source "$SW_TEST_SRCDIR/tests/integration/lib.sh"

sw_tmpdir
unset SOURCE_DATE_EPOCH
sw_make_busybox_tar "$T/rootfs.tar"
run_ok import "$SLIPWAY" image import "$T/rootfs.tar" bb:1

# ---------------------------------------------------------------- the project

ctx=$T/ctx
mkdir -p "$ctx/dir/sub"
echo stable >"$ctx/stable.txt"
echo "version 1" >"$ctx/changing.txt"
echo one >"$ctx/dir/one.txt"
echo two >"$ctx/dir/sub/two.txt"
ln -s one.txt "$ctx/dir/link"
echo unrelated >"$ctx/unrelated.txt"
echo ignored >"$ctx/ignored.txt"
echo ignored.txt >"$ctx/.dockerignore"
cat >"$ctx/Dockerfile" <<'DF'
FROM bb:1
RUN echo RAN-'A' && echo a > /a.txt
COPY stable.txt /stable.txt
RUN echo RAN-'B' && cat /stable.txt > /b.txt
COPY changing.txt /changing.txt
RUN echo RAN-'C' && cat /changing.txt > /c.txt
ARG V=1
RUN echo RAN-'D' && echo "v=$V" > /d.txt
WORKDIR /w
COPY dir/ /w/dir/
RUN echo RAN-'E' && find /w | sort > /e.txt
CMD ["cat", "/d.txt"]
DF
MARKS=(A B C D E)

# ---------------------------------------------------------------- helpers

n_build=0
# build [FLAGS...]: slipway build of $ctx (plain progress, as stderr is not a terminal); the
# digest in $DIGEST, stderr in $ERR and $T/buildN.err.
build() {
	n_build=$((n_build + 1))
	run_ok "build$n_build" "$SLIPWAY" build --progress plain -t app:dev "$@" "$ctx"
	DIGEST=$(tail -n 1 <<<"$OUT")
	[[ $DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || fail "build printed '$OUT', not a digest"
}

# steps: each step of the last build's progress as "CACHED|RAN TITLE", one a line.
steps() {
	python3 - "$T/build$n_build.err" <<'PY'
import re, sys
titles, cached, order = {}, set(), []
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"#(\d+) (\[[^\]]*\] .*)$", line.rstrip("\n"))
    if m and m.group(1) not in titles:
        titles[m.group(1)] = m.group(2)
        order.append(m.group(1))
    m = re.match(r"#(\d+) CACHED\b", line)
    if m:
        cached.add(m.group(1))
for n in order:
    print(("CACHED " if n in cached else "RAN ") + titles[n])
PY
}

# ran MARK...: those RUN steps ran (their marker is in the output); not_ran MARK...: they did not.
ran() {
	local m
	for m in "$@"; do
		grep -q "RAN-$m" "$T/build$n_build.err" ||
			fail "build $n_build: the RUN printing RAN-$m did not run; progress: $(steps)"
	done
}
not_ran() {
	local m
	for m in "$@"; do
		! grep -q "RAN-$m" "$T/build$n_build.err" ||
			fail "build $n_build: the RUN printing RAN-$m ran and should be cached; progress: $(steps)"
	done
}

# step_is CACHED|RAN TEXT: the step whose title contains TEXT was cached / ran.
step_is() {
	local want=$1 text=$2 line
	line=$(steps | grep -F -- "$text" | head -n 1)
	[ -n "$line" ] ||
		fail "build $n_build: no step '$text' in the progress: $(cat "$T/build$n_build.err")"
	[[ $line == "$want "* ]] || fail "build $n_build: step '$text' should be $want; progress: $(steps)"
}

all_cached() {
	local s
	s=$(steps)
	[ -n "$s" ] || fail "build $n_build: no steps in the progress: $(cat "$T/build$n_build.err")"
	! grep -q '^RAN ' <<<"$s" || fail "build $n_build: not every step was cached: $s"
	not_ran "${MARKS[@]}"
}

# ---------------------------------------------------------------- local cache

echo "== first build runs everything"
build
d1=$DIGEST
ran "${MARKS[@]}"
step_is RAN "COPY stable.txt"

echo "== second build: all cached, same digest"
build
all_cached
assert_eq "$d1" "$DIGEST" "digest of a fully cached rebuild"

echo "== touching every file (same bytes) keeps the cache"
find "$ctx" -exec touch -d '2030-01-01 00:00:00' {} +
build
all_cached
assert_eq "$d1" "$DIGEST" "digest after touching the context"

echo "== one file's bytes changed: its COPY and what follows re-run, nothing before"
echo "version 2" >"$ctx/changing.txt"
build
not_ran A B
step_is CACHED "COPY stable.txt"
step_is RAN "COPY changing.txt"
ran C D E
step_is RAN "COPY dir/"
assert_ne "$d1" "$DIGEST" "digest after a content change"
d2=$DIGEST
build
all_cached
assert_eq "$d2" "$DIGEST" "digest of the rebuild after the change"

echo "== a changed build arg re-runs from its first use, nothing before"
build --build-arg V=2
not_ran A B C
step_is CACHED "COPY changing.txt"
ran D E
assert_ne "$d2" "$DIGEST" "digest with V=2"
d3=$DIGEST
build --build-arg V=2
all_cached
assert_eq "$d3" "$DIGEST" "digest of the V=2 rebuild"
build
all_cached
assert_eq "$d2" "$DIGEST" "V=1 again comes from the cache"

echo "== a mode change (same bytes) in a copied folder re-runs that COPY and what follows"
chmod 0755 "$ctx/dir/one.txt"
build
not_ran A B C D
step_is CACHED "COPY changing.txt"
step_is RAN "COPY dir/"
ran E

echo "== a new file in a copied folder"
echo new >"$ctx/dir/sub/new.txt"
build
not_ran A B C D
step_is RAN "COPY dir/"
ran E

echo "== a changed symlink target in a copied folder"
ln -sfn sub/two.txt "$ctx/dir/link"
build
not_ran A B C D
step_is RAN "COPY dir/"
ran E
d4=$DIGEST

echo "== files no step copies, ignored files and comments change nothing"
echo more >>"$ctx/unrelated.txt"
echo more >>"$ctx/ignored.txt"
sed -i '1i # a new comment' "$ctx/Dockerfile"
build
all_cached
assert_eq "$d4" "$DIGEST" "digest after changing an unused file, an ignored file and a comment"

echo "== --no-cache runs every step"
build --no-cache
ran "${MARKS[@]}"
# (the base image itself is "cached": it is in the store)
! steps | grep -v '\] FROM ' | grep -q '^CACHED ' ||
	fail "--no-cache build had cached steps: $(steps)"

# ---------------------------------------------------------------- registry cache, reproducibility

start_registry plain
export SOURCE_DATE_EPOCH=1700000000

# fresh_state NAME: an empty state folder with only the base image (imported reproducibly).
fresh_state() {
	export SLIPWAY_STATE_DIR=$T/$1
	run_ok "import-$1" "$SLIPWAY" image import "$T/rootfs.tar" bb:1
}

echo "== --cache-to a registry from a first machine"
fresh_state machine1
build --cache-to "docker://$REGISTRY/cache"
ran "${MARKS[@]}"
dm1=$DIGEST
ntags=$(curl -fsS "http://$REGISTRY/v2/cache/tags/list" | json_get "len(d.get('tags') or [])")
[ "$ntags" -gt 0 ] || fail "--cache-to put nothing in $REGISTRY/cache"

echo "== a second machine with an empty cache and --cache-from: all hits, same digest"
fresh_state machine2
build --cache-from "docker://$REGISTRY/cache"
all_cached
assert_eq "$dm1" "$DIGEST" "digest built from the registry cache"
# and the image is complete there: its layers are in the local store
run_ok copy-out "$SLIPWAY" image copy --quiet app:dev "oci:$T/m2-layout:app"
layout_verify "$T/m2-layout"
umoci raw unpack --image "$T/m2-layout:app" "$T/m2-rootfs" >"$T/umoci.log" 2>&1 ||
	fail "umoci could not unpack the image built from the registry cache: $(cat "$T/umoci.log")"
assert_eq "v=1" "$(cat "$T/m2-rootfs/d.txt")" "d.txt of the image built from the registry cache"
assert_eq "version 2" "$(cat "$T/m2-rootfs/changing.txt")" "changing.txt of that image"

echo "== two builds on empty caches with SOURCE_DATE_EPOCH give the same digest"
fresh_state machine3
build
ran "${MARKS[@]}"
assert_eq "$dm1" "$DIGEST" "digest of an independent build with SOURCE_DATE_EPOCH"

echo "PASS build cache"
