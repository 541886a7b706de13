"""The `phone` channel: Twilio Voice, next to the call notes agents log by hand
(conversations.services.log_call, form at /conversations/<id>/log-call/).

Set the Twilio number's "A call comes in" webhook and its "Call status
changes" callback to /hooks/phone/<uuid>/. Everything else points back at the
same URL with an `event` query parameter, so one signed URL serves the call:
  (no event)            incoming call (CallSid, From, To, CallStatus=ringing):
                        creates or joins the caller's conversation with an
                        "Incoming call" message, answers TwiML: optional <Dial>
                        to `forward_to`, else greeting + <Record> voicemail
  CallStatus final      status callback: CallDuration and the outcome go to meta["call"]
  ?event=dial           <Dial> ended: voicemail unless DialCallStatus=completed
  ?event=after-record   <Record> ended: say goodbye and hang up
  ?event=recording      recordingStatusCallback: the recording (RecordingUrl,
                        fetched as mp3 with the account's basic auth) is attached
  ?event=transcription  transcribeCallback: TranscriptionText joins the message
Settings: as `sms` (account_sid, auth_token, from_number) plus optional
`greeting`, `voice_language` (e.g. en-US), `forward_to`, `max_length` (s),
`transcribe` (default true).
"""
from __future__ import annotations

import logging

from django.utils.translation import gettext as _

from conversations.inbound import InboundMessage
from customers.services import InvalidIdentity, normalize_phone
from helpdesk import http

from ..base import Adapter, ParseResult, SendResult
from ..sms import twilio
from . import services

log = logging.getLogger(__name__)


