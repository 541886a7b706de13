"""Customer lifetime value (KPI.md, historic): the sum of a customer's order
amounts up to the end of the period, reported as the mean over the customers
of a group. In the metrics API the customers of a group are those with a
resolution dated in the period in that group; `by_segment` groups all customers
with orders by their segment (metrics.segments)."""
from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from customers.models import Order

from . import customer_base

NAME = "cltv"


def lifetime_values(customer_ids, until) -> dict[int, Decimal]:
    values: dict[int, Decimal] = {}
    ids = list(customer_ids)
    for i in range(0, len(ids), 5000):
        rows = (Order.objects.filter(customer_id__in=ids[i:i + 5000], placed_at__lt=until)
                .values("customer_id").annotate(total=Sum("amount")).order_by())
        for row in rows:
            values[row["customer_id"]] = row["total"] or Decimal(0)
    return values


def compute(sel) -> dict:
    groups = customer_base.customers_by_group(sel)
    everyone = set().union(*groups.values()) if groups else set()
    values = lifetime_values(everyone, sel.end_at)
    out = {}
    for key, customers in groups.items():
        total = sum((values.get(c, Decimal(0)) for c in customers), Decimal(0))
        out[key] = str((total / len(customers)).quantize(Decimal("0.01"))) if customers else None
    return out
