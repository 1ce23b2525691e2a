#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""A small Docker registry token server for the integration tests.

It implements the token flow of the distribution registry's `auth.token` mode: a client that
got a `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge asks
GET /token?service=S&scope=repository:NAME:ACTIONS (HTTP Basic credentials optional) and gets
{"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": ...}. The JWT is RS256 with
the signing certificate in its `x5c` header, so a registry whose `rootcertbundle` holds that
certificate accepts it. Python has no RSA in its standard library: the signature is made by
`openssl dgst -sha256 -sign KEY`.

Known users get every action their scope asks for; wrong credentials get 401; a request with
no credentials gets a token granting nothing (or 401 with --require-auth; pull only with
--anonymous-pull). GET /stats answers the request counts as JSON, POST /stats/reset zeroes
them. Listens on 127.0.0.1 only; with --port 0 the chosen port is written to --port-file.
"""

import argparse
import base64
import binascii
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_cert_der(cert_path):
    """The DER bytes of the first certificate of a PEM file."""
    lines = []
    inside = False
    with open(cert_path, "r", encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if line == "-----BEGIN CERTIFICATE-----":
                inside = True
            elif line == "-----END CERTIFICATE-----":
                break
            elif inside:
                lines.append(line)
    if not lines:
        raise SystemExit("tokenserver: no certificate in %s" % cert_path)
    return base64.b64decode("".join(lines))


def parse_scopes(values):
    """'repository:team/app:pull,push' (several per parameter, space separated) to a list."""
    out = []
    for value in values:
        for scope in value.split():
            first = scope.find(":")
            last = scope.rfind(":")
            if first < 0 or last == first:
                continue
            out.append({
                "type": scope[:first],
                "name": scope[first + 1:last],
                "actions": [a for a in scope[last + 1:].split(",") if a],
            })
    return out


class State:
    def __init__(self, args):
        self.args = args
        self.cert_der = load_cert_der(args.cert)
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.counts = {"requests": 0, "issued": 0, "authenticated": 0, "anonymous": 0,
                           "denied": 0}
            self.scopes = []

    def count(self, key):
        with self.lock:
            self.counts[key] += 1

    def sign(self, signing_input):
        proc = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.args.key],
                              input=signing_input, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError("openssl dgst failed: %s" % proc.stderr.decode(errors="replace"))
        return proc.stdout

    def make_token(self, subject, service, access):
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": self.args.issuer,
            "sub": subject,
            "aud": service,
            "exp": now + self.args.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.sign(signing_input.encode("ascii"))
        return signing_input + "." + b64url(sig)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "slipway-test-tokenserver"

    def log_message(self, fmt, *args):
        text = (fmt % args).encode("ascii", "backslashreplace").decode("ascii")
        text = "".join(c if " " <= c <= "~" else "\\x%02x" % ord(c) for c in text)
        sys.stderr.write("tokenserver: %s\n" % text)
        sys.stderr.flush()

    def reply_json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def credentials(self):
        """(user, password) from the Authorization header, None without one, False if bad."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        kind, _, value = auth.partition(" ")
        if kind.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep:
            return False
        return (user, password)

    def issue(self, params, creds):
        st = self.server.state
        args = st.args
        st.count("requests")
        service = (params.get("service") or [""])[0]
        scopes = parse_scopes(params.get("scope", []))
        with st.lock:
            st.scopes.extend(scopes)
        if args.service and service != args.service:
            st.count("denied")
            self.reply_json(400, {"errors": [{"code": "UNSUPPORTED",
                                              "message": "unknown service %r" % service}]})
            return
        challenge = {"WWW-Authenticate": 'Basic realm="slipway-test-token"'}
        if creds is False or (creds and (creds[0] != args.user or creds[1] != args.password)):
            st.count("denied")
            self.reply_json(401, {"errors": [{"code": "UNAUTHORIZED",
                                              "message": "authentication failed"}]}, challenge)
            return
        if creds is None:
            if args.require_auth:
                st.count("denied")
                self.reply_json(401, {"errors": [{"code": "UNAUTHORIZED",
                                                  "message": "authentication required"}]},
                                challenge)
                return
            st.count("anonymous")
            subject = ""
            access = []
            if args.anonymous_pull:
                access = [dict(s, actions=[a for a in s["actions"] if a == "pull"])
                          for s in scopes if s["type"] == "repository"]
                access = [a for a in access if a["actions"]]
        else:
            st.count("authenticated")
            subject = creds[0]
            access = scopes
        token = st.make_token(subject, service, access)
        st.count("issued")
        self.reply_json(200, {
            "token": token,
            "access_token": token,
            "expires_in": args.expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/stats":
            st = self.server.state
            with st.lock:
                body = dict(st.counts, scopes=list(st.scopes))
            self.reply_json(200, body)
            return
        if url.path != "/token":
            self.reply_json(404, {"error": "not found"})
            return
        self.issue(urllib.parse.parse_qs(url.query), self.credentials())

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if url.path == "/stats/reset":
            self.server.state.reset()
            self.reply_json(200, {})
            return
        if url.path != "/token":
            self.reply_json(404, {"error": "not found"})
            return
        # OAuth2 form (grant_type=password or refresh_token), as some clients send.
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        creds = self.credentials()
        if creds is None and form.get("grant_type", [""])[0] == "password":
            creds = (form.get("username", [""])[0], form.get("password", [""])[0])
        self.issue(form, creds)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--key", required=True, help="PEM RSA private key")
    p.add_argument("--cert", required=True, help="PEM certificate of that key (x5c)")
    p.add_argument("--issuer", default="slipway-test")
    p.add_argument("--service", default="test-registry",
                   help="the only service accepted (empty: any)")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--expires-in", type=int, default=300)
    p.add_argument("--require-auth", action="store_true")
    p.add_argument("--anonymous-pull", action="store_true")
    args = p.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    sys.stderr.write("tokenserver: listening on 127.0.0.1:%d\n" % port)
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
