"""The `telegram` channel: a Telegram bot (Bot API) receiving updates by webhook.

Settings: bot_token, secret_token (secrets); optional api_base (default
https://api.telegram.org). `manage.py telegram_set_webhook` registers the
channel's webhook URL with the secret token.

Inbound:  POST an Update {"update_id": ..., "message": {"message_id", "from": {...}, "chat": {...},
          "date", "text"|"photo"|"document"|...}} with X-Telegram-Bot-Api-Secret-Token equal to
          the channel's secret_token. Files: getFile, then /file/bot<token>/<file_path>.
          Only private chats are conversations; the external id is "<chat id>:<message id>"
          (message ids are unique per chat only).
Outbound: sendMessage {"chat_id", "text"}, and sendDocument/sendPhoto (multipart) for attachments.
          Errors come as {"ok": false, "error_code": 403, "description": "..."}.
Telegram has no delivery or read receipts for bots.
"""
from __future__ import annotations

import hmac

from django.conf import settings
from django.utils.translation import gettext as _

from conversations.inbound import InboundMessage
from helpdesk import http
from helpdesk.http import TransportError

from ..base import Adapter, Forbidden, ParseError, ParseResult, SendResult
from ..meta.common import api_base, download, fetch_media, from_unix, load_json

TELEGRAM_BASE = "https://api.telegram.org"
MESSAGE_KEYS = ("message",)
IGNORED_KEYS = ("edited_message", "channel_post", "edited_channel_post", "callback_query", "inline_query",
                "my_chat_member", "chat_member", "chat_join_request", "poll", "poll_answer", "message_reaction")
FILE_KINDS = ("document", "video", "audio", "voice", "video_note", "animation", "sticker")


def bot_call(channel, method: str, *, timeout: float | None = None, **kwargs) -> dict:
    """Call a Bot API method; raises TransportError with Telegram's description."""
    token = channel.get("bot_token")
    if not token:
        raise TransportError(_("The Telegram channel has no bot_token."), permanent=True)
    url = f"{api_base(channel, TELEGRAM_BASE)}/bot{token}/{method}"
    resp = http.post(url, raise_for_status=False, timeout=timeout, **kwargs)
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    if resp.status >= 400 or not data.get("ok"):
        code = int(data.get("error_code") or resp.status or 0)
        description = str(data.get("description") or resp.text[:300] or f"HTTP {resp.status}")
        retry_after = (data.get("parameters") or {}).get("retry_after")
        transient = code >= 500 or code in (408, 429) or resp.status >= 500
        raise TransportError(f"{description} (Telegram error {code})", permanent=not transient, status=code,
                             retry_after=float(retry_after) if retry_after else None)
    return data


