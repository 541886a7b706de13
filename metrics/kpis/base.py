"""What every KPI module shares: the selection (period, grouping, filters),
group keys, rollup sums and percentile helpers."""
from __future__ import annotations

import math
import operator
import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Aggregate, F, FloatField, Value
from django.db.models.functions import TruncMonth, TruncWeek

from ..models import ROLLUP_COLUMNS, DailyRollup, ResponseFact, WeeklyRollup

GROUPINGS = ("channel", "agent", "team", "day", "week", "month")
TIME_GROUPINGS = ("day", "week", "month")


@dataclass
class Selection:
    """A period [start, end] of local days (settings.TIME_ZONE), a grouping and filters."""

    start: date
    end: date
    group_by: str | None = None
    channel: str | None = None
    team_id: int | None = None
    agent_id: int | None = None
    # parts a caller does not show and need not be computed: "rt_pct" (response-time median/p90),
    # "bh_pct" (business-hours medians), "p90" (every p90); the figures are then null
    skip: frozenset = frozenset()
    _cache: dict = field(default_factory=dict, repr=False)
    # reads shared with the selections of the same period and filters grouped otherwise (SharedReads)
    _shared: "SharedReads | None" = field(default=None, repr=False, compare=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(settings.TIME_ZONE)

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(0), tzinfo=self.tz)

    @property
    def end_at(self) -> datetime:
        """Exclusive end: local midnight after `end`."""
        return datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=self.tz)

    def previous(self) -> "Selection":
        """The period of the same length just before this one."""
        days = (self.end - self.start).days + 1
        return Selection(self.start - timedelta(days=days), self.start - timedelta(days=1), self.group_by,
                         self.channel, self.team_id, self.agent_id, self.skip)

    def memo(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]


SHARED_GROUPINGS = (None, "channel", "agent", "team")


class SharedReads:
    """Reads that selections of one period and filters, grouped by nothing, channel, agent or team
    (the dashboard's cards and tables), share: each is read once at the finest of those groupings
    (channel, agent and team at once), in the first thread that needs it (the others wait), and
    every selection sums its rows in Python. One scan of the rollups or the invitations instead of four."""

    def __init__(self):
        self._lock = threading.Lock()
        self._locks: dict = {}
        self._rows: dict = {}

    def rows(self, sel: "Selection", name: str, fetch):
        key = (name, sel.start, sel.end, sel.channel, sel.team_id, sel.agent_id)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._rows:
                self._rows[key] = list(fetch())
            return self._rows[key]


def shared_rows(sel: "Selection", name: str, fetch):
    """The fine rows of a shared read, or None when the selection does not share its reads."""
    if sel._shared is None or sel.group_by not in SHARED_GROUPINGS:
        return None
    return sel._shared.rows(sel, name, fetch)


def fine_key(sel: "Selection", row: dict, fields: dict):
    """A fine row's group key in the selection (fields: grouping -> the row's column)."""
    if sel.group_by is None:
        return None
    return row[fields[sel.group_by]]


def time_key(day: date, group_by: str) -> date:
    if group_by == "week":
        return day - timedelta(days=day.weekday())
    if group_by == "month":
        return day.replace(day=1)
    return day


def split_period(start: date, end: date, group_by) -> tuple[list[date], list[date]]:
    """The period as (days read from day rows, Mondays of the whole weeks read from week rows) for
    the tables kept per day and per week (rollups, histograms, survey counts): with group_by=day
    days only, with group_by=month no week across a month's end."""
    days: list[date] = []
    weeks: list[date] = []
    d = start
    while d <= end:
        if group_by == "day":
            days.append(d)
            d += timedelta(days=1)
            continue
        monday = time_key(d, "week")
        sunday = monday + timedelta(days=6)
        if d == monday and sunday <= end and (group_by != "month" or sunday.month == monday.month):
            weeks.append(d)
            d = sunday + timedelta(days=1)
        else:
            days.append(d)
            d += timedelta(days=1)
    return days, weeks


def filter_dims(qs, sel: Selection, *, channel: str, agent: str, team: str):
    if sel.channel:
        qs = qs.filter(**{channel: sel.channel})
    if sel.agent_id:
        qs = qs.filter(**{agent: sel.agent_id})
    if sel.team_id:
        qs = qs.filter(**{team: sel.team_id})
    return qs


_ROLLUP_DIMS = {"channel": "channel", "agent": "agent_id", "team": "team_id"}


