"""The `email` channel.

Channel settings: {"address": "support@acme.test", "signature": "...", "auto_ack": true,
"auto_ack_text": "...", "rate_limit": 30, "rate_window": 600, "email_backend": "dotted path",
"imap": {"host", "port", "tls", "user", "folder", "move_to"}} with the IMAP
password in the encrypted secrets ("password").

Inbound: the SMTP listener (smtp.py), IMAP polling (imap.py) and anymail
provider webhooks (webhooks.py) store the raw message as an InboundEnvelope
(kind "email") and call channels_app.services.envelope_process, which calls
`EmailAdapter.parse`. Tracking events from providers are stored as JSON
envelopes with the header X-Threadline-Event: tracking.

Outbound: `send()` builds a multipart/alternative mail with stable Message-ID,
In-Reply-To/References, Reply-To with the conversation's reply token.
"""
from __future__ import annotations

import json
import logging
import smtplib
import socket
from email.utils import formatdate

from django.conf import settings
from django.core.cache import cache
from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils.translation import gettext as _

from conversations.sanitize import html_to_text
from helpdesk.http import TransportError

from ..base import Adapter, Forbidden, ParseResult, SendResult, StatusUpdate
from . import parser

log = logging.getLogger(__name__)

TRACKING_HEADER = "X-Threadline-Event"

# anymail tracking event types -> our delivery statuses
_TRACKING_STATUS = {
    "delivered": "delivered", "opened": "read", "clicked": "read", "bounced": "failed", "rejected": "failed",
    "failed": "failed", "complained": None, "unsubscribed": None, "deferred": None, "queued": None, "sent": "sent",
}


def channel_address(channel) -> str:
    return str(channel.get("address") or "").strip().lower()


def channel_domain(channel) -> str:
    address = channel_address(channel)
    return address.rpartition("@")[2] or "threadline.invalid"


def reply_address(channel, conversation) -> str:
    address = channel_address(channel)
    if not address or "@" not in address:
        return ""
    local, _, domain = address.rpartition("@")
    return f"{local}+{conversation.reply_token}@{domain}"


def outbound_message_id(message) -> str:
    """Stable across retries: the same message always carries the same Message-ID."""
    return f"tl.{message.pk}.{message.conversation.reply_token}@{channel_domain(message.channel)}"


