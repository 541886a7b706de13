"""WhatsApp Cloud API adapter: handshake, signatures, parsing, media, statuses,
the 24-hour window, templates and provider errors, over real HTTP."""
from __future__ import annotations

import json
import time

import pytest

from channels_app import delivery
from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Conversation, ConversationEvent, Message
from customers.models import Customer, Identity

from .conftest import APP_SECRET, VERIFY_TOKEN, load, load_json, meta_post

pytestmark = pytest.mark.django_db

WAMID_OUT = "wamid.HBgNNDkxNTExMjM0NTY3OBUCABEYEjdBNjM5NzE0MTc0QzlCRkFEOAA="


def _fresh(name: str = "text", **subs) -> bytes:
    """The fixture with the message timestamp set to now (inside the 24 h window)."""
    data = load_json("whatsapp", name, **subs)
    for change in data["entry"][0]["changes"]:
        for msg in change["value"].get("messages", []):
            msg["timestamp"] = str(int(time.time()))
    return json.dumps(data).encode()


# ------------------------------------------------------------------ handshake and authenticity

def test_get_handshake_echoes_challenge(client, meta_channels):
    ch = meta_channels.whatsapp
    resp = client.get(ch.webhook_path, {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                        "hub.challenge": "1158201444"})
    assert resp.status_code == 200 and resp.content == b"1158201444"
    bad = client.get(ch.webhook_path, {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"})
    assert bad.status_code == 403
    assert client.get(ch.webhook_path, {"hub.mode": "subscribe", "hub.challenge": "1"}).status_code == 403


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "garbage"])
def test_bad_or_missing_signature_is_403_kept_and_not_ingested(client, meta_channels, signature):
    ch = meta_channels.whatsapp
    resp = meta_post(client, ch, load("whatsapp", "text"), signature=signature)
    assert resp.status_code == 403
    env = InboundEnvelope.objects.get(channel=ch)
    assert env.status == "rejected" and "X-Hub-Signature-256" in env.error
    assert not Message.objects.exists()


def test_signature_with_another_secret_is_refused(client, meta_channels):
    resp = meta_post(client, meta_channels.whatsapp, load("whatsapp", "text"), secret="someone-else")
    assert resp.status_code == 403 and not Message.objects.exists()


def test_body_tampered_after_signing_is_refused(client, meta_channels):
    from channels_app.adapters.meta.common import meta_signature

    body = load("whatsapp", "text")
    sig = meta_signature(APP_SECRET, body)
    tampered = body.replace(b"has not arrived", b"has arrived")
    resp = meta_post(client, meta_channels.whatsapp, tampered, signature=sig)
    assert resp.status_code == 403


# ------------------------------------------------------------------ inbound messages

def test_text_message_creates_customer_conversation_with_profile_name(client, meta_channels):
    ch = meta_channels.whatsapp
    resp = meta_post(client, ch, load("whatsapp", "text"))
    assert resp.status_code == 200
    msg = Message.objects.get()
    assert msg.body_text == "Hi, my order #1042 has not arrived yet."
    assert msg.external_id.startswith("wamid.") and msg.channel == ch and msg.direction == "inbound"
    customer = msg.conversation.customer
    assert customer.name == "Kim Lee"
    assert list(customer.identities.values_list("kind", "value")) == [("whatsapp", "+4915112345678")]
    assert msg.created_at.timestamp() == 1763830000
    assert InboundEnvelope.objects.get().status == "processed"


def test_replay_is_a_noop(client, meta_channels):
    ch = meta_channels.whatsapp
    body = load("whatsapp", "text")
    assert meta_post(client, ch, body).status_code == 200
    assert meta_post(client, ch, body).status_code == 200
    assert Message.objects.count() == 1 and Conversation.objects.count() == 1
    assert InboundEnvelope.objects.count() == 2


