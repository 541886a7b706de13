"""Customer links: what CLTV and post-service retention need of each resolution, stored on its
ConversationFact so a period's figures are one pass over the period's facts, with no
per-customer aggregation (KPI.md; metrics.kpis.customer_base reads them).

For each resolved fact of a customer, in the order (resolved_day, resolved_at, conversation_id)
of that customer's resolved facts:

* `cv_next_order_at`: the customer's first order placed after the resolution;
* `cv_retained`: that order lies within RETENTION_WINDOW after the resolution;
* `cv_ltv_cents`: the customer's lifetime value (orders placed) up to the end of the
  resolution's local day, in cents;
* per dimension D (all; channel = origin_kind; agent = resolution_agent_id; team =
  resolution_team_id), among the customer's facts with the same value of D:
  `cv_prev_D` / `cv_next_D`, the day of the previous / next such fact, and `cv_retb_D`, the day
  of the latest earlier such fact that is retained.

Then, for a period [s, e] and the group of a dimension value, with each fact in the period:

* the customer is counted once, on its first fact of the period: `prev < s` (or none);
* retained once, on its first retained fact of the period: retained and `retb < s`;
* its last fact of the period (`next > e` or none) carries the rest: pending when that fact is
  not retained, no earlier one of the period is (`retb < s`) and its window is still open; the
  lifetime value up to the end of the period is its `cv_ltv_cents` plus the customer's orders
  placed between the end of its day and the end of the period (a join with the period's orders).

The links of a customer are a pure function of the customer's facts and orders: `refresh`
recomputes them for some customers (the engine after a fold, order writes, merges, imports),
`rebuild` for everyone (on PostgreSQL one statement of window functions, which a test compares
with the Python fold; the PostgreSQL full recompute runs the same statement over its folded facts
and COPYs each fact with its links, `links_text`). They depend on RETENTION_WINDOW: MetricsState
"customer_links" records the window they were computed with, and reads use them only while
the setting still says the same (`usable`); after a change, `manage.py recompute_metrics`.
"""
from __future__ import annotations

import io
from bisect import bisect_left, bisect_right
from collections import defaultdict
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection

from . import link_rollup

STATE_KEY = "customer_links"
DIMS = {"all": None, "channel": "origin_kind", "agent": "resolution_agent_id", "team": "resolution_team_id"}
FIELDS = ["cv_next_order_at", "cv_retained", "cv_ltv_cents", "cv_tail",
          *(f"cv_{w}_{d}" for d in DIMS for w in ("prev", "next", "retb"))]


def _state():
    from .models import MetricsState

    return MetricsState.objects.filter(key=STATE_KEY).values_list("value", flat=True).first()


def window_seconds() -> int | None:
    """The RETENTION_WINDOW the stored links were computed with (None: not computed)."""
    state = _state()
    return None if not state else int(state["window"])


def usable() -> bool:
    return window_seconds() == int(settings.RETENTION_WINDOW)


def rollup_usable() -> bool:
    """The daily rollup of the links (metrics.link_rollup) is built and current."""
    from . import link_rollup

    state = _state()
    return bool(state) and int(state["window"]) == int(settings.RETENTION_WINDOW) \
        and state.get("rollup") == link_rollup.CAP


def _set_state(window: int) -> None:
    from . import link_rollup
    from .models import MetricsState

    MetricsState.objects.update_or_create(key=STATE_KEY, defaults={"value": {"window": int(window),
                                                                             "rollup": link_rollup.CAP}})


def _end_of_day(day):
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=ZoneInfo(settings.TIME_ZONE))


