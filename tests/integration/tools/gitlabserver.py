#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
#
# A GitLab server as a runner sees it (API v4, ../../../../shared/specs/gitlab-runner-api.md),
# for slipway's tests; python3 standard library only.
#
#   POST  /api/v4/runners/verify          200 {"id","token"} for an accepted token, else 403
#   POST  /api/v4/jobs/request            201 + job payload, or 204 + X-GitLab-Last-Update;
#                                          long polling: a request whose last_update equals the
#                                          queue's value is held (--hold seconds) until a job
#                                          is added (then 204 without the header, as Workhorse)
#   PUT   /api/v4/jobs/:id                state running|success|failed; Job-Status header
#   PATCH /api/v4/jobs/:id/trace          Content-Range "a-b"; 202 + Range 0-N, or 416 + Range
#                                          when the start is not the stored length
#   POST  /api/v4/jobs/:id/artifacts      multipart "file" -> 201
#   GET   /api/v4/jobs/:id/artifacts      the zip (JOB-TOKEN of a known job) or 404
#
# Control (for the test; JSON):
#   POST /control/jobs                    add a job: {"name", "script": [...], "image", ...,
#                                          "repo_url", "sha", "variables": [...]} -> {"id"}
#   GET  /control/jobs/ID                 what the runner sent: state, trace (text), trace_len,
#                                          trace_crc, puts, final, patches, artifacts (names)
#   POST /control/jobs/ID/cancel          {"status": "canceling"|"canceled"}
#   POST /control/jobs/ID/faults          {"fail5xx": N (next N trace PATCHes answer 500),
#                                          "truncate_at_patch": K (before the K-th PATCH the
#                                          stored trace loses its second half: a 416 follows)}
#   POST /control/tokens                  {"accept": ["glrt-..."]}
#   GET  /control/stats                   {"verify": [...], "requests": [...]}
#
# Usage: gitlabserver.py --port-file FILE [--hold SECONDS] [--trace-interval SECONDS]
#                        [--accept TOKEN]...
import argparse
import base64
import json
import secrets
import sys
import threading
import time
import zipfile
import io
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

LOCK = threading.Condition()
STATE = {
    "accept": set(),
    "queue": [],          # job ids waiting to be handed out
    "queue_value": 1,     # the "runner queue value" (X-GitLab-Last-Update)
    "jobs": {},           # id -> job record
    "next_id": 100,
    "verify": [],
    "requests": [],
}
ARGS = None


def job_payload(spec, jid, token):
    """The 201 body of jobs/request, shaped as GitLab's response entity."""
    variables = [
        {"key": "CI_JOB_ID", "value": str(jid), "public": True, "masked": False},
        {"key": "CI_JOB_TOKEN", "value": token, "public": False, "masked": True},
        {"key": "CI_COMMIT_SHA", "value": spec.get("sha", ""), "public": True, "masked": False},
        {"key": "CI_PROJECT_DIR", "value": "/builds/group/project", "public": True,
         "masked": False},
    ]
    variables += spec.get("variables", [])
    steps = [{"name": "script", "script": spec.get("script", ["true"]),
              "timeout": spec.get("timeout", 3600), "when": "on_success",
              "allow_failure": False}]
    if spec.get("after_script"):
        steps.append({"name": "after_script", "script": spec["after_script"],
                      "timeout": 300, "when": "always", "allow_failure": True})
    deps = []
    for d in spec.get("dependencies", []):
        dj = STATE["jobs"].get(int(d))
        if dj is None:
            continue
        dep = {"id": dj["id"], "name": dj["spec"].get("name", "job"), "token": token}
        if dj.get("artifact"):
            dep["artifacts_file"] = {"filename": "artifacts.zip",
                                     "size": len(dj["artifact"])}
        deps.append(dep)
    p = {
        "id": jid,
        "token": token,
        "allow_git_fetch": False,
        "job_info": {"id": jid, "name": spec.get("name", "job"),
                     "stage": spec.get("stage", "test"), "project_id": 1,
                     "project_name": "project"},
        "git_info": {"repo_url": spec.get("repo_url", ""), "ref": spec.get("ref", "main"),
                     "sha": spec.get("sha", ""), "before_sha": "0" * 40,
                     "ref_type": spec.get("ref_type", "branch"),
                     "refspecs": ["+refs/heads/main:refs/remotes/origin/main"],
                     "depth": 20},
        "runner_info": {"timeout": spec.get("timeout", 3600),
                        "runner_session_url": None},
        "variables": variables,
        "steps": steps,
        "image": {"name": spec["image"], "entrypoint": None} if spec.get("image") else None,
        "services": spec.get("services", []),
        "artifacts": spec.get("artifacts", None),
        "cache": [],
        "credentials": spec.get("credentials", []),
        "dependencies": deps,
        "features": {"trace_sections": True, "failure_reasons": [
            "unknown_failure", "script_failure", "runner_system_failure",
            "job_execution_timeout"]},
    }
    return p


