"""The `messenger` and `instagram` channels: Meta Graph webhooks for a Facebook
Page's Messenger inbox and an Instagram professional account's direct messages.

Settings: app_secret, verify_token, page_access_token (secrets), page_id (the
Facebook Page id; for `instagram` the Page linked to the Instagram account, or
the Instagram account id together with api_base https://graph.instagram.com
when the app uses Instagram Login); optional api_base (default
https://graph.facebook.com), api_version and fetch_profile (default on).

Inbound:  GET hub.* subscription check; POST {"object": "page"|"instagram", "entry": [{"id": ...,
          "time": ..., "messaging": [{"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": ms,
          "message"|"postback"|"delivery"|"read": {...}}]}]} signed with X-Hub-Signature-256.
          Attachments arrive as signed CDN URLs (payload.url) and are downloaded as they are.
Statuses: Messenger `delivery` (mids + watermark) and `read` (watermark): every outbound message to
          that person sent up to the watermark is delivered / read. Instagram `read` names a mid.
Outbound: POST /<version>/<page_id>/messages (bearer page token) with {"recipient": {"id": ...},
          "messaging_type": "RESPONSE", "message": {"text": ...}}; more than 24 h after the customer's
          last message the HUMAN_AGENT tag is used (allowed for 7 days).
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.inbound import InboundMessage
from helpdesk.http import TransportError

from ..base import Adapter, ParseError, ParseResult, SendResult, StatusUpdate
from .common import (
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

log = logging.getLogger(__name__)


def bearer(token) -> dict:
    # Graph accepts the token as a bearer header: it stays out of URLs (and so out of access logs)
    return {"Authorization": f"Bearer {token or ''}"}

STANDARD_WINDOW = timedelta(hours=24)


class _MetaMessagingAdapter(MetaWebhookMixin, Adapter):
    kind = ""
    object_name = ""
    identity_kind = ""
    profile_fields = ""

    # ------------------------------------------------------------------ inbound

    def parse(self, envelope, channel) -> ParseResult:
        data = load_json(envelope)
        if data.get("object") != self.object_name:
            return ParseResult(ignored_reason=f"not a {self.object_name} event: {data.get('object')!r}")
        result = ParseResult()
        ignored = []
        for entry in data.get("entry") or []:
            if not isinstance(entry, dict):
                continue
            if not entry.get("messaging"):
                ignored.append("entry without messaging events" + (
                    f" (changes: {', '.join(str(c.get('field')) for c in entry.get('changes') or [])})"
                    if entry.get("changes") else ""))
                continue
            for event in entry.get("messaging") or []:
                outcome = self._event(event, channel, result)
                if outcome:
                    ignored.append(outcome)
        if not (result.messages or result.statuses):
            result.ignored_reason = "; ".join(ignored) or "no messaging events"
        return result

    def _event(self, event: dict, channel, result: ParseResult) -> str:
        """Add what the event carries to result; return a reason when ignored."""
        if not isinstance(event, dict):
            return "malformed event"
        sender = str((event.get("sender") or {}).get("id") or "")
        at = from_unix(event.get("timestamp"), millis=True)
        if "message" in event:
            msg = event.get("message") or {}
            if msg.get("is_echo"):
                return f"echo of a page message {msg.get('mid')}"
            if msg.get("is_deleted"):
                return f"deleted message {msg.get('mid')}"
            if not sender or not msg.get("mid"):
                raise ParseError("A message event needs sender.id and message.mid.")
            parsed = self._message(msg, sender, at, channel)
            if isinstance(parsed, str):
                return parsed
            result.messages.append(parsed)
            return ""
        if "postback" in event:
            postback = event.get("postback") or {}
            title = str(postback.get("title") or postback.get("payload") or "")
            if not sender or not title:
                return "empty postback"
            external = str(postback.get("mid") or f"postback:{sender}:{event.get('timestamp')}")
            result.messages.append(InboundMessage(
                channel=channel, external_id=external, identities=[(self.identity_kind, sender)], text=title,
                name=self._profile_name(channel, sender), created_at=at,
                meta={"postback_payload": str(postback.get("payload") or "")[:500]}))
            return ""
        if "delivery" in event:
            delivery = event.get("delivery") or {}
            mids = [str(m) for m in delivery.get("mids") or []]
            result.statuses.extend(StatusUpdate(m, "delivered", at=at) for m in mids)
            watermark = from_unix(delivery.get("watermark"), millis=True)
            if watermark and sender:
                result.statuses.extend(self._up_to(channel, sender, watermark, "delivered", exclude=mids, at=at))
            return "" if (mids or watermark) else "delivery event without mids or watermark"
        if "read" in event:
            read = event.get("read") or {}
            watermark = from_unix(read.get("watermark"), millis=True) if read.get("watermark") else None
            if read.get("mid"):
                mid = str(read["mid"])
                result.statuses.append(StatusUpdate(mid, "read", at=at))
                watermark = watermark or self._sent_at(channel, mid)
            if watermark and sender:
                result.statuses.extend(self._up_to(channel, sender, watermark, "read", exclude=[read.get("mid")],
                                                   at=at))
            return ""
        kinds = sorted(k for k in event if k not in ("sender", "recipient", "timestamp"))
        return f"event {'/'.join(kinds) or 'empty'}"

    def _message(self, msg: dict, sender: str, at, channel) -> InboundMessage | str:
        text = str(msg.get("text") or "")
        notes: list[str] = []
        attachments = []
        for index, att in enumerate(msg.get("attachments") or []):
            if not isinstance(att, dict):
                continue
            atype = str(att.get("type") or "file")
            payload = att.get("payload") or {}
            if atype == "location":
                coords = payload.get("coordinates") or {}
                text = (text + "\n" if text else "") + (
                    f"https://maps.google.com/?q={coords.get('lat')},{coords.get('long')}")
                continue
            url = payload.get("url")
            if not url:
                if atype in ("fallback", "template", "share", "story_mention", "ig_reel", "reel"):
                    title = str(att.get("title") or payload.get("title") or "")
                    if title:
                        text = (text + "\n" if text else "") + title
                continue
            # the CDN URLs are signed: no token is sent along (it would leak to the CDN host)
            fetched = fetch_media(
                lambda url=url, atype=atype, index=index: download(
                    url, fallback=f"{self.kind}-{atype}-{index + 1}"),
                _("%(channel)s %(type)s") % {"channel": self.kind, "type": atype}, notes)
            if fetched is not None:
                attachments.append(fetched)
        if msg.get("quick_reply") and not text:
            text = str((msg.get("quick_reply") or {}).get("payload") or "")
        if not text and not attachments:
            if notes:
                text = "\n".join(notes)
            elif msg.get("sticker_id"):
                text = "👍"
            else:
                return f"empty message {msg.get('mid')}"
        meta = {}
        reply_to = (msg.get("reply_to") or {}).get("mid")
        if reply_to:
            meta["in_reply_to"] = str(reply_to)
        return InboundMessage(
            channel=channel, external_id=str(msg["mid"]), identities=[(self.identity_kind, sender)], text=text,
            name=self._profile_name(channel, sender), created_at=at, attachments=attachments, notes=notes,
            meta=meta)

    def _profile_name(self, channel, sender: str) -> str:
        """The sender's name from the Graph profile API, fetched once per new customer."""
        from customers.models import Identity

        if channel.get("fetch_profile") is False or not channel.get("page_access_token"):
            return ""
        if Identity.objects.filter(kind=self.identity_kind, value=sender).exists():
            return ""
        url = f"{api_base(channel, GRAPH_BASE)}/{graph_version(channel)}/{sender}"
        try:
            profile = graph_request("GET", url, params={"fields": self.profile_fields},
                                    headers=bearer(channel.get("page_access_token"))).json()
        except (TransportError, ValueError) as exc:
            log.info("%s profile lookup failed for channel %s: %s", self.kind, channel.pk,
                     getattr(exc, "message", exc))
            return ""
        return self.profile_to_name(profile or {})

    @staticmethod
    def profile_to_name(profile: dict) -> str:
        return str(profile.get("name") or "").strip()

    def _outbound(self, channel, recipient: str):
        from conversations.models import Direction, Message

        return Message.objects.filter(channel=channel, direction=Direction.OUTBOUND, recipient=recipient,
                                      external_id__isnull=False)

    def _sent_at(self, channel, mid: str):
        from conversations.models import Direction, Message

        msg = Message.objects.filter(channel=channel, direction=Direction.OUTBOUND, external_id=mid).first()
        return (msg.sent_at or msg.created_at) if msg else None

    def _up_to(self, channel, recipient: str, watermark, status: str, *, exclude=(), at=None) -> list[StatusUpdate]:
        """Status updates for every outbound message to `recipient` sent at or before the watermark."""
        states = ["queued", "sent", "failed"] if status == "delivered" else ["queued", "sent", "delivered", "failed"]
        qs = (self._outbound(channel, recipient)
              .filter(Q(sent_at__lte=watermark) | Q(sent_at__isnull=True, created_at__lte=watermark),
                      delivery_status__in=states)
              .exclude(external_id__in=[e for e in exclude if e]))
        return [StatusUpdate(ext, status, at=at) for ext in qs.values_list("external_id", flat=True)[:500]]

    # ------------------------------------------------------------------ outbound

    def send(self, message) -> SendResult:
        channel = message.channel
        token = channel.get("page_access_token")
        if not token:
            raise TransportError(_("The %(kind)s channel has no page_access_token.") % {"kind": self.kind},
                                 permanent=True)
        if not message.recipient:
            raise TransportError(_("The customer has no %(kind)s id.") % {"kind": self.kind}, permanent=True)
        url = f"{api_base(channel, GRAPH_BASE)}/{graph_version(channel)}/{channel.get('page_id') or 'me'}/messages"
        params = {}
        headers = bearer(token)
        envelope = {"recipient": {"id": message.recipient}, **self.messaging_type(message)}
        ids = []
        meta = {}
        if message.body_text.strip():
            resp = graph_request("POST", url, params=params, headers=headers,
                                 json={**envelope, "message": {"text": message.body_text}})
            ids.append((resp.json() or {}).get("message_id"))
        skipped = []
        for att in message.attachments.all():
            if not self.can_upload:
                skipped.append(att.filename)
                continue
            with att.file.open("rb") as fh:
                content = fh.read()
            atype = {"image": "image", "video": "video", "audio": "audio"}.get(att.content_type.split("/")[0], "file")
            try:
                resp = graph_request("POST", url, params=params, headers=headers, data={
                    "recipient": json.dumps(envelope["recipient"]),
                    "messaging_type": envelope["messaging_type"], **({"tag": envelope["tag"]} if "tag" in envelope
                                                                      else {}),
                    "message": json.dumps({"attachment": {"type": atype, "payload": {"is_reusable": False}}}),
                }, files={"filedata": (att.filename, content, att.content_type)})
            except TransportError as exc:
                if ids:
                    exc.permanent = True
                    exc.message = _("Only part of the message was sent: %(error)s") % {"error": exc.message}
                raise
            ids.append((resp.json() or {}).get("message_id"))
        if skipped:
            if not ids:
                raise TransportError(_("%(kind)s replies cannot carry file uploads: %(names)s")
                                     % {"kind": self.kind, "names": ", ".join(skipped)}, permanent=True)
            meta["attachments_not_sent"] = skipped
        ids = [str(i) for i in ids if i]
        if not ids and not skipped and not message.body_text.strip():
            raise TransportError(_("The message is empty."), permanent=True)
        if len(ids) > 1:
            meta["message_ids"] = ids
        return SendResult(external_id=ids[0] if ids else None, status="sent", meta=meta)

    can_upload = True

    def messaging_type(self, message) -> dict:
        """RESPONSE inside the standard 24 h window, the HUMAN_AGENT tag after it."""
        from conversations.models import Direction, Message

        last = (Message.objects.filter(channel=message.channel, direction=Direction.INBOUND,
                                       conversation__customer_id=message.conversation.customer_id)
                .order_by("-created_at").values_list("created_at", flat=True).first())
        if last is not None and timezone.now() - last > STANDARD_WINDOW:
            return {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
        return {"messaging_type": "RESPONSE"}


class MessengerAdapter(_MetaMessagingAdapter):
    kind = "messenger"
    object_name = "page"
    identity_kind = "messenger"
    profile_fields = "first_name,last_name"

    @staticmethod
    def profile_to_name(profile: dict) -> str:
        name = " ".join(str(profile.get(k) or "") for k in ("first_name", "last_name")).strip()
        return name or str(profile.get("name") or "").strip()


class InstagramAdapter(_MetaMessagingAdapter):
    kind = "instagram"
    object_name = "instagram"
    identity_kind = "instagram"
    profile_fields = "name,username"
    # Instagram's Send API takes attachments by public URL only, not uploads
    can_upload = False

    @staticmethod
    def profile_to_name(profile: dict) -> str:
        return str(profile.get("name") or profile.get("username") or "").strip()
