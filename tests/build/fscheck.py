#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checks for the builder's conformance suite (tests/build/run_cases.sh), standard library only.

An image is looked at as an independent tool unpacked it (`umoci unpack`, as root, so owners
and modes are kept) plus its config blob read from the OCI layout. Commands:

  check EXPECTED.json CONFIG ROOTFS       the case's expectations: files (type, mode, owner,
                                          link target, content), paths that must not exist,
                                          config fields
  compare CONFIG_A ROOTFS_A CONFIG_B ROOTFS_B [--ignore PATH]...
                                          two images file by file (type, mode, uid/gid, link
                                          target, content hash, hard-link groups; never mtimes)
                                          and their config fields
  grep VALUE LAYOUT [PATH]...             VALUE must appear in no blob of LAYOUT (layers are
                                          decompressed: gzip, zstd through `zstd -dc`) and in no
                                          file under the PATHs; prints where it was found
  config LAYOUT:TAG                       print the image config JSON

CONFIG is an image config JSON file (the "config" object holds Env, Cmd, ...), or LAYOUT:TAG to
read it from an OCI layout.
  layers LAYOUT:TAG                       print the layer digests, one a line

Every failure is printed as one line "PATH: expected X, got Y"; the exit code is 1 when there is
any, 0 otherwise.
"""
import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys

# The config fields compared between two builders and checked against expectations.
CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "User", "WorkingDir", "Labels", "ExposedPorts",
                 "Volumes", "StopSignal"]


def split_ref(ref):
    layout, _, tag = ref.rpartition(":")
    if not layout:
        return ref, "latest"
    return layout, tag


def blob_path(layout, digest):
    algo, _, hexd = digest.partition(":")
    return os.path.join(layout, "blobs", algo, hexd)


def load_json_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return json.load(f)


def manifest_of(ref):
    layout, tag = split_ref(ref)
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for m in index.get("manifests", []):
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            man = load_json_blob(layout, m["digest"])
            if "manifests" in man:  # an index: take its first image
                man = load_json_blob(layout, man["manifests"][0]["digest"])
            return layout, man
    raise SystemExit(f"{layout}: no image tagged '{tag}' in index.json")


def config_of(ref):
    layout, man = manifest_of(ref)
    return load_json_blob(layout, man["config"]["digest"])


def load_config(arg):
    """An image config from a JSON file, or from LAYOUT:TAG."""
    if os.path.isfile(arg):
        with open(arg) as f:
            return json.load(f)
    return config_of(arg)


def norm_config(cfg):
    """The compared fields of an image config; empty values count as absent."""
    c = cfg.get("config") or {}
    out = {}
    for k in CONFIG_FIELDS:
        v = c.get(k)
        if v in (None, [], {}, ""):
            continue
        out[k] = v
    return out


# ---------------------------------------------------------------- a filesystem's description

def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def kind_of(st):
    m = st.st_mode
    if stat.S_ISREG(m):
        return "file"
    if stat.S_ISDIR(m):
        return "dir"
    if stat.S_ISLNK(m):
        return "symlink"
    if stat.S_ISCHR(m):
        return "char"
    if stat.S_ISBLK(m):
        return "block"
    if stat.S_ISFIFO(m):
        return "fifo"
    return "socket"


def describe(root):
    """path ("/a/b") -> {type, mode, uid, gid, target?, sha256?, size?, rdev?, link_group?}"""
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = "/" + os.path.relpath(dirpath, root)
        if rel_dir == "/.":
            rel_dir = "/"
        names = dirnames + filenames if dirpath != root else [""] + dirnames + filenames
        for name in names:
            full = os.path.join(dirpath, name) if name else root
            path = rel_dir if not name else os.path.join(rel_dir, name)
            st = os.lstat(full)
            e = {
                "type": kind_of(st),
                "mode": "%04o" % stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
            }
            if e["type"] == "symlink":
                e["target"] = os.readlink(full)
            elif e["type"] == "file":
                e["sha256"] = file_sha256(full)
                e["size"] = st.st_size
                if st.st_nlink > 1:
                    inodes.setdefault((st.st_dev, st.st_ino), []).append(path)
            elif e["type"] in ("char", "block"):
                e["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            entries[path] = e
    # Hard links: every member of a group names the group's first path (sorted).
    for paths in inodes.values():
        if len(paths) > 1:
            first = sorted(paths)[0]
            for p in paths:
                entries[p]["link_group"] = first
    return entries


# ---------------------------------------------------------------- check against expectations

def check(expected_file, ref, root):
    with open(expected_file) as f:
        exp = json.load(f)
    fails = []
    fs = describe(root)
    for path, want in sorted(exp.get("files", {}).items()):
        got = fs.get(path)
        if got is None:
            fails.append(f"{path}: expected a {want.get('type', 'file')}, it does not exist")
            continue
        wtype = want.get("type", "file")
        if wtype == "hardlink":
            other = fs.get(want["target"])
            if got["type"] != "file" or other is None or other["type"] != "file":
                fails.append(f"{path}: expected a hard link to {want['target']}, got a "
                             f"{got['type']} (and {want['target']} is "
                             f"{other['type'] if other else 'missing'})")
            elif got.get("link_group") is None or got.get("link_group") != other.get(
                    "link_group"):
                fails.append(f"{path}: expected a hard link to {want['target']}, "
                             f"they are distinct files")
        elif got["type"] != wtype:
            fails.append(f"{path}: expected type {wtype}, got {got['type']}")
            continue
        for k in ("mode", "uid", "gid"):
            if k in want and want[k] != got[k]:
                fails.append(f"{path}: expected {k} {want[k]}, got {got[k]}")
        if wtype == "symlink" and "target" in want and want["target"] != got.get("target"):
            fails.append(f"{path}: expected link target '{want['target']}', "
                         f"got '{got.get('target')}'")
        if "content" in want:
            with open(os.path.join(root, path.lstrip("/")), "rb") as f:
                data = f.read()
            if data != want["content"].encode():
                fails.append(f"{path}: expected content {want['content']!r}, "
                             f"got {data[:300].decode(errors='replace')!r}")
        if "sha256" in want and want["sha256"] != got.get("sha256"):
            fails.append(f"{path}: expected sha256 {want['sha256']}, got {got.get('sha256')}")
    for path in exp.get("absent", []):
        if path in fs:
            fails.append(f"{path}: must not exist, it is a {fs[path]['type']}")
    if "config" in exp:
        raw = load_config(ref).get("config") or {}
        for k, want in exp["config"].items():
            got = raw.get(k)
            if got in ([], {}, ""):
                got = None
            if want in ([], {}, ""):
                want = None
            if want != got:
                fails.append(f"config {k}: expected {json.dumps(want)}, got {json.dumps(got)}")
    return fails


# ---------------------------------------------------------------- compare two images

def under(path, prefixes):
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def compare(ref_a, root_a, ref_b, root_b, ignore):
    fails = []
    fa, fb = describe(root_a), describe(root_b)
    for path in sorted(set(fa) | set(fb)):
        if under(path, ignore):
            continue
        a, b = fa.get(path), fb.get(path)
        if a is None:
            fails.append(f"{path}: only in the second image ({b['type']})")
            continue
        if b is None:
            fails.append(f"{path}: only in the first image ({a['type']})")
            continue
        for k in ("type", "mode", "uid", "gid", "target", "sha256", "rdev", "link_group"):
            if a.get(k) != b.get(k):
                fails.append(f"{path}: {k} differs: first {a.get(k)}, second {b.get(k)}")
    ca, cb = norm_config(load_config(ref_a)), norm_config(load_config(ref_b))
    for k in CONFIG_FIELDS:
        if ca.get(k) != cb.get(k):
            fails.append(f"config {k} differs: first {json.dumps(ca.get(k))}, "
                         f"second {json.dumps(cb.get(k))}")
    return fails


# ---------------------------------------------------------------- grep for a secret

def blob_texts(path):
    """The bytes of a blob, and its decompressed bytes when it is gzip or zstd."""
    with open(path, "rb") as f:
        data = f.read()
    yield "raw", data
    if data[:2] == b"\x1f\x8b":
        yield "gunzipped", gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":
        out = subprocess.run(["zstd", "-dc"], input=data, stdout=subprocess.PIPE, check=True)
        yield "unzstd", out.stdout


def grep(value, layout, paths):
    needle = value.encode()
    found = []
    blobs = os.path.join(layout, "blobs")
    for dirpath, _, filenames in os.walk(blobs):
        for name in filenames:
            p = os.path.join(dirpath, name)
            for how, data in blob_texts(p):
                if needle in data:
                    found.append(f"{p} ({how})")
    for top in paths:
        for dirpath, _, filenames in os.walk(top):
            for name in filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                try:
                    with open(p, "rb") as f:
                        if needle in f.read():
                            found.append(p)
                except OSError:
                    pass
    return [f"the secret value is in {f}" for f in found]


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd = argv[1]
    if cmd == "check" and len(argv) == 5:
        fails = check(argv[2], argv[3], argv[4])
    elif cmd == "compare" and len(argv) >= 6:
        ignore = []
        rest = argv[6:]
        while rest:
            if rest[0] != "--ignore" or len(rest) < 2:
                raise SystemExit("compare: unknown argument " + rest[0])
            ignore.append(rest[1])
            rest = rest[2:]
        fails = compare(argv[2], argv[3], argv[4], argv[5], ignore)
    elif cmd == "grep" and len(argv) >= 4:
        fails = grep(argv[2], argv[3], argv[4:])
    elif cmd == "config" and len(argv) == 3:
        print(json.dumps(config_of(argv[2]), indent=1, sort_keys=True))
        return 0
    elif cmd == "layers" and len(argv) == 3:
        _, man = manifest_of(argv[2])
        for layer in man.get("layers", []):
            print(layer["digest"])
        return 0
    else:
        raise SystemExit(__doc__)
    for f in fails:
        print(f)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
