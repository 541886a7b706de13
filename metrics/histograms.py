"""Exact medians and p90 from value histograms (KPI.md: percentile_cont, linear interpolation).

`ValueHistogram` counts, per figure (METRICS), dimension (DIMS: the whole, or one of channel,
agent, team), local day, week or four-week block (`span`, `spans`), dimension value (`key`) and
bucket, the values of the facts that fell in the bucket: bucket b of a value v is
`bisect_right(T, v)` (SQL: `width_bucket(v, T)`, the same float8 values), i.e.
T[b-1] <= v < T[b], where T is THRESHOLDS plus the figure's splits (quantiles of its values
chosen by the full recompute; `limits()`).

A read (`percentiles`) sums the counts of the selection per (group, bucket) - a few thousand
rows -, finds the buckets that hold the two ranks percentile_cont interpolates between
(floor and ceil of (n - 1) p), and fetches only the values of those buckets (index range scans
of (day, value)); sorting them gives the exact order statistics. Selections the single-dimension
cuboids do not cover (filters on one dimension grouped by another, or filters on two) return
None: the caller computes them from all values.

The counts are a pure function of the facts: `fact_counts` gives what one ConversationFact adds,
the engine applies (new - old) differences with an additive upsert (`apply`), and a full
recompute chooses the splits and rebuilds the table (`rebuild` in SQL, for migrations; on
PostgreSQL the full recompute counts its fold's values with numpy: `Values`, `count_values`,
`write_counts`; tests compare both with the Python path). Changing THRESHOLDS needs
`manage.py recompute_metrics`.
"""
from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from datetime import date, datetime, timedelta

from django.db import connection

from . import resultcache
from .businesshours import local_day


def _thresholds() -> tuple[float, ...]:
    """0, a few round values up to a minute, then whole seconds growing ~5 % a step (up to ~30
    years), plus the limits of the dashboard's FRT distribution: ~340 buckets. Finer buckets
    mean more histogram rows to sum, coarser ones more values to rank in the fetched buckets
    (with 15 % steps a dense bucket held ~48 % of a period's resolution times and its ranking
    was the largest cost of a cold dashboard)."""
    out = {0.0, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0}
    t = 60
    while t < 10 ** 9:
        out.add(float(t))
        t = max(t + 1, round(t * 1.05))
    out.update(float(x) for x in (300, 900, 3600, 14400, 86400))
    return tuple(sorted(out))


THRESHOLDS = _thresholds()
# the thresholds the stored counts were made with (MetricsState "histograms"): counts of other
# thresholds are never read (`current`); `rebuild` (recompute_metrics, a migration) recounts
# Counts are kept per day (span 1), per week (span 7, from its Monday) and per block of four weeks
# (span 28, from a Monday a multiple of 28 days after BLOCK_EPOCH): a 90-day read sums ~3 blocks,
# a few weeks and days instead of 13 weeks and days (half the rows of an agent table at 1 M).
BLOCK = 28
BLOCK_EPOCH = date(2001, 1, 1)  # a Monday
LAYOUT = "d1w7b28"
FINGERPRINT = hashlib.sha1(repr((THRESHOLDS, LAYOUT)).encode()).hexdigest()[:16]
STATE_KEY = "histograms"
# Splits: where a figure's values crowd (a resolution time that is mostly "a day plus a bit", an
# auto-close timer), a 5 % bucket can hold a quarter of a period and ranking it dominates a read.
# The full recompute (`rebuild(resplit=True)`) therefore adds, per figure, its SPLIT_QUANTILES-
# quantiles over all stored values as extra thresholds (equal-frequency cuts inside the geometric
# ones), once the figure has SPLIT_MIN_VALUES values. They are stored with the fingerprint, so
# every writer and reader buckets with the same limits; incremental counting keeps them.
# (Measured at 1 M conversations: 100 quantiles gave the fastest cold dashboard and API; 60 or
# 200, or splitting only the crowded buckets, were slower: more rows to sum or values to rank.)
SPLIT_QUANTILES = 100
SPLIT_MIN_VALUES = 50_000


class Limits(dict):
    """{metric: sorted thresholds} of the stored counts: THRESHOLDS plus the metric's splits."""

    def of(self, metric: str) -> tuple[float, ...]:
        return self.get(metric, THRESHOLDS)


@lru_cache(maxsize=16)
def _merged(splits: tuple) -> tuple[float, ...]:
    return tuple(sorted(set(THRESHOLDS) | set(splits)))


def _state() -> dict | None:
    """The stored counts' record; {} when there is none (e.g. a flushed test database: THRESHOLDS
    without splits), None when they were counted with other THRESHOLDS."""
    from .models import MetricsState

    state = MetricsState.objects.filter(key=STATE_KEY).values_list("value", flat=True).first()
    if state is None:
        return {}
    return state if state.get("thresholds") == FINGERPRINT else None


def limits() -> Limits | None:
    """The thresholds of the stored counts, or None when they were counted with other THRESHOLDS."""
    state = _state()
    if state is None:
        return None
    return Limits({m: _merged(tuple(v)) for m, v in (state.get("splits") or {}).items() if v})


def current() -> bool:
    """Whether the stored counts use THRESHOLDS (their splits aside)."""
    return limits() is not None


def _mark(splits: dict | None = None) -> None:
    from .models import MetricsState

    value = {"thresholds": FINGERPRINT}
    if splits:
        value["splits"] = splits
    MetricsState.objects.update_or_create(key=STATE_KEY, defaults={"value": value})


def stored_splits() -> dict:
    """{metric: cuts} of the stored counts ({} when they use other THRESHOLDS)."""
    return dict((_state() or {}).get("splits") or {})