def test_image_is_downloaded_with_the_bearer_token(client, meta_channels, fake):
    ch = meta_channels.whatsapp
    media_url = fake.url + "/whatsapp_business/attachments/?mid=1479537139650973&ext=1763830060"
    fake.respond(200, load("whatsapp", "media_url", media_url=media_url))
    fake.respond(200, b"\xff\xd8\xff\xe0JPEGDATA", headers={"Content-Type": "image/jpeg"})
    resp = meta_post(client, ch, load("whatsapp", "image"))
    assert resp.status_code == 200
    info_req, file_req = fake.requests
    assert info_req.method == "GET" and info_req.path == "/v21.0/1479537139650973"
    assert info_req.headers["Authorization"] == "Bearer EAAwa-token"
    assert file_req.path.startswith("/whatsapp_business/attachments/?mid=1479537139650973")
    assert file_req.headers["Authorization"] == "Bearer EAAwa-token"
    msg = Message.objects.get()
    assert msg.body_text == "The parcel arrived damaged"
    att = msg.attachments.get()
    assert att.content_type == "image/jpeg" and att.size == 12
    with att.file.open("rb") as fh:
        assert fh.read() == b"\xff\xd8\xff\xe0JPEGDATA"


def test_media_gone_is_a_note_not_a_failure(client, meta_channels, fake):
    fake.respond(404, {"error": {"message": "Unsupported get request. Object with ID '1479537139650973' does not exist",
                                 "type": "GraphMethodException", "code": 100, "error_subcode": 33}})
    resp = meta_post(client, meta_channels.whatsapp, load("whatsapp", "image"))
    assert resp.status_code == 200
    msg = Message.objects.get()
    assert not msg.attachments.exists()
    assert "could not be downloaded" in msg.meta["notes"][0]


def test_media_server_error_fails_the_envelope_for_a_retry(client, meta_channels, fake):
    fake.respond(503, {"error": {"message": "Service temporarily unavailable", "code": 2, "is_transient": True}})
    resp = meta_post(client, meta_channels.whatsapp, load("whatsapp", "image"))
    assert resp.status_code == 500
    env = InboundEnvelope.objects.get()
    assert env.status == "failed" and not Message.objects.exists()
    # the provider retries the same delivery later: now it goes through
    fake.respond(200, load("whatsapp", "media_url", media_url=fake.url + "/media/1"))
    fake.respond(200, b"JPEG", headers={"Content-Type": "image/jpeg"})
    from channels_app.services import envelope_replay

    assert envelope_replay(env)
    assert Message.objects.get().attachments.count() == 1


def test_unknown_event_is_accepted_and_kept(client, meta_channels):
    resp = meta_post(client, meta_channels.whatsapp, load("whatsapp", "unknown"))
    assert resp.status_code == 200
    env = InboundEnvelope.objects.get()
    assert env.status == "ignored" and "message_template_status_update" in env.error
    assert not Message.objects.exists()


