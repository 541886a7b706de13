"""One-touch resolution rate (KPI.md): resolved with exactly one public agent
reply and never reopened, as a fraction of resolutions in the period."""
from .base import ratio, rollups

NAME = "one_touch_rate"


def compute(sel) -> dict:
    return {k: ratio(r["one_touch"], r["resolved"]) for k, r in rollups(sel).items()}
