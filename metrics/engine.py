"""The KPI engine: folds ConversationEvents into facts and daily rollups.

Incremental path: `events_recorded` marks the touched conversations dirty (one
row each, deduplicated) and schedules ONE debounced flush task; the flush
recomputes those conversations' facts and applies the difference of their
rollup contributions with an additive upsert. `periodic()` flushes whatever a
lost task left behind and finalises FCR verdicts whose window has closed.
`recompute_all()` rebuilds everything from the event log; the result equals
the incremental one (tests/metrics/test_property.py).
"""
from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationEvent, EventKind

from . import facts as F
from . import customer_links, histograms, link_rollup, resultcache, survey_rollup
from .businesshours import local_day, schedules as load_schedules
from .kpis.base import time_key
from .models import (
    ROLLUP_COLUMNS,
    ConversationFact,
    DailyRollup,
    DirtyConversation,
    ResponseFact,
    SlaPolicy,
    ValueHistogram,
    WeeklyRollup,
)

log = logging.getLogger(__name__)

RELEVANT_KINDS = [EventKind.CREATED, EventKind.MESSAGE_IN, EventKind.MESSAGE_OUT, EventKind.ASSIGNED,
                  EventKind.TEAM_CHANGED, EventKind.RESOLVED, EventKind.REOPENED]
FLUSH_LOCK = "metrics:flush-scheduled"
_suspended = {"depth": 0}


class suspended:
    """Within this block events are only marked dirty, never flushed (bulk imports flush once at the end)."""

    def __enter__(self):
        _suspended["depth"] += 1

    def __exit__(self, *exc):
        _suspended["depth"] -= 1


# --------------------------------------------------------------------------- incremental entry points

def events_recorded(event_ids: list[int]) -> None:
    """Called after commit for new events: mark their conversations dirty, schedule one flush."""
    if not event_ids:
        return
    rows = ConversationEvent.objects.filter(pk__in=event_ids).values_list("conversation_id", "kind", "data")
    ids = set()
    for conv_id, kind, data in rows:
        ids.add(conv_id)
        if kind == EventKind.CONVERSATIONS_MERGED and isinstance(data, dict) and data.get("merged"):
            ids.add(int(data["merged"]))  # the merged-away conversation's fact must be withdrawn
    mark_dirty(ids)
    if _suspended["depth"]:
        return
    schedule_flush()


def mark_dirty(conversation_ids) -> None:
    now = timezone.now()
    DirtyConversation.objects.bulk_create(
        [DirtyConversation(conversation_id=i, marked_at=now) for i in conversation_ids], ignore_conflicts=True)


FLUSH_COUNTDOWN = 1.0  # seconds from the first dirty mark to the flush task that reads it
FLUSH_MARGIN = 0.25  # seconds: a known flush due later than now + this reads a mark committed now
_flush_known = {"due": 0.0}  # this process: when the last flush it saw scheduled is due (time.time())
_clock = time.time


def schedule_flush() -> None:
    """Debounced: at most one pending flush task (FLUSH_LOCK, whose value is
    when that task is due); periodic() catches anything missed. A process
    that has seen a flush due at T takes no cache round trip for marks
    already committed before T - FLUSH_MARGIN: that flush reads them (an
    ingest called this for every message, one Redis round trip each)."""
    from helpdesk.celery import app

    from . import tasks

    if app.conf.task_always_eager:
        flush()
        return
    now = _clock()
    if now < _flush_known["due"] - FLUSH_MARGIN and not connection.in_atomic_block:
        return
    due = now + FLUSH_COUNTDOWN
    added, current = _claim(FLUSH_LOCK, int(due * 1000), timeout=5)
    if added:
        _flush_known["due"] = due
        transaction.on_commit(lambda: tasks.flush.apply_async(countdown=FLUSH_COUNTDOWN))
    elif current is not None:
        _flush_known["due"] = current / 1000


def _claim(key: str, value: int, timeout: int) -> tuple[bool, int | None]:
    """cache.add(key, value) that also returns the value already there (an
    int, or None when unknown): one round trip on Redis (helpdesk.cache)."""
    add_or_get = getattr(cache, "add_or_get", None)
    if add_or_get is not None:
        added, current = add_or_get(key, value, timeout)
        try:
            return added, None if added else int(current)
        except (TypeError, ValueError):
            return added, None
    return cache.add(key, value, timeout=timeout), None


ENGINE_LOCK = 7_240_011  # pg_advisory_xact_lock key: one writer of facts and rollups at a time


