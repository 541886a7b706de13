"""SLA warnings pushed live (metrics.sla_tasks): once per conversation, timer,
level and due time, to the conversation's team and not to others."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import services
from conversations.models import Conversation
from metrics import sla_tasks
from metrics.models import BusinessHours, SlaNotice, SlaPolicy
from tests.conftest import require

from .conftest import agent_socket, drain, recv_until

T0 = datetime(2026, 3, 6, 16, 50, tzinfo=dt_timezone.utc)  # a Friday


@pytest.fixture
def published(monkeypatch):
    calls = []
    lock = threading.Lock()
    real = sla_tasks._publish

    def record(conversation_id, kind, level, due_at):
        with lock:
            calls.append((conversation_id, kind, level, due_at))
        real(conversation_id, kind, level, due_at)

    monkeypatch.setattr(sla_tasks, "_publish", record)
    return calls


def _conversation(channel, inbound, value, start, **fields):
    conv = services.ingest(inbound(channel, "email", value, text="help", created_at=start)).message.conversation
    Conversation.objects.filter(pk=conv.pk).update(first_inbound_at=start, created_at=start, **fields)
    conv.refresh_from_db()
    return conv


@pytest.mark.django_db
def test_warning_then_breach_each_published_once(channels, inbound, published):
    SlaPolicy.objects.create(priority="normal", first_response_seconds=1800, resolution_seconds=None)
    conv = _conversation(channels.api, inbound, "kim@example.org", T0)
    answered = _conversation(channels.api, inbound, "lou@example.org", T0)
    Conversation.objects.filter(pk=answered.pk).update(first_reply_at=T0 + timedelta(minutes=1))
    due = T0 + timedelta(seconds=1800)

    assert sla_tasks.run(T0 + timedelta(seconds=1000)) == 0  # 800 s left: not yet (warning at 20 % = 360 s)
    assert sla_tasks.run(T0 + timedelta(seconds=1500)) == 1
    assert published == [(conv.pk, "first_response", "warning", due)]
    assert sla_tasks.run(T0 + timedelta(seconds=1560)) == 0  # same due time: not again
    assert sla_tasks.run(T0 + timedelta(seconds=1900)) == 1
    assert published[-1] == (conv.pk, "first_response", "breached", due)
    assert sla_tasks.run(T0 + timedelta(seconds=1960)) == 0
    # a breach older than SLA_BREACH_LOOKBACK is not announced (a scheduler that was down)
    late = _conversation(channels.api, inbound, "old@example.org", T0 - timedelta(hours=3))
    assert sla_tasks.run(T0 + timedelta(seconds=2000)) == 0
    assert not SlaNotice.objects.filter(conversation=late).exists()

    # a new due time (the priority changed) warns again
    SlaPolicy.objects.create(priority="urgent", first_response_seconds=3600)
    Conversation.objects.filter(pk=conv.pk).update(priority="urgent")
    assert sla_tasks.run(T0 + timedelta(seconds=3000)) == 1  # 600 s left of 3600 (720 s window)
    assert published[-1] == (conv.pk, "first_response", "warning", T0 + timedelta(seconds=3600))
    assert SlaNotice.objects.filter(conversation=conv).count() == 3
    # answered: the first-response timer stops
    Conversation.objects.filter(pk=conv.pk).update(first_reply_at=T0 + timedelta(seconds=3100))
    assert sla_tasks.run(T0 + timedelta(seconds=3700)) == 0


@pytest.mark.django_db
def test_fixed_warning_duration_and_resolution_timer(channels, inbound, published, settings):
    settings.SLA_WARNING_BEFORE = "600"
    SlaPolicy.objects.create(priority="normal", first_response_seconds=None, resolution_seconds=4 * 3600)
    conv = _conversation(channels.api, inbound, "kim@example.org", T0, first_reply_at=T0 + timedelta(minutes=5))
    due = T0 + timedelta(hours=4)
    assert sla_tasks.run(due - timedelta(seconds=700)) == 0
    assert sla_tasks.run(due - timedelta(seconds=500)) == 1
    assert published == [(conv.pk, "resolution", "warning", due)]
    Conversation.objects.filter(pk=conv.pk).update(status="resolved")
    assert sla_tasks.run(due + timedelta(seconds=10)) == 0  # resolved: no breach


@pytest.mark.django_db
def test_business_hours_policy_counts_only_open_hours(personas, channels, inbound, published):
    """Billing works Mon-Fri 09-17 UTC: 30 business minutes from Friday 16:50 end Monday 09:20."""
    BusinessHours.objects.create(team=personas.billing, timezone="UTC")
    SlaPolicy.objects.create(priority="normal", first_response_seconds=1800, business_hours=True)
    conv = _conversation(channels.api, inbound, "kim@example.org", T0)
    assert conv.team_id == personas.billing.pk
    tech = _conversation(channels.api, inbound, "tia@example.org", T0, team=None)  # no schedule: calendar time
    assert sla_tasks.run(T0 + timedelta(minutes=26)) == 1  # Friday 17:16: only the calendar one warns
    assert published == [(tech.pk, "first_response", "warning", T0 + timedelta(minutes=30))]
    monday = datetime(2026, 3, 9, 9, 20, tzinfo=dt_timezone.utc)
    assert sla_tasks.run(monday - timedelta(minutes=5)) == 1  # the calendar one is past the lookback by now
    assert published[-1][:3] == (conv.pk, "first_response", "warning") and published[-1][3] == monday
    assert sla_tasks.run(monday + timedelta(minutes=1)) == 1
    assert published[-1][:3] == (conv.pk, "first_response", "breached")


@pytest.mark.django_db
def test_the_task_asks_the_database_for_the_window_only(channels, inbound, published):
    """Conversations far from their due time are not even loaded (indexed range queries)."""
    SlaPolicy.objects.create(priority="normal", first_response_seconds=1800, resolution_seconds=8 * 3600)
    for n in range(30):
        _conversation(channels.api, inbound, f"c{n}@example.org", T0 - timedelta(days=n + 1))
    soon = _conversation(channels.api, inbound, "soon@example.org", T0)
    now = T0 + timedelta(seconds=1500)
    candidates = sla_tasks._candidates(SlaPolicy.objects.get(), "first_response", now, timedelta(hours=1), {})
    assert [c.pk for c in candidates] == [soon.pk]
    with CaptureQueriesContext(connection) as queries:
        assert sla_tasks.run(now) == 1
    assert len(queries) < 15


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_publish_each_notice_once(channels, inbound, published, monkeypatch):
    require(settings.IS_POSTGRES, "PostgreSQL (DATABASE_URL)")
    SlaPolicy.objects.create(priority="normal", first_response_seconds=1800, resolution_seconds=3600)
    convs = [_conversation(channels.api, inbound, f"c{n}@example.org", T0 - timedelta(seconds=60 * n))
             for n in range(12)]
    now = T0 + timedelta(seconds=1700)
    barrier = threading.Barrier(2, timeout=20)
    real = sla_tasks.due_notices

    def in_step(now):
        found = real(now)
        barrier.wait()  # both runs have found the same notices before either inserts one
        return found

    monkeypatch.setattr(sla_tasks, "due_notices", in_step)
    results, errors = [], []

    def worker():
        try:
            results.append(sla_tasks.run(now))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    keys = [(c, k, lvl) for c, k, lvl, _d in published]
    assert len(keys) == len(set(keys)) == sum(results)
    assert SlaNotice.objects.count() == len(keys)
    # every conversation got its first-response notice (warning or breach) exactly once
    assert {c for c, k, _l in keys if k == "first_response"} == {c.pk for c in convs}


@pytest.mark.django_db(transaction=True)
def test_the_conversation_team_receives_the_warning_and_others_do_not(personas, channels, inbound):
    SlaPolicy.objects.create(priority="normal", first_response_seconds=1800)
    conv = _conversation(channels.api, inbound, "kim@example.org", timezone.now() - timedelta(seconds=1500))
    assert conv.team_id == personas.billing.pk

    async def scenario():
        ana, bob, manager = agent_socket(personas.ana), agent_socket(personas.bob), agent_socket(personas.manager)
        for comm in (ana, bob, manager):
            assert (await comm.connect())[0]
            await recv_until(comm, lambda f: f["event"] == "ready")
        await drain(bob)
        assert await database_sync_to_async(sla_tasks.run)() == 1
        got = await recv_until(ana, lambda f: f["event"].startswith("sla."))
        assert got["event"] == "sla.warning"
        assert got["conversation"]["id"] == conv.pk
        assert got["sla"]["kind"] == "first_response"
        assert got["sla"]["due_at"] == (conv.first_inbound_at + timedelta(seconds=1800)).isoformat()
        await recv_until(manager, lambda f: f["event"] == "sla.warning")
        assert [f for f in await drain(bob) if f.get("event", "").startswith("sla.")] == []
        assert await database_sync_to_async(sla_tasks.run)() == 0
        assert [f for f in await drain(ana) if f.get("event", "").startswith("sla.")] == []
        for comm in (ana, bob, manager):
            await comm.disconnect()
    async_to_sync(scenario)()


def test_the_task_is_scheduled_and_registered_with_celery():
    """A worker knows the task by autodiscovery alone (a fresh process that imports nothing else)."""
    import os
    import subprocess
    import sys

    from django.utils.module_loading import import_string

    from helpdesk.celery import PERIODIC_TASKS

    from .servers import ROOT

    task_path, every = PERIODIC_TASKS["sla-notices"]
    assert import_string(task_path).name == task_path and every <= 60
    code = ("import django; django.setup(); from helpdesk.celery import app; "
            "app.loader.import_default_modules(); print(%r in app.tasks)" % task_path)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}, "DEBUG": "1",
           "DJANGO_SETTINGS_MODULE": "helpdesk.settings"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("True"), out.stderr[-2000:]


def test_start_window_is_a_tight_superset_with_business_hours():
    """Every start whose business due time falls in the window is inside the bounds,
    and the bounds are not much wider than the starts that qualify."""
    from metrics.businesshours import Schedule
    from metrics.sla import start_window

    schedule = Schedule("Europe/Berlin", {str(d): [["09:00", "17:00"]] for d in range(5)}, ["2026-03-09"])
    seconds = 3 * 8 * 3600  # three business days
    due_lo, due_hi = T0 - timedelta(hours=1), T0 + timedelta(hours=2)
    lo, hi = start_window(due_lo, due_hi, seconds, schedule)
    qualifying = []
    start = T0 - timedelta(days=12)
    while start < T0:
        due = schedule.add_seconds(start, seconds)
        if due_lo <= due <= due_hi:
            qualifying.append(start)
            assert lo <= start <= hi, start
        start += timedelta(minutes=10)
    assert qualifying
    assert lo >= min(qualifying) - timedelta(minutes=11) and hi <= max(qualifying) + timedelta(minutes=11)
