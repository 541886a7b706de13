"""Where the widget's visitor messages are ingested: the ASGI process's own
ingest threads (channels_app.adapters.chat.ingest_pool.IngestThreads), each on
a database connection it keeps; and the socket's frames skip Channels' hop to
the thread-sensitive sync thread."""
from __future__ import annotations

import json
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

    def broken_once(msg, **kwargs):
        if not failures:
            failures.append(1)
            with connection.cursor() as cursor:
                cursor.execute("SELECT * FROM no_such_table_here")
        return real_ingest(msg, **kwargs)

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


def test_warm_up_readies_celery_without_sending_a_task(db):
    """The warm-up builds Celery's task registry and connects to the broker, so
    that the process's first after-ingest task does not hold an ingest thread
    for that (0.25-0.5 s under load). In a fresh process: these are per process."""
    import os
    import subprocess
    import sys

    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("Celery runs tasks eagerly without Redis: nothing to warm up")
    import redis

    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queued = broker.llen("celery")
    script = (
        "import json, django\n"
        "django.setup()\n"
        "from helpdesk.celery import app\n"
        "from channels_app.adapters.chat import ingest_pool\n"
        "assert not app.finalized\n"
        "ingest_pool.warm_up()\n"
        "conns = list(app.pool._resource.queue)\n"
        "print(json.dumps({'finalized': app.finalized,\n"
        "                  'connected': any(getattr(c, 'connected', False) for c in conns)}))\n")
    db_url = os.environ.get("DATABASE_URL", "")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "helpdesk.settings"),
           # the test database (the warm-up also opens a connection)
           "DATABASE_URL": db_url.rsplit("/", 1)[0] + "/" + connection.settings_dict["NAME"] if db_url else ""}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=str(settings.BASE_DIR))
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"finalized": True, "connected": True}
    assert broker.llen("celery") == queued  # no task was sent


def _backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 1


# ------------------------------------------------------------------ the store path's round trips

def _statement(sql: str) -> str:
    """A statement sent (wire_sql) as `VERB table`, for readable failures; a
    BEGIN sent with it as `BEGIN;VERB table`."""
    if sql.startswith("BEGIN;"):
        return "BEGIN;" + _statement(sql[len("BEGIN;"):])
    words = sql.replace('"', "").split()
    verb = words[0].upper()
    if verb in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
        return verb
    if verb == "WITH":
        return "WITH " + words[words.index("INTO") + 1]
    if verb == "INSERT":
        return "INSERT " + words[2]
    if verb == "UPDATE":
        return "UPDATE " + words[1]
    table = words[words.index("FROM") + 1]
    return f"SELECT {table}" + (" FOR UPDATE" if "FOR UPDATE" in sql else "")


def test_a_visitor_message_is_stored_in_four_round_trips(personas, chat, monkeypatch, wire_sql):
    """The widget's store path (throttle_and_ingest) for a returning visitor
    with an open conversation: one transaction of three statements in four
    round trips, BEGIN sent with the first, the envelope inserted (processed)
    by the statement that writes the message, nothing after commit on the
    database. Before: BEGIN on its own, INSERT of the envelope first and its
    UPDATE after (seven round trips); earlier nine statements in the
    transaction and the message's attachments read after."""
    from channels_app.models import Channel
    from conversations import automation
    from metrics import engine

    # what Celery (eager in tests) would run elsewhere after commit: not this path
    monkeypatch.setattr(automation, "wanted", lambda *args: False)
    monkeypatch.setattr(engine, "_flush_unless_suspended", lambda: None)
    channel = Channel.objects.select_related("team").get(pk=chat.pk)  # as WidgetConsumer loads it
    body = {"visitor": "v-count", "text": "first", "client_id": "c0", "page": "", "language": "en"}
    consumers.throttle_and_ingest(channel, "v-count", "http://localhost", "127.0.0.1", body)
    with wire_sql() as sent:
        hit, frame, conversation_id = consumers.throttle_and_ingest(
            channel, "v-count", "http://localhost", "127.0.0.1", dict(body, client_id="c1", text="second"))
    assert frame["type"] == "sent" and frame["message"]["text"] == "second" and frame["message"]["attachments"] == []
    assert [_statement(sql) for sql in sent] == [
        "BEGIN;SELECT customers_identity FOR UPDATE",  # the customer, locked
        "SELECT conversations_conversation",  # the open conversation
        "WITH conversations_message",  # message, envelope, event, conversation, customer, metrics mark
        "COMMIT",
    ]
    assert 'INSERT INTO "channels_app_inboundenvelope"' in sent[2]
    message = Message.objects.select_related("envelope").get(body_text="second")
    assert message.conversation_id == conversation_id
    envelope = message.envelope
    assert (envelope.status, envelope.message_ids, envelope.attempts, envelope.kind, envelope.source) == (
        "processed", [message.pk], 1, "chat", "widget")
    assert envelope.processed_at is not None and envelope.headers == {"origin": "http://localhost"}
    assert envelope.remote_addr == "127.0.0.1" and json.loads(bytes(envelope.body))["text"] == "second"
    # the envelope ids come from its own sequence: the next envelope stored the ordinary way follows it
    from channels_app.models import InboundEnvelope

    later = InboundEnvelope.objects.create(channel=channel, kind="chat", body=b"{}")
    assert later.pk > envelope.pk


