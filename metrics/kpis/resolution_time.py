"""Resolution time (KPI.md): final resolution − first message of the conversation.

A reopened and re-resolved conversation counts once, on its final resolution;
one reopened and not resolved again is not counted. Dated on the resolution;
origin channel, assignee at resolution, team at resolution."""
from ..models import ConversationFact
from .base import medians, rollups, time_stats

NAME = "resolution_time"
DIMS = {"day": "resolved_day", "channel": "origin_kind", "agent": "resolution_agent_id",
        "team": "resolution_team_id"}


def compute(sel, business: bool = False) -> dict:
    field = "resolution_bh_seconds" if business else "resolution_seconds"
    sum_col = "res_bh_sum_ms" if business else "res_sum_ms"
    if "bh_pct" in sel.skip:  # the caller shows no business-hours percentiles: one sort less
        if business:
            return {k: time_stats(r["resolved"], r[sum_col], None) for k, r in rollups(sel).items()}
        pct = sel.memo("pct:res:wall", lambda: medians(ConversationFact.objects.all(), sel, DIMS,
                                                       "resolution_seconds"))[field]
    else:
        pct = sel.memo("pct:res", lambda: medians(ConversationFact.objects.all(), sel, DIMS, "resolution_seconds",
                                                  "resolution_bh_seconds"))[field]
    return {k: time_stats(r["resolved"], r[sum_col], pct.get(k)) for k, r in rollups(sel).items()}
