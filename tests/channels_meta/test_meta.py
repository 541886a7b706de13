"""Messenger and Instagram (Meta Graph webhooks): handshake, signatures,
parsing, media, watermarks, contact details, outbound and Graph errors."""
from __future__ import annotations

import json
from datetime import timedelta, timezone as dt_timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from channels_app import delivery
from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Message
from customers.models import Customer, MergeSuggestion
from tests.factories import IdentityFactory

from .conftest import VERIFY_TOKEN, load, load_json, meta_post

pytestmark = pytest.mark.django_db

PSID = "7093840271912345"
IGSID = "1914719288733285"


@pytest.mark.parametrize("kind", ["messenger", "instagram"])
def test_handshake(client, meta_channels, kind):
    ch = getattr(meta_channels, kind)
    ok = client.get(ch.webhook_path, {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                      "hub.challenge": "CHALLENGE_ACCEPTED"})
    assert ok.status_code == 200 and ok.content == b"CHALLENGE_ACCEPTED"
    assert client.get(ch.webhook_path, {"hub.mode": "subscribe", "hub.verify_token": "x",
                                        "hub.challenge": "c"}).status_code == 403


@pytest.mark.parametrize("kind", ["messenger", "instagram"])
@pytest.mark.parametrize("signature", [None, "sha256=deadbeef"])
def test_bad_signature_is_rejected(client, meta_channels, kind, signature):
    ch = getattr(meta_channels, kind)
    resp = meta_post(client, ch, load(kind, "text"), signature=signature)
    assert resp.status_code == 403
    assert InboundEnvelope.objects.get().status == "rejected" and not Message.objects.exists()


def test_messenger_text_and_replay(client, meta_channels):
    ch = meta_channels.messenger
    body = load("messenger", "text")
    assert meta_post(client, ch, body).status_code == 200
    assert meta_post(client, ch, body).status_code == 200
    msg = Message.objects.get()
    assert msg.body_text.startswith("Hello, where is my refund?")
    assert msg.external_id.startswith("m_AG5Hz2Uq") and msg.created_at.timestamp() == 1763830000
    assert list(msg.conversation.customer.identities.values_list("kind", "value")) == [("messenger", PSID)]


def test_messenger_profile_name_is_fetched_once(client, meta_channels, fake):
    ch = meta_channels.messenger
    ch.settings["fetch_profile"] = True
    ch.save()
    fake.respond(200, load("messenger", "profile"))
    meta_post(client, ch, load("messenger", "text"))
    req = fake.requests[0]
    assert req.method == "GET" and urlsplit(req.path).path == f"/v21.0/{PSID}"
    query = parse_qs(urlsplit(req.path).query)
    assert query["fields"] == ["first_name,last_name"] and "access_token" not in query
    assert req.headers["Authorization"] == "Bearer EAApage-token"
    assert Customer.objects.get().name == "Kim Lee"
    # a second message from the known customer does not look the profile up again
    data = load_json("messenger", "text")
    data["entry"][0]["messaging"][0]["message"]["mid"] = "m_second"
    meta_post(client, ch, json.dumps(data).encode())
    assert len(fake.requests) == 1 and Message.objects.count() == 2


def test_profile_failure_does_not_block_the_message(client, meta_channels, fake):
    ch = meta_channels.instagram
    ch.settings["fetch_profile"] = True
    ch.save()
    fake.respond(400, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}})
    assert meta_post(client, ch, load("instagram", "text")).status_code == 200
    assert Message.objects.get().conversation.customer.name == ""


def test_instagram_profile_name(client, meta_channels, fake):
    ch = meta_channels.instagram
    ch.settings["fetch_profile"] = True
    ch.save()
    fake.respond(200, load("instagram", "profile"))
    meta_post(client, ch, load("instagram", "text"))
    assert parse_qs(urlsplit(fake.requests[0].path).query)["fields"] == ["name,username"]
    customer = Customer.objects.get()
    assert customer.name == "Kim Lee"
    assert list(customer.identities.values_list("kind", "value")) == [("instagram", IGSID)]


