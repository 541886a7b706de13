"""Fixtures for the email channel tests: the corpus, an outbound SMTP sink and
helpers to push raw mail through the same path the listener uses."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SinkHandler:
    """Records every message; `refuse` scripts an SMTP error answer for DATA."""

    def __init__(self):
        self.messages: list[dict] = []
        self.refuse: str | None = None
        self.event = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return self.refuse
        with self.event:
            self.messages.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                                  "data": envelope.original_content or envelope.content})
            self.event.notify_all()
        return "250 OK"

    def wait(self, count: int = 1, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.event:
            while len(self.messages) < count and time.monotonic() < deadline:
                self.event.wait(0.1)
        assert len(self.messages) >= count, f"sink got {len(self.messages)} messages, expected {count}"
        return self.messages


@pytest.fixture
def smtp_sink(settings):
    """A local aiosmtpd server receiving our outbound mail (EMAIL_HOST/PORT point at it)."""
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    handler.port = port
    yield handler
    controller.stop()


@pytest.fixture
def email_channel(channels):
    ch = channels.email
    ch.name = "Acme Support"
    ch.settings = {"address": "support@acme.test", "rate_limit": 0}
    ch.save()
    return ch


@pytest.fixture
def deliver_raw(email_channel):
    """Store raw bytes as an envelope and process it, like the SMTP listener does."""
    from channels_app.adapters.email.adapter import process_envelope as envelope_process
    from channels_app.services import envelope_store

    def run(raw: bytes, channel=None, rcpt_to=None):
        envelope = envelope_store(channel=channel or email_channel, kind="email", body=raw, source="smtp",
                                  headers={"rcpt_to": rcpt_to or ["support@acme.test"]})
        result = envelope_process(envelope)
        envelope.refresh_from_db()
        return envelope, result

    return run
