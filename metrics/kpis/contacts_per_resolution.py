"""Contacts per resolution (KPI.md): customer contacts up to the final
resolution (CONTACT_GAP, channel change), the mean over resolutions."""
from .base import ratio, rollups

NAME = "contacts_per_resolution"


def compute(sel) -> dict:
    return {k: ratio(r["contacts_sum"], r["resolved"]) for k, r in rollups(sel).items()}