@pytest.mark.parametrize("kind", ["messenger", "instagram"])
def test_image_attachment_is_downloaded(client, meta_channels, fake, kind):
    ch = getattr(meta_channels, kind)
    url = fake.url + "/v/t1.15752-9/316525431_1234_n.jpg?_nc_cat=1&oh=abc&oe=6790"
    fake.respond(200, b"\x89PNG-ish", headers={"Content-Type": "image/jpeg"})
    assert meta_post(client, ch, load(kind, "image", media_url=url)).status_code == 200
    assert fake.requests[0].path.startswith("/v/t1.15752-9/316525431_1234_n.jpg")
    assert "Authorization" not in fake.requests[0].headers  # signed CDN URL: no token leaves
    att = Message.objects.get().attachments.get()
    assert att.filename == "316525431_1234_n.jpg" and att.content_type == "image/jpeg" and att.size == 8


@pytest.mark.parametrize("kind,fixture", [("messenger", "unknown"), ("messenger", "echo"), ("instagram", "unknown")])
def test_unknown_and_echo_events_are_accepted_and_kept(client, meta_channels, kind, fixture):
    resp = meta_post(client, getattr(meta_channels, kind), load(kind, fixture))
    assert resp.status_code == 200
    env = InboundEnvelope.objects.get()
    assert env.status == "ignored" and env.error
    assert not Message.objects.exists()


# ------------------------------------------------------------------ contact details -> identity / merge suggestion

def test_email_in_message_is_linked_or_suggested_never_merged(client, meta_channels,
                                                              django_capture_on_commit_callbacks):
    # given: another customer already owns the email the Messenger customer writes
    other = IdentityFactory(kind="email", value="kim.lee@example.org").customer
    with django_capture_on_commit_callbacks(execute=True):
        assert meta_post(client, meta_channels.messenger, load("messenger", "text")).status_code == 200
    msg = Message.objects.get()
    me = msg.conversation.customer
    assert me.pk != other.pk and Customer.objects.count() == 2  # no silent merge
    suggestion = MergeSuggestion.objects.get()
    assert {suggestion.customer_id, suggestion.other_id} == {me.pk, other.pk}
    assert "merge is suggested" in msg.__class__.objects.get(pk=msg.pk).meta["notes"][0]


