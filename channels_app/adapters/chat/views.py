"""HTTP side of the chat widget: the script, the demo host page, uploads and
visitor attachment downloads. Visitors authenticate with their signed token,
never with cookies, so these views are CSRF-exempt and CORS-checked against
the channel's allowed origins."""
from __future__ import annotations

import base64
import logging

from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from channels_app.models import Channel

from . import live, snippet, tokens
from . import config as chat_settings
from .consumers import throttle_hit
from .inbound import ingest_visitor_message

log = logging.getLogger(__name__)

# Magic bytes of the image types we show inline: the declared type must match.
_MAGIC = {
    "image/png": [b"\x89PNG\r\n\x1a\n"],
    "image/jpeg": [b"\xff\xd8\xff"],
    "image/gif": [b"GIF87a", b"GIF89a"],
    "image/webp": [b"RIFF"],
    "application/pdf": [b"%PDF-"],
}


def _static_file(name: str) -> bytes:
    path = finders.find(name)
    if path:
        with open(path, "rb") as fh:
            return fh.read()
    with staticfiles_storage.open(name) as fh:
        return fh.read()


def _asset(name: str, content_type: str):
    try:
        content = _static_file(name)
    except (FileNotFoundError, OSError):
        raise Http404
    response = HttpResponse(content, content_type=content_type)
    # a stable URL for the snippet; short cache so deploys reach sites quickly
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


@require_GET
def widget_js(request):
    return _asset("widget/widget.js", "text/javascript; charset=utf-8")


@require_GET
def widget_css(request):
    return _asset("widget/widget.css", "text/css; charset=utf-8")


@require_GET
def demo(request, uuid):
    """A host page to try the widget, under a strict CSP like a careful site's."""
    channel = get_object_or_404(Channel, uuid=uuid, kind="chat", active=True)
    host = request.get_host()
    response = render(request, "chat_widget/demo.html", {"channel": channel, "snippet": snippet(channel, request)})
    response["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"connect-src 'self' ws://{host} wss://{host}; font-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return response


def _cors(response, request, channel):
    origin = request.headers.get("Origin")
    if origin and chat_settings.origin_allowed(channel, origin):
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
        response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = "Content-Type"
        response["Access-Control-Max-Age"] = "600"
    return response


def _type_ok(content_type: str, head: bytes, allowed: list[str]) -> bool:
    if content_type not in allowed:
        return False
    magic = _MAGIC.get(content_type)
    if magic and not any(head.startswith(m) for m in magic):
        return False  # a file claiming to be an image that is not one
    return True


@csrf_exempt
def upload(request, uuid):
    """POST multipart/form-data: token, file, client_id. Sends the file as a
    visitor message (stored as an envelope and ingested like any message)."""
    channel = get_object_or_404(Channel, uuid=uuid, kind="chat", active=True)
    if request.method == "OPTIONS":
        return _cors(HttpResponse(status=204), request, channel)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST, OPTIONS"})
    origin = request.headers.get("Origin")
    if origin and not chat_settings.origin_allowed(channel, origin):
        return JsonResponse({"error": "origin_not_allowed"}, status=403)
    visitor = tokens.read_token(channel, request.POST.get("token"))
    if visitor is None:
        return _cors(JsonResponse({"error": "bad_token"}, status=403), request, channel)
    limited, retry = throttle_hit(f"msg:{visitor}", chat_settings.rate_limit(channel), 10)
    if limited:
        return _cors(JsonResponse({"error": "throttled", "retry_after": retry}, status=429,
                                  headers={"Retry-After": str(retry)}), request, channel)
    upload_file = request.FILES.get("file")
    if upload_file is None:
        return _cors(JsonResponse({"error": "no_file"}, status=400), request, channel)
    limit = chat_settings.upload_max_bytes(channel)
    if upload_file.size > limit:
        return _cors(JsonResponse({"error": "too_large", "max_bytes": limit,
                                   "detail": _("The file is larger than %(mb)s MB.") % {"mb": round(limit / 1048576, 1)}},
                                  status=413), request, channel)
    content = upload_file.read()
    content_type = (upload_file.content_type or "").split(";")[0].strip().lower()
    if not _type_ok(content_type, content[:16], chat_settings.upload_types(channel)):
        return _cors(JsonResponse({"error": "bad_type", "allowed": chat_settings.upload_types(channel),
                                   "detail": _("This type of file cannot be sent.")}, status=415), request, channel)
    client_id = str(request.POST.get("client_id") or "")[:64]
    body = {"visitor": visitor, "client_id": client_id, "text": str(request.POST.get("text") or "")[:2000],
            "attachments": [{"filename": upload_file.name[:200], "content_type": content_type,
                             "content_base64": base64.b64encode(content).decode()}]}
    try:
        message = ingest_visitor_message(channel, body, headers={"origin": origin or ""}, source="upload",
                                         remote_addr=request.META.get("REMOTE_ADDR"))
    except ValueError as exc:
        return _cors(JsonResponse({"error": "rejected", "detail": str(exc)[:200]}, status=400), request, channel)
    payload = live.message_payload(message, visitor)
    live.push([visitor], {"type": "message", "message": payload})
    return _cors(JsonResponse({"type": "sent", "client_id": client_id, "message": payload}, status=201),
                 request, channel)


@require_GET
def attachment(request, token):
    """A file of the visitor's own chat, by a signed link in the widget."""
    from conversations.models import Attachment
    from customers.models import Identity

    parsed = tokens.read_attachment_token(token)
    if parsed is None:
        raise Http404
    attachment_id, visitor = parsed
    att = Attachment.objects.select_related("message__conversation").filter(pk=attachment_id).first()
    if att is None or att.message.channel_kind != "chat" or att.message.direction == "note":
        raise Http404
    if not Identity.objects.filter(kind="chat", value=visitor,
                                   customer_id=att.message.conversation.customer_id).exists():
        raise Http404
    try:
        handle = att.file.open("rb")
    except FileNotFoundError:
        raise Http404
    inline = att.content_type in ("image/png", "image/jpeg", "image/gif", "image/webp")
    response = FileResponse(handle, as_attachment=not inline, filename=att.filename,
                            content_type=att.content_type if inline else "application/octet-stream")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    response["Cache-Control"] = "private, max-age=3600"
    return response
