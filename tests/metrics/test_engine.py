"""Engine mechanics: batching of events, FCR provisional -> final, merged-away conversations."""
from __future__ import annotations

import os
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from conversations import services
from metrics import engine, report
from metrics.kpis.base import Selection
from metrics.models import ConversationFact, DirtyConversation

pytestmark = pytest.mark.django_db(transaction=True)


def test_fcr_is_provisional_until_the_window_closes(play, channels, personas, settings):
    now = timezone.now().replace(microsecond=0)
    conv = play.inbound(channels.chat, "kim", (now - timedelta(hours=2)).isoformat()).message.conversation
    play.reply(conv, personas.ana, (now - timedelta(hours=1)).isoformat())
    services.resolve_conversation(conversation=conv, at=now - timedelta(minutes=30))
    day = timezone.localdate()
    m = report.build(Selection(day - timedelta(days=1), day))[0]
    assert m["fcr_rate"] is None  # no final verdict yet
    assert m["fcr_provisional"] == {"rate": 1.0, "count": 1, "final_count": 0}
    fact = ConversationFact.objects.get(conversation_id=conv.pk)
    assert not fact.fcr_final and fact.fcr_window_end == now - timedelta(minutes=30) + timedelta(days=7)
    # eight days later the periodic task turns the verdict final
    with mock.patch("django.utils.timezone.now", return_value=now + timedelta(days=8)):
        engine.periodic()
    m = report.build(Selection(day - timedelta(days=1), day))[0]
    assert m["fcr_rate"] == 1.0 and m["fcr_provisional"]["count"] == 0


def test_events_are_batched_into_one_flush_task(play, channels, personas):
    """Outside eager mode, events only mark conversations dirty and one debounced flush is queued."""
    from helpdesk.celery import app

    sent = []
    app.conf.task_always_eager = False
    try:
        with mock.patch("metrics.tasks.flush.apply_async", side_effect=lambda **kw: sent.append(kw)):
            for i in range(5):
                play.inbound(channels.chat, f"v{i}", "2026-03-02 09:0%d" % i)
    finally:
        app.conf.task_always_eager = True
    assert DirtyConversation.objects.count() == 5
    assert len(sent) == 1  # debounced: one task for the burst
    assert engine.flush() == 5
    assert ConversationFact.objects.count() == 5 and not DirtyConversation.objects.exists()


@pytest.fixture
def queued_flush(monkeypatch):
    """Celery not eager: schedule_flush()'s lock claims (cache round trips) and
    queued flush tasks recorded, on a clock the test moves (.now[0])."""
    from types import SimpleNamespace

    from django.core.cache import cache

    from helpdesk.celery import app

    rec = SimpleNamespace(now=[1_000_000.0], claims=[], sent=[])
    monkeypatch.setattr(engine, "_clock", lambda: rec.now[0])
    real_claim = engine._claim
    monkeypatch.setattr(engine, "_claim", lambda *a, **kw: (rec.claims.append(a), real_claim(*a, **kw))[1])
    app.conf.task_always_eager = False
    try:
        with mock.patch("metrics.tasks.flush.apply_async", side_effect=lambda **kw: rec.sent.append(kw)):
            yield rec
    finally:
        app.conf.task_always_eager = True
        cache.delete(engine.FLUSH_LOCK)


def test_a_flush_known_to_come_spares_the_lock_round_trip(play, channels, personas, queued_flush):
    """Every ingest schedules a flush: the first claims the lock (its value is
    when the task is due) and queues the task; later marks committed well
    before that task runs take no cache round trip; inside a transaction (the
    mark may commit after the task ran) or close to the due time they ask the
    cache again; once the flush ran and dropped the lock, the next mark queues
    a new task."""
    from django.db import transaction

    rec = queued_flush
    engine.schedule_flush()
    assert (len(rec.claims), len(rec.sent)) == (1, 1) and rec.sent[0] == {"countdown": engine.FLUSH_COUNTDOWN}
    rec.now[0] += engine.FLUSH_COUNTDOWN - engine.FLUSH_MARGIN - 0.01
    engine.schedule_flush()  # the queued task is still to come: it reads this mark
    assert (len(rec.claims), len(rec.sent)) == (1, 1)
    with transaction.atomic():
        engine.schedule_flush()  # not committed yet: ask the cache (the lock is held: no task)
    assert (len(rec.claims), len(rec.sent)) == (2, 1)
    rec.now[0] += 0.02
    engine.schedule_flush()  # too close to the due time: ask again
    assert (len(rec.claims), len(rec.sent)) == (3, 1)
    engine.flush()  # the task ran: it drops the lock
    rec.now[0] += 0.01
    engine.schedule_flush()
    assert (len(rec.claims), len(rec.sent)) == (4, 2)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")
def test_another_process_flush_is_known_from_the_lock(queued_flush):
    """On Redis the lock's value tells a process that did not queue the task
    when it is due: its later marks before then take no round trip."""
    from django.core.cache import cache

    rec = queued_flush
    due = rec.now[0] + 1
    assert cache.add_or_get(engine.FLUSH_LOCK, int(due * 1000), 5) == (True, None)  # another process's
    engine.schedule_flush()
    assert (len(rec.claims), len(rec.sent)) == (1, 0) and engine._flush_known["due"] == due
    rec.now[0] += 0.5
    engine.schedule_flush()
    assert (len(rec.claims), len(rec.sent)) == (1, 0)


def test_merged_conversation_contribution_is_withdrawn(play, channels, personas):
    a = play.inbound(channels.email, "kim@x.org", "2026-03-02 09:00").message.conversation
    b = play.inbound(channels.email, "kim@x.org", "2026-03-02 10:00", new_conversation=True).message.conversation
    assert a.pk != b.pk
    m = report.build(Selection(a.created_at.date(), a.created_at.date()))[0]
    assert m["volume"]["created"] == 2
    services.merge_conversations(survivor=a, merged=b)
    m = report.build(Selection(a.created_at.date(), a.created_at.date()))[0]
    assert m["volume"]["created"] == 1
    before = engine.rollup_snapshot()
    engine.recompute_all()
    assert engine.rollup_snapshot() == before