def _quantile_cuts(values_sorted: list[float]) -> list[float]:
    """The SPLIT_QUANTILES-quantiles (percentile_disc) of sorted values, as `_cuts` keeps them."""
    n = len(values_sorted)
    if n < SPLIT_MIN_VALUES:
        return []
    return _cuts(values_sorted[max(0, math.ceil(n * i / SPLIT_QUANTILES) - 1)] for i in range(1, SPLIT_QUANTILES))


def _cuts(quantiles) -> list[float]:
    """The distinct finite quantiles that are not THRESHOLDS, sorted."""
    base = set(THRESHOLDS)
    return sorted({float(q) for q in quantiles if math.isfinite(float(q)) and float(q) not in base})


DIMS = ("all", "channel", "agent", "team")


@dataclass(frozen=True)
class Figure:
    model: str  # "fact" (ConversationFact) or "response" (ResponseFact)
    day: str
    value: str
    dims: dict  # dimension -> field


_FRT = {"channel": "frt_kind", "agent": "frt_agent_id", "team": "frt_team_id"}
_RES = {"channel": "origin_kind", "agent": "resolution_agent_id", "team": "resolution_team_id"}
_RT = {"channel": "channel", "agent": "agent_id", "team": "team_id"}
METRICS = {
    "frt": Figure("fact", "frt_day", "frt_seconds", _FRT),
    "frt_bh": Figure("fact", "frt_day", "frt_bh_seconds", _FRT),
    "res": Figure("fact", "resolved_day", "resolution_seconds", _RES),
    "res_bh": Figure("fact", "resolved_day", "resolution_bh_seconds", _RES),
    "rt": Figure("response", "day", "seconds", _RT),
}
# (fact model name, value field) -> metric: what kpis.base.medians asks for
BY_VALUE = {(f.model, f.value): name for name, f in METRICS.items()}


def bucket(value: float, thresholds: tuple[float, ...] = THRESHOLDS) -> int:
    return bisect_right(thresholds, value)


def _model(name: str):
    from .models import ConversationFact, ResponseFact

    return ConversationFact if name == "fact" else ResponseFact


# --------------------------------------------------------------------------- maintenance

def _count(acc: dict, metric: str, day, channel, agent, team, value, sign: int, lim: Limits) -> None:
    b = bisect_right(lim.of(metric), value)
    monday = day - timedelta(days=day.weekday())
    first = block_start(day)
    for dim, key in (("all", ""), ("channel", channel or ""), ("agent", "" if agent is None else str(agent)),
                     ("team", "" if team is None else str(team))):
        for span, start in ((1, day), (7, monday), (BLOCK, first)):
            k = (metric, dim, span, start, key, b)
            acc[k] = acc.get(k, 0) + sign


def block_start(day: date) -> date:
    """The first day of the four-week block that holds `day`."""
    return day - timedelta(days=(day - BLOCK_EPOCH).days % BLOCK)


def spans(sel) -> list[tuple[int, list[date]]]:
    """The selection's period as [(span, first days)] of the stored counts: without a time grouping
    the whole blocks inside it, then whole weeks and days (kpis.base.split_period) around them; with
    one, as split_period (a block may cross its groups)."""
    from .kpis.base import split_period

    blocks: list[date] = []
    if sel.group_by not in _TIME:
        d = block_start(sel.start)
        if d < sel.start:
            d += timedelta(days=BLOCK)
        while d + timedelta(days=BLOCK - 1) <= sel.end:
            blocks.append(d)
            d += timedelta(days=BLOCK)
    if not blocks:
        days, weeks = split_period(sel.start, sel.end, sel.group_by)
        return [(span, dates) for span, dates in ((1, days), (7, weeks)) if dates]
    days, weeks = [], []
    for lo, hi in ((sel.start, blocks[0] - timedelta(days=1)), (blocks[-1] + timedelta(days=BLOCK), sel.end)):
        if lo <= hi:
            d, w = split_period(lo, hi, sel.group_by)
            days += d
            weeks += w
    return [(span, dates) for span, dates in ((1, days), (7, weeks), (BLOCK, blocks)) if dates]


def fact_counts(fact, acc: dict, sign: int = 1, lim: Limits | None = None) -> dict:
    """Add what one ConversationFact (or a row with its fields; `responses` as stored: ISO
    times) contributes to ValueHistogram, times `sign`, to acc {(metric, dim, day, key, bucket): n}.
    `lim`: the stored counts' thresholds (`limits()`; read here when not given; None there: nothing to count)."""
    lim = limits() if lim is None else lim
    if lim is None:
        return acc
    if fact.frt_day is not None and fact.frt_seconds is not None:
        dims = (fact.frt_kind, fact.frt_agent_id, fact.frt_team_id)
        _count(acc, "frt", fact.frt_day, *dims, fact.frt_seconds, sign, lim)
        if fact.frt_bh_seconds is not None:
            _count(acc, "frt_bh", fact.frt_day, *dims, fact.frt_bh_seconds, sign, lim)
    if fact.resolved_day is not None and fact.resolution_seconds is not None:
        dims = (fact.origin_kind, fact.resolution_agent_id, fact.resolution_team_id)
        _count(acc, "res", fact.resolved_day, *dims, fact.resolution_seconds, sign, lim)
        if fact.resolution_bh_seconds is not None:
            _count(acc, "res_bh", fact.resolved_day, *dims, fact.resolution_bh_seconds, sign, lim)
    for at, seconds, kind, agent, team in fact.responses or ():
        at = datetime.fromisoformat(at) if isinstance(at, str) else at
        _count(acc, "rt", local_day(at), kind, agent, team, seconds, sign, lim)
    return acc


