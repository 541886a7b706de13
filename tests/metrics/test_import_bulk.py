"""The bulk import path (metrics.importer.BulkImporter) against the per-object service path."""
from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta, timezone as dt_tz

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, ConversationEvent, Message
from customers.models import Customer, Identity, Order
from metrics import engine, importer, report
from metrics.kpis.base import Selection
from metrics.models import SurveyInvitation

pytestmark = pytest.mark.django_db(transaction=True)

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=dt_tz.utc)


def at(minutes: float) -> str:
    return (BASE + timedelta(minutes=minutes)).isoformat()


def scenario() -> list[dict]:
    """Every rule the replay copies from the services, in one file."""
    lines = [
        {"type": "agent", "email": "ana@example.com", "team": "Billing"},
        {"type": "agent", "email": "zoe@example.com", "name": "Zoe", "team": "Imported"},
        {"type": "customer", "external_id": "c1", "name": "Kim Lee",
         "identities": [{"kind": "email", "value": "Kim@Example.org"}, {"kind": "phone", "value": "+15551230001"}]},
        {"type": "customer", "external_id": "c2", "name": "No Identity"},
        {"type": "customer", "external_id": "c3", "identities": [{"kind": "whatsapp", "value": "+15551230003"}]},
        # a second customer with c3's number: reported, as by the services
        {"type": "customer", "external_id": "c4", "identities": [{"kind": "phone", "value": "+15551230003"}]},
        {"type": "customer", "external_id": "c1", "name": "again"},  # unchanged
        # inbound first, team changed from the channel's, channel switch, a note, reply, resolve, reopen by the
        # customer within the follow-up window, a repeated inbound external id, resolved twice
        {"type": "conversation", "external_id": "t1", "customer": "c1", "subject": "Card", "team": "Tech",
         "priority": "high", "messages": [
             {"external_id": "m1", "direction": "inbound", "channel": "email", "body": "My card\nis declined",
              "created_at": at(0)},
             {"external_id": "m2", "direction": "outbound", "channel": "email", "author": "ana@example.com",
              "body": "Let me check", "created_at": at(4)},
             {"external_id": "m3", "direction": "note", "author": "zoe@example.com", "body": "tab\there \\ slash",
              "created_at": at(5)},
             {"external_id": "m4", "direction": "inbound", "channel": "sms", "body": "Still broken",
              "created_at": at(60 * 24)},
             {"external_id": "m4", "direction": "inbound", "channel": "sms", "body": "Still broken",
              "created_at": at(60 * 24 + 1)},
             {"external_id": "m5", "direction": "outbound", "channel": "sms", "author": "ana@example.com",
              "body": "Fixed", "created_at": at(60 * 24 + 30)},
             {"direction": "outbound", "channel": "sms", "automated": True, "author": "Bot", "body": "Bye",
              "created_at": at(60 * 24 + 31)}],
         "events": [{"type": "assigned", "agent": "zoe@example.com", "at": at(1)},
                    {"type": "resolved", "at": at(60)},
                    {"type": "resolved", "at": at(61)},
                    {"type": "reopened", "at": at(60 * 24 + 40)},
                    {"type": "resolved", "at": at(60 * 24 + 50)}]},
        # agent-started (outbound first) on chat for a customer without identities; events before the first
        # message are dropped; unassigned; an automated reply only
        {"type": "conversation", "external_id": "t2", "customer": "c2", "messages": [
            {"external_id": "x1", "direction": "outbound", "channel": "chat", "author": "ana@example.com",
             "body": "We noticed", "html": "<p>We <b>noticed</b><script>x()</script></p>", "created_at": at(100)},
            {"external_id": "x2", "direction": "inbound", "channel": "chat", "body": "", "html": "<p>Thanks!</p>",
             "created_at": at(110)}],
         "events": [{"type": "assigned", "agent": "ana@example.com", "at": at(90)},
                    {"type": "unassigned", "at": at(120)},
                    {"type": "reopened", "at": at(121)}]},
        # bot only: no first reply, no subject but a preview
        {"type": "conversation", "external_id": "t3", "customer": "c3", "messages": [
            {"external_id": "y1", "direction": "inbound", "channel": "whatsapp", "body": "  first line  \nsecond",
             "created_at": at(200)},
            {"external_id": "y2", "direction": "outbound", "channel": "whatsapp", "automated": True,
             "author": "Auto", "body": "We got it", "created_at": at(201)}],
         "events": [{"type": "resolved", "at": at(300)}, {"type": "reopened", "at": at(310)},
                    {"type": "resolved", "at": at(320)}]},
        # an inbound message long after resolution cannot be threaded: reported
        {"type": "conversation", "external_id": "t4", "customer": "c3", "messages": [
            {"direction": "inbound", "channel": "whatsapp", "body": "a", "created_at": at(0)},
            {"direction": "inbound", "channel": "whatsapp", "body": "b", "created_at": at(60 * 24 * 40)}],
         "events": [{"type": "resolved", "at": at(10)}]},
        {"type": "conversation", "external_id": "t5", "customer": "nobody", "messages": [
            {"direction": "inbound", "channel": "chat", "body": "a", "created_at": at(0)}]},
        {"type": "conversation", "external_id": "t6", "customer": "c1", "messages": [
            {"direction": "outbound", "channel": "chat", "author": "ghost@example.com", "body": "a",
             "created_at": at(0)}]},
        {"type": "conversation", "external_id": "t1", "customer": "c1", "messages": []},  # unchanged
        {"type": "survey", "external_id": "s1", "conversation": "t1", "kind": "csat", "channel": "email",
         "invited_at": at(60 * 24 + 51), "score": 5, "comment": "  Quick!  ", "answered_at": at(60 * 25)},
        {"type": "survey", "external_id": "s2", "conversation": "t3", "kind": "nps", "invited_at": at(301)},
        {"type": "survey", "external_id": "s3", "conversation": "t1", "kind": "ces", "score": 9,
         "invited_at": at(301)},
        {"type": "survey", "external_id": "s4", "conversation": "t9", "kind": "csat", "invited_at": at(301)},
        {"type": "order", "external_id": "o1", "customer": "c1", "amount": "49.90", "currency": "usd",
         "placed_at": at(60 * 24 * 10)},
        {"type": "order", "external_id": "o2", "customer": "c3", "amount": "10", "placed_at": at(60 * 24 * 3)},
        {"type": "order", "external_id": "o1", "customer": "c1", "amount": "49.90", "currency": "USD",
         "placed_at": at(60 * 24 * 10)},  # the same again: unchanged
        {"type": "order", "external_id": "o3", "customer": "c1", "amount": "abc", "placed_at": at(0)},
    ]
    return lines


