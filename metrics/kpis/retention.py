"""Post-service retention (KPI.md): of the customers with a resolution in the
period, the share with an order within RETENTION_WINDOW after that resolution.
Customers whose window has not ended yet (and who have no order in it so far)
are reported apart (`pending`) and left out of the rate. With several
resolutions in the period, any of them followed by an order counts."""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from customers.models import Order

from . import customer_base

NAME = "retention_rate"


def _orders(customer_ids) -> dict:
    out = defaultdict(list)
    ids = list(customer_ids)
    for i in range(0, len(ids), 5000):
        for cust, at in Order.objects.filter(customer_id__in=ids[i:i + 5000]).values_list("customer_id", "placed_at"):
            out[cust].append(at)
    return out


def details(sel) -> dict:
    def load():
        window = timedelta(seconds=settings.RETENTION_WINDOW)
        now = timezone.now()
        rows = customer_base.resolutions(sel)
        orders = _orders({c for _k, c, _a in rows})
        state: dict = defaultdict(dict)  # key -> customer -> "retained" | "pending" | "lost"
        for key, cust, at in rows:
            end = at + window
            retained = any(at < o <= end for o in orders.get(cust, ()))
            verdict = "retained" if retained else ("pending" if end > now else "lost")
            prev = state[key].get(cust)
            rank = {"retained": 2, "pending": 1, "lost": 0}
            if prev is None or rank[verdict] > rank[prev]:
                state[key][cust] = verdict
        out = {}
        for key, customers in state.items():
            retained = sum(1 for v in customers.values() if v == "retained")
            lost = sum(1 for v in customers.values() if v == "lost")
            pending = sum(1 for v in customers.values() if v == "pending")
            out[key] = {"rate": retained / (retained + lost) if retained + lost else None,
                        "retained": retained, "lost": lost, "pending": pending}
        return out

    return sel.memo("retention", load)


def compute(sel) -> dict:
    return {k: v["rate"] for k, v in details(sel).items()}
