"""metrics.histograms: medians and p90 read through the value histograms equal percentile_cont
(PostgreSQL) / kpis.base.percentile (elsewhere) over every value, on data with ties, values on
the bucket thresholds, zeros, negative values, groups of one value and empty periods, for every
grouping and filter; incremental counting equals the full rebuild."""
from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone as dt_tz

import pytest

from metrics import histograms
from metrics.kpis import first_response_time, resolution_time, response_time
from metrics.kpis.base import GROUPINGS, Selection, all_values_medians, medians, percentile
from metrics.models import ConversationFact, ResponseFact

pytestmark = pytest.mark.django_db

DAY0 = date(2026, 3, 2)
T = histograms.THRESHOLDS
POOL = [0.0, 0.0, 1.0, 59.0, 60.0, 300.0, 300.0, 900.0, 86400.0, T[80], T[80], T[81], T[120], 0.5, 12.25,
        299.999999, 300.000001, 1234.567891, 7200.0, 1e6 + 0.25, -3.0]
AGENTS = [11, 12, 13, None]
TEAMS = [21, 22, None]
KINDS = ["email", "chat", ""]


def _value(rng):
    return rng.choice(POOL) if rng.random() < 0.5 else round(rng.lognormvariate(6, 2), 6)


def _seed(rng, n=160):
    facts, responses = [], []
    for cid in range(1, n + 1):
        day = DAY0 + timedelta(days=rng.randrange(0, 20))
        at = datetime.combine(day, time(12), tzinfo=dt_tz.utc)
        f = ConversationFact(conversation_id=cid, origin_kind=rng.choice(KINDS))
        if rng.random() < 0.8:
            f.frt_day, f.frt_at, f.frt_seconds = day, at, _value(rng)
            f.frt_bh_seconds = _value(rng) if rng.random() < 0.9 else f.frt_seconds
            f.frt_kind, f.frt_agent_id, f.frt_team_id = rng.choice(KINDS), rng.choice(AGENTS), rng.choice(TEAMS)
        if rng.random() < 0.7:
            rday = day + timedelta(days=rng.randrange(0, 3))
            f.resolved_day, f.resolved_at = rday, datetime.combine(rday, time(15), tzinfo=dt_tz.utc)
            f.resolution_seconds, f.resolution_bh_seconds = _value(rng), _value(rng)
            f.resolution_agent_id, f.resolution_team_id = rng.choice(AGENTS), rng.choice(TEAMS)
        rows = []
        for k in range(rng.randrange(0, 4)):
            rat = at + timedelta(hours=7 * k)
            rows.append([rat.isoformat(), _value(rng), rng.choice(KINDS), rng.choice(AGENTS), rng.choice(TEAMS)])
            responses.append(ResponseFact(conversation_id=cid, at=rat, day=rat.date(), seconds=rows[-1][1],
                                          channel=rows[-1][2], agent_id=rows[-1][3], team_id=rows[-1][4]))
        f.responses = rows
        facts.append(f)
    # one value alone on its day and agent
    facts.append(ConversationFact(conversation_id=n + 1, frt_day=DAY0 + timedelta(days=25), frt_seconds=42.5,
                                  frt_bh_seconds=42.5, frt_kind="sms", frt_agent_id=99, frt_team_id=98,
                                  responses=[]))
    # one before the four-week blocks' epoch (2001-01-01): its block starts on 2000-12-04
    old, old_at = date(2000, 12, 30), datetime(2000, 12, 30, 12, tzinfo=dt_tz.utc)
    facts.append(ConversationFact(conversation_id=n + 2, frt_day=old, frt_at=old_at, frt_seconds=61.0,
                                  frt_bh_seconds=61.0, frt_kind="email", frt_agent_id=11, frt_team_id=21,
                                  responses=[[old_at.isoformat(), 61.0, "email", 11, 21]]))
    responses.append(ResponseFact(conversation_id=n + 2, at=old_at, day=old, seconds=61.0, channel="email",
                                  agent_id=11, team_id=21))
    ConversationFact.objects.bulk_create(facts)
    ResponseFact.objects.bulk_create(responses)
    return facts


