"""SLA attainment (KPI.md): share of resolved conversations (dated on the
resolution) with an SLA policy whose first response and resolution met the
policy's targets (business hours when the policy says so)."""
from .base import ratio, rollups

NAME = "sla_attainment"


def compute(sel) -> dict:
    return {k: ratio(r["sla_met"], r["sla_count"]) for k, r in rollups(sel).items()}
