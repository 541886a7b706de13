"""KPI.md edge cases, hand-computed."""
from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from customers.services import customer_merge
from metrics import report
from metrics.kpis.base import Selection
from metrics.models import BusinessHours, ConversationFact, SlaPolicy

from .conftest import T

pytestmark = pytest.mark.django_db(transaction=True)


def whole(start="2026-03-01", end="2026-03-31", **kw):
    return report.build(Selection(date.fromisoformat(start), date.fromisoformat(end), **kw))[0]


def test_no_reply_yet(play, channels):
    play.inbound(channels.chat, "kim", "2026-03-02 09:00")
    m = whole()
    assert m["first_response_time"] == {"count": 0, "mean": None, "median": None, "p90": None}
    assert m["volume"] == {"created": 1, "resolved": 0, "reopened": 0}
    assert m["fcr_rate"] is None and m["one_touch_rate"] is None  # nothing to measure: null, not 0
    assert ConversationFact.objects.get().awaiting_since == T("2026-03-02 09:00")
    from metrics.kpis.response_time import awaiting_reply

    assert awaiting_reply() == 1  # the unanswered turn is "awaiting reply", not averaged


def test_outbound_first_has_no_frt(play, channels, personas):
    play.inbound(channels.chat, "kim", "2026-03-02 09:00")
    # an agent-started conversation: build it through the importer path (outbound first)
    from metrics import importer

    payload = {"customers": [{"external_id": "c9", "identities": [{"kind": "email", "value": "z@x.org"}]}],
               "agents": [{"email": "ana@example.com"}],
               "conversations": [{"external_id": "o1", "customer": "c9", "messages": [
                   {"external_id": "a", "direction": "outbound", "channel": "email", "author": "ana@example.com",
                    "body": "Your order shipped", "created_at": "2026-03-03T09:00:00+00:00"},
                   {"external_id": "b", "direction": "inbound", "channel": "email", "body": "thanks, but...",
                    "created_at": "2026-03-03T10:00:00+00:00"},
                   {"external_id": "c", "direction": "outbound", "channel": "email", "author": "ana@example.com",
                    "body": "ok", "created_at": "2026-03-03T10:15:00+00:00"}]}]}
    import json

    personas.ana.email = "ana@example.com"
    personas.ana.save()
    res = importer.run(json.dumps(payload).encode())
    assert res.errors == []
    m = whole()
    assert m["first_response_time"]["count"] == 0  # outbound-first: no FRT; kim's chat has no reply
    assert m["response_time"]["count"] == 1 and m["response_time"]["mean"] == 900.0
    assert m["volume"]["created"] == 2


def test_reopen_counts_once_on_final_resolution(play, channels, personas):
    conv = play.inbound(channels.chat, "kim", "2026-03-02 09:00").message.conversation
    play.reply(conv, personas.ana, "2026-03-02 09:10")
    play.resolve(conv, "2026-03-02 10:00")
    m = whole()
    assert m["volume"]["resolved"] == 1 and m["resolution_time"]["mean"] == 3600.0
    assert m["one_touch_rate"] == 1.0
    # the customer writes again within the reopen window: a reopen, the resolution drops out
    play.inbound(channels.chat, "kim", "2026-03-03 09:00")
    m = whole()
    assert m["volume"] == {"created": 1, "resolved": 0, "reopened": 1}
    assert m["resolution_time"]["count"] == 0
    play.reply(conv, personas.ana, "2026-03-03 09:30")
    play.resolve(conv, "2026-03-03 12:00")
    m = whole()
    assert m["volume"] == {"created": 1, "resolved": 1, "reopened": 1}
    assert m["resolution_time"]["mean"] == 27 * 3600.0  # 03-02 09:00 -> 03-03 12:00
    assert m["one_touch_rate"] == 0.0 and m["fcr_rate"] == 0.0  # reopened
    assert m["contacts_per_resolution"] == 2.0  # next-day message is a second contact
    # dated on the final resolution
    assert whole("2026-03-02", "2026-03-02")["volume"]["resolved"] == 0
    assert whole("2026-03-03", "2026-03-03")["volume"]["resolved"] == 1


def test_channel_switch(play, channels, personas):
    conv = play.inbound(channels.whatsapp, "+15551230001", "2026-03-02 09:00").message.conversation
    # same person on SMS (phone identity) 5 minutes later joins the open conversation
    play.inbound(channels.sms, "+15551230001", "2026-03-02 09:05")
    play.reply(conv, personas.ana, "2026-03-02 09:20")
    play.resolve(conv, "2026-03-02 09:30")
    m = whole()
    assert m["channel_switches"] == 1.0
    assert m["contacts_per_resolution"] == 2.0  # a different channel starts a new contact
    assert m["fcr_rate"] == 0.0


