"""Provider webhooks through anymail: signature checks are enforced (Mailgun
HMAC signing key, Postmark basic auth), inbound mail is stored as an envelope
and parsed by the one parser, tracking events update delivery status.
Payloads follow the providers' documented shapes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from django.urls import reverse

from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Conversation, Message

from .conftest import load

SIGNING_KEY = "mg-signing-key-123"
BASIC = "anymail-user:anymail-pass"


@pytest.fixture
def anymail_settings(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC, "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    return settings


def auth(secret: str = BASIC) -> dict:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()}


def mailgun_signature(key: str = SIGNING_KEY) -> dict:
    timestamp, token = str(int(time.time())), "a" * 50
    sig = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": sig}


def mailgun_inbound_post(client, raw: bytes, *, signature=None, recipient="support@acme.test", **extra):
    # Mailgun route forward() to a URL containing "mime": the raw message in body-mime (form fields)
    data = {"recipient": recipient, "sender": "kim.lee@gmail.example", "from": "Kim Lee <kim.lee@gmail.example>",
            "subject": "Re: Invoice 1042 is wrong [#41]", "body-mime": raw.decode("utf-8"),
            **(signature or mailgun_signature())}
    return client.post(reverse("channels_app:email_mailgun_inbound_webhook", args=["_mime"]), data, **extra)


def test_mailgun_inbound_signed(client, email_channel, anymail_settings):
    resp = mailgun_inbound_post(client, load("gmail_reply.eml"), **auth())
    assert resp.status_code == 200
    env = InboundEnvelope.objects.get()
    assert env.source == "webhook" and env.headers["esp"] == "Mailgun" and env.status == "processed"
    msg = Message.objects.get(pk=env.message_ids[0])
    assert msg.external_id == "CAF=gmail-reply-2@mail.gmail.com" and "120 €" in msg.body_text


def test_mailgun_bad_signature_rejected(client, email_channel, anymail_settings):
    resp = mailgun_inbound_post(client, load("gmail_reply.eml"), signature=mailgun_signature("wrong-key"), **auth())
    assert resp.status_code == 400
    assert not InboundEnvelope.objects.exists() and not Message.objects.exists()


def test_mailgun_refused_without_signing_key(client, email_channel, settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": BASIC}
    resp = mailgun_inbound_post(client, load("gmail_reply.eml"), **auth())
    assert resp.status_code == 403 and not Message.objects.exists()


def postmark_inbound_payload(token: str = "") -> dict:
    # shape of Postmark's inbound webhook (developer/webhooks/inbound-webhook), no RawEmail
    to = f"support+{token}@acme.test" if token else "support@acme.test"
    return {
        "FromName": "Postmarkapp Support", "MessageStream": "inbound", "From": "support@postmarkapp.example",
        "FromFull": {"Email": "support@postmarkapp.example", "Name": "Postmarkapp Support", "MailboxHash": ""},
        "To": f"\"Acme\" <{to}>", "ToFull": [{"Email": to, "Name": "Acme", "MailboxHash": token}],
        "Cc": "", "CcFull": [], "Bcc": "", "BccFull": [], "OriginalRecipient": to,
        "Subject": "Test subject", "MessageID": "73e6d360-66eb-11e1-8e72-a8904824019b",
        "ReplyTo": "", "MailboxHash": token, "Date": "Fri, 1 Aug 2014 16:45:32 -04:00",
        "TextBody": "This is a test text body.", "HtmlBody": "<html><body><p>This is a test html body.</p></body></html>",
        "StrippedTextReply": "This is the reply text", "Tag": "TestTag",
        "Headers": [{"Name": "X-Header-Test", "Value": ""}, {"Name": "X-Spam-Status", "Value": "No"},
                    {"Name": "Message-ID", "Value": "<pm-inbound-1@postmarkapp.example>"}],
        "Attachments": [{"Name": "test.txt", "Content": base64.b64encode(b"This is attachment contents").decode(),
                         "ContentType": "text/plain", "ContentLength": 27}],
    }


def post_json(client, name: str, payload: dict, **extra):
    return client.post(reverse(f"channels_app:{name}"), json.dumps(payload), content_type="application/json", **extra)


def test_postmark_inbound_basic_auth_and_reply_token(client, email_channel, anymail_settings, deliver_raw):
    envelope, _ = deliver_raw(load("iso_8859_1.eml"))
    conv = Conversation.objects.get()
    # the same customer address, so the conversation is theirs; the token comes from the recipient
    payload = postmark_inbound_payload(token=conv.reply_token)
    payload["FromFull"]["Email"] = payload["From"] = "renee@example.fr"
    resp = post_json(client, "email_postmark_inbound_webhook", payload, **auth())
    assert resp.status_code == 200
    msg = Message.objects.get(external_id="pm-inbound-1@postmarkapp.example")
    assert msg.conversation_id == conv.pk
    assert msg.body_text.startswith("This is a test text body.")
    assert msg.attachments.get().filename == "test.txt"


@pytest.mark.parametrize("secret", ["anymail-user:wrong", None])
def test_postmark_wrong_or_missing_basic_auth(client, email_channel, anymail_settings, secret):
    extra = auth(secret) if secret else {}
    resp = post_json(client, "email_postmark_inbound_webhook", postmark_inbound_payload(), **extra)
    assert resp.status_code == 400
    assert not Message.objects.exists()


def test_postmark_refused_when_no_secret_configured(client, email_channel, settings):
    settings.ANYMAIL = {}
    resp = post_json(client, "email_postmark_inbound_webhook", postmark_inbound_payload())
    assert resp.status_code == 403 and not InboundEnvelope.objects.exists()


@pytest.fixture
def outbound(deliver_raw, personas):
    envelope, _ = deliver_raw(load("iso_8859_1.eml"))
    conv = Conversation.objects.get()
    msg = services.reply(conversation=conv, author=personas.ana, body="Answer", deliver=False,
                         external_id="tl.5.feedfacecafebeef@acme.test")
    msg.meta = {"esp_message_id": "883953f4-6105-42a2-a16a-77a8eac79483"}
    msg.save(update_fields=["meta"])
    return msg


def test_mailgun_tracking_permanent_failure(client, outbound, anymail_settings):
    payload = {"signature": mailgun_signature(), "event-data": {
        "event": "failed", "severity": "permanent", "id": "G9Bn5sl1TC6nu79C8C0bwg", "timestamp": time.time(),
        "recipient": "renee@example.fr", "reason": "bounce", "log-level": "error",
        "message": {"headers": {"message-id": "tl.5.feedfacecafebeef@acme.test", "to": "renee@example.fr",
                                "from": "support@acme.test", "subject": "Re: Problème"}},
        "delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist",
                            "description": "Not delivering to previously bounced address", "attempt-no": 1}}}
    resp = post_json(client, "email_mailgun_tracking_webhook", payload, **auth())
    assert resp.status_code == 200
    outbound.refresh_from_db()
    assert outbound.delivery_status == "failed" and "does not exist" in outbound.delivery_error


def test_postmark_tracking_delivery_then_bounce(client, outbound, anymail_settings):
    delivery = {"RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
                "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": "renee@example.fr",
                "Tag": "", "DeliveredAt": "2026-03-05T16:33:54.9070259Z", "Details": "Test delivery webhook details",
                "Metadata": {}}
    assert post_json(client, "email_postmark_tracking_webhook", delivery, **auth()).status_code == 200
    outbound.refresh_from_db()
    assert outbound.delivery_status == "delivered"
    bounce = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce", "TypeCode": 1,
              "Name": "Hard bounce", "Tag": "", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
              "ServerID": 23, "MessageStream": "outbound",
              "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
              "Details": "Test bounce details", "Email": "renee@example.fr", "From": "support@acme.test",
              "BouncedAt": "2026-03-05T16:34:54.9070259Z", "DumpAvailable": True, "Inactive": True,
              "CanActivate": True, "Subject": "Re: Problème", "Content": "", "Metadata": {}}
    assert post_json(client, "email_postmark_tracking_webhook", bounce, **auth()).status_code == 200
    outbound.refresh_from_db()
    assert outbound.delivery_status == "delivered"  # a late bounce never undoes a delivery (delivery_update rule)
    assert InboundEnvelope.objects.filter(headers__esp="Postmark").count() == 2


def test_postmark_bounce_marks_failed(client, outbound, anymail_settings):
    bounce = {"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "MessageID":
              "883953f4-6105-42a2-a16a-77a8eac79483", "Email": "renee@example.fr",
              "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
              "Details": "smtp;550 5.1.1 unknown user", "BouncedAt": "2026-03-05T16:34:54Z", "Metadata": {}}
    assert post_json(client, "email_postmark_tracking_webhook", bounce, **auth()).status_code == 200
    outbound.refresh_from_db()
    assert outbound.delivery_status == "failed" and "unable to deliver" in outbound.delivery_error
