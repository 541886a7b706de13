"""Response time (KPI.md): per answered customer turn, first public agent reply
after the turn − the turn's first message. Unanswered turns are not averaged
(see `awaiting_reply`). Dated on the reply; channel of the turn's first message; agent who replied."""
from ..models import ConversationFact, ResponseFact
from .base import filter_dims, medians, rollups, time_stats

NAME = "response_time"
DIMS = {"day": "day", "channel": "channel", "agent": "agent_id", "team": "team_id"}


def compute(sel) -> dict:
    if "rt_pct" in sel.skip:
        pct = {}
    else:
        pct = sel.memo(("pct", "rt"), lambda: medians(ResponseFact.objects.all(), sel, DIMS, "seconds"))["seconds"]
    return {k: time_stats(r["rt_count"], r["rt_sum_ms"], pct.get(k)) for k, r in rollups(sel).items()}


def awaiting_reply(sel=None) -> int:
    """Active conversations whose latest customer turn has no public reply yet (now)."""
    from conversations.models import ACTIVE_STATUSES, Conversation

    qs = ConversationFact.objects.filter(
        awaiting_since__isnull=False,
        conversation_id__in=Conversation.objects.filter(status__in=ACTIVE_STATUSES).values("pk"))
    if sel is not None:
        qs = filter_dims(qs, sel, channel="origin_kind", agent="resolution_agent_id", team="initial_team_id")
    return qs.count()
