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


_LABELS: dict[str, dict[str, str]] = {}


def _kind_label(kind: str) -> str:
    """Channel kind label in the active language (cached per language: lists call this a lot)."""
    from django.utils.translation import get_language

    from channels_app.models import ChannelKind

    lang = get_language() or ""
    labels = _LABELS.get(lang)
    if labels is None:
        labels = _LABELS[lang] = {value: str(label) for value, label in ChannelKind.choices}
    return labels.get(kind) or kind or _("unknown")


@register.filter
def channel_label(kind: str) -> str:
    return _kind_label(kind)


@register.simple_tag
def channel_badge(kind: str):
    from django.utils.html import escape
    from django.utils.safestring import mark_safe

    label = escape(_kind_label(kind))
    return mark_safe(f'<span class="ch ch-{escape(kind or "none")}" title="{label}" aria-label="{label}">'
                     f'{GLYPHS.get(kind, "•")}</span>')


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


# --------------------------------------------------------------------------- timeline
# The timeline is the hottest template (hundreds of items): it is built with
# format_html here, about ten times faster than the equivalent template loop.
# Every value is escaped by format_html; body_html was sanitized by nh3 on ingest.

def _when(moment) -> str:
    from django.utils.formats import date_format
    from django.utils.timezone import localtime

    return date_format(localtime(moment), "SHORT_DATETIME_FORMAT")


def _event_html(e) -> str:
    return format_html('<li class="sys ev-{}"><span>{}</span> <time datetime="{}">{}</time></li>',
                       e.kind, event_text(e), e.at.isoformat(), _when(e.at))


def _message_html(m, labels) -> str:
    from django.template.defaultfilters import filesizeformat, linebreaksbr
    from django.urls import reverse
    from django.utils.html import conditional_escape
    from django.utils.safestring import mark_safe

    meta = m.meta or {}
    parts = []
    if m.direction == "note":
        head = format_html('<span class="note-badge">{} {}</span>', mark_safe(ICONS["lock"]), labels["note"])
    else:
        head = channel_badge(m.channel_kind)
    parts.append(head)
    parts.append(format_html("<strong>{}</strong>", m.author_name or labels["unknown"]))
    if m.automated:
        parts.append(format_html('<span class="muted">({})</span>', labels["automated"]))
    parts.append(format_html('<time datetime="{}">{}</time>', m.created_at.isoformat(), _when(m.created_at)))
    if m.direction == "outbound":
        parts.append(format_html('<span class="delivery ds-{}" data-delivery>{}</span>', m.delivery_status,
                                 m.get_delivery_status_display()))
    html = [format_html('<li class="msg-item dir-{}{}" id="m{}" data-message-id="{}"><div class="msg-head">{}</div>',
                        m.direction, " automated" if m.automated else "", m.pk, m.pk, mark_safe(" ".join(parts)))]
    if m.delivery_status == "failed":
        html.append(format_html('<p class="delivery-error" role="alert">{} {}</p>', labels["failed"],
                                m.delivery_error or labels["unknown_error"]))
    call = meta.get("call")
    if isinstance(call, dict):
        html.append(format_html('<p class="call muted">☎ {} · {} s · {}</p>', call.get("direction", ""),
                                call.get("duration", ""), call.get("outcome", "")))
    if m.body_html:
        quoted = bool(meta.get("html_quoted"))
        html.append(format_html('<div class="body html{}" data-html-body>{}</div>',
                                " has-quote folded" if quoted else "", mark_safe(m.body_html)))
        if "data-remote-src" in m.body_html:
            html.append(format_html('<button type="button" class="link small" data-load-remote>{}</button>',
                                    labels["remote"]))
        if quoted:
            html.append(format_html('<button type="button" class="link small" data-toggle-quote '
                                    'aria-expanded="false">{}</button>', labels["quoted"]))
    else:
        main, rest = quoted_split(m)
        html.append(format_html('<div class="body text">{}</div>', linebreaksbr(main, autoescape=True)))
        if rest:
            html.append(format_html('<details class="quoted"><summary>{}</summary><div class="body text">{}</div>'
                                    '</details>', labels["quoted"], linebreaksbr(rest, autoescape=True)))
    for note in meta.get("notes") or []:
        html.append(format_html('<p class="muted small">⚠ {}</p>', note))
    atts = list(m.attachments.all())
    if atts:
        items = []
        for a in atts:
            download = reverse("conversations:attachment", args=[a.pk])
            preview = ""
            if previewable(a):
                preview = format_html('<a href="{}"><img src="{}" alt="{}" loading="lazy"></a>', download,
                                      reverse("conversations:attachment_inline", args=[a.pk]), a.filename)
            items.append(format_html('<li>{}<a href="{}" download>{}</a> <span class="muted">{}</span></li>',
                                     preview, download, a.filename, filesizeformat(a.size)))
        html.append(format_html('<ul class="attachments" role="list">{}</ul>', mark_safe("".join(items))))
    html.append(mark_safe("</li>"))
    return conditional_escape(mark_safe("".join(html)))


@register.simple_tag
def timeline_items(items):
    from django.utils.safestring import mark_safe

    labels = {
        "note": _("Internal note"), "unknown": _("Unknown"), "automated": _("automated"),
        "failed": _("Not delivered:"), "unknown_error": _("unknown error"), "remote": _("Load remote images"),
        "quoted": _("Show quoted history"),
    }
    out = [_event_html(i.obj) if i.kind == "event" else _message_html(i.obj, labels) for i in items]
    return mark_safe("\n".join(out))