def new_job(spec):
    with LOCK:
        jid = STATE["next_id"]
        STATE["next_id"] += 1
        token = "glcbt-" + secrets.token_hex(10)
        STATE["jobs"][jid] = {
            "id": jid, "token": token, "spec": spec, "status": "pending",
            "trace": bytearray(), "patches": 0, "puts": [], "final": None,
            "artifact": None, "artifact_query": None, "artifact_filename": None,
            "faults": {}, "n416": 0, "n5xx": 0, "cancel": None, "payload": None,
        }
        STATE["queue"].append(jid)
        STATE["queue_value"] += 1
        LOCK.notify_all()
        return jid


def parse_multipart(body, ctype):
    """The "file" part of a multipart/form-data body: (filename, bytes) or (None, None)."""
    b = None
    for part in ctype.split(";"):
        part = part.strip()
        if part.startswith("boundary="):
            b = part[len("boundary="):].strip('"')
    if not b:
        return None, None
    sep = b"--" + b.encode()
    for chunk in body.split(sep):
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        if b"\r\n\r\n" not in chunk:
            continue
        head, data = chunk.split(b"\r\n\r\n", 1)
        if data.endswith(b"\r\n"):
            data = data[:-2]
        head = head.decode("utf-8", "replace")
        if 'name="file"' not in head:
            continue
        fname = None
        for item in head.split(";"):
            item = item.strip()
            if item.startswith("filename="):
                fname = item[len("filename="):].split("\r\n")[0].strip('"')
        return fname, data
    return None, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("gitlabserver: " + (fmt % args) + "\n")

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline().strip()
                n = int(line.split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    break
                out += self.rfile.read(n)
                self.rfile.readline()
            return bytes(out)
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, code, obj=None, headers=None, raw=None, ctype="application/json"):
        data = b""
        if raw is not None:
            data = raw
        elif obj is not None:
            data = json.dumps(obj).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if data or code not in (204,):
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def job_of(self, jid, token):
        j = STATE["jobs"].get(jid)
        if j is None:
            return None, 404
        if token != j["token"]:
            return None, 403
        return j, 200

    def job_status(self, j):
        return j["cancel"] or j["status"]

    # ------------------------------------------------------------ runner API
    def do_POST(self):
        u = urlparse(self.path)
        data = self.body()
        if u.path.startswith("/control/"):
            return self.control("POST", u, data)
        if u.path == "/api/v4/runners/verify":
            try:
                req = json.loads(data or b"{}")
            except ValueError:
                return self.reply(400, {"message": "bad json"})
            tok = req.get("token", "")
            with LOCK:
                STATE["verify"].append({"token": tok, "info": req.get("info"),
                                        "system_id": req.get("system_id")})
                ok = tok in STATE["accept"]
            if not ok:
                return self.reply(403, {"message": "403 Forbidden"})
            return self.reply(200, {"id": 54321, "token": tok,
                                    "token_expires_at": None})
        if u.path == "/api/v4/jobs/request":
            try:
                req = json.loads(data or b"{}")
            except ValueError:
                return self.reply(400, {"message": "bad json"})
            tok = req.get("token", "")
            t0 = time.time()
            rec = {"last_update": req.get("last_update"), "time": t0,
                   "features": (req.get("info") or {}).get("features")}
            with LOCK:
                STATE["requests"].append(rec)
                if tok not in STATE["accept"]:
                    rec["status"] = 403
                    return self.reply(403, {"message": "403 Forbidden"})
                lu = req.get("last_update")
                if lu and lu == str(STATE["queue_value"]) and not STATE["queue"]:
                    # Workhorse: watch the queue for a change, for up to the hold
                    LOCK.wait_for(lambda: lu != str(STATE["queue_value"]), ARGS.hold)
                    rec["held"] = time.time() - t0
                    rec["status"] = 204
                    return self.reply(204)
                if STATE["queue"]:
                    jid = STATE["queue"].pop(0)
                    j = STATE["jobs"][jid]
                    j["status"] = "running"
                    j["payload"] = job_payload(j["spec"], jid, j["token"])
                    rec["status"] = 201
                    rec["job"] = jid
                    return self.reply(201, j["payload"])
                rec["status"] = 204
                return self.reply(204, headers={
                    "X-GitLab-Last-Update": str(STATE["queue_value"])})
        parts = u.path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v4", "jobs"] and parts[4] == "artifacts":
            with LOCK:
                j, code = self.job_of(int(parts[3]), self.headers.get("JOB-TOKEN"))
                if j is None:
                    return self.reply(code, {"message": "%d" % code})
            fname, filedata = parse_multipart(data, self.headers.get("Content-Type", ""))
            if filedata is None:
                return self.reply(400, {"message": "no file"})
            with LOCK:
                j["artifact"] = filedata
                j["artifact_filename"] = fname
                j["artifact_query"] = {k: v[0] for k, v in parse_qs(u.query).items()}
            return self.reply(201, raw=b"201", ctype="text/plain")
        return self.reply(404, {"message": "404 Not Found"})

    def do_PUT(self):
        u = urlparse(self.path)
        data = self.body()
        parts = u.path.strip("/").split("/")
        if len(parts) != 4 or parts[:3] != ["api", "v4", "jobs"]:
            return self.reply(404, {"message": "404 Not Found"})
        try:
            req = json.loads(data or b"{}")
        except ValueError:
            return self.reply(400, {"message": "bad json"})
        with LOCK:
            j, code = self.job_of(int(parts[3]), req.get("token") or
                                  self.headers.get("JOB-TOKEN"))
            if j is None:
                return self.reply(code, {"message": "%d" % code})
            req.pop("info", None)
            req["job_token_header"] = self.headers.get("JOB-TOKEN") == j["token"]
            j["puts"].append(req)
            st = req.get("state")
            if st not in ("running", "success", "failed", "pending"):
                return self.reply(400, {"message": "bad state"})
            if st in ("success", "failed"):
                j["final"] = req
                j["status"] = st if not j["cancel"] else "canceled"
                if j["cancel"]:
                    j["cancel"] = "canceled"
            return self.reply(200, {}, headers={"Job-Status": self.job_status(j)})

    def do_PATCH(self):
        u = urlparse(self.path)
        data = self.body()
        parts = u.path.strip("/").split("/")
        if len(parts) != 5 or parts[:3] != ["api", "v4", "jobs"] or parts[4] != "trace":
            return self.reply(404, {"message": "404 Not Found"})
        with LOCK:
            j, code = self.job_of(int(parts[3]), self.headers.get("JOB-TOKEN"))
            if j is None:
                return self.reply(code, {"message": "%d" % code})
            cr = self.headers.get("Content-Range")
            if not cr:
                return self.reply(400, {"message": "Missing header Content-Range"})
            j["patches"] += 1
            f = j["faults"]
            if f.get("fail5xx", 0) > 0:
                f["fail5xx"] -= 1
                j["n5xx"] += 1
                return self.reply(500, {"message": "500 Internal Server Error"})
            if f.get("truncate_at_patch") and j["patches"] >= f["truncate_at_patch"]:
                del f["truncate_at_patch"]
                half = len(j["trace"]) // 2
                del j["trace"][half:]
                j["truncated_to"] = half
            start = int(cr.split("-")[0])
            hdr = {"Job-Status": self.job_status(j),
                   "X-GitLab-Trace-Update-Interval": str(ARGS.trace_interval)}
            if start != len(j["trace"]):
                j["n416"] += 1
                hdr["Range"] = "0-%d" % len(j["trace"])
                return self.reply(416, {"message": "416 Range Not Satisfiable"}, headers=hdr)
            j["trace"] += data
            hdr["Range"] = "0-%d" % len(j["trace"])
            return self.reply(202, {}, headers=hdr)

    def do_GET(self):
        u = urlparse(self.path)
        if u.path.startswith("/control/"):
            return self.control("GET", u, b"")
        parts = u.path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v4", "jobs"] and parts[4] == "artifacts":
            tok = self.headers.get("JOB-TOKEN")
            with LOCK:
                known = any(tok == x["token"] for x in STATE["jobs"].values())
                j = STATE["jobs"].get(int(parts[3]))
                if not known:
                    return self.reply(401, {"message": "401 Unauthorized"})
                if j is None or j["artifact"] is None:
                    return self.reply(404, {"message": "404 Not Found"})
                art = bytes(j["artifact"])
            return self.reply(200, raw=art, ctype="application/zip")
        return self.reply(404, {"message": "404 Not Found"})

    # ------------------------------------------------------------ control
    def control(self, method, u, data):
        parts = u.path.strip("/").split("/")
        try:
            req = json.loads(data) if data else {}
        except ValueError:
            return self.reply(400, {"message": "bad json"})
        if method == "POST" and parts == ["control", "jobs"]:
            return self.reply(200, {"id": new_job(req)})
        if method == "POST" and parts == ["control", "tokens"]:
            with LOCK:
                STATE["accept"] = set(req.get("accept", []))
            return self.reply(200, {})
        if method == "GET" and parts == ["control", "stats"]:
            with LOCK:
                return self.reply(200, {"verify": STATE["verify"],
                                        "requests": STATE["requests"],
                                        "queue_value": STATE["queue_value"]})
        if len(parts) >= 3 and parts[1] == "jobs":
            with LOCK:
                j = STATE["jobs"].get(int(parts[2]))
                if j is None:
                    return self.reply(404, {"message": "no such job"})
                if method == "POST" and len(parts) == 4 and parts[3] == "cancel":
                    j["cancel"] = req.get("status", "canceling")
                    return self.reply(200, {})
                if method == "POST" and len(parts) == 4 and parts[3] == "faults":
                    j["faults"].update(req)
                    return self.reply(200, {})
                if method == "GET" and len(parts) == 3:
                    names = None
                    if j["artifact"] is not None:
                        try:
                            names = zipfile.ZipFile(io.BytesIO(j["artifact"])).namelist()
                        except zipfile.BadZipFile:
                            names = ["<not a zip>"]
                    tr = bytes(j["trace"])
                    return self.reply(200, {
                        "id": j["id"], "status": j["status"], "cancel": j["cancel"],
                        "trace": tr.decode("utf-8", "replace"),
                        "trace_b64": base64.b64encode(tr).decode(),
                        "trace_len": len(tr),
                        "trace_crc": "crc32:%08x" % (zlib.crc32(tr) & 0xffffffff),
                        "patches": j["patches"], "n416": j["n416"], "n5xx": j["n5xx"],
                        "truncated_to": j.get("truncated_to"),
                        "puts": j["puts"], "final": j["final"],
                        "artifacts": names, "artifact_filename": j["artifact_filename"],
                        "artifact_query": j["artifact_query"],
                    })
        return self.reply(404, {"message": "no such control endpoint"})


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--trace-interval", type=int, default=1)
    ap.add_argument("--accept", action="append", default=[])
    ARGS = ap.parse_args()
    STATE["accept"] = set(ARGS.accept)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(ARGS.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    import os
    os.rename(ARGS.port_file + ".tmp", ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