def rollup_sets(sel: Selection) -> list[tuple[str, str, list]]:
    """The rollup rows of the selection's period and filters as (table, WHERE, params): DailyRollup
    for the days and WeeklyRollup for the whole weeks (each inside one group of a time grouping)."""
    days, weeks = split_period(sel.start, sel.end, sel.group_by)
    dims, dim_params = [], []
    for column, value in (("channel", sel.channel), ("agent_id", sel.agent_id), ("team_id", sel.team_id)):
        if value:
            dims.append(f" AND {column} = %s")
            dim_params.append(value)
    sets = []
    if days and not weeks:
        sets.append((DailyRollup._meta.db_table, "day >= %s AND day <= %s", [sel.start, sel.end]))
    elif days:
        sets.append((DailyRollup._meta.db_table, f"day IN ({', '.join(['%s'] * len(days))})", list(days)))
    if weeks:
        sets.append((WeeklyRollup._meta.db_table, f"day IN ({', '.join(['%s'] * len(weeks))})", list(weeks)))
    return [(table, where + "".join(dims), params + dim_params) for table, where, params in sets]


def sum_rows(table: str, where: str, params: list, keys: tuple, columns) -> list[tuple]:
    """The rows (*keys, *SUM(column)) of `table` grouped by `keys`, as tuples straight from the
    cursor: no ORM (building and compiling 20 summed expressions per read, and converting every
    value, cost a dashboard more than its rollup queries); sums as bigint (PostgreSQL sums a bigint
    as numeric, which the driver turns into Decimals) and 0 over no rows."""
    cast = "::bigint" if connection.vendor == "postgresql" else ""
    sums = ", ".join(f"coalesce(SUM({c}), 0){cast}" for c in columns)
    sql = f"SELECT {', '.join([*keys, sums])} FROM {table} WHERE {where}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)}"
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def rollups(sel: Selection) -> dict:
    """{group key: {column: sum}} from DailyRollup and WeeklyRollup for the selection."""

    def load():
        sets = rollup_sets(sel)
        width = len(ROLLUP_COLUMNS)
        out: dict = {}

        def add(key, sums):
            acc = out.get(key)
            out[key] = list(sums) if acc is None else list(map(operator.add, acc, sums))

        fine = shared_rows(sel, "rollups", lambda: [
            row for s in sets for row in sum_rows(*s, ("channel", "agent_id", "team_id"), ROLLUP_COLUMNS)])
        if fine is not None:
            at = {"channel": 0, "agent": 1, "team": 2}.get(sel.group_by)
            if sel.group_by is None:
                out[None] = [0] * width
            for row in fine:
                key = None if at is None else row[at]
                add(key if sel.group_by in (None, "channel") else (key or None), row[3:])
        elif sel.group_by is None:
            out[None] = [0] * width
            for s in sets:
                for row in sum_rows(*s, (), ROLLUP_COLUMNS):
                    add(None, row)
        else:
            dim = "day" if sel.group_by in TIME_GROUPINGS else _ROLLUP_DIMS[sel.group_by]
            for s in sets:
                for row in sum_rows(*s, (dim,), ROLLUP_COLUMNS):
                    key = row[0]
                    if sel.group_by in TIME_GROUPINGS:
                        key = time_key(as_date(key), sel.group_by)
                    elif sel.group_by in ("agent", "team"):
                        key = key or None
                    add(key, row[1:])
        return {key: dict(zip(ROLLUP_COLUMNS, acc)) for key, acc in out.items()}

    return sel.memo("rollups", load)


def as_date(v) -> date:
    """A date column's value: a date, or (SQLite without the ORM's converters) its ISO text."""
    return date.fromisoformat(v[:10]) if isinstance(v, str) else v


def ratio(num, den):
    return None if not den else num / den


# --------------------------------------------------------------------------- percentiles

