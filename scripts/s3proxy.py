#!/usr/bin/env python3
"""A small HTTP(S) proxy in front of a real S3-compatible server (moto_server),
for the S3 tests and the S3 benchmark profile.

- counts requests by kind (PUT, GET, HEAD, LIST, DELETE): one line per request
  is appended to --log, and `kind` totals are easy to take from it;
- answers a share of requests with 503 SlowDown (--fail-share 0.2), before
  they reach the server, as an overloaded S3 does;
- terminates TLS with --cert/--key (pgBackRest speaks only HTTPS to S3), so
  clients can be pointed at https://127.0.0.1:PORT with a private CA;
- with --require-key, answers 403 InvalidAccessKeyId to requests signed
  with another access key (moto checks no signature of presigned requests);
- with --no-multi-delete, answers 501 NotImplemented to DeleteObjects
  (POST ?delete), as stores without multi-object delete do;
- with --lose-created, passes conditional writes (If-None-Match) on but
  hangs up instead of answering one that created its object, as a network
  that fails after the server acted does (logged as `lost`): the client's
  retry then finds the object there;
- being a separate process, it can be killed mid-request and started again
  to play a server that goes away, while the data stays in moto.

usage: s3proxy.py --listen PORT --upstream http://127.0.0.1:UPSTREAM
                  [--log FILE] [--fail-share F] [--seed N] [--require-key KEY]
                  [--no-multi-delete] [--lose-created]
                  [--cert C --key K]
"""

import argparse
import http.client
import http.server
import random
import socketserver
import ssl
import sys
import threading
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


def kind(method, path):
    q = urllib.parse.urlsplit(path).query
    params = urllib.parse.parse_qs(q, keep_blank_values=True)
    if method == "GET" and ("list-type" in params or "uploads" in params or "prefix" in params
                            or "delimiter" in params):
        return "LIST"
    if method == "GET" and urllib.parse.urlsplit(path).path.strip("/").count("/") == 0 and not q:
        return "LIST"
    if method == "POST" and "delete" in params:
        return "DELETE"
    if method in ("PUT", "POST"):
        return "PUT"
    return method


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        k = kind(self.command, self.path)
        cfg = self.server.cfg
        with cfg["lock"]:
            fail = cfg["fail_share"] > 0 and cfg["rng"].random() < cfg["fail_share"]
            if cfg["log"]:
                cfg["log"].write(f"{k} {self.command} {'503' if fail else '-'} {self.path}\n")
                cfg["log"].flush()
        if cfg["require_key"]:
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            cred = (q.get("X-Amz-Credential") or [""])[0]
            if cred.split("/")[0] != cfg["require_key"]:
                msg = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code>'
                       b'<Message>The AWS Access Key Id you provided does not exist in our records.'
                       b'</Message></Error>')
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
        if cfg["no_multi_delete"] and self.command == "POST" and k == "DELETE":
            msg = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code>'
                   b'<Message>A header you provided implies functionality that is not '
                   b'implemented.</Message></Error>')
            self.send_response(501)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        if fail:
            msg = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                   b'<Message>Please reduce your request rate.</Message></Error>')
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        up = http.client.HTTPConnection(cfg["host"], cfg["port"], timeout=300)
        headers = {h: v for h, v in self.headers.items() if h.lower() not in HOP}
        headers["Content-Length"] = str(len(body))
        up.request(self.command, self.path, body=body, headers=headers)
        r = up.getresponse()
        data = r.read()
        if cfg["lose_created"] and self.headers.get("If-None-Match") and r.status in (200, 201):
            with cfg["lock"]:
                if cfg["log"]:
                    cfg["log"].write(f"{k} {self.command} lost {self.path}\n")
            up.close()
            self.close_connection = True
            return
        self.send_response(r.status, r.reason)
        for h, v in r.getheaders():
            if h.lower() not in HOP and h.lower() != "content-length":
                self.send_header(h, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        up.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--log")
    ap.add_argument("--fail-share", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--require-key")
    ap.add_argument("--no-multi-delete", action="store_true")
    ap.add_argument("--lose-created", action="store_true")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.upstream)
    srv = Server(("127.0.0.1", a.listen), Handler)
    srv.cfg = {
        "host": u.hostname,
        "port": u.port or 80,
        "fail_share": a.fail_share,
        "require_key": a.require_key,
        "no_multi_delete": a.no_multi_delete,
        "lose_created": a.lose_created,
        "rng": random.Random(a.seed),
        "lock": threading.Lock(),
        "log": open(a.log, "a", buffering=1) if a.log else None,
    }
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"s3proxy listening on 127.0.0.1:{a.listen}", file=sys.stderr, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