def test_a_new_visitors_first_message_is_stored_in_four_round_trips(personas, chat, monkeypatch, wire_sql):
    """A first message from an unknown visitor: the customer is created in the
    transaction without a savepoint of its own (a concurrent twin loses the
    whole transaction and is run again, as a repeated delivery is), and a
    customer created here has no conversation to join or reopen, so neither is
    looked up; the new conversation and the envelope are inserted by the
    statement that writes the message, the customer and their identity by
    one statement; BEGIN goes with the first statement. Before: eight round
    trips (BEGIN, the envelope's INSERT and UPDATE, the identity's INSERT);
    earlier SAVEPOINT and RELEASE around the customer, two conversation
    lookups (open, recently resolved) and the conversation's own INSERT,
    thirteen statements."""
    from channels_app.models import Channel
    from conversations import automation
    from metrics import engine

    monkeypatch.setattr(automation, "wanted", lambda *args: False)
    monkeypatch.setattr(engine, "_flush_unless_suspended", lambda: None)
    channel = Channel.objects.select_related("team").get(pk=chat.pk)
    from helpdesk import webhooks

    webhooks._wanted_events()  # cached (as after any earlier message), not this path's
    body = {"visitor": "v-first", "text": "hello", "client_id": "c0", "page": "", "language": "en"}
    with wire_sql() as sent:
        hit, frame, conversation_id = consumers.throttle_and_ingest(
            channel, "v-first", "http://localhost", "127.0.0.1", body)
    assert frame["type"] == "sent" and frame["message"]["text"] == "hello"
    assert [_statement(sql) for sql in sent] == [
        "BEGIN;SELECT customers_identity FOR UPDATE",  # nobody owns the visitor id
        "WITH customers_customer",  # the customer and their identity
        "WITH conversations_conversation",  # conversation, message, envelope, event, customer, metrics mark
        "COMMIT",
    ]
    message = Message.objects.select_related("conversation__customer").get(body_text="hello")
    assert message.conversation.message_count == 1 and message.conversation.last_message_preview == "hello"
    assert list(message.conversation.events.values_list("kind", "message_id")) == [
        ("created", None), ("message_in", message.pk)]
    assert message.conversation_id == conversation_id and message.envelope.status == "processed"
    assert message.conversation.customer.identities.get().value == "v-first"


def test_the_agents_are_told_before_the_metrics_flush_is_scheduled(personas, chat, monkeypatch):
    """After commit the publish to the agents' sockets runs first; the metrics
    flush (a cache round trip) after it."""
    from conversations import realtime
    from metrics import engine

    order = []
    real_publish = realtime.publish_message
    monkeypatch.setattr(realtime, "publish_message",
                        lambda *a, **k: (order.append("publish"), real_publish(*a, **k)))
    monkeypatch.setattr(engine, "_flush_unless_suspended", lambda: order.append("metrics"))
    for visitor in ("v-order", "v-order"):  # a new customer, then a known one
        order.clear()
        consumers.throttle_and_ingest(chat, visitor, "http://localhost", "127.0.0.1",
                                      {"visitor": visitor, "text": "hi", "client_id": str(time.time()),
                                       "language": "en"})
        assert order == ["publish", "metrics"]


def test_concurrent_copies_of_a_visitor_message_store_one_message(personas, chat):
    """The ingest has no savepoint of its own on the widget's path: a copy of a
    message that is stored (or being stored) fails the unique key, loses its
    transaction and is run again with one, which returns the stored message.
    Copies sent at the same instant from several threads: one message, every
    copy answered with it, every envelope processed, none failed."""
    from channels_app.adapters.chat.inbound import ingest_visitor_message

    body = {"visitor": "v-twice", "client_id": "c1", "text": "only once"}
    ingest_visitor_message(chat, dict(body, client_id="c0", text="known visitor"))
    for visitor in ("v-twice", "v-new"):  # a known visitor, then a new one (no customer yet)
        barrier = threading.Barrier(4)
        results, errors = [], []

        def send():
            try:
                barrier.wait(10)
                results.append(ingest_visitor_message(chat, dict(body, visitor=visitor)).pk)
            except Exception as exc:  # asserted below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and len(results) == 4, errors
        stored = Message.objects.get(meta__visitor=visitor, body_text="only once")
        assert set(results) == {stored.pk}
        copies = [e for e in InboundEnvelope.objects.all() if stored.pk in e.message_ids]
        assert [(e.status, e.message_ids) for e in copies] == [("processed", [stored.pk])] * 4
    assert not InboundEnvelope.objects.filter(status="failed").exists()
    # and one more copy later, sequentially: the same message again
    assert ingest_visitor_message(chat, dict(body, visitor="v-twice")).pk == \
        Message.objects.get(meta__visitor="v-twice", body_text="only once").pk
    assert Message.objects.filter(body_text="only once").count() == 2


def test_the_rate_limit_costs_one_redis_command_per_message(db, settings, monkeypatch):
    """throttle_hit's counter: one command per message, a window's first
    included (INCR, and EXPIRE when it made the key, in one script; before:
    INCR of a missing key then SET NX for a window's first message, and
    earlier ADD, EXISTS and INCRBY)."""
    from django.core.cache import cache

    if not settings.REDIS_URL:
        pytest.skip("the cache is Redis only with REDIS_URL")
    client = cache._cache.get_client(write=True)
    commands = []
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *args, **kw: (commands.append(args[0]), real(*args, **kw))[1])
    monkeypatch.setattr(consumers.time, "time", lambda: 1_000_000.0)  # one window
    results = [consumers.throttle_hit("msg:v-rl", 3, 10) for _ in range(5)]
    assert [limited for limited, _retry in results] == [False, False, False, True, True]
    assert commands == ["EVAL"] * 5
    key = cache.make_and_validate_key(f"chat:rl:msg:v-rl:{1_000_000 // 10}")
    assert 0 < real("TTL", key) <= 20  # the window's counter expires (two windows long)
    monkeypatch.setattr(consumers.time, "time", lambda: 1_000_010.0)  # the next window starts afresh
    assert consumers.throttle_hit("msg:v-rl", 3, 10) == (False, 10)