class PercentileCont(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(%(p)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


class MedianP90(Aggregate):
    """[median, p90] by linear interpolation from one sort (PostgreSQL)."""

    function = "percentile_cont"
    template = "%(function)s(ARRAY[0.5, 0.9]::float8[]) WITHIN GROUP (ORDER BY %(expressions)s)"

    @property
    def output_field(self):
        from django.contrib.postgres.fields import ArrayField

        return ArrayField(FloatField())


def int_setting(name: str, default: int) -> int:
    """A Django setting, else the environment variable of that name, else `default`."""
    import os

    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name) or default
    return int(value)


def run_reads(tasks: dict) -> dict:
    """Run independent reads {name: fn}: on PostgreSQL, outside a transaction, in
    METRICS_QUERY_THREADS threads, each in an `analytics()` transaction on a connection of
    its own (closed afterwards); otherwise one after the other in one `analytics()` block.
    (Inside a thread the transaction is open, so nested calls run sequentially.)"""
    threads = int_setting("METRICS_QUERY_THREADS", 3)
    if connection.vendor != "postgresql" or connection.in_atomic_block or threads <= 1 or len(tasks) <= 1:
        with analytics():
            return {name: fn() for name, fn in tasks.items()}

    def isolated(fn):
        try:
            with analytics():
                return fn()
        finally:
            connection.close()

    with executor(threads) as pool:
        futures = {name: pool.submit(isolated, fn) for name, fn in tasks.items()}
        return {name: f.result() for name, f in futures.items()}


def executor(threads: int):
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(threads)


@contextmanager
def analytics():
    """Run the reads of a report in one transaction; on PostgreSQL with JIT off (its compile
    time dominated these aggregates), work_mem for in-memory sorts of the percentiles and no
    parallel workers."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                # the reads already run in METRICS_QUERY_THREADS threads: parallel workers on top only
                # add their start-up and coordination (a cold dashboard: p50 -15 % on 2 cores)
                cur.execute("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; "
                            "SET LOCAL max_parallel_workers_per_gather = 0")
        yield


def percentile(values: list[float], p: float) -> float | None:
    """Linear interpolation, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def group_annotation(sel: Selection, dims: dict):
    """The expression for the group key of a fact query (dims: day/channel/agent/team field names)."""
    g = sel.group_by
    if g is None:
        return Value(0)
    if g == "day":
        return F(dims["day"])
    if g == "week":
        return TruncWeek(dims["day"])
    if g == "month":
        return TruncMonth(dims["day"])
    return F(dims[g])


def _norm_key(sel: Selection, key):
    if sel.group_by is None:
        return None
    if sel.group_by in TIME_GROUPINGS:
        if isinstance(key, datetime):
            key = key.date()
        if isinstance(key, str):
            key = date.fromisoformat(key[:10])
        return key
    if sel.group_by in ("agent", "team"):
        return key or None
    return key


def medians(qs, sel: Selection, dims: dict, *values: str) -> dict:
    """{value field: {group: (median, p90)}} over a fact queryset, one query for all
    `values` (they must be null together, e.g. a figure and its business-hours variant).

    From the value histograms (metrics.histograms) when their cuboids cover the selection,
    otherwise from every value of the period (`all_values_medians`): the same figures."""
    from .. import histograms

    median_only = "p90" in sel.skip
    metrics = [histograms.BY_VALUE.get(("response" if qs.model is ResponseFact else "fact", v)) for v in values]
    if all(metrics) and not qs.query.where:
        found = histograms.percentiles(sel, metrics, (0.5,) if median_only else (0.5, 0.9))
        if found is not None:
            return {v: {k: (p[0], None) if median_only else p for k, p in found[m].items()}
                    for v, m in zip(values, metrics)}
    out = all_values_medians(qs, sel, dims, *values)
    if median_only:
        out = {v: {k: (p[0], None) for k, p in d.items()} for v, d in out.items()}
    return out


def all_values_medians(qs, sel: Selection, dims: dict, *values: str) -> dict:
    """`medians` from every value of the selection: percentile_cont on PostgreSQL, `percentile` elsewhere."""
    qs = qs.filter(**{f"{dims['day']}__gte": sel.start, f"{dims['day']}__lte": sel.end,
                      f"{values[0]}__isnull": False})
    qs = filter_dims(qs, sel, channel=dims["channel"], agent=dims["agent"], team=dims["team"])
    qs = qs.annotate(g=group_annotation(sel, dims))
    out: dict = {v: {} for v in values}
    if connection.vendor == "postgresql":
        aggs = {f"q{i}": MedianP90(v) for i, v in enumerate(values)}
        for row in qs.values("g").annotate(**aggs).order_by():
            key = _norm_key(sel, row["g"])
            for i, v in enumerate(values):
                out[v][key] = tuple(row[f"q{i}"] or (None, None))
        return out
    collected: dict = defaultdict(lambda: [[] for _ in values])
    for row in qs.values_list("g", *values):
        lists = collected[_norm_key(sel, row[0])]
        for i, x in enumerate(row[1:]):
            lists[i].append(x)
    for key, lists in collected.items():
        for v, vals in zip(values, lists):
            out[v][key] = (percentile(vals, 0.5), percentile(vals, 0.9))
    return out


def time_stats(count: int, sum_ms: int, pct: tuple | None) -> dict:
    median, p90 = pct if pct else (None, None)
    return {"count": count, "mean": (sum_ms / count / 1000.0) if count else None,
            "median": median if count else None, "p90": p90 if count else None}
