"""Property: incremental rollups equal a full recompute on random event sequences."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_tz

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conversations import services
from conversations.inbound import InboundMessage
from metrics import engine, histograms

BASE = datetime(2026, 3, 1, 8, 0, tzinfo=dt_tz.utc)

step = st.tuples(
    st.sampled_from(["in", "in", "reply", "auto", "note", "resolve", "reopen", "assign"]),
    st.integers(min_value=0, max_value=2),  # customer
    st.integers(min_value=1, max_value=60 * 30),  # minutes since previous step
    st.sampled_from(["chat", "whatsapp", "email"]),
)


@pytest.mark.django_db(transaction=True)
@hsettings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(step, min_size=1, max_size=14))
def test_incremental_equals_full(steps, channels, personas, django_capture_on_commit_callbacks):
    from conversations.models import Conversation, ConversationEvent, Message
    from customers.models import Customer

    from metrics.models import (ConversationFact, DailyRollup, ResponseFact, SurveyDay, SurveyInvitation,
                                ValueHistogram, WeeklyRollup)

    # hypothesis reuses the function-scoped db: start each example clean
    for model in (SurveyInvitation, ConversationEvent, Message, DailyRollup, WeeklyRollup, ResponseFact,
                  ConversationFact, ValueHistogram, SurveyDay):
        model.objects.all().delete()
    Conversation.objects.all().delete()
    Customer.objects.all().delete()
    at = BASE
    ch = {"chat": channels.chat, "whatsapp": channels.whatsapp, "email": channels.email}
    who = {"chat": "visitor-{}", "whatsapp": "+1555123000{}", "email": "c{}@x.org"}
    n = 0
    for action, cust, minutes, kind in steps:
        at += timedelta(minutes=minutes)
        conv = Conversation.objects.filter(customer__identities__value=who[kind].format(cust)).order_by("-pk").first()
        if action == "in" or conv is None:
            n += 1
            services.ingest(InboundMessage(channel=ch[kind], identities=[({"chat": "chat", "whatsapp": "whatsapp",
                                                                          "email": "email"}[kind],
                                                                         who[kind].format(cust))],
                                           text="x", external_id=f"p{n}", created_at=at))
            continue
        if action == "reply":
            services.reply(conversation=conv, author=personas.ana, body="r", at=at, deliver=False)
        elif action == "auto":
            services.reply(conversation=conv, author=None, automated=True, body="a", at=at, deliver=False)
        elif action == "note":
            services.add_note(conversation=conv, author=personas.bob, body="n", at=at)
        elif action == "resolve":
            services.resolve_conversation(conversation=conv, at=at)
        elif action == "reopen":
            services.reopen(conversation=conv, at=at)
        elif action == "assign":
            services.assign(conversation=conv, agent=personas.bob, team=personas.tech, set_team=True, at=at)
    incremental = engine.rollup_snapshot()
    counted = histograms.snapshot()
    facts = {f.conversation_id: (f.frt_seconds, f.resolution_seconds, f.contacts, f.fcr, f.contrib)
             for f in ConversationFact.objects.all()}
    engine.recompute_all()
    assert engine.rollup_snapshot() == incremental
    assert histograms.snapshot() == counted
    assert {f.conversation_id: (f.frt_seconds, f.resolution_seconds, f.contacts, f.fcr, f.contrib)
            for f in ConversationFact.objects.all()} == facts
