"""First contact resolution (KPI.md): one customer contact, never reopened and
no other conversation started by the same customer within FCR_WINDOW after the
resolution. The rate uses final verdicts only; verdicts whose window is still
open are reported apart (`provisional`)."""
from .base import ratio, rollups

NAME = "fcr_rate"


def compute(sel) -> dict:
    return {k: ratio(r["fcr_final_yes"], r["fcr_final_count"]) for k, r in rollups(sel).items()}


def provisional(sel) -> dict:
    return {k: {"rate": ratio(r["fcr_prov_yes"], r["fcr_prov_count"]), "count": r["fcr_prov_count"],
                "final_count": r["fcr_final_count"]}
            for k, r in rollups(sel).items()}
