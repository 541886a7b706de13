"""The customers of a selection: those with a (final) resolution dated in the
period, in the group of that resolution (origin channel, assignee, team).

`rows(sel)` gives, per (group, customer): the lifetime value up to the end of
the period (CLTV) and the best retention verdict over that customer's
resolutions in the group (an order within RETENTION_WINDOW after it: 2; window
still open: 1; lost: 0). Three queries; customer ids never travel as lists.
`groups(sel)` sums them per group (on PostgreSQL in one statement).
"""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from customers.models import Order

from .. import link_rollup
from ..models import ConversationFact
from .base import TIME_GROUPINGS, filter_dims, group_annotation, time_key
from .resolution_time import DIMS



def _group_key(sel, g):
    """The report key of a group value: None without grouping, the period for time groupings."""
    if sel.group_by is None:
        return None
    if sel.group_by in TIME_GROUPINGS:
        return time_key(g.date() if hasattr(g, "hour") else g, sel.group_by)
    return g or None

def rows(sel) -> list[tuple]:
    """[(group key, customer_id, lifetime value, retention rank)]"""

    def load():
        window = timedelta(seconds=settings.RETENTION_WINDOW)
        now = timezone.now()
        facts = ConversationFact.objects.filter(resolved_day__gte=sel.start, resolved_day__lte=sel.end,
                                                customer_id__isnull=False)
        facts = filter_dims(facts, sel, channel=DIMS["channel"], agent=DIMS["agent"], team=DIMS["team"])
        customers = facts.values("customer_id")
        ltv = dict(Order.objects.filter(customer_id__in=customers, placed_at__lt=sel.end_at)
                   .values("customer_id").annotate(s=Sum("amount")).order_by().values_list("customer_id", "s"))
        orders: dict = defaultdict(list)
        for cust, at in (Order.objects.filter(customer_id__in=customers, placed_at__gt=sel.start_at,
                                              placed_at__lte=sel.end_at + window)
                         .values_list("customer_id", "placed_at")):
            orders[cust].append(at)
        for lst in orders.values():
            lst.sort()
        best: dict = {}
        for g, cust, resolved in (facts.annotate(g=group_annotation(sel, DIMS))
                                  .values_list("g", "customer_id", "resolved_at")):
            key = _group_key(sel, g)
            lst = orders.get(cust, ())
            i = bisect_right(lst, resolved)
            if i < len(lst) and lst[i] <= resolved + window:
                rank = 2
            elif resolved + window > now:
                rank = 1
            else:
                rank = 0
            k = (key, cust)
            if rank > best.get(k, -1):
                best[k] = rank
        return [(key, cust, ltv.get(cust) or Decimal(0), rank) for (key, cust), rank in best.items()]

    return sel.memo("customer_rows", load)


def groups(sel) -> dict:
    """{group key: {"customers", "ltv_sum", "retained", "pending", "lost"}}: on PostgreSQL one
    statement (`_groups_sql`), elsewhere folded from `rows` (the test compares the two)."""
    if connection.vendor == "postgresql":
        def read():
            from .. import customer_links

            dim = links_dim(sel)
            if dim is not None and (sel.end - sel.start).days < link_rollup.CAP and customer_links.rollup_usable():
                return _groups_rollup(sel, dim)
            if dim is not None and customer_links.usable():
                return _groups_links(sel, dim)
            return _groups_sql(sel)

        return sel.memo("customer_groups", read)
    return sel.memo("customer_groups", lambda: _groups_fold(sel))


def links_dim(sel) -> str | None:
    """The dimension whose customer links answer the selection (metrics.customer_links): "all"
    without filters, else the one filtered or grouped on; None when it filters or groups on two."""
    filtered = [d for d, v in (("channel", sel.channel), ("agent", sel.agent_id), ("team", sel.team_id)) if v]
    grouped = [sel.group_by] if sel.group_by in ("channel", "agent", "team") else []
    dims = set(filtered) | set(grouped)
    if len(filtered) > 1 or len(dims) > 1:
        return None
    return dims.pop() if dims else "all"


