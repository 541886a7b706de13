"""The `webform` channel: our own public contact form at /support/ and the
customer portal's replies (views.py). There is no provider: the views check
CSRF, a honeypot field and a per-IP rate limit, store the submission as an
InboundEnvelope (JSON below, source "form" or "portal"), then process it
through parse() like every other inbound path, so a failed one can be replayed.

    {"type": "form", "name": "Kim", "email": "kim@example.org", "subject": "...",
     "message": "...", "language": "de", "attachments": [{"filename": "a.png",
     "content_type": "image/png", "content_base64": "..."}]}
    {"type": "portal_reply", "email": "...", "reply_token": "<conversation's>",
     "conversation": 12, "message": "...", "language": "...", "attachments": [...]}

A form submission is always a new conversation; a portal reply joins the
conversation it was written in. Agents answer a web form by email
(conversations.services.default_reply_channel).
Settings: `address` (From of the confirmation mail), optional `rate_limit`
(submissions per IP per hour, default 5), `max_files` (5), `max_file_bytes`
(10 MB), `allowed_extensions` (list).
"""
from __future__ import annotations

import json

from django.http import HttpResponse

from conversations.inbound import InboundMessage

from ..base import Adapter, Forbidden, ParseError, ParseResult, SendResult, base64_attachments


class WebformAdapter(Adapter):
    kind = "webform"

    def handshake(self, request, channel) -> HttpResponse:
        return HttpResponse(status=404)

    def verify(self, request, channel) -> None:
        # submissions come through /support/ and the portal, never through /hooks/
        raise Forbidden("the web form only accepts submissions through /support/")

    def parse(self, envelope, channel) -> ParseResult:
        try:
            data = json.loads(bytes(envelope.body) or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Invalid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("type") not in ("form", "portal_reply"):
            raise ParseError("Not a web form submission.")
        email = str(data.get("email") or "").strip()
        text = str(data.get("message") or "").strip()
        if not email or not text:
            raise ParseError("A submission needs an email address and a message.")
        attachments = base64_attachments(data.get("attachments"))
        msg = InboundMessage(
            channel=channel, external_id=f"{data['type']}:{envelope.pk}", identities=[("email", email)],
            text=text, subject=str(data.get("subject") or "")[:300], name=str(data.get("name") or "")[:200],
            language=str(data.get("language") or "")[:10], attachments=attachments,
            meta={"source": data["type"]},
        )
        if data["type"] == "form":
            msg.new_conversation = True
        else:
            msg.reply_token = str(data.get("reply_token") or "")
            msg.conversation_number = int(data["conversation"]) if str(data.get("conversation", "")).isdigit() else None
        return ParseResult(messages=[msg])

    def send(self, message) -> SendResult:
        # default_reply_channel answers a web form by email; this only runs when
        # an agent explicitly picks the web form channel: nowhere to deliver to.
        from helpdesk.http import TransportError

        raise TransportError("The web form cannot deliver replies: answer by email.", permanent=True)