def apply(acc: dict) -> None:
    """Additive upsert of the non-zero differences (n = n + excluded.n), in one key order for every writer."""
    from .models import ValueHistogram

    rows = sorted((m, d, span, day.isoformat() if isinstance(day, date) else day, k, b, n)
                  for (m, d, span, day, k, b), n in acc.items() if n)
    if not rows or not current():  # counts of other thresholds: a rebuild is due and replaces them
        return
    table = ValueHistogram._meta.db_table
    cols = "metric, dim, span, day, key, bucket, n"
    tail = f"ON CONFLICT (metric, dim, span, day, key, bucket) DO UPDATE SET n = {table}.n + excluded.n"
    resultcache.bump()
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            from psycopg2.extras import execute_values

            execute_values(cur.cursor, f"INSERT INTO {table} ({cols}) VALUES %s {tail}", rows, page_size=1000)
        else:
            cur.executemany(f"INSERT INTO {table} ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s) {tail}", rows)


def _splits_sql(cur) -> dict:
    """{metric: cuts}: each figure's SPLIT_QUANTILES-quantiles over its stored values (PostgreSQL)."""
    qs = [i / SPLIT_QUANTILES for i in range(1, SPLIT_QUANTILES)]
    out = {}
    for metric, fig in METRICS.items():
        src = _model(fig.model)._meta.db_table
        cur.execute(f"SELECT count(*), CASE WHEN count(*) >= %s THEN percentile_disc(%s::float8[]) "
                    f"WITHIN GROUP (ORDER BY {fig.value}) END FROM {src} "
                    f"WHERE {fig.day} IS NOT NULL AND {fig.value} IS NOT NULL", [SPLIT_MIN_VALUES, qs])
        _n, quantiles = cur.fetchone()
        cuts = _cuts(quantiles or ())
        if cuts:
            out[metric] = cuts
    return out


def _splits_python() -> dict:
    out = {}
    for metric, fig in METRICS.items():
        model = _model(fig.model)
        # (the figures' columns are their models' field names)
        values = sorted(model.objects.filter(**{f"{fig.day}__isnull": False, f"{fig.value}__isnull": False})
                        .values_list(fig.value, flat=True))
        cuts = _quantile_cuts(values)
        if cuts:
            out[metric] = cuts
    return out


def _emptied(cur, table: str):
    """TRUNCATE the table and drop its unique constraints and secondary indexes (a load builds them
    afterwards: far cheaper than maintaining them row by row); returns what adds them back."""
    cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'u'", [table])
    constraints = cur.fetchall()
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = %s AND indexname <> ALL(%s)", [table, [c[0] for c in constraints] or [""]])
    indexes = [r for r in cur.fetchall() if not r[0].endswith("_pkey")]
    cur.execute(f"TRUNCATE {table}")
    for name, _sql in constraints:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _sql in indexes:
        cur.execute(f'DROP INDEX "{name}"')

    def restore():
        for name, sql in constraints:
            cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {sql}')
        for _name, sql in indexes:
            cur.execute(sql)

    return restore


class Values:
    """The values one range of the PostgreSQL full recompute's facts adds to the histograms, in
    columns (its forked workers collect them while folding: `add_fact`, and `add` for the response
    times; the parent counts them all at once, `count_values`, then
    `write_counts`): per metric the local day (ordinal), channel (code into `kinds`), agent and team
    (-1: none) and value of each."""

    def __init__(self):
        from array import array

        self.kinds: dict[str, int] = {}
        self.cols = {m: (array("i"), array("i"), array("q"), array("q"), array("d")) for m in METRICS}

    def add(self, metric: str, day: int, channel, agent, team, value) -> None:
        d, c, a, t, v = self.cols[metric]
        kinds = self.kinds
        channel = channel or ""
        code = kinds.get(channel)
        if code is None:
            code = kinds[channel] = len(kinds)
        d.append(day)
        c.append(code)
        a.append(-1 if agent is None else agent)
        t.append(-1 if team is None else team)
        v.append(value)

    def add_fact(self, b, frt_day: date | None, resolved_day: date | None) -> None:
        """One folded facts.Base with the local days its fact row stores (what `fact_counts` counts)."""
        if frt_day is not None and b.frt_seconds is not None:
            day = frt_day.toordinal()
            self.add("frt", day, b.frt_kind, b.frt_agent_id, b.frt_team_id, float(b.frt_seconds))
            if b.frt_bh_seconds is not None:
                self.add("frt_bh", day, b.frt_kind, b.frt_agent_id, b.frt_team_id, float(b.frt_bh_seconds))
        if resolved_day is not None and b.resolution_seconds is not None:
            day = resolved_day.toordinal()
            dims = (b.origin_kind, b.resolution_agent_id, b.resolution_team_id)
            self.add("res", day, *dims, float(b.resolution_seconds))
            if b.resolution_bh_seconds is not None:
                self.add("res_bh", day, *dims, float(b.resolution_bh_seconds))


