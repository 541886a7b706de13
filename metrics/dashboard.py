"""Reads behind the manager dashboard (every figure through metrics.report / metrics.kpis)."""
from __future__ import annotations

from dataclasses import replace

from conversations.models import ACTIVE_STATUSES, Conversation
from helpdesk.models import User

from . import report, sla
from .kpis import cltv, first_response_time, response_time
from .kpis.base import Selection, SharedReads, run_reads
from .models import SurveyInvitation

TABLES = ("summary", "channel", "team", "agent", "day", "week", "month", "distribution", "comments", "segments")


TREND_KPIS = ("volume", "first_response_time", "csat")
TABLE_KPIS = ("volume", "first_response_time", "response_time", "resolution_time", "fcr_rate", "one_touch_rate",
              "sla_attainment", "csat")


def _sub(sel: Selection, group_by, skip=frozenset(), shared: SharedReads | None = None):
    return replace(sel, group_by=group_by, skip=skip, _cache={}, _shared=shared)


def table(sel: Selection, name: str) -> list[dict]:
    if name == "summary":
        return report.build(_sub(sel, None))
    if name == "distribution":
        return first_response_time.distribution(sel)
    if name == "comments":
        return comments(sel, limit=1000)
    if name == "segments":
        return cltv.by_segment(sel)
    return report.build(_sub(sel, name))


def comments_query(sel: Selection):
    """The answered surveys with a comment in the selection, latest first (index survey_comments)."""
    qs = (SurveyInvitation.objects.filter(score__isnull=False, answered_at__gte=sel.start_at,
                                          answered_at__lt=sel.end_at).exclude(comment="")
          .select_related("agent", "team").order_by("-answered_at"))
    if sel.channel:
        qs = qs.filter(channel_kind=sel.channel)
    if sel.team_id:
        qs = qs.filter(team_id=sel.team_id)
    if sel.agent_id:
        qs = qs.filter(agent_id=sel.agent_id)
    return qs


def comments(sel: Selection, limit: int = 30) -> list[dict]:
    qs = comments_query(sel)
    return [{"answered_at": s.answered_at.isoformat(), "kind": s.kind, "score": s.score, "comment": s.comment,
             "channel": s.channel_kind, "agent": s.agent.email if s.agent else None,
             "team": s.team.name if s.team else None, "conversation": s.conversation_id} for s in qs[:limit]]


def live_counters() -> dict:
    active = Conversation.objects.filter(status__in=ACTIVE_STATUSES)
    return {
        "open_now": active.count(),
        "waiting_past_sla": len(sla.waiting_past_sla()),
        "awaiting_reply": response_time.awaiting_reply(),
        "agents_online": User.objects.filter(is_active=True, availability="online").count(),
    }


def data(sel: Selection) -> dict:
    """Everything the page shows; all but the live counters from metrics.resultcache when
    the data has not changed since."""
    from . import resultcache

    return {**resultcache.cached("dashboard", sel, lambda: _data(sel)), "live": live_counters()}


# the cards show medians and the response-time mean only; the tables no business-hours figures;
# the trend the FRT median
CARD_SKIP = frozenset({"rt_pct", "p90"})
TABLE_SKIP = frozenset({"rt_pct", "bh_pct"})
TREND_SKIP = TABLE_SKIP | {"p90"}


def _data(sel: Selection) -> dict:
    build = report.build_uncached
    trend_group = "day" if (sel.end - sel.start).days <= 62 else ("week" if (sel.end - sel.start).days <= 370 else "month")
    shared = SharedReads()  # the card and the three tables: one scan of the rollups and surveys
    # the tasks start in this order on METRICS_QUERY_THREADS threads: the longest first (measured at
    # 1 M conversations), so the short ones fill the gaps at the end instead of a long one starting last
    parts = run_reads({
        "current": lambda: build(_sub(sel, None, CARD_SKIP, shared))[0],
        "by_agent": lambda: build(_sub(sel, "agent", TABLE_SKIP, shared), only=TABLE_KPIS),
        "trend": lambda: build(_sub(sel, trend_group, TREND_SKIP), only=TREND_KPIS),
        "previous": lambda: build(_sub(sel.previous(), None, CARD_SKIP))[0],
        "by_channel": lambda: build(_sub(sel, "channel", TABLE_SKIP, shared), only=TABLE_KPIS),
        "by_team": lambda: build(_sub(sel, "team", TABLE_SKIP, shared), only=TABLE_KPIS),
        "distribution": lambda: first_response_time.distribution(sel),
        "comments": lambda: comments(sel),
    })
    return {"trend_group": trend_group, **parts}
