"""Channel switches (KPI.md): inbound messages up to the final resolution whose
channel differs from the previous inbound message's; the mean over resolutions."""
from .base import ratio, rollups

NAME = "channel_switches"


def compute(sel) -> dict:
    return {k: ratio(r["switches_sum"], r["resolved"]) for k, r in rollups(sel).items()}