def test_unsupported_message_type_is_ignored(client, meta_channels):
    data = load_json("whatsapp", "text")
    msg = data["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    msg.update(type="unsupported", errors=[{"code": 131051, "title": "Message type unknown"}])
    resp = meta_post(client, meta_channels.whatsapp, json.dumps(data).encode())
    assert resp.status_code == 200 and InboundEnvelope.objects.get().status == "ignored"


def test_invalid_json_is_400(client, meta_channels):
    resp = meta_post(client, meta_channels.whatsapp, b"{not json")
    assert resp.status_code == 400 and InboundEnvelope.objects.get().status == "failed"


def test_known_phone_identity_joins_customer_and_open_conversation(client, meta_channels, channels, inbound):
    # given: the customer wrote by SMS from the same number (another channel)
    from datetime import timedelta

    from django.utils import timezone

    first = services.ingest(inbound(channels.sms, "phone", "+49 151 12345678", text="Order 1042?", name="Kim",
                                    created_at=timezone.now() - timedelta(minutes=5)))
    conv = first.message.conversation
    # when: the same number writes on WhatsApp
    resp = meta_post(client, meta_channels.whatsapp, _fresh())
    assert resp.status_code == 200
    # then: same customer, same open conversation, a channel switch event
    msg = Message.objects.get(channel=meta_channels.whatsapp)
    assert msg.conversation_id == conv.pk
    assert Customer.objects.count() == 1
    kinds = set(Identity.objects.values_list("kind", "value"))
    assert ("phone", "+4915112345678") in kinds
    switch = ConversationEvent.objects.get(conversation=conv, kind="channel_switched")
    assert switch.data == {"from": "sms", "to": "whatsapp"}
    conv = Conversation.objects.get(pk=conv.pk)
    channel, _reason = services.default_reply_channel(conv)
    assert channel == meta_channels.whatsapp


# ------------------------------------------------------------------ statuses

def _outbound(client, meta_channels, personas, fake, *, fresh=True):
    ch = meta_channels.whatsapp
    meta_post(client, ch, _fresh() if fresh else load("whatsapp", "text"))
    conv = Message.objects.get(channel=ch).conversation
    return services.reply(conversation=conv, author=personas.ana, body="We are on it, Kim.", channel=ch)


def test_send_text_then_statuses_in_any_order(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(200, load("whatsapp", "send_ok"))
    assert delivery.deliver(out.pk).status == "sent"
    req = fake.requests[-1]
    assert req.method == "POST" and req.path == "/v21.0/106540352242922/messages"
    assert req.headers["Authorization"] == "Bearer EAAwa-token"
    assert req.json() == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "4915112345678",
                          "type": "text", "text": {"preview_url": False, "body": "We are on it, Kim."}}
    out.refresh_from_db()
    assert out.external_id == WAMID_OUT and out.delivery_status == "sent"
    # read arrives before delivered, then sent again: never moves backwards
    for name in ("status_read", "status_delivered", "status_sent", "status_read"):
        assert meta_post(client, meta_channels.whatsapp, load("whatsapp", name)).status_code == 200
    out.refresh_from_db()
    assert out.delivery_status == "read" and out.read_at and out.delivered_at
    # a late failure after read does not override it
    meta_post(client, meta_channels.whatsapp, load("whatsapp", "status_failed_131026"))
    out.refresh_from_db()
    assert out.delivery_status == "read"


def test_failed_status_stores_the_provider_error(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(200, load("whatsapp", "send_ok"))
    delivery.deliver(out.pk)
    meta_post(client, meta_channels.whatsapp, load("whatsapp", "status_failed_131026"))
    out.refresh_from_db()
    assert out.delivery_status == "failed"
    assert "Message undeliverable" in out.delivery_error and "131026" in out.delivery_error


def test_failed_status_131047_explains_the_window(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(200, load("whatsapp", "send_ok"))
    delivery.deliver(out.pk)
    meta_post(client, meta_channels.whatsapp, load("whatsapp", "status_failed_131047"))
    out.refresh_from_db()
    assert out.delivery_status == "failed" and "24 hours" in out.delivery_error and "template" in out.delivery_error


def test_status_for_unknown_message_is_harmless(client, meta_channels):
    resp = meta_post(client, meta_channels.whatsapp, load("whatsapp", "status_delivered"))
    assert resp.status_code == 200 and InboundEnvelope.objects.get().status == "processed"


# ------------------------------------------------------------------ outbound errors, window, templates

def test_outside_24h_window_fails_without_calling_the_provider(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake, fresh=False)  # last message a year ago
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert out.delivery_status == "failed" and "24 hours" in out.delivery_error
    assert not any(r.method == "POST" for r in fake.requests)


def test_provider_131047_error_is_permanent_with_clear_message(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(400, load("whatsapp", "error_131047"))
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert "24 hours" in out.delivery_error and "131047" in out.delivery_error
    assert len(fake.requests) == 1


def test_template_is_allowed_outside_the_window(client, meta_channels, personas, fake):
    ch = meta_channels.whatsapp
    meta_post(client, ch, load("whatsapp", "text"))
    conv = Message.objects.get(channel=ch).conversation
    template = {"name": "order_update", "language": "de",
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "1042"}]}]}
    out = services.reply(conversation=conv, author=personas.ana, body="[template order_update]", channel=ch,
                         meta={"template": template})
    fake.respond(200, load("whatsapp", "send_ok"))
    assert delivery.deliver(out.pk).status == "sent"
    body = fake.requests[-1].json()
    assert body["type"] == "template"
    assert body["template"] == {"name": "order_update", "language": {"code": "de"},
                                "components": template["components"]}


