"""Twilio Messaging (`sms` channel): signatures, inbound SMS/MMS/WhatsApp,
status callbacks, replays, outbound against a fake Twilio over real HTTP."""
from __future__ import annotations

import pytest
from django.test import override_settings

from channels_app.delivery import deliver
from channels_app.models import EnvelopeStatus, InboundEnvelope
from conversations import services
from conversations.models import Conversation, DeliveryStatus, Direction, EventKind, Message
from customers.models import Customer, Identity
from tests.fakeprovider import FakeProvider

from .conftest import ACCOUNT_SID, AUTH_TOKEN, fixture, twilio_post

pytestmark = pytest.mark.django_db


# ---------------------------------------------------------------- authenticity

def test_valid_signature_creates_conversation_and_answers_empty_twiml(client, sms_channel):
    resp = twilio_post(client, sms_channel, fixture("sms/inbound_sms.json"))
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/xml")
    assert resp.content.decode().endswith("<Response/>")
    msg = Message.objects.get(channel=sms_channel)
    assert msg.external_id == "SM1a2b3c4d5e6f708192a3b4c5d6e7f809"
    assert msg.body_text == "Hi, my order #1042 has not arrived yet."
    assert msg.conversation.team == sms_channel.team
    ident = Identity.objects.get(customer=msg.conversation.customer)
    assert (ident.kind, ident.value) == ("phone", "+14155550123")
    env = InboundEnvelope.objects.get()
    assert env.status == EnvelopeStatus.PROCESSED and env.message_ids == [msg.pk]


@pytest.mark.parametrize("how", ["wrong_token", "missing", "tampered_body", "other_url"])
def test_bad_signature_is_403_and_envelope_rejected(client, sms_channel, how):
    params = fixture("sms/inbound_sms.json")
    if how == "wrong_token":
        resp = twilio_post(client, sms_channel, params, token="0" * 32)
    elif how == "missing":
        resp = twilio_post(client, sms_channel, params, signature="")
    elif how == "tampered_body":
        from twilio.request_validator import RequestValidator

        from .conftest import signed_url

        sig = RequestValidator(AUTH_TOKEN).compute_signature(signed_url(sms_channel)[1], params)
        resp = twilio_post(client, sms_channel, {**params, "Body": "give me a refund"}, signature=sig)
    else:
        resp = twilio_post(client, sms_channel, params, sign_url="https://evil.example/hooks/sms/x/")
    assert resp.status_code == 403
    env = InboundEnvelope.objects.get()
    assert env.status == EnvelopeStatus.REJECTED
    assert b"MessageSid=SM1a2b3c4d5e6f708192a3b4c5d6e7f809" in bytes(env.body)  # kept as received
    assert not Message.objects.exists()


def test_public_url_override_for_proxies(client, personas):
    from .conftest import make_twilio_channel

    channel = make_twilio_channel("sms", public_url="https://help.acme.example")
    resp = twilio_post(client, channel, fixture("sms/inbound_sms.json"))  # signed on the overriding URL
    assert resp.status_code == 200
    with override_settings(PUBLIC_URL="https://help.acme.example"):
        channel.settings.pop("public_url")
        channel.save()
        assert twilio_post(client, channel, fixture("sms/inbound_sms.json", MessageSid="SMother")).status_code == 200
    # signed for the server's own URL while Twilio calls the public one: refused
    channel.settings["public_url"] = "https://elsewhere.example"
    channel.save()
    from .conftest import signed_url
    from twilio.request_validator import RequestValidator
    params = fixture("sms/inbound_sms.json", MessageSid="SMthird")
    sig = RequestValidator(AUTH_TOKEN).compute_signature("https://help.acme.example" + signed_url(channel)[0], params)
    assert twilio_post(client, channel, params, signature=sig).status_code == 403


def test_channel_without_auth_token_refuses_everything(client, personas):
    from tests.factories import ChannelFactory

    channel = ChannelFactory(kind="sms", settings={"account_sid": ACCOUNT_SID})
    assert twilio_post(client, channel, fixture("sms/inbound_sms.json")).status_code == 403


# ---------------------------------------------------------------- inbound

def test_replay_is_a_noop(client, sms_channel):
    params = fixture("sms/inbound_sms.json")
    assert twilio_post(client, sms_channel, params).status_code == 200
    assert twilio_post(client, sms_channel, params).status_code == 200
    assert Message.objects.count() == 1
    assert InboundEnvelope.objects.count() == 2
    assert Conversation.objects.get().message_count == 1