def test_phone_in_message_is_linked_when_nobody_owns_it(client, meta_channels, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        meta_post(client, meta_channels.instagram, load("instagram", "text"))
    customer = Customer.objects.get()
    assert set(customer.identities.values_list("kind", "value")) == {("instagram", IGSID), ("phone", "+436641234567")}
    assert not MergeSuggestion.objects.exists()


# ------------------------------------------------------------------ outbound and statuses

def _reply(client, ch, personas, kind="messenger", **kwargs):
    meta_post(client, ch, load(kind, "text"))
    conv = Message.objects.get(channel=ch).conversation
    return services.reply(conversation=conv, author=personas.ana, body="Your refund is on its way.", channel=ch,
                          **kwargs)


def test_messenger_send_uses_human_agent_tag_after_24h(client, meta_channels, personas, fake):
    ch = meta_channels.messenger
    out = _reply(client, ch, personas)  # the fixture's message is a year old
    fake.respond(200, load("messenger", "send_ok"))
    assert delivery.deliver(out.pk).status == "sent"
    req = fake.requests[-1]
    assert urlsplit(req.path).path == "/v21.0/107331365478916/messages"
    assert req.headers["Authorization"] == "Bearer EAApage-token" and "access_token" not in req.path
    assert req.json() == {"recipient": {"id": PSID}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT",
                          "message": {"text": "Your refund is on its way."}}
    out.refresh_from_db()
    assert out.external_id.endswith("_out") and out.delivery_status == "sent"


def test_messenger_send_inside_window_is_a_response(client, meta_channels, personas, fake):
    ch = meta_channels.messenger
    out = _reply(client, ch, personas)
    Message.objects.filter(direction="inbound").update(created_at=timezone.now() - timedelta(hours=1))
    fake.respond(200, load("messenger", "send_ok"))
    delivery.deliver(out.pk)
    assert fake.requests[-1].json()["messaging_type"] == "RESPONSE"


def test_messenger_watermarks_in_any_order(client, meta_channels, personas, fake):
    ch = meta_channels.messenger
    out = _reply(client, ch, personas)
    fake.respond(200, {"recipient_id": PSID, "message_id": "m_OUT1"})
    delivery.deliver(out.pk)
    # an older message sent before the watermark, without its mid in the delivery event
    older = services.reply(conversation=out.conversation, author=personas.ana, body="Earlier", channel=ch)
    fake.respond(200, {"recipient_id": PSID, "message_id": "m_OUT0"})
    delivery.deliver(older.pk)
    Message.objects.filter(pk=older.pk).update(sent_at=timezone.datetime(2025, 11, 22, 16, 0, tzinfo=dt_timezone.utc))
    Message.objects.filter(pk=out.pk).update(sent_at=timezone.datetime(2025, 11, 22, 16, 49, tzinfo=dt_timezone.utc))
    # read (watermark 16:51:40) comes before delivery (16:50:00)
    assert meta_post(client, ch, load("messenger", "read")).status_code == 200
    assert meta_post(client, ch, load("messenger", "delivery")).status_code == 200
    assert meta_post(client, ch, load("messenger", "read")).status_code == 200
    out.refresh_from_db()
    older.refresh_from_db()
    assert out.delivery_status == "read" and older.delivery_status == "read"
    assert out.delivered_at and out.read_at


def test_messenger_delivery_watermark_does_not_touch_later_messages(client, meta_channels, personas, fake):
    ch = meta_channels.messenger
    out = _reply(client, ch, personas)
    fake.respond(200, {"recipient_id": PSID, "message_id": "m_LATER"})
    delivery.deliver(out.pk)  # sent now, long after the fixture's watermark
    meta_post(client, ch, load("messenger", "delivery"))
    out.refresh_from_db()
    assert out.delivery_status == "sent"


def test_instagram_read_by_mid(client, meta_channels, personas, fake):
    ch = meta_channels.instagram
    out = _reply(client, ch, personas, kind="instagram")
    fake.respond(200, load("instagram", "send_ok"))
    delivery.deliver(out.pk)
    assert fake.requests[-1].path.startswith("/v21.0/17841405822304914/messages")
    meta_post(client, ch, load("instagram", "read"))
    out.refresh_from_db()
    assert out.external_id == "aWdfOUT1" and out.delivery_status == "read"


def test_graph_rate_limit_is_transient(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels.messenger, personas)
    fake.respond(400, load("messenger", "error_rate_limit"))
    assert delivery.deliver(out.pk).status == "retry"
    out.refresh_from_db()
    assert out.delivery_status == "queued" and "rate limit" in out.delivery_error


def test_graph_window_error_is_permanent_with_provider_text(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels.messenger, personas)
    fake.respond(400, load("messenger", "error_window"))
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert out.delivery_status == "failed" and "outside of allowed window" in out.delivery_error


def test_messenger_attachment_upload(client, meta_channels, personas, fake):
    from conversations.inbound import InboundAttachment

    out = _reply(client, meta_channels.messenger, personas,
                 attachments=[InboundAttachment("label.png", "image/png", b"PNGDATA")])
    fake.respond(200, load("messenger", "send_ok"))
    fake.respond(200, {"recipient_id": PSID, "message_id": "m_IMG"})
    assert delivery.deliver(out.pk).status == "sent"
    upload = fake.requests[-1]
    assert upload.headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="filedata"; filename="label.png"' in upload.body and b"PNGDATA" in upload.body
    assert b'"type": "image"' in upload.body
    out.refresh_from_db()
    assert out.meta["message_ids"][1] == "m_IMG"


def test_instagram_attachment_only_reply_is_refused(client, meta_channels, personas, fake):
    from conversations.inbound import InboundAttachment

    ch = meta_channels.instagram
    meta_post(client, ch, load("instagram", "text"))
    conv = Message.objects.get(channel=ch).conversation
    out = services.reply(conversation=conv, author=personas.ana, body="", channel=ch,
                         attachments=[InboundAttachment("a.pdf", "application/pdf", b"%PDF")])
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert "a.pdf" in out.delivery_error and not fake.requests