def _serialize() -> None:
    """Two flushes applying deltas for the same conversation at once would count it twice:
    on PostgreSQL, writers of facts/rollups take one transaction-scoped advisory lock
    (SQLite serializes writers by itself)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [ENGINE_LOCK])


def flush(batch: int = 2000) -> int:
    """Recompute every dirty conversation. Returns how many were processed."""
    done = 0
    while True:
        with transaction.atomic():
            _serialize()
            ids = list(DirtyConversation.objects.order_by("marked_at").values_list("conversation_id", flat=True)[:batch])
            if not ids:
                break
            DirtyConversation.objects.filter(conversation_id__in=ids).delete()
            recompute_conversations(ids)
        done += len(ids)
    cache.delete(FLUSH_LOCK)
    return done


def periodic() -> None:
    """Every 60 s: flush leftovers and finalise FCR verdicts whose window closed."""
    now = timezone.now()
    due = list(ConversationFact.objects.filter(fcr_final=False, fcr_window_end__lte=now)
               .values_list("conversation_id", flat=True)[:5000])
    if due:
        mark_dirty(due)
    flush()


# --------------------------------------------------------------------------- recomputation

_DATA_KEYS = ("channel", "automated", "from", "to", "assignee")


def _load_events(ids=None, id_range=None) -> dict[int, list[F.Ev]]:
    """Relevant events of the given conversations (a list of ids or an inclusive id range).

    Raw SQL that extracts only the JSON keys the engine reads: decoding every
    event's JSON in Python dominated the full recompute."""
    out: dict[int, list[F.Ev]] = defaultdict(list)
    table = ConversationEvent._meta.db_table
    pg = connection.vendor == "postgresql"
    if pg:
        keys = ", ".join(f"data->>'{k}'" for k in _DATA_KEYS)
    else:
        keys = ", ".join(f"json_extract(data, '$.{k}')" for k in _DATA_KEYS)
    kinds = [str(k) for k in RELEVANT_KINDS]
    params: list = []
    if id_range is not None:
        where = "conversation_id BETWEEN %s AND %s"
        params += list(id_range)
    else:
        ids = list(ids)
        if not ids:
            return out
        if pg:
            where = "conversation_id = ANY(%s)"
            params.append(ids)
        else:
            where = f"conversation_id IN ({', '.join(['%s'] * len(ids))})"
            params += ids
    kind_in = ", ".join(["%s"] * len(kinds))
    sql = (f"SELECT id, conversation_id, kind, at, actor_type, actor_user_id, {keys} FROM {table} "
           f"WHERE {where} AND kind IN ({kind_in})")
    with connection.cursor() as cur:
        cur.execute(sql, params + kinds)
        for eid, cid, kind, at, actor_type, actor_id, channel, automated, frm, to, assignee in cur.fetchall():
            if not pg and isinstance(at, str):
                at = datetime.fromisoformat(at)
            if at.tzinfo is None:
                at = at.replace(tzinfo=dt_timezone.utc)
            data = {"channel": channel or "", "automated": automated in (True, 1, "true", "1"),
                    "from": _int(frm), "to": _int(to), "assignee": _int(assignee)}
            out[cid].append(F.Ev(eid, kind, at, actor_type, actor_id, data))
    return out


def _int(value):
    if value in (None, "", "null"):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _context():
    return load_schedules(), {p.priority: p for p in SlaPolicy.objects.filter(active=True)}


def _bases(ids, context, id_range=None) -> list[F.Base]:
    schedules, policies = context
    qs = (Conversation.objects.filter(pk__gte=id_range[0], pk__lte=id_range[1]) if id_range
          else Conversation.objects.filter(pk__in=ids))
    convs = {c[0]: F.ConvInfo(*c) for c in qs.values_list("id", "customer_id", "team_id", "priority")}
    events = _load_events(id_range=id_range) if id_range else _load_events(list(convs))
    return [F.build_base(info, events.get(cid, []), schedules, policies) for cid, info in convs.items()]


def _to_fact(base: F.Base) -> ConversationFact:
    return ConversationFact(
        conversation_id=base.conversation_id, customer_id=base.customer_id, origin_kind=base.origin_kind,
        started_at=base.started_at, created_day=local_day(base.started_at) if base.started_at else None,
        outbound_first=base.outbound_first, first_inbound_at=base.first_inbound_at, frt_at=base.frt_at,
        frt_day=local_day(base.frt_at) if base.frt_at else None, frt_seconds=base.frt_seconds,
        frt_bh_seconds=base.frt_bh_seconds, frt_kind=base.frt_kind, frt_agent_id=base.frt_agent_id,
        frt_team_id=base.frt_team_id, awaiting_since=base.awaiting_since, resolved_at=base.resolved_at,
        resolved_day=local_day(base.resolved_at) if base.resolved_at else None,
        resolution_seconds=base.resolution_seconds, resolution_bh_seconds=base.resolution_bh_seconds,
        resolution_agent_id=base.resolution_agent_id, resolution_team_id=base.resolution_team_id,
        reopen_count=base.reopen_count, public_replies=base.public_replies, contacts=base.contacts,
        switches=base.switches, sla_frt_met=base.sla_frt_met, sla_resolution_met=base.sla_resolution_met,
        initial_team_id=base.initial_team_id,
        responses=[[a.isoformat(), s, k, ag, t] for a, s, k, ag, t in base.responses],
        reopens=[[a.isoformat(), ag, t] for a, ag, t in base.reopens],
        computed_at=timezone.now(),
    )