def test_rate_limit_is_retried_then_sent(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(400, load("whatsapp", "error_throughput"))
    outcome = delivery.deliver(out.pk)
    assert outcome.status == "retry"
    out.refresh_from_db()
    assert out.delivery_status == "queued" and "throughput" in out.delivery_error
    Message.objects.filter(pk=out.pk).update(next_attempt_at=None)
    fake.respond(200, load("whatsapp", "send_ok"))
    assert delivery.deliver(out.pk).status == "sent"


def test_server_error_is_transient(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(500, {"error": {"message": "An unknown error has occurred.", "type": "OAuthException", "code": 1}})
    assert delivery.deliver(out.pk).status == "retry"


def test_invalid_token_fails_with_provider_message(client, meta_channels, personas, fake):
    out = _outbound(client, meta_channels, personas, fake)
    fake.respond(401, load("whatsapp", "error_token"))
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert out.delivery_error.startswith("Error validating access token") and "190" in out.delivery_error


def test_attachment_is_uploaded_then_sent(client, meta_channels, personas, fake):
    from conversations.inbound import InboundAttachment

    ch = meta_channels.whatsapp
    meta_post(client, ch, _fresh())
    conv = Message.objects.get(channel=ch).conversation
    out = services.reply(conversation=conv, author=personas.ana, body="Here is the label", channel=ch,
                         attachments=[InboundAttachment("label.pdf", "application/pdf", b"%PDF-1.4 label")])
    fake.respond(200, {"id": "1037543291543636"})  # upload
    fake.respond(200, load("whatsapp", "send_ok"))  # text
    fake.respond(200, {"messaging_product": "whatsapp", "contacts": [{"input": "4915112345678",
                       "wa_id": "4915112345678"}], "messages": [{"id": "wamid.DOC"}]})
    assert delivery.deliver(out.pk).status == "sent"
    upload, text, doc = fake.requests
    assert upload.path == "/v21.0/106540352242922/media" and b"%PDF-1.4 label" in upload.body
    assert upload.headers["Content-Type"].startswith("multipart/form-data")
    assert text.json()["type"] == "text"
    assert doc.json()["document"] == {"id": "1037543291543636", "filename": "label.pdf"}


def test_secrets_are_encrypted_at_rest(meta_channels):
    from django.db import connection

    ch = meta_channels.whatsapp
    assert set(ch.secrets) == {"app_secret", "verify_token", "access_token"}
    assert ch.settings["phone_number_id"] == "106540352242922"
    with connection.cursor() as cur:
        cur.execute("SELECT secrets, settings FROM channels_app_channel WHERE id = %s", [ch.pk])
        secrets_col, settings_col = cur.fetchone()
    assert APP_SECRET not in str(secrets_col) and "EAAwa-token" not in str(secrets_col)
    assert APP_SECRET not in str(settings_col)


def test_event_for_another_phone_number_is_ignored(client, meta_channels):
    data = load_json("whatsapp", "text")
    data["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999999999999999"
    assert meta_post(client, meta_channels.whatsapp, json.dumps(data).encode()).status_code == 200
    assert InboundEnvelope.objects.get().status == "ignored" and not Message.objects.exists()


def test_email_written_on_whatsapp_is_linked(client, meta_channels, django_capture_on_commit_callbacks):
    data = load_json("whatsapp", "text")
    data["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = "Write me at Kim.Lee@Example.org please"
    with django_capture_on_commit_callbacks(execute=True):
        meta_post(client, meta_channels.whatsapp, json.dumps(data).encode())
    customer = Customer.objects.get()
    assert ("email", "kim.lee@example.org") in set(customer.identities.values_list("kind", "value"))


def test_window_closes_24h_after_the_last_customer_message(client, meta_channels):
    from channels_app.adapters.whatsapp.adapter import window_closes_at

    ch = meta_channels.whatsapp
    meta_post(client, ch, _fresh())
    customer = Customer.objects.get()
    msg = Message.objects.get()
    assert window_closes_at(ch, customer.pk).timestamp() == msg.created_at.timestamp() + 24 * 3600
    assert window_closes_at(ch, customer.pk + 1000) is None
