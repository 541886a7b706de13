"""CSAT (KPI.md): 1–5; percent = answers of 4 or 5 / all answers × 100; also the mean."""
from . import survey_base

NAME = "csat"


def compute(sel) -> dict:
    out = {}
    scores = survey_base.scores(sel, "csat")
    for key in survey_base.group_keys(sel, "csat"):
        counts = scores.get(key, {})
        n = sum(counts.values())
        out[key] = {
            "percent": 100.0 * sum(c for s, c in counts.items() if s >= 4) / n if n else None,
            "mean": sum(s * c for s, c in counts.items()) / n if n else None,
            "responses": n,
            "response_rate": survey_base.response_rate(sel, "csat", key),
        }
    return out
