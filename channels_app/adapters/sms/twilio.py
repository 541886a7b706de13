"""What the Twilio channels (`sms` and `phone`) share: the X-Twilio-Signature
check on the public URL, form payload decoding, authenticated media downloads,
the REST base URL and Twilio's documented error body.

Channel settings: `account_sid`, `auth_token` (secret), `from_number`;
optional `public_url` (the base URL Twilio calls when a proxy rewrites ours),
`api_base` (tests point it at a local fake), `messaging_service_sid`,
`whatsapp_from`.
"""
from __future__ import annotations

import mimetypes
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.utils.html import escape
from twilio.request_validator import SIGNATURE_SETTINGS_HEADER, RequestValidator, get_signature_algorithm

from helpdesk import http

from ..base import Forbidden

API_BASE = "https://api.twilio.com"
TWILIO_MEDIA_HOSTS = {"api.twilio.com", "media.twiliocdn.com", "mms.twiliocdn.com"}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def public_base(channel) -> str:
    """The scheme://host Twilio uses to reach us (PUBLIC_URL unless the channel overrides it)."""
    return (channel.get("public_url") or settings.PUBLIC_URL).rstrip("/")


def public_webhook_url(channel, query: str = "") -> str:
    url = public_base(channel) + channel.webhook_path
    return f"{url}?{query}" if query else url


def verify_signature(request, channel) -> None:
    """Raise Forbidden unless X-Twilio-Signature matches the public URL and the form parameters."""
    token = channel.get("auth_token")
    if not token:
        raise Forbidden("the channel has no auth_token configured")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        raise Forbidden("missing X-Twilio-Signature")
    url = public_base(channel) + request.get_full_path()
    algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER, ""))
    content_type = request.content_type or ""
    if content_type == "application/x-www-form-urlencoded":
        params = request.POST
    elif "bodySHA256" in request.GET:  # JSON bodies are signed by a hash in the URL
        params = request.body.decode("utf-8", "replace")
    else:
        params = {}
    if not RequestValidator(token).validate(url, params, signature, algorithm=algorithm):
        raise Forbidden("X-Twilio-Signature does not match")


def form_params(envelope) -> dict[str, str]:
    """The form-encoded body of a stored envelope as a dict (last value wins)."""
    try:
        body = bytes(envelope.body).decode("utf-8")
    except UnicodeDecodeError:
        body = bytes(envelope.body).decode("latin-1")
    return dict(parse_qsl(body, keep_blank_values=True))


def query_params(envelope) -> dict[str, str]:
    path = (envelope.headers or {}).get("_path", "")
    return dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))


def twiml(body: str = "") -> HttpResponse:
    xml = f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>' if body else EMPTY_TWIML
    return HttpResponse(xml, content_type="text/xml; charset=utf-8")


def xml_text(value: str) -> str:
    return escape(value)


def api_base(channel) -> str:
    return (channel.get("api_base") or API_BASE).rstrip("/")


def auth(channel) -> tuple[str, str]:
    sid, token = channel.get("account_sid") or "", channel.get("auth_token") or ""
    if not sid or not token:
        raise http.TransportError("The Twilio channel needs account_sid and auth_token.", permanent=True)
    return sid, token


def _trusted_host(channel, url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in TWILIO_MEDIA_HOSTS or host == (urlsplit(api_base(channel)).hostname or "").lower()


def fetch_media(channel, url: str, *, max_bytes: int | None = None) -> tuple[bytes, str]:
    """Download media Twilio points at: with the account's basic auth on Twilio's
    own hosts only, following its redirect to the CDN without credentials."""
    max_bytes = max_bytes or settings.ATTACHMENT_MAX_BYTES
    for _hop in range(4):
        kwargs = {}
        if _trusted_host(channel, url):
            kwargs["auth"] = auth(channel)
        resp = http.get(url, raise_for_status=False, **kwargs)
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.headers.get("location") or resp.headers.get("Location")
            if not location:
                break
            url = location if "://" in location else f"{urlsplit(url).scheme}://{urlsplit(url).netloc}{location}"
            continue
        if resp.status >= 400:
            raise http.TransportError(f"HTTP {resp.status} fetching media", status=resp.status,
                                      permanent=resp.status < 500 and resp.status not in (408, 429))
        if len(resp.content) > max_bytes:
            raise http.TransportError(f"Media larger than {max_bytes} bytes", permanent=True)
        ctype = (resp.headers.get("content-type") or resp.headers.get("Content-Type") or "").split(";")[0].strip()
        return resp.content, ctype
    raise http.TransportError("Too many redirects fetching media", permanent=True)


def media_filename(url: str, content_type: str, fallback: str = "media") -> str:
    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or fallback
    if "." not in name:
        ext = mimetypes.guess_extension(content_type or "") or ""
        if content_type == "image/jpeg":
            ext = ".jpg"
        name += ext
    return name


def error_message(resp: http.Response) -> str:
    """Twilio's documented error body {"code", "message", "more_info", "status"} as one line."""
    try:
        data = resp.json() or {}
    except ValueError:
        data = {}
    if isinstance(data, dict) and data.get("message"):
        code = data.get("code")
        return f"Twilio error {code}: {data['message']}" if code else f"Twilio: {data['message']}"
    return f"Twilio answered HTTP {resp.status}: {resp.text[:300]}"


def raise_for_twilio(resp: http.Response) -> None:
    if resp.status < 400:
        return
    retry_after = None
    value = resp.headers.get("retry-after") or resp.headers.get("Retry-After") or ""
    if value.isdigit():
        retry_after = float(value)
    permanent = resp.status < 500 and resp.status not in (408, 429)
    raise http.TransportError(error_message(resp), permanent=permanent, status=resp.status, retry_after=retry_after)
