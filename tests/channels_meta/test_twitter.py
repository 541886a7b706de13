"""X Account Activity API (direct messages): CRC, signatures, parsing, media,
read receipts, outbound and X API errors, over real HTTP."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from channels_app import delivery
from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Message

from .conftest import X_SECRET, load, twitter_post

pytestmark = pytest.mark.django_db

KIM = "3805104374"


def test_crc_response_token(client, meta_channels):
    resp = client.get(meta_channels.twitter.webhook_path, {"crc_token": "9b4507b3-9040-4669-9ba3-1a2e8a1e5f11"})
    assert resp.status_code == 200
    expected = base64.b64encode(hmac.new(X_SECRET.encode(), b"9b4507b3-9040-4669-9ba3-1a2e8a1e5f11",
                                         hashlib.sha256).digest()).decode()
    assert resp.json() == {"response_token": "sha256=" + expected}
    assert client.get(meta_channels.twitter.webhook_path).status_code == 403


@pytest.mark.parametrize("signature", [None, "sha256=AAAA", "sha256=" + base64.b64encode(b"x" * 32).decode()])
def test_bad_signature_is_403(client, meta_channels, signature):
    resp = twitter_post(client, meta_channels.twitter, load("twitter", "dm_text"), signature=signature)
    assert resp.status_code == 403
    assert InboundEnvelope.objects.get().status == "rejected" and not Message.objects.exists()


def test_hex_signature_is_not_accepted(client, meta_channels):
    body = load("twitter", "dm_text")
    hexsig = "sha256=" + hmac.new(X_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert twitter_post(client, meta_channels.twitter, body, signature=hexsig).status_code == 403


def test_dm_text_and_replay(client, meta_channels):
    ch = meta_channels.twitter
    body = load("twitter", "dm_text")
    assert twitter_post(client, ch, body).status_code == 200
    assert twitter_post(client, ch, body).status_code == 200
    msg = Message.objects.get()
    assert msg.external_id == "1463371534541611012" and msg.body_text.startswith("Hi! My order 1042")
    assert msg.created_at.timestamp() == 1763830000
    customer = msg.conversation.customer
    assert customer.name == "Kim Lee" and msg.meta["x_screen_name"] == "kimlee_"
    assert list(customer.identities.values_list("kind", "value")) == [("twitter", KIM)]


def test_phone_in_dm_is_linked(client, meta_channels, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        twitter_post(client, meta_channels.twitter, load("twitter", "dm_text"))
    customer = Message.objects.get().conversation.customer
    assert ("phone", "+4915112345678") in set(customer.identities.values_list("kind", "value"))


def test_dm_media_is_downloaded_with_the_token(client, meta_channels, fake):
    url = fake.url + "/dm/1463371534541611013/1463371530000000000/AbCdEf.jpg"
    fake.respond(200, b"JPEG!", headers={"Content-Type": "image/jpeg"})
    assert twitter_post(client, meta_channels.twitter, load("twitter", "dm_media", media_url=url)).status_code == 200
    req = fake.requests[0]
    assert req.path == "/dm/1463371534541611013/1463371530000000000/AbCdEf.jpg"
    assert req.headers["Authorization"] == "Bearer x-user-access-token"
    msg = Message.objects.get()
    assert msg.body_text == "Look at this"  # the t.co link of the media is dropped
    assert msg.attachments.get().filename == "AbCdEf.jpg"


@pytest.mark.parametrize("fixture", ["unknown", "dm_own"])
def test_typing_and_own_messages_are_kept_and_ignored(client, meta_channels, fixture):
    assert twitter_post(client, meta_channels.twitter, load("twitter", fixture)).status_code == 200
    env = InboundEnvelope.objects.get()
    assert env.status == "ignored" and env.error and not Message.objects.exists()


def _reply(client, meta_channels, personas, body="We are on it"):
    ch = meta_channels.twitter
    twitter_post(client, ch, load("twitter", "dm_text"))
    conv = Message.objects.get(channel=ch).conversation
    return services.reply(conversation=conv, author=personas.ana, body=body, channel=ch)


def test_send_dm_then_read_receipt(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas)
    fake.respond(201, load("twitter", "send_ok"))
    assert delivery.deliver(out.pk).status == "sent"
    req = fake.requests[-1]
    assert req.path == f"/2/dm_conversations/with/{KIM}/messages"
    assert req.json() == {"text": "We are on it"} and req.headers["Authorization"] == "Bearer x-user-access-token"
    out.refresh_from_db()
    assert out.external_id == "1463371534541620001" and out.meta["x_dm_conversation_id"] == f"3001969357-{KIM}"
    # an earlier outbound message is read too (read receipts are watermarks)
    earlier = services.reply(conversation=out.conversation, author=personas.ana, body="Earlier", channel=out.channel)
    Message.objects.filter(pk=earlier.pk).update(external_id="1463371534541610000", delivery_status="sent",
                                                 sent_at=out.created_at)
    for _ in range(2):
        assert twitter_post(client, meta_channels.twitter, load("twitter", "mark_read")).status_code == 200
    out.refresh_from_db()
    earlier.refresh_from_db()
    assert out.delivery_status == "read" and out.read_at and earlier.delivery_status == "read"


def test_rate_limit_is_retried(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas)
    fake.respond(429, load("twitter", "error_429"))
    assert delivery.deliver(out.pk).status == "retry"
    out.refresh_from_db()
    assert out.delivery_status == "queued" and "Too Many Requests" in out.delivery_error


def test_forbidden_fails_with_provider_detail(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas)
    fake.respond(403, load("twitter", "error_forbidden"))
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert out.delivery_error.startswith("You are not permitted to send a Direct Message to this user.")
