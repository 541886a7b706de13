"""Where the widget's visitor messages are ingested: the ASGI process's own
ingest threads (channels_app.adapters.chat.ingest_pool.IngestThreads), each on
a database connection it keeps; and the socket's frames skip Channels' hop to
the thread-sensitive sync thread."""
from __future__ import annotations

import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, connections

from channels_app.adapters.chat import consumers, ingest_pool
from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Message

from .conftest import recv_until, widget_socket

pytestmark = [pytest.mark.django_db(transaction=True),
              # several ingest threads writing at once, each on a connection it keeps (pg_backend_pid)
              pytest.mark.usefixtures("postgres_only")]


@pytest.fixture
def chat(channels):
    channels.chat.settings = {"rate_limit": 100}
    channels.chat.save()
    return channels.chat


async def hello(comm):
    connected, code = await comm.connect(timeout=10)
    assert connected, code
    await comm.send_json_to({"type": "hello", "token": None})
    return await recv_until(comm, lambda f: f["type"] == "welcome", timeout=10)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.fixture
def ingest_pids(monkeypatch):
    """The PostgreSQL backend each visitor message was ingested on, in order."""
    pids = []
    real = consumers.throttle_and_ingest

    def recording(*args):
        pids.append(backend_pid())
        return real(*args)

    monkeypatch.setattr(consumers, "throttle_and_ingest", recording)
    return pids


def test_visitor_messages_are_stored_in_order_on_a_kept_connection(personas, chat, settings, ingest_pids):
    """Sent back to back without waiting for the answers: stored and answered
    in the order sent, all on the ingest thread's one connection (before: a
    new PostgreSQL connection per message with CONN_MAX_AGE = 0)."""
    settings.CHAT_INGEST_THREADS = 1

    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        for i in range(6):
            await visitor.send_json_to({"type": "message", "client_id": f"c{i}", "text": f"part {i}"})
        sent = [await recv_until(visitor, lambda f: f["type"] in ("sent", "error"), timeout=15) for _ in range(6)]
        await visitor.disconnect()
        return sent
    sent = async_to_sync(scenario)()
    assert [f["client_id"] for f in sent] == [f"c{i}" for i in range(6)]
    assert [m.body_text for m in Message.objects.order_by("created_at", "pk")] == [f"part {i}" for i in range(6)]
    assert len(ingest_pids) == 6 and len(set(ingest_pids)) == 1
    assert ingest_pids[0] != backend_pid()  # not this (the test's) connection


def test_several_visitors_in_parallel_threads_each_keep_their_order(personas, chat, settings):
    settings.CHAT_INGEST_THREADS = 3

    async def scenario():
        sockets = [widget_socket(chat) for _ in range(3)]
        visitors = [(await hello(s))["visitor"] for s in sockets]
        for i in range(4):
            for n, s in enumerate(sockets):
                await s.send_json_to({"type": "message", "client_id": f"c{i}", "text": f"v{n} {i}"})
        for s in sockets:
            frames = [await recv_until(s, lambda f: f["type"] in ("sent", "error"), timeout=15) for _ in range(4)]
            assert [f["client_id"] for f in frames] == ["c0", "c1", "c2", "c3"], frames
            await s.disconnect()
        return visitors
    visitors = async_to_sync(scenario)()
    for n, visitor in enumerate(visitors):
        texts = list(Message.objects.filter(meta__visitor=visitor).order_by("created_at", "pk")
                     .values_list("body_text", flat=True))
        assert texts == [f"v{n} {i}" for i in range(4)]


def test_failed_message_is_kept_and_the_thread_carries_on(personas, chat, settings, monkeypatch, ingest_pids):
    """A message whose ingest fails in the database is rolled back and kept as
    a failed envelope; the thread's connection survives the error (it is still
    usable) and the visitor's next message is stored on it."""
    settings.CHAT_INGEST_THREADS = 1
    real_ingest = services.ingest
    failures = []

    def broken_once(msg):
        if not failures:
            failures.append(1)
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table_here")
        return real_ingest(msg)

    monkeypatch.setattr(services, "ingest", broken_once)

    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        await visitor.send_json_to({"type": "message", "client_id": "c1", "text": "lost?"})
        error = await recv_until(visitor, lambda f: f["type"] in ("sent", "error"), timeout=15)
        await visitor.send_json_to({"type": "message", "client_id": "c2", "text": "next"})
        sent = await recv_until(visitor, lambda f: f["type"] in ("sent", "error"), timeout=15)
        await visitor.disconnect()
        return error, sent
    error, sent = async_to_sync(scenario)()
    assert error == {"type": "error", "code": "server_error"}
    assert sent["type"] == "sent" and sent["message"]["text"] == "next"
    failed = InboundEnvelope.objects.get(status="failed")
    assert "no_such_table_here" in failed.error and b"lost?" in bytes(failed.body)
    assert [m.body_text for m in Message.objects.all()] == ["next"]
    assert len(set(ingest_pids)) == 1
    from channels_app.services import envelope_replay

    assert envelope_replay(failed)
    assert sorted(Message.objects.values_list("body_text", flat=True)) == ["lost?", "next"]


def test_visitor_frames_skip_the_thread_sensitive_hop(personas, chat, monkeypatch):
    """Channels closes old connections in its one sync thread before every
    handler; the widget's frames do not need it (their handlers have their
    own connections) and no longer queue behind that thread's work."""
    import channels.consumer

    hops = []
    real = channels.consumer.aclose_old_connections

    async def counting():
        hops.append(1)
        await real()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)

    async def scenario():
        visitor = widget_socket(chat)
        await hello(visitor)
        before = len(hops)
        await visitor.send_json_to({"type": "message", "client_id": "c1", "text": "hello"})
        await recv_until(visitor, lambda f: f["type"] == "sent", timeout=15)
        await visitor.send_json_to({"type": "ping"})
        await recv_until(visitor, lambda f: f["type"] == "pong", timeout=15)
        after = len(hops)
        await visitor.disconnect()
        return before, after
    before, after = async_to_sync(scenario)()
    assert after == before


def test_ingest_threads_start_warm_and_close_idle_connections(db, monkeypatch):
    """A new thread pool warms up (imports, connections) before the first
    visitor; a connection unused for IDLE_CLOSE seconds is closed."""
    monkeypatch.setattr(ingest_pool, "IDLE_CLOSE", 0.2)
    pool = ingest_pool.IngestThreads(1)
    try:
        # the warm-up ran first in the one thread: its connection is open already
        assert pool.submit(lambda: connections["default"].connection is not None).result(timeout=30)
        pid = pool.submit(backend_pid).result(timeout=30)
        assert pool.submit(backend_pid).result(timeout=30) == pid  # kept between calls
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _backend_alive(pid):
            time.sleep(0.1)
        assert not _backend_alive(pid)
        assert pool.submit(lambda: connections["default"].connection is None).result(timeout=30)  # closed by the thread
    finally:
        pool.shutdown()
    assert not any(t.name.startswith("chat-ingest") and t.is_alive() for t in threading.enumerate())


def _backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 1
