"""The `twitter` channel: direct messages of one X account through the Account
Activity API.

Settings: consumer_secret, access_token (secrets), user_id (the subscribed
account's id); optional api_base (default https://api.x.com).

CRC:      GET ?crc_token=... answered {"response_token": "sha256=" + base64(HMAC-SHA256(crc_token,
          consumer_secret))}.
Inbound:  POST {"for_user_id": ..., "direct_message_events": [{"type": "message_create", "id",
          "created_timestamp", "message_create": {"target": {"recipient_id"}, "sender_id",
          "message_data": {"text", "attachment": {"type": "media", "media": {...}}}}}],
          "users": {id: {"name", "screen_name", ...}}}, signed with x-twitter-webhooks-signature =
          "sha256=" + base64(HMAC-SHA256(raw body, consumer_secret)).
          direct_message_mark_read_events mark our messages up to last_read_event_id as read.
Outbound: POST /2/dm_conversations/with/<participant id>/messages {"text": ...} with the
          account's OAuth 2.0 user access token; answers {"data": {"dm_event_id", ...}}.
"""
from __future__ import annotations

import hmac

from django.http import JsonResponse
from django.utils.translation import gettext as _

from conversations.inbound import InboundMessage
from helpdesk import http
from helpdesk.http import TransportError

from ..base import Adapter, Forbidden, ParseResult, SendResult, StatusUpdate
from ..meta.common import api_base, b64_hmac_sha256, download, fetch_media, from_unix, load_json

X_BASE = "https://api.x.com"


def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    return "sha256=" + b64_hmac_sha256(consumer_secret, crc_token.encode())


def x_error(resp: http.Response) -> TransportError:
    text = ""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors") or []
        details = [str(e.get("message") or e.get("detail") or "") for e in errors if isinstance(e, dict)]
        text = str(body.get("detail") or "") or "; ".join(d for d in details if d) or str(body.get("title") or "")
    text = text or resp.text[:300] or f"HTTP {resp.status}"
    transient = resp.status >= 500 or resp.status in (408, 429)
    retry_after = None
    reset = resp.headers.get("x-rate-limit-reset")
    if resp.status == 429 and str(reset or "").isdigit():
        import time

        retry_after = max(float(reset) - time.time(), 1.0)
    return TransportError(f"{text} (X API HTTP {resp.status})", permanent=not transient, status=resp.status,
                          retry_after=retry_after)


