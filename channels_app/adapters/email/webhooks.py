"""Provider webhooks through django-anymail: inbound mail and delivery tracking.

Anymail's own views check the provider's authenticity (HTTP basic auth with
ANYMAIL["WEBHOOK_SECRET"] for every provider, plus Mailgun's HMAC signing key;
SES arrives through SNS behind the same basic auth) and then send the
`anymail.signals.inbound` / `tracking` signals. The receivers below stay thin:
store the raw message as an InboundEnvelope, then hand it to the one parser
through channels_app.services.envelope_process.

`guarded()` refuses every webhook while its check is not configured, so an
unprotected endpoint never accepts anything.
"""
from __future__ import annotations

import json
import logging

from anymail import signals
from django.conf import settings
from django.http import JsonResponse

log = logging.getLogger(__name__)


def _anymail_setting(name: str):
    conf = getattr(settings, "ANYMAIL", {}) or {}
    return conf.get(name) or conf.get(name.upper())


def check_configured(view_class) -> str:
    """'' when the view's authenticity check is configured, else why not."""
    if getattr(view_class, "esp_name", "") == "Mailgun":
        if not (_anymail_setting("MAILGUN_WEBHOOK_SIGNING_KEY") or _anymail_setting("MAILGUN_API_KEY")):
            return "MAILGUN_WEBHOOK_SIGNING_KEY is not configured"
        return ""
    if not _anymail_setting("WEBHOOK_SECRET"):
        return "ANYMAIL WEBHOOK_SECRET is not configured"
    return ""


def guarded(view, view_class):
    def wrapper(request, *args, **kwargs):
        reason = check_configured(view_class)
        if reason:
            log.warning("refused %s webhook: %s", getattr(view_class, "esp_name", "?"), reason)
            return JsonResponse({"detail": "Forbidden: webhook authentication is not configured."}, status=403)
        return view(request, *args, **kwargs)

    wrapper.csrf_exempt = True
    return wrapper


def _channel_for_message(message):
    from channels_app.models import Channel

    from .smtp import channel_for_recipient

    candidates = []
    if getattr(message, "envelope_recipient", None):
        candidates.append(message.envelope_recipient)
    for field in ("to", "cc"):
        for addr in getattr(message, field, None) or []:
            candidates.append(getattr(addr, "addr_spec", str(addr)))
    for candidate in candidates:
        channel = channel_for_recipient(candidate)
        if channel is not None:
            return channel, candidates
    return Channel.objects.filter(kind="email", active=True).order_by("pk").first(), candidates


def on_inbound(sender, event, esp_name, **kwargs):
    from channels_app.services import envelope_reject, envelope_store

    from .adapter import process_envelope as envelope_process

    from .parser import _as_bytes

    message = event.message
    raw = _as_bytes(message) if message is not None else b""
    channel, rcpts = _channel_for_message(message) if message is not None else (None, [])
    envelope = envelope_store(channel=channel, kind="email", body=raw, source="webhook",
                              headers={"esp": esp_name, "event_id": event.event_id or "", "rcpt_to": rcpts[:20]})
    if channel is None:
        envelope_reject(envelope, "no email channel is configured")
        return
    try:
        envelope_process(envelope)
    except Exception:
        # stored: answer 200 so the provider does not resend; replay picks it up
        log.exception("%s inbound envelope %s failed processing", esp_name, envelope.pk)


def on_tracking(sender, event, esp_name, **kwargs):
    from channels_app.services import envelope_store

    from .adapter import process_envelope as envelope_process
    from conversations.models import Direction, Message

    esp_id = str(event.message_id or "").strip().strip("<>")
    outbound = None
    if esp_id:
        outbound = (Message.objects.filter(direction=Direction.OUTBOUND, channel_kind="email", external_id=esp_id)
                    .select_related("channel").first()
                    or Message.objects.filter(direction=Direction.OUTBOUND, channel_kind="email",
                                              meta__esp_message_id=esp_id).select_related("channel").first())
    body = json.dumps({
        "event_type": event.event_type, "message_id": outbound.external_id if outbound else esp_id,
        "esp_message_id": esp_id, "recipient": event.recipient, "description": event.description or "",
        "mta_response": event.mta_response or "", "reject_reason": event.reject_reason or "",
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
    }, default=str).encode()
    envelope = envelope_store(channel=outbound.channel if outbound else None, kind="email", body=body,
                              source="webhook", headers={"X-Threadline-Event": "tracking", "esp": esp_name})
    if outbound is None:
        from channels_app.services import envelope_reject

        envelope_reject(envelope, f"tracking event for unknown message {esp_id!r}")
        return
    try:
        envelope_process(envelope)
    except Exception:
        log.exception("%s tracking envelope %s failed processing", esp_name, envelope.pk)


def connect() -> None:
    signals.inbound.connect(on_inbound, dispatch_uid="threadline-email-inbound")
    signals.tracking.connect(on_tracking, dispatch_uid="threadline-email-tracking")
