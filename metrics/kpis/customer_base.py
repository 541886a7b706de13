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
        return sel.memo("customer_groups", lambda: _groups_sql(sel))
    return sel.memo("customer_groups", lambda: _groups_fold(sel))


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