def compute(facts: list[dict], orders: list, window: timedelta) -> dict:
    """{conversation_id: {field: value}} for the facts of ONE customer (dicts with conversation_id,
    resolved_day, resolved_at and the dimension fields) and its orders as (placed_at, amount)."""
    orders = sorted((at, int(round(Decimal(amount) * 100))) for at, amount in orders)
    placed = [at for at, _c in orders]
    cumulative = [0]
    for _at, cents in orders:
        cumulative.append(cumulative[-1] + cents)
    out = {}
    resolved = sorted((f for f in facts if f["resolved_day"] is not None and f["resolved_at"] is not None),
                      key=lambda f: (f["resolved_day"], f["resolved_at"], f["conversation_id"]))
    for f in facts:
        out[f["conversation_id"]] = dict.fromkeys(FIELDS)
    tz = ZoneInfo(settings.TIME_ZONE)
    for f in resolved:
        i = bisect_right(placed, f["resolved_at"])
        nxt = placed[i] if i < len(placed) else None
        row = out[f["conversation_id"]]
        row["cv_next_order_at"] = nxt
        row["cv_retained"] = nxt is not None and nxt <= f["resolved_at"] + window
        start = bisect_left(placed, _end_of_day(f["resolved_day"]))
        row["cv_ltv_cents"] = cumulative[start]
        tail: dict = {}
        for at, cents in orders[start:]:
            off = (at.astimezone(tz).date() - f["resolved_day"]).days
            if off >= link_rollup.CAP:
                break
            tail[off] = tail.get(off, 0) + cents
        row["cv_tail"] = [[off, cents] for off, cents in sorted(tail.items())] or None
    for dim, field in DIMS.items():
        chains: dict = defaultdict(list)
        for f in resolved:
            chains[None if field is None else f[field]].append(f)
        for chain in chains.values():
            last_retained = None
            for j, f in enumerate(chain):
                row = out[f["conversation_id"]]
                row[f"cv_prev_{dim}"] = chain[j - 1]["resolved_day"] if j else None
                row[f"cv_next_{dim}"] = chain[j + 1]["resolved_day"] if j + 1 < len(chain) else None
                row[f"cv_retb_{dim}"] = last_retained
                if row["cv_retained"]:
                    last_retained = f["resolved_day"]
    return out


_READ = ["conversation_id", "customer_id", "resolved_day", "resolved_at", "origin_kind", "resolution_agent_id",
         "resolution_team_id", *FIELDS]


def refresh(customer_ids, window: int | None = None, removed=()) -> int:
    """Recompute the links of these customers' facts; writes only the rows that change, and
    applies the difference to the daily rollup (metrics.link_rollup): each rewritten row's old
    contribution out, its new one in, and out the contributions of `removed` (fact instances as
    they were before the caller deleted them). Does nothing while the links are not computed
    (no MetricsState: a recompute is due). Returns the number of rows written."""
    from customers.models import Order

    from .models import ConversationFact

    ids = sorted({int(c) for c in customer_ids if c is not None})
    state = _state()
    if window is None:
        if not state:
            return 0
        window = int(state["window"])
    # the rollup is kept only once built with these links (a rebuild builds both)
    acc = link_rollup.Acc() if state and state.get("rollup") == link_rollup.CAP else None
    if acc is not None:
        for fact in removed:
            acc.add(link_rollup.contributions(link_rollup.fact_row(fact)), -1)
    if not ids:
        if acc is not None:
            link_rollup.apply(acc)
        return 0
    delta = timedelta(seconds=window)
    written = 0
    for start in range(0, len(ids), 2000):
        chunk = ids[start:start + 2000]
        facts: dict = defaultdict(list)
        for f in ConversationFact.objects.filter(customer_id__in=chunk).values(*_READ):
            facts[f["customer_id"]].append(f)
        orders: dict = defaultdict(list)
        for cust, at, amount in Order.objects.filter(customer_id__in=chunk).values_list("customer_id", "placed_at",
                                                                                      "amount"):
            orders[cust].append((at, amount))
        changed = []
        for cust, rows in facts.items():
            new = compute(rows, orders.get(cust, ()), delta)
            for f in rows:
                values = new[f["conversation_id"]]
                if any(f[k] != v for k, v in values.items()):
                    changed.append(ConversationFact(conversation_id=f["conversation_id"], **values))
                    if acc is not None:
                        acc.add(link_rollup.contributions(f), -1)
                        acc.add(link_rollup.contributions({**f, **values}), 1)
        if changed:
            ConversationFact.objects.bulk_update(changed, FIELDS, batch_size=1000)
            written += len(changed)
    if acc is not None:
        link_rollup.apply(acc)
    return written


