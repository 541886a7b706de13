"""The import format (API.md) through /api/v1/imports/ and the command."""
from __future__ import annotations

import json
from datetime import date

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from conversations.models import Conversation, Message
from helpdesk.models import ApiToken, User
from metrics import engine, report
from metrics.kpis.base import Selection

pytestmark = pytest.mark.django_db(transaction=True)

DOC = {
    "agents": [{"email": "ana@example.com", "name": "Ana", "team": "Billing"},
               {"email": "newbie@example.com", "name": "Nina", "team": "Imported team"}],
    "customers": [{"external_id": "c1", "name": "Kim Lee",
                   "identities": [{"kind": "email", "value": "kim@example.org"},
                                  {"kind": "phone", "value": "+15551230001"}]}],
    "conversations": [{
        "external_id": "t1", "customer": "c1", "subject": "Card not working", "team": "Billing", "priority": "normal",
        "messages": [
            {"external_id": "m1", "direction": "inbound", "channel": "chat", "body": "My card is declined",
             "created_at": "2026-03-02T09:00:00+00:00"},
            {"external_id": "m2", "direction": "outbound", "channel": "chat", "author": "ana@example.com",
             "automated": False, "body": "Let me check", "created_at": "2026-03-02T09:04:00+00:00"},
            {"external_id": "m3", "direction": "note", "author": "ana@example.com", "body": "Escalate to risk",
             "created_at": "2026-03-02T09:05:00+00:00"},
            {"external_id": "m4", "direction": "inbound", "channel": "sms", "body": "Still broken",
             "created_at": "2026-03-03T08:00:00+00:00"},
            {"external_id": "m5", "direction": "outbound", "channel": "sms", "author": "ana@example.com",
             "body": "Fixed now", "created_at": "2026-03-03T08:30:00+00:00"}],
        "events": [
            {"type": "assigned", "agent": "ana@example.com", "at": "2026-03-02T09:01:00+00:00"},
            {"type": "resolved", "at": "2026-03-02T10:00:00+00:00"},
            {"type": "resolved", "at": "2026-03-03T09:00:00+00:00"}]}],
    "surveys": [{"external_id": "s1", "conversation": "t1", "kind": "csat", "channel": "email",
                 "invited_at": "2026-03-03T09:00:05+00:00", "score": 5, "comment": "Quick!",
                 "answered_at": "2026-03-03T11:00:00+00:00"},
                {"external_id": "s2", "conversation": "t1", "kind": "nps", "channel": "email",
                 "invited_at": "2026-03-03T09:00:05+00:00"}],
    "orders": [{"external_id": "o1", "customer": "c1", "amount": "49.90", "currency": "USD",
                "placed_at": "2026-03-20T12:00:00+00:00"}],
}


def kpis():
    return report.build(Selection(date(2026, 3, 1), date(2026, 3, 31)))[0]


@pytest.fixture
def manager_client(personas):
    client = APIClient()
    _tok, raw = ApiToken.issue(personas.manager)
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def test_import_api_json_idempotent(manager_client, personas):
    body = json.dumps(DOC)
    r = manager_client.post("/api/v1/imports/", body, content_type="application/json")
    assert r.status_code == 200, r.content
    assert r.json()["created"]["conversation"] == 1 and r.json()["messages"] == 5
    conv = Conversation.objects.get(external_id="t1")
    assert conv.status == "resolved" and conv.assignee.email == "ana@example.com"
    assert not User.objects.get(email="newbie@example.com").is_active  # imported agents cannot log in
    assert User.objects.get(email="newbie@example.com").teams.get().name == "Imported team"
    m = kpis()
    assert m["first_response_time"]["mean"] == 240.0
    assert m["volume"] == {"created": 1, "resolved": 1, "reopened": 1}  # inbound after resolution reopens
    assert m["resolution_time"]["mean"] == 24 * 3600.0
    assert m["channel_switches"] == 1.0
    assert m["csat"]["percent"] == 100.0 and m["csat"]["response_rate"] == 1.0
    assert m["nps"]["responses"] == 0 and m["nps"]["response_rate"] == 0.0  # unanswered invitation counts
    assert m["cltv"] == "49.90" and m["retention"]["retained"] == 1
    before = (Message.objects.count(), Conversation.objects.count())
    r2 = manager_client.post("/api/v1/imports/", body, content_type="application/json")
    assert r2.json()["created"]["conversation"] == 0 and r2.json()["unchanged"]["conversation"] == 1
    assert (Message.objects.count(), Conversation.objects.count()) == before
    assert kpis() == m


