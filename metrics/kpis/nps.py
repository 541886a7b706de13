"""NPS (KPI.md): 0–10; % promoters (9–10) − % detractors (0–6), −100..100."""
from . import survey_base

NAME = "nps"


def compute(sel) -> dict:
    out = {}
    scores = survey_base.scores(sel, "nps")
    for key in survey_base.group_keys(sel, "nps"):
        counts = scores.get(key, {})
        n = sum(counts.values())
        promoters = sum(c for s, c in counts.items() if s >= 9)
        detractors = sum(c for s, c in counts.items() if s <= 6)
        out[key] = {
            "score": 100.0 * (promoters - detractors) / n if n else None,
            "promoters": promoters, "passives": n - promoters - detractors, "detractors": detractors,
            "responses": n, "response_rate": survey_base.response_rate(sel, "nps", key),
        }
    return out