def test_mms_media_fetched_with_basic_auth_and_cdn_redirect_without(client, sms_channel):
    with FakeProvider() as fake:
        sms_channel.settings["api_base"] = fake.url
        sms_channel.save()
        params = fixture("sms/inbound_mms.json")
        params["MediaUrl0"] = params["MediaUrl0"].replace("https://api.twilio.com", fake.url)
        # Twilio answers the media URL with a redirect to its CDN, which serves the bytes
        fake.respond(307, b"", headers={"Location": f"{fake.url}/cdn/abc.jpg"})
        fake.respond(200, b"\xff\xd8\xff\xe0JPEGDATA", headers={"Content-Type": "image/jpeg"})
        resp = twilio_post(client, sms_channel, params)
    assert resp.status_code == 200
    msg = Message.objects.get()
    att = msg.attachments.get()
    assert att.content_type == "image/jpeg" and att.filename.endswith(".jpg")
    assert att.file.read() == b"\xff\xd8\xff\xe0JPEGDATA"
    first, second = fake.requests
    assert first.path.endswith("/Media/ME0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f")
    import base64
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert second.path == "/cdn/abc.jpg"


def test_mms_media_failure_keeps_the_text_with_a_note(client, sms_channel):
    with FakeProvider() as fake:
        sms_channel.settings["api_base"] = fake.url
        sms_channel.save()
        params = fixture("sms/inbound_mms.json")
        params["MediaUrl0"] = params["MediaUrl0"].replace("https://api.twilio.com", fake.url)
        fake.respond(404, {"code": 20404, "message": "Not found", "status": 404})
        assert twilio_post(client, sms_channel, params).status_code == 200
    msg = Message.objects.get()
    assert msg.body_text == "Here is a photo of the damaged box"
    assert not msg.attachments.exists()
    assert "could not be downloaded" in msg.meta["notes"][0]


def test_whatsapp_via_twilio_and_sms_from_same_number_are_one_customer(client, sms_channel):
    assert twilio_post(client, sms_channel, fixture("sms/inbound_sms.json")).status_code == 200
    assert twilio_post(client, sms_channel, fixture("sms/inbound_whatsapp.json")).status_code == 200
    assert Customer.objects.count() == 1
    customer = Customer.objects.get()
    assert customer.name == "Kim Lee"  # ProfileName
    # one E.164 identity serves both (the core treats phone and whatsapp kinds as one number)
    assert ("phone", "+14155550123") in set(customer.identities.values_list("kind", "value"))
    assert Conversation.objects.count() == 1
    wa = Message.objects.get(external_id="SM7e6d5c4b3a291807f6e5d4c3b2a1f0e9")
    assert wa.meta["whatsapp"] is True and wa.author_name == "Kim Lee"


def test_unknown_event_is_200_and_kept_as_ignored_envelope(client, sms_channel):
    resp = twilio_post(client, sms_channel, fixture("sms/unknown_event.json"))
    assert resp.status_code == 200
    env = InboundEnvelope.objects.get()
    assert env.status == EnvelopeStatus.IGNORED and env.error
    assert not Message.objects.exists()


def test_unparseable_sender_is_400_kept_for_inspection(client, sms_channel):
    resp = twilio_post(client, sms_channel, fixture("sms/inbound_sms.json", From="not-a-number"))
    assert resp.status_code == 400
    assert InboundEnvelope.objects.get().status == EnvelopeStatus.FAILED


# ---------------------------------------------------------------- outbound + statuses

def _conversation_from_sms(client, channel, fixture_name="sms/inbound_sms.json"):
    assert twilio_post(client, channel, fixture(fixture_name)).status_code == 200
    return Conversation.objects.get()


def _reply(conversation, personas, channel, fake, body="Thanks, we are on it."):
    channel.settings["api_base"] = fake.url
    channel.save()
    msg = services.reply(conversation=conversation, author=personas.ana, body=body, channel=channel)
    return msg


def test_send_success_posts_documented_form_and_records_sid(client, sms_channel, personas, settings):
    conv = _conversation_from_sms(client, sms_channel)
    with FakeProvider() as fake:
        fake.respond(201, fixture("sms/send_success.json"))
        msg = _reply(conv, personas, sms_channel, fake)
        outcome = deliver(msg.pk)
    assert outcome.status == "sent"
    req = fake.requests[0]
    assert req.method == "POST" and req.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    from urllib.parse import parse_qs
    form = parse_qs(req.body.decode())
    assert form["To"] == ["+14155550123"] and form["From"] == ["+14155550100"]
    assert form["Body"] == ["Thanks, we are on it."]
    assert form["StatusCallback"] == [settings.PUBLIC_URL + sms_channel.webhook_path]
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    msg.refresh_from_db()
    assert msg.external_id == "SMaa11bb22cc33dd44ee55ff6677889900"
    assert msg.delivery_status == DeliveryStatus.SENT


