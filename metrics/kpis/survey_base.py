"""Survey answers and invitations per group (dated on the answer; response rate
on the invitations sent in the period)."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Q
from django.db.models.functions import TruncDate

from ..models import SurveyInvitation
from .base import TIME_GROUPINGS, filter_dims, time_key

DIM_FIELDS = {"channel": "channel_kind", "agent": "agent_id", "team": "team_id"}


def _key(sel, row, dim):
    if sel.group_by is None:
        return None
    v = row[dim]
    if sel.group_by in TIME_GROUPINGS:
        return time_key(v, sel.group_by)
    return v or None


def scores(sel, kind: str) -> dict:
    """{group: {score: count}} of answers dated in the period."""

    def load():
        qs = SurveyInvitation.objects.filter(kind=kind, score__isnull=False, answered_at__gte=sel.start_at,
                                             answered_at__lt=sel.end_at)
        qs = filter_dims(qs, sel, channel="channel_kind", agent="agent_id", team="team_id")
        dim = DIM_FIELDS.get(sel.group_by)
        if sel.group_by in TIME_GROUPINGS:
            qs = qs.annotate(d=TruncDate("answered_at", tzinfo=sel.tz))
            dim = "d"
        fields = [dim, "score"] if dim else ["score"]
        out: dict = defaultdict(lambda: defaultdict(int))
        for row in qs.values(*fields).annotate(n=Count("id")).order_by():
            out[_key(sel, row, dim) if dim else None][row["score"]] += row["n"]
        return out

    return sel.memo(("survey", kind), load)


def invitations(sel, kind: str) -> dict:
    """{group: (sent, answered)} of invitations sent in the period."""

    def load():
        qs = SurveyInvitation.objects.filter(kind=kind, invited_at__gte=sel.start_at, invited_at__lt=sel.end_at)
        qs = filter_dims(qs, sel, channel="channel_kind", agent="agent_id", team="team_id")
        dim = DIM_FIELDS.get(sel.group_by)
        if sel.group_by in TIME_GROUPINGS:
            qs = qs.annotate(d=TruncDate("invited_at", tzinfo=sel.tz))
            dim = "d"
        out: dict = defaultdict(lambda: [0, 0])
        aggs = {"sent": Count("id"), "answered": Count("id", filter=Q(score__isnull=False))}
        rows = qs.values(dim).annotate(**aggs).order_by() if dim else [qs.aggregate(**aggs)]
        for row in rows:
            acc = out[_key(sel, row, dim) if dim else None]
            acc[0] += row["sent"]
            acc[1] += row["answered"]
        return out

    return sel.memo(("invites", kind), load)


def response_rate(sel, kind: str, key) -> float | None:
    sent, answered = invitations(sel, kind).get(key, (0, 0))
    return answered / sent if sent else None


def group_keys(sel, kind: str) -> set:
    return set(scores(sel, kind)) | set(invitations(sel, kind))
