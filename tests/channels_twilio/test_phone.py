"""Twilio Voice (`phone` channel): incoming call, status, voicemail recording
and transcription, in order and out of order; agents' call notes."""
from __future__ import annotations

import base64

import pytest

from channels_app.models import EnvelopeStatus, InboundEnvelope
from conversations import services
from conversations.models import Conversation, Direction, EventKind, Message
from tests.fakeprovider import FakeProvider

from .conftest import ACCOUNT_SID, AUTH_TOKEN, fixture, twilio_post

pytestmark = pytest.mark.django_db
CALL_SID = "CA5e4d3c2b1a0f9e8d7c6b5a4938271605"


def _recording_params(fake_url):
    params = fixture("phone/recording.json")
    params["RecordingUrl"] = params["RecordingUrl"].replace("https://api.twilio.com", fake_url)
    return params


def test_incoming_call_creates_conversation_and_answers_voicemail_twiml(client, phone_channel, settings):
    resp = twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/xml")
    xml = resp.content.decode()
    assert "<Say>" in xml and "<Record " in xml
    hook = settings.PUBLIC_URL + phone_channel.webhook_path
    assert f'recordingStatusCallback="{hook}?event=recording"' in xml
    assert f'transcribeCallback="{hook}?event=transcription"' in xml
    assert f'action="{hook}?event=after-record"' in xml
    msg = Message.objects.get()
    assert msg.channel_kind == "phone" and msg.direction == Direction.INBOUND
    assert msg.external_id == CALL_SID and msg.body_text == "Incoming call"
    assert msg.meta["call"]["status"] == "ringing" and msg.meta["call"]["from"] == "+14155550123"
    assert msg.conversation.customer.identities.get().value == "+14155550123"


def test_call_joins_the_callers_open_conversation(client, phone_channel, channels, inbound):
    first = services.ingest(inbound(channels.sms, "phone", "+1 415 555 0123", text="Where is my parcel?"))
    twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
    assert Conversation.objects.count() == 1
    conv = Conversation.objects.get()
    assert conv.pk == first.message.conversation_id and conv.message_count == 2
    assert conv.events.filter(kind=EventKind.CHANNEL_SWITCHED, data__to="phone").count() == 1


def test_full_voicemail_flow_status_recording_transcription(client, phone_channel):
    with FakeProvider() as fake:
        phone_channel.settings["api_base"] = fake.url
        phone_channel.save()
        assert twilio_post(client, phone_channel, fixture("phone/incoming_call.json")).status_code == 200
        after = twilio_post(client, phone_channel, fixture("phone/after_record.json"), query="event=after-record")
        assert "<Hangup/>" in after.content.decode()
        fake.respond(200, b"ID3-mp3-bytes", headers={"Content-Type": "audio/mpeg"})
        assert twilio_post(client, phone_channel, _recording_params(fake.url), query="event=recording").status_code == 200
        assert twilio_post(client, phone_channel, fixture("phone/transcription.json"),
                           query="event=transcription").status_code == 200
        assert twilio_post(client, phone_channel, fixture("phone/status_completed.json")).status_code == 200
    msg = Message.objects.get()
    call = msg.meta["call"]
    assert call["status"] == "completed" and call["duration"] == 47
    assert call["outcome"] == "voicemail" and call["recording_sid"].startswith("RE")
    assert call["transcription"] == "Hi, this is Kim, please call me back about my order."
    assert "please call me back" in msg.body_text
    att = msg.attachments.get()
    assert att.content_type == "audio/mpeg" and att.file.read() == b"ID3-mp3-bytes"
    req = fake.requests[0]
    assert req.path.endswith(".mp3")
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert not InboundEnvelope.objects.filter(status=EnvelopeStatus.FAILED).exists()
    assert InboundEnvelope.objects.filter(status=EnvelopeStatus.PROCESSED).count() == 4


