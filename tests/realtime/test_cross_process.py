"""Two uvicorn processes on Redis and PostgreSQL: a message ingested through
one process's HTTP reaches an agent socket held by the other; a reconnect
catches up with what was missed."""
from __future__ import annotations

import json
import os
import time

import httpx
import pytest
from django.conf import settings
from websockets.sync.client import connect

from helpdesk.models import ApiToken
from tests.conftest import require

from .servers import UvicornProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _env() -> dict:
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    if db.get("PASSWORD"):
        url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {"DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "DEBUG": "1",
            "CHANNEL_LAYER_PREFIX": os.environ.get("CHANNEL_LAYER_PREFIX", "threadline"),
            "CACHE_KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "threadline"),
            "LOG_LEVEL": "WARNING"}


def _frames_until(ws, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        except TimeoutError:
            break
        seen.append(frame)
        if predicate(frame):
            return frame
    raise AssertionError(f"no matching frame; got {seen}")


def test_message_ingested_in_one_process_reaches_an_agent_on_another(personas, channels, client, tmp_path):
    require(settings.IS_POSTGRES and bool(settings.REDIS_URL), "PostgreSQL and Redis (DATABASE_URL, REDIS_URL)")
    client.force_login(personas.ana)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    _token, raw = ApiToken.issue(personas.admin, name="cross-process test")
    env = _env()
    with UvicornProcess(env, tmp_path / "a.log") as a, UvicornProcess(env, tmp_path / "b.log") as b:
        ws_url = a.base.replace("http", "ws") + "/ws/agent/"
        headers = {"Cookie": cookie}
        with connect(ws_url, additional_headers=headers, origin=a.base) as ws:
            ready = _frames_until(ws, lambda f: f["event"] == "ready")
            resp = httpx.post(f"{b.base}{channels.api.webhook_path}", headers={"Authorization": f"Token {raw}"},
                              json={"external_id": "x-1", "from": {"kind": "email", "value": "kim@example.org"},
                                    "text": "sent through process B"}, timeout=10)
            assert resp.status_code < 300, resp.text
            got = _frames_until(ws, lambda f: f.get("event") == "conversation.created")
            assert got["message"]["text"] == "sent through process B"
            conversation_id = got["conversation"]["id"]
        # offline for a while: two more messages arrive through B
        for n in (2, 3):
            httpx.post(f"{b.base}{channels.api.webhook_path}", headers={"Authorization": f"Token {raw}"},
                       json={"external_id": f"x-{n}", "from": {"kind": "email", "value": "kim@example.org"},
                             "text": f"missed {n}"}, timeout=10).raise_for_status()
        with connect(ws_url, additional_headers=headers, origin=a.base) as ws:
            _frames_until(ws, lambda f: f["event"] == "ready")
            ws.send(json.dumps({"type": "catch_up", "since": got["at"]}))
            frames = []
            _frames_until(ws, lambda f: frames.append(f) or f["event"] == "catch_up.done")
            texts = [f["message"]["text"] for f in frames if f["event"] == "message.created"]
            assert texts[-2:] == ["missed 2", "missed 3"]
            assert all(f["conversation"]["id"] == conversation_id for f in frames if "conversation" in f
                       and isinstance(f["conversation"], dict))
        # an anonymous socket and a foreign origin are refused by the real server too
        with pytest.raises(Exception):
            with connect(ws_url, origin=a.base) as ws:
                ws.recv(timeout=5)
        with pytest.raises(Exception):
            with connect(ws_url, additional_headers=headers, origin="http://evil.example") as ws:
                ws.recv(timeout=5)
    assert ready["user"]["id"] == personas.ana.pk


def test_visitor_messages_ingested_in_worker_processes_reach_an_agent_on_another(personas, channels, client,
                                                                                  tmp_path):
    """CHAT_INGEST_PROCESSES: the widget's process hands the message to its own
    worker process, which stores it (one transaction), publishes through Redis
    and returns the visitor's frame."""
    require(settings.IS_POSTGRES and bool(settings.REDIS_URL), "PostgreSQL and Redis (DATABASE_URL, REDIS_URL)")
    from channels_app.models import InboundEnvelope
    from conversations.models import Message

    client.force_login(personas.ana)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    chat = channels.chat
    env = _env()
    with UvicornProcess({**env, "CHAT_INGEST_PROCESSES": "1"}, tmp_path / "a.log") as a, \
            UvicornProcess(env, tmp_path / "b.log") as b:
        with connect(b.base.replace("http", "ws") + "/ws/agent/", additional_headers={"Cookie": cookie},
                     origin=b.base) as agent, \
                connect(f"{a.base.replace('http', 'ws')}/ws/widget/{chat.uuid}/", origin=a.base) as widget:
            _frames_until(agent, lambda f: f["event"] == "ready")
            widget.send(json.dumps({"type": "hello", "token": None}))
            welcome = _frames_until(widget, lambda f: f.get("type") == "welcome")
            widget.send(json.dumps({"type": "message", "client_id": "w1", "text": "from a worker"}))
            sent = _frames_until(widget, lambda f: f.get("type") in ("sent", "error"), timeout=60)
            assert sent["type"] == "sent" and sent["message"]["text"] == "from a worker", sent
            got = _frames_until(agent, lambda f: f.get("event") == "conversation.created")
            assert got["message"]["text"] == "from a worker" and got["message"]["channel"] == "chat"
            # the same client id again (a resend after a drop): no second message
            widget.send(json.dumps({"type": "message", "client_id": "w1", "text": "from a worker"}))
            again = _frames_until(widget, lambda f: f.get("type") == "sent")
            assert again["message"]["id"] == sent["message"]["id"]
    message = Message.objects.get()
    assert message.envelope.status == "processed" and message.meta["visitor"] == welcome["visitor"]
    assert InboundEnvelope.objects.filter(channel=chat).count() == 2