def count_values(parts: list[Values]) -> tuple[dict, list[str]]:
    """(splits, COPY texts of the rows) of the values the full recompute's fold collected: the same
    splits as the Python path (`_quantile_cuts`), the same counts as `_count`, counted with numpy,
    the rows in the unique key's order (so building its index finds them sorted). Touches no
    database: the full recompute runs it in a thread beside its next statements."""
    import numpy as np

    kinds = sorted({k for p in parts for k in p.kinds})  # text order: '' first
    columns = {}
    for metric in METRICS:
        cols = []
        for i, dtype in enumerate((np.int32, np.int32, np.int64, np.int64, np.float64)):
            arrays = [np.frombuffer(p.cols[metric][i], dtype=dtype) for p in parts if len(p.cols[metric][i])]
            cols.append(np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype))
        # each part's channel codes -> indexes into the sorted `kinds`
        remapped = [np.array([kinds.index(k) for k in sorted(p.kinds, key=p.kinds.get)], dtype=np.int32)[
            np.frombuffer(p.cols[metric][1], dtype=np.int32)] for p in parts if len(p.cols[metric][1])]
        cols[1] = np.concatenate(remapped) if remapped else np.zeros(0, dtype=np.int32)
        columns[metric] = cols
    splits = {}
    for metric, cols in columns.items():
        cuts = _quantile_cuts(np.sort(cols[4]))
        if cuts:
            splits[metric] = cuts
    lim = Limits({m: _merged(tuple(v)) for m, v in splits.items()})
    epoch = BLOCK_EPOCH.toordinal()
    day_text: dict[int, str] = {}
    texts: list[str] = []
    for metric in sorted(columns):  # the unique key's order: metric, dim, span, day, key, bucket
        day, ch, agent, team, value = columns[metric]
        if not len(day):
            continue
        b = np.searchsorted(np.asarray(lim.of(metric), dtype=np.float64), value, side="right")
        lo = int(day.min()) - BLOCK
        keyed = {"all": (np.zeros(len(day), dtype=np.int64), [""]), "channel": (ch.astype(np.int64), kinds)}
        for dim, ids in (("agent", agent), ("team", team)):
            distinct = np.unique(ids)
            text = ["" if i < 0 else str(i) for i in distinct.tolist()]
            order = sorted(range(len(text)), key=text.__getitem__)
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            keyed[dim] = (rank[np.searchsorted(distinct, ids)], [text[i] for i in order])
        for dim in sorted(keyed):
            key, key_text = keyed[dim]
            key_text = [k.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
                        for k in key_text]  # COPY's text format
            for span, start in ((1, day), (7, day - (day - 1) % 7), (BLOCK, day - (day - epoch) % BLOCK)):
                code = ((start.astype(np.int64) - lo) << 40) | (key << 16) | b
                groups, counts = np.unique(code, return_counts=True)
                starts = ((groups >> 40) + lo).tolist()
                keys = ((groups >> 16) & ((1 << 24) - 1)).tolist()
                buckets = (groups & 0xFFFF).tolist()
                for o in set(starts) - day_text.keys():
                    day_text[o] = date.fromordinal(o).isoformat()
                prefix = f"{metric}\t{dim}\t{span}\t"
                texts.append("".join([f"{prefix}{day_text[o]}\t{key_text[k]}\t{bk}\t{n}\n" for o, k, bk, n in
                                      zip(starts, keys, buckets, counts.tolist())]))
    return splits, texts


def write_counts(splits: dict, texts: list[str]) -> None:
    """Replace the stored counts with `count_values`' rows and record their splits."""
    import io

    from .models import ValueHistogram

    table = ValueHistogram._meta.db_table
    with connection.cursor() as cur:
        restore = _emptied(cur, table)
        for text in texts:
            # size positionally: under DEBUG Django's debug cursor passes *args only
            cur.copy_expert(f"COPY {table} (metric, dim, span, day, key, bucket, n) FROM STDIN", io.StringIO(text),
                            1 << 20)
        restore()
    _mark(splits)
    resultcache.bump()


def rebuild(resplit: bool = False) -> None:
    """Recount the whole table from the facts (the full recompute; migration 0007) and record the
    thresholds; `resplit` (the full recompute): first choose each figure's splits anew from its
    values, else keep the stored ones."""
    from .models import ConversationFact, ResponseFact, ValueHistogram

    table = ValueHistogram._meta.db_table
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            splits = _splits_sql(cur) if resplit else stored_splits()
            lim = Limits({m: _merged(tuple(v)) for m, v in splits.items()})
            restore = _emptied(cur, table)
            for metric, fig in METRICS.items():
                src = _model(fig.model)._meta.db_table
                ch, ag, tm = fig.dims["channel"], fig.dims["agent"], fig.dims["team"]
                # per figure: its values counted per (day, channel, agent, team, bucket) in one scan, those
                # rows summed per cuboid (GROUPING() tells which), the weeks and blocks from the cuboids' days
                # (8 grouping sets over the facts hashed every row 8 times: twice as slow at 1 M)
                cur.execute(f"""
                    WITH f AS (
                        SELECT {fig.day} AS day, {ch} AS ch, {ag} AS ag, {tm} AS tm,
                               width_bucket({fig.value}, %s::float8[]) AS b, count(*) AS c
                        FROM {src} WHERE {fig.day} IS NOT NULL AND {fig.value} IS NOT NULL
                        GROUP BY 1, 2, 3, 4, 5),
                    d AS (
                        SELECT CASE WHEN GROUPING(ch) = 0 THEN 'channel' WHEN GROUPING(ag) = 0 THEN 'agent'
                                    WHEN GROUPING(tm) = 0 THEN 'team' ELSE 'all' END AS dim,
                               day,
                               CASE WHEN GROUPING(ch) = 0 THEN coalesce(ch, '')
                                    WHEN GROUPING(ag) = 0 THEN coalesce(ag::text, '')
                                    WHEN GROUPING(tm) = 0 THEN coalesce(tm::text, '') ELSE '' END AS key,
                               b, sum(c)::bigint AS n
                        FROM f GROUP BY GROUPING SETS ((day, b), (day, ch, b), (day, ag, b), (day, tm, b)))
                    INSERT INTO {table} (metric, dim, span, day, key, bucket, n)
                    SELECT %s, dim, 1, day, key, b, n FROM d
                    UNION ALL
                    SELECT %s, dim, 7, day - (extract(isodow FROM day)::int - 1), key, b, sum(n)::bigint
                    FROM d GROUP BY dim, 4, key, b
                    UNION ALL
                    SELECT %s, dim, {BLOCK}, day - mod(mod(day - %s::date, {BLOCK}) + {BLOCK}, {BLOCK}), key,
                           b, sum(n)::bigint
                    FROM d GROUP BY dim, 4, key, b""",
                            [list(lim.of(metric)), metric, metric, metric, BLOCK_EPOCH])
            restore()
            _mark(splits)
            resultcache.bump()
            return
        cur.execute(f"DELETE FROM {table}")
    splits = _splits_python() if resplit else stored_splits()
    _mark(splits)
    lim = Limits({m: _merged(tuple(v)) for m, v in splits.items()})
    acc: dict = {}
    for row in ConversationFact.objects.values_list(
            "frt_day", "frt_seconds", "frt_bh_seconds", "frt_kind", "frt_agent_id", "frt_team_id",
            "resolved_day", "resolution_seconds", "resolution_bh_seconds", "origin_kind", "resolution_agent_id",
            "resolution_team_id").iterator(chunk_size=5000):
        fact_counts(_Row(*row), acc, 1, lim)
    for day, seconds, channel, agent, team in ResponseFact.objects.values_list(
            "day", "seconds", "channel", "agent_id", "team_id").iterator(chunk_size=5000):
        _count(acc, "rt", day, channel, agent, team, seconds, 1, lim)
    apply(acc)


