"""ingest() writes one data-modifying CTE on PostgreSQL instead of the ORM's
five statements: both paths must leave identical rows."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import services
from conversations.inbound import InboundAttachment, InboundMessage
from conversations.models import Attachment, Conversation, ConversationEvent, Message
from customers.models import Customer
from metrics.models import DirtyConversation

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=123456)


def _scenario(channels, inbound, suffix: str) -> list[int]:
    """New customer, follow-ups, a channel switch, a reopen, an auto-reply with
    an attachment and notes; returns the customers' ids."""
    email, phone = f"kim-{suffix}@example.org", {"a": "+15551230001", "b": "+15551230002"}[suffix]
    at = NOW - timedelta(hours=2)
    first = services.ingest(inbound(channels.api, "email", email, text="first", name="Kim", created_at=at,
                                    external_id=f"{suffix}-1", meta={"to": "support@acme.test", "_x": 1}))
    services.ingest(inbound(channels.api, "email", email, text="second", created_at=at + timedelta(minutes=1),
                            external_id=f"{suffix}-2"))
    # an older message delivered late: not the latest, the preview stays
    services.ingest(inbound(channels.api, "email", email, text="late", created_at=at - timedelta(minutes=5),
                            external_id=f"{suffix}-3"))
    # the same customer on WhatsApp (the message carries both identities): a channel switch
    wa = services.ingest(InboundMessage(channel=channels.whatsapp, identities=[("whatsapp", phone), ("email", email)],
                                        text="on whatsapp", created_at=at + timedelta(minutes=2),
                                        external_id=f"{suffix}-4"))
    conv = first.message.conversation
    services.resolve_conversation(conversation=Conversation.objects.get(pk=conv.pk), at=at + timedelta(minutes=3))
    services.ingest(inbound(channels.api, "email", email, text="one more thing", created_at=at + timedelta(minutes=4),
                            external_id=f"{suffix}-5"))
    services.ingest(inbound(channels.api, "email", email, text="auto reply", created_at=at + timedelta(minutes=5),
                            external_id=f"{suffix}-6", auto_submitted=True, notes=["a note"],
                            attachments=[InboundAttachment("a.txt", "text/plain", b"hello")]))
    return sorted({first.message.conversation.customer_id, wa.message.conversation.customer_id})


def _rows(customer_ids: list[int]) -> dict:
    """Every row the scenario wrote, with ids replaced by their rank within the run."""
    convs = list(Conversation.objects.filter(customer_id__in=customer_ids).order_by("pk").values())
    conv_rank = {c["id"]: n for n, c in enumerate(convs)}
    msgs = list(Message.objects.filter(conversation_id__in=conv_rank).order_by("pk").values())
    msg_rank = {m["id"]: n for n, m in enumerate(msgs)}
    cust_rank = {c: n for n, c in enumerate(customer_ids)}

    def norm(row, drop=()):
        row = {k: v for k, v in row.items() if k not in ("id", *drop)}
        for key, rank in (("conversation_id", conv_rank), ("message_id", msg_rank), ("customer_id", cust_rank)):
            if row.get(key) is not None:
                row[key] = rank[row[key]]
        return row

    events = ConversationEvent.objects.filter(conversation_id__in=conv_rank).order_by("pk").values()
    atts = Attachment.objects.filter(message_id__in=msg_rank).order_by("pk").values()
    return {
        "conversations": [norm(c, ("reply_token",)) for c in convs],
        "messages": [norm(m, ("external_id",)) for m in msgs],
        "events": [norm(e) for e in events],
        "customers": [norm(c, ("name",)) for c in Customer.objects.filter(pk__in=customer_ids).order_by("pk").values()],
        "dirty": sorted(conv_rank[d.conversation_id] for d in DirtyConversation.objects.filter(
            conversation_id__in=conv_rank)),
        "attachments": [norm(a, ("file", "created_at")) for a in atts],  # default=timezone.now: not frozen
    }


def test_one_statement_writes_equal_the_orm_writes(channels, inbound, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the one-statement write path is PostgreSQL's; elsewhere both are the ORM path")
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    monkeypatch.setattr(services, "FAST_INGEST_WRITES", False)
    orm = _rows(_scenario(channels, inbound, "a"))
    monkeypatch.setattr(services, "FAST_INGEST_WRITES", True)
    fast = _rows(_scenario(channels, inbound, "b"))
    assert len(orm["messages"]) == 6 and len(orm["events"]) > 6 and orm["attachments"]
    assert {e["kind"] for e in orm["events"]} >= {"created", "message_in", "channel_switched", "reopened"}
    for key in orm:
        assert fast[key] == orm[key], key


def test_postgresql_ingests_an_open_conversation_in_five_statements(channels, inbound, django_capture_on_commit_callbacks):
    from metrics import engine

    if connection.vendor != "postgresql":
        pytest.skip("the one-statement write path is PostgreSQL's")
    services.ingest(inbound(channels.api, "email", "kim@example.org"))
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks() as callbacks:
        result = services.ingest(inbound(channels.api, "email", "kim@example.org", text="again"))
    # as metrics.engine.conversations_changed: a debounced flush once it commits
    assert engine._flush_unless_suspended in callbacks
    sql = [q["sql"] for q in queries.captured_queries]
    # SAVEPOINT/RELEASE inside the test's transaction stand where BEGIN/COMMIT are in production
    assert len(sql) == 5, sql
    assert sql[3].startswith("WITH m AS (INSERT INTO")
    message = Message.objects.get(pk=result.message.pk)
    assert message.body_text == "again" and message.conversation.message_count == 2
    assert ConversationEvent.objects.filter(message=message, kind="message_in").count() == 1
    assert DirtyConversation.objects.filter(conversation_id=message.conversation_id).exists()