def jsonl(lines) -> bytes:
    return "\n".join(json.dumps(x) for x in lines).encode()


def run(lines, **kw):
    return importer.run(io.BufferedReader(io.BytesIO(jsonl(lines))), **kw).as_dict()


def snapshot() -> dict:
    """The imported rows, with database ids replaced by external ids (and times of the import left out)."""
    conv_ext = dict(Conversation.objects.values_list("id", "external_id"))
    cust_ext = dict(Customer.objects.values_list("id", "external_id"))
    inv_ext = dict(SurveyInvitation.objects.values_list("id", "external_id"))
    msg_key = {}
    out = {"conversations": {}, "messages": {}, "events": {}}
    for c in Conversation.objects.order_by("external_id").values():
        ext = c["external_id"]
        for key in ("id", "updated_at", "reply_token"):
            c.pop(key)
        c["customer_id"] = cust_ext[c["customer_id"]]
        out["conversations"][ext] = c
        rows = []
        for i, m in enumerate(Message.objects.filter(conversation__external_id=ext).order_by("created_at", "id")
                              .values()):
            msg_key[m.pop("id")] = i
            m.pop("conversation_id")
            rows.append(m)
        out["messages"][ext] = rows
        events = []
        for e in ConversationEvent.objects.filter(conversation__external_id=ext).order_by("at", "id").values():
            e.pop("id")
            e.pop("conversation_id")
            e["message_id"] = msg_key.get(e["message_id"])
            if "invitation" in e["data"]:
                e["data"]["invitation"] = inv_ext[e["data"]["invitation"]]
            events.append(e)
        out["events"][ext] = events
    out["surveys"] = [{**s, "id": None, "token": None, "conversation_id": conv_ext[s["conversation_id"]],
                       "customer_id": cust_ext[s["customer_id"]]}
                      for s in SurveyInvitation.objects.order_by("external_id").values()]
    out["orders"] = [{**o, "id": None, "created_at": None, "customer_id": cust_ext[o["customer_id"]]}
                     for o in Order.objects.order_by("external_id").values()]
    out["identities"] = sorted((cust_ext[i["customer_id"]], i["kind"], i["value"], i["verified"])
                               for i in Identity.objects.values())
    out["customers"] = [{k: v for k, v in c.items() if k not in ("id", "created_at", "updated_at", "first_seen_at",
                                                                  "last_seen_at")}
                        for c in Customer.objects.order_by("external_id").values()]
    out["rollups"] = engine.rollup_snapshot()
    out["kpis"] = report.build(Selection(date(2026, 3, 1), date(2026, 4, 30)))[0]
    return out


