"""The `sms` channel: Twilio Messaging (SMS, MMS and WhatsApp via Twilio).

Inbound: Twilio POSTs application/x-www-form-urlencoded to /hooks/sms/<uuid>/
(set it as the number's "A message comes in" URL; our replies set it as their
StatusCallback). Signed with X-Twilio-Signature (HMAC-SHA1 of the public URL
plus the sorted parameters, keyed with the auth token).
  incoming message: MessageSid, From, To, Body, NumMedia, MediaUrl<n>,
      MediaContentType<n>; WhatsApp adds ProfileName, WaId and "whatsapp:" prefixes
  status callback: MessageSid, MessageStatus (queued, sent, delivered, read,
      undelivered, failed...), ErrorCode, ErrorMessage
Every answer is an empty TwiML <Response/>: replies go through the outbox.
With a Celery broker the hook answers once the envelope is stored and the
signature checked; a worker ingests it (channels_app.views, process_later).

Outbound: POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json with To,
From (or MessagingServiceSid), Body and StatusCallback; attachments as MediaUrl
(signed links Twilio fetches); a message whose meta has "template":
{"content_sid": "HX...", "variables": {"1": "Kim"}} is sent as ContentSid and
ContentVariables (WhatsApp outside the 24-hour window). A reply goes out as
WhatsApp when the customer's latest message on this channel came by WhatsApp.
"""
from __future__ import annotations

import json
import logging

from django.core import signing
from django.urls import reverse

from conversations.inbound import InboundAttachment, InboundMessage
from conversations.models import Direction, Message
from customers.services import InvalidIdentity, normalize_phone
from helpdesk import http

from ..base import Adapter, ParseError, ParseResult, SendResult, StatusUpdate
from . import twilio

log = logging.getLogger(__name__)

# Twilio MessageStatus -> our delivery status (None: nothing to record)
STATUS_MAP = {
    "accepted": None, "scheduled": None, "queued": None, "sending": None,
    "sent": "sent", "delivered": "delivered", "read": "read",
    "undelivered": "failed", "failed": "failed", "canceled": "failed",
    "receiving": None, "received": None,
}
# Documented descriptions of the error codes seen most in status callbacks
ERROR_CODES = {
    "30001": "Queue overflow", "30002": "Account suspended", "30003": "Unreachable destination handset",
    "30004": "Message blocked", "30005": "Unknown destination handset", "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier", "30008": "Unknown error",
    "63016": "Outside the WhatsApp 24-hour window: only approved templates can be sent",
}


