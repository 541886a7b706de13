"""The `whatsapp` channel: the WhatsApp Cloud API (Meta).

Settings: app_secret, verify_token, access_token (secrets), phone_number_id;
optional api_base (default https://graph.facebook.com) and api_version.

Inbound:  GET  hub.mode/hub.verify_token/hub.challenge subscription check;
          POST {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages",
                "value": {"metadata": {...}, "contacts": [...], "messages": [...], "statuses": [...]}}]}]}
          signed with X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(raw body, app_secret).
Media:    GET /<version>/<media-id> (bearer access_token) gives a short-lived URL, downloaded
          with the same bearer token.
Outbound: POST /<version>/<phone_number_id>/messages; text inside the customer service window
          (24 h after the customer's last message), an approved template (message.meta["template"])
          at any time; attachments are uploaded first (POST /<phone_number_id>/media).
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.inbound import InboundMessage
from helpdesk.http import TransportError

from ..base import Adapter, ParseError, ParseResult, SendResult, StatusUpdate
from ..meta.common import (
    GRAPH_BASE,
    api_base,
    download,
    fetch_media,
    from_unix,
    graph_request,
    graph_version,
    MetaWebhookMixin,
    load_json,
)

WINDOW = timedelta(hours=24)
WINDOW_ERROR_CODES = {131047}
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


def window_message() -> str:
    return _("WhatsApp only allows template messages more than 24 hours after the customer's last message "
             "(the customer service window is closed). Send an approved template instead, or wait for the "
             "customer to write again.")


def _status_error(errors) -> str:
    parts = []
    for err in errors or []:
        if not isinstance(err, dict):
            continue
        code = err.get("code")
        if code in WINDOW_ERROR_CODES or str(code) in {str(c) for c in WINDOW_ERROR_CODES}:
            parts.append(f"{window_message()} (WhatsApp error {code})")
            continue
        text = str(err.get("title") or err.get("message") or "")
        message = str(err.get("message") or "")
        if message and message != text:
            text = f"{text}: {message}"
        details = (err.get("error_data") or {}).get("details") if isinstance(err.get("error_data"), dict) else ""
        if details and details not in text:
            text = f"{text} ({details})"
        if code is not None:
            text = f"{text} (WhatsApp error {code})"
        parts.append(text.strip())
    return "; ".join(p for p in parts if p) or _("WhatsApp reported the message as failed.")


class WhatsAppAdapter(MetaWebhookMixin, Adapter):
    kind = "whatsapp"

    # ------------------------------------------------------------------ inbound

    def parse(self, envelope, channel) -> ParseResult:
        data = load_json(envelope)
        if data.get("object") != "whatsapp_business_account":
            return ParseResult(ignored_reason=f"not a WhatsApp Business Account event: {data.get('object')!r}")
        result = ParseResult()
        ignored = []
        for entry in data.get("entry") or []:
            for change in (entry or {}).get("changes") or []:
                if not isinstance(change, dict):
                    continue
                if change.get("field") != "messages":
                    ignored.append(f"field {change.get('field')!r}")
                    continue
                value = change.get("value") or {}
                own_number = str(channel.get("phone_number_id") or "")
                metadata_number = str((value.get("metadata") or {}).get("phone_number_id") or "")
                if own_number and metadata_number and metadata_number != own_number:
                    ignored.append(f"event for another phone number id {metadata_number}")
                    continue
                names = {str(c.get("wa_id")): ((c.get("profile") or {}).get("name") or "")
                         for c in value.get("contacts") or [] if isinstance(c, dict)}
                for msg in value.get("messages") or []:
                    parsed = self._message(msg, names, channel)
                    if isinstance(parsed, str):
                        ignored.append(parsed)
                    else:
                        result.messages.append(parsed)
                for status in value.get("statuses") or []:
                    update = self._status(status)
                    if update is None:
                        ignored.append(f"status {status.get('status')!r}")
                    else:
                        result.statuses.append(update)
                if value.get("errors") and not (value.get("messages") or value.get("statuses")):
                    ignored.append("errors: " + _status_error(value.get("errors")))
        if not (result.messages or result.statuses):
            result.ignored_reason = "; ".join(ignored) or "no messages or statuses"
        return result

    def _message(self, msg: dict, names: dict, channel) -> InboundMessage | str:
        if not isinstance(msg, dict) or not msg.get("from") or not msg.get("id"):
            raise ParseError("A WhatsApp message needs 'from' and 'id'.")
        mtype = msg.get("type")
        sender = str(msg["from"])
        notes: list[str] = []
        text = ""
        attachments = []
        if mtype == "text":
            text = str((msg.get("text") or {}).get("body") or "")
        elif mtype in MEDIA_TYPES:
            media = msg.get(mtype) or {}
            text = str(media.get("caption") or "")
            att = fetch_media(lambda: self._download_media(channel, media, mtype),
                              _("WhatsApp %(type)s") % {"type": mtype}, notes)
            if att is not None:
                attachments.append(att)
        elif mtype == "location":
            loc = msg.get("location") or {}
            label = " ".join(str(loc.get(k)) for k in ("name", "address") if loc.get(k))
            where = f"https://maps.google.com/?q={loc.get('latitude')},{loc.get('longitude')}"
            text = f"{label} {where}".strip()
        elif mtype == "button":
            text = str((msg.get("button") or {}).get("text") or "")
        elif mtype == "interactive":
            inter = msg.get("interactive") or {}
            reply = inter.get("button_reply") or inter.get("list_reply") or {}
            text = str(reply.get("title") or "")
        elif mtype == "contacts":
            lines = []
            for contact in msg.get("contacts") or []:
                name = (contact.get("name") or {}).get("formatted_name") or ""
                phones = ", ".join(p.get("phone", "") for p in contact.get("phones") or [])
                emails = ", ".join(e.get("email", "") for e in contact.get("emails") or [])
                lines.append(" ".join(x for x in (name, phones, emails) if x))
            text = "\n".join(lines)
        elif mtype == "reaction":
            return f"reaction {msg.get('id')}"
        else:
            return f"message type {mtype!r}"
        if not text and not attachments:
            if notes:
                text = "\n".join(notes)
            else:
                return f"empty {mtype} message"
        meta = {"whatsapp_type": mtype}
        context = msg.get("context") or {}
        if context.get("id"):
            meta["in_reply_to"] = str(context["id"])
        return InboundMessage(
            channel=channel, external_id=str(msg["id"]), identities=[("whatsapp", sender)], text=text,
            name=str(names.get(sender) or ""), created_at=from_unix(msg.get("timestamp")), attachments=attachments,
            notes=notes, meta=meta,
        )

    def _download_media(self, channel, media: dict, mtype: str):
        media_id = media.get("id")
        if not media_id:
            raise TransportError("The media has no id.", permanent=True)
        base = api_base(channel, GRAPH_BASE)
        headers = {"Authorization": f"Bearer {channel.get('access_token') or ''}"}
        info = graph_request("GET", f"{base}/{graph_version(channel)}/{media_id}", headers=headers).json() or {}
        url = info.get("url")
        size = str(info.get("file_size") or "0")
        if size.isdigit() and int(size) > settings.ATTACHMENT_MAX_BYTES:
            raise TransportError(_("The file is larger than the limit of %(limit)s bytes.")
                                 % {"limit": settings.ATTACHMENT_MAX_BYTES}, permanent=True)
        if not url:
            raise TransportError("WhatsApp returned no media URL.", permanent=True)
        content_type = str(info.get("mime_type") or media.get("mime_type") or "").split(";")[0].strip()
        filename = str(media.get("filename") or "")
        return download(url, headers=headers, filename=filename, content_type=content_type,
                        fallback=f"whatsapp-{mtype}-{media_id}")

    def _status(self, status: dict) -> StatusUpdate | None:
        if not isinstance(status, dict) or not status.get("id"):
            raise ParseError("A WhatsApp status needs an 'id'.")
        name = status.get("status")
        if name not in ("sent", "delivered", "read", "failed"):
            return None
        error = _status_error(status.get("errors")) if name == "failed" else ""
        return StatusUpdate(external_id=str(status["id"]), status=name, error=error,
                            at=from_unix(status.get("timestamp")))

    # ------------------------------------------------------------------ outbound

    def send(self, message) -> SendResult:
        channel = message.channel
        to = (message.recipient or "").lstrip("+")
        if not to:
            raise TransportError(_("The customer has no WhatsApp number."), permanent=True)
        number_id = channel.get("phone_number_id")
        if not number_id or not channel.get("access_token"):
            raise TransportError(_("The WhatsApp channel needs phone_number_id and access_token."), permanent=True)
        template = (message.meta or {}).get("template")
        if not template:
            self.check_window(message)
        url = f"{api_base(channel, GRAPH_BASE)}/{graph_version(channel)}/{number_id}/messages"
        headers = {"Authorization": f"Bearer {channel.get('access_token')}"}
        bodies = []
        if template:
            bodies.append({"type": "template", "template": self.template_payload(template)})
        elif message.body_text.strip():
            bodies.append({"type": "text", "text": {"preview_url": False, "body": message.body_text}})
        for att in message.attachments.all():
            media_type = self.media_type(att.content_type)
            media_id = self._upload(channel, att, headers)
            payload = {"id": media_id}
            if media_type == "document":
                payload["filename"] = att.filename
            bodies.append({"type": media_type, media_type: payload})
        if not bodies:
            raise TransportError(_("The message is empty."), permanent=True)
        ids = []
        for body in bodies:
            try:
                resp = graph_request("POST", url, headers=headers, json={
                    "messaging_product": "whatsapp", "recipient_type": "individual", "to": to, **body})
            except TransportError as exc:
                if getattr(exc, "code", None) in WINDOW_ERROR_CODES:
                    raise TransportError(f"{window_message()} (WhatsApp error {exc.code})", permanent=True,
                                         status=exc.status) from exc
                if ids:  # part of the message went out: do not resend that part
                    exc.permanent = True
                    exc.message = _("Only part of the message was sent: %(error)s") % {"error": exc.message}
                raise
            data = resp.json() or {}
            msgs = data.get("messages") or []
            if msgs and msgs[0].get("id"):
                ids.append(str(msgs[0]["id"]))
        return SendResult(external_id=ids[0] if ids else None, status="sent",
                          meta={"whatsapp_ids": ids} if len(ids) > 1 else {})

    @staticmethod
    def template_payload(template: dict) -> dict:
        if not isinstance(template, dict) or not template.get("name"):
            raise TransportError(_("A WhatsApp template needs a name."), permanent=True)
        language = template.get("language") or "en_US"
        if isinstance(language, str):
            language = {"code": language}
        payload = {"name": str(template["name"]), "language": language}
        if template.get("components"):
            payload["components"] = template["components"]
        return payload

    @staticmethod
    def media_type(content_type: str) -> str:
        major = (content_type or "").split("/")[0]
        return {"image": "image", "video": "video", "audio": "audio"}.get(major, "document")

    def _upload(self, channel, att, headers) -> str:
        url = f"{api_base(channel, GRAPH_BASE)}/{graph_version(channel)}/{channel.get('phone_number_id')}/media"
        with att.file.open("rb") as fh:
            content = fh.read()
        resp = graph_request("POST", url, headers=headers, data={"messaging_product": "whatsapp",
                                                                 "type": att.content_type},
                             files={"file": (att.filename, content, att.content_type)})
        media_id = (resp.json() or {}).get("id")
        if not media_id:
            raise TransportError(_("WhatsApp did not return a media id for %(name)s.") % {"name": att.filename})
        return str(media_id)

    @staticmethod
    def check_window(message) -> None:
        """Free-form messages only within 24 h of the customer's last WhatsApp message on this number."""
        closes = window_closes_at(message.channel, message.conversation.customer_id)
        if closes is None or timezone.now() > closes:
            raise TransportError(window_message(), permanent=True)


def window_closes_at(channel, customer_id: int):
    """When the customer service window with this customer on this WhatsApp
    number closes (None: never opened); the inbox can show it before sending."""
    from conversations.models import Direction, Message

    last = (Message.objects.filter(channel=channel, direction=Direction.INBOUND,
                                   conversation__customer_id=customer_id)
            .order_by("-created_at").values_list("created_at", flat=True).first())
    return last + WINDOW if last is not None else None