def test_reply_to_whatsapp_customer_goes_out_as_whatsapp(client, sms_channel, personas):
    conv = _conversation_from_sms(client, sms_channel, "sms/inbound_whatsapp.json")
    with FakeProvider() as fake:
        fake.respond(201, fixture("sms/send_success.json"))
        msg = _reply(conv, personas, sms_channel, fake)
        assert deliver(msg.pk).status == "sent"
    from urllib.parse import parse_qs
    form = parse_qs(fake.requests[0].body.decode())
    assert form["To"] == ["whatsapp:+14155550123"] and form["From"] == ["whatsapp:+14155550100"]


@pytest.mark.parametrize("status,fixture_name,expected", [
    (400, "sms/send_error_21211.json", "Twilio error 21211: The 'To' number +1415555 is not a valid phone number."),
    (401, "sms/send_error_20003.json", "Twilio error 20003: Authenticate"),
    (400, "sms/send_error_63016.json", "Twilio error 63016: Failed to send freeform message"),
])
def test_permanent_twilio_errors_fail_the_message_with_twilios_words(client, sms_channel, personas, status,
                                                                     fixture_name, expected):
    conv = _conversation_from_sms(client, sms_channel)
    with FakeProvider() as fake:
        fake.respond(status, fixture(fixture_name))
        msg = _reply(conv, personas, sms_channel, fake)
        assert deliver(msg.pk).status == "failed"
    msg.refresh_from_db()
    assert msg.delivery_status == DeliveryStatus.FAILED
    assert msg.delivery_error.startswith(expected)
    assert conv.events.filter(kind=EventKind.DELIVERY_FAILED).count() == 1


@pytest.mark.parametrize("status,body", [(429, "sms/send_error_20429.json"), (503, None)])
def test_rate_limit_and_server_errors_are_retried(client, sms_channel, personas, status, body):
    conv = _conversation_from_sms(client, sms_channel)
    with FakeProvider() as fake:
        fake.respond(status, fixture(body) if body else b"Service Unavailable",
                     headers={"Content-Type": "application/json" if body else "text/plain", "Retry-After": "30"})
        msg = _reply(conv, personas, sms_channel, fake)
        outcome = deliver(msg.pk)
    assert outcome.status == "retry" and outcome.retry_in >= 30
    msg.refresh_from_db()
    assert msg.delivery_status == DeliveryStatus.QUEUED and msg.delivery_attempts == 1
    assert ("20429" in msg.delivery_error) if body else ("503" in msg.delivery_error)


def _sent_message(client, sms_channel, personas):
    conv = _conversation_from_sms(client, sms_channel)
    with FakeProvider() as fake:
        fake.respond(201, fixture("sms/send_success.json"))
        msg = _reply(conv, personas, sms_channel, fake)
        deliver(msg.pk)
    msg.refresh_from_db()
    return msg


def test_status_callbacks_out_of_order_and_repeated(client, sms_channel, personas):
    msg = _sent_message(client, sms_channel, personas)
    # read arrives before delivered, then sent, then read again
    for name in ["status_read", "status_delivered", "status_sent", "status_read", "status_queued"]:
        assert twilio_post(client, sms_channel, fixture(f"sms/{name}.json")).status_code == 200
    msg.refresh_from_db()
    assert msg.delivery_status == DeliveryStatus.READ
    assert msg.read_at and msg.delivered_at and msg.sent_at


def test_undelivered_status_marks_failed_with_error_code(client, sms_channel, personas):
    msg = _sent_message(client, sms_channel, personas)
    assert twilio_post(client, sms_channel, fixture("sms/status_undelivered.json")).status_code == 200
    msg.refresh_from_db()
    assert msg.delivery_status == DeliveryStatus.FAILED
    assert "30003" in msg.delivery_error and "Unreachable destination handset" in msg.delivery_error
    # a late "failed" after the first failure changes nothing; a late "delivered" wins over failed
    assert twilio_post(client, sms_channel, fixture("sms/status_failed.json")).status_code == 200
    assert twilio_post(client, sms_channel, fixture("sms/status_delivered.json")).status_code == 200
    msg.refresh_from_db()
    assert msg.delivery_status == DeliveryStatus.DELIVERED and msg.delivery_error == ""


def test_failed_after_delivered_is_ignored(client, sms_channel, personas):
    msg = _sent_message(client, sms_channel, personas)
    twilio_post(client, sms_channel, fixture("sms/status_delivered.json"))
    twilio_post(client, sms_channel, fixture("sms/status_failed.json"))
    msg.refresh_from_db()
    assert msg.delivery_status == DeliveryStatus.DELIVERED


