"""Real ASGI servers for the realtime tests and the benchmark: uvicorn in a
subprocess (cross-process tests) or in a thread of the test process (browser
tests on the test database, which may be SQLite in memory)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"server at {base} did not start: {last}")


class UvicornProcess:
    """`uvicorn helpdesk.asgi:application` on a free loopback port."""

    def __init__(self, env: dict, log_path: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in {**os.environ, **env}.items() if k != "PYTEST_VERSION"}
        self.log_path = log_path
        self.proc = None

    def __enter__(self):
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "helpdesk.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log",
             "--ws", "websockets-sansio", "--ws-per-message-deflate", "false"],  # as deployed
            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.base)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class UvicornThread:
    """uvicorn serving helpdesk.asgi in a thread of this process (shares the
    test database, like pytest-django's live_server, but with WebSockets)."""

    def __init__(self):
        import uvicorn

        from helpdesk.asgi import application

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn thread did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
