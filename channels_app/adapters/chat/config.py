"""Per channel settings of a chat widget (Channel.settings), with defaults.

    allowed_origins   ["https://shop.example"]: pages that may open the widget's
                      WebSocket and upload files. Our own host is always
                      allowed (the demo page); "*" allows any site.
    greeting          first line shown in an empty chat
    color             accent colour ("#4f46e5"), text_color for text on it
    title             window title
    language          "de": the widget's language for visitors whose browser asks for
                      one Threadline is not translated into (default LANGUAGE_CODE)
    prechat           "off" | "optional" | "required": the name/email form
    business_hours    {"tz": "Europe/Berlin", "days": [0,1,2,3,4], "start": "09:00", "end": "17:00"}
    business_hours_message  shown outside those hours
    offline_message   shown when no agent of the channel's team is online
    rate_limit        visitor messages per 10 seconds (default 8)
    max_message_chars longest visitor message (default 5000)
    upload_max_bytes  largest upload (default 10 MB, never above ATTACHMENT_MAX_BYTES)
    upload_types      allowed MIME types (default images, PDF, plain text)
"""
from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings as django_settings
from django.http.request import validate_host
from django.utils import timezone
from django.utils.translation import gettext as _

DEFAULT_UPLOAD_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"]
_COLOR = re.compile(r"^#[0-9a-fA-F]{3,8}$")


def _color(value, default):
    return value if isinstance(value, str) and _COLOR.match(value) else default


def _int(value, default, low, high):
    try:
        return max(low, min(high, int(value)))
    except (TypeError, ValueError):
        return default


def rate_limit(channel) -> int:
    return _int(channel.settings.get("rate_limit"), 8, 1, 100)


def max_chars(channel) -> int:
    return _int(channel.settings.get("max_message_chars"), 5000, 100, 20000)


def upload_max_bytes(channel) -> int:
    return _int(channel.settings.get("upload_max_bytes"), 10 * 1024 * 1024, 1024, django_settings.ATTACHMENT_MAX_BYTES)


def upload_types(channel) -> list[str]:
    types = channel.settings.get("upload_types")
    if isinstance(types, list) and all(isinstance(t, str) for t in types):
        return types
    return DEFAULT_UPLOAD_TYPES


def origin_allowed(channel, origin: str | None) -> bool:
    """The page that runs the widget must be one of the channel's allowed
    origins, or our own host. Browsers always send Origin on a WebSocket."""
    if not origin:
        return False
    parsed = urlparse(origin)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    normalized = f"{parsed.scheme}://{parsed.netloc}".lower()
    allowed = channel.settings.get("allowed_origins") or []
    if isinstance(allowed, str):
        allowed = [a.strip() for a in allowed.replace(",", "\n").split() if a.strip()]
    for entry in allowed:
        entry = entry.strip().rstrip("/").lower()
        if entry == "*" or entry == normalized:
            return True
    return validate_host(parsed.hostname, django_settings.ALLOWED_HOSTS)


def within_business_hours(channel, now: datetime | None = None) -> bool:
    hours = channel.settings.get("business_hours")
    if not isinstance(hours, dict) or not hours.get("start") or not hours.get("end"):
        return True
    try:
        tz = ZoneInfo(hours.get("tz") or django_settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    local = (now or timezone.now()).astimezone(tz)
    days = hours.get("days", [0, 1, 2, 3, 4])
    if local.weekday() not in days:
        return False
    hhmm = local.strftime("%H:%M")
    return str(hours["start"]) <= hhmm < str(hours["end"])


def public_config(channel, *, online: bool) -> dict:
    """What the widget needs to draw itself. Nothing secret goes here."""
    s = channel.settings
    in_hours = within_business_hours(channel)
    return {
        "title": str(s.get("title") or channel.name)[:80],
        "greeting": str(s.get("greeting") or _("Hi! How can we help you?"))[:500],
        "color": _color(s.get("color"), "#4f46e5"),
        "text_color": _color(s.get("text_color"), "#ffffff"),
        "prechat": s.get("prechat") if s.get("prechat") in ("off", "optional", "required") else "off",
        "online": bool(online and in_hours),
        "within_hours": in_hours,
        "business_hours_message": str(s.get("business_hours_message") or _(
            "We are closed right now. Leave a message and your email, we will answer by email."))[:500],
        "offline_message": str(s.get("offline_message") or _(
            "No one is available right now. Leave your email and we will reply there."))[:500],
        "max_chars": max_chars(channel),
        "upload_max_bytes": upload_max_bytes(channel),
        "upload_types": upload_types(channel),
    }
