"""One parser for every inbound mail path (SMTP listener, IMAP, provider webhooks).

`parse_email(raw, channel, recipients=...)` turns raw RFC 5322 bytes into an
`InboundMessage` (or a bounce status) and never raises on malformed input:
whatever cannot be decoded is replaced, and the raw bytes stay in the
`InboundEnvelope` the caller stored first.
"""
from __future__ import annotations

import binascii
import codecs
import base64
import hashlib
import html as html_lib
import logging
import re
from dataclasses import dataclass, field
from datetime import timezone as dt_timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from django.utils import timezone

from conversations.inbound import InboundAttachment, InboundMessage

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- charsets

# Declared charsets that lie: decode with the superset mail clients really used.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "windows-31j": "cp932",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949", "big5": "big5hkscs", "iso-8859-8-i": "iso-8859-8",
    "unicode-1-1-utf-7": "utf-7", "utf8": "utf-8", "x-unknown": "utf-8", "unknown-8bit": "utf-8",
    "default": "utf-8", "cp-850": "cp850",
}


def decode_bytes(payload: bytes, charset: str | None) -> str:
    """Decode with the declared charset if it exists, else UTF-8, else cp1252; never raises."""
    candidates = []
    if charset:
        name = charset.strip().strip('"').lower()
        candidates.append(_CHARSET_ALIASES.get(name, name))
    candidates += ["utf-8", "cp1252"]
    for name in candidates:
        try:
            codecs.lookup(name)
        except (LookupError, ValueError):
            continue
        try:
            return payload.decode(name)
        except (UnicodeDecodeError, LookupError, ValueError):
            continue
    return payload.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- headers

def clean(value: str) -> str:
    """No NUL bytes and no lone surrogates (neither PostgreSQL nor UTF-8 accept them)."""
    if not value:
        return ""
    value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if _only_escapes(value) \
            else value.encode("utf-8", "replace").decode("utf-8")


def _only_escapes(value: str) -> bool:
    return all(not (0xD800 <= ord(c) <= 0xDFFF) or 0xDC80 <= ord(c) <= 0xDCFF for c in value)


def header(msg: Message, name: str, default: str = "") -> str:
    """A header as text; malformed headers fall back to their raw value."""
    try:
        value = msg.get(name)
    except Exception:  # the header registry can choke on garbage
        value = None
        for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else []:
            if key.lower() == name.lower():
                value = raw
                break
    if value is None:
        return default
    try:
        text = str(value)
    except Exception:
        text = repr(value)
    return clean(text.replace("\r", " ").replace("\n", " ").strip())


def header_all(msg: Message, name: str) -> list[str]:
    try:
        values = msg.get_all(name) or []
    except Exception:
        values = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
    out = []
    for value in values:
        try:
            out.append(clean(str(value)))
        except Exception:
            continue
    return out


_MSGID = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str) -> list[str]:
    """Message-IDs in a header value, without angle brackets, in order."""
    if not value:
        return []
    found = _MSGID.findall(value)
    if not found:
        found = [tok.strip("<>") for tok in value.split() if "@" in tok]
    result = []
    for mid in found:
        mid = mid.strip()[:490]
        if mid and mid not in result:
            result.append(mid)
    return result


def addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    values = header_all(msg, name)
    try:
        pairs = getaddresses(values)
    except Exception:
        pairs = []
    return [(n.strip(), a.strip()) for n, a in pairs if a and "@" in a]


_SUBJECT_TAG = re.compile(r"\[#(\d{1,12})\]")
_TOKEN = re.compile(r"^[^+@]+\+([0-9a-f]{8,32})@", re.IGNORECASE)


def reply_token_of(address: str) -> str:
    match = _TOKEN.match(address or "")
    return match.group(1).lower() if match else ""


def base_address(address: str) -> str:
    """support+token@acme.test -> support@acme.test (lower-cased)."""
    address = (address or "").strip().strip("<>").lower()
    if "@" not in address:
        return address
    local, _, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


