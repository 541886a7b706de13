"""Customer segments: recency (new, active, at risk, inactive, former) and value (high, low).

    from metrics.segments import segment_for
    seg = segment_for(customer)   # Segment(recency="active", value="high", lifetime_value=Decimal, ...)

Recency uses the customer's latest activity (inbound message or order):
new = first seen within NEW_DAYS; active = activity within ACTIVE_DAYS; at_risk
within AT_RISK_DAYS; inactive within INACTIVE_DAYS; former beyond. Value is
"high" when the lifetime value reaches HIGH_VALUE or the average order value
reaches HIGH_AOV, "low" otherwise (customers without orders are "low").
`filter_customers(qs, recency=..., value=...)` applies a segment to a Customer
queryset (inbox filter, report grouping).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, DecimalField, Max, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

NEW_DAYS = getattr(settings, "SEGMENT_NEW_DAYS", 30)
ACTIVE_DAYS = getattr(settings, "SEGMENT_ACTIVE_DAYS", 90)
AT_RISK_DAYS = getattr(settings, "SEGMENT_AT_RISK_DAYS", 180)
INACTIVE_DAYS = getattr(settings, "SEGMENT_INACTIVE_DAYS", 365)
HIGH_VALUE = Decimal(str(getattr(settings, "SEGMENT_HIGH_VALUE", 500)))
HIGH_AOV = Decimal(str(getattr(settings, "SEGMENT_HIGH_AOV", 100)))

RECENCY_LABELS = {"new": _("New"), "active": _("Active"), "at_risk": _("At risk"), "inactive": _("Inactive"),
                  "former": _("Former")}
VALUE_LABELS = {"high": _("High value"), "low": _("Low value")}


@dataclass
class Segment:
    recency: str
    value: str
    lifetime_value: Decimal
    average_order_value: Decimal | None
    orders: int
    last_activity_at: datetime | None

    @property
    def recency_label(self):
        return RECENCY_LABELS[self.recency]

    @property
    def value_label(self):
        return VALUE_LABELS[self.value]


def _recency(first_seen: datetime | None, last_activity: datetime | None, now: datetime) -> str:
    if first_seen and now - first_seen <= timedelta(days=NEW_DAYS):
        return "new"
    if last_activity is None:
        return "former"
    age = now - last_activity
    if age <= timedelta(days=ACTIVE_DAYS):
        return "active"
    if age <= timedelta(days=AT_RISK_DAYS):
        return "at_risk"
    if age <= timedelta(days=INACTIVE_DAYS):
        return "inactive"
    return "former"


def segment_for(customer, *, now: datetime | None = None) -> Segment:
    from customers.models import Order

    now = now or timezone.now()
    agg = Order.objects.filter(customer=customer, placed_at__lte=now).aggregate(
        total=Sum("amount"), n=Count("id"), last=Max("placed_at"))
    total = agg["total"] or Decimal(0)
    n = agg["n"] or 0
    aov = (total / n).quantize(Decimal("0.01")) if n else None
    candidates = [d for d in (customer.last_inbound_at, agg["last"]) if d]
    last = max(candidates) if candidates else None
    value = "high" if (total >= HIGH_VALUE or (aov is not None and aov >= HIGH_AOV)) else "low"
    return Segment(_recency(customer.first_seen_at, last, now), value, total, aov, n, last)


def annotate(qs):
    """Annotate a Customer queryset with lifetime_value, order_count, last_order_at."""
    from customers.models import Order

    orders = Order.objects.filter(customer=OuterRef("pk")).values("customer")
    money = DecimalField(max_digits=16, decimal_places=2)
    return qs.annotate(
        lifetime_value=Coalesce(Subquery(orders.annotate(s=Sum("amount")).values("s")[:1], output_field=money),
                                Value(Decimal(0)), output_field=money),
        order_count=Coalesce(Subquery(orders.annotate(c=Count("id")).values("c")[:1]), Value(0)),
        last_order_at=Subquery(orders.annotate(m=Max("placed_at")).values("m")[:1]),
    )


def filter_customers(qs, *, recency: str | None = None, value: str | None = None, now: datetime | None = None):
    """Restrict a Customer queryset to a segment (for inbox filters and report grouping)."""
    now = now or timezone.now()
    qs = annotate(qs)
    if recency:
        from datetime import timezone as dt_tz

        epoch = datetime(1970, 1, 1, tzinfo=dt_tz.utc)
        qs = qs.annotate(last_activity=Greatest(Coalesce("last_inbound_at", Value(epoch)),
                                                Coalesce("last_order_at", Value(epoch))))
        new_q = Q(first_seen_at__gt=now - timedelta(days=NEW_DAYS))

        def within(days):
            return Q(last_activity__gte=now - timedelta(days=days))

        if recency == "new":
            qs = qs.filter(new_q)
        elif recency == "active":
            qs = qs.filter(within(ACTIVE_DAYS)).exclude(new_q)
        elif recency == "at_risk":
            qs = qs.filter(within(AT_RISK_DAYS)).exclude(within(ACTIVE_DAYS)).exclude(new_q)
        elif recency == "inactive":
            qs = qs.filter(within(INACTIVE_DAYS)).exclude(within(AT_RISK_DAYS)).exclude(new_q)
        elif recency == "former":
            qs = qs.exclude(within(INACTIVE_DAYS)).exclude(new_q)
        else:
            raise ValueError(f"Unknown recency segment {recency!r}")
    if value:
        # average order value >= HIGH_AOV  <=>  lifetime_value >= HIGH_AOV * order_count
        from django.db.models import F

        high = Q(lifetime_value__gte=HIGH_VALUE) | Q(order_count__gt=0, lifetime_value__gte=F("order_count") * HIGH_AOV)
        qs = qs.filter(high) if value == "high" else qs.exclude(high)
    return qs
