"""Post-service retention (KPI.md): of the customers with a resolution in the
period, the share with an order within RETENTION_WINDOW after that resolution.
Customers whose window has not ended yet (and who have no order in it so far)
are reported apart (`pending`) and left out of the rate. With several
resolutions in the period, any of them followed by an order counts."""
from __future__ import annotations

from collections import defaultdict

from . import customer_base

NAME = "retention_rate"


def details(sel) -> dict:
    def load():
        best: dict = defaultdict(dict)
        for key, cust, _ltv, rank in customer_base.rows(sel):
            best[key][cust] = max(rank, best[key].get(cust, 0))
        out = {}
        for key, customers in best.items():
            retained = sum(1 for r in customers.values() if r == 2)
            pending = sum(1 for r in customers.values() if r == 1)
            lost = sum(1 for r in customers.values() if r == 0)
            out[key] = {"rate": retained / (retained + lost) if retained + lost else None,
                        "retained": retained, "lost": lost, "pending": pending}
        return out

    return sel.memo("retention", load)


def compute(sel) -> dict:
    return {k: v["rate"] for k, v in details(sel).items()}
