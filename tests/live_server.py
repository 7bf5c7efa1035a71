"""A real uvicorn server on a free loopback port, in a daemon thread: what the API, fuzz and browser tests talk to."""

from __future__ import annotations

import threading
import time

import httpx

from veml.server.main import build_server


class LiveServer:
    """``http`` is a client of ``/api/v1`` that sends the bearer token when there is one."""

    def __init__(self, root, token: str | None = None, timeout: float = 120, limits=None) -> None:
        extra = {"limits": limits} if limits is not None else {}  # veml.server.limits.Limits; default: the server's
        self.server = build_server(root, "127.0.0.1", 0, token=token, log_level="warning", **extra)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{self.base_url}/api/v1", headers=headers, timeout=timeout)

    def stop(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(30)
