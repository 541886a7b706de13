"""The `chat` channel: the website live chat widget.

Inbound: the widget's WebSocket consumer (and the upload endpoint) store each
visitor message as an InboundEnvelope whose body is JSON, then process it
through `parse` and the core's ingest, like every other channel:

    {"visitor": "<visitor id from the signed token>", "client_id": "c-17",
     "text": "...", "name": "Kim", "email": "kim@example.org",
     "page": "https://shop.example/cart", "language": "de",
     "attachments": [{"filename": "a.png", "content_type": "image/png", "content_base64": "..."}]}

Outbound: `send` pushes the agent's reply to the visitor's open widgets and
marks it sent; the widget acknowledges delivered / read. When no widget of the
customer is open and they left an email address, the reply goes by email.
"""
from __future__ import annotations

import base64
import binascii
import json

from conversations.inbound import InboundAttachment, InboundMessage

from ..base import Adapter, Forbidden, ParseError, ParseResult, SendResult


class ChatAdapter(Adapter):
    kind = "chat"
    parses_unsaved = True

    def verify(self, request, channel) -> None:
        # the generic /hooks/ URL is not how visitors talk to us: the widget
        # uses its WebSocket and the token-authenticated upload endpoint
        raise Forbidden("chat messages arrive through the widget, not the webhook URL")

    def parse(self, envelope, channel) -> ParseResult:
        try:
            data = json.loads(bytes(envelope.body) or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"Invalid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("visitor"), str) or not data["visitor"]:
            raise ParseError("A chat envelope needs the visitor id.")
        visitor = data["visitor"]
        identities = [("chat", visitor)]
        email = data.get("email")
        if isinstance(email, str) and "@" in email:
            # the pre-chat form: joins the customer who already owns this address
            identities.append(("email", email.strip()))
        text = str(data.get("text") or "")
        attachments = []
        for att in data.get("attachments") or []:
            try:
                content = base64.b64decode(att.get("content_base64", ""), validate=True)
            except (binascii.Error, AttributeError, TypeError) as exc:
                raise ParseError(f"Attachment content is not valid base64: {exc}") from exc
            attachments.append(InboundAttachment(filename=str(att.get("filename") or "file")[:200],
                                                 content_type=str(att.get("content_type") or "application/octet-stream"),
                                                 content=content))
        if not text.strip() and not attachments:
            raise ParseError("An empty chat message.")
        client_id = str(data.get("client_id") or "")[:64]
        meta = {"visitor": visitor}
        if client_id:
            meta["client_id"] = client_id
        if data.get("page"):
            meta["page"] = str(data["page"])[:500]
        msg = InboundMessage(
            channel=channel,
            # a resend after a reconnect carries the same client id: ingest dedupes it
            external_id=f"{visitor}:{client_id}" if client_id else None,
            identities=identities, text=text, name=str(data.get("name") or "")[:200],
            language=str(data.get("language") or "")[:10], attachments=attachments, meta=meta,
        )
        return ParseResult(messages=[msg])

    def send(self, message) -> SendResult:
        from . import live, offline

        conversation = message.conversation
        visitors = live.visitors_of(conversation.customer_id)
        if not visitors:
            from helpdesk.http import TransportError

            raise TransportError("The customer has no chat visitor to send to.", permanent=True)
        online = [v for v in visitors if live.visitor_online(v)]
        for vid in visitors:
            live.push([vid], {"type": "message", "message": live.message_payload(message, vid)})
        if not online:
            # nobody is on the page: the reply would go unseen, send it by email if we can
            offline.email_copy(message, reason="visitor offline")
        return SendResult(external_id=None, status="sent")
