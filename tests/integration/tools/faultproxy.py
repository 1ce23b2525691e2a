#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""An HTTP/1.1 forwarding proxy in front of a registry that counts requests and injects faults.

The client talks to the proxy as if it were the registry: every request (method, path, headers,
body) is forwarded to --upstream with http.client and the answer is streamed back; Location
headers that point at the upstream are rewritten to point at the proxy. Client connections are
kept alive.

Counting: GET /__stats answers JSON {"total", "by_method": {"GET": n}, "by_kind": {"GET blob": n},
"mounts": n, "faults": n, "log": ["METHOD PATH STATUS", ...]}, where the kind of a path is
manifest | blob | upload | other. POST /__reset zeroes the counts (the rules stay).

Faults: rules from --rules JSON or POST /__faults (a JSON list that replaces the rules; an empty
list clears them). A rule matches on "method" (absent or "*": any) and "path_re" (a regular
expression searched in the path with its query); the first rule that matches and still has
"times" left (absent or < 0: forever) is applied and its count goes down by one; with "skip": N
the rule lets its first N matching requests through untouched. Actions:
  status             answer "status" (with optional "headers" and "body") without forwarding;
                     the request body is read first
  drop_mid_body      read about half of the request body, then close without answering
  drop_mid_response  forward, send the status line, headers and half of the body, then close
  drop               close the connection without reading the body or answering
  corrupt_body       forward, then change the response body (a JSON body is re-indented, so it
                     still parses but has another digest; other bodies get a byte flipped);
                     the upstream's headers (Docker-Content-Digest too) are kept
  delay              wait "seconds", then forward as usual
