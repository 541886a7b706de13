"""The customers of a selection: those with a (final) resolution dated in the
period, in the group of that resolution (origin channel, assignee, team)."""
from __future__ import annotations

from collections import defaultdict

from ..models import ConversationFact
from .base import TIME_GROUPINGS, filter_dims, time_key
from .resolution_time import DIMS


def resolutions(sel) -> list[tuple]:
    """[(group key, customer_id, resolved_at)] of resolutions dated in the period."""

    def load():
        qs = ConversationFact.objects.filter(resolved_day__gte=sel.start, resolved_day__lte=sel.end,
                                             customer_id__isnull=False)
        qs = filter_dims(qs, sel, channel=DIMS["channel"], agent=DIMS["agent"], team=DIMS["team"])
        dim = DIMS.get("day" if sel.group_by in TIME_GROUPINGS else sel.group_by) if sel.group_by else None
        out = []
        for g, cust, at in qs.values_list(dim or "customer_id", "customer_id", "resolved_at").iterator(chunk_size=10000):
            if sel.group_by is None:
                key = None
            elif sel.group_by in TIME_GROUPINGS:
                key = time_key(g, sel.group_by)
            else:
                key = g or None
            out.append((key, cust, at))
        return out

    return sel.memo("resolutions", load)


def customers_by_group(sel) -> dict:
    out = defaultdict(set)
    for key, cust, _at in resolutions(sel):
        out[key].add(cust)
    return out