def test_callbacks_out_of_order_and_replayed(client, phone_channel):
    with FakeProvider() as fake:
        phone_channel.settings["api_base"] = fake.url
        phone_channel.save()
        twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
        # status first, then transcription, then recording (twice), then the status again
        twilio_post(client, phone_channel, fixture("phone/status_completed.json"))
        twilio_post(client, phone_channel, fixture("phone/transcription.json"), query="event=transcription")
        fake.respond(200, b"mp3", headers={"Content-Type": "audio/mpeg"})
        twilio_post(client, phone_channel, _recording_params(fake.url), query="event=recording")
        twilio_post(client, phone_channel, _recording_params(fake.url), query="event=recording")
        twilio_post(client, phone_channel, fixture("phone/transcription.json"), query="event=transcription")
        twilio_post(client, phone_channel, fixture("phone/status_completed.json"))
        twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
    assert len(fake.requests) == 1  # the replayed recording is not downloaded again
    msg = Message.objects.get()
    assert msg.attachments.count() == 1
    assert msg.body_text.count("please call me back") == 1
    assert msg.meta["call"]["outcome"] == "voicemail" and msg.meta["call"]["duration"] == 47
    assert Conversation.objects.get().message_count == 1


def test_unanswered_call_is_missed(client, phone_channel):
    twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
    twilio_post(client, phone_channel, fixture("phone/status_no_answer.json"))
    call = Message.objects.get().meta["call"]
    assert call["status"] == "no-answer" and call["outcome"] == "missed" and call["duration"] == 0


def test_forwarding_dials_the_team_then_falls_back_to_voicemail(client, phone_channel, settings):
    phone_channel.settings["forward_to"] = "+14155550199"
    phone_channel.save()
    xml = twilio_post(client, phone_channel, fixture("phone/incoming_call.json")).content.decode()
    assert "<Dial" in xml and "<Number>+14155550199</Number>" in xml and "event=dial" in xml
    busy = twilio_post(client, phone_channel, fixture("phone/incoming_call.json", DialCallStatus="no-answer",
                                                      CallStatus="in-progress"), query="event=dial")
    assert "<Record " in busy.content.decode()
    done = twilio_post(client, phone_channel, fixture("phone/incoming_call.json", DialCallStatus="completed",
                                                      CallStatus="in-progress"), query="event=dial")
    assert "<Hangup/>" in done.content.decode()
    twilio_post(client, phone_channel, fixture("phone/status_completed.json"))
    assert Message.objects.get().meta["call"]["outcome"] == "answered"


def test_anonymous_caller_gets_voicemail_but_no_conversation(client, phone_channel):
    resp = twilio_post(client, phone_channel, fixture("phone/incoming_call.json", From="anonymous", Caller="anonymous"))
    assert resp.status_code == 200 and "<Record " in resp.content.decode()
    assert not Message.objects.exists()
    assert InboundEnvelope.objects.get().status == EnvelopeStatus.IGNORED


def test_bad_signature_on_voice_hook_is_403(client, phone_channel):
    assert twilio_post(client, phone_channel, fixture("phone/incoming_call.json"), token="f" * 32).status_code == 403
    # a signature for the URL without the query does not cover ?event=recording
    from twilio.request_validator import RequestValidator

    from .conftest import signed_url
    params = fixture("phone/recording.json")
    sig = RequestValidator(AUTH_TOKEN).compute_signature(signed_url(phone_channel)[1], params)
    assert twilio_post(client, phone_channel, params, query="event=recording", signature=sig).status_code == 403
    assert not Message.objects.exists()


def test_recording_download_failure_transient_is_kept_for_replay(client, phone_channel):
    from channels_app.services import envelope_replay

    with FakeProvider() as fake:
        phone_channel.settings["api_base"] = fake.url
        phone_channel.save()
        twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
        fake.respond(503, b"busy")
        resp = twilio_post(client, phone_channel, _recording_params(fake.url), query="event=recording")
        assert resp.status_code == 500
        env = InboundEnvelope.objects.get(status=EnvelopeStatus.FAILED)
        fake.respond(200, b"mp3", headers={"Content-Type": "audio/mpeg"})
        assert envelope_replay(env)
    assert Message.objects.get().attachments.count() == 1


def test_phone_channel_cannot_send_text(client, phone_channel, personas):
    from channels_app.delivery import deliver

    twilio_post(client, phone_channel, fixture("phone/incoming_call.json"))
    conv = Conversation.objects.get()
    msg = services.reply(conversation=conv, author=personas.ana, body="hi", channel=phone_channel)
    assert deliver(msg.pk).status == "failed"
    msg.refresh_from_db()
    assert "log the call" in msg.delivery_error


