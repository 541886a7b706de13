"""The customers of a selection: those with a (final) resolution dated in the
period, in the group of that resolution (origin channel, assignee, team).

One SQL query per selection gives, per (group, customer): the lifetime value up
to the end of the period (CLTV) and the best retention verdict (an order within
RETENTION_WINDOW after one of the resolutions: 2; window still open: 1; lost: 0).
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import (
    Case,
    DateTimeField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from customers.models import Order

from ..models import ConversationFact
from .base import TIME_GROUPINGS, filter_dims, group_annotation, time_key
from .resolution_time import DIMS


def rows(sel) -> list[tuple]:
    """[(group key, customer_id, lifetime value, retention rank)]"""

    def load():
        window = timedelta(seconds=settings.RETENTION_WINDOW)
        now = timezone.now()
        qs = ConversationFact.objects.filter(resolved_day__gte=sel.start, resolved_day__lte=sel.end,
                                             customer_id__isnull=False)
        qs = filter_dims(qs, sel, channel=DIMS["channel"], agent=DIMS["agent"], team=DIMS["team"])
        window_end = ExpressionWrapper(OuterRef("resolved_at") + Value(window), output_field=DateTimeField())
        ordered = Exists(Order.objects.filter(customer_id=OuterRef("customer_id"), placed_at__gt=OuterRef("resolved_at"),
                                              placed_at__lte=window_end))
        money = DecimalField(max_digits=16, decimal_places=2)
        ltv = Subquery(Order.objects.filter(customer_id=OuterRef("customer_id"), placed_at__lt=sel.end_at)
                       .values("customer_id").annotate(s=Sum("amount")).values("s")[:1], output_field=money)
        qs = (qs.annotate(g=group_annotation(sel, DIMS), ordered=ordered)
              .values("g", "customer_id")
              .annotate(rank=Max(Case(When(ordered=True, then=Value(2)),
                                      When(Q(resolved_at__gt=now - window), then=Value(1)),
                                      default=Value(0), output_field=IntegerField())),
                        ltv=Coalesce(ltv, Value(0), output_field=money))
              .order_by())
        out = []
        for row in qs:
            g = row["g"]
            if sel.group_by is None:
                key = None
            elif sel.group_by in TIME_GROUPINGS:
                key = time_key(g.date() if hasattr(g, "date") and callable(g.date) else g, sel.group_by)
            else:
                key = g or None
            out.append((key, row["customer_id"], row["ltv"], row["rank"]))
        return out

    return sel.memo("customer_rows", load)
