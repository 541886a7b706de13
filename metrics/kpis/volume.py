"""Volume (KPI.md): created (first message in the period), resolved (final
resolutions dated in the period), reopened (reopens that happened in the period)."""
from .base import rollups

NAME = "volume"


def compute(sel) -> dict:
    return {k: {"created": r["created"], "resolved": r["resolved"], "reopened": r["reopened"]}
            for k, r in rollups(sel).items()}
