"""A real S3-compatible HTTP server on loopback for the object-storage tests, plus a fault proxy.

:class:`MotoServer` runs ``moto`` in server mode in a *separate process* (so its request handling
does not compete for this process's GIL, and several test processes can share it), on a port the
kernel picked, and creates buckets through the ordinary S3 API.  :class:`FaultProxy` is a small
HTTP/1.1 forwarding proxy in a thread of the test process: clients point at it instead of moto, and
a test can tell it to answer the next N requests with ``503 SlowDown`` or to drop the connection
without answering — so a test proves that a retry really happened (the proxy counts what it
injected) instead of trusting configuration.  It also logs every request (method, path, Range
header, bytes sent back), which lets a test check that a read fetched byte ranges, not whole
objects.

Nothing here is mocked: the clients under test (Lance's Rust object store, s3fs/botocore) speak
real HTTP to a real S3 implementation.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

ACCESS_KEY = "veml-test-key"
SECRET_KEY = "veml-test-secret"
REGION = "us-east-1"

_LAUNCHER = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the parent closes our stdin (or dies)
"""


class MotoServer:
    """``moto`` in server mode in a child process on 127.0.0.1, on a free port the kernel chose."""

    def __init__(self, authenticate_after: int | None = None) -> None:
        """``authenticate_after=N``: the first N requests are served as anyone, later ones must be
        signed with credentials moto knows (its IAM) — how a test gets a real "access denied"."""
        env = dict(os.environ)
        if authenticate_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(authenticate_after)
        self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdin=subprocess.PIPE, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("moto server did not start")
        self.port = int(line)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def client(self, endpoint: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (paginated), straight from the server."""
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def s3_env(endpoint: str) -> dict[str, str]:
    """The standard AWS variables that point every client (Lance, s3fs, boto3) at ``endpoint``."""
    return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}


def free_port() -> int:
    """A port nothing listens on (for "unreachable endpoint" tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    range: str | None
    if_none_match: str | None
    status: int
    body_bytes: int
    agent: str  # User-Agent: tells Lance's Rust object store from botocore (s3fs) apart


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect"}


class FaultProxy:
    """Forwards HTTP/1.1 to ``upstream``; injects 503s or dropped connections on request.

    ``fail_next(n)`` makes the next ``n`` requests that match ``when`` (default: every request)
    fail without reaching moto; ``injected`` counts those failures.  ``log`` holds one
    :class:`Logged` per request that was forwarded.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.log: list[Logged] = []
        self.injected = 0
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_mode = "503"
        self._when: Callable[[str, str], bool] = lambda method, path: True
        self._hold: tuple[Callable[[str, str], bool], threading.Event, threading.Event] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _upstream(self) -> http.client.HTTPConnection:
                conn = getattr(self, "_conn", None)
                if conn is None:
                    conn = self._conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                return conn

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size_line = self.rfile.readline()
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                held = proxy._take_hold(self.command, self.path)
                if held is not None:  # park this request until the test lets it through
                    arrived, release = held
                    arrived.set()
                    release.wait(60)
                fault = proxy._take_fault(self.command, self.path)
                if fault == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if fault == "503":
                    payload = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                               b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD reply has headers only, or the connection desyncs
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or body:
                    headers["Content-Length"] = str(len(body))
                for attempt in range(2):  # a pooled upstream connection moto closed: reconnect once
                    conn = self._upstream()
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()
                        self._conn = None
                        if attempt:
                            raise
                with proxy._lock:  # logged before answering, so the client never sees a reply not yet logged
                    proxy.log.append(Logged(self.command, self.path, self.headers.get("Range"),
                                            self.headers.get("If-None-Match"), resp.status, len(data),
                                            self.headers.get("User-Agent", "")))
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take_fault(self, method: str, path: str) -> str | None:
        with self._lock:
            if self._fail_left and self._when(method, path):
                self._fail_left -= 1
                self.injected += 1
                return self._fail_mode
        return None

    def _take_hold(self, method: str, path: str) -> tuple[threading.Event, threading.Event] | None:
        with self._lock:
            if self._hold is not None and self._hold[0](method, path):
                _, arrived, release = self._hold
                self._hold = None
                return arrived, release
        return None

    def hold_next(self, when: Callable[[str, str], bool]) -> tuple[threading.Event, threading.Event]:
        """Park the next request matching ``when`` before it reaches moto.

        Returns ``(arrived, release)``: ``arrived`` is set once the request is parked, and it goes on
        to moto when the test sets ``release`` — how a test makes two commits race deterministically.
        """
        arrived, release = threading.Event(), threading.Event()
        with self._lock:
            self._hold = (when, arrived, release)
        return arrived, release

    def fail_next(self, n: int, mode: str = "503", when: Callable[[str, str], bool] | None = None) -> None:
        """Answer the next ``n`` matching requests with ``mode``: ``"503"`` (SlowDown) or ``"drop"``."""
        if mode not in ("503", "drop"):
            raise ValueError(mode)
        with self._lock:
            self._fail_left, self._fail_mode, self.injected = n, mode, 0
            self._when = when or (lambda method, path: True)

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self._fail_left = self.injected = 0
            self._hold = None

    def requests(self) -> Iterator[Logged]:
        with self._lock:
            return iter(list(self.log))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["MotoServer", "FaultProxy", "Logged", "s3_env", "free_port", "ACCESS_KEY", "SECRET_KEY", "REGION"]


@contextlib.contextmanager
def suite_s3_env() -> Iterator[dict[str, str]]:
    """For ``VEML_TEST_STORES=postgres+s3``: one moto server and bucket for a whole test process;
    yields the variables that send every new repository's samples, artifacts and embeddings to
    its own prefix there (``{repo}`` is filled in by ``veml init``)."""
    server = MotoServer()
    try:
        bucket = server.create_bucket("veml-suite")
        yield {**s3_env(server.endpoint),
               "VEML_STORAGE_URL": f"s3://{bucket}/{{repo}}/data",
               "VEML_ARTIFACTS_URL": f"s3://{bucket}/{{repo}}/artifacts",
               "VEML_EMBEDDINGS_URL": f"s3://{bucket}/{{repo}}/embeddings"}
    finally:
        server.stop()