def wipe():
    Conversation.objects.all().delete()
    Customer.objects.all().delete()
    engine.recompute_all()


def test_bulk_writes_the_services_rows(personas, channels):
    lines = scenario()
    service = run(lines, bulk=False)
    by_services = snapshot()
    wipe()
    bulk = run(lines)
    assert bulk["errors"] == service["errors"]
    assert [e["position"] for e in bulk["errors"]] == ["line 6", "line 11", "line 12", "line 13", "line 17",
                                                         "line 18", "line 22"]
    assert bulk["created"] == {**service["created"], "agent": 0}  # the agents exist after the first run
    assert bulk["messages"] == service["messages"] == 10  # the repeated inbound message counts once
    assert snapshot() == by_services
    t1 = Conversation.objects.get(external_id="t1")
    assert (t1.status, t1.team.name, t1.assignee.email, t1.priority) == ("resolved", "Tech", "zoe@example.com", "high")
    assert Message.objects.filter(conversation=t1).count() == 6  # the repeated one is stored once
    assert Message.objects.get(conversation__external_id="t2", direction="outbound").body_html == \
        "<p>We <b>noticed</b></p>"
    kinds = list(t1.events.order_by("at", "id").values_list("kind", flat=True))
    assert kinds[:3] == ["created", "message_in", "team_changed"] and "channel_switched" in kinds
    assert "reopened" in kinds and kinds.count("resolved") == 2


def test_bulk_copy_and_orm_writers_agree(personas, channels):
    if connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    lines = scenario()
    run(lines, use_copy=True)
    by_copy = snapshot()
    wipe()
    run(lines, use_copy=False)
    assert snapshot() == by_copy


def test_reimport_changes_nothing_and_is_cheap(personas, channels):
    lines = scenario()
    run(lines)
    before = snapshot()
    counts = (Message.objects.count(), ConversationEvent.objects.count(), Identity.objects.count())
    with CaptureQueriesContext(connection) as queries:
        again = run(lines)
    assert sum(again["created"].values()) == 0
    assert again["unchanged"]["conversation"] == 4 and again["unchanged"]["customer"] == 4
    assert again["messages"] == 0
    assert snapshot() == before
    assert (Message.objects.count(), ConversationEvent.objects.count(), Identity.objects.count()) == counts
    # set-based lookups: the number of queries does not grow with the file
    bigger = lines + [{"type": "conversation", "external_id": f"z{i}", "customer": "c1", "messages": [
        {"direction": "inbound", "channel": "chat", "body": "x", "created_at": at(i)}]} for i in range(60)]
    run(bigger)
    with CaptureQueriesContext(connection) as queries_bigger:
        run(bigger)
    assert len(queries_bigger) <= len(queries) + 2


def test_failed_batch_is_imported_object_by_object(personas, channels, monkeypatch, caplog):
    """A batch the database refuses (here a NUL byte, which PostgreSQL's text cannot hold) lands object by
    object through the services: the bad object is reported alone, the rest of its batch lands."""
    if connection.vendor != "postgresql":  # SQLite stores NUL: make its writer refuse it the same way
        original = importer._Writer.write

        def write(self, model, rows):
            if any("\x00" in (r.get("body_text") or "") for r in rows):
                raise ValueError("NUL")
            return original(self, model, rows)
        monkeypatch.setattr(importer._Writer, "write", write)
        monkeypatch.setattr(importer, "import_conversation", _refusing_nul(importer.import_conversation))
        monkeypatch.setitem(importer.HANDLERS, "conversation", importer.import_conversation)
    lines = [{"type": "customer", "external_id": "c", "identities": [{"kind": "email", "value": "c@x.org"}]}]
    for i in range(6):
        lines.append({"type": "conversation", "external_id": f"t{i}", "customer": "c", "messages": [
            {"direction": "inbound", "channel": "chat", "body": "bad\x00" if i == 3 else "fine",
             "created_at": at(i * 60 * 24 * 5)}],
            "events": [{"type": "resolved", "at": at(i * 60 * 24 * 5 + 1)}]})
    result = run(lines, batch_objects=3)
    assert [e["position"] for e in result["errors"]] == ["line 5"]
    assert result["created"]["conversation"] == 5 and result["messages"] == 5
    assert "object by object" in caplog.text
    assert set(Conversation.objects.values_list("external_id", flat=True)) == {"t0", "t1", "t2", "t4", "t5"}
    assert engine.rollup_snapshot() == _recomputed()