def test_message_imported_out_of_order(play, channels, personas):
    conv = play.inbound(channels.email, "kim@x.org", "2026-03-02 09:30").message.conversation
    play.reply(conv, personas.ana, "2026-03-02 10:00")
    # an earlier inbound message arrives late (mail delay) into the same conversation
    play.inbound(channels.email, "kim@x.org", "2026-03-02 09:00", reply_token=conv.reply_token)
    m = whole()
    assert m["first_response_time"]["mean"] == 3600.0  # from 09:00, the true first message


def test_merge_of_two_customers_affects_fcr(play, channels, personas):
    a = play.inbound(channels.email, "kim@x.org", "2026-03-02 09:00").message.conversation
    play.reply(a, personas.ana, "2026-03-02 09:10")
    play.resolve(a, "2026-03-02 09:20")
    b = play.inbound(channels.whatsapp, "+15551230009", "2026-03-04 09:00").message.conversation
    assert whole()["fcr_rate"] == 1.0 and whole()["repeat_contact_rate"] == 0.0
    # the WhatsApp writer is kim: merging makes b a repeat contact of a
    customer_merge(survivor=a.customer, merged=b.customer)
    m = whole()
    assert m["fcr_rate"] == 0.0
    assert m["repeat_contact_rate"] == 1.0


def test_period_boundary_midnight_in_account_time_zone(play, channels, personas, settings):
    settings.TIME_ZONE = "America/New_York"
    # 2026-03-03 03:30 UTC is 2026-03-02 22:30 in New York (EST, UTC-5)
    play.inbound(channels.chat, "kim", "2026-03-03 03:30")
    assert whole("2026-03-02", "2026-03-02")["volume"]["created"] == 1
    assert whole("2026-03-03", "2026-03-03")["volume"]["created"] == 0


def test_daylight_saving_change(play, channels, personas, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    # DST starts 2026-03-29 02:00 -> 03:00 local. 00:30 UTC = 01:30 CET on 03-29; 22:30 UTC on 03-29 = 00:30 CEST 03-30
    conv = play.inbound(channels.chat, "kim", "2026-03-29 00:30")
    play.reply(conv.message.conversation, personas.ana, "2026-03-29 22:30")
    rows = report.build(Selection(date(2026, 3, 28), date(2026, 3, 31), group_by="day"))
    by_day = {r["day"]: r for r in rows}
    assert by_day["2026-03-29"]["volume"]["created"] == 1
    assert by_day["2026-03-30"]["first_response_time"]["count"] == 1
    assert by_day["2026-03-30"]["first_response_time"]["mean"] == 22 * 3600.0  # real elapsed seconds
    # business hours across the change: 09:00-17:00 every day in Berlin
    BusinessHours.objects.create(team=personas.billing, timezone="Europe/Berlin",
                                 schedule={str(d): [["09:00", "17:00"]] for d in range(7)})
    from metrics import engine

    engine.recompute_all()
    m = whole()
    assert m["first_response_time_business"]["mean"] == 8 * 3600.0  # only Sunday 09:00-17:00 counts


def test_sla_attainment_and_due_times(play, channels, personas):
    from metrics.sla import due_times

    SlaPolicy.objects.create(priority="normal", first_response_seconds=1800, resolution_seconds=4 * 3600)
    a = play.inbound(channels.chat, "kim", "2026-03-02 09:00").message.conversation
    play.reply(a, personas.ana, "2026-03-02 09:20")
    play.resolve(a, "2026-03-02 10:00")
    b = play.inbound(channels.email, "lee@x.org", "2026-03-02 09:00").message.conversation
    play.reply(b, personas.ana, "2026-03-02 10:00")  # 1 h > 30 min target
    play.resolve(b, "2026-03-02 11:00")
    assert whole()["sla_attainment"] == 0.5
    c = play.inbound(channels.email, "new@x.org", timezone.now().replace(microsecond=0).isoformat()).message.conversation
    c.refresh_from_db()
    timers = due_times(c)
    assert timers["first_response_due"] == c.first_inbound_at + timezone.timedelta(seconds=1800)
    assert not timers["first_response_breached"]
    assert due_times(c, now=c.first_inbound_at + timezone.timedelta(hours=1))["first_response_breached"]