def _group_sql(g, day: str, column) -> tuple[str, str, str]:
    """SQL of the group key and of its first and last day within the period (%(s)s .. %(e)s), for
    rows dated by the column `day`; `column` holds the value of a dimension grouping."""
    if g is None:
        return "0", "%(s)s", "%(e)s"
    if g == "day":
        return day, day, day
    if g == "week":
        key = f"date_trunc('week', {day})::date"
        return key, f"greatest({key}, %(s)s)", f"least({key} + 6, %(e)s)"
    if g == "month":
        key = f"date_trunc('month', {day})::date"
        return key, f"greatest({key}, %(s)s)", f"least(({key} + interval '1 month' - interval '1 day')::date, %(e)s)"
    return column, "%(s)s", "%(e)s"


def _groups_links(sel, dim: str) -> dict:
    """`groups` from the customer links, in one pass over the period's facts (index-only) plus a
    hash join of the orders on each customer's last fact of the period (metrics.customer_links)."""
    from customers.models import Order

    window = timedelta(seconds=settings.RETENTION_WINDOW)
    g = sel.group_by
    gexpr, gs, ge = _group_sql(g, "resolved_day", DIMS.get(g))
    where = ["resolved_day >= %(s)s", "resolved_day <= %(e)s", "customer_id IS NOT NULL"]
    params = {"s": sel.start, "e": sel.end, "end_at": sel.end_at, "open_after": timezone.now() - window}
    for name, value in (("channel", sel.channel), ("agent", sel.agent_id), ("team", sel.team_id)):
        if value:
            where.append(f"{DIMS[name]} = %({name})s")
            params[name] = value
    facts, orders = ConversationFact._meta.db_table, Order._meta.db_table
    params.update(start_at=sel.start_at, tz=settings.TIME_ZONE)
    # one pass over the facts: the counts, and (arrays) the customers and days of the last facts
    # of the period whose customer ordered before its end after that day; their orders joined after
    last = "(nxt IS NULL OR nxt > ge)"
    ordered = f"{last} AND next_order < %(end_at)s"
    sql = f"""
        WITH c AS (
            SELECT g,
                   count(*) FILTER (WHERE prev IS NULL OR prev < gs) AS customers,
                   count(*) FILTER (WHERE ret AND (retb IS NULL OR retb < gs)) AS retained,
                   count(*) FILTER (WHERE {last} AND NOT ret AND (retb IS NULL OR retb < gs)
                                    AND resolved_at > %(open_after)s) AS pending,
                   sum(ltv) FILTER (WHERE {last}) AS ltv,
                   array_agg(customer_id) FILTER (WHERE {ordered}) AS o_customers,
                   array_agg(resolved_day) FILTER (WHERE {ordered}) AS o_days
            FROM (SELECT {gexpr} AS g, {gs} AS gs, {ge} AS ge, customer_id, resolved_day, resolved_at,
                         cv_retained AS ret, cv_ltv_cents AS ltv, cv_prev_{dim} AS prev, cv_next_{dim} AS nxt,
                         cv_retb_{dim} AS retb, cv_next_order_at AS next_order
                  FROM {facts} WHERE {' AND '.join(where)}) f
            GROUP BY g),
        o AS MATERIALIZED (  -- the period's orders: hash-joined (unnest's row estimate would pick index probes)
            SELECT customer_id, placed_at, amount FROM {orders}
            WHERE placed_at >= %(start_at)s AND placed_at < %(end_at)s),
        l AS (  -- orders after the day of a customer's last fact of the period, up to its end (exact cents)
            SELECT c.g, sum((o.amount * 100)::bigint) AS s
            FROM c CROSS JOIN LATERAL unnest(c.o_customers, c.o_days) AS f(customer_id, resolved_day)
            JOIN o ON o.customer_id = f.customer_id
                   AND o.placed_at >= (f.resolved_day + 1)::timestamp AT TIME ZONE %(tz)s
            GROUP BY c.g)
        SELECT c.g, c.customers, coalesce(c.ltv, 0) + coalesce(l.s, 0), c.retained, c.pending
        FROM c LEFT JOIN l ON l.g IS NOT DISTINCT FROM c.g"""
    out: dict = {}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        for g_value, customers, ltv, retained, pending in cur.fetchall():
            if not customers:
                continue
            out[_group_key(sel, g_value)] = {"customers": customers, "ltv_sum": Decimal(ltv) / 100,
                                             "retained": retained, "pending": pending,
                                             "lost": customers - retained - pending}
    return out