class _FactView:
    """Adapter so facts.contributions can read a ConversationFact row."""

    def __init__(self, fact: ConversationFact, base: F.Base | None = None):
        self.f = fact
        if base is not None:  # the datetimes are at hand: no need to parse the stored ISO strings
            self.reopens, self.responses = base.reopens, base.responses
            return
        self.reopens = [(datetime.fromisoformat(a), ag, t) for a, ag, t in fact.reopens]
        self.responses = [(datetime.fromisoformat(a), s, k, ag, t) for a, s, k, ag, t in fact.responses]

    def __getattr__(self, name):
        return getattr(self.f, name)


def _finish(fact: ConversationFact, other_starts: list[datetime], now: datetime, base=None) -> dict:
    """Set the cross-conversation and time-dependent fields; return the new contributions."""
    fcr, final, repeat, end = F.fcr_verdict(fact, other_starts, now)
    fact.fcr, fact.fcr_final, fact.repeat_contact, fact.fcr_window_end = fcr, final, repeat, end
    if fact.resolved_at is not None:
        fact.one_touch = fact.public_replies == 1 and fact.reopen_count == 0
        fact.sla_met = (None if fact.sla_frt_met is None
                        else bool(fact.sla_frt_met and fact.sla_resolution_met))
    else:
        fact.one_touch = None
        fact.sla_met = None
    if fact.fcr_final or fact.fcr_window_end is None:
        fact.fcr_window_end = None if fact.fcr_final else fact.fcr_window_end
    fact.contrib = F.contributions(_FactView(fact, base))
    return fact.contrib


def _starts_by_customer(customer_ids) -> dict[int, list[tuple[int, datetime]]]:
    out: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    rows = (ConversationFact.objects.filter(customer_id__in=customer_ids, outbound_first=False,
                                            started_at__isnull=False)
            .values_list("customer_id", "conversation_id", "started_at"))
    for cust, cid, started in rows:
        out[cust].append((cid, started))
    return out


def recompute_conversations(ids, now: datetime | None = None) -> None:
    """Recompute the facts of `ids` (and of the same customers' conversations whose
    FCR/repeat verdict they may change) and apply the rollup difference. Call in a transaction."""
    now = now or timezone.now()
    ids = set(ids)
    context = _context()
    old = {f.conversation_id: f for f in ConversationFact.objects.filter(conversation_id__in=ids)}
    bases = _bases(ids, context)
    new = {b.conversation_id: _to_fact(b) for b in bases}
    # value histograms: a pure function of the base facts (neighbours only change verdicts)
    counts: dict = {}
    lim = histograms.limits()  # read under the engine lock: the full recompute (new splits) holds it too
    if lim is not None:  # None: counts of other thresholds, a recompute replaces them
        for fact in old.values():
            histograms.fact_counts(fact, counts, -1, lim)
        for fact in new.values():
            histograms.fact_counts(fact, counts, 1, lim)
    # FCR neighbours: the same customers' resolved conversations within FCR_WINDOW before these start
    customers = {f.customer_id for f in new.values() if f.customer_id} | {
        f.customer_id for f in old.values() if f.customer_id}
    starts = [f.started_at for f in new.values() if f.started_at] + [f.started_at for f in old.values() if f.started_at]
    if customers and starts:
        since = min(starts) - timedelta(seconds=settings.FCR_WINDOW)
        neighbour_ids = set(ConversationFact.objects.filter(customer_id__in=customers, resolved_at__gte=since)
                            .exclude(conversation_id__in=ids).values_list("conversation_id", flat=True))
    else:
        neighbour_ids = set()
    neighbours = {f.conversation_id: f for f in ConversationFact.objects.filter(conversation_id__in=neighbour_ids)}
    old.update({cid: _clone(f) for cid, f in neighbours.items()})

    # write the new base facts first so the customer's starts are current
    ConversationFact.objects.filter(conversation_id__in=ids).delete()
    ConversationFact.objects.bulk_create(new.values())
    by_customer = _starts_by_customer(customers)
    changed = {**neighbours, **new}
    delta: dict[str, dict[str, int]] = {}
    for cid, fact in changed.items():
        others = [s for c, s in by_customer.get(fact.customer_id, []) if c != cid]
        _finish(fact, others, now)
        _add(delta, fact.contrib, 1)
        if cid in old:
            _add(delta, old[cid].contrib, -1)
    for cid, fact in old.items():
        if cid not in changed:  # conversation gone (merged away, deleted)
            _add(delta, fact.contrib, -1)
    _save_finished(list(changed.values()))
    ResponseFact.objects.filter(conversation_id__in=ids).delete()
    ResponseFact.objects.bulk_create(_response_rows(new.values()))
    apply_delta(delta)
    histograms.apply(counts)
    # the rows of `ids` were deleted and written anew without links: their old links leave the rollup
    customer_links.refresh(customers, removed=[f for cid, f in old.items() if cid in ids])


