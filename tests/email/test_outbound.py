"""Outbound mail: headers, the whole References chain, signature, attachments,
automated mail, and SMTP errors mapped to permanent/transient failures."""
from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest

from channels_app.adapters.email.adapter import EmailAdapter
from conversations import services
from conversations.inbound import InboundAttachment
from conversations.models import Message, ThreadKey

from .conftest import free_port, load


def parse(raw: bytes):
    return BytesParser(policy=policy.default).parsebytes(raw)


@pytest.fixture
def conversation(deliver_raw):
    envelope, _ = deliver_raw(load("gmail_reply.eml"))
    return Message.objects.get(pk=envelope.message_ids[0]).conversation


def reply(conversation, django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        msg = services.reply(conversation=conversation, **kwargs)
    msg.refresh_from_db()
    return msg


def test_reply_headers_chain_signature_and_attachments(conversation, personas, smtp_sink, email_channel,
                                                       django_capture_on_commit_callbacks):
    email_channel.settings["signature"] = "Acme Support — we answer within a day"
    email_channel.save()
    first = reply(conversation, django_capture_on_commit_callbacks, author=personas.ana, body="First answer",
                  attachments=[InboundAttachment("invoice.pdf", "application/pdf", b"%PDF-1 invoice")])
    assert first.delivery_status == "sent"
    assert ThreadKey.objects.filter(conversation=conversation, key=first.external_id, own=True).exists()
    second = reply(conversation, django_capture_on_commit_callbacks, author=personas.ana, body="Second answer")

    mails = [parse(m["data"]) for m in smtp_sink.wait(2)]
    one, two = mails
    # the chain: what the customer referenced, the customer's mail, then our first answer
    assert str(two["References"]).split() == ["<CAF=original-1@mail.gmail.com>",
                                              "<tl.41.abcdef0123456789@acme.test>",
                                              "<CAF=gmail-reply-2@mail.gmail.com>", f"<{first.external_id}>"]
    assert str(two["In-Reply-To"]) == "<CAF=gmail-reply-2@mail.gmail.com>"
    assert str(two["Message-ID"]) == f"<{second.external_id}>"
    text = one.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = one.get_body(("html",)).get_content()
    assert "First answer" in text and "\n-- \nAcme Support — we answer within a day" in text
    assert "Acme Support — we answer within a day" in html
    atts = list(one.iter_attachments())
    assert [(a.get_filename(), a.get_content_type(), a.get_content()) for a in atts] == [
        ("invoice.pdf", "application/pdf", b"%PDF-1 invoice")]
    assert one["Auto-Submitted"] is None


def test_automated_mail_is_marked_auto_submitted(conversation, smtp_sink, django_capture_on_commit_callbacks):
    msg = reply(conversation, django_capture_on_commit_callbacks, author=None, body="We got it", automated=True)
    sent = parse(smtp_sink.wait(1)[0]["data"])
    assert str(sent["Auto-Submitted"]) == "auto-replied"
    assert str(sent["From"]) == "Acme Support <support@acme.test>"
    assert msg.automated


@pytest.mark.parametrize("answer,status,attempts", [
    ("550 5.1.1 User unknown", "failed", 1),
    ("554 5.7.1 Message rejected as spam", "failed", 1),
    ("451 4.7.1 Greylisted, try again later", "queued", 1),
])
def test_smtp_errors_permanent_or_transient(conversation, personas, smtp_sink, answer, status, attempts,
                                            django_capture_on_commit_callbacks):
    smtp_sink.refuse = answer
    msg = reply(conversation, django_capture_on_commit_callbacks, author=personas.ana, body="Hello")
    assert msg.delivery_status == status
    assert msg.delivery_attempts == attempts
    assert answer.split()[0] in msg.delivery_error


def test_unreachable_server_is_transient(conversation, personas, settings, django_capture_on_commit_callbacks):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there
    msg = reply(conversation, django_capture_on_commit_callbacks, author=personas.ana, body="Hello")
    assert msg.delivery_status == "queued" and msg.delivery_attempts == 1 and msg.next_attempt_at


def test_message_id_is_stable_across_retries(conversation, personas):
    msg = services.reply(conversation=conversation, author=personas.ana, body="Hello", deliver=False)
    msg.external_id = None
    adapter = EmailAdapter()
    assert adapter.build(msg).extra_headers["Message-ID"] == adapter.build(msg).extra_headers["Message-ID"]


def test_anymail_provider_backend(conversation, personas, settings, django_capture_on_commit_callbacks):
    # anymail's test backend behaves like a provider backend: it reports the ESP's message id
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.ANYMAIL = {}
    msg = reply(conversation, django_capture_on_commit_callbacks, author=personas.ana, body="Via provider")
    from django.core import mail

    assert msg.delivery_status == "sent"
    assert msg.meta["esp_message_id"] and msg.external_id.startswith("tl.")
    sent = mail.outbox[-1]
    assert sent.extra_headers["Message-ID"] == f"<{msg.external_id}>"
    assert sent.reply_to == [f"support+{conversation.reply_token}@acme.test"]
