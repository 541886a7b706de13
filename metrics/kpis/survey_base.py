"""Survey answers and invitations per group (dated on the answer; response rate
on the invitations sent in the period): from their daily counts (metrics.survey_rollup) when
those are in the current time zone, else from the invitations."""
from __future__ import annotations

from collections import defaultdict

from django.db.models import Count
from django.db.models.functions import TruncDate

from .. import survey_rollup
from ..models import SurveyInvitation
from .base import TIME_GROUPINGS, filter_dims, fine_key, shared_rows, time_key

DIM_FIELDS = {"channel": "channel_kind", "agent": "agent_id", "team": "team_id"}


def _key(sel, row, dim):
    if sel.group_by is None:
        return None
    v = row[dim]
    if sel.group_by in TIME_GROUPINGS:
        return time_key(v, sel.group_by)
    return v or None


def scores(sel, kind: str) -> dict:
    """{group: {score: count}} of answers dated in the period (one query for every survey kind)."""

    def load():
        qs = SurveyInvitation.objects.filter(score__isnull=False, answered_at__gte=sel.start_at,
                                             answered_at__lt=sel.end_at)
        qs = filter_dims(qs, sel, channel="channel_kind", agent="agent_id", team="team_id")
        dim = DIM_FIELDS.get(sel.group_by)
        out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
        counted = survey_rollup.usable()  # the daily counts (metrics.survey_rollup), else the invitations
        fine = shared_rows(sel, "survey-scores", lambda: survey_rollup.rows(sel, "answers", False) if counted
                           else qs.values("kind", *DIM_FIELDS.values(), "score").annotate(n=Count("*")).order_by())
        if fine is not None:
            for row in fine:
                key = fine_key(sel, row, DIM_FIELDS)
                out[row["kind"]][None if sel.group_by is None else (key or None)][row["score"]] += row["n"]
            return out
        if sel.group_by in TIME_GROUPINGS:
            qs = qs.annotate(d=TruncDate("answered_at", tzinfo=sel.tz))
            dim = "d"
        fields = ["kind", dim, "score"] if dim else ["kind", "score"]
        if counted:
            rows = survey_rollup.rows(sel, "answers", sel.group_by in TIME_GROUPINGS)
            dim = "day" if sel.group_by in TIME_GROUPINGS else dim
        else:
            rows = qs.values(*fields).annotate(n=Count("*")).order_by()
        for row in rows:
            out[row["kind"]][_key(sel, row, dim) if dim else None][row["score"]] += row["n"]
        return out

    return sel.memo("survey-scores", load).get(kind, {})


def invitations(sel, kind: str) -> dict:
    """{group: (sent, answered)} of invitations sent in the period (one query for every survey kind)."""

    def load():
        qs = SurveyInvitation.objects.filter(invited_at__gte=sel.start_at, invited_at__lt=sel.end_at)
        qs = filter_dims(qs, sel, channel="channel_kind", agent="agent_id", team="team_id")
        dim = DIM_FIELDS.get(sel.group_by)
        out: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        aggs = {"sent": Count("*"), "answered": Count("score")}  # index-only: no id
        counted = survey_rollup.usable()
        fine = shared_rows(sel, "survey-invitations", lambda: survey_rollup.rows(sel, "sent", False) if counted
                           else qs.values("kind", *DIM_FIELDS.values()).annotate(**aggs).order_by())
        if fine is not None:
            for row in fine:
                key = fine_key(sel, row, DIM_FIELDS)
                acc = out[row["kind"]][None if sel.group_by is None else (key or None)]
                acc[0] += row["sent"]
                acc[1] += row["answered"]
            return out
        if sel.group_by in TIME_GROUPINGS:
            qs = qs.annotate(d=TruncDate("invited_at", tzinfo=sel.tz))
            dim = "d"
        fields = ["kind", dim] if dim else ["kind"]
        if counted:
            rows = survey_rollup.rows(sel, "sent", sel.group_by in TIME_GROUPINGS)
            dim = "day" if sel.group_by in TIME_GROUPINGS else dim
        else:
            rows = qs.values(*fields).annotate(**aggs).order_by()
        for row in rows:
            acc = out[row["kind"]][_key(sel, row, dim) if dim else None]
            acc[0] += row["sent"]
            acc[1] += row["answered"]
        return out

    return sel.memo("survey-invitations", load).get(kind, {})


def response_rate(sel, kind: str, key) -> float | None:
    sent, answered = invitations(sel, kind).get(key, (0, 0))
    return answered / sent if sent else None


def group_keys(sel, kind: str) -> set:
    return set(scores(sel, kind)) | set(invitations(sel, kind))