def test_import_same_as_live(manager_client, personas, channels):
    """The same scenario played live through the services gives the same KPIs as imported."""
    from datetime import datetime

    from conversations import services
    from conversations.inbound import InboundMessage

    lines = [
        {"type": "agent", "email": "ana@example.com", "team": "Billing"},
        {"type": "customer", "external_id": "k", "identities": [{"kind": "whatsapp", "value": "+15550001111"}]},
        {"type": "conversation", "external_id": "x", "customer": "k", "messages": [
            {"external_id": "1", "direction": "inbound", "channel": "whatsapp", "body": "a",
             "created_at": "2026-03-05T10:00:00+00:00"},
            {"external_id": "2", "direction": "outbound", "channel": "whatsapp", "author": "ana@example.com",
             "body": "b", "created_at": "2026-03-05T10:07:00+00:00"},
            {"external_id": "3", "direction": "inbound", "channel": "whatsapp", "body": "c",
             "created_at": "2026-03-05T11:00:00+00:00"},
            {"external_id": "4", "direction": "outbound", "channel": "whatsapp", "author": "ana@example.com",
             "body": "d", "created_at": "2026-03-05T11:30:00+00:00"}],
         "events": [{"type": "resolved", "at": "2026-03-05T12:00:00+00:00"}]},
    ]
    body = "\n".join(json.dumps(x) for x in lines)
    r = manager_client.post("/api/v1/imports/", body, content_type="application/x-ndjson")
    assert r.status_code == 200, r.content
    imported = kpis()
    # wipe and play live
    Conversation.objects.all().delete()
    engine.recompute_all()
    assert kpis()["volume"]["created"] == 0
    ana = User.objects.get(email="ana@example.com")
    t = lambda s: datetime.fromisoformat(f"2026-03-05T{s}:00+00:00")  # noqa: E731
    res = services.ingest(InboundMessage(channel=channels.whatsapp, identities=[("whatsapp", "+15550001111")],
                                         text="a", external_id="l1", created_at=t("10:00")))
    conv = res.message.conversation
    services.reply(conversation=conv, author=ana, body="b", at=t("10:07"), deliver=False)
    services.ingest(InboundMessage(channel=channels.whatsapp, identities=[("whatsapp", "+15550001111")],
                                   text="c", external_id="l2", created_at=t("11:00")))
    services.reply(conversation=conv, author=ana, body="d", at=t("11:30"), deliver=False)
    services.resolve_conversation(conversation=conv, at=t("12:00"))
    live = kpis()
    assert live == imported
    assert live["first_response_time"]["mean"] == 420.0 and live["response_time"]["mean"] == (420 + 1800) / 2


def test_import_errors_reported_with_position(manager_client, personas):
    lines = [
        json.dumps({"type": "customer", "external_id": "ok", "identities": [{"kind": "email", "value": "a@b.org"}]}),
        json.dumps({"type": "customer", "external_id": "bad", "identities": [{"kind": "email", "value": "nope"}]}),
        "{not json",
        json.dumps({"type": "conversation", "external_id": "t", "customer": "missing",
                    "messages": [{"direction": "inbound", "channel": "chat", "body": "x",
                                  "created_at": "2026-03-01T10:00:00+00:00"}]}),
        json.dumps({"type": "order", "external_id": "o", "customer": "ok", "amount": "abc",
                    "placed_at": "2026-03-01T10:00:00+00:00"}),
    ]
    r = manager_client.post("/api/v1/imports/", "\n".join(lines), content_type="application/x-ndjson")
    assert r.status_code == 207
    data = r.json()
    assert data["created"]["customer"] == 1
    assert [e["position"] for e in data["errors"]] == ["line 2", "line 3", "line 4", "line 5"]
    assert "customer" in data["errors"][2]["errors"]


def test_import_permissions_content_type_and_idempotency_key(personas, manager_client):
    agent = APIClient()
    agent.force_authenticate(personas.ana)
    assert agent.post("/api/v1/imports/", "{}", content_type="application/json").status_code == 403
    assert agent.get("/api/v1/metrics/").status_code == 403
    r = manager_client.post("/api/v1/imports/", "x", content_type="text/plain")
    assert r.status_code == 415
    body = json.dumps({"customers": [{"external_id": "z", "identities": []}]})
    r1 = manager_client.post("/api/v1/imports/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1")
    r2 = manager_client.post("/api/v1/imports/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1")
    assert r1.json() == r2.json() and r2["Idempotent-Replayed"] == "true"
    assert r1.json()["created"]["customer"] == 1


def test_import_413(manager_client, settings, monkeypatch):
    from metrics.api import views

    monkeypatch.setattr(views, "IMPORT_MAX_BYTES", 10)
    r = manager_client.post("/api/v1/imports/", json.dumps(DOC), content_type="application/json")
    assert r.status_code == 413


def test_import_command(tmp_path, personas):
    path = tmp_path / "h.json"
    path.write_text(json.dumps(DOC))
    call_command("import_history", str(path), verbosity=0)
    call_command("import_history", str(path), verbosity=0)
    assert Conversation.objects.filter(external_id="t1").count() == 1
    before = engine.rollup_snapshot()
    call_command("recompute_metrics", verbosity=0)
    assert engine.rollup_snapshot() == before


def test_metrics_api_shape_and_csv(manager_client, personas):
    manager_client.post("/api/v1/imports/", json.dumps(DOC), content_type="application/json")
    r = manager_client.get("/api/v1/metrics/?from=2026-03-01&to=2026-03-31&group_by=agent")
    assert r.status_code == 200
    rows = r.json()
    assert {row["agent"] for row in rows} == {"ana@example.com", None}  # created volume has no agent
    keys = {"first_response_time", "response_time", "resolution_time", "fcr_rate", "one_touch_rate",
            "repeat_contact_rate", "contacts_per_resolution", "channel_switches", "csat", "nps", "ces", "cltv",
            "retention_rate", "sla_attainment", "volume"}
    assert keys <= set(rows[0])
    r = manager_client.get("/api/v1/metrics/?from=2026-03-01&to=2026-03-31&group_by=team")
    assert r.json()[0]["team"] == "Billing"
    whole = manager_client.get("/api/v1/metrics/?from=2026-03-01&to=2026-03-31").json()
    assert isinstance(whole, dict) and whole["volume"]["created"] == 1
    csv1 = manager_client.get("/api/v1/metrics.csv?from=2026-03-01&to=2026-03-31&group_by=channel")
    csv2 = manager_client.get("/api/v1/metrics/?from=2026-03-01&to=2026-03-31&group_by=channel&format=csv")
    assert csv1.status_code == 200 and csv1["Content-Type"].startswith("text/csv")
    assert csv1.content == csv2.content
    assert csv1.content.decode().splitlines()[0].startswith("channel,first_response_time.count")
    assert manager_client.get("/api/v1/metrics/?group_by=nope").status_code == 400