def _clone(fact: ConversationFact) -> ConversationFact:
    c = ConversationFact(**{f.attname: getattr(fact, f.attname) for f in ConversationFact._meta.concrete_fields})
    c.contrib = dict(fact.contrib)
    return c


def _save_finished(facts: list[ConversationFact]) -> None:
    ConversationFact.objects.bulk_update(
        facts, ["fcr", "fcr_final", "repeat_contact", "fcr_window_end", "one_touch", "sla_met", "contrib"],
        batch_size=1000)


def _response_rows(facts) -> list[ResponseFact]:
    rows = []
    for f in facts:
        for at, seconds, kind, agent, team in f.responses:
            at_dt = datetime.fromisoformat(at)
            rows.append(ResponseFact(conversation_id=f.conversation_id, at=at_dt, day=local_day(at_dt),
                                     seconds=seconds, channel=kind or "", agent_id=agent, team_id=team))
    return rows


def _add(acc: dict, contrib: dict, sign: int) -> None:
    for key, cols in (contrib or {}).items():
        row = acc.setdefault(key, {})
        for col, val in cols.items():
            row[col] = row.get(col, 0) + sign * val


def apply_delta(delta: dict) -> None:
    """Additive upsert of rollup rows (INSERT ... ON CONFLICT DO UPDATE SET c = c + excluded.c),
    the days' into DailyRollup and the same sums by week into WeeklyRollup."""
    rows = []
    for key, cols in delta.items():
        if not any(cols.values()):
            continue
        day, channel, agent, team = key.split("|")
        rows.append([day, channel, int(agent), int(team)] + [int(cols.get(c, 0)) for c in ROLLUP_COLUMNS])
    if not rows:
        return
    resultcache.bump()
    _upsert(DailyRollup._meta.db_table, rows)
    _upsert(WeeklyRollup._meta.db_table, _by_week(rows))


def _by_week(rows: list[list]) -> list[list]:
    """Day rows [day, channel, agent, team, *sums] summed per (Monday, channel, agent, team)."""
    weeks: dict = {}
    for day, channel, agent, team, *sums in rows:
        d = date.fromisoformat(day) if isinstance(day, str) else day
        key = (time_key(d, "week").isoformat(), channel, agent, team)
        acc = weeks.get(key)
        if acc is None:
            weeks[key] = list(sums)
        else:
            for i, v in enumerate(sums):
                acc[i] += v
    return [[*key, *sums] for key, sums in sorted(weeks.items(), key=lambda kv: kv[0][0]) if any(sums)]


def _upsert(table: str, rows: list[list]) -> None:
    cols = ["day", "channel", "agent_id", "team_id", *ROLLUP_COLUMNS]
    placeholders = ", ".join(["%s"] * len(cols))
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in ROLLUP_COLUMNS)
    tail = f"ON CONFLICT (day, channel, agent_id, team_id) DO UPDATE SET {updates}"
    rows.sort()  # one order for every writer
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            from psycopg2.extras import execute_values

            execute_values(cur.cursor, f"INSERT INTO {table} ({', '.join(cols)}) VALUES %s {tail}", rows,
                           page_size=1000)
        else:
            cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({placeholders}) {tail}", rows)


# --------------------------------------------------------------------------- full recompute

def _all_starts() -> dict[int, list[tuple[int, datetime]]]:
    """customer -> [(conversation, start)] of customer-started conversations, from the event log:
    a conversation starts at its first message (by time, then id) and is customer-started
    when that message is inbound (the same rule as facts.build_base)."""
    table = ConversationEvent._meta.db_table
    conv_table = Conversation._meta.db_table
    starts: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    if connection.vendor == "postgresql":
        sql = (f"SELECT c.customer_id, f.conversation_id, f.at FROM ("
               f"  SELECT DISTINCT ON (conversation_id) conversation_id, kind, at FROM {table}"
               f"  WHERE kind IN ('message_in', 'message_out') ORDER BY conversation_id, at, id) f"
               f" JOIN {conv_table} c ON c.id = f.conversation_id WHERE f.kind = 'message_in'")
        with connection.cursor() as cur:
            cur.execute(sql)
            for cust, cid, at in cur.fetchall():
                starts[cust].append((cid, at))
        return starts
    first: dict[int, tuple] = {}
    for cid, kind, at, eid in (ConversationEvent.objects.filter(kind__in=[EventKind.MESSAGE_IN, EventKind.MESSAGE_OUT])
                               .values_list("conversation_id", "kind", "at", "id").iterator(chunk_size=20000)):
        cur = first.get(cid)
        if cur is None or (at, eid) < (cur[1], cur[2]):
            first[cid] = (kind, at, eid)
    customers = dict(Conversation.objects.values_list("id", "customer_id"))
    for cid, (kind, at, _eid) in first.items():
        if kind == EventKind.MESSAGE_IN and cid in customers:
            starts[customers[cid]].append((cid, at))
    return starts


