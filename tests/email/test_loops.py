"""No mail loops: auto-replies never reopen and never get an auto-ack; bounces
mark our message failed; a flood from one sender is rate limited."""
from __future__ import annotations

from email.message import EmailMessage

import pytest

from channels_app.models import EnvelopeStatus
from conversations import services
from conversations.models import Conversation, Message, ThreadKey

from .conftest import load


def mail(n: int, sender: str = "kim@example.org", **headers) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@acme.test"
    msg["Subject"] = f"Question {n}"
    msg["Message-ID"] = f"<q{n}.{sender}>"
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(f"Question number {n}")
    return msg.as_bytes()


@pytest.fixture
def auto_ack(email_channel, smtp_sink):
    email_channel.settings["auto_ack"] = True
    email_channel.save()
    return smtp_sink


def test_auto_ack_once_per_conversation(deliver_raw, auto_ack, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        deliver_raw(mail(1))
    conv = Conversation.objects.get()
    acks = Message.objects.filter(direction="outbound", automated=True, meta__auto_ack=True)
    assert acks.count() == 1 and acks.get().delivery_status == "sent"
    sent = auto_ack.wait(1)[0]["data"]
    assert b"Auto-Submitted: auto-replied" in sent
    # a follow-up in the same thread gets no second acknowledgement
    with django_capture_on_commit_callbacks(execute=True):
        deliver_raw(mail(2, In_Reply_To="<q1.kim@example.org>"))
    assert Conversation.objects.count() == 1 and conv.messages.filter(direction="inbound").count() == 2
    assert acks.count() == 1


@pytest.mark.parametrize("headers", [
    {"Auto_Submitted": "auto-replied"}, {"Precedence": "bulk"}, {"Precedence": "junk"}, {"Precedence": "list"},
    {"X_Autoreply": "yes"}, {"X_Autorespond": "Out of office"},
])
def test_no_auto_ack_for_automated_mail(deliver_raw, auto_ack, headers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        envelope, _ = deliver_raw(mail(1, sender="robot@example.org", **headers))
    inbound = Message.objects.get(pk=envelope.message_ids[0])
    assert inbound.automated
    assert not Message.objects.filter(direction="outbound").exists()
    assert auto_ack.messages == []


def test_auto_reply_never_reopens(deliver_raw, auto_ack, django_capture_on_commit_callbacks):
    # given a resolved conversation our earlier mail threads to
    with django_capture_on_commit_callbacks(execute=True):
        envelope, _ = deliver_raw(load("gmail_reply.eml"))
    conv = Message.objects.get(pk=envelope.message_ids[0]).conversation
    assert ThreadKey.objects.filter(conversation=conv, key="tl.41.abcdef0123456789@acme.test").exists()
    services.resolve_conversation(conversation=conv)
    outbound_before = Message.objects.filter(direction="outbound").count()
    # when an out-of-office answer arrives
    with django_capture_on_commit_callbacks(execute=True):
        envelope, _ = deliver_raw(load("auto_reply.eml"))
    # then it is filed in the conversation, which stays resolved, and nobody answers it
    conv.refresh_from_db()
    ooo = Message.objects.get(pk=envelope.message_ids[0])
    assert ooo.conversation_id == conv.pk and ooo.automated
    assert conv.status == "resolved"
    assert Message.objects.filter(direction="outbound").count() == outbound_before


def test_bounce_marks_outbound_failed(deliver_raw, personas, email_channel):
    envelope, _ = deliver_raw(mail(1))
    conv = Message.objects.get(pk=envelope.message_ids[0]).conversation
    out = services.reply(conversation=conv, author=personas.ana, body="Answer", deliver=False,
                         external_id="tl.7.0123456789abcdef@acme.test")
    envelope, result = deliver_raw(load("dsn_bounce.eml"))
    out.refresh_from_db()
    assert out.delivery_status == "failed"
    assert "5.1.1" in out.delivery_error and "User unknown" in out.delivery_error
    assert envelope.status == EnvelopeStatus.PROCESSED and envelope.message_ids == []
    assert conv.events.filter(kind="delivery_failed").exists()


def test_unmatched_bounce_is_kept_as_automated_message(deliver_raw):
    envelope, _ = deliver_raw(load("dsn_bounce.eml"))
    msg = Message.objects.get(pk=envelope.message_ids[0])
    assert msg.automated and "could not" in msg.body_text


def test_per_sender_rate_limit(deliver_raw, email_channel):
    email_channel.settings.update(rate_limit=3, rate_window=600)
    email_channel.save()
    results = [deliver_raw(mail(n, sender="flood@example.org"))[0] for n in range(5)]
    assert [e.status for e in results] == ["processed"] * 3 + ["ignored"] * 2
    assert "rate limit" in results[-1].error
    # another sender is unaffected
    assert deliver_raw(mail(9, sender="calm@example.org"))[0].status == "processed"


def test_mail_from_our_own_address_is_not_ingested(deliver_raw):
    envelope, _ = deliver_raw(mail(1, sender="Acme <support@acme.test>"))
    assert envelope.status == EnvelopeStatus.IGNORED and "loop" in envelope.error