def _refusing_nul(fn):
    def wrapper(obj, cache):
        if any("\x00" in (m.get("body") or "") for m in obj.get("messages") or []):
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        return fn(obj, cache)
    return wrapper


def _recomputed() -> dict:
    engine.recompute_all()
    return engine.rollup_snapshot()


@pytest.mark.parametrize("fold", ["batch", "end", "auto"])
def test_batches_keep_file_order_and_fold_kpis(personas, channels, fold):
    """References cross batches; a customer's conversations in several batches update it in time order;
    errors come in file order; the KPIs are folded when run() returns, whichever way."""
    lines = [{"type": "customer", "external_id": "c", "identities": [{"kind": "email", "value": "c@x.org"}]},
             {"type": "customer", "external_id": "d"}]
    for i in range(7):
        lines.append({"type": "conversation", "external_id": f"t{i}", "customer": "c" if i % 2 else "d",
                      "messages": [
                          {"direction": "inbound", "channel": ["chat", "email"][i % 2], "body": "q",
                           "created_at": at((6 - i) * 600)},
                          {"direction": "outbound", "channel": "chat", "author": "ana@example.com", "body": "a",
                           "created_at": at((6 - i) * 600 + 5)}],
                      "events": [{"type": "resolved", "at": at((6 - i) * 600 + 10)}]})
        if i == 2:
            lines.append({"type": "order", "external_id": "o", "customer": "nope", "amount": "1",
                          "placed_at": at(0)})
    lines.append({"type": "survey", "external_id": "s", "conversation": "t0", "kind": "csat", "score": 4,
                  "invited_at": at(3700), "answered_at": at(3800)})
    lines.append({"type": "survey", "external_id": "s9", "conversation": "t77", "kind": "csat",
                  "invited_at": at(3700)})
    result = run(lines, batch_objects=2, fold=fold)
    assert [e["position"] for e in result["errors"]] == ["line 6", "line 12"]
    assert result["created"] == {"agent": 0, "customer": 2, "conversation": 7, "survey": 1, "order": 0}
    c = Customer.objects.get(external_id="c")
    # the latest inbound of c is t1's (created first in the file, latest in time), on email
    assert (c.last_inbound_kind, c.last_inbound_at) == ("email", BASE + timedelta(minutes=3000))
    assert c.first_seen_at == BASE + timedelta(minutes=600) and c.last_seen_at == c.last_inbound_at
    d = Customer.objects.get(external_id="d")
    assert d.first_seen_at == BASE and d.last_seen_at == BASE + timedelta(minutes=3600)
    assert Identity.objects.filter(customer=d).get().value == "import:d"
    assert not engine.DirtyConversation.objects.exists()
    snap = engine.rollup_snapshot()
    m = report.build(Selection(date(2026, 3, 1), date(2026, 3, 31)))[0]
    assert m["volume"]["created"] == 7 and m["volume"]["resolved"] == 7
    assert m["first_response_time"]["mean"] == 300.0 and m["csat"]["responses"] == 1
    assert _recomputed() == snap