def _figures(result):
    """PostgreSQL's aggregate without a group gives one row of nulls over nothing: no figure."""
    return {v: {k: p for k, p in d.items() if p != (None, None)} for v, d in result.items()}


def _selections():
    out = []
    for start, end in ((DAY0, DAY0 + timedelta(days=30)), (DAY0 + timedelta(days=3), DAY0 + timedelta(days=9)),
                       (DAY0 + timedelta(days=25), DAY0 + timedelta(days=25)),
                       (DAY0 - timedelta(days=30), DAY0 + timedelta(days=50)),  # whole four-week blocks
                       (DAY0 - timedelta(days=9), DAY0 + timedelta(days=19)),
                       (DAY0 - timedelta(days=40), DAY0 - timedelta(days=1))):  # the last: nothing in it
        for group_by in (None, *GROUPINGS):
            for filters in ({}, {"channel": "email"}, {"channel": "sms"}, {"agent_id": 12}, {"team_id": 21},
                            {"channel": "chat", "agent_id": 11}):
                out.append(Selection(start, end, group_by, **filters))
    return out


@pytest.mark.parametrize("seed,direct,rank_in_db", [(1, None, None), (2, None, None), (1, 0, None),
                                                    (1, None, 0), (2, None, 10 ** 9)])
def test_histogram_percentiles_equal_all_values(seed, direct, rank_in_db, monkeypatch):
    """direct=0: every bounded bucket is ranked by the refined path (PostgreSQL: sub-interval counts first);
    rank_in_db=0: PostgreSQL ranks every directly read bucket (row_number), 10**9: none (Python ranks them)."""
    if direct is not None:
        monkeypatch.setattr(histograms, "DIRECT", direct)
    if rank_in_db is not None:
        monkeypatch.setattr(histograms, "RANK_IN_DB", rank_in_db)
    facts = _seed(random.Random(seed))
    # counted incrementally (what the engine applies) == the full rebuild
    acc: dict = {}
    for f in facts:
        histograms.fact_counts(f, acc)
    histograms.apply(acc)
    incremental = histograms.snapshot()
    histograms.rebuild()
    assert histograms.snapshot() == incremental and incremental
    _assert_reads_equal_all_values()


def _assert_reads_equal_all_values():
    covered = 0
    for sel in _selections():
        for mod, values in ((first_response_time, ("frt_seconds", "frt_bh_seconds")),
                            (resolution_time, ("resolution_seconds", "resolution_bh_seconds")),
                            (response_time, ("seconds",))):
            model = ResponseFact if mod is response_time else ConversationFact
            got = _figures(medians(model.objects.all(), sel, mod.DIMS, *values))
            want = _figures(all_values_medians(model.objects.all(), sel, mod.DIMS, *values))
            assert got == want, (sel, values)
            if histograms.covering_dim(sel) is not None:
                covered += 1
        assert first_response_time.distribution(sel) == first_response_time.distribution_all_values(sel), sel
    assert covered  # the histogram path was taken (and the fallback for channel+agent)


def _crowded(rng, n, first_id):
    """Facts whose values crowd like the bench's resolution times (a day plus a heavy tail), with
    some ties and some values equal to a given set of cuts (added later)."""
    facts = []
    for cid in range(first_id, first_id + n):
        day = DAY0 + timedelta(days=rng.randrange(0, 20))
        at = datetime.combine(day, time(12), tzinfo=dt_tz.utc)
        v = round(108000 + rng.expovariate(1 / 14400), 6) if rng.random() < 0.6 else (
            _value(rng) if rng.random() < 0.3 else round(rng.lognormvariate(5.5, 1.2), 6))
        facts.append(ConversationFact(
            conversation_id=cid, origin_kind=rng.choice(KINDS), frt_day=day, frt_at=at, frt_seconds=v,
            frt_bh_seconds=v, frt_kind=rng.choice(KINDS), frt_agent_id=rng.choice(AGENTS),
            frt_team_id=rng.choice(TEAMS), resolved_day=day, resolved_at=at, resolution_seconds=v + 5,
            resolution_bh_seconds=v, resolution_agent_id=rng.choice(AGENTS), resolution_team_id=rng.choice(TEAMS),
            responses=[]))
    return facts