@dataclass
class _Row:
    frt_day: object
    frt_seconds: object
    frt_bh_seconds: object
    frt_kind: object
    frt_agent_id: object
    frt_team_id: object
    resolved_day: object
    resolution_seconds: object
    resolution_bh_seconds: object
    origin_kind: object
    resolution_agent_id: object
    resolution_team_id: object
    responses: tuple = ()


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def snapshot() -> dict:
    """Non-zero counts {(metric, dim, span, day, key, bucket): n} (tests)."""
    from .models import ValueHistogram

    return {(m, d, sp, str(day), k, b): n for m, d, sp, day, k, b, n in ValueHistogram.objects.exclude(n=0)
            .values_list("metric", "dim", "span", "day", "key", "bucket", "n")}


# --------------------------------------------------------------------------- reads

_TIME = ("day", "week", "month")


def covering_dim(sel) -> tuple[str, str | None] | None:
    """(cuboid, key filter) that answers the selection, or None."""
    filters = {d: v for d, v in (("channel", sel.channel), ("agent", sel.agent_id), ("team", sel.team_id)) if v}
    involved = set(filters)
    if sel.group_by and sel.group_by not in _TIME:
        involved.add(sel.group_by)
    if len(involved) > 1:
        return None
    if not involved:
        return "all", None
    dim = involved.pop()
    value = filters.get(dim)
    return dim, (None if value is None else str(value))


def _in(values: list) -> str:
    return "(" + ", ".join(["%s"] * len(values)) + ")"


def _report_key(sel, dim, g):
    """The report's group key of a histogram key / fact column value."""
    if sel.group_by is None:
        return None
    if sel.group_by in _TIME:
        from .kpis.base import as_date, time_key

        return time_key(as_date(g), sel.group_by)
    if dim == "channel":
        return g
    return int(g) if g not in (None, "") else None


def _span_wheres(sel, metrics: list, dim: str, key_filter) -> list[tuple[str, list]]:
    """(WHERE, params) of the stored counts of the selection, one per span (`spans`)."""
    out = []
    for span, dates in spans(sel):
        where = f"metric IN {_in(metrics)} AND dim = %s AND span = %s AND day IN {_in(dates)}"
        params = [*metrics, dim, span, *dates]
        if key_filter is not None:
            where += " AND key = %s"
            params.append(key_filter)
        out.append((where, params))
    return out


def percentiles_hist(sel, metrics) -> tuple[dict, Limits] | None:
    """({metric: {group key: {bucket: count}}}, the buckets' limits) of the selection; None when
    the cuboids do not cover it."""
    from .models import ValueHistogram

    cover = covering_dim(sel)
    lim = None if cover is None else limits()
    if lim is None:
        return None
    dim, key_filter = cover
    metrics = list(metrics)
    table = ValueHistogram._meta.db_table
    g = "day" if sel.group_by in _TIME else ("key" if sel.group_by else "''")
    parts, params = [], []
    for where, args in _span_wheres(sel, metrics, dim, key_filter):
        params += args
        by = f"metric, {g}, bucket" if sel.group_by else "metric, bucket"
        # ::bigint: SUM of a bigint is numeric, which the driver turns into Decimals (slow)
        sum_n = "SUM(n)::bigint" if connection.vendor == "postgresql" else "SUM(n)"
        parts.append(f"SELECT metric, {g}, bucket, {sum_n} FROM {table} WHERE {where} GROUP BY {by}")
    # {metric: {group: {bucket: n}}}
    hist: dict = {m: defaultdict(lambda: defaultdict(int)) for m in metrics}
    with connection.cursor() as cur:
        cur.execute(" UNION ALL ".join(parts), params)
        rows = cur.fetchall()
    keys: dict = {}
    for metric, k, b, n in rows:
        if n:
            if k in keys:
                report = keys[k]
            else:
                report = keys[k] = _report_key(sel, dim, k)
            hist[metric][report][b] += n
    return hist, lim


def percentiles(sel, metrics, ps=(0.5, 0.9)) -> dict | None:
    """{metric: {group key: (median, p90)}} for the selection, exactly as percentile_cont over
    the facts' values; None when the cuboids do not cover it."""
    cover = covering_dim(sel)
    # read once per selection (its figures' reads share it; the state changes only with a recompute)
    lim = None if cover is None else sel.memo("histogram-limits", limits)
    if lim is None:
        return None
    dim, key_filter = cover
    located = _rank_buckets(sel, list(metrics), dim, key_filter, ps)
    return {m: _order_statistics(sel, m, dim, key_filter, located[m], ps, lim.of(m)) for m in metrics}