class PhoneAdapter(Adapter):
    kind = "phone"

    def verify(self, request, channel) -> None:
        twilio.verify_signature(request, channel)

    def parse(self, envelope, channel) -> ParseResult:
        p = twilio.form_params(envelope)
        event = twilio.query_params(envelope).get("event", "")
        call_sid = p.get("CallSid", "")
        if not call_sid:
            return ParseResult(ignored_reason="not a Twilio Voice event (no CallSid)",
                               response=twilio.twiml())
        if event == "transcription" or "TranscriptionSid" in p:
            return self._transcription(p, channel, call_sid)
        if event == "recording" or ("RecordingSid" in p and "RecordingStatus" in p):
            return self._recording(p, channel, call_sid)
        if event == "after-record":
            return ParseResult(ignored_reason="voicemail recorded",
                               response=twilio.twiml(self._say(channel, _("Thank you. Goodbye.")) + "<Hangup/>"))
        if event == "dial":
            return self._dial_done(p, channel, call_sid)
        status = (p.get("CallStatus") or "").lower()
        if status in services.FINAL_STATUSES:
            return self._status(p, channel, call_sid, status)
        if status in ("ringing", "queued", "in-progress", "initiated", ""):
            return self._incoming(p, channel, call_sid, status)
        return ParseResult(ignored_reason=f"unknown CallStatus {status!r}", response=twilio.twiml())

    # ------------------------------------------------------------------ events

    def _incoming(self, p, channel, call_sid, status) -> ParseResult:
        caller = p.get("From", "")
        try:
            number = normalize_phone(caller)
        except InvalidIdentity:
            # anonymous or withheld caller id: nobody to attach the call to
            return ParseResult(ignored_reason=f"caller id not a phone number: {caller!r}",
                               response=self._answer(channel))
        meta = {"to": p.get("To", ""), "call": {"sid": call_sid, "direction": "inbound", "status": status or "ringing",
                                                "from": number, "to": p.get("To", ""), "source": "twilio"}}
        msg = InboundMessage(channel=channel, external_id=call_sid, identities=[("phone", number)],
                             text=_("Incoming call"), name=p.get("CallerName", ""), meta=meta)
        return ParseResult(messages=[msg], response=self._answer(channel))

    def _status(self, p, channel, call_sid, status) -> ParseResult:
        message = services.call_message(channel, call_sid)
        if message is None:
            return ParseResult(ignored_reason=f"status {status} for unknown call {call_sid}", response=twilio.twiml())
        duration = p.get("CallDuration") or p.get("Duration")
        services.call_update(message=message, status=status,
                             duration=int(duration) if (duration or "").isdigit() else None)
        return ParseResult(handled=True, response=twilio.twiml())

    def _dial_done(self, p, channel, call_sid) -> ParseResult:
        dial_status = (p.get("DialCallStatus") or "").lower()
        message = services.call_message(channel, call_sid)
        if message is not None:
            services.call_update(message=message, dial_status=dial_status)
        if dial_status == "completed":
            return ParseResult(handled=message is not None, response=twilio.twiml("<Hangup/>"))
        return ParseResult(handled=message is not None, response=self._voicemail(channel))

    def _recording(self, p, channel, call_sid) -> ParseResult:
        message = services.call_message(channel, call_sid)
        if message is None:
            return ParseResult(ignored_reason=f"recording for unknown call {call_sid}", response=twilio.twiml())
        if (p.get("RecordingStatus") or "completed").lower() != "completed":
            return ParseResult(ignored_reason=f"recording {p.get('RecordingStatus')}", response=twilio.twiml())
        rec_sid = p.get("RecordingSid", "")
        recording = {"sid": rec_sid, "duration": p.get("RecordingDuration")}
        file = None
        if (message.meta.get("call") or {}).get("recording_sid") != rec_sid and p.get("RecordingUrl"):
            url = p["RecordingUrl"]
            try:
                content, ctype = twilio.fetch_media(channel, url if url.endswith((".mp3", ".wav")) else url + ".mp3")
                file = (f"voicemail-{rec_sid or call_sid}.mp3", ctype or "audio/mpeg", content)
            except http.TransportError as exc:
                if not exc.permanent:
                    raise  # kept as a failed envelope and replayed later
                recording["error"] = exc.message
        services.call_update(message=message, recording=recording, recording_file=file)
        return ParseResult(handled=True, response=twilio.twiml())

    def _transcription(self, p, channel, call_sid) -> ParseResult:
        message = services.call_message(channel, call_sid)
        if message is None:
            return ParseResult(ignored_reason=f"transcription for unknown call {call_sid}", response=twilio.twiml())
        status = (p.get("TranscriptionStatus") or "").lower()
        text = p.get("TranscriptionText", "") if status in ("completed", "") else ""
        services.call_update(message=message, transcription={"sid": p.get("TranscriptionSid", ""),
                                                             "status": status, "text": text})
        return ParseResult(handled=True, response=twilio.twiml())

    # ------------------------------------------------------------------ TwiML

    def _say(self, channel, text: str) -> str:
        lang = channel.get("voice_language") or ""
        attr = f' language="{twilio.xml_text(lang)}"' if lang else ""
        return f"<Say{attr}>{twilio.xml_text(text)}</Say>"

    def _answer(self, channel):
        forward = channel.get("forward_to")
        if forward:
            action = twilio.public_webhook_url(channel, "event=dial")
            return twilio.twiml(f'<Dial timeout="20" action="{twilio.xml_text(action)}">'
                                f"<Number>{twilio.xml_text(forward)}</Number></Dial>")
        return self._voicemail(channel)

    def _voicemail(self, channel):
        greeting = channel.get("greeting") or _(
            "Thank you for calling. Nobody can take your call right now. "
            "Please leave a message after the tone and we will get back to you.")
        hook = twilio.public_webhook_url
        transcribe = channel.get("transcribe", True) not in (False, "false", "0", 0)
        attrs = {
            "maxLength": str(channel.get("max_length") or 120),
            "playBeep": "true",
            "action": hook(channel, "event=after-record"),
            "recordingStatusCallback": hook(channel, "event=recording"),
            "recordingStatusCallbackEvent": "completed",
        }
        if transcribe:
            attrs.update(transcribe="true", transcribeCallback=hook(channel, "event=transcription"))
        record = "<Record " + " ".join(f'{k}="{twilio.xml_text(v)}"' for k, v in attrs.items()) + "/>"
        return twilio.twiml(self._say(channel, greeting) + record)

    def response(self, envelope, result):
        return result.response or twilio.twiml()

    # ------------------------------------------------------------------ outbound

    def send(self, message) -> SendResult:
        raise http.TransportError(_("A phone channel cannot send written replies: log the call instead."),
                                  permanent=True)
