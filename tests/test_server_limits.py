"""The server outlives hostile clients, and its token stays out of ``ps`` (issue 13, points 2 and 8).

Everything runs against a real uvicorn on loopback (``live_server.py``) or a real ``veml serve``
process.  Hostile bodies are streamed from generators over a raw socket, so a 100 MB body costs the
test one reused 1 MiB buffer, and the client stops sending as soon as the server has answered (as a
real client would when the server closes on it).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from typing import Iterable, Iterator

import httpx
import pytest

import veml
from conftest import VEML_BIN, assert_failed_cleanly, run_cli, write_table
from live_server import LiveServer
from veml.datasets import generate_driving_coco
from veml.server.limits import Limits

MB = 1024 * 1024
TOKEN = "tok-3f9c1e7a"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    repo = veml.init(base / "repo")
    day = generate_driving_coco(base / "day", 4, seed=5, file_prefix="day")
    repo.data.import_("coco", day, "day", images=day.parent / "images")
    repo.data.import_("table", write_table(base / "t.csv"), "tab", label="y")  # a tabular deployment to predict with
    repo.models.add("lr", {"adapter": "sklearn", "task": "tabular-classification", "architecture": "logistic_regression"})
    repo.training.train("tab", "lr", name="lr-run")
    repo.inference.deploy("lr-run", "skops", "none", name="lr-skops")
    repo.close()
    return base / "repo"


@pytest.fixture(scope="module")
def srv(root):
    """The server as ``veml serve`` runs it: default limits."""
    server = LiveServer(root)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tight(root):
    """One worker, one waiting place, a 2 s budget: the queue and the budget are easy to reach."""
    server = LiveServer(root, limits=Limits(workers=1, queue=1, budget_s=2.0))
    yield server
    server.stop()


# --- a raw HTTP exchange that streams its body and stops once the server has answered ------------------------
def exchange(port: int, method: str, path: str, headers: dict[str, str], pieces: Iterable[bytes],
             chunked: bool = False) -> tuple[int, dict[str, str], bytes, float]:
    """(status, headers, body, seconds from the first byte sent to the whole answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if chunked:
        head.append("Transfer-Encoding: chunked")
    start = time.monotonic()
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

    def framed() -> Iterator[bytes]:
        for piece in pieces:
            if chunked:
                yield b"%x\r\n" % len(piece)
            yield piece
            if chunked:
                yield b"\r\n"
        if chunked:
            yield b"0\r\n\r\n"

    try:
        for piece in framed():
            view = memoryview(piece)
            while view:
                readable, writable, _ = select.select([sock], [sock], [], 60)
                if readable:
                    raise StopIteration  # answered before the body ended
                assert writable, "the server neither read the body nor answered for 60 s"
                view = view[sock.send(view):]
    except (StopIteration, BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", data[:head_end])
                if length and len(data) >= head_end + 4 + int(length.group(1)):
                    break
    except ConnectionResetError:
        pass
    seconds = time.monotonic() - start
    sock.close()
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    answer_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, answer_headers, body, seconds


class Poller:
    """GET /api/v1/versions again and again from another thread, recording how long each answer took."""

    def __init__(self, srv: LiveServer) -> None:
        self.url, self.times, self.statuses = f"{srv.base_url}/api/v1/versions", [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                t0 = time.monotonic()
                self.statuses.append(client.get(self.url).status_code)
                self.times.append(time.monotonic() - t0)
                time.sleep(0.02)

    def __enter__(self) -> "Poller":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes made of ``piece`` again and again (the one buffer is reused)."""
    while total > 0:
        yield piece if total >= len(piece) else piece[:total]
        total -= len(piece)


def json_body(size: int) -> Iterator[bytes]:
    prefix, suffix = b'{"name": "big", "where": "', b'"}'
    yield prefix
    yield from repeated(b"a" * MB, size - len(prefix) - len(suffix))
    yield suffix


def assert_refused_fast_while_get_answers(srv, status_expected, method, path, headers, pieces, chunked=False):
    with Poller(srv) as poller:
        while not poller.times:  # the loop is answering before the hostile request starts
            time.sleep(0.01)
        status, _, body, seconds = exchange(srv.port, method, path, headers, pieces, chunked)
        time.sleep(0.2)  # a few more GETs after the refusal
    assert status == status_expected, (status, body[:300])
    assert set(json.loads(body)) == {"error"}
    # the bounds: the hostile request gets its 4xx in under 2 s, every concurrent GET answers in under 1 s
    assert seconds < 2.0, f"refused after {seconds:.2f} s"
    assert poller.statuses and set(poller.statuses) == {200}
    assert max(poller.times) < 1.0, f"a concurrent GET took {max(poller.times):.2f} s"
    return json.loads(body)["error"]


# --- point 2: hostile bodies --------------------------------------------------------------------------------
def test_a_200000_part_multipart_body_gets_a_4xx_fast_while_a_get_answers(srv):
    boundary = "hostile0boundary"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'.encode()
    n, per_piece = 200_000, 1000
    end = f"--{boundary}--\r\n".encode()
    pieces = [*([part * per_piece] * (n // per_piece)), end]  # one 55 kB buffer, referenced 200 times
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "Content-Length": str(len(part) * n + len(end))}
    message = assert_refused_fast_while_get_answers(srv, 400, "POST", "/api/v1/inference/any/predict", headers, pieces)
    assert "fields" in message.lower()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_json_body_gets_413_fast_while_a_get_answers(srv, chunked):
    size = 100 * MB
    headers = {"Content-Type": "application/json", **({} if chunked else {"Content-Length": str(size)})}
    message = assert_refused_fast_while_get_answers(srv, 413, "POST", "/api/v1/data/day/filter", headers,
                                                    json_body(size), chunked)
    assert "1 MiB" in message


def test_uploads_and_multipart_parts_are_capped(srv):
    png_ish = b"\x89PNG\r\n\x1a\n" + b"\0" * MB
    status, headers, body, _ = exchange(srv.port, "POST", "/api/v1/inference/any/predict",
                                        {"Content-Type": "image/png"}, repeated(png_ish, 40 * MB), chunked=True)
    assert status == 413 and "32 MiB" in json.loads(body)["error"] and headers.get("connection") == "close"
    api = srv.http
    two = [("image", ("a.png", b"x", "image/png")), ("other", ("b.png", b"y", "image/png"))]
    r = api.post("/inference/any/predict", files=two)
    assert r.status_code == 400 and "files" in r.json()["error"].lower()
    r = api.post("/inference/any/predict", files={"image": ("a.png", b"x", "image/png")}, data={"note": "n" * 100_000})
    assert r.status_code == 400 and "maximum size" in r.json()["error"].lower()
    r = api.post("/inference/any/predict", content=b"--x\r\nnot multipart", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    # bodies under the caps still reach the route: an unknown deployment is a 404, a small JSON filter works
    assert api.post("/inference/any/predict", files={"image": ("a.png", b"x", "image/png")}).status_code in (400, 404)
    assert api.post("/data/day/filter", json={"where": "'" + "a" * (MB - 100) + "' = 'b'", "name": "f-big"}
                    ).status_code in (201, 400)


# --- point 2: the bounded work queue and the time budget ----------------------------------------------------
@pytest.mark.parametrize("ref", ["no-such-deployment", "lr-skops"])
def test_deeply_nested_json_to_predict_is_a_400(srv, ref):
    res = srv.http.post(f"/inference/{ref}/predict", content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert res.status_code == 400, res.text
    assert "malformed JSON" in res.json()["error"]


def test_ragged_feature_rows_to_predict_are_a_400(srv):
    res = srv.http.post("/inference/lr-skops/predict", json={"features": [[1.0], [1.0, 2.0]]})
    assert res.status_code == 400, res.text
    assert "same length" in res.json()["error"]
    assert srv.http.post("/inference/lr-skops/predict", json={"features": [[0.1, 0.2, 0.3]]}).status_code == 200


def _occupy(server: LiveServer, jobs: int) -> threading.Event:
    """Fill the server's own work pool with ``jobs`` jobs that wait for the returned gate."""
    gate = threading.Event()
    pool = server.server.config.app.state.pool
    for _ in range(jobs):
        pool.submit(gate.wait, 60)
    return gate


def _settle(server: LiveServer) -> None:
    pool = server.server.config.app.state.pool
    deadline = time.monotonic() + 30
    while pool.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.pending == 0


def test_a_full_work_queue_answers_503_with_retry_after_and_reads_still_answer(tight):
    api = tight.http
    data_id = api.get("/data/day/samples", params={"limit": 1}).json()["items"][0]["data_id"]
    heavy = [("GET", "/data/day/stats", None), ("GET", "/data/day/samples", None),
             ("GET", f"/data/day/samples/{data_id}/image?thumbnail=16", None),
             ("POST", "/data/day/filter", {"where": "category = 'car'", "name": "busy"}),
             ("POST", "/data/merge", {"versions": ["day", "day"], "name": "busy-merge"}),
             ("POST", "/inference/any/predict", {"features": [[1.0]]})]
    gate = _occupy(tight, 2)  # the one worker and the one waiting place
    try:
        answers = [api.request(m, p, json=b) for m, p, b in heavy]
        for (method, path, _), r in zip(heavy, answers):
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            assert set(r.json()) == {"error"} and "busy" in r.json()["error"]
            assert int(r.headers["retry-after"]) > 0
        assert api.get("/versions").status_code == 200  # reads that need no worker still answer
    finally:
        gate.set()
    _settle(tight)
    assert api.get("/data/day/stats").status_code == 200
    assert api.post("/inference/any/predict", json={"features": [[1.0]]}).status_code == 404


def test_every_request_has_a_time_budget(tight):
    api = tight.http
    gate = _occupy(tight, 1)  # the worker is busy; the one waiting place is free
    try:
        r = api.get("/data/day/stats")  # waits for the worker past the 2 s budget
        assert r.status_code == 504 and "budget" in r.json()["error"]
    finally:
        gate.set()
    _settle(tight)  # the request that timed out gave its waiting place back
    # a client that declares a body and never sends it is cut off by the same budget
    status, _, body, _ = exchange(tight.port, "POST", "/api/v1/data/day/filter",
                                  {"Content-Type": "application/json", "Content-Length": "100"}, [b'{"where": '])
    assert status == 504 and "budget" in json.loads(body)["error"]
    assert api.get("/data/day/stats").status_code == 200


def test_limits_are_checked():
    from veml.errors import InvalidInput

    for bad in ({"workers": 0}, {"queue": -1}, {"budget_s": float("nan")}, {"max_upload": True}):
        with pytest.raises(InvalidInput):
            Limits(**bad)
    assert Limits.of(max_body_mb=2, request_timeout=5) == Limits(max_body=2 * MB, budget_s=5)


# --- point 8: the token comes from the environment or a file; on the command line it is warned about -------
class Serve:
    """``veml serve --port 0`` in its own process, until stopped; ``port`` is read from uvicorn's log line."""

    def __init__(self, root, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([VEML_BIN, "serve", "--repo", str(root), "--port", "0", *args],
                                     env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + 60
        while True:
            line = self.proc.stderr.readline()
            assert line and time.monotonic() < deadline, f"veml serve did not start: {''.join(self.lines)}"
            self.lines.append(line)
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line, re.I)
            if found:
                self.port = int(found.group(1))
                break

    def get(self, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"http://127.0.0.1:{self.port}/api/v1/versions", headers=headers, timeout=30).status_code

    def cmdline(self) -> str:
        with open(f"/proc/{self.proc.pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self.proc.stderr.close()


@pytest.mark.parametrize("source", ["env", "file", "argument"])
def test_serve_takes_its_token_from_env_or_file_and_warns_about_argv(root, tmp_path, source):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    args, env = {"env": ((), {"VEML_TOKEN": TOKEN}), "file": (("--token-file", str(token_file)), {"VEML_TOKEN": ""}),
                 "argument": (("--token", TOKEN), {"VEML_TOKEN": ""})}[source]
    server = Serve(root, *args, env=env)
    try:
        assert server.get(None) == 401 and server.get("wrong") == 401 and server.get(TOKEN) == 200
        warnings = [line for line in server.lines if line.startswith("warning:")]
        if source == "argument":
            assert len(warnings) == 1 and "ps" in warnings[0] and "VEML_TOKEN" in warnings[0]
            assert TOKEN in server.cmdline()  # what the warning is about
        else:
            assert warnings == [] and TOKEN not in server.cmdline()
    finally:
        server.stop()


def test_serve_refuses_a_bad_token_file_or_limit_before_binding(root, tmp_path):
    missing = tmp_path / "nope"
    assert_failed_cleanly(run_cli("serve", "--repo", root, "--port", "0", "--token-file", missing), "nope", json_given=False)
    empty = tmp_path / "empty"
    empty.write_text("\n\n")
    assert_failed_cleanly(run_cli("serve", "--repo", root, "--port", "0", "--token-file", empty), "empty", json_given=False)
    for flag, value in (("--workers", "0"), ("--queue", "-2"), ("--max-body-mb", "0"), ("--request-timeout", "nan")):
        assert_failed_cleanly(run_cli("serve", "--repo", root, "--port", "0", flag, value), flag, json_given=False)
    both = run_cli("serve", "--repo", root, "--port", "0", "--token", TOKEN, "--token-file", empty)
    assert both.code == 2 and "Traceback" not in both.err
    # a public bind needs a token, and one from a file counts
    assert_failed_cleanly(run_cli("serve", "--repo", root, "--host", "0.0.0.0", "--port", "0", "--token-file", empty),
                          "empty", json_given=False)
