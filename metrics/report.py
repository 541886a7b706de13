"""Assemble KPI results per group in the shape of API.md (and flatten them for CSV).

The dashboard, the CSV export and /api/v1/metrics/ all call `build()`.
"""
from __future__ import annotations

from datetime import date

from conversations.models import Team
from helpdesk.models import User

from .kpis import (
    ces,
    channel_switches,
    cltv,
    contacts_per_resolution,
    csat,
    fcr,
    first_response_time,
    nps,
    one_touch,
    repeat_contact,
    resolution_time,
    response_time,
    retention,
    sla_attainment,
    volume,
)
from .kpis.base import GROUPINGS, TIME_GROUPINGS, Selection, analytics, rollups, run_reads


def _empty_time():
    return {"count": 0, "mean": None, "median": None, "p90": None}


KPIS = {
    "first_response_time": first_response_time.compute,
    "first_response_time_business": lambda sel: first_response_time.compute(sel, business=True),
    "response_time": response_time.compute,
    "resolution_time": resolution_time.compute,
    "resolution_time_business": lambda sel: resolution_time.compute(sel, business=True),
    "fcr_rate": fcr.compute,
    "fcr_provisional": fcr.provisional,
    "one_touch_rate": one_touch.compute,
    "repeat_contact_rate": repeat_contact.compute,
    "contacts_per_resolution": contacts_per_resolution.compute,
    "channel_switches": channel_switches.compute,
    "csat": csat.compute,
    "nps": nps.compute,
    "ces": ces.compute,
    "cltv": cltv.compute,
    "retention_rate": retention.compute,
    "retention": retention.details,
    "sla_attainment": sla_attainment.compute,
    "volume": volume.compute,
}


def build(sel: Selection, only=None) -> list[dict]:
    """One object per group (or one for the whole selection without group_by).

    `only` restricts the KPIs computed (the dashboard's trend and breakdown tables).
    Results come from metrics.resultcache when the data has not changed since."""
    from . import resultcache

    return resultcache.cached(("build", tuple(sorted(only)) if only else None), sel,
                              lambda: build_uncached(sel, only))


# KPIs that share one read (a memo of the Selection) are computed in the same task; the tasks
# start in this order, the longest first (the customer links' pass over the period's facts)
READS = (
    ("cltv", "retention_rate", "retention"),
    ("resolution_time", "resolution_time_business"),
    ("first_response_time", "first_response_time_business"),
    ("response_time",),
    ("csat", "nps", "ces"),
)


def build_uncached(sel: Selection, only=None) -> list[dict]:
    wanted = [name for name in KPIS if only is None or name in only]
    tasks = {}
    for group in READS:
        names = [n for n in group if n in wanted]
        if names:
            tasks[group[0]] = (lambda names: lambda: {n: KPIS[n](sel) for n in names})(names)
    tasks["rollups"] = lambda: {n: KPIS[n](sel) for n in wanted if not any(n in g for g in READS)}
    with analytics():
        rollups(sel)  # read by most tasks: once, before they start
    parts = {}
    for computed in run_reads(tasks).values():
        parts.update(computed)
    parts = {name: parts[name] for name in wanted}
    defaults = {
        "first_response_time": _empty_time(), "first_response_time_business": _empty_time(),
        "response_time": _empty_time(), "resolution_time": _empty_time(),
        "resolution_time_business": _empty_time(),
        "fcr_provisional": {"rate": None, "count": 0, "final_count": 0},
        "csat": {"percent": None, "mean": None, "responses": 0, "response_rate": None},
        "nps": {"score": None, "promoters": 0, "passives": 0, "detractors": 0, "responses": 0,
                "response_rate": None},
        "ces": {"mean": None, "percent_easy": None, "responses": 0, "response_rate": None},
        "retention": {"rate": None, "retained": 0, "lost": 0, "pending": 0},
        "volume": {"created": 0, "resolved": 0, "reopened": 0},
    }
    keys = set()
    for values in parts.values():
        keys.update(values)
    if sel.group_by is None:
        keys = {None}
    labels = _labels(sel, keys)
    out = []
    for key in sorted(keys, key=lambda k: (k is None, str(labels.get(k, k)))):
        obj = {}
        if sel.group_by:
            obj[sel.group_by] = labels.get(key, key)
        for name, values in parts.items():
            obj[name] = values.get(key, defaults.get(name))
        out.append(obj)
    return out


def _labels(sel: Selection, keys) -> dict:
    if sel.group_by == "agent":
        users = {u.pk: u.email or u.username for u in User.objects.filter(pk__in=[k for k in keys if k])}
        return {k: users.get(k, None) for k in keys}
    if sel.group_by == "team":
        teams = dict(Team.objects.filter(pk__in=[k for k in keys if k]).values_list("pk", "name"))
        return {k: teams.get(k, None) for k in keys}
    if sel.group_by in TIME_GROUPINGS:
        return {k: k.isoformat() if isinstance(k, date) else k for k in keys}
    return {k: k for k in keys}


def flatten(obj: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def to_csv(rows: list[dict]) -> str:
    import csv
    import io

    flat = [flatten(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        for c in r:
            if c not in columns:
                columns.append(c)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in flat:
        writer.writerow(["" if r.get(c) is None else _csv_safe(r.get(c)) for c in columns])
    return buf.getvalue()


def _csv_safe(value):
    # spreadsheet formula injection: prefix cells that start with a formula character
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") and not _is_number(value):
        return "'" + value
    return value


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def parse_selection(params, *, default_days: int = 30) -> Selection:
    """Build a Selection from query parameters (from, to, group_by, channel, team, agent).

    Raises ValueError with a message per bad parameter."""
    from datetime import timedelta

    from django.utils import timezone

    errors = {}
    today = timezone.localdate()
    try:
        end = date.fromisoformat(params.get("to")) if params.get("to") else today
    except ValueError:
        errors["to"] = ["Use YYYY-MM-DD."]
        end = today
    try:
        start = date.fromisoformat(params.get("from")) if params.get("from") else end - timedelta(days=default_days - 1)
    except ValueError:
        errors["from"] = ["Use YYYY-MM-DD."]
        start = end
    if start > end:
        errors["from"] = ["`from` is after `to`."]
    if (end - start).days > 3660:
        errors["to"] = ["The range is limited to 10 years."]
    group_by = params.get("group_by") or None
    if group_by and group_by not in GROUPINGS:
        errors["group_by"] = [f"One of {', '.join(GROUPINGS)}."]
    team_id = agent_id = None
    if params.get("team"):
        t = params["team"]
        team = Team.objects.filter(pk=int(t)).first() if t.isdigit() else Team.objects.filter(name=t).first()
        if team is None:
            errors["team"] = ["Unknown team."]
        else:
            team_id = team.pk
    if params.get("agent"):
        a = params["agent"]
        user = (User.objects.filter(pk=int(a)).first() if a.isdigit()
                else User.objects.filter(email__iexact=a).first() or User.objects.filter(username=a).first())
        if user is None:
            errors["agent"] = ["Unknown agent."]
        else:
            agent_id = user.pk
    if errors:
        raise SelectionError(errors)
    return Selection(start, end, group_by, params.get("channel") or None, team_id, agent_id)


class SelectionError(ValueError):
    def __init__(self, errors: dict):
        super().__init__("Invalid parameters")
        self.errors = errors
