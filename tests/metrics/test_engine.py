"""Engine mechanics: batching of events, FCR provisional -> final, merged-away conversations."""
from __future__ import annotations

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
