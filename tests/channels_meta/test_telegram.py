"""Telegram Bot API adapter and the telegram_set_webhook command, over real HTTP."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from channels_app import delivery
from channels_app.models import Channel, InboundEnvelope
from conversations import services
from conversations.inbound import InboundAttachment
from conversations.models import Message
from customers.models import Customer, MergeSuggestion
from tests.factories import IdentityFactory

from .conftest import TG_SECRET, load, telegram_post

pytestmark = pytest.mark.django_db

TOKEN = "7000000001:AAHfake-bot-token"


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", TG_SECRET + "x"])
def test_wrong_or_missing_secret_token_is_403(client, meta_channels, secret):
    resp = telegram_post(client, meta_channels.telegram, load("telegram", "text"), secret=secret)
    assert resp.status_code == 403
    env = InboundEnvelope.objects.get()
    assert env.status == "rejected" and not Message.objects.exists()


def test_get_is_not_a_handshake(client, meta_channels):
    assert client.get(meta_channels.telegram.webhook_path).status_code == 405


def test_text_message_and_replay(client, meta_channels):
    ch = meta_channels.telegram
    body = load("telegram", "text")
    assert telegram_post(client, ch, body).status_code == 200
    assert telegram_post(client, ch, body).status_code == 200
    msg = Message.objects.get()
    assert msg.external_id == "111222333:17" and msg.body_text.startswith("Hallo, my package")
    customer = msg.conversation.customer
    assert customer.name == "Kim Lee" and customer.language == "de"
    assert list(customer.identities.values_list("kind", "value")) == [("telegram", "111222333")]
    assert msg.meta["telegram_username"] == "kimlee"


def test_photo_takes_biggest_size_via_getfile(client, meta_channels, fake):
    fake.respond(200, load("telegram", "getfile_ok"))
    fake.respond(200, b"JPEGBYTES!!", headers={"Content-Type": "application/octet-stream"})
    assert telegram_post(client, meta_channels.telegram, load("telegram", "photo")).status_code == 200
    getfile, download = fake.requests
    assert getfile.path == f"/bot{TOKEN}/getFile" and getfile.json() == {"file_id": "AgACAgQAAxkBAAMSZ0big"}
    assert download.method == "GET" and download.path == f"/file/bot{TOKEN}/photos/file_42.jpg"
    msg = Message.objects.get()
    assert msg.body_text == "Damaged box"
    att = msg.attachments.get()
    assert att.filename == "file_42.jpg" and att.content_type == "image/jpeg" and att.size == 11


def test_document_keeps_its_name_and_type(client, meta_channels, fake):
    fake.respond(200, {"ok": True, "result": {"file_id": "BQACAgQAAxkBAAMTZ0doc", "file_unique_id": "AgADdoc",
                                              "file_size": 11, "file_path": "documents/file_7.pdf"}})
    fake.respond(200, b"%PDF-1.4 ok", headers={"Content-Type": "application/octet-stream"})
    telegram_post(client, meta_channels.telegram, load("telegram", "document"))
    att = Message.objects.get().attachments.get()
    assert att.filename == "invoice-1042.pdf" and att.content_type == "application/pdf"


def test_getfile_error_becomes_a_note(client, meta_channels, fake):
    fake.respond(400, {"ok": False, "error_code": 400, "description": "Bad Request: file is too big"})
    assert telegram_post(client, meta_channels.telegram, load("telegram", "document")).status_code == 200
    msg = Message.objects.get()
    assert not msg.attachments.exists() and "file is too big" in msg.meta["notes"][0]


@pytest.mark.parametrize("fixture", ["unknown", "group"])
def test_unknown_updates_and_group_chats_are_kept_and_ignored(client, meta_channels, fixture):
    assert telegram_post(client, meta_channels.telegram, load("telegram", fixture)).status_code == 200
    env = InboundEnvelope.objects.get()
    assert env.status == "ignored" and env.error and not Message.objects.exists()


def test_email_in_text_suggests_merge_with_existing_customer(client, meta_channels,
                                                             django_capture_on_commit_callbacks):
    IdentityFactory(kind="email", value="kim.lee@example.org")
    with django_capture_on_commit_callbacks(execute=True):
        telegram_post(client, meta_channels.telegram, load("telegram", "text"))
    assert Customer.objects.count() == 2 and MergeSuggestion.objects.count() == 1


# ------------------------------------------------------------------ outbound

def _reply(client, meta_channels, personas, **kwargs):
    ch = meta_channels.telegram
    telegram_post(client, ch, load("telegram", "text"))
    conv = Message.objects.get(channel=ch).conversation
    return services.reply(conversation=conv, author=personas.ana, body="We are on it", channel=ch, **kwargs)


def test_send_message(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas)
    fake.respond(200, load("telegram", "send_ok"))
    assert delivery.deliver(out.pk).status == "sent"
    req = fake.requests[-1]
    assert req.path == f"/bot{TOKEN}/sendMessage" and req.json() == {"chat_id": "111222333", "text": "We are on it"}
    out.refresh_from_db()
    assert out.external_id == "111222333:20" and out.delivery_status == "sent"


def test_send_with_attachment_uses_senddocument(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas,
                 attachments=[InboundAttachment("label.pdf", "application/pdf", b"%PDF label")])
    fake.respond(200, load("telegram", "send_ok"))
    fake.respond(200, {"ok": True, "result": {"message_id": 21, "chat": {"id": 111222333, "type": "private"},
                                              "date": 1763830401, "document": {"file_id": "x", "file_unique_id": "y"}}})
    assert delivery.deliver(out.pk).status == "sent"
    doc = fake.requests[-1]
    assert doc.path == f"/bot{TOKEN}/sendDocument" and b'filename="label.pdf"' in doc.body
    out.refresh_from_db()
    assert out.meta["telegram_ids"] == ["111222333:20", "111222333:21"]


def test_blocked_bot_fails_with_telegram_description(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas)
    fake.respond(403, load("telegram", "error_blocked"))
    assert delivery.deliver(out.pk).status == "failed"
    out.refresh_from_db()
    assert out.delivery_status == "failed"
    assert out.delivery_error.startswith("Forbidden: bot was blocked by the user")


def test_too_many_requests_retries_after_the_given_delay(client, meta_channels, personas, fake):
    out = _reply(client, meta_channels, personas)
    fake.respond(429, load("telegram", "error_429"))
    outcome = delivery.deliver(out.pk)
    assert outcome.status == "retry" and outcome.retry_in >= 7
    out.refresh_from_db()
    assert out.delivery_status == "queued" and "Too Many Requests" in out.delivery_error


# ------------------------------------------------------------------ telegram_set_webhook

def test_set_webhook_command(meta_channels, fake, settings):
    ch = meta_channels.telegram
    fake.respond(200, load("telegram", "setwebhook_ok"))
    out = StringIO()
    call_command("telegram_set_webhook", str(ch.uuid), stdout=out, stderr=StringIO())
    req = fake.requests[-1]
    assert req.path == f"/bot{TOKEN}/setWebhook"
    assert req.json() == {"url": ch.webhook_url, "secret_token": TG_SECRET, "allowed_updates": ["message"],
                          "drop_pending_updates": False}
    assert ch.webhook_url.endswith(f"/hooks/telegram/{ch.uuid}/")
    assert "Webhook was set" in out.getvalue() and TOKEN not in out.getvalue() and TG_SECRET not in out.getvalue()


def test_set_webhook_generates_a_missing_secret(meta_channels, fake):
    ch = meta_channels.telegram
    ch.secrets.pop("secret_token")
    ch.save()
    fake.respond(200, load("telegram", "setwebhook_ok"))
    call_command("telegram_set_webhook", "--all", "--url", "https://help.acme.test/hooks/x/", stdout=StringIO(),
                 stderr=StringIO())
    ch = Channel.objects.get(pk=ch.pk)
    secret = ch.get("secret_token")
    assert secret and len(secret) >= 32 and "secret_token" not in ch.settings
    assert fake.requests[-1].json()["secret_token"] == secret
    assert fake.requests[-1].json()["url"] == "https://help.acme.test/hooks/x/"


def test_set_webhook_reports_telegram_errors(meta_channels, fake):
    fake.respond(401, load("telegram", "error_unauthorized"))
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("telegram_set_webhook", str(meta_channels.telegram.pk), stdout=StringIO(), stderr=err)
    assert "Unauthorized" in err.getvalue()


def test_set_webhook_delete_and_unknown_channel(meta_channels, fake):
    fake.respond(200, {"ok": True, "result": True, "description": "Webhook was deleted"})
    call_command("telegram_set_webhook", str(meta_channels.telegram.uuid), "--delete", stdout=StringIO())
    assert fake.requests[-1].path == f"/bot{TOKEN}/deleteWebhook"
    with pytest.raises(CommandError):
        call_command("telegram_set_webhook", "00000000-0000-0000-0000-000000000000", stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("telegram_set_webhook", stdout=StringIO())


def test_secret_token_is_never_stored(client, meta_channels):
    ch = meta_channels.telegram
    telegram_post(client, ch, load("telegram", "text"))
    telegram_post(client, ch, load("telegram", "text"), secret="guess")
    for env in InboundEnvelope.objects.all():
        assert TG_SECRET not in str(env.headers) and "guess" not in str(env.headers)
    assert "secret_token" not in ch.settings and "bot_token" not in ch.settings
    assert ch.secrets["secret_token"] == TG_SECRET
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT secrets FROM channels_app_channel WHERE id = %s", [ch.pk])
        stored = cur.fetchone()[0]
    assert TOKEN not in str(stored) and TG_SECRET not in str(stored)


def test_shared_contact_phone_is_linked(client, meta_channels, django_capture_on_commit_callbacks):
    import json

    data = json.loads(load("telegram", "text"))
    data["message"].pop("text")
    data["message"]["contact"] = {"phone_number": "4915112345678", "first_name": "Kim", "last_name": "Lee",
                                  "user_id": 111222333}
    with django_capture_on_commit_callbacks(execute=True):
        telegram_post(client, meta_channels.telegram, json.dumps(data).encode())
    customer = Message.objects.get().conversation.customer
    assert ("phone", "+4915112345678") in set(customer.identities.values_list("kind", "value"))


def test_file_over_the_limit_is_not_downloaded(client, meta_channels, fake, settings):
    settings.ATTACHMENT_MAX_BYTES = 10
    assert telegram_post(client, meta_channels.telegram, load("telegram", "photo")).status_code == 200
    msg = Message.objects.get()
    assert not fake.requests and "larger than the limit" in msg.meta["notes"][0]
