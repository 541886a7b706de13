"""Repeat contact rate (KPI.md): the same customer started another conversation
on any channel within FCR_WINDOW after this one's resolution; fraction of resolutions."""
from .base import ratio, rollups

NAME = "repeat_contact_rate"


def compute(sel) -> dict:
    return {k: ratio(r["repeat_yes"], r["resolved"]) for k, r in rollups(sel).items()}