def _ranks(total: int, ps) -> set[int]:
    """The ranks percentile_cont interpolates between for each p of `ps` over `total` values."""
    ranks = set()
    for p in ps:
        pos = (total - 1) * p
        ranks.update((math.floor(pos), math.ceil(pos)))
    return ranks


def _time_sql(column: str, group_by: str) -> str:
    """SQL of the report group (a week's Monday, a month's first day) of a date column."""
    pg = connection.vendor == "postgresql"
    if group_by == "week":
        return f"date_trunc('week', {column})::date" if pg else f"date({column}, 'weekday 0', '-6 days')"
    if group_by == "month":
        return f"date_trunc('month', {column})::date" if pg else f"date({column}, 'start of month')"
    return column


def _rank_buckets(sel, metrics: list, dim: str, key_filter, ps) -> dict:
    """{metric: {group key: (count, [(bucket, n, values below the bucket)])}}: per report group its
    count of values and only the buckets that hold a rank percentile_cont interpolates between
    (floor and ceil of (count - 1) p). The database sums the counts of the selection's days, weeks
    and blocks (`spans`) per (metric, group, bucket) and returns them as one row per group (two
    arrays): at 1 M conversations a day grouping's ~35,000 bucket rows became 180 rows, and what
    took the time was turning rows into Python objects. (Ranking the buckets in SQL, with window
    sums, was slower.)"""
    from .models import ValueHistogram

    table = ValueHistogram._meta.db_table
    pg = connection.vendor == "postgresql"
    # per (metric, group) its buckets and their counts as two arrays (SQLite: JSON arrays)
    agg = ("array_agg(bucket), array_agg(n)" if pg else "json_group_array(bucket), json_group_array(n)")
    if sel.group_by == "day":
        # a group is one day row per bucket: no sums, and a range of days keeps the index's order
        # (metric, day, bucket), so the rows are grouped as they are read, without hashing
        where = f"metric IN {_in(metrics)} AND dim = %s AND span = 1 AND day >= %s AND day <= %s AND n <> 0"
        params = [*metrics, dim, sel.start, sel.end]
        if key_filter is not None:
            where += " AND key = %s"
            params.append(key_filter)
        sql = f"SELECT metric, day, {agg} FROM {table} WHERE {where} GROUP BY metric, day"
    else:  # the sums of the days, weeks and blocks per bucket, by hashing
        g = _time_sql("day", sel.group_by) if sel.group_by in _TIME else ("key" if sel.group_by else "''")
        parts, params = [], []
        for where, args in _span_wheres(sel, metrics, dim, key_filter):
            params += args
            parts.append(f"SELECT metric, {g} AS g, bucket, n FROM {table} WHERE {where}")
        sum_n = "SUM(n)::bigint" if pg else "SUM(n)"
        sql = (f"SELECT metric, g, {agg} FROM (SELECT metric, g, bucket, {sum_n} AS n FROM ("
               f"{' UNION ALL '.join(parts)}) u GROUP BY metric, g, bucket) h WHERE n <> 0 GROUP BY metric, g")
    out: dict = {m: {} for m in metrics}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    for metric, k, buckets, counts in rows:
        if not pg:
            buckets, counts = json.loads(buckets), json.loads(counts)
        pairs = sorted(zip(buckets, counts))
        cum = list(accumulate(n for _b, n in pairs))
        total = cum[-1]
        held = []
        for rank in sorted(_ranks(total, ps)):
            i = bisect_right(cum, rank)
            b, n = pairs[i]
            if not held or held[-1][0] != b:
                held.append((b, n, cum[i] - n))
        out[metric][_report_key(sel, dim, k)] = (total, held)
    return out


def bucket_counts(sel, metric: str) -> dict | None:
    """{bucket of THRESHOLDS: count} of a figure over the selection's period and filters (its
    grouping aside), or None when the cuboids do not cover the filters. (A split bucket lies
    within one bucket of THRESHOLDS: it is counted there.)"""
    from dataclasses import replace

    found = percentiles_hist(replace(sel, group_by=None, _cache={}), [metric])
    if found is None:
        return None
    hist, lim = found
    limits_ = lim.of(metric)
    out: dict = defaultdict(int)
    for b, n in hist[metric].get(None, {}).items():
        out[0 if b == 0 else bisect_right(THRESHOLDS, limits_[b - 1])] += n
    return dict(out)


def count_between(counts: dict, lo: float, hi: float | None) -> int:
    """How many counted values v have lo <= v < hi (hi None: no upper limit); lo and hi are thresholds."""
    first = THRESHOLDS.index(lo) + 1
    last = len(THRESHOLDS) if hi is None else THRESHOLDS.index(hi)
    return sum(n for b, n in counts.items() if first <= b <= last)


def _group_sql(sel, dim, fig) -> str | None:
    """The fact-table expression of the report group (None: one group)."""
    if sel.group_by is None:
        return None
    if sel.group_by in _TIME:
        return _time_sql(fig.day, sel.group_by)
    return fig.dims[dim]


SUB = 128  # sub-intervals of a bucket counted in SQL before values are fetched ...
DIRECT = 3000  # ... when the bucket holds more values than this
RANK_IN_DB = 32  # values per rank wanted above which PostgreSQL ranks a bucket's values (`_direct`)