# --------------------------------------------------------------------------- loops and noise

_AUTO_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}


def is_auto_submitted(msg: Message) -> str:
    """Why this mail is automated ('' when a human wrote it). RFC 3834 and the usual vendor headers."""
    auto = header(msg, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    if header(msg, "Precedence").lower() in _AUTO_PRECEDENCE:
        return "Precedence: " + header(msg, "Precedence").lower()
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Response-Suppress-Reply"):
        if header(msg, name):
            return name
    if header(msg, "X-Auto-Response-Suppress").lower() in ("all", "oof", "autoreply"):
        if header(msg, "X-MS-Exchange-Inbox-Rules-Loop") or "auto" in header(msg, "Subject").lower():
            return "X-Auto-Response-Suppress"
    if msg.get_content_type() == "multipart/report":
        return "multipart/report"
    sender = header(msg, "Return-Path").strip("<> ").lower()
    if header(msg, "Return-Path") and sender == "":
        return "null Return-Path"
    frm = header(msg, "From").lower()
    if "mailer-daemon@" in frm or frm.startswith("mailer-daemon") or "postmaster@" in frm:
        return "mailer-daemon"
    return ""


# --------------------------------------------------------------------------- quoted history

_QUOTE_INTRO = re.compile(
    r"^(On .{3,200}wrote:\s*$"                       # Gmail, Apple Mail, Thunderbird
    r"|Le .{3,200}a écrit\s?:\s*$"                     # French
    r"|Am .{3,200}schrieb .{0,100}:\s*$"               # German
    r"|El .{3,200}escribió:\s*$"                       # Spanish
    r"|-{2,}\s*Original Message\s*-{2,}\s*$"           # Outlook (plain)
    r"|-{2,}\s*Forwarded message\s*-{2,}\s*$"
    r"|_{10,}\s*$"                                     # Outlook's rule
    r"|From:\s.+\s*$)",                                # Outlook header block (checked below)
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^(-- |--|Sent from my \w+.*|Get Outlook for \w+.*)$")


def quote_offset(text: str) -> int | None:
    """Offset in `text` where quoted history starts (None when nothing is quoted).

    The start is the first 'On ... wrote:' style intro, an Outlook header block
    or the first line of a trailing run of '>' lines.
    """
    if not text:
        return None
    lines = text.splitlines(keepends=True)
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or i == 0:
            continue
        if _QUOTE_INTRO.match(stripped):
            if stripped.lower().startswith("from:"):
                window = "".join(lines[i:i + 6]).lower()
                if not (("sent:" in window or "date:" in window) and ("subject:" in window or "to:" in window)):
                    continue
            if stripped.startswith("_") and i + 1 < len(lines) and not lines[i + 1].lower().startswith("from"):
                continue
            return offsets[i]
        if stripped.startswith(">"):
            rest = [ln.strip() for ln in lines[i:] if ln.strip()]
            if rest and sum(1 for ln in rest if ln.startswith(">")) >= 0.8 * len(rest):
                return offsets[i]
    return None


def signature_offset(text: str, end: int | None) -> int | None:
    body = text if end is None else text[:end]
    pos = 0
    found = None
    for line in body.splitlines(keepends=True):
        if _SIGNATURE.match(line.rstrip("\r\n")) and pos > 0:
            found = pos
        pos += len(line)
    # a signature is short: only the last 12 lines count
    if found is not None and body[found:].count("\n") > 12:
        return None
    return found


_GMAIL_QUOTE = re.compile(r'<div[^>]*class="[^"]*gmail_quote[^"]*"[^>]*>', re.IGNORECASE)
_OUTLOOK_REPLY = re.compile(r'<div[^>]*id="(divRplyFwdMsg|appendonsend)"[^>]*>|<hr[^>]*id="stopSpelling"[^>]*>',
                            re.IGNORECASE)
_APPLE_QUOTE = re.compile(r'<blockquote[^>]*type="cite"', re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def fold_html(value: str) -> tuple[str, bool]:
    """Wrap quoted history in `<blockquote type="cite">` (kept by the sanitizer)
    so the display can fold it; the content itself is unchanged."""
    for pattern in (_GMAIL_QUOTE, _OUTLOOK_REPLY):
        match = pattern.search(value)
        if match:
            end = _BODY_END.search(value, match.start())
            stop = end.start() if end else len(value)
            return (value[:match.start()] + '<blockquote type="cite">' + value[match.start():stop]
                    + "</blockquote>" + value[stop:]), True
    return value, bool(_APPLE_QUOTE.search(value))


# --------------------------------------------------------------------------- bodies and attachments

@dataclass
class _Parts:
    text: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attachments: list[InboundAttachment] = field(default_factory=list)
    dsn: list[Message] = field(default_factory=list)
    returned: list[Message] = field(default_factory=list)


_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\r\n]")


def _payload_bytes(part: Message) -> bytes:
    cte = header(part, "Content-Transfer-Encoding").lower()
    if cte == "base64":
        raw = part.get_payload()
        if isinstance(raw, str) and len(_NOT_BASE64.findall(raw[:4096])) > 3:
            # declared base64 but it is not: keep the text as sent rather than garbage
            return raw.encode("utf-8", errors="surrogateescape")
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        raw = part.get_payload()
        if isinstance(raw, str):
            data = raw.encode("utf-8", errors="surrogateescape")
        else:
            data = b""
    return data


def _filename(part: Message) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        try:
            name = part.get_param("name")
            if isinstance(name, tuple):
                name = decode_bytes(name[2].encode("latin-1", "replace"), name[0])
        except Exception:
            name = None
    return clean(str(name or "")).strip()[:255]


def _is_attachment(part: Message, ctype: str) -> bool:
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    if disposition == "attachment" or ctype in ("text/calendar", "text/x-vcard", "text/vcard"):
        return True
    if ctype in ("text/plain", "text/html") and not _filename(part):
        return False
    return bool(_filename(part)) or not ctype.startswith("text/")


def _walk(part: Message, out: _Parts, depth: int = 0) -> None:
    if depth > 40:
        return
    try:
        ctype = part.get_content_type()
    except Exception:
        ctype = "application/octet-stream"
    if part.is_multipart():
        payload = part.get_payload()
        subparts = payload if isinstance(payload, list) else []
        if ctype == "multipart/alternative":
            # prefer the richest alternative of each kind
            texts = [p for p in subparts if not p.is_multipart() and p.get_content_type() == "text/plain"]
            others = [p for p in subparts if p not in texts]
            if texts:
                _walk(texts[-1], out, depth + 1)
            for sub in others:
                _walk(sub, out, depth + 1)
            return
        if ctype == "message/rfc822" or ctype == "message/global":
            for sub in subparts:
                if ctype == "message/rfc822" and out.dsn is not None:
                    out.returned.append(sub)
                out.attachments.append(InboundAttachment(
                    filename=(header(sub, "Subject") or "message")[:200] + ".eml",
                    content_type="message/rfc822", content=_as_bytes(sub)))
            return
        for sub in subparts:
            if ctype == "multipart/report" and sub.get_content_type() == "message/delivery-status":
                out.dsn.append(sub)
                continue
            _walk(sub, out, depth + 1)
        return
    if ctype in ("message/delivery-status",):
        out.dsn.append(part)
        return
    if ctype == "text/rfc822-headers":
        try:
            out.returned.append(BytesParser(policy=policy.default).parsebytes(_payload_bytes(part), headersonly=True))
        except Exception:
            pass
        return
    if _is_attachment(part, ctype):
        content = _payload_bytes(part)
        cid = header(part, "Content-ID").strip().strip("<>")
        try:
            disposition = part.get_content_disposition()
        except Exception:
            disposition = None
        inline = bool(cid) and disposition != "attachment" and ctype.startswith("image/")
        name = _filename(part)
        if not name:
            ext = {"text/calendar": ".ics", "application/ms-tnef": ".dat", "image/png": ".png",
                   "image/jpeg": ".jpg", "image/gif": ".gif", "application/pdf": ".pdf"}.get(ctype, ".bin")
            name = ("winmail" if ctype == "application/ms-tnef" else ("invite" if ctype == "text/calendar"
                                                                        else "attachment")) + ext
        out.attachments.append(InboundAttachment(filename=name, content_type=ctype, content=content,
                                                 content_id=cid[:255], inline=inline))
        if ctype == "text/calendar" and not out.text:
            out.text.append(decode_bytes(content, part.get_content_charset()))
        return
    text = decode_bytes(_payload_bytes(part), _charset(part))
    if ctype == "text/html":
        out.html.append(text)
    else:
        out.text.append(text)


def _charset(part: Message) -> str | None:
    try:
        return part.get_content_charset()
    except Exception:
        return None


def _as_bytes(msg: Message) -> bytes:
    try:
        return msg.as_bytes(policy=policy.default.clone(max_line_length=0))
    except Exception:
        try:
            return msg.as_string(policy=policy.compat32).encode("utf-8", "replace")
        except Exception:
            return b""


# --------------------------------------------------------------------------- DSN (bounces)

@dataclass
class Bounce:
    original_ids: list[str]
    error: str
    recipients: list[str]
    permanent: bool


def parse_bounce(msg: Message, parts: _Parts) -> Bounce | None:
    if not parts.dsn and "mailer-daemon" not in header(msg, "From").lower():
        return None
    ids, recipients, errors, permanent = [], [], [], True
    for dsn in parts.dsn:
        raw = dsn.get_payload()
        blocks = raw if isinstance(raw, list) else []
        if not blocks:
            # delivery-status bodies are blocks of header fields
            data = _payload_bytes(dsn)
            text = decode_bytes(data, "utf-8")
            blocks = [BytesParser(policy=policy.compat32).parsebytes(b.encode("utf-8", "replace"), headersonly=True)
                      for b in re.split(r"\r?\n\r?\n", text) if b.strip()]
        for block in blocks:
            for mid in message_ids(header(block, "Original-Message-ID") or header(block, "X-Original-Message-ID")):
                ids.append(mid)
            rcpt = header(block, "Final-Recipient") or header(block, "Original-Recipient")
            if rcpt:
                recipients.append(rcpt.split(";", 1)[-1].strip())
            action = header(block, "Action").lower()
            status = header(block, "Status")
            diag = header(block, "Diagnostic-Code")
            if action and action not in ("failed",):
                permanent = False if action in ("delayed", "delivered", "relayed", "expanded") else permanent
            if status or diag:
                errors.append(" ".join(filter(None, [status, diag.split(";", 1)[-1].strip()])))
    for returned in parts.returned:
        ids += message_ids(header(returned, "Message-ID"))
    if not ids:
        return None
    return Bounce(original_ids=list(dict.fromkeys(ids)), error="; ".join(errors)[:1000] or header(msg, "Subject"),
                  recipients=recipients, permanent=permanent)


# --------------------------------------------------------------------------- entry point

@dataclass
class ParsedEmail:
    message: InboundMessage | None
    bounce: Bounce | None = None
    auto_reason: str = ""


def parse_bytes(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def stable_id(raw: bytes) -> str:
    """A Message-ID substitute for mail without one: the same bytes, the same id."""
    return "sha256-" + hashlib.sha256(raw).hexdigest()[:40] + "@threadline.invalid"


def _date(msg: Message):
    value = header(msg, "Date")
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except Exception:
        return None
    if when is None:
        return None
    if timezone.is_naive(when):
        when = when.replace(tzinfo=dt_timezone.utc)
    now = timezone.now()
    # clients with broken clocks: trust the header only within a sane range
    if when > now or (now - when).days > 3650:
        return None
    return when


def parse_email(raw: bytes, channel, *, recipients: list[str] | None = None) -> ParsedEmail:
    """Parse raw mail bytes; never raises. `recipients` are the envelope
    recipients (SMTP RCPT TO) when known, used to find the reply token."""
    try:
        return _parse_email(raw, channel, recipients=recipients)
    except Exception:
        # last resort: keep the message as text rather than lose it
        log.exception("email parsing failed; ingesting the raw text")
        text = decode_bytes(raw, "utf-8").replace("\x00", "")
        return ParsedEmail(message=InboundMessage(
            channel=channel, external_id=stable_id(raw), identities=[("email", "unknown-sender@threadline.invalid")],
            text=text[:200000], subject="", is_email_thread=True, meta={"parse_failed": True}))


# --------------------------------------------------------------------------- large attachments

LIFT_MIN_BYTES = 1024 * 1024
_B64_LINE = re.compile(rb"[A-Za-z0-9+/]{40,}={0,2}\r?\n")
_B64_TAIL = re.compile(rb"[A-Za-z0-9+/]{1,39}={0,2}\r?\n")  # the short last line of a part


def _lift_big_parts(raw: bytes) -> tuple[bytes, dict[bytes, tuple[int, int]]]:
    """Cut base64 runs over LIFT_MIN_BYTES out of the raw mail, leaving a tiny
    placeholder part body, so the email package never holds a 25 MB attachment
    as lines and strings. Returns (skeleton, {marker: (start, end) in raw})."""
    if len(raw) < 2 * LIFT_MIN_BYTES:
        return raw, {}
    # runs of consecutive base64 lines (line by line: a repeated regex group would
    # make the regex engine itself use several times the run's size)
    runs, run_start, run_end = [], -1, -1
    for match in _B64_LINE.finditer(raw):
        if match.start() == run_end:
            run_end = match.end()
            continue
        if run_end - run_start >= LIFT_MIN_BYTES:
            runs.append((run_start, run_end))
        run_start, run_end = match.start(), match.end()
    if run_end - run_start >= LIFT_MIN_BYTES:
        runs.append((run_start, run_end))
    pieces, regions, pos = [], {}, 0
    for start, end in runs:
        tail = _B64_TAIL.match(raw, end)
        if tail:
            end = tail.end()
        marker = b"\x00threadline-lifted-part-%d\x00" % len(regions)
        eol = b"\r\n" if raw[end - 2:end] == b"\r\n" else b"\n"
        pieces += [raw[pos:start], base64.b64encode(marker) + eol]
        regions[marker] = (start, end)
        pos = end
    if not regions:
        return raw, {}
    pieces.append(raw[pos:])
    return b"".join(pieces), regions


def _restore_big_parts(raw: bytes, regions: dict, attachments: list[InboundAttachment]) -> bool:
    """Decode the lifted runs straight from the raw bytes into their attachments.
    False when a marker did not land in an attachment (then parse the whole mail)."""
    found = {att.content: att for att in attachments if att.content in regions}
    if len(found) != len(regions):
        return False
    view = memoryview(raw)
    for marker, att in found.items():
        start, end = regions[marker]
        att.content = binascii.a2b_base64(view[start:end])
    return True


def _parse_email(raw: bytes, channel, *, recipients: list[str] | None = None) -> ParsedEmail:
    skeleton, regions = _lift_big_parts(raw)
    if regions:
        result = _parse_email_bytes(skeleton, raw, channel, recipients=recipients)
        if result.message is not None and _restore_big_parts(raw, regions, result.message.attachments):
            return result
    return _parse_email_bytes(raw, raw, channel, recipients=recipients)


def _parse_email_bytes(data: bytes, raw: bytes, channel, *, recipients: list[str] | None = None) -> ParsedEmail:
    """Parse `data` (the raw mail, or its skeleton without large attachments);
    ids and fallbacks use the original `raw`."""
    try:
        msg = parse_bytes(data)
    except Exception:  # practically unreachable: the parser is lenient
        log.exception("email parser failed; ingesting as plain text")
        msg = EmailMessage()
        msg.set_payload(data.decode("utf-8", "replace"))
    parts = _Parts()
    try:
        _walk(msg, parts)
    except Exception:
        log.exception("walking MIME parts failed; keeping what was decoded")
        if not parts.text and not parts.html:
            parts.text.append(decode_bytes(data.split(b"\r\n\r\n", 1)[-1].split(b"\n\n", 1)[-1], None))

    auto_reason = is_auto_submitted(msg)
    bounce = parse_bounce(msg, parts) if auto_reason else None

    senders = addresses(msg, "From") or addresses(msg, "Sender") or addresses(msg, "Reply-To")
    return_path = header(msg, "Return-Path").strip("<> ")
    if not senders and return_path and "@" in return_path:
        senders = [("", return_path)]
    name, sender = senders[0] if senders else ("", "")
    if not sender and bounce is None:
        sender = "unknown-sender@threadline.invalid"

    own = message_ids(header(msg, "Message-ID"))
    own_key = own[0] if own else ""
    external_id = own_key or stable_id(raw)
    refs = message_ids(header(msg, "References"))
    in_reply_to = message_ids(header(msg, "In-Reply-To"))
    thread_keys = list(dict.fromkeys(in_reply_to + list(reversed(refs))))
    thread_keys = [k for k in thread_keys if k != own_key]

    rcpts = list(recipients or [])
    for hdr in ("To", "Cc", "Delivered-To", "X-Original-To"):
        rcpts += [a for _n, a in addresses(msg, hdr)]
    token = ""
    for address in rcpts:
        token = reply_token_of(address)
        if token:
            break

    subject = header(msg, "Subject")[:300]
    tag = _SUBJECT_TAG.search(subject)

    text = "\n\n".join(t for t in parts.text if t is not None).replace("\r\n", "\n").replace("\x00", "")
    html = "\n".join(parts.html).replace("\x00", "")
    meta: dict = {"message_id": own_key, "from": sender, "to": ", ".join(a for _n, a in addresses(msg, "To"))[:320]}
    if refs:
        meta["references"] = refs[-50:]
    if in_reply_to:
        meta["in_reply_to"] = in_reply_to[0]
    if auto_reason:
        meta["auto_reason"] = auto_reason
    cc = [a for _n, a in addresses(msg, "Cc")]
    if cc:
        meta["cc"] = cc[:50]
    quoted = quote_offset(text)
    if quoted is not None:
        meta["quoted_from"] = quoted
    sig = signature_offset(text, quoted)
    if sig is not None:
        meta["signature_from"] = sig
    if html:
        html, folded = fold_html(html)
        if folded:
            meta["html_quoted"] = "blockquote[type=cite]"
    if not own_key:
        meta["message_id_missing"] = True

    if bounce is not None and not sender:
        sender = "mailer-daemon@threadline.invalid"
    inbound = InboundMessage(
        channel=channel, external_id=external_id[:490], identities=[("email", sender)] if sender else [],
        text=text, html=html, subject=subject, name=name[:200], created_at=_date(msg),
        attachments=parts.attachments, thread_keys=thread_keys[:60], own_key=own_key,
        reply_token=token, conversation_number=int(tag.group(1)) if tag else None,
        auto_submitted=bool(auto_reason), meta=meta, is_email_thread=True,
        language=(header(msg, "Content-Language").split(",")[0].strip()[:10]),
    )
    if not text and not html:
        inbound.text = ""
    return ParsedEmail(message=inbound, bounce=bounce, auto_reason=auto_reason)


def html_from_text(text: str) -> str:
    return "<p>" + html_lib.escape(text).replace("\n\n", "</p><p>").replace("\n", "<br>") + "</p>"


def format_address(name: str, address: str) -> str:
    try:
        return str(Address(display_name=name, addr_spec=address))
    except Exception:
        return address
