"""The adapter contract. One package per channel kind under
channels_app/adapters/<kind>/, registered in channels_app.adapters.ADAPTERS.

Inbound:  verify(request, channel) -> raises Forbidden on a bad signature
          handshake(request, channel) -> HttpResponse for GET verification
          parse(envelope, channel) -> ParseResult (messages and status updates)
Outbound: send(message) -> SendResult, raising helpdesk.http.TransportError
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.http import HttpResponse, HttpResponseNotAllowed

from conversations.inbound import InboundMessage


class Forbidden(Exception):
    """Authenticity check failed (wrong or missing signature/secret)."""


class ParseError(ValueError):
    """The payload is malformed (invalid JSON, missing fields): a 400."""


@dataclass
class StatusUpdate:
    external_id: str
    status: str  # sent, delivered, read, failed
    error: str = ""
    at: datetime | None = None


@dataclass
class ParseResult:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    # set for payloads we accept but do not act on (unknown event types)
    ignored_reason: str = ""
    # the adapter applied the payload itself (e.g. a call's status on its message)
    handled: bool = False
    # processing adds what each message became; adapters can shape the reply with it
    response: HttpResponse | None = None


@dataclass
class SendResult:
    external_id: str | None = None
    status: str = "sent"
    meta: dict = field(default_factory=dict)


class Adapter:
    kind: str = ""
    # parse() reads only the envelope's payload (not its id): it may run
    # before the envelope is stored (channels_app.services.envelope_store_and_process)
    parses_unsaved: bool = False

    def handshake(self, request, channel) -> HttpResponse:
        return HttpResponseNotAllowed(["POST"])

    def verify(self, request, channel) -> None:
        raise Forbidden("no authenticity check implemented")

    def parse(self, envelope, channel) -> ParseResult:
        raise NotImplementedError

    def send(self, message) -> SendResult:
        raise NotImplementedError

    def response(self, envelope, result: ParseResult) -> HttpResponse:
        return result.response or HttpResponse("ok", content_type="text/plain")


def json_body(envelope) -> dict:
    """The envelope's body as a JSON object, or a ParseError (a 400)."""
    import json

    try:
        data = json.loads(bytes(envelope.body) or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"Invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ParseError("The body must be a JSON object.")
    return data


def base64_attachments(items) -> list:
    """[{"filename", "content_type", "content_base64"}, ...] -> InboundAttachments."""
    import base64
    import binascii

    from conversations.inbound import InboundAttachment

    attachments = []
    for att in items or []:
        try:
            content = base64.b64decode(att.get("content_base64", ""), validate=True)
        except (binascii.Error, AttributeError, TypeError, ValueError) as exc:
            raise ParseError(f"Attachment content is not valid base64: {exc}") from exc
        attachments.append(InboundAttachment(filename=str(att.get("filename") or "attachment"),
                                             content_type=str(att.get("content_type") or "application/octet-stream"),
                                             content=content))
    return attachments
