"""The PostgreSQL bulk recompute (COPY, dropped and rebuilt indexes, forked workers) writes
exactly the rows of the generic ORM path."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations import services
from metrics import engine, histograms, survey_rollup
from metrics.models import (ConversationFact, CustomerLinkDay, DailyRollup, ResponseFact, SlaPolicy, SurveyDay,
                            WeeklyRollup)

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL bulk path")]


def _scenario(play, channels, personas):
    """Varied conversations: replies, an automated reply, a reopen, a channel switch,
    an unanswered turn, a repeat contact, an SLA policy."""
    SlaPolicy.objects.create(priority="normal", first_response_seconds=3600, resolution_seconds=86400)
    now = timezone.now().replace(microsecond=0) - timedelta(days=3)

    def at(minutes):
        return (now + timedelta(minutes=minutes)).isoformat()

    a = play.inbound(channels.chat, "kim", at(0)).message.conversation
    play.reply(a, personas.ana, at(7))
    play.inbound(channels.whatsapp, "+15551230001", at(50))
    play.reply(a, personas.ana, at(61), automated=True)
    play.reply(a, personas.ana, at(95))
    play.resolve(a, at(120))
    play.reopen(a, at(130))
    play.resolve(a, at(180))
    b = play.inbound(channels.email, "lee@x.org", at(10)).message.conversation
    services.assign(conversation=b, agent=personas.bob, team=personas.tech, set_team=True,
                    at=now + timedelta(minutes=11))
    play.reply(b, personas.bob, at(40))
    play.resolve(b, at(45))
    play.inbound(channels.email, "lee@x.org", at(60 * 30), new_conversation=True)  # repeat contact, unanswered
    c = play.inbound(channels.sms, "+15550001111", at(5)).message.conversation
    play.reply(c, personas.ana, at(9))
    play.reply(c, personas.ana, at(12))
    play.resolve(c, at(15))
    return [a, b, c]


def _snapshot():
    facts = {}
    for f in ConversationFact.objects.values():
        f.pop("computed_at")
        facts[f["conversation_id"]] = f
    responses = sorted((r["conversation_id"], r["at"], r["day"], r["seconds"], r["channel"], r["agent_id"],
                        r["team_id"]) for r in ResponseFact.objects.values())
    from metrics import link_rollup

    return (facts, responses, engine.rollup_snapshot(), histograms.snapshot(), link_rollup.snapshot(),
            survey_rollup.snapshot())


def _indexes():
    with connection.cursor() as cur:
        cur.execute("SELECT indexname FROM pg_indexes WHERE tablename IN (%s, %s) ORDER BY 1",
                    [ConversationFact._meta.db_table, ResponseFact._meta.db_table])
        return [r[0] for r in cur.fetchall()]


@pytest.mark.parametrize("workers,chunk", [(1, 10000), (2, 1)])
def test_bulk_path_equals_generic_path(play, channels, personas, workers, chunk, monkeypatch):
    from conversations.models import Conversation

    # both paths choose the histogram splits anew (here even for these few values) and alike
    monkeypatch.setattr(histograms, "SPLIT_MIN_VALUES", 1)
    monkeypatch.setattr(histograms, "SPLIT_QUANTILES", 8)
    from decimal import Decimal

    from customers.models import Order

    convs = _scenario(play, channels, personas)
    # one before the histograms' block epoch (2001-01-01; its four weeks start on 2000-12-04)
    old = play.inbound(channels.email, "old@x.org", "2000-12-30T12:00:00+00:00").message.conversation
    play.reply(old, personas.bob, "2000-12-30T12:09:00+00:00")
    play.resolve(old, "2000-12-30T13:00:00+00:00")
    for n, conv in enumerate(convs):  # orders around the resolutions: retention, lifetime value, tails
        conv.refresh_from_db()
        for days in (-3, 2, 20):
            Order.objects.create(customer_id=conv.customer_id, external_id=f"o{n}{days}", amount=Decimal("12.34"),
                                 placed_at=conv.created_at + timedelta(days=days + n))
    total = Conversation.objects.count()
    indexes = _indexes()
    now = timezone.now()
    assert engine._recompute_all_generic(None, 5000, now) == total
    generic = _snapshot()
    splits = histograms.stored_splits()
    assert splits.get("rt") and splits.get("frt")
    assert len(generic[0]) == total and generic[1] and generic[2] and generic[3]
    assert ("rt", "all", histograms.BLOCK, "2000-12-04") in {k[:4] for k in generic[3]}
    assert any(key[3] == 4 for key in generic[4]) and any(f["cv_retained"] for f in generic[0].values())
    assert any(f["reopens"] for f in generic[0].values()) and any(f["fcr"] is not None for f in generic[0].values())
    DailyRollup.objects.all().delete()
    WeeklyRollup.objects.all().delete()
    SurveyDay.objects.all().delete()
    CustomerLinkDay.objects.all().delete()  # the bulk path writes them anew
    assert engine._recompute_all_pg(None, now, chunk=chunk, workers=workers) == total
    assert _snapshot() == generic and histograms.stored_splits() == splits
    assert _indexes() == indexes  # dropped for the load and rebuilt


def test_copy_text_escapes():
    assert engine._copy_text("a\tb\\c\nd") == "a\\tb\\\\c\\nd"
    assert engine._copy_text(None) == "\\N" and engine._copy_text(True) == "t" and engine._copy_text(1.5) == "1.5"


def test_failed_recompute_leaves_no_rollup_child(play, channels, personas, monkeypatch):
    """A failure after the customer links' rollup was forked stops its child (and rolls back)."""
    import multiprocessing

    _scenario(play, channels, personas)

    def broken(*_args, **_kwargs):
        raise RuntimeError("histograms failed")

    monkeypatch.setattr(histograms, "write_counts", broken)
    try:
        engine._recompute_all_pg(None, timezone.now(), workers=1)
    except RuntimeError as exc:
        assert str(exc) == "histograms failed"
        # checked while the traceback still holds the recompute's frame (and so its pool)
        assert multiprocessing.active_children() == []
    else:
        pytest.fail("the recompute did not fail")