def recompute_all(progress=None, chunk: int = 5000, now: datetime | None = None) -> int:
    """Rebuild facts and rollups from the event log in one pass and one transaction
    (holding the engine lock, so no incremental flush interleaves). Returns the number of conversations.

    On PostgreSQL the bulk path `_recompute_all_pg` streams the events and writes with COPY;
    elsewhere the generic ORM path below (both give the same rows: tests/metrics/test_recompute_pg.py)."""
    now = now or timezone.now()
    if connection.vendor == "postgresql":
        return _recompute_all_pg(progress, now)
    return _recompute_all_generic(progress, chunk, now)


def _recompute_all_generic(progress, chunk: int, now: datetime) -> int:
    with transaction.atomic():
        _serialize()
        context = _context()
        DirtyConversation.objects.all().delete()
        DailyRollup.objects.all().delete()
        WeeklyRollup.objects.all().delete()
        ResponseFact.objects.all().delete()
        ConversationFact.objects.all().delete()
        starts = _all_starts()
        acc: dict[str, dict[str, int]] = {}
        total = 0
        lo = 0
        bounds = Conversation.objects.order_by("pk").values_list("pk", flat=True)
        while True:
            ids = list(bounds.filter(pk__gt=lo)[:chunk])
            if not ids:
                break
            rng = (ids[0], ids[-1])
            lo = ids[-1]
            bases = _bases(None, context, id_range=rng)
            facts = [_to_fact(b) for b in bases]
            for fact, base in zip(facts, bases):
                others = [s for c, s in starts.get(fact.customer_id, ()) if c != fact.conversation_id]
                _add(acc, _finish(fact, others, now, base), 1)
            _bulk_insert(facts)
            ResponseFact.objects.bulk_create(_response_rows(facts), batch_size=5000)
            total += len(ids)
            if progress:
                progress(len(ids), "conversations")
        apply_delta(acc)
        histograms.rebuild(resplit=True)
        customer_links.rebuild()
        survey_rollup.rebuild()
        resultcache.bump()
    return total


def _bulk_insert(facts) -> None:
    ConversationFact.objects.bulk_create(facts, batch_size=2500)


# --------------------------------------------------------------------------- full recompute, PostgreSQL

_FACT_TABLES = (ConversationFact, ResponseFact)


def _copy_text(value) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            value = (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                     .replace("\r", "\\r"))
        return value
    return str(value)


def _json_text(value) -> str:
    return _copy_text(json.dumps(value))


def _n(v) -> str:
    return "\\N" if v is None else str(v)


def _f(v) -> str:
    return "\\N" if v is None else repr(float(v))


def _ts(v) -> str:
    return "\\N" if v is None else v.isoformat()


def _b(v) -> str:
    return "\\N" if v is None else ("t" if v else "f")


def _local_days(b, tz) -> tuple[date | None, date | None]:
    """The local days of a finished Base's first response and resolution (frt_day, resolved_day)."""
    frt_at, resolved = b.frt_at, b.resolved_at
    return (None if frt_at is None else frt_at.astimezone(tz).date(),
            None if resolved is None else resolved.astimezone(tz).date())


def _fact_line(b, tz, frt_day: date | None, resolved_day: date | None) -> str:
    """The COPY line of one ConversationFact (columns of FACT_COLUMNS) from a finished Base and its
    `_local_days`."""
    started, frt_at, resolved = b.started_at, b.frt_at, b.resolved_at
    return "\t".join((
        str(b.conversation_id), _n(b.customer_id), _copy_text(b.origin_kind), _ts(started),
        "\\N" if started is None else started.astimezone(tz).date().isoformat(), _b(b.outbound_first),
        _ts(b.first_inbound_at), _ts(frt_at), "\\N" if frt_day is None else frt_day.isoformat(),
        _f(b.frt_seconds), _f(b.frt_bh_seconds), _copy_text(b.frt_kind), _n(b.frt_agent_id), _n(b.frt_team_id),
        _ts(b.awaiting_since), _ts(resolved), "\\N" if resolved_day is None else resolved_day.isoformat(),
        _f(b.resolution_seconds), _f(b.resolution_bh_seconds), _n(b.resolution_agent_id), _n(b.resolution_team_id),
        str(b.reopen_count), str(b.public_replies), str(b.contacts), str(b.switches), _b(b.one_touch), _b(b.fcr),
        _b(b.fcr_final), _ts(b.fcr_window_end), _b(b.repeat_contact), _b(b.sla_met), _b(b.sla_frt_met),
        _b(b.sla_resolution_met), _n(b.initial_team_id),
        _json_text([[a.isoformat(), s, k, ag, t] for a, s, k, ag, t in b.responses]),
        _json_text([[a.isoformat(), ag, t] for a, ag, t in b.reopens]) if b.reopens else "[]",
        _json_text(b.contrib), b.computed_at)) + "\n"