Listens on 127.0.0.1 only; with --port 0 the chosen port is written to --port-file.
"""

import argparse
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
              "proxy-connection"}
CHUNK = 64 * 1024


def path_kind(path):
    p = urllib.parse.urlsplit(path).path
    if "/blobs/uploads" in p:
        return "upload"
    if re.search(r"^/v2/.+/manifests/[^/]+$", p):
        return "manifest"
    if re.search(r"^/v2/.+/blobs/[^/]+$", p):
        return "blob"
    return "other"


class State:
    def __init__(self, upstream, rules):
        self.upstream = upstream
        self.lock = threading.Lock()
        self.rules = []
        self.set_rules(rules)
        self.reset()

    def reset(self):
        with self.lock:
            self.total = 0
            self.by_method = {}
            self.by_kind = {}
            self.mounts = 0
            self.faults = 0
            self.log = []

    def set_rules(self, rules):
        if not isinstance(rules, list):
            raise ValueError("rules must be a JSON list")
        checked = []
        for r in rules:
            if not isinstance(r, dict) or "action" not in r:
                raise ValueError("each rule needs an action: %r" % (r,))
            if r["action"] not in ("status", "drop_mid_body", "drop_mid_response", "drop",
                                   "corrupt_body", "delay"):
                raise ValueError("unknown action %r" % r["action"])
            r = dict(r)
            r["_re"] = re.compile(r.get("path_re", ""))
            r.setdefault("times", -1)
            r.setdefault("skip", 0)
            checked.append(r)
        with self.lock:
            self.rules = checked

    def record(self, method, path):
        kind = "%s %s" % (method, path_kind(path))
        with self.lock:
            self.total += 1
            self.by_method[method] = self.by_method.get(method, 0) + 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            if method == "POST" and "mount" in query:
                self.mounts += 1

    def log_line(self, line):
        with self.lock:
            self.log.append(line)
            if len(self.log) > 5000:
                del self.log[:1000]

    def match(self, method, path):
        with self.lock:
            for r in self.rules:
                if r.get("method", "*") not in ("*", method):
                    continue
                if not r["_re"].search(path):
                    continue
                if r["times"] == 0:
                    continue
                if r["skip"] > 0:
                    r["skip"] -= 1
                    continue
                if r["times"] > 0:
                    r["times"] -= 1
                self.faults += 1
                return r
        return None

    def stats(self):
        with self.lock:
            return {
                "total": self.total,
                "by_method": dict(self.by_method),
                "by_kind": dict(self.by_kind),
                "mounts": self.mounts,
                "faults": self.faults,
                "rules_left": [{k: v for k, v in r.items() if k != "_re"} for r in self.rules],
                "log": list(self.log),
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "slipway-test-faultproxy"

    def log_message(self, fmt, *args):
        # Printable ASCII only: a TLS hello (skopeo tries https first) is logged as escapes.
        text = (fmt % args).encode("ascii", "backslashreplace").decode("ascii")
        text = "".join(c if " " <= c <= "~" else "\\x%02x" % ord(c) for c in text)
        sys.stderr.write("faultproxy: %s\n" % text)
        sys.stderr.flush()

    # ------------------------------------------------------------ helpers

    def reply(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def read_body(self, limit=None):
        """The request body (Content-Length or chunked); with limit, at most that many bytes."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline(65537)
                if limit is not None and len(out) >= limit:
                    break
            return bytes(out)
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            length = min(length, limit)
        out = bytearray()
        while len(out) < length:
            part = self.rfile.read(min(CHUNK, length - len(out)))
            if not part:
                break
            out += part
        return bytes(out)

    def body_length(self):
        try:
            return int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return 0

    def hard_close(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def rewrite_location(self, value):
        st = self.server.state
        me = "%s:%d" % self.server.server_address[:2]
        for prefix in ("http://" + st.upstream, "https://" + st.upstream):
            if value.startswith(prefix):
                return "http://" + me + value[len(prefix):]
        return value

    # ------------------------------------------------------------ control endpoints

    def control(self):
        st = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        if path == "/__stats" and self.command == "GET":
            self.reply(200, json.dumps(st.stats()).encode())
        elif path == "/__reset" and self.command == "POST":
            self.read_body()
            st.reset()
            self.reply(200, b"{}")
        elif path == "/__faults" and self.command == "POST":
            try:
                st.set_rules(json.loads(self.read_body() or b"[]"))
            except ValueError as e:
                self.reply(400, json.dumps({"error": str(e)}).encode())
                return
            self.reply(200, b"{}")
        else:
            self.reply(404, b'{"error":"unknown control endpoint"}')

    # ------------------------------------------------------------ forwarding

    def handle_any(self):
        st = self.server.state
        if self.path.startswith("/__"):
            self.control()
            return
        st.record(self.command, self.path)
        rule = st.match(self.command, self.path)
        action = rule["action"] if rule else None
        if action:
            self.log_message("fault %s on %s %s", action, self.command, self.path)

        if action == "drop":
            st.log_line("%s %s DROP" % (self.command, self.path))
            self.hard_close()
            return
        if action == "drop_mid_body":
            length = self.body_length()
            half = max(1, length // 2) if length else 1
            got = self.read_body(limit=half)
            st.log_line("%s %s DROP-MID-BODY after %d bytes" % (self.command, self.path,
                                                                   len(got)))
            self.hard_close()
            return
        body = self.read_body()
        if action == "status":
            status = int(rule.get("status", 500))
            payload = rule.get("body")
            if payload is None:
                payload = json.dumps({"errors": [{"code": "UNKNOWN",
                                                  "message": "injected fault"}]})
            st.log_line("%s %s %d (injected)" % (self.command, self.path, status))
            self.reply(status, payload.encode(), rule.get("headers"))
            return
        if action == "delay":
            time.sleep(float(rule.get("seconds", 1)))

        # A list, not a dict: a request may carry a header several times (Accept).
        headers = [("Host", st.upstream)]
        for k, v in self.headers.items():
            if k.lower() in HOP_BY_HOP or k.lower() in ("host", "content-length"):
                continue
            headers.append((k, v))
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        host, _, port = st.upstream.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            st.log_line("%s %s 502 (upstream: %s)" % (self.command, self.path, e))
            self.reply(502, json.dumps({"error": "upstream: %s" % e}).encode())
            return
        try:
            self.relay(resp, action)
        finally:
            conn.close()

    def relay(self, resp, action):
        st = self.server.state
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        out_headers = []
        length = None
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "content-length":
                length = int(v)
                continue
            if lk == "location":
                v = self.rewrite_location(v)
            out_headers.append((k, v))

        if action == "corrupt_body" and not no_body:
            data = resp.read()
            try:
                data = json.dumps(json.loads(data), indent=1).encode()
            except ValueError:
                if data:
                    b = bytearray(data)
                    b[len(b) // 2] ^= 0xFF
                    data = bytes(b)
            st.log_line("%s %s %d (body corrupted)" % (self.command, self.path, resp.status))
            self.send_response(resp.status)
            for k, v in out_headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return

        self.send_response(resp.status)
        for k, v in out_headers:
            self.send_header(k, v)
        chunked = False
        if length is not None:
            self.send_header("Content-Length", str(length))
        elif no_body:
            self.send_header("Content-Length", "0")
        else:
            chunked = True
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            resp.read()
            st.log_line("%s %s %d" % (self.command, self.path, resp.status))
            return

        if action == "drop_mid_response":
            # Half of the announced body (or of what is there), then close.
            data = resp.read(length // 2 if length else CHUNK)
            if chunked and data:
                self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
            else:
                self.wfile.write(data)
            st.log_line("%s %s %d DROP-MID-RESPONSE after %d bytes" % (
                self.command, self.path, resp.status, len(data)))
            self.hard_close()
            return

        sent = 0
        while True:
            data = resp.read(CHUNK)
            if not data:
                break
            sent += len(data)
            if chunked:
                self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")
            else:
                self.wfile.write(data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        st.log_line("%s %s %d" % (self.command, self.path, resp.status))

    def safe_handle(self):
        try:
            self.handle_any()
        except (BrokenPipeError, ConnectionResetError) as e:
            self.log_message("client connection lost: %s", e)
            self.close_connection = True

    do_GET = safe_handle
    do_HEAD = safe_handle
    do_POST = safe_handle
    do_PUT = safe_handle
    do_PATCH = safe_handle
    do_DELETE = safe_handle


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="HOST:PORT of the registry")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--rules", default="[]", help="fault rules as a JSON list")
    args = p.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args.upstream, json.loads(args.rules))
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    sys.stderr.write("faultproxy: listening on 127.0.0.1:%d, upstream %s\n" % (port,
                                                                             args.upstream))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
