"""CES (KPI.md): 1 (very easy) – 5 (very difficult), lower is better; the mean
and % easy = answers of 1 or 2 / all × 100."""
from . import survey_base

NAME = "ces"


def compute(sel) -> dict:
    out = {}
    scores = survey_base.scores(sel, "ces")
    for key in survey_base.group_keys(sel, "ces"):
        counts = scores.get(key, {})
        n = sum(counts.values())
        out[key] = {
            "mean": sum(s * c for s, c in counts.items()) / n if n else None,
            "percent_easy": 100.0 * sum(c for s, c in counts.items() if s <= 2) / n if n else None,
            "responses": n, "response_rate": survey_base.response_rate(sel, "ces", key),
        }
    return out
