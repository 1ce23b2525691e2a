#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Seed corpus of the layer applier fuzz target (tests/fuzz/fuzz_layer_apply.c).

Writes small layer tarballs into tests/fuzz/corpus/layer_apply/: ordinary ones (every entry
kind, whiteouts, replacements, gzip, xz and zstd compressed, pax and GNU long names) and hostile
ones (".." and absolute paths, symlink and hard-link escapes, a whiteout of "..", sizes and
counts over the fuzz target's limits, truncated data). The output is deterministic (fixed
mtimes and owners, gzip without a timestamp), so re-running the script changes no file.

    python3 tests/fuzz/corpus/make_layer_corpus.py
"""
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "layer_apply")
MTIME = 1000000000


def info(name, kind=tarfile.REGTYPE, data=b"", link="", mode=None, size=None):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mtime = MTIME
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.linkname = link
    if mode is None:
        mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.mode = mode
    ti.size = len(data) if size is None else size
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = 1, 3
    return ti, data


def tar_bytes(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for ti, data in entries:
            if ti.type == tarfile.REGTYPE:
                t.addfile(ti, io.BytesIO(data))
            else:
                ti.size = 0
                t.addfile(ti)
    return buf.getvalue()


def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as g:
        g.write(b)
    return out.getvalue()


def zst(b):
    if not shutil.which("zstd"):
        return None
    return subprocess.run(["zstd", "-q", "-c", "-3", "--no-check"], input=b,
                          stdout=subprocess.PIPE, check=True).stdout


def write(name, b):
    if b is None:
        return
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    every = [
        info("etc/", D),
        info("etc/hostname", F, b"box\n"),
        info("etc/alias", L, link="hostname"),
        info("etc/hostname2", H, link="etc/hostname"),
        info("bin/", D),
        info("bin/su", F, b"su", mode=0o4755),
        info("tmp/", D, mode=0o1777),
        info("run/fifo", tarfile.FIFOTYPE),
        info("dev/null", tarfile.CHRTYPE, mode=0o666),
        info("abs", L, link="/etc/hostname"),
        info("deep/a/b/c/file", F, b"implicit parents"),
    ]
    plain = tar_bytes(every)
    write("ok-every-kind.tar", plain)
    write("ok-every-kind.tar.gz", gz(plain))
    write("ok-every-kind.tar.xz", lzma.compress(plain, preset=1))
    write("ok-every-kind.tar.zst", zst(plain))
    write("ok-gnu-longnames.tar", tar_bytes(
        [info("d" * 120 + "/", D), info("d" * 120 + "/" + "f" * 150, F, b"long")],
        fmt=tarfile.GNU_FORMAT))
    write("ok-pax-longnames.tar", tar_bytes(
        [info("p" * 200 + "/x", F, b"pax"), info("l", L, link="t" * 300)]))
    write("ok-whiteouts.tar", tar_bytes([
        info("a", F, b"a"),
        info("d/", D),
        info("d/x", F, b"x"),
        info(".wh.a", F),
        info("d/.wh..wh..opq", F),
        info("d/new", F, b"new"),
        info("d/.wh.x", F),
        info(".wh..wh.plnk", F),
        info(".wh.missing", F),
    ]))
    write("ok-replace.tar", tar_bytes([
        info("x/", D),
        info("x/y", F, b"y"),
        info("x", F, b"file over folder"),
        info("f", F, b"f"),
        info("f/", D),
        info("f", L, link="elsewhere"),
        info("f", F, b"again"),
        info("g", H, link="f"),
    ]))
    write("ok-empty-file.tar", tar_bytes([info("empty", F, b"")], fmt=tarfile.GNU_FORMAT))
    write("ok-empty.tar", b"\0" * 1024)

    write("hostile-dotdot.tar", tar_bytes([info("../evil", F, b"evil")]))
    write("hostile-dotdot-deep.tar", tar_bytes([info("a/", D), info("a/../../evil", F, b"e")]))
    write("hostile-absolute.tar", tar_bytes([info("/abs/evil", F, b"evil")]))
    write("hostile-symlink-up.tar", tar_bytes(
        [info("l", L, link="../.."), info("l/evil", F, b"evil")]))
    write("hostile-symlink-root.tar", tar_bytes(
        [info("l", L, link="/"), info("l/tmp/sw-fuzz-escape", F, b"evil")]))
    write("hostile-symlink-dir.tar", tar_bytes(
        [info("l", L, link=".."), info("l/newdir/", D)]))
    write("hostile-symlink-deep.tar", tar_bytes(
        [info("a/", D), info("a/l", L, link="../../.."), info("a/l/evil", F, b"e")]))
    write("hostile-hardlink-up.tar", tar_bytes([info("x", H, link="../../etc/passwd")]))
    write("hostile-hardlink-abs.tar", tar_bytes([info("x", H, link="/etc/passwd")]))
    write("hostile-hardlink-symlink.tar", tar_bytes(
        [info("l", L, link="../.."), info("x", H, link="l/outer")]))
    write("hostile-whiteout-dotdot.tar", tar_bytes([info(".wh..", F)]))
    write("hostile-whiteout-symlink.tar", tar_bytes(
        [info("l", L, link="../.."), info("l/.wh.outer", F)]))
    write("hostile-opaque-symlink.tar", tar_bytes(
        [info("l", L, link=".."), info("l/.wh..wh..opq", F)]))
    big, _ = info("big", F, size=8 << 20)
    big_header = big.tobuf(tarfile.PAX_FORMAT)
    write("hostile-size-over-limit.tar", big_header + b"\0" * 1024)
    write("hostile-too-many.tar.gz", gz(tar_bytes([info("f%d" % i, F) for i in range(300)])))
    truncated = tar_bytes([info("t", F, b"x" * 4000)])
    write("hostile-truncated.tar", truncated[:1500])


if __name__ == "__main__":
    main()
