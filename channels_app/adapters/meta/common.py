"""Helpers shared by the Meta (WhatsApp Cloud API, Messenger, Instagram),
Telegram and X adapters: signatures, Graph error handling, media downloads,
JSON bodies and timestamps."""
from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
from datetime import datetime, timezone as dt_timezone
from urllib.parse import urlsplit

from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext as _

from conversations.inbound import InboundAttachment
from helpdesk import http
from helpdesk.http import TransportError

from ..base import Forbidden, json_body

GRAPH_BASE = "https://graph.facebook.com"
GRAPH_VERSION = "v21.0"

# Graph error codes that mean "slow down / try again later" even when the
# HTTP status is 400 (Graph reports most throttling as 400 with these codes).
GRAPH_TRANSIENT_CODES = {
    1, 2,          # unknown / temporary service error
    4, 17, 32, 613,  # application, user, page and API call rate limits
    80001, 80002, 80004, 80006,  # business use case rate limits (Pages, Instagram, Messenger)
    130429,        # WhatsApp Cloud API throughput reached
    131016,        # WhatsApp service unavailable
    131048,        # WhatsApp spam rate limit hit
    131056,        # WhatsApp pair rate limit (too many messages to one user)
    133004,        # WhatsApp server temporarily unavailable
}


# --------------------------------------------------------------------------- signatures

def meta_signature(secret: str, body: bytes) -> str:
    """The documented X-Hub-Signature-256 value: "sha256=" + hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_meta_signature(request, channel) -> None:
    secret = channel.get("app_secret")
    if not secret:
        raise Forbidden("The channel has no app_secret configured.")
    given = request.headers.get("X-Hub-Signature-256", "")
    if not given:
        raise Forbidden("Missing X-Hub-Signature-256 header.")
    expected = meta_signature(secret, request.body)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Forbidden("X-Hub-Signature-256 does not match the body.")


def meta_handshake(request, channel) -> HttpResponse:
    """Meta's GET subscription check: echo hub.challenge when hub.verify_token matches."""
    mode = request.GET.get("hub.mode", "")
    token = request.GET.get("hub.verify_token", "")
    challenge = request.GET.get("hub.challenge", "")
    expected = channel.get("verify_token") or ""
    if mode == "subscribe" and expected and hmac.compare_digest(token.encode(), str(expected).encode()):
        return HttpResponse(challenge, content_type="text/plain")
    return JsonResponse({"detail": "Forbidden: verify token mismatch."}, status=403)


def b64_hmac_sha256(secret: str, data: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), data, hashlib.sha256).digest()).decode()


# --------------------------------------------------------------------------- payload helpers

load_json = json_body  # the adapters' shared JSON-object parser (a ParseError -> 400)


class MetaWebhookMixin:
    """The GET hub.* handshake and the X-Hub-Signature-256 check shared by every
    Meta webhook (WhatsApp, Messenger, Instagram)."""

    def handshake(self, request, channel):
        return meta_handshake(request, channel)

    def verify(self, request, channel) -> None:
        verify_meta_signature(request, channel)


def from_unix(value, *, millis: bool = False) -> datetime | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if millis:
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, tz=dt_timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def api_base(channel, default: str) -> str:
    return str(channel.get("api_base") or default).rstrip("/")


def graph_version(channel) -> str:
    return str(channel.get("api_version") or GRAPH_VERSION)


# --------------------------------------------------------------------------- Graph calls

def graph_error(resp: http.Response) -> TransportError:
    """A TransportError carrying the text Graph gave, transient for throttling and 5xx."""
    err = {}
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
    except ValueError:
        pass
    code = err.get("code")
    try:
        code = int(code) if code is not None else None
    except (TypeError, ValueError):
        code = None
    message = str(err.get("error_user_msg") or err.get("message") or resp.text[:300] or f"HTTP {resp.status}")
    details = ""
    if isinstance(err.get("error_data"), dict):
        details = str(err["error_data"].get("details") or "")
    text = message
    if details and details not in text:
        text = f"{text}: {details}"
    if code is not None:
        text = f"{text} (Graph error {code})"
    transient = (resp.status >= 500 or resp.status in (408, 429) or code in GRAPH_TRANSIENT_CODES
                 or bool(err.get("is_transient")))
    retry_after = None
    if str(resp.headers.get("retry-after", "")).isdigit():
        retry_after = float(resp.headers["retry-after"])
    exc = TransportError(text, permanent=not transient, status=resp.status, retry_after=retry_after)
    exc.code = code
    return exc


def graph_request(method: str, url: str, **kwargs) -> http.Response:
    resp = http.request(method, url, raise_for_status=False, **kwargs)
    if resp.status >= 400:
        raise graph_error(resp)
    return resp


# --------------------------------------------------------------------------- media

def filename_for(url: str, content_type: str, fallback: str) -> str:
    name = urlsplit(url).path.rsplit("/", 1)[-1] if url else ""
    if name and "." in name and len(name) <= 120:
        return name
    ext = mimetypes.guess_extension((content_type or "").split(";")[0].strip()) or ""
    return f"{fallback}{ext}"


def download(url: str, *, headers: dict | None = None, params: dict | None = None, filename: str = "",
             content_type: str = "", fallback: str = "attachment") -> InboundAttachment:
    """Fetch one media file through helpdesk.http (timeouts, SSRF guard)."""
    resp = http.get(url, headers=headers or {}, params=params)
    ctype = content_type or str(resp.headers.get("content-type") or "application/octet-stream").split(";")[0]
    return InboundAttachment(filename=filename or filename_for(url, ctype, fallback), content_type=ctype,
                             content=resp.content)


def media_failure_note(what: str, exc: TransportError) -> str:
    return _("The %(what)s could not be downloaded: %(error)s") % {"what": what, "error": exc.message}


def fetch_media(fetch, what: str, notes: list[str]) -> InboundAttachment | None:
    """Run one media download. A permanent failure (404, expired URL) becomes a
    note on the message; a transient one propagates so the envelope fails and
    the provider's retry (or a replay) fetches it again."""
    try:
        return fetch()
    except TransportError as exc:
        if not exc.permanent:
            raise
        notes.append(media_failure_note(what, exc))
        return None