class SmsAdapter(Adapter):
    kind = "sms"

    def verify(self, request, channel) -> None:
        twilio.verify_signature(request, channel)

    def process_later(self, channel) -> bool:
        """Twilio only needs an empty TwiML back: with a broker, acknowledge once
        the envelope is stored and verified and let a worker ingest it (the
        message keeps the time it was received). `process_inline` turns it off."""
        return not channel.get("process_inline")

    # ------------------------------------------------------------------ inbound

    def parse(self, envelope, channel) -> ParseResult:
        p = twilio.form_params(envelope)
        sid = p.get("MessageSid") or p.get("SmsMessageSid") or p.get("SmsSid") or ""
        status = (p.get("MessageStatus") or "").lower()
        if not sid:
            return ParseResult(ignored_reason="not a Twilio message event (no MessageSid)")
        if status and status not in ("received", "receiving"):
            result = self._status(p, sid, status)
            for update in result.statuses:
                update.at = envelope.received_at
            return result
        if "From" not in p or not ("Body" in p or "NumMedia" in p):
            return ParseResult(ignored_reason="unknown Twilio messaging event")
        msg = self._message(p, sid, channel)
        msg.created_at = envelope.received_at  # order survives queueing and replays
        return ParseResult(messages=[msg])

    def _status(self, p: dict, sid: str, status: str) -> ParseResult:
        if status not in STATUS_MAP:
            return ParseResult(ignored_reason=f"unknown MessageStatus {status!r}")
        ours = STATUS_MAP[status]
        if ours is None:
            return ParseResult(ignored_reason=f"MessageStatus {status} needs no action")
        error = ""
        if ours == "failed":
            code = p.get("ErrorCode", "")
            text = p.get("ErrorMessage") or ERROR_CODES.get(code, "")
            error = f"Twilio {status}" + (f" (error {code})" if code else "") + (f": {text}" if text else "")
        return ParseResult(statuses=[StatusUpdate(external_id=sid, status=ours, error=error)])

    def _message(self, p: dict, sid: str, channel) -> InboundMessage:
        sender = p.get("From", "")
        whatsapp = sender.lower().startswith("whatsapp:")
        number = p.get("WaId") or sender
        try:
            number = normalize_phone(number)
        except InvalidIdentity as exc:
            raise ParseError(f"From is not a phone number: {sender!r}") from exc
        identities = [("whatsapp", number)] if whatsapp else [("phone", number)]
        text = p.get("Body", "")
        if p.get("Latitude") and p.get("Longitude"):
            place = " ".join(filter(None, [p.get("Label", ""), p.get("Address", "")]))
            text = (text + "\n" if text else "") + f"📍 {place} ({p['Latitude']}, {p['Longitude']})".strip()
        notes: list[str] = []
        attachments = self._media(p, sid, channel, notes)
        to = p.get("To", "")
        meta = {"to": to.split(":", 1)[-1], "whatsapp": whatsapp}
        if p.get("NumSegments"):
            meta["segments"] = p["NumSegments"]
        return InboundMessage(channel=channel, external_id=sid, identities=identities, text=text,
                              name=p.get("ProfileName", ""), attachments=attachments, meta=meta, notes=notes)

    def _media(self, p: dict, sid: str, channel, notes: list[str]) -> list[InboundAttachment]:
        try:
            count = int(p.get("NumMedia") or 0)
        except ValueError:
            count = 0
        if not count:
            return []
        if Message.objects.filter(channel=channel, external_id=sid).exists():
            return []  # a replay: the stored message has its media, do not download again
        result = []
        for i in range(min(count, 10)):
            url = p.get(f"MediaUrl{i}")
            if not url:
                continue
            declared = p.get(f"MediaContentType{i}", "")
            try:
                content, ctype = twilio.fetch_media(channel, url)
            except http.TransportError as exc:
                log.warning("could not fetch Twilio media %s of %s: %s", i, sid, exc.message)
                notes.append(f"Media {i + 1} could not be downloaded: {exc.message}")
                continue
            ctype = declared or ctype or "application/octet-stream"
            result.append(InboundAttachment(filename=twilio.media_filename(url, ctype, f"media{i}"),
                                            content_type=ctype, content=content))
        return result

    def response(self, envelope, result) -> object:
        return twilio.twiml()

    # ------------------------------------------------------------------ outbound

    def send(self, message) -> SendResult:
        channel = message.channel
        sid, token = twilio.auth(channel)
        to = message.recipient
        if not to:
            raise http.TransportError("The message has no recipient phone number.", permanent=True)
        whatsapp = message.meta.get("whatsapp")
        if whatsapp is None:
            whatsapp = _customer_uses_whatsapp(message)
        sender = channel.get("whatsapp_from") if whatsapp else None
        sender = sender or channel.get("from_number") or ""
        data = {"To": f"whatsapp:{to}" if whatsapp else to,
                "StatusCallback": twilio.public_webhook_url(channel)}
        template = message.meta.get("template") if isinstance(message.meta.get("template"), dict) else None
        if template and template.get("content_sid"):
            # an approved Content template: the only thing WhatsApp accepts outside the 24-hour window
            data["ContentSid"] = str(template["content_sid"])
            if template.get("variables"):
                data["ContentVariables"] = json.dumps({str(k): str(v) for k, v in template["variables"].items()})
        else:
            data["Body"] = message.body_text or ""
        if channel.get("messaging_service_sid") and not whatsapp:
            data["MessagingServiceSid"] = channel.get("messaging_service_sid")
        elif sender:
            data["From"] = sender if sender.startswith("whatsapp:") or not whatsapp else f"whatsapp:{sender}"
        else:
            raise http.TransportError("The Twilio channel needs from_number.", permanent=True)
        media = [public_attachment_url(channel, att) for att in message.attachments.all()[:10]]
        if media:
            data["MediaUrl"] = media
        url = f"{twilio.api_base(channel)}/2010-04-01/Accounts/{sid}/Messages.json"
        resp = http.post(url, data=data, auth=(sid, token), raise_for_status=False)
        twilio.raise_for_twilio(resp)
        try:
            body = resp.json() or {}
        except ValueError:
            body = {}
        if body.get("status") in ("failed", "undelivered"):
            raise http.TransportError(f"Twilio {body['status']}: {body.get('error_message') or body.get('error_code')}",
                                      permanent=True)
        return SendResult(external_id=body.get("sid"), status="sent",
                          meta={"whatsapp": bool(whatsapp)} if whatsapp else {})


def _customer_uses_whatsapp(message) -> bool:
    latest = (Message.objects.filter(channel=message.channel, direction=Direction.INBOUND,
                                     conversation__customer_id=message.conversation.customer_id)
              .order_by("-created_at", "-id").values_list("meta", flat=True).first())
    return bool(latest and latest.get("whatsapp"))


MEDIA_SALT = "threadline.twilio.media"


def public_attachment_url(channel, attachment) -> str:
    """A signed, expiring URL Twilio can fetch an outbound attachment from (MediaUrl)."""
    token = signing.dumps({"a": attachment.pk}, salt=MEDIA_SALT, compress=True)
    return twilio.public_base(channel) + reverse("channels_app:public_media", kwargs={"token": token})
