"""A fake provider HTTP server on loopback for outbound tests.

Records every request and answers from a queue of scripted responses (or a
default), so adapters are tested over real HTTP against the provider's
documented success and error bodies.

    with FakeProvider() as fake:
        fake.respond(200, {"messages": [{"id": "wamid.X"}]})
        channel.settings["api_base"] = fake.url
        ...
        assert fake.requests[0].path == "/v21.0/123/messages"
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class ScriptedResponse:
    status: int = 200
    body: bytes = b"{}"
    headers: dict = field(default_factory=lambda: {"Content-Type": "application/json"})


class FakeProvider:
    def __init__(self, default: ScriptedResponse | None = None):
        self.requests: list[RecordedRequest] = []
        self.queue: list[ScriptedResponse] = []
        self.default = default or ScriptedResponse()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake._lock:
                    fake.requests.append(RecordedRequest(self.command, self.path, dict(self.headers), body))
                    resp = fake.queue.pop(0) if fake.queue else fake.default
                self.send_response(resp.status)
                for key, value in resp.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                self.wfile.write(resp.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def respond(self, status: int = 200, body=None, headers: dict | None = None) -> None:
        if isinstance(body, (dict, list)):
            raw = json.dumps(body).encode()
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = body or b""
        self.queue.append(ScriptedResponse(status, raw, headers or {"Content-Type": "application/json"}))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