FACT_COLUMNS = [
    "conversation_id", "customer_id", "origin_kind", "started_at", "created_day", "outbound_first",
    "first_inbound_at", "frt_at", "frt_day", "frt_seconds", "frt_bh_seconds", "frt_kind", "frt_agent_id",
    "frt_team_id", "awaiting_since", "resolved_at", "resolved_day", "resolution_seconds", "resolution_bh_seconds",
    "resolution_agent_id", "resolution_team_id", "reopen_count", "public_replies", "contacts", "switches",
    "one_touch", "fcr", "fcr_final", "fcr_window_end", "repeat_contact", "sla_met", "sla_frt_met",
    "sla_resolution_met", "initial_team_id", "responses", "reopens", "contrib", "computed_at",
]
RESPONSE_COLUMNS = ["conversation_id", "at", "day", "seconds", "channel", "agent_id", "team_id"]


def _response_lines(b, tz, values: histograms.Values) -> list[str]:
    """The COPY lines of a finished Base's ResponseFacts; their values added to `values`."""
    cid = str(b.conversation_id)
    out = []
    add = values.add
    for at, seconds, kind, agent, team in b.responses:
        day = at.astimezone(tz).date()
        seconds = float(seconds)
        add("rt", day.toordinal(), kind, agent, team, seconds)
        out.append("\t".join((cid, at.isoformat(), day.isoformat(), repr(seconds), _copy_text(kind or ""), _n(agent),
                              _n(team))) + "\n")
    return out


def _secondary_indexes(cur) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the fact tables' indexes that back no constraint."""
    tables = [m._meta.db_table for m in _FACT_TABLES]
    cur.execute("""
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)""", [tables])
    return cur.fetchall()


def _copy(cur, table: str, columns: list[str], text: str) -> None:
    if text:
        # size positionally: under DEBUG Django's debug cursor passes *args only
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", io.StringIO(text), 1 << 20)


def _fold_range(raw, lo: int, hi: int, job: dict) -> tuple[str, str, str, dict, int, histograms.Values]:
    """Fold the conversations lo..hi (inclusive ids) read through the psycopg2 connection `raw`:
    (fact COPY text without the customer links, response COPY text, COPY text of the links' source
    (customer_links.SOURCE_COLUMNS), rollup contributions, count, histogram values)."""
    tz, schedules, policies, starts, now = job["tz"], job["schedules"], job["policies"], job["starts"], job["now"]
    computed = job["computed_at"]
    keys = ", ".join(f"data->>'{k}'" for k in _DATA_KEYS)
    kinds = ", ".join(f"'{k}'" for k in RELEVANT_KINDS)
    with raw.cursor() as cur:
        cur.execute(f"SELECT id, customer_id, team_id, priority FROM {Conversation._meta.db_table} "
                    f"WHERE id BETWEEN %s AND %s ORDER BY id", [lo, hi])
        convs = cur.fetchall()
        cur.execute(f"SELECT conversation_id, id, kind, at, actor_type, actor_user_id, {keys} "
                    f"FROM {ConversationEvent._meta.db_table} WHERE conversation_id BETWEEN %s AND %s "
                    f"AND kind IN ({kinds}) ORDER BY conversation_id, at, id", [lo, hi])
        rows = cur.fetchall()
    acc: dict[str, dict[str, int]] = {}
    fact_lines: list[str] = []
    resp_lines: list[str] = []
    link_lines: list[str] = []
    values = histograms.Values()
    Ev, ConvInfo, build_base, int_ = F.Ev, F.ConvInfo, F.build_base, _int
    i, n = 0, len(rows)
    for conv in convs:
        cid = conv[0]
        evs = []
        while i < n and rows[i][0] <= cid:
            if rows[i][0] == cid:
                _c, eid, kind, at, actor_type, actor_id, channel, automated, frm, to, assignee = rows[i]
                evs.append(Ev(eid, kind, at, actor_type, actor_id,
                              {"channel": channel or "", "automated": automated in ("true", "1"),
                               "from": int_(frm), "to": int_(to), "assignee": int_(assignee)}))
            i += 1
        base = build_base(ConvInfo(*conv), evs, schedules, policies)
        others = [s for c, s in starts.get(base.customer_id, ()) if c != cid]
        base.computed_at = computed
        _add(acc, _finish(base, others, now, base), 1)
        frt_day, resolved_day = _local_days(base, tz)
        fact_lines.append(_fact_line(base, tz, frt_day, resolved_day))
        values.add_fact(base, frt_day, resolved_day)
        if base.responses:
            resp_lines.extend(_response_lines(base, tz, values))
        if resolved_day is not None and base.customer_id is not None:
            link_lines.append(f"{cid}\t{base.customer_id}\t{resolved_day.isoformat()}\t{base.resolved_at.isoformat()}\t"
                              f"{_copy_text(base.origin_kind)}\t{_n(base.resolution_agent_id)}\t"
                              f"{_n(base.resolution_team_id)}\n")
    return "".join(fact_lines), "".join(resp_lines), "".join(link_lines), acc, len(convs), values