class _Fetch:
    """The rows of one figure for one bucket's query: a WHERE (days, dimension filters) plus value bounds."""

    def __init__(self, cur, table, value, gexpr, where, params, day=None, rest="", rest_params=()):
        self.cur, self.table, self.value, self.gexpr, self.where, self.params = cur, table, value, gexpr, where, params
        self.day, self.rest, self.rest_params = day, rest, list(rest_params)  # rest: the WHERE without the days
        self.by_day = day is not None and gexpr == day

    def bounds(self, lo, hi) -> tuple[str, list]:
        where, params = [self.where], list(self.params)
        if lo is not None:
            where.append(f"{self.value} >= %s")
            params.append(lo)
        if hi is not None:
            where.append(f"{self.value} < %s")
            params.append(hi)
        return " AND ".join(where), params

    def group_bounds(self, group, lo, hi) -> tuple[str, list]:
        """The WHERE of one report group's values in [lo, hi): for group_by=day its day only."""
        where, params = [], []
        if self.by_day:
            where.append(f"{self.day} = %s")
            params.append(group)
        else:
            where.append(self.where)
            params += self.params
            if self.gexpr:
                if group is None:
                    where.append(f"{self.gexpr} IS NULL")
                else:
                    where.append(f"{self.gexpr} = %s")
                    params.append(group)
        if self.by_day and self.rest:
            where.append(self.rest)
            params += self.rest_params
        where += [f"{self.value} >= %s", f"{self.value} < %s"]
        return " AND ".join(where), params + [lo, hi]


def _direct(cur, buckets: list, report) -> dict:
    """{(group, bucket, local rank): value} for buckets [(b, fetch, lo, hi, need, values in the
    groups that need it)]: every value of each bucket, ranked; one statement for all (UNION ALL of
    each bucket's index range scans). PostgreSQL ranks them (row_number per bucket and group) and
    returns only the ranks wanted, when that spares at least RANK_IN_DB rows per rank: the values
    are not turned into Python floats and sorted under the GIL a dashboard's threads share.
    Otherwise (SQLite, small groups) every value is fetched and ranked here."""
    # at 1 M conversations a grouping by day has ~15 values per rank wanted (many small groups) and
    # is quicker ranked here; a card has ~1,000 and a grouping by agent ~65
    pg = connection.vendor == "postgresql" and (
        sum(x[5] for x in buckets) >= RANK_IN_DB * sum(len(r) for x in buckets for r in x[4].values()))
    values: dict = defaultdict(list)
    out = {}
    parts, params, wanted = [], [], ([], [])
    for i, (b, fetch, lo, hi, need, _n) in enumerate(buckets):
        where, args = fetch.bounds(lo, hi)
        parts.append(f"SELECT {i}, {fetch.gexpr or '0'}, {fetch.value} FROM {fetch.table} WHERE {where}")
        params += args
        for r in sorted(set().union(*need.values())):  # (bucket, local rank) pairs: the rows returned
            wanted[0].append(i)
            wanted[1].append(r)
        if i == len(buckets) - 1 or len(parts) >= 200 or len(params) >= 20000:  # SQLite's statement limits
            if pg:
                cur.execute(f"SELECT u.i, u.g, u.v, u.r FROM (SELECT i, g, v, row_number() OVER (PARTITION BY i, g "
                            f"ORDER BY v) - 1 AS r FROM ({' UNION ALL '.join(parts)}) u0 (i, g, v)) u "
                            f"JOIN unnest(%s::int[], %s::int[]) AS w (i, r) ON w.i = u.i AND w.r = u.r",
                            [*params, *wanted])
                for j, g, v, r in cur.fetchall():
                    group = report(g)
                    if r in buckets[j][4].get(group, ()):
                        out[(group, buckets[j][0], r)] = v
            else:
                cur.execute(" UNION ALL ".join(parts), params)
                for j, g, v in cur.fetchall():
                    values[(j, g)].append(v)
            parts, params, wanted = [], [], ([], [])
    for (i, g), vals in values.items():
        vals.sort()
        b, need = buckets[i][0], buckets[i][4]
        group = report(g)
        for r in need.get(group, ()):
            out[(group, b, r)] = vals[r]
    return out


def _refined(fetch: _Fetch, lo, hi, need: dict, report) -> dict:
    """As `_direct`, but PostgreSQL first counts the bucket's values per SUB sub-interval
    (width_bucket over fixed float8 limits) and only the span of sub-intervals holding the
    ranks is fetched: a dense bucket stays cheap."""
    limits = sorted({x for x in (lo + (hi - lo) * i / SUB for i in range(1, SUB)) if lo < x < hi})
    where, params = fetch.bounds(lo, hi)
    g = fetch.gexpr or "0"
    fetch.cur.execute(f"SELECT {g}, width_bucket({fetch.value}, %s::float8[]), count(*) FROM {fetch.table} "
                      f"WHERE {where} GROUP BY 1, 2", [limits, *params])
    counts: dict = defaultdict(dict)
    keys: dict = {}
    for gv, sb, n in fetch.cur.fetchall():
        if gv not in keys:
            keys[gv] = report(gv)
        counts[keys[gv]][sb] = n
    # per group: the span of sub-intervals holding its ranks and how many of its values lie below it;
    # the spans are fetched in one statement (UNION ALL of index range scans)
    parts, args, spans = [], [], {}
    for group, ranks in need.items():
        c = counts.get(group, {})
        cum, first, last = 0, None, None
        todo = sorted(ranks)
        for sb in sorted(c):
            while todo and todo[0] < cum + c[sb]:
                todo.pop(0)
                first = sb if first is None else first
                last = sb
            cum += c[sb]
        slo = lo if first == 0 else limits[first - 1]
        shi = hi if last == len(limits) else limits[last]
        spans[group] = sum(n for sb, n in c.items() if sb < first)
        where, params = fetch.group_bounds(group, slo, shi)
        parts.append(f"SELECT {len(parts)}, {fetch.value} FROM {fetch.table} WHERE {where}")
        args += params
    groups = list(need)
    fetch.cur.execute(" UNION ALL ".join(parts), args)
    values: dict = defaultdict(list)
    for i, v in fetch.cur.fetchall():
        values[groups[i]].append(v)
    out = {}
    for group, vals in values.items():
        vals.sort()
        for r in need[group]:
            out[(group, r)] = vals[r - spans[group]]
    return out