class TelegramAdapter(Adapter):
    kind = "telegram"

    def handshake(self, request, channel):
        from django.http import HttpResponseNotAllowed

        return HttpResponseNotAllowed(["POST"])

    def verify(self, request, channel) -> None:
        expected = channel.get("secret_token")
        if not expected:
            raise Forbidden("The channel has no secret_token configured.")
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not given:
            raise Forbidden("Missing X-Telegram-Bot-Api-Secret-Token header.")
        if not hmac.compare_digest(given.encode(), str(expected).encode()):
            raise Forbidden("X-Telegram-Bot-Api-Secret-Token does not match.")

    def parse(self, envelope, channel) -> ParseResult:
        data = load_json(envelope)
        if "update_id" not in data:
            raise ParseError("A Telegram update needs an update_id.")
        msg = data.get("message")
        if not isinstance(msg, dict):
            kinds = [k for k in data if k != "update_id"]
            return ParseResult(ignored_reason=f"update type {'/'.join(kinds) or 'empty'}")
        chat = msg.get("chat") or {}
        sender = msg.get("from") or {}
        if chat.get("type") != "private":
            return ParseResult(ignored_reason=f"message in a {chat.get('type')!r} chat")
        if sender.get("is_bot"):
            return ParseResult(ignored_reason="message from a bot")
        if not sender.get("id") or msg.get("message_id") is None or chat.get("id") is None:
            raise ParseError("A Telegram message needs message_id, from.id and chat.id.")
        notes: list[str] = []
        text = str(msg.get("text") or msg.get("caption") or "")
        attachments = []
        if msg.get("photo"):
            biggest = max(msg["photo"], key=lambda p: (p.get("file_size") or 0, p.get("width") or 0))
            att = fetch_media(lambda: self._download(channel, biggest, "image/jpeg", ""), _("Telegram photo"), notes)
            if att:
                attachments.append(att)
        for kind in FILE_KINDS:
            item = msg.get(kind)
            if isinstance(item, dict) and item.get("file_id"):
                att = fetch_media(lambda item=item: self._download(channel, item, str(item.get("mime_type") or ""),
                                                                   str(item.get("file_name") or "")),
                                  _("Telegram %(type)s") % {"type": kind}, notes)
                if att:
                    attachments.append(att)
        identities = [("telegram", str(sender["id"]))]
        contact = msg.get("contact")
        if isinstance(contact, dict) and contact.get("phone_number"):
            # a contact card the customer shares about themselves carries a verified phone
            shared = f"{contact.get('first_name', '')} {contact.get('last_name', '')}".strip()
            phone = str(contact["phone_number"]).strip()
            if phone.isdigit():  # Telegram gives the user's own number without the '+'
                phone = "+" + phone
            text = (text + "\n" if text else "") + f"{shared} {phone}".strip()
        location = msg.get("location")
        if isinstance(location, dict):
            text = (text + "\n" if text else "") + (
                f"https://maps.google.com/?q={location.get('latitude')},{location.get('longitude')}")
        if not text and not attachments:
            if notes:
                text = "\n".join(notes)
            else:
                return ParseResult(ignored_reason="message without text or media")
        name = " ".join(str(sender.get(k) or "") for k in ("first_name", "last_name")).strip()
        meta = {"telegram_chat_id": chat["id"]}
        if sender.get("username"):
            meta["telegram_username"] = str(sender["username"])
        if (msg.get("reply_to_message") or {}).get("message_id"):
            meta["in_reply_to"] = f"{chat['id']}:{msg['reply_to_message']['message_id']}"
        return ParseResult(messages=[InboundMessage(
            channel=channel, external_id=f"{chat['id']}:{msg['message_id']}", identities=identities, text=text,
            name=name or str(sender.get("username") or ""), language=str(sender.get("language_code") or "")[:10],
            created_at=from_unix(msg.get("date")), attachments=attachments, notes=notes, meta=meta)])

    def _download(self, channel, item: dict, content_type: str, filename: str):
        if int(item.get("file_size") or 0) > settings.ATTACHMENT_MAX_BYTES:
            raise TransportError(_("The file is larger than the limit of %(limit)s bytes.")
                                 % {"limit": settings.ATTACHMENT_MAX_BYTES}, permanent=True)
        info = bot_call(channel, "getFile", json={"file_id": item["file_id"]}).get("result") or {}
        path = info.get("file_path")
        if not path:
            raise TransportError("Telegram returned no file_path.", permanent=True)
        url = f"{api_base(channel, TELEGRAM_BASE)}/file/bot{channel.get('bot_token')}/{path}"
        att = download(url, filename=filename or path.rsplit("/", 1)[-1], content_type=content_type,
                       fallback=f"telegram-{item.get('file_unique_id') or 'file'}")
        return att

    # ------------------------------------------------------------------ outbound

    def send(self, message) -> SendResult:
        channel = message.channel
        chat_id = message.recipient
        if not chat_id:
            raise TransportError(_("The customer has no Telegram id."), permanent=True)
        ids = []
        try:
            if message.body_text.strip():
                result = bot_call(channel, "sendMessage", json={"chat_id": chat_id, "text": message.body_text[:4096]})
                ids.append((result.get("result") or {}).get("message_id"))
            for att in message.attachments.all():
                method, field = (("sendPhoto", "photo") if att.content_type in ("image/jpeg", "image/png")
                                 else ("sendDocument", "document"))
                with att.file.open("rb") as fh:
                    content = fh.read()
                result = bot_call(channel, method, data={"chat_id": chat_id},
                                  files={field: (att.filename, content, att.content_type)})
                ids.append((result.get("result") or {}).get("message_id"))
        except TransportError as exc:
            if ids:
                exc.permanent = True
                exc.message = _("Only part of the message was sent: %(error)s") % {"error": exc.message}
            raise
        ids = [f"{chat_id}:{i}" for i in ids if i is not None]
        if not ids:
            raise TransportError(_("The message is empty."), permanent=True)
        return SendResult(external_id=ids[0], status="sent", meta={"telegram_ids": ids} if len(ids) > 1 else {})