def test_orders_and_surveys(personas, channels):
    lines = [{"type": "customer", "external_id": "c", "identities": [{"kind": "email", "value": "c@x.org"}]},
             {"type": "conversation", "external_id": "t", "customer": "c", "messages": [
                 {"direction": "inbound", "channel": "chat", "body": "q", "created_at": at(0)}],
              "events": [{"type": "assigned", "agent": "ana@example.com", "at": at(1)},
                         {"type": "resolved", "at": at(10)}]},
             {"type": "survey", "external_id": "s1", "conversation": "t", "kind": "nps", "score": 11,
              "invited_at": at(11)},
             {"type": "survey", "external_id": "s2", "conversation": "t", "kind": "nps", "score": 9,
              "invited_at": at(11), "answered_at": at(20)},
             {"type": "survey", "external_id": "s2", "conversation": "t", "kind": "nps", "score": 1,
              "invited_at": at(11)},
             {"type": "order", "external_id": "o1", "customer": "c", "amount": "5", "placed_at": at(0)},
             {"type": "order", "external_id": "o1", "customer": "c", "amount": "7.5", "placed_at": at(0)}]
    r = run(lines)
    assert [e["position"] for e in r["errors"]] == ["line 3"]
    assert r["created"]["survey"] == 1 and r["unchanged"]["survey"] == 1
    assert r["created"]["order"] == 2  # created, then changed in the same file
    inv = SurveyInvitation.objects.get(external_id="s2")
    assert (inv.score, inv.answered_at, inv.agent.email, inv.channel_kind) == (9, BASE + timedelta(minutes=20),
                                                                               "ana@example.com", "chat")
    assert list(ConversationEvent.objects.filter(kind__in=["survey_sent", "survey_answered"])
                .values_list("kind", "data__score")) == [("survey_sent", None), ("survey_answered", 9)]
    assert str(Order.objects.get(external_id="o1").amount) == "7.50"
    # a later file changes the order (the shop's update) and leaves the rest
    r = run([lines[0], {"type": "order", "external_id": "o1", "customer": "c", "amount": "8", "placed_at": at(0)},
             lines[6]])
    assert r["created"]["order"] == 2 and r["unchanged"]["customer"] == 1
    assert str(Order.objects.get(external_id="o1").amount) == "7.50" and Order.objects.count() == 1
    m = report.build(Selection(date(2026, 3, 1), date(2026, 3, 31)))[0]
    assert m["nps"]["responses"] == 1 and m["nps"]["promoters"] == 1 and m["cltv"] == "7.50"


def test_import_is_silent(personas, channels, settings, django_capture_on_commit_callbacks):
    """History has no side effects: no surveys sent, no outbound sends, no webhooks or realtime callbacks."""
    from helpdesk.models import WebhookSubscription

    WebhookSubscription.objects.create(owner=personas.manager, url="https://hooks.example.com/x", events=["message.created",
                                                                                  "conversation.created",
                                                                                  "survey.answered"])
    with django_capture_on_commit_callbacks() as callbacks:
        run(scenario())
    assert callbacks == []
    assert not Message.objects.filter(delivery_status="queued").exists()
    assert SurveyInvitation.objects.count() == 2  # only the file's (s1, s2)


def test_workers_import_the_same_rows(personas, channels, monkeypatch):
    """Batches in forked processes (PostgreSQL): the same rows as one process; a survey whose conversation
    was in a batch still in flight is retried, a survey of an unknown conversation is still reported."""
    if connection.vendor != "postgresql":
        pytest.skip("worker processes are for PostgreSQL")
    lines = scenario()
    for i in range(12):
        lines.append({"type": "conversation", "external_id": f"p{i}", "customer": ["c1", "c3"][i % 2], "messages": [
            {"direction": "inbound", "channel": "chat", "body": "q", "created_at": at(1000 + i * 10)},
            {"direction": "outbound", "channel": "chat", "author": "ana@example.com", "body": "a",
             "created_at": at(1003 + i * 10)}], "events": [{"type": "resolved", "at": at(1005 + i * 10)}]})
        lines.append({"type": "survey", "external_id": f"ps{i}", "conversation": f"p{max(i - 1, 0)}",
                      "kind": "csat", "score": 4, "invited_at": at(1006 + i * 10)})
    lines.append({"type": "survey", "external_id": "lost", "conversation": "p99", "kind": "csat",
                  "invited_at": at(0)})
    one = run(lines, batch_objects=3)
    by_one = snapshot()
    wipe()
    in_parent = []
    original = importer._run_batch

    def spy(imp, items, cache):
        in_parent.append({item[1] for _seq, item in items})
        return original(imp, items, cache)
    monkeypatch.setattr(importer, "_run_batch", spy)  # the children were forked with the original
    two = run(lines, batch_objects=3, workers=2)
    assert {"survey"} in in_parent  # the retried surveys
    assert not any("conversation" in kinds and "customer" not in kinds and "agent" not in kinds
                   for kinds in in_parent)  # the conversations went to the children
    assert two["errors"] == one["errors"] and two["errors"][-1]["external_id"] == "lost"
    assert two["created"] == {**one["created"], "agent": 0} and two["created"]["survey"] == 14
    assert snapshot() == by_one
    assert connection.vendor == "postgresql" and Conversation.objects.count() == 15  # the parent reconnects