def test_status_for_unknown_message_is_accepted(client, sms_channel):
    assert twilio_post(client, sms_channel, fixture("sms/status_delivered.json")).status_code == 200
    assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()


def test_outbound_attachment_is_sent_as_signed_media_url_twilio_can_fetch(client, sms_channel, personas):
    from conversations.inbound import InboundAttachment

    conv = _conversation_from_sms(client, sms_channel)
    with FakeProvider() as fake:
        fake.respond(201, fixture("sms/send_success.json"))
        sms_channel.settings["api_base"] = fake.url
        sms_channel.save()
        msg = services.reply(conversation=conv, author=personas.ana, body="Label attached", channel=sms_channel,
                             attachments=[InboundAttachment("label.pdf", "application/pdf", b"%PDF-1.4 label")])
        assert deliver(msg.pk).status == "sent"
    from urllib.parse import parse_qs, urlsplit
    media_url = parse_qs(fake.requests[0].body.decode())["MediaUrl"][0]
    resp = client.get(urlsplit(media_url).path)
    assert resp.status_code == 200 and b"".join(resp.streaming_content) == b"%PDF-1.4 label"
    assert client.get(urlsplit(media_url).path[:-3] + "xyz/").status_code == 404


def test_with_a_broker_the_hook_acknowledges_and_a_worker_ingests(client, sms_channel, monkeypatch):
    from channels_app import tasks
    from channels_app.services import envelope_replay
    from helpdesk.celery import app

    queued = []
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setattr(tasks.replay_envelope, "delay", lambda pk: queued.append(pk))
    resp = twilio_post(client, sms_channel, fixture("sms/inbound_sms.json"))
    assert resp.status_code == 200 and resp.content.decode().endswith("<Response/>")
    env = InboundEnvelope.objects.get()
    assert queued == [env.pk] and env.status == EnvelopeStatus.PENDING and not Message.objects.exists()
    # a bad signature is still refused in the request
    assert twilio_post(client, sms_channel, fixture("sms/inbound_sms.json"), token="1" * 32).status_code == 403
    assert len(queued) == 1
    assert envelope_replay(env)  # what the worker's task does
    msg = Message.objects.get()
    env.refresh_from_db()
    assert env.status == EnvelopeStatus.PROCESSED and msg.created_at == env.received_at


def test_process_inline_setting_keeps_processing_in_the_request(client, sms_channel, monkeypatch):
    from channels_app import tasks
    from helpdesk.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setattr(tasks.replay_envelope, "delay", lambda pk: pytest.fail("queued"))
    sms_channel.settings["process_inline"] = True
    sms_channel.save()
    assert twilio_post(client, sms_channel, fixture("sms/inbound_sms.json")).status_code == 200
    assert Message.objects.count() == 1


def test_lost_queue_task_is_picked_up_by_the_periodic_sweep(client, sms_channel, monkeypatch):
    from datetime import timedelta

    from channels_app import tasks
    from helpdesk.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setattr(tasks.replay_envelope, "delay", lambda pk: None)  # the broker lost it
    twilio_post(client, sms_channel, fixture("sms/inbound_sms.json"))
    env = InboundEnvelope.objects.get()
    assert tasks.process_stale_pending() == 0  # too fresh: its task may still be on its way
    InboundEnvelope.objects.filter(pk=env.pk).update(received_at=env.received_at - timedelta(minutes=5))
    assert tasks.process_stale_pending() == 1
    env.refresh_from_db()
    assert env.status == EnvelopeStatus.PROCESSED and Message.objects.count() == 1


def test_whatsapp_template_is_sent_as_content_sid(client, sms_channel, personas):
    conv = _conversation_from_sms(client, sms_channel, "sms/inbound_whatsapp.json")
    with FakeProvider() as fake:
        fake.respond(201, fixture("sms/send_success.json"))
        sms_channel.settings["api_base"] = fake.url
        sms_channel.save()
        msg = services.reply(conversation=conv, author=personas.ana, body="(template: order update)",
                             channel=sms_channel,
                             meta={"template": {"content_sid": "HXb5b62575e6e4ff6129ad7c8efe1f983e",
                                                "variables": {"1": "Kim", "2": "1042"}}})
        assert deliver(msg.pk).status == "sent"
    from urllib.parse import parse_qs
    form = parse_qs(fake.requests[0].body.decode())
    assert form["ContentSid"] == ["HXb5b62575e6e4ff6129ad7c8efe1f983e"] and "Body" not in form
    import json
    assert json.loads(form["ContentVariables"][0]) == {"1": "Kim", "2": "1042"}