class TwitterAdapter(Adapter):
    kind = "twitter"

    def handshake(self, request, channel):
        secret = channel.get("consumer_secret")
        token = request.GET.get("crc_token", "")
        if not secret or not token:
            return JsonResponse({"detail": "Forbidden: missing crc_token or consumer secret."}, status=403)
        return JsonResponse({"response_token": crc_response_token(secret, token)})

    def verify(self, request, channel) -> None:
        secret = channel.get("consumer_secret")
        if not secret:
            raise Forbidden("The channel has no consumer_secret configured.")
        given = request.headers.get("x-twitter-webhooks-signature", "")
        if not given:
            raise Forbidden("Missing x-twitter-webhooks-signature header.")
        expected = "sha256=" + b64_hmac_sha256(secret, request.body)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise Forbidden("x-twitter-webhooks-signature does not match the body.")

    def parse(self, envelope, channel) -> ParseResult:
        data = load_json(envelope)
        own = str(channel.get("user_id") or data.get("for_user_id") or "")
        if channel.get("user_id") and data.get("for_user_id") and str(data["for_user_id"]) != own:
            return ParseResult(ignored_reason=f"event for another account {data.get('for_user_id')}")
        users = data.get("users") or {}
        result = ParseResult()
        ignored = []
        for event in data.get("direct_message_events") or []:
            if not isinstance(event, dict) or event.get("type") != "message_create":
                ignored.append(f"direct message event {event.get('type') if isinstance(event, dict) else '?'}")
                continue
            create = event.get("message_create") or {}
            sender = str(create.get("sender_id") or "")
            if not sender or not event.get("id"):
                ignored.append("direct message without sender or id")
                continue
            if sender == own:
                ignored.append(f"our own direct message {event['id']}")
                continue
            msg = self._message(event, create, sender, users.get(sender) or {}, channel)
            if isinstance(msg, str):
                ignored.append(msg)
            else:
                result.messages.append(msg)
        for read in data.get("direct_message_mark_read_events") or []:
            if not isinstance(read, dict):
                continue
            reader = str(read.get("sender_id") or "")
            last = str(read.get("last_read_event_id") or "")
            if reader == own or not last:
                ignored.append("read receipt by our own account")
                continue
            result.statuses.extend(self._read_up_to(channel, reader, last, from_unix(read.get("created_timestamp"),
                                                                                      millis=True)))
            if not result.statuses:
                ignored.append(f"read receipt for unknown message {last}")
        others = [k for k in data if k.endswith("_events") and k not in
                  ("direct_message_events", "direct_message_mark_read_events")]
        ignored.extend(others)
        if not (result.messages or result.statuses):
            result.ignored_reason = "; ".join(ignored) or "no direct message events"
        return result

    def _message(self, event, create, sender, user, channel) -> InboundMessage | str:
        data = create.get("message_data") or {}
        text = str(data.get("text") or "")
        notes: list[str] = []
        attachments = []
        media = ((data.get("attachment") or {}).get("media") or {}) if isinstance(data.get("attachment"), dict) else {}
        url = media.get("media_url_https") or media.get("media_url")
        if url:
            # the media URL is also inside the text as a t.co link: drop it from the text
            for link in (media.get("url"), media.get("display_url")):
                if link and link in text:
                    text = text.replace(link, "").strip()
            token = channel.get("access_token")
            fallback = f"x-{media.get('type') or 'media'}-{media.get('id_str') or media.get('id') or ''}"
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            att = fetch_media(lambda: download(url, headers=headers, fallback=fallback), _("X media"), notes)
            if att:
                attachments.append(att)
        if not text and not attachments:
            if notes:
                text = "\n".join(notes)
            else:
                return f"empty direct message {event.get('id')}"
        meta = {}
        if user.get("screen_name"):
            meta["x_screen_name"] = str(user["screen_name"])
        return InboundMessage(
            channel=channel, external_id=str(event["id"]), identities=[("twitter", sender)], text=text,
            name=str(user.get("name") or user.get("screen_name") or ""),
            created_at=from_unix(event.get("created_timestamp"), millis=True), attachments=attachments,
            notes=notes, meta=meta)

    def _read_up_to(self, channel, reader: str, last_id: str, at) -> list[StatusUpdate]:
        """Everything we sent to `reader` up to (and including) last_read_event_id is read."""
        from django.db.models import Q

        from conversations.models import Direction, Message

        ours = Message.objects.filter(channel=channel, direction=Direction.OUTBOUND, recipient=reader,
                                      external_id__isnull=False)
        anchor = ours.filter(external_id=last_id).first()
        if anchor is None:
            inbound = Message.objects.filter(channel=channel, external_id=last_id).first()
            if inbound is None:
                return [StatusUpdate(last_id, "read", at=at)]
            anchor_time = inbound.created_at
        else:
            anchor_time = anchor.sent_at or anchor.created_at
        qs = ours.filter(Q(sent_at__lte=anchor_time) | Q(sent_at__isnull=True, created_at__lte=anchor_time),
                         delivery_status__in=["queued", "sent", "delivered", "failed"])
        updates = [StatusUpdate(ext, "read", at=at) for ext in qs.values_list("external_id", flat=True)[:500]]
        if anchor is not None and last_id not in {u.external_id for u in updates}:
            updates.append(StatusUpdate(last_id, "read", at=at))
        return updates

    # ------------------------------------------------------------------ outbound

    def send(self, message) -> SendResult:
        channel = message.channel
        token = channel.get("access_token")
        if not token:
            raise TransportError(_("The X channel has no access_token."), permanent=True)
        if not message.recipient:
            raise TransportError(_("The customer has no X account id."), permanent=True)
        if not message.body_text.strip():
            raise TransportError(_("X direct messages from Threadline carry text only."), permanent=True)
        url = f"{api_base(channel, X_BASE)}/2/dm_conversations/with/{message.recipient}/messages"
        resp = http.post(url, raise_for_status=False, json={"text": message.body_text[:10000]},
                         headers={"Authorization": f"Bearer {token}"})
        if resp.status >= 400:
            raise x_error(resp)
        try:
            data = (resp.json() or {}).get("data") or {}
        except ValueError:
            data = {}
        meta = {}
        skipped = [a.filename for a in message.attachments.all()]
        if skipped:
            meta["attachments_not_sent"] = skipped
        if data.get("dm_conversation_id"):
            meta["x_dm_conversation_id"] = str(data["dm_conversation_id"])
        return SendResult(external_id=str(data["dm_event_id"]) if data.get("dm_event_id") else None, status="sent",
                          meta=meta)