_JOB: dict = {}
_WORKER_CONN: dict = {}


def _worker_fold(rng):
    """In a forked worker: a connection of its own (never the parent's, which is inherited
    mid-transaction), then fold one range."""
    import psycopg2

    raw = _WORKER_CONN.get("conn")
    if raw is None:
        params = connection.get_connection_params()
        raw = _WORKER_CONN["conn"] = psycopg2.connect(**params)
        raw.set_session(readonly=True, autocommit=True)
    return _fold_range(raw, rng[0], rng[1], _JOB)


_LINK_SOURCE = "recompute_link_source"


def _copy_facts_with_links(cur, spool, links: dict[str, str], batch: int = 20000) -> None:
    """COPY the spooled fact lines (FACT_COLUMNS), each with its customer links (customer_links.FIELDS:
    `links` by conversation id, none for facts without)."""
    none = "\t".join(["\\N"] * len(customer_links.FIELDS))
    columns = FACT_COLUMNS + customer_links.FIELDS
    spool.seek(0)
    lines: list[str] = []
    for line in spool:
        lines.append(f"{line[:-1]}\t{links.get(line[:line.index(chr(9))], none)}\n")
        if len(lines) >= batch:
            _copy(cur, ConversationFact._meta.db_table, columns, "".join(lines))
            lines = []
    _copy(cur, ConversationFact._meta.db_table, columns, "".join(lines))


def _ranges(ids: list[int], size: int) -> list[tuple[int, int]]:
    return [(ids[k], ids[min(k + size, len(ids)) - 1]) for k in range(0, len(ids), size)]