def test_bulk_recompute_under_the_debug_cursor(play, channels, personas):
    """With DEBUG on, Django wraps cursors in its debug cursor, whose copy_expert takes the size
    positionally only: the COPYs of the facts, rollups and link rollup go through it."""
    from django.db import connection

    from conversations.models import Conversation
    from metrics.models import CustomerLinkDay, DailyRollup

    _scenario(play, channels, personas)
    connection.force_debug_cursor = True
    try:
        assert engine._recompute_all_pg(None, timezone.now(), workers=1) == Conversation.objects.count()
        assert any(q["sql"].startswith("COPY") for q in connection.queries)
    finally:
        connection.force_debug_cursor = False
    assert DailyRollup.objects.exists() and CustomerLinkDay.objects.exists()


def test_two_recomputes_in_one_transaction(play, channels, personas):
    """The second finds no leftover of the first (its temporary table of link inputs is dropped at commit)."""
    from django.db import transaction

    _scenario(play, channels, personas)
    with transaction.atomic():
        first = engine._recompute_all_pg(None, timezone.now(), workers=1)
        snapshot = _snapshot()
        assert engine._recompute_all_pg(None, timezone.now(), workers=1) == first
        assert _snapshot() == snapshot


def test_bulk_recompute_writes_the_day_tables_in_day_order(play, channels, personas):
    """A period's rollup rows lie on neighbouring pages: the full recompute writes the daily and
    weekly rollups, the survey days and the customer links' days in day order (in fold order a
    90-day read of the 1 M bench touched 2,600 of the daily rollup's 3,500 pages)."""
    from metrics.models import SurveyInvitation

    now = timezone.now().replace(microsecond=0)
    # conversations are folded in id order; their days are not in that order
    for i, days_ago in enumerate((3, 40, 12, 25, 1, 33, 18, 7, 29)):
        t = now - timedelta(days=days_ago)
        who = personas.ana if i % 2 else personas.bob
        conv = play.inbound(channels.email if i % 3 else channels.chat, f"c{i}@x.org", t.isoformat()).message.conversation
        play.reply(conv, who, (t + timedelta(minutes=9)).isoformat())
        play.resolve(conv, (t + timedelta(hours=1)).isoformat())
        play.inbound(channels.sms, f"+1555000{i:04d}", (t + timedelta(days=2)).isoformat(), new_conversation=True)
        SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, token=f"order{i}",
                                        invited_at=t + timedelta(hours=2), answered_at=t + timedelta(hours=3),
                                        score=4, agent=who)
    engine.recompute_all()
    with connection.cursor() as cur:
        for table, key in ((DailyRollup._meta.db_table, "day"), (WeeklyRollup._meta.db_table, "day"),
                           (SurveyDay._meta.db_table, "span, day"), (CustomerLinkDay._meta.db_table, "dim, day")):
            cur.execute(f"SELECT {key} FROM {table} ORDER BY ctid")
            rows = cur.fetchall()
            assert len({r[-1] for r in rows}) > 3, table
            assert rows == sorted(rows), table  # the survey days: span 1, then the weeks (span 7)