class EmailAdapter(Adapter):
    kind = "email"

    def verify(self, request, channel) -> None:
        # Mail does not come through /hooks/email/<uuid>/: inbound paths are the SMTP
        # listener, IMAP and the anymail webhook views (with their own signature checks).
        raise Forbidden(_("Email is received by SMTP, IMAP or provider webhooks, not this URL."))

    # ------------------------------------------------------------------ inbound

    def parse(self, envelope, channel) -> ParseResult:
        if (envelope.headers or {}).get(TRACKING_HEADER) == "tracking":
            return self._parse_tracking(envelope)
        raw = bytes(envelope.body or b"")
        recipients = list((envelope.headers or {}).get("rcpt_to") or [])
        parsed = parser.parse_email(raw, channel, recipients=recipients)
        msg = parsed.message
        if parsed.bounce is not None:
            statuses = self._bounce_statuses(channel, parsed.bounce)
            if statuses:
                return ParseResult(statuses=statuses)
        if not parsed.auto_reason and self._from_ourselves(msg):
            return ParseResult(ignored_reason="mail from one of our own channel addresses (loop guard)")
        if not parsed.auto_reason and self._rate_limited(channel, msg):
            return ParseResult(ignored_reason=f"rate limit: too many messages from {msg.meta.get('from')}")
        return ParseResult(messages=[msg])

    def _bounce_statuses(self, channel, bounce) -> list[StatusUpdate]:
        from conversations.services import find_outbound

        statuses = []
        for mid in bounce.original_ids:
            if channel is not None and find_outbound(channel=channel, external_id=mid) is not None:
                status = "failed" if bounce.permanent else ""
                if status:
                    statuses.append(StatusUpdate(external_id=mid, status=status,
                                                 error=bounce.error or _("The message bounced.")))
        return statuses

    def _from_ourselves(self, msg) -> bool:
        from channels_app.models import Channel

        sender = parser.base_address(msg.meta.get("from", ""))
        if not sender:
            return False
        return any(parser.base_address(a) == sender for a in
                   Channel.objects.filter(kind="email").values_list("settings__address", flat=True) if a)

    def _rate_limited(self, channel, msg) -> bool:
        limit = int(channel.get("rate_limit", getattr(settings, "EMAIL_SENDER_RATE_LIMIT", 30)) or 0)
        if limit <= 0:
            return False
        window = int(channel.get("rate_window", getattr(settings, "EMAIL_SENDER_RATE_WINDOW", 600)) or 600)
        sender = (msg.meta.get("from") or "").lower()
        key = f"email-rate:{channel.pk}:{sender}"[:200]
        if cache.add(key, 1, timeout=window):
            return False
        try:
            count = cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=window)
            return False
        return count > limit

    def _parse_tracking(self, envelope) -> ParseResult:
        try:
            data = json.loads(bytes(envelope.body) or b"{}")
        except ValueError:
            return ParseResult(ignored_reason="tracking event is not JSON")
        status = _TRACKING_STATUS.get(data.get("event_type") or "")
        mid = str(data.get("message_id") or "").strip().strip("<>")
        if not status or not mid:
            return ParseResult(ignored_reason=f"tracking event {data.get('event_type')!r} not applied")
        error = " ".join(filter(None, [data.get("reject_reason") or "", data.get("description") or "",
                                       data.get("mta_response") or ""]))
        return ParseResult(statuses=[StatusUpdate(external_id=mid, status=status, error=error[:1000])])

    # ------------------------------------------------------------------ outbound

    def build(self, message, connection=None) -> EmailMultiAlternatives:
        from conversations.models import Direction, Message, ThreadKey

        channel = message.channel
        conversation = message.conversation
        address = channel_address(channel) or parser.base_address(settings.DEFAULT_FROM_EMAIL.split("<")[-1])
        if message.automated or not message.author_name:
            display = channel.name
        else:
            display = _("%(agent)s via %(channel)s") % {"agent": message.author_name, "channel": channel.name}
        own_id = message.external_id or outbound_message_id(message)

        # The whole chain: every Message-ID of the conversation's email messages,
        # plus what the last inbound mail referenced, oldest first.
        previous = list(Message.objects.filter(conversation=conversation, channel_kind__in=["email", "webform"])
                        .exclude(pk=message.pk).exclude(direction=Direction.NOTE).exclude(external_id=None)
                        .filter(created_at__lte=message.created_at).order_by("created_at", "id")
                        .values_list("direction", "external_id", "meta"))
        chain: list[str] = []
        parent = ""
        for direction, ext, meta in previous:
            if direction == Direction.INBOUND:
                for ref in (meta or {}).get("references", []):
                    if ref not in chain:
                        chain.append(ref)
                if (meta or {}).get("message_id"):
                    parent = meta["message_id"]
            mid = (meta or {}).get("message_id") or (ext if direction == Direction.OUTBOUND else "")
            if mid and mid not in chain:
                chain.append(mid)
        if not parent and chain:
            parent = chain[-1]
        if len(chain) > 40:
            chain = chain[:1] + chain[-39:]

        subject = conversation.subject or message.subject or _("Your request")
        tag = f"[#{conversation.pk}]"
        if tag not in subject:
            subject = f"{subject} {tag}"
        if parent and not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"

        text = message.body_text or html_to_text(message.body_html)
        html = message.body_html or parser.html_from_text(text)
        signature = str(channel.get("signature") or "").strip()
        if signature:
            text = f"{text}\n\n-- \n{signature}"
            html = f'{html}<br><br><div>-- <br>{parser.html_from_text(signature)}</div>'

        headers = {"Message-ID": f"<{own_id}>", "Date": formatdate(localtime=False)}
        if parent:
            headers["In-Reply-To"] = f"<{parent}>"
        if chain:
            headers["References"] = " ".join(f"<{m}>" for m in chain)
        reply_to = reply_address(channel, conversation)
        if message.automated:
            headers["Auto-Submitted"] = "auto-replied"
            headers["X-Auto-Response-Suppress"] = "All"
        mail = EmailMultiAlternatives(
            subject=subject, body=text, from_email=parser.format_address(display, address),
            to=[message.recipient], reply_to=[reply_to] if reply_to else None, headers=headers,
            connection=connection,
        )
        mail.attach_alternative(html, "text/html")
        for att in message.attachments.all():
            try:
                with att.file.open("rb") as fh:
                    mail.attach(att.filename, fh.read(), att.content_type)
            except OSError as exc:
                raise TransportError(f"Attachment {att.filename} is unreadable: {exc}", permanent=True) from exc
        # our own id threads the customer's answer even if the chain is lost
        ThreadKey.objects.get_or_create(conversation=conversation, key=own_id, defaults={"own": True})
        return mail

    def send(self, message) -> SendResult:
        if not message.recipient or "@" not in message.recipient:
            raise TransportError("The customer has no email address.", permanent=True)
        backend = message.channel.get("email_backend") or None
        try:
            connection = get_connection(backend, fail_silently=False)
        except Exception as exc:
            raise TransportError(f"Email backend misconfigured: {exc}", permanent=True) from exc
        from django.utils import translation

        # customer-facing words (subject fallback, "via") in the customer's language
        with translation.override(getattr(message.conversation.customer, "language", "") or None):
            mail = self.build(message, connection=connection)
        own_id = mail.extra_headers["Message-ID"].strip("<>")
        try:
            sent = mail.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _msg in exc.recipients.values()]
            detail = "; ".join(f"{rcpt}: {code} {msg!r}" for rcpt, (code, msg) in exc.recipients.items())
            raise TransportError(f"Recipient refused: {detail}", permanent=all(c >= 500 for c in codes),
                                 status=codes[0] if codes else None) from exc
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise TransportError(f"SMTP {exc.smtp_code}: {text}", permanent=500 <= exc.smtp_code < 600,
                                 status=exc.smtp_code) from exc
        except (smtplib.SMTPException, socket.error, TimeoutError) as exc:
            raise TransportError(f"SMTP error: {exc}", permanent=False) from exc
        except Exception as exc:
            raise _anymail_error(exc) from exc
        if not sent:
            raise TransportError("The email backend did not send the message.", permanent=False)
        meta = {"message_id": own_id}
        status = getattr(mail, "anymail_status", None)
        esp_id = getattr(status, "message_id", None) if status is not None else None
        if isinstance(esp_id, (set, frozenset)):  # one id per recipient: we send to one
            esp_id = next(iter(esp_id), None)
        if esp_id is not None and str(esp_id):
            meta["esp_message_id"] = str(esp_id).strip("<>")
        return SendResult(external_id=own_id, status="sent", meta=meta)