def _recompute_all_pg(progress, now: datetime, chunk: int = 10000, workers: int | None = None) -> int:
    """The bulk path: TRUNCATE, drop the fact tables' secondary indexes, read the events of
    each range of conversations once (only the JSON keys the engine reads), fold them with the
    same facts.build_base as the incremental path (in forked worker processes when there are
    many: METRICS_RECOMPUTE_WORKERS), COPY the responses, compute every fact's customer links
    from their inputs in a temporary table and COPY each fact once with its links, count the
    histograms with numpy in a thread meanwhile, rebuild the indexes, COPY the rollups and the
    histograms, ANALYZE.

    Workers read through connections of their own, so they see committed events only; with
    fewer than `chunk` conversations (or workers=1) everything runs in this process."""
    import multiprocessing

    from .businesshours import _tz

    fact_table, resp_table = ConversationFact._meta.db_table, ResponseFact._meta.db_table
    total = 0
    with transaction.atomic():
        _serialize()
        schedules, policies = _context()
        with connection.cursor() as cur:
            cur.execute("SET LOCAL work_mem = '256MB'")
            cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute(f"TRUNCATE {DirtyConversation._meta.db_table}, {DailyRollup._meta.db_table}, "
                        f"{WeeklyRollup._meta.db_table}, "
                        f"{ValueHistogram._meta.db_table}, {resp_table}, {fact_table}")
            indexes = _secondary_indexes(cur)
            for name, _sql in indexes:
                cur.execute(f'DROP INDEX "{name}"')
            cur.execute(f"SELECT id FROM {Conversation._meta.db_table} ORDER BY id")
            ids = [r[0] for r in cur.fetchall()]
        t0 = time.monotonic()
        _JOB.clear()
        _JOB.update(tz=_tz(settings.TIME_ZONE), schedules=schedules, policies=policies, starts=_all_starts(),
                    now=now, computed_at=timezone.now().isoformat())
        phases = {"starts": time.monotonic() - t0}
        ranges = _ranges(ids, chunk)
        if workers is None:
            from .kpis.base import int_setting

            workers = int_setting("METRICS_RECOMPUTE_WORKERS", 0) or min(4, os.cpu_count() or 1)
        acc: dict[str, dict[str, int]] = {}
        connection.ensure_connection()
        pool = finish_link_rollup = counter = None
        if workers > 1 and len(ranges) > 1:
            pool = multiprocessing.get_context("fork").Pool(workers)
            results = pool.imap(_worker_fold, ranges)
        else:
            raw = connection.connection
            results = (_fold_range(raw, lo, hi, _JOB) for lo, hi in ranges)
        try:
            with connection.cursor() as cur, tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
                # the facts wait in `spool` for their customer links, computed from the links' source
                # rows once all are folded, and are then COPYed with them (no UPDATE of every fact)
                cur.execute(f"DROP TABLE IF EXISTS {_LINK_SOURCE}")  # a recompute earlier in this transaction
                cur.execute(f"CREATE TEMPORARY TABLE {_LINK_SOURCE} ON COMMIT DROP AS SELECT "
                            f"{', '.join(customer_links.SOURCE_COLUMNS)} FROM {fact_table} WITH NO DATA")
                hist_values: list[histograms.Values] = []
                for fact_text, resp_text, link_text, part, n, values in results:
                    hist_values.append(values)
                    spool.write(fact_text)
                    _copy(cur, _LINK_SOURCE, customer_links.SOURCE_COLUMNS, link_text)
                    _copy(cur, resp_table, RESPONSE_COLUMNS, resp_text)
                    for key, cols in part.items():
                        row = acc.setdefault(key, {})
                        for col, val in cols.items():
                            row[col] = row.get(col, 0) + val
                    total += n
                    if progress:
                        progress(n, "conversations")
                phases["fold+copy"] = time.monotonic() - t0 - sum(phases.values())
                # the histograms counted (numpy, no database) in a thread beside the next statements
                counter = ThreadPoolExecutor(1, thread_name_prefix="recompute-histograms")
                counted = counter.submit(histograms.count_values, hist_values)
                del hist_values
                links = customer_links.links_text(_LINK_SOURCE)
                phases["customer links"] = time.monotonic() - t0 - sum(phases.values())
                _copy_facts_with_links(cur, spool, links)
                del links
                customer_links.mark_rebuilt()
                phases["facts"] = time.monotonic() - t0 - sum(phases.values())
                # their daily rollup: folded in a forked process beside the indexes and histograms
                finish_link_rollup = link_rollup.rebuild_in_background()
                phases["link fetch"] = time.monotonic() - t0 - sum(phases.values())
                for _name, sql in indexes:
                    cur.execute(sql)
                phases["indexes"] = time.monotonic() - t0 - sum(phases.values())
                # written in day order: a period's rows then lie on neighbouring pages (a 90-day read of
                # the 1 M bench touched 2,600 of the table's 3,500 pages when they were in fold order)
                day_rows = sorted(([*key.split("|"), *(int(cols.get(c, 0)) for c in ROLLUP_COLUMNS)]
                                   for key, cols in acc.items() if any(cols.values())), key=lambda r: r[0])
                for model, rows in ((DailyRollup, day_rows), (WeeklyRollup, _by_week(day_rows))):
                    _copy(cur, model._meta.db_table, ["day", "channel", "agent_id", "team_id", *ROLLUP_COLUMNS],
                          "".join(_rollup_line(row) for row in rows))
                phases["rollups"] = time.monotonic() - t0 - sum(phases.values())
                histograms.write_counts(*counted.result())
                phases["histograms"] = time.monotonic() - t0 - sum(phases.values())
                finish_link_rollup()
                phases["link rollup"] = time.monotonic() - t0 - sum(phases.values())
                survey_rollup.rebuild()
                phases["survey days"] = time.monotonic() - t0 - sum(phases.values())
        finally:
            if counter is not None:
                counter.shutdown(wait=True, cancel_futures=True)
            if finish_link_rollup is not None:
                finish_link_rollup.cancel()  # finished or failed: no child left behind
            if pool is not None:
                pool.terminate()
            _JOB.clear()
    resultcache.bump()
    phases["commit"] = time.monotonic() - t0 - sum(phases.values())
    with connection.cursor() as cur:
        # VACUUM sets the visibility map, so the covering indexes give index-only scans
        # (it cannot run inside a transaction block: there, ANALYZE only)
        verb = "ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE"
        cur.execute(f"{verb} {fact_table}, {resp_table}, {DailyRollup._meta.db_table}, {WeeklyRollup._meta.db_table}, "
                    f"{ValueHistogram._meta.db_table}")
    phases["analyze"] = time.monotonic() - t0 - sum(phases.values())
    log.info("full recompute of %s conversations (%s workers): %s", total, workers,
             ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
    return total


def _rollup_line(row: list) -> str:
    day, channel, agent, team, *sums = row
    return "\t".join([day, _copy_text(channel), str(agent), str(team), *(str(v) for v in sums)]) + "\n"


def rollup_snapshot() -> dict:
    """Non-zero rollup rows as a comparable dict (tests, recompute checks)."""
    out = {}
    for span, model in ((1, DailyRollup), (7, WeeklyRollup)):
        for row in model.objects.values("day", "channel", "agent_id", "team_id", *ROLLUP_COLUMNS):
            vals = {c: row[c] for c in ROLLUP_COLUMNS if row[c]}
            if vals:
                key = (str(row["day"]), row["channel"], row["agent_id"], row["team_id"])
                out[key if span == 1 else ("week", *key)] = vals
    return out


def conversations_changed(conversation_ids) -> None:
    """The hot path's entry point (conversations.services.ingest): mark the
    conversations dirty inside the caller's transaction (no extra round trip
    after commit) and schedule one debounced flush once it commits."""
    mark_dirty(conversation_ids)
    transaction.on_commit(_flush_unless_suspended)


def _flush_unless_suspended() -> None:
    if not _suspended["depth"]:
        schedule_flush()
