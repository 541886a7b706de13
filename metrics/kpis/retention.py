"""Post-service retention (KPI.md): of the customers with a resolution in the
period, the share with an order within RETENTION_WINDOW after that resolution.
Customers whose window has not ended yet (and who have no order in it so far)
are reported apart (`pending`) and left out of the rate. With several
resolutions in the period, any of them followed by an order counts."""
from __future__ import annotations

from . import customer_base

NAME = "retention_rate"


def details(sel) -> dict:
    out = {}
    for key, g in customer_base.groups(sel).items():
        retained, lost, pending = g["retained"], g["lost"], g["pending"]
        out[key] = {"rate": retained / (retained + lost) if retained + lost else None,
                    "retained": retained, "lost": lost, "pending": pending}
    return out


def compute(sel) -> dict:
    return {k: v["rate"] for k, v in details(sel).items()}