def rebuild() -> None:
    """The links of every fact, computed with the current RETENTION_WINDOW, and their daily
    rollup (the generic full recompute, migrations; the PostgreSQL full recompute COPYs the facts
    with their links instead: `links_text`)."""
    from .models import ConversationFact

    window = int(settings.RETENTION_WINDOW)
    if connection.vendor == "postgresql":
        _rebuild_sql(window)
        link_rollup.rebuild()
    else:
        ConversationFact.objects.filter(customer_id__isnull=True).update(**dict.fromkeys(FIELDS))
        customers = ConversationFact.objects.filter(customer_id__isnull=False).values_list(
            "customer_id", flat=True).distinct()
        refresh(list(customers), window=window)
        link_rollup.rebuild()
    _set_state(window)


def _rebuild_sql(window: int) -> None:
    from .models import ConversationFact

    facts = ConversationFact._meta.db_table
    sets = ", ".join(f"{f} = l.{f}" for f in FIELDS)
    with connection.cursor() as cur:
        # facts that are not resolved (or have no customer) carry no links
        cur.execute(f"UPDATE {facts} SET {', '.join(f'{f} = NULL' for f in FIELDS)} "
                    f"WHERE (customer_id IS NULL OR resolved_day IS NULL OR resolved_at IS NULL) "
                    f"AND (cv_retained IS NOT NULL OR cv_next_order_at IS NOT NULL)")
        sql, params = _links_query(facts, window)
        cur.execute(f"{sql} UPDATE {facts} t SET {sets} FROM l WHERE t.conversation_id = l.conversation_id", params)


# the columns of the resolved facts the links are computed from (`links_text`'s source table)
SOURCE_COLUMNS = ["conversation_id", "customer_id", "resolved_day", "resolved_at", "origin_kind",
                  "resolution_agent_id", "resolution_team_id"]


def links_text(source: str, window: int | None = None) -> dict[str, str]:
    """{conversation id: its links (FIELDS) in COPY's text format} of the resolved facts with a
    customer in the table `source` (SOURCE_COLUMNS; PostgreSQL): the full recompute COPYs the facts
    with their links instead of writing them with an UPDATE of every fact (~4 times slower)."""
    window = int(settings.RETENTION_WINDOW) if window is None else window
    sql, params = _links_query(source, window)
    buf = io.StringIO()
    with connection.cursor() as cur:
        query = cur.cursor.mogrify(f"{sql} SELECT conversation_id, {', '.join(FIELDS)} FROM l", params).decode()
        cur.copy_expert(f"COPY ({query}) TO STDOUT", buf)
    out = {}
    for line in buf.getvalue().splitlines():
        cid, _, rest = line.partition("\t")
        out[cid] = rest
    return out


def mark_rebuilt(window: int | None = None) -> None:
    """Record that every fact's links were computed with `window` (default: RETENTION_WINDOW)."""
    _set_state(int(settings.RETENTION_WINDOW) if window is None else window)


