"""Customer lifetime value (KPI.md, historic): the sum of a customer's order
amounts up to the end of the period, reported as the mean over the customers
of a group. In the metrics API the customers of a group are those with a
resolution dated in the period in that group (kpis.customer_base)."""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from . import customer_base

NAME = "cltv"


def compute(sel) -> dict:
    values: dict = defaultdict(dict)
    for key, cust, ltv, _rank in customer_base.rows(sel):
        values[key][cust] = ltv or Decimal(0)
    return {key: str((sum(v.values(), Decimal(0)) / len(v)).quantize(Decimal("0.01")))
            for key, v in values.items() if v}