def _probe_days(cur, table: str, fig: Figure, rest: str, rest_params: list, probes: list) -> dict:
    """{(day, bucket, local rank): value} for a grouping by day: a day's values lie in order in
    the figure's index (day, value), so the value of local rank r in a bucket is the (r+1)-th
    entry from the bucket's lower limit: one index descent and r steps per rank wanted, every
    probe in one statement (a lateral subquery per row of the arrays). At 1 M conversations a
    90-day grouping by day asks ~1,800 of them, where fetching or counting the buckets' values
    read ~25,000 rows into Python and counted ~50,000 more in sub-intervals."""
    extra = f" AND {rest}" if rest else ""
    cur.execute(
        f"SELECT w.i, v.x FROM unnest(%s::date[], %s::float8[], %s::int[]) WITH ORDINALITY AS w (day, lo, r, i) "
        f"CROSS JOIN LATERAL (SELECT {fig.value} AS x FROM {table} WHERE {fig.day} = w.day "
        f"AND {fig.value} >= w.lo{extra} ORDER BY {fig.value} OFFSET w.r LIMIT 1) v",
        [[p[0] for p in probes], [float("-inf") if p[2] is None else p[2] for p in probes],
         [p[3] for p in probes], *rest_params])
    return {probes[i - 1][:2] + (probes[i - 1][3],): x for i, x in cur.fetchall()}


def _order_statistics(sel, metric, dim, key_filter, groups: dict, ps, thresholds=THRESHOLDS) -> dict:
    """groups: {group: (count, [(bucket, n, values below the bucket)])} of the buckets holding its ranks."""
    fig = METRICS[metric]
    # per group: the ranks wanted and where they are; per bucket: the groups and local ranks it serves
    plans: dict = {}
    wanted: dict = defaultdict(dict)  # bucket -> {group: set of local ranks}
    in_buckets: dict = defaultdict(int)  # bucket -> values of the groups that need it
    for group, (total, buckets) in groups.items():
        if not total:
            continue
        located = {}
        for rank in _ranks(total, ps):
            for b, n, below in buckets:
                if below <= rank < below + n:
                    located[rank] = (b, rank - below)
                    if group not in wanted[b]:
                        wanted[b][group] = set()
                        in_buckets[b] += n
                    wanted[b][group].add(rank - below)
                    break
        plans[group] = (total, located)
    table = _model(fig.model)._meta.db_table
    gexpr = _group_sql(sel, dim, fig)
    field = fig.dims.get(dim)
    found: dict = {}
    direct: list = []  # buckets whose values are all fetched: in one statement after the loop
    probes: list = []  # grouped by day (PostgreSQL): (day, bucket, bucket's lower limit, local rank)

    def report(g):
        return _report_key(sel, dim, g)

    with connection.cursor() as cur:
        for b, need in sorted(wanted.items()):
            if sel.group_by in _TIME:
                from .kpis.base import time_key

                days = sorted(d for d in _days(sel.start, sel.end) if time_key(d, sel.group_by) in need)
            else:
                days = _days(sel.start, sel.end)
            where, params = [], []
            if key_filter is not None:
                where.append(f"{field} = %s")
                params.append(key_filter if dim == "channel" else int(key_filter))
            elif dim != "all":
                keys = [k for k in need if k not in (None, "")]
                blank = None in need or "" in need
                if dim == "channel":  # a blank channel is "", never NULL
                    keys += [""] if blank else []
                    where.append(f"{field} IN {_in(keys)}")
                else:
                    conds = [f"{field} IN {_in(keys)}"] if keys else []
                    conds += [f"{field} IS NULL"] if blank else []
                    where.append("(" + " OR ".join(conds) + ")")
                params += keys
            lo = thresholds[b - 1] if b > 0 else None
            hi = thresholds[b] if b < len(thresholds) else None
            rest, rest_params = " AND ".join(where), list(params)
            if len(days) <= 400:
                where.insert(0, f"{fig.day} IN {_in(days)}")
                params[:0] = days
            else:
                where.insert(0, f"{fig.day} >= %s AND {fig.day} <= %s")
                params[:0] = [days[0], days[-1]]
            fetch = _Fetch(cur, table, fig.value, gexpr, " AND ".join(where), params, fig.day, rest, rest_params)
            if connection.vendor == "postgresql" and fetch.by_day:
                # the filter without the days (the key filter, if any) is the same for every bucket
                probe_filter = (rest, rest_params)
                for group, ranks in need.items():
                    probes += [(group, b, lo, r) for r in ranks]
                continue
            if connection.vendor == "postgresql" and lo is not None and hi is not None and in_buckets[b] > DIRECT:
                for (group, r), v in _refined(fetch, lo, hi, need, report).items():
                    found[(group, b, r)] = v
            else:
                direct.append((b, fetch, lo, hi, need, in_buckets[b]))
        found.update(_direct(cur, direct, report))
        if probes:
            found.update(_probe_days(cur, table, fig, *probe_filter, probes))
    out = {}
    for group, (total, located) in plans.items():
        res = []
        for p in ps:
            pos = (total - 1) * p
            lo, hi = math.floor(pos), math.ceil(pos)
            vlo, vhi = found[(group, *located[lo])], found[(group, *located[hi])]
            res.append(vlo + (vhi - vlo) * (pos - lo))
        out[group] = tuple(res)
    return out
