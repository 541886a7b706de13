"""The `api` channel: integrators (a mobile app, a shop) push inbound messages
with an API token, and receive our replies on an optional signed webhook URL.

Inbound: POST /hooks/api/<uuid>/ with `Authorization: Token <key>` and JSON
    {"external_id": "m-1", "from": {"kind": "email", "value": "kim@example.org"},
     "identities": [...optional more...], "name": "Kim", "subject": "...",
     "text": "...", "html": "...", "created_at": "2026-03-02T09:00:00+00:00",
     "thread_id": "optional provider thread id",
     "attachments": [{"filename": "a.png", "content_type": "image/png", "content_base64": "..."}]}
Outbound: if the channel has `webhook_url`, each reply is POSTed there as JSON,
signed like our outbound webhooks (X-Threadline-Signature over "<timestamp>.<body>").
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time

from django.utils.dateparse import parse_datetime

from conversations.inbound import InboundMessage
from helpdesk import http

from ..base import Adapter, Forbidden, ParseError, ParseResult, SendResult, base64_attachments, json_body


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class ApiAdapter(Adapter):
    kind = "api"

    def verify(self, request, channel) -> None:
        from rest_framework.exceptions import AuthenticationFailed

        from helpdesk.api.authentication import HashedTokenAuthentication

        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Token "):
            raise Forbidden("missing API token")
        try:
            user, _token = HashedTokenAuthentication().authenticate_credentials(auth.split(" ", 1)[1].strip())
        except AuthenticationFailed as exc:
            raise Forbidden(str(exc)) from exc
        request.api_user = user

    def parse(self, envelope, channel) -> ParseResult:
        data = json_body(envelope)
        if data.get("type") == "status":
            from ..base import StatusUpdate

            return ParseResult(statuses=[StatusUpdate(str(data.get("external_id", "")), str(data.get("status", "")),
                                                      str(data.get("error", "")))])
        sender = data.get("from") or {}
        identities = []
        if isinstance(sender, dict) and sender.get("kind") and sender.get("value"):
            identities.append((str(sender["kind"]), str(sender["value"])))
        for ident in data.get("identities") or []:
            if isinstance(ident, dict) and ident.get("kind") and ident.get("value"):
                identities.append((str(ident["kind"]), str(ident["value"])))
        if not identities:
            raise ParseError('"from" must be an object with "kind" and "value".')
        if not (data.get("text") or data.get("html") or data.get("attachments")):
            raise ParseError('A message needs "text", "html" or "attachments".')
        created_at = None
        if data.get("created_at"):
            created_at = parse_datetime(str(data["created_at"]))
            if created_at is None or created_at.tzinfo is None:
                raise ParseError('"created_at" must be ISO 8601 with an offset.')
        attachments = base64_attachments(data.get("attachments"))
        msg = InboundMessage(
            channel=channel, external_id=str(data["external_id"]) if data.get("external_id") else None,
            identities=identities, text=str(data.get("text") or ""), html=str(data.get("html") or ""),
            subject=str(data.get("subject") or ""), name=str(data.get("name") or ""), created_at=created_at,
            attachments=attachments, thread_keys=[f"api:{data['thread_id']}"] if data.get("thread_id") else [],
            language=str(data.get("language") or ""),
        )
        return ParseResult(messages=[msg])

    def send(self, message) -> SendResult:
        channel = message.channel
        url = channel.get("webhook_url")
        if not url:
            return SendResult(external_id=None, status="sent")  # the integrator reads replies through the API
        body = json.dumps({
            "type": "message", "conversation": message.conversation_id, "message": message.pk,
            "to": message.recipient, "text": message.body_text, "html": message.body_html,
            "author": message.author_name, "created_at": message.created_at.isoformat(),
        }).encode()
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Threadline-Timestamp": ts}
        secret = channel.get("webhook_secret")
        if secret:
            headers["X-Threadline-Signature"] = sign(secret, ts, body)
        resp = http.post(url, content=body, headers=headers)
        external = None
        try:
            external = (resp.json() or {}).get("id")
        except ValueError:
            pass
        return SendResult(external_id=str(external) if external else None)
