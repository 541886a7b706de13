"""WeeklyRollup: the engine's additive upserts keep it equal to the sum of the days, and a
selection read from days plus whole weeks equals the sum of its days."""
from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta

import pytest

from metrics import engine
from metrics.kpis.base import Selection, SharedReads, rollups, time_key
from metrics.models import ROLLUP_COLUMNS, DailyRollup, WeeklyRollup

pytestmark = pytest.mark.django_db

START = date(2026, 2, 20)


def _random_deltas(rng: random.Random, rounds: int) -> list[dict]:
    out = []
    for _ in range(rounds):
        delta = {}
        for _ in range(rng.randint(1, 30)):
            day = START + timedelta(days=rng.randrange(80))
            key = f"{day.isoformat()}|{rng.choice(['email', 'chat', ''])}|{rng.choice([0, 7, 9])}|{rng.choice([0, 3])}"
            delta[key] = {c: rng.randint(-2, 5) for c in rng.sample(ROLLUP_COLUMNS, 4)}
        out.append(delta)
    return out


def _expected(deltas: list[dict], sel: Selection) -> dict:
    out: dict = defaultdict(lambda: dict.fromkeys(ROLLUP_COLUMNS, 0))
    for delta in deltas:
        for key, cols in delta.items():
            day_s, channel, agent, team = key.split("|")
            day = date.fromisoformat(day_s)
            if not sel.start <= day <= sel.end or (sel.channel and channel != sel.channel):
                continue
            if sel.agent_id and int(agent) != sel.agent_id:
                continue
            g = sel.group_by
            group = (None if g is None else time_key(day, g) if g in ("day", "week", "month")
                     else channel if g == "channel" else (int(agent) or None) if g == "agent" else (int(team) or None))
            for c, v in cols.items():
                out[group][c] += v
    return {k: v for k, v in out.items() if any(v.values())}


@pytest.mark.parametrize("seed", [3, 4])
def test_days_plus_weeks_equal_the_days(seed):
    rng = random.Random(seed)
    deltas = _random_deltas(rng, 12)
    for delta in deltas:
        engine.apply_delta(delta)
    # the weeks are the sums of their days
    weeks = defaultdict(lambda: defaultdict(int))
    for row in DailyRollup.objects.values("day", "channel", "agent_id", "team_id", *ROLLUP_COLUMNS):
        key = (row["day"] - timedelta(days=row["day"].weekday()), row["channel"], row["agent_id"], row["team_id"])
        for c in ROLLUP_COLUMNS:
            weeks[key][c] += row[c]
    stored = {(r["day"], r["channel"], r["agent_id"], r["team_id"]): {c: r[c] for c in ROLLUP_COLUMNS}
              for r in WeeklyRollup.objects.values("day", "channel", "agent_id", "team_id", *ROLLUP_COLUMNS)}
    assert {k: dict(v) for k, v in weeks.items() if any(v.values())} == \
        {k: v for k, v in stored.items() if any(v.values())}
    assert WeeklyRollup.objects.count() < DailyRollup.objects.count()
    for _ in range(40):
        a = START + timedelta(days=rng.randrange(-5, 80))
        b = a + timedelta(days=rng.randrange(0, 60))
        for group_by in (None, "channel", "agent", "team", "day", "week", "month"):
            for sel in (Selection(a, b, group_by), Selection(a, b, group_by, channel="chat", agent_id=7)):
                got = {k: {c: int(x) for c, x in v.items()} for k, v in rollups(sel).items() if any(v.values())}
                assert got == _expected(deltas, sel), sel
                shared = Selection(a, b, group_by, _shared=SharedReads())
                if group_by in (None, "channel", "agent", "team"):
                    got = {k: {c: int(x) for c, x in v.items()} for k, v in rollups(shared).items()
                           if any(v.values())}
                    assert got == _expected(deltas, shared), shared
