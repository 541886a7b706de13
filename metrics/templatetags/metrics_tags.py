from django import template

register = template.Library()


def _duration(seconds) -> str:
    s = float(seconds)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


@register.filter
def kpi(value, fmt="number"):
    if value is None or value == "":
        return "—"
    if fmt == "duration":
        return _duration(value)
    if fmt == "rate":
        return f"{float(value) * 100:.1f}%"
    if fmt == "percent":
        return f"{float(value):.1f}%"
    if fmt == "count":
        return f"{int(value):,}"
    if fmt == "money":
        return str(value)
    return f"{float(value):.2f}"


@register.simple_tag
def delta(cur, prev, fmt="number"):
    """The change against the previous period, as text."""
    if cur is None or prev is None or fmt == "money":
        return ""
    try:
        d = float(cur) - float(prev)
    except (TypeError, ValueError):
        return ""
    if fmt == "rate":
        return f"{d * 100:+.1f} pt"
    if fmt == "duration":
        return ("+" if d >= 0 else "−") + _duration(abs(d))
    if fmt == "count":
        return f"{d:+,.0f}"
    return f"{d:+.2f}"


@register.filter
def get(obj, key):
    cur = obj
    for part in str(key).split("."):
        if cur is None:
            return None
        cur = cur.get(part) if isinstance(cur, dict) else getattr(cur, part, None)
    return cur