def _links_query(facts: str, window: int) -> tuple[str, dict]:
    """(WITH ... l AS (the links of each resolved fact with a customer in the table `facts`), params)."""
    from customers.models import Order

    orders = Order._meta.db_table
    order = "ORDER BY resolved_day, resolved_at, conversation_id"
    parts = {"all": "customer_id", "channel": "customer_id, origin_kind", "agent": "customer_id, resolution_agent_id",
             "team": "customer_id, resolution_team_id"}
    cols, windows = [], []
    for dim, by in parts.items():
        windows.append(f"w_{dim} AS (PARTITION BY {by} {order})")
        cols += [f"lag(resolved_day) OVER w_{dim} AS cv_prev_{dim}",
                 f"lead(resolved_day) OVER w_{dim} AS cv_next_{dim}",
                 f"max(CASE WHEN ret THEN resolved_day END) OVER (w_{dim} ROWS BETWEEN UNBOUNDED PRECEDING "
                 f"AND 1 PRECEDING) AS cv_retb_{dim}"]
    # each resolved fact paired with its customer's orders (hash joins: no probe per fact)
    resolved = "f.customer_id IS NOT NULL AND f.resolved_day IS NOT NULL AND f.resolved_at IS NOT NULL"
    return f"""
            WITH p AS (
                SELECT f.conversation_id, o.placed_at, (o.amount * 100)::bigint AS cents,
                       o.placed_at > f.resolved_at AS after,
                       o.placed_at < (f.resolved_day + 1)::timestamp AT TIME ZONE %(tz)s AS upto,
                       (o.placed_at AT TIME ZONE %(tz)s)::date - f.resolved_day AS off
                FROM {facts} f JOIN {orders} o ON o.customer_id = f.customer_id
                WHERE {resolved}),
            po AS (  -- the first order after the resolution; the orders up to the end of its day
                SELECT conversation_id, min(placed_at) FILTER (WHERE after) AS next_at,
                       sum(cents) FILTER (WHERE upto) AS cents
                FROM p GROUP BY conversation_id),
            pt AS (  -- orders of the next CAP local days: [[days after, cents]]
                SELECT conversation_id, jsonb_agg(jsonb_build_array(off, cents) ORDER BY off) AS tail
                FROM (SELECT conversation_id, off, sum(cents) AS cents FROM p
                      WHERE off >= 1 AND off < %(cap)s GROUP BY conversation_id, off) d
                GROUP BY conversation_id),
            r AS (
                SELECT f.conversation_id, f.customer_id, f.resolved_day, f.resolved_at, f.origin_kind,
                       f.resolution_agent_id, f.resolution_team_id, po.next_at AS cv_next_order_at,
                       coalesce(po.next_at <= f.resolved_at + %(window)s * interval '1 second', false) AS ret,
                       coalesce(po.cents, 0) AS cv_ltv_cents, pt.tail AS cv_tail
                FROM {facts} f LEFT JOIN po ON po.conversation_id = f.conversation_id
                LEFT JOIN pt ON pt.conversation_id = f.conversation_id
                WHERE {resolved}),
            l AS (
                SELECT conversation_id, cv_next_order_at, ret AS cv_retained, cv_ltv_cents, cv_tail,
                       {', '.join(cols)}
                FROM r WINDOW {', '.join(windows)})""", {"tz": settings.TIME_ZONE, "cap": link_rollup.CAP,
                                                        "window": window}


def snapshot() -> dict:
    """{conversation_id: (links...)} of every fact (tests: incremental == rebuild)."""
    from .models import ConversationFact

    return {r[0]: r[1:] for r in ConversationFact.objects.values_list("conversation_id", *FIELDS)}


def connect_signals() -> None:
    """An order written through the ORM refreshes its customer's links in the same transaction
    (and the previous customer's when an update moves it)."""
    from django.db.models.signals import post_delete, post_save, pre_save

    from customers.models import Order

    def _before(instance, **_kwargs):
        instance._cv_old_customer = (Order.objects.filter(pk=instance.pk).values_list("customer_id", flat=True).first()
                                     if instance.pk else None)

    def _after(instance, **_kwargs):
        refresh({instance.customer_id, getattr(instance, "_cv_old_customer", None)})

    pre_save.connect(_before, sender=Order, weak=False, dispatch_uid="metrics-links-order-pre")
    post_save.connect(_after, sender=Order, weak=False, dispatch_uid="metrics-links-order")
    post_delete.connect(_after, sender=Order, weak=False, dispatch_uid="metrics-links-order-del")
