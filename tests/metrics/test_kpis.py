"""Hand-computed scenarios for every KPI of KPI.md."""
from __future__ import annotations

from datetime import date

import pytest

from metrics import report
from metrics.kpis.base import Selection

from .conftest import T


def run(sel):
    return report.build(sel)


def whole(start="2026-03-01", end="2026-03-31", **kw):
    return report.build(Selection(date.fromisoformat(start), date.fromisoformat(end), **kw))[0]


@pytest.mark.django_db(transaction=True)
def test_basic_frt_response_resolution(play, channels, personas):
    # given: kim writes at 09:00 and 09:10 (one turn), ana replies 09:30, kim 10:00, ana 10:20, resolved 11:00
    r = play.inbound(channels.chat, "kim", "2026-03-02 09:00")
    conv = r.message.conversation
    play.inbound(channels.chat, "kim", "2026-03-02 09:10")
    play.reply(conv, personas.ana, "2026-03-02 09:30")
    play.inbound(channels.chat, "kim", "2026-03-02 10:00")
    play.reply(conv, personas.ana, "2026-03-02 10:20")
    play.resolve(conv, "2026-03-02 11:00")
    # then
    m = whole()
    assert m["first_response_time"] == {"count": 1, "mean": 1800.0, "median": 1800.0, "p90": 1800.0}
    # turns: 09:00->09:30 = 1800, 10:00->10:20 = 1200
    assert m["response_time"]["count"] == 2
    assert m["response_time"]["mean"] == 1500.0
    assert m["response_time"]["median"] == 1500.0
    assert m["response_time"]["p90"] == pytest.approx(1200 + 0.9 * 600)
    assert m["resolution_time"]["mean"] == 7200.0
    assert m["volume"] == {"created": 1, "resolved": 1, "reopened": 0}
    # contacts: 09:00 starts one; 09:10 within 30 min; 10:00 is 30 min after 09:30 reply (not > gap) -> 1
    assert m["contacts_per_resolution"] == 1.0
    assert m["one_touch_rate"] == 0.0  # two public replies
    assert m["channel_switches"] == 0.0
    # FCR: one contact, never reopened, no other conversation; window (7 d) closed long ago -> final
    assert m["fcr_rate"] == 1.0
    assert m["fcr_provisional"]["count"] == 0
    assert m["repeat_contact_rate"] == 0.0


@pytest.mark.django_db(transaction=True)
def test_groupings_and_filters(play, channels, personas):
    # given: a chat answered by ana (billing) and an email answered by bob after a move to Tech
    from conversations import services

    a = play.inbound(channels.chat, "kim", "2026-03-02 09:00").message.conversation
    play.reply(a, personas.ana, "2026-03-02 09:10")
    play.resolve(a, "2026-03-02 09:30")
    b = play.inbound(channels.email, "lee@x.org", "2026-03-09 09:00").message.conversation
    services.assign(conversation=b, agent=personas.bob, team=personas.tech, set_team=True, at=T("2026-03-09 09:05"))
    play.reply(b, personas.bob, "2026-03-09 09:40")
    play.resolve(b, "2026-03-09 10:00")
    # by channel: FRT grouped by the channel of the first inbound message
    rows = {r["channel"]: r for r in run(Selection(date(2026, 3, 1), date(2026, 3, 31), group_by="channel"))}
    assert rows["chat"]["first_response_time"]["mean"] == 600.0
    assert rows["email"]["first_response_time"]["mean"] == 2400.0
    # by team: team at reply / at resolution
    rows = {r["team"]: r for r in run(Selection(date(2026, 3, 1), date(2026, 3, 31), group_by="team"))}
    assert rows["Tech"]["first_response_time"]["count"] == 1 and rows["Tech"]["volume"]["resolved"] == 1
    assert rows["Billing"]["first_response_time"]["mean"] == 600.0
    # by week (Monday) and month
    rows = {r["week"]: r for r in run(Selection(date(2026, 3, 1), date(2026, 3, 31), group_by="week"))}
    assert rows["2026-03-02"]["volume"]["created"] == 1 and rows["2026-03-09"]["volume"]["created"] == 1
    rows = run(Selection(date(2026, 3, 1), date(2026, 3, 31), group_by="month"))
    assert [r["month"] for r in rows] == ["2026-03-01"] and rows[0]["volume"]["resolved"] == 2
    # filters
    only_bob = run(Selection(date(2026, 3, 1), date(2026, 3, 31), agent_id=personas.bob.pk))[0]
    assert only_bob["first_response_time"]["mean"] == 2400.0
    only_chat = run(Selection(date(2026, 3, 1), date(2026, 3, 31), channel="chat"))[0]
    assert only_chat["volume"] == {"created": 1, "resolved": 1, "reopened": 0}
    only_billing = run(Selection(date(2026, 3, 1), date(2026, 3, 31), team_id=personas.billing.pk))[0]
    assert only_billing["resolution_time"]["mean"] == 1800.0
    # previous-period comparison: the same length just before
    sel = Selection(date(2026, 3, 9), date(2026, 3, 15))
    assert (sel.previous().start, sel.previous().end) == (date(2026, 3, 2), date(2026, 3, 8))
    assert run(sel.previous())[0]["volume"]["created"] == 1