def _anymail_error(exc: Exception) -> TransportError:
    try:
        from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
    except ImportError:  # pragma: no cover
        return TransportError(f"{type(exc).__name__}: {exc}", permanent=False)
    if isinstance(exc, AnymailRecipientsRefused):
        return TransportError(str(exc), permanent=True)
    if isinstance(exc, AnymailAPIError):
        code = getattr(exc, "status_code", None)
        permanent = bool(code and 400 <= code < 500 and code not in (408, 429))
        return TransportError(str(exc), permanent=permanent, status=code)
    return TransportError(f"{type(exc).__name__}: {exc}", permanent=False)


# --------------------------------------------------------------------------- inline images

def link_inline_images(message_ids) -> int:
    """Point `cid:` images of stored inbound mail at their attachment (the
    agent-only inline view), so inline images show in place. The attachment
    rows keep the content id; returns how many messages changed."""
    import re

    from django.urls import reverse

    from conversations.models import Attachment, Message

    changed = 0
    for message in Message.objects.filter(pk__in=list(message_ids), body_html__contains="cid:"):
        by_cid = {a.content_id: a.pk for a in Attachment.objects.filter(message=message).exclude(content_id="")}
        if not by_cid:
            continue

        def swap(match, by_cid=by_cid):
            pk = by_cid.get(match.group(2))
            if pk is None:
                return match.group(0)
            return f'{match.group(1)}"{reverse("conversations:attachment_inline", args=[pk])}"'

        html = re.sub(r'(\bsrc=)"cid:([^"]+)"', swap, message.body_html)
        if html != message.body_html:
            Message.objects.filter(pk=message.pk).update(body_html=html)
            changed += 1
    return changed


def process_envelope(envelope):
    """envelope_process plus the email-only step after ingest (inline images)."""
    from channels_app.services import envelope_process

    result = envelope_process(envelope)
    ids = [m.meta["_result"].message.pk for m in result.messages if m.meta.get("_result") is not None]
    if ids:
        try:
            link_inline_images(ids)
        except Exception:
            log.exception("linking inline images of envelope %s failed", envelope.pk)
    return result


# --------------------------------------------------------------------------- storing large mail

STORE_CHUNK = 4 * 1024 * 1024


def store_raw(*, channel, body: bytes, source: str, headers: dict, remote_addr: str | None = None):
    """envelope_store for raw mail. On PostgreSQL a large message is written in
    4 MB chunks (`body || chunk`) inside one transaction: escaping 25 MB of
    bytea in one statement costs several times its size in memory."""
    from django.db import connection, transaction

    from channels_app.models import InboundEnvelope
    from channels_app.services import envelope_store

    if connection.vendor != "postgresql" or len(body) <= STORE_CHUNK:
        return envelope_store(channel=channel, kind="email", body=body, source=source, headers=headers,
                              remote_addr=remote_addr)
    view = memoryview(body)
    table = connection.ops.quote_name(InboundEnvelope._meta.db_table)
    with transaction.atomic():
        envelope = envelope_store(channel=channel, kind="email", body=b"", source=source, headers=headers,
                                  remote_addr=remote_addr)
        with connection.cursor() as cursor:
            for start in range(0, len(body), STORE_CHUNK):
                cursor.execute(f"UPDATE {table} SET body = body || %s WHERE id = %s",
                               [view[start:start + STORE_CHUNK], envelope.pk])
    envelope.body = body
    return envelope