# ---------------------------------------------------------------- agents' call notes

@pytest.fixture
def conversation(channels, inbound):
    return services.ingest(inbound(channels.chat, "chat", "visitor-9", text="hello")).message.conversation


def test_log_call_form_creates_phone_message(client, personas, conversation, channels):
    client.force_login(personas.ana)
    url = f"/conversations/{conversation.pk}/log-call/"
    assert client.get(url).status_code == 200
    resp = client.post(url, {"direction": "outbound", "duration": "4:30", "outcome": "answered",
                             "summary": "Explained the refund", "next": "/"})
    assert resp.status_code == 302 and resp["Location"] == "/"
    msg = Message.objects.get(channel_kind="phone")
    assert msg.direction == Direction.OUTBOUND and msg.author_user == personas.ana
    assert msg.meta["call"] == {"direction": "outbound", "duration": 270, "outcome": "answered", "source": "agent",
                                "logged_by": personas.ana.pk}
    conversation.refresh_from_db()
    assert conversation.first_reply_at is not None and conversation.waiting_since is None
    assert conversation.events.filter(kind=EventKind.MESSAGE_OUT, message=msg).exists()


def test_log_call_json_and_inbound_switches_channel(client, personas, conversation, channels):
    client.force_login(personas.ana)
    resp = client.post(f"/conversations/{conversation.pk}/log-call/",
                       {"direction": "inbound", "duration": "95", "outcome": "answered", "summary": "Called back"},
                       HTTP_ACCEPT="application/json")
    assert resp.status_code == 201
    assert resp.json()["call"]["duration"] == 95
    msg = Message.objects.get(pk=resp.json()["message"])
    assert msg.direction == Direction.INBOUND and msg.channel == channels.phone
    conversation.refresh_from_db()
    assert conversation.last_inbound_kind == "phone"
    assert conversation.events.filter(kind=EventKind.CHANNEL_SWITCHED, data__to="phone").exists()
    # a call is not a text channel: replies still default to the chat
    channel, _reason = services.default_reply_channel(conversation)
    assert channel == channels.chat


def test_log_call_validation_and_permissions(client, personas, conversation):
    url = f"/conversations/{conversation.pk}/log-call/"
    assert client.post(url, {}).status_code == 302  # anonymous: to the login page
    client.force_login(personas.ana)
    bad = client.post(url, {"direction": "sideways", "duration": "abc", "outcome": "answered", "summary": "x"},
                      HTTP_ACCEPT="application/json")
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"direction", "duration"}
    client.force_login(personas.bob)  # tech agent, billing conversation
    assert client.post(url, {"direction": "inbound", "duration": "1", "outcome": "missed",
                             "summary": "x"}).status_code == 404
    assert client.get(url).status_code == 404
    assert not Message.objects.filter(channel_kind="phone").exists()


def test_log_call_rejects_offsite_next(client, personas, conversation):
    client.force_login(personas.ana)
    resp = client.post(f"/conversations/{conversation.pk}/log-call/",
                       {"direction": "outbound", "duration": "10", "outcome": "no_answer", "summary": "x",
                        "next": "https://evil.example/"})
    assert resp["Location"] == f"/c/{conversation.pk}/"  # back to the conversation in the inbox
    conversation.refresh_from_db()
    assert conversation.first_reply_at is None  # nobody was reached: not a reply


def test_log_call_service_rejects_bad_direction(conversation, personas):
    with pytest.raises(ValueError):
        services.log_call(conversation=conversation, author=personas.ana, direction="up", duration_seconds=1,
                          outcome="answered", summary="x")
    with pytest.raises(ValueError):
        services.log_call(conversation=conversation, author=personas.ana, direction="inbound", duration_seconds=-5,
                          outcome="answered", summary="x")


def test_log_call_form_choices_match_service():
    from channels_app.adapters.webform.forms import LogCallForm

    assert {c for c, _ in LogCallForm.base_fields["direction"].choices} == set(services.CALL_DIRECTIONS)
    assert {c for c, _ in LogCallForm.base_fields["outcome"].choices} == set(services.CALL_OUTCOMES)
