"""Customer lifetime value (KPI.md, historic): the sum of a customer's order
amounts up to the end of the period, reported as the mean over the customers
of a group. In the metrics API the customers of a group are those with a
resolution dated in the period in that group (kpis.customer_base)."""
from __future__ import annotations

from decimal import Decimal

from . import customer_base

NAME = "cltv"


def compute(sel) -> dict:
    return {key: str((g["ltv_sum"] / g["customers"]).quantize(Decimal("0.01")))
            for key, g in customer_base.groups(sel).items() if g["customers"]}


def by_segment(sel) -> list[dict]:
    """Mean lifetime value (orders up to the end of the period) per customer segment
    (metrics.segments), over the customers active in the period."""
    from django.db.models import Avg, Count, Q

    from customers.models import Customer

    from ..segments import RECENCY_LABELS, VALUE_LABELS, filter_customers

    base = Customer.objects.filter(Q(conversations__created_at__lt=sel.end_at) | Q(orders__placed_at__lt=sel.end_at)
                                   ).distinct()
    out = []
    for recency, label in RECENCY_LABELS.items():
        row = filter_customers(Customer.objects.filter(pk__in=base.values("pk")), recency=recency,
                               now=sel.end_at).aggregate(n=Count("id"), cltv=Avg("lifetime_value"))
        out.append({"segment": str(label), "customers": row["n"],
                    "cltv": str(Decimal(row["cltv"]).quantize(Decimal("0.01"))) if row["cltv"] is not None else None})
    for value, label in VALUE_LABELS.items():
        row = filter_customers(Customer.objects.filter(pk__in=base.values("pk")), value=value,
                               now=sel.end_at).aggregate(n=Count("id"), cltv=Avg("lifetime_value"))
        out.append({"segment": str(label), "customers": row["n"],
                    "cltv": str(Decimal(row["cltv"]).quantize(Decimal("0.01"))) if row["cltv"] is not None else None})
    return out