def _bounds(sel, day):
    """(start, end) of the group of `day` within the period."""
    g = sel.group_by
    if g == "day":
        return day, day
    if g == "week":
        lo = day - timedelta(days=day.weekday())
        return max(lo, sel.start), min(lo + timedelta(days=6), sel.end)
    if g == "month":
        lo = day.replace(day=1)
        hi = (lo + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        return max(lo, sel.start), min(hi, sel.end)
    return sel.start, sel.end


def _rollup_key(sel, dim, value):
    if sel.group_by is None:
        return None
    if sel.group_by in TIME_GROUPINGS:
        return time_key(value, sel.group_by)
    if not value:
        return None
    return value if dim == "channel" else int(value)


def _groups_rollup(sel, dim: str) -> dict:
    """`groups` from the daily rollup of the customer links (metrics.link_rollup): one row per day
    and dimension value. Pending retention is derived: a group whose days all lie after the day
    the retention window opened on (`d0`) has no lost customer, one before it no pending one; the
    group that holds d0 counts its lost (or pending) customers on its facts on one side of d0."""
    from ..models import CustomerLinkDay

    window = timedelta(seconds=settings.RETENTION_WINDOW)
    open_after = timezone.now() - window
    d0 = timezone.localdate(open_after)
    g = sel.group_by
    timed = g in TIME_GROUPINGS
    gexpr, gs, ge = _group_sql(g, "day", "value")
    value = {"channel": sel.channel, "agent": sel.agent_id, "team": sel.team_id}.get(dim)
    params = {"s": sel.start, "e": sel.end, "dim": dim, "value": link_rollup.dim_value(value)}
    at = "coalesce(arr -> ({k}), arr -> -1)::bigint"
    if timed:  # the tail orders of the group's last facts: rows of a next-resolution bucket past ge
        tail, kinds = f"sum({at.format(k='%(e)s - day')}) FILTER (WHERE kind = 4 AND b > ge - day)", (0, 1, 2, 4)
    else:
        tail, kinds = f"sum({at.format(k='%(e)s - day')}) FILTER (WHERE kind = 3)", (0, 1, 2, 3)
    sql = f"""
        SELECT g, (sum({at.format(k='day - gs')}) FILTER (WHERE kind = 0))::bigint,
               (sum({at.format(k='day - gs')}) FILTER (WHERE kind = 1))::bigint,
               (coalesce(sum({at.format(k='ge - day')}) FILTER (WHERE kind = 2), 0) + coalesce({tail}, 0))::bigint
        FROM (SELECT {gexpr} AS g, {gs} AS gs, {ge} AS ge, day, kind, b, arr
              FROM {CustomerLinkDay._meta.db_table}
              WHERE dim = %(dim)s AND day >= %(s)s AND day <= %(e)s AND kind IN {kinds}
                    {"AND value = %(value)s" if value else ""}) r
        GROUP BY g"""
    out: dict = {}
    firsts: dict = {}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        for g_value, customers, retained, ltv in cur.fetchall():
            if not customers:
                continue
            key = _rollup_key(sel, dim, g_value)
            out[key] = {"customers": customers, "ltv_sum": Decimal(ltv) / 100, "retained": retained or 0,
                        "pending": 0, "lost": 0}
            firsts[key] = g_value
    if not out:
        return out
    # pending: by the group's bounds against d0
    straddle = None
    for key, acc in out.items():
        lo, hi = _bounds(sel, firsts[key]) if timed else (sel.start, sel.end)
        if hi < d0:
            acc["lost"] = acc["customers"] - acc["retained"]
        elif lo > d0:
            acc["pending"] = acc["customers"] - acc["retained"]
        else:
            straddle = (lo, hi)
    if straddle is not None:
        lo, hi = straddle
        counted = _straddle(sel, dim, lo, hi, d0, open_after, value)
        pending_side = (hi - d0).days <= (d0 - lo).days
        for key, n in counted.items():
            acc = out.get(key)
            if acc is None:
                continue
            rest = acc["customers"] - acc["retained"]
            acc["pending"], acc["lost"] = (n, rest - n) if pending_side else (rest - n, n)
        for key, acc in out.items():  # straddling groups with no fact on the side read
            lo_k, hi_k = _bounds(sel, firsts[key]) if timed else (sel.start, sel.end)
            if lo_k <= d0 <= hi_k and key not in counted:
                rest = acc["customers"] - acc["retained"]
                acc["pending"], acc["lost"] = (0, rest) if pending_side else (rest, 0)
    return out


def _straddle(sel, dim, lo, hi, d0, open_after, value) -> dict:
    """{group key: customers of the group [lo, hi] that is not retained whose last fact's window is
    still open (the pending side, facts of [d0, hi]) or closed (the lost side, facts of [lo, d0]),
    whichever side has fewer days."""
    pending_side = (hi - d0).days <= (d0 - lo).days
    g = sel.group_by
    gexpr = DIMS[g] if g in DIMS else "0"
    facts = ConversationFact._meta.db_table
    where = ["resolved_day >= %(a)s", "resolved_day <= %(z)s", "customer_id IS NOT NULL", "cv_retained IS NOT NULL"]
    params = {"a": d0 if pending_side else lo, "z": hi if pending_side else d0, "lo": lo, "hi": hi,
              "open_after": open_after}
    if value:
        where.append(f"{DIMS[dim]} = %(value)s")
        params["value"] = value
    window = "resolved_at > %(open_after)s" if pending_side else "resolved_at <= %(open_after)s"
    sql = f"""
        SELECT {gexpr}, count(*) FROM {facts}
        WHERE {' AND '.join(where)} AND (cv_next_{dim} IS NULL OR cv_next_{dim} > %(hi)s) AND NOT cv_retained
              AND (cv_retb_{dim} IS NULL OR cv_retb_{dim} < %(lo)s) AND {window}
        GROUP BY 1"""
    out = {}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        for g_value, n in cur.fetchall():
            if g in TIME_GROUPINGS:
                key = time_key(d0, g)
            elif g is None:
                key = None
            else:
                key = g_value or None
            out[key] = n
    return out


def _groups_fold(sel) -> dict:
    out: dict = {}
    for key, _cust, ltv, rank in rows(sel):
        acc = out.setdefault(key, {"customers": 0, "ltv_sum": Decimal(0), "retained": 0, "pending": 0,
                                   "lost": 0})
        acc["customers"] += 1
        acc["ltv_sum"] += ltv or Decimal(0)
        acc[("lost", "pending", "retained")[rank]] += 1
    return out


def _groups_sql(sel) -> dict:
    """The fold of `rows` in one statement of hash joins: the resolutions of the selection
    (index-only), per (group, customer) the best retention rank (an order within the window
    after a resolution), the customers' lifetime values, summed per group."""
    window = timedelta(seconds=settings.RETENTION_WINDOW)
    facts = ConversationFact.objects.filter(resolved_day__gte=sel.start, resolved_day__lte=sel.end,
                                            customer_id__isnull=False)
    facts = filter_dims(facts, sel, channel=DIMS["channel"], agent=DIMS["agent"], team=DIMS["team"])
    inner, params = (facts.annotate(g=group_annotation(sel, DIMS)).values_list("g", "customer_id", "resolved_at")
                     .query.sql_with_params())
    orders = Order._meta.db_table
    sql = f"""
        WITH r AS (
            SELECT f.g, f.customer_id,
                   max(CASE WHEN o.customer_id IS NOT NULL THEN 2 WHEN f.resolved_at + %s > %s THEN 1 ELSE 0 END)
                       AS rank
            FROM ({inner}) f
            LEFT JOIN {orders} o ON o.customer_id = f.customer_id AND o.placed_at > f.resolved_at
                                    AND o.placed_at <= f.resolved_at + %s
            GROUP BY f.g, f.customer_id),
        l AS (SELECT customer_id, sum((amount * 100)::bigint) AS s  -- exact cents: a bigint sum is cheaper
              FROM {orders} WHERE placed_at < %s GROUP BY customer_id)
        SELECT r.g, count(*), coalesce(sum(l.s), 0), count(*) FILTER (WHERE r.rank = 2),
               count(*) FILTER (WHERE r.rank = 1), count(*) FILTER (WHERE r.rank = 0)
        FROM r LEFT JOIN l ON l.customer_id = r.customer_id GROUP BY r.g"""
    args = [window, timezone.now(), *params, window, sel.end_at]
    out: dict = {}
    with connection.cursor() as cur:
        cur.execute(sql, args)
        for g, customers, ltv, retained, pending, lost in cur.fetchall():
            key = _group_key(sel, g)
            out[key] = {"customers": customers, "ltv_sum": Decimal(ltv) / 100, "retained": retained, "pending": pending,
                        "lost": lost}
    return out
