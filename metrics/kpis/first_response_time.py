"""First response time (KPI.md): first public agent reply − first inbound message.

Dated on the reply; grouped by the channel of the first inbound message, the
agent who replied and the team at reply. Outbound-first conversations have none.
`business=True` gives the business-hours variant (seconds inside the team's hours).
"""
from ..models import ConversationFact
from .base import medians, rollups, time_stats

NAME = "first_response_time"
DIMS = {"day": "frt_day", "channel": "frt_kind", "agent": "frt_agent_id", "team": "frt_team_id"}


def compute(sel, business: bool = False) -> dict:
    field = "frt_bh_seconds" if business else "frt_seconds"
    sum_col = "frt_bh_sum_ms" if business else "frt_sum_ms"
    if "bh_pct" in sel.skip:  # the caller shows no business-hours percentiles: one sort less
        if business:
            return {k: time_stats(r["frt_count"], r[sum_col], None) for k, r in rollups(sel).items()}
        pct = sel.memo("pct:frt:wall", lambda: medians(ConversationFact.objects.all(), sel, DIMS,
                                                       "frt_seconds"))[field]
    else:
        pct = sel.memo("pct:frt", lambda: medians(ConversationFact.objects.all(), sel, DIMS, "frt_seconds",
                                                  "frt_bh_seconds"))[field]
    return {k: time_stats(r["frt_count"], r[sum_col], pct.get(k)) for k, r in rollups(sel).items()}


BUCKETS = [(0, 300, "< 5 min"), (300, 900, "5–15 min"), (900, 3600, "15–60 min"), (3600, 14400, "1–4 h"),
           (14400, 86400, "4–24 h"), (86400, None, "> 24 h")]


def distribution(sel) -> list[dict]:
    """How many first responses fell in each time bucket (the dashboard's histogram): from the
    value histograms when they cover the filters."""
    from .. import histograms

    counts = histograms.bucket_counts(sel, "frt")  # the limits are bucket thresholds
    if counts is not None:
        return [{"bucket": label, "count": histograms.count_between(counts, lo, hi)} for lo, hi, label in BUCKETS]
    return distribution_all_values(sel)


def distribution_all_values(sel) -> list[dict]:
    from django.db.models import Count, Q

    from .base import filter_dims

    qs = ConversationFact.objects.filter(frt_day__gte=sel.start, frt_day__lte=sel.end, frt_seconds__isnull=False)
    qs = filter_dims(qs, sel, channel="frt_kind", agent="frt_agent_id", team="frt_team_id")
    aggs = {}
    for i, (lo, hi, _label) in enumerate(BUCKETS):
        cond = Q(frt_seconds__gte=lo) if hi is None else Q(frt_seconds__gte=lo, frt_seconds__lt=hi)
        aggs[f"b{i}"] = Count("frt_seconds", filter=cond)  # a column of the (day, value) index: index-only
    row = qs.aggregate(**aggs)
    return [{"bucket": label, "count": row[f"b{i}"]} for i, (_lo, _hi, label) in enumerate(BUCKETS)]
