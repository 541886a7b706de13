"""Issue #4 end to end: one customer writes by chat, then email, then WhatsApp,
then calls. One conversation, three channel switches, and the agent's reply
defaults to WhatsApp: a phone call is not a channel to write to, so it does
not become the default reply channel (conversations.services.default_reply_channel)."""
from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from channels_app.delivery import deliver
from conversations import services
from conversations.inbound import InboundMessage
from conversations.models import Conversation, EventKind
from customers.models import Customer
from tests.fakeprovider import FakeProvider

from .conftest import fixture, make_twilio_channel, twilio_post

pytestmark = pytest.mark.django_db

EMAIL = "kim@example.org"
PHONE = "+14155550123"


def _chat_then_email(channels):
    # chat: the pre-chat form asked for an email address and a phone number
    services.ingest(InboundMessage(channel=channels.chat, external_id="chat-1", text="Hi, my order is late",
                                   identities=[("chat", "visitor-42"), ("email", EMAIL), ("phone", PHONE)],
                                   name="Kim Lee"))
    # email: a new thread (no In-Reply-To), within SWITCH_WINDOW of the chat
    services.ingest(InboundMessage(channel=channels.email, external_id="<m1@example.org>", own_key="<m1@example.org>",
                                   identities=[("email", EMAIL)], subject="Order 1042",
                                   text="Following up by mail", is_email_thread=True))


def _assert_one_case_three_switches():
    assert Customer.objects.count() == 1
    conv = Conversation.objects.get()
    switches = list(conv.events.filter(kind=EventKind.CHANNEL_SWITCHED).order_by("at", "id")
                    .values_list("data__from", "data__to"))
    assert len(switches) == 3, switches
    assert conv.message_count == 4
    assert conv.last_inbound_kind == "phone"
    return conv, switches


def test_chat_email_whatsapp_call_is_one_case_and_reply_defaults_to_whatsapp(client, channels, personas):
    phone = make_twilio_channel("phone", team=personas.billing)
    _chat_then_email(channels)
    # WhatsApp (Cloud API channel; its webhook adapter is built in parallel, so the parsed message is ingested)
    services.ingest(InboundMessage(channel=channels.whatsapp, external_id="wamid.HBgLMTQxNTU1NTAxMjMVAgASGBQz",
                                   identities=[("whatsapp", "14155550123")], name="Kim Lee",
                                   text="I'm on WhatsApp now"))
    # the call, through our Twilio Voice webhook
    resp = twilio_post(client, phone, fixture("phone/incoming_call.json"))
    assert resp.status_code == 200 and "<Record " in resp.content.decode()

    conv, switches = _assert_one_case_three_switches()
    assert switches == [("chat", "email"), ("email", "whatsapp"), ("whatsapp", "phone")]
    channel, reason = services.default_reply_channel(conv)
    assert channel == channels.whatsapp, reason
    assert services.reply_channels(conv)[0] == channels.whatsapp
    assert phone not in services.reply_channels(conv)
    reply = services.reply(conversation=conv, author=personas.ana, body="We are on it, Kim.")
    assert reply.channel == channels.whatsapp and reply.recipient == PHONE


def test_same_journey_with_whatsapp_via_twilio(client, channels, personas):
    """WhatsApp through Twilio arrives on the `sms` channel; the reply goes back
    there as a WhatsApp message (whatsapp: prefixes), not as an SMS."""
    sms = make_twilio_channel("sms", team=personas.billing)
    phone = make_twilio_channel("phone", team=personas.billing)
    _chat_then_email(channels)
    assert twilio_post(client, sms, fixture("sms/inbound_whatsapp.json")).status_code == 200
    assert twilio_post(client, phone, fixture("phone/incoming_call.json")).status_code == 200

    conv, switches = _assert_one_case_three_switches()
    assert switches == [("chat", "email"), ("email", "sms"), ("sms", "phone")]
    channel, _reason = services.default_reply_channel(conv)
    assert channel == sms
    with FakeProvider() as fake:
        sms.settings["api_base"] = fake.url
        sms.save()
        fake.respond(201, fixture("sms/send_success.json"))
        reply = services.reply(conversation=conv, author=personas.ana, body="We are on it, Kim.")
        assert deliver(reply.pk).status == "sent"
    form = parse_qs(fake.requests[0].body.decode())
    assert form["To"] == [f"whatsapp:{PHONE}"] and form["Body"] == ["We are on it, Kim."]


def test_only_calls_fall_back_to_origin(channels, personas):
    """A customer who only ever called has no written channel: the default is none
    of the phone channels, and the agent must pick one the customer has (e.g. SMS)."""
    phone = make_twilio_channel("phone", team=personas.billing)
    services.ingest(InboundMessage(channel=phone, external_id="CA1", identities=[("phone", PHONE)],
                                   text="Incoming call"))
    conv = Conversation.objects.get()
    channel, _reason = services.default_reply_channel(conv)
    assert channel is None
    assert channels.sms in services.reply_channels(conv)