def test_split_buckets(monkeypatch):
    """Where values crowd, the full recompute's splits (quantiles added as thresholds) spread
    them over more buckets; reads stay exact, incremental counting uses the stored splits, and
    a rebuild without resplit keeps them. On PostgreSQL the SQL cuts equal the Python ones."""
    from django.db import connection

    from metrics.models import MetricsState

    monkeypatch.setattr(histograms, "SPLIT_MIN_VALUES", 100)
    monkeypatch.setattr(histograms, "SPLIT_QUANTILES", 20)
    rng = random.Random(7)
    ConversationFact.objects.bulk_create(_crowded(rng, 300, 1))
    ConversationFact.objects.bulk_create(
        [ConversationFact(conversation_id=1000 + i, frt_day=DAY0, frt_seconds=float(i), frt_bh_seconds=float(i),
                          responses=[]) for i in range(5)])
    histograms.rebuild()
    plain = histograms.snapshot()
    histograms.rebuild(resplit=True)
    splits = MetricsState.objects.get(key="histograms").value["splits"]
    assert set(splits) == {"frt", "frt_bh", "res", "res_bh"}  # 305, 300, 300, 300 values; no responses
    for metric, cuts in splits.items():
        assert cuts == sorted(set(cuts)) and not set(cuts) & set(T) and 10 <= len(cuts) <= 19, metric
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            assert histograms._splits_sql(cur) == histograms._splits_python() == splits
    # the crowded bucket of the plain thresholds is spread out
    lim = histograms.limits()
    dense = histograms.bucket(108000.0 + 3000)
    in_dense = sum(n for (m, d, sp, _day, _k, b), n in plain.items() if (m, d, sp, b) == ("frt", "all", 1, dense))
    split_of = {histograms.bucket(108000.0 + 3000, lim.of("frt")), histograms.bucket(108000.0 + 100, lim.of("frt")),
                histograms.bucket(108000.0 + 5000, lim.of("frt"))}
    assert in_dense > 40 and len(split_of) == 3
    _assert_reads_equal_all_values()
    # incremental counting (values on the cuts included) == a rebuild that keeps the splits
    more = _crowded(random.Random(8), 80, 2000)
    for f, cut in zip(more, splits["frt"]):
        f.frt_seconds = cut
    ConversationFact.objects.bulk_create(more)
    acc: dict = {}
    for f in more:
        histograms.fact_counts(f, acc, 1, histograms.limits())
    histograms.apply(acc)
    incremental = histograms.snapshot()
    histograms.rebuild()
    assert MetricsState.objects.get(key="histograms").value["splits"] == splits
    assert histograms.snapshot() == incremental
    _assert_reads_equal_all_values()


def test_reference_is_percentile_cont_on_known_values():
    """Hand-checked: ties and a value on a threshold, one group of a single value."""
    day = DAY0
    vals = [300.0, 300.0, 0.0, 10.5, 900.0]
    ConversationFact.objects.bulk_create(
        [ConversationFact(conversation_id=i + 1, frt_day=day, frt_seconds=v, frt_bh_seconds=v, frt_kind="chat",
                          frt_agent_id=1 if i < 4 else 2, responses=[]) for i, v in enumerate(vals)])
    histograms.rebuild()
    sel = Selection(day, day)
    got = histograms.percentiles(sel, ["frt"])["frt"]
    assert got == {None: (300.0, percentile(vals, 0.9))} and got[None][1] == 300.0 + 600.0 * 0.6
    by_agent = histograms.percentiles(Selection(day, day, "agent"), ["frt"])["frt"]
    assert by_agent == {1: (155.25, 300.0), 2: (900.0, 900.0)}
    assert histograms.percentiles(Selection(day, day, "agent", channel="chat"), ["frt"]) is None
    assert histograms.percentiles(Selection(day - timedelta(days=9), day - timedelta(days=1)), ["frt"]) == {"frt": {}}


def test_bucket_is_width_bucket():
    from django.db import connection

    assert histograms.bucket(-1.0) == 0 and histograms.bucket(0.0) == 1 and histograms.bucket(T[-1]) == len(T)
    assert histograms.bucket(300.0) == T.index(300.0) + 1 and histograms.bucket(299.9999) == T.index(300.0)
    if connection.vendor == "postgresql":
        probes = [-1.0, 0.0, 0.5, 300.0, 299.999999, T[100], T[100] - 1e-9, T[-1], T[-1] * 2]
        with connection.cursor() as cur:
            cur.execute("SELECT width_bucket(v, %s::float8[]) FROM unnest(%s::float8[]) v", [list(T), probes])
            assert [r[0] for r in cur.fetchall()] == [histograms.bucket(v) for v in probes]


