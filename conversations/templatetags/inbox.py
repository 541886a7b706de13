"""Template helpers for the inbox: channel badges, durations, system lines."""
from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _

register = template.Library()

# text glyphs: they render with any font (no emoji font needed offline)
GLYPHS = {
    "email": "@", "chat": "CH", "whatsapp": "WA", "messenger": "FB", "instagram": "IG", "telegram": "TG",
    "twitter": "X", "sms": "SMS", "phone": "☎", "webform": "WEB", "api": "API",
}

ICONS = {
    "clock": '<svg class="ico" viewBox="0 0 16 16" aria-hidden="true"><circle cx="8" cy="8" r="6.5" fill="none" '
             'stroke="currentColor" stroke-width="1.6"/><path d="M8 4v4l2.5 1.5" fill="none" stroke="currentColor" '
             'stroke-width="1.6" stroke-linecap="round"/></svg>',
    "bell": '<svg class="ico" viewBox="0 0 16 16" aria-hidden="true"><path d="M8 1.5a4.5 4.5 0 0 0-4.5 4.5v3L2 11.5h12'
            'L12.5 9V6A4.5 4.5 0 0 0 8 1.5zM6.5 13a1.5 1.5 0 0 0 3 0" fill="none" stroke="currentColor" '
            'stroke-width="1.5" stroke-linejoin="round"/></svg>',
    "lock": '<svg class="ico" viewBox="0 0 16 16" aria-hidden="true"><rect x="3" y="7" width="10" height="7.5" rx="1.5" '
            'fill="currentColor"/><path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" '
            'stroke-width="1.6"/></svg>',
    "clip": '<svg class="ico" viewBox="0 0 16 16" aria-hidden="true"><path d="M11 5.5 6.2 10.3a1.5 1.5 0 0 0 2.1 2.1l5-5'
            'a3 3 0 0 0-4.2-4.2l-5 5a4.5 4.5 0 0 0 6.4 6.4L14 11" fill="none" stroke="currentColor" '
            'stroke-width="1.4" stroke-linecap="round"/></svg>',
}


@register.simple_tag
def icon(name: str):
    from django.utils.safestring import mark_safe

    return mark_safe(ICONS.get(name, ""))


def _kind_label(kind: str) -> str:
    from channels_app.models import ChannelKind

    return str(dict(ChannelKind.choices).get(kind, kind or _("unknown")))


@register.filter
def channel_label(kind: str) -> str:
    return _kind_label(kind)


@register.simple_tag
def channel_badge(kind: str):
    label = _kind_label(kind)
    return format_html('<span class="ch ch-{}" title="{}" aria-label="{}">{}</span>', kind or "none", label, label,
                       GLYPHS.get(kind, "•"))


@register.filter
def short_duration(since: datetime | None) -> str:
    """'3 min', '2 h', '4 d' since a moment (waiting time)."""
    if not since:
        return ""
    seconds = max(0, int((timezone.now() - since).total_seconds()))
    if seconds < 60:
        return _("%(n)s s") % {"n": seconds}
    if seconds < 3600:
        return _("%(n)s min") % {"n": seconds // 60}
    if seconds < 86400:
        return _("%(n)s h") % {"n": seconds // 3600}
    return _("%(n)s d") % {"n": seconds // 86400}


@register.filter
def seconds_until(moment: datetime | None) -> int | None:
    if not moment:
        return None
    return int((moment - timezone.now()).total_seconds())


@register.filter
def isoformat(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


@register.filter
def quoted_split(message):
    """(main, quoted) of a plain-text body when the email parser marked quoted history."""
    offset = (message.meta or {}).get("quoted_from")
    text = message.body_text or ""
    if isinstance(offset, int) and 0 < offset < len(text):
        return text[:offset].rstrip(), text[offset:]
    return text, ""


@register.filter
def event_text(event) -> str:
    data = event.data or {}
    actor = event.actor_user.name if event.actor_user_id and event.actor_user else ""
    kind = event.kind
    if kind == "created":
        return _("Conversation started on %(channel)s") % {"channel": _kind_label(data.get("channel", ""))}
    if kind == "channel_switched":
        return _("Moved from %(from)s to %(to)s") % {"from": _kind_label(data.get("from", "")),
                                                    "to": _kind_label(data.get("to", ""))}
    if kind == "assigned":
        name = data.get("name") or ""
        if not data.get("assignee"):
            text = _("Unassigned")
        else:
            text = _("Assigned to %(name)s") % {"name": name or "#%s" % data.get("assignee")}
        if data.get("auto") is True:
            text += " " + _("(automatic)")
        elif actor:
            text += " " + _("by %(actor)s") % {"actor": actor}
        return text
    if kind == "team_changed":
        return (_("Moved to team %(name)s") % {"name": data.get("name")}) if data.get("to") else _("Team removed")
    if kind == "resolved":
        return _("Resolved by %(actor)s") % {"actor": actor} if actor else _("Resolved")
    if kind == "reopened":
        if data.get("by") == "customer":
            return _("Reopened by customer")
        return _("Reopened by %(actor)s") % {"actor": actor} if actor else _("Reopened")
    if kind == "snoozed":
        return _("Snoozed until %(until)s") % {"until": (data.get("until") or "")[:16].replace("T", " ")}
    if kind == "status_changed":
        return _("Status changed from %(from)s to %(to)s") % {"from": data.get("from"), "to": data.get("to")}
    if kind == "priority_changed":
        return _("Priority changed from %(from)s to %(to)s") % {"from": data.get("from"), "to": data.get("to")}
    if kind == "tagged":
        parts = []
        if data.get("added"):
            parts.append(_("tagged %(tags)s") % {"tags": ", ".join(data["added"])})
        if data.get("removed"):
            parts.append(_("removed tag %(tags)s") % {"tags": ", ".join(data["removed"])})
        return "; ".join(parts) or _("Tags changed")
    if kind == "customers_merged":
        return _("Customer #%(merged)s merged into #%(survivor)s") % {"merged": data.get("merged"),
                                                                      "survivor": data.get("survivor")}
    if kind == "conversations_merged":
        return _("Conversation #%(merged)s merged into this one") % {"merged": data.get("merged")}
    if kind == "delivery_failed":
        return _("Delivery failed: %(error)s") % {"error": data.get("error", "")}
    if kind == "survey_sent":
        return _("Satisfaction survey sent")
    if kind == "survey_answered":
        return _("Survey answered: %(score)s") % {"score": data.get("score", "")}
    return event.get_kind_display()


@register.filter
def previewable(attachment) -> bool:
    """Raster images only (the inline attachment view refuses anything else)."""
    from conversations.views import INLINE_TYPES

    return attachment.content_type in INLINE_TYPES
