"""Shared fixtures: named personas (STYLE.md 12) and channel helpers."""
from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest
from django.conf import settings

from conversations.inbound import InboundMessage
from tests.factories import ChannelFactory, TeamFactory, UserFactory


def pytest_report_header(config):
    db = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    lines = [f"threadline: database={db} redis={'yes' if settings.REDIS_URL else 'no (in-memory)'}"]
    if not shutil.which("chromium") and not os.environ.get("CHROMIUM_PATH"):
        lines.append("threadline: !!! Chromium not found: browser tests will be SKIPPED (apt-get install chromium)")
    if not settings.IS_POSTGRES:
        lines.append("threadline: !!! no PostgreSQL (DATABASE_URL unset): concurrency tests will be SKIPPED")
    return lines


def pytest_unconfigure(config):
    """The SQLite test database is a file (settings: live servers write from several threads);
    Django removes the file, and this its WAL files, which a thread's connection may keep."""
    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if not settings.IS_POSTGRES and name:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.remove(name + suffix)
            except FileNotFoundError:
                pass


@pytest.fixture(autouse=True)
def _media_root(tmp_path, settings):
    settings.MEDIA_ROOT = str(tmp_path / "media")


@pytest.fixture(autouse=True)
def _chat_ingest_stopped():
    """The chat widget's ingest threads keep their database connections: stop
    them after each test (they start again on the next widget), so no
    connection outlives the test database."""
    yield
    from channels_app.adapters.chat import ingest_pool

    ingest_pool.shutdown()


@pytest.fixture
def personas(db):
    """billing and tech teams; admin, manager, ana (billing agent), bob (tech agent)."""
    billing = TeamFactory(name="Billing")
    tech = TeamFactory(name="Tech")
    admin = UserFactory(username="admin", role="admin", first_name="Ada", is_staff=True, is_superuser=True)
    manager = UserFactory(username="manager", role="manager", first_name="Maria")
    ana = UserFactory(username="ana", role="agent", first_name="Ana")
    bob = UserFactory(username="bob", role="agent", first_name="Bob")
    billing.members.add(ana)
    tech.members.add(bob)
    return SimpleNamespace(billing=billing, tech=tech, admin=admin, manager=manager, ana=ana, bob=bob)


@pytest.fixture
def channels(db, personas):
    """One channel per common kind, owned by the billing team."""
    team = personas.billing
    return SimpleNamespace(
        email=ChannelFactory(kind="email", name="Support mail", team=team, settings={"address": "support@acme.test"}),
        chat=ChannelFactory(kind="chat", name="Website chat", team=team),
        whatsapp=ChannelFactory(kind="whatsapp", name="WhatsApp", team=team),
        sms=ChannelFactory(kind="sms", name="SMS", team=team),
        phone=ChannelFactory(kind="phone", name="Phone", team=team),
        api=ChannelFactory(kind="api", name="Mobile app", team=team),
    )


@pytest.fixture
def inbound():
    """Build an InboundMessage with sensible defaults: inbound(channel, 'email', 'kim@x.org', text=...)."""
    counter = {"n": 0}

    def make(channel, kind, value, **kwargs) -> InboundMessage:
        counter["n"] += 1
        kwargs.setdefault("external_id", f"ext-{counter['n']}")
        kwargs.setdefault("text", f"hello {counter['n']}")
        return InboundMessage(channel=channel, identities=[(kind, value)], **kwargs)

    return make


REQUIRE_ALL = os.environ.get("THREADLINE_REQUIRE_ALL") == "1"


def require(available: bool, what: str) -> None:
    """Skip loudly when a tool is missing; in CI (THREADLINE_REQUIRE_ALL=1) fail instead."""
    if available:
        return
    message = f"!!! {what} is not available"
    if REQUIRE_ALL:
        pytest.fail(message + " (THREADLINE_REQUIRE_ALL=1: nothing may be skipped in CI)")
    pytest.skip(message)


@pytest.fixture
def postgres_only(db):
    require(settings.IS_POSTGRES, "PostgreSQL (set DATABASE_URL)")


@pytest.fixture(autouse=True, scope="session")
def _celery_eager():
    """Tasks run in-process in tests; tests/test_celery_redis.py runs a real
    worker on the Redis broker when REDIS_URL is set."""
    from helpdesk.celery import app

    old = app.conf.task_always_eager
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = old


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache (rate limits, hints, presence)."""
    from django.core.cache import cache

    from helpdesk import webhooks
    from metrics import engine

    cache.clear()
    # what this process remembers of the cache: the flush lock's due time, the wanted webhook events
    engine._flush_known["due"] = 0.0
    webhooks._wanted_local["events"] = None
    yield


@pytest.fixture
def wire_sql():
    """PostgreSQL: `with wire_sql() as sent:` records every statement sent on
    the default connection as it went over the wire, one entry per round trip
    (a BEGIN sent with the first statement as `BEGIN;SELECT ...`), COMMIT and
    ROLLBACK included where this backend sends them (helpdesk.db.postgresql);
    psycopg2's own BEGIN/COMMIT (transaction.atomic) are not seen."""
    from contextlib import contextmanager

    from django.db import connection

    @contextmanager
    def record():
        connection.ensure_connection()
        cls = connection.connection.cursor_factory
        real = cls.execute
        sent = []

        def execute(self, query, vars=None):
            try:
                return real(self, query, vars)
            finally:
                sent.append(self.query.decode() if self.query else str(query))

        cls.execute = execute
        try:
            yield sent
        finally:
            cls.execute = real

    return record