@pytest.mark.parametrize("group_by,filters", [(None, {}), ("agent", {}), ("agent", {"channel": "chat"})])
def test_median_only_when_p90_is_skipped(group_by, filters):
    """The dashboard's cards and trend show medians only: skip={"p90"} gives the same medians, p90 null."""
    from dataclasses import replace

    _seed(random.Random(3), n=60)
    histograms.rebuild()
    sel = Selection(DAY0, DAY0 + timedelta(days=30), group_by, **filters)
    full = _figures(medians(ConversationFact.objects.all(), sel, first_response_time.DIMS, "frt_seconds"))
    only = medians(ConversationFact.objects.all(), replace(sel, skip=frozenset({"p90"}), _cache={}),
                   first_response_time.DIMS, "frt_seconds")
    assert full["frt_seconds"] and only == {"frt_seconds": {k: (p[0], None) for k, p in full["frt_seconds"].items()}}


def test_counts_of_other_thresholds_are_never_read():
    """A stored fingerprint of other THRESHOLDS (an upgrade that changed them, before its recount):
    reads compute from all values, the engine's deltas are not added to the old counts, and a
    rebuild recounts and records the current thresholds."""
    from metrics.models import MetricsState, ValueHistogram

    facts = _seed(random.Random(5))
    histograms.rebuild()
    assert MetricsState.objects.get(key="histograms").value == {"thresholds": histograms.FINGERPRINT}
    sel = Selection(DAY0, DAY0 + timedelta(days=30), "agent")
    assert histograms.percentiles(sel, ["frt"]) is not None
    MetricsState.objects.filter(key="histograms").update(value={"thresholds": "older"})
    assert not histograms.current()
    sel = Selection(DAY0, DAY0 + timedelta(days=30), "agent")  # a new read (a selection memoizes the state)
    assert histograms.percentiles(sel, ["frt"]) is None
    assert histograms.bucket_counts(sel, "frt") is None
    want = _figures(all_values_medians(ConversationFact.objects.all(), sel, first_response_time.DIMS, "frt_seconds"))
    assert _figures(medians(ConversationFact.objects.all(), sel, first_response_time.DIMS, "frt_seconds")) == want
    before = histograms.snapshot()
    histograms.apply(histograms.fact_counts(facts[0], {}))
    assert histograms.snapshot() == before
    ValueHistogram.objects.all().delete()
    histograms.rebuild()
    assert histograms.current() and histograms.snapshot() == before


@pytest.mark.parametrize("group_by", [None, *GROUPINGS])
def test_spans_cover_the_period_once(group_by):
    """The stored counts a read sums (days, weeks, four-week blocks) cover each day of the period
    exactly once; blocks start on their grid and only serve selections without a time grouping;
    a week never serves a day grouping nor crosses a month's end for a month grouping."""
    rng = random.Random(3)
    for _ in range(300):
        start = DAY0 + timedelta(days=rng.randrange(-60, 60))
        end = start + timedelta(days=rng.choice([0, 3, 27, 28, 29, 55, 56, 89, 120, rng.randrange(0, 200)]))
        covered = []
        spans = dict(histograms.spans(Selection(start, end, group_by)))
        for span, firsts in spans.items():
            for first in firsts:
                days = [first + timedelta(days=i) for i in range(span)]
                covered += days
                if span == histograms.BLOCK:
                    assert histograms.block_start(first) == first and first.weekday() == 0
                if span == 7:
                    assert first.weekday() == 0 and group_by != "day"
                    assert group_by != "month" or days[0].month == days[-1].month
        assert sorted(covered) == [start + timedelta(days=i) for i in range((end - start).days + 1)]
        if group_by in ("day", "week", "month"):
            assert histograms.BLOCK not in spans
        elif (end - start).days >= 2 * histograms.BLOCK - 1:
            assert spans[histograms.BLOCK]
