"""Daily rollup of the customer links: CLTV and retention of a period in one row per day and
dimension value instead of one row per resolution (metrics.customer_links, KPI.md).

A period's customer figures count each fact of the period against its own links (e.g. the
customer is counted on its first fact of the group: `prev < gs`). Each condition compares a gap
of the fact with the distance from its day to a bound of the period: with d the fact's day,
gs/ge the bounds of its group and e the end of the period,

* customers: `d - prev > d - gs` (no previous fact: always);
* retained: the fact is retained and `d - retb > d - gs`;
* lifetime value: on the last fact of the group (`next - d > ge - d`) its `cv_ltv_cents`, plus
  the customer's orders placed on a later local day up to the end of the period (the fact's
  `cv_tail`: [[days after d, cents]]; counted when `days <= e - d`).

So for each (dimension, value, day) a cumulative array over that distance answers every
period: `arr[k]` is the count (or sum) of the day's facts whose gap exceeds k. Rows
(`CustomerLinkDay`): kind CUSTOMERS and RETAINED indexed by `d - gs`; LTV (`cv_ltv_cents`) by
`ge - d`; TAIL_PERIOD (the tail orders of facts that are last of the period, `off <= k < next`)
by `e - d`, for selections grouped by dimension or not grouped (ge = e); TAIL rows, one per
`b = min(next - d, TAIL_NEXT)`, by `e - d`, for time groupings (ge - d < TAIL_NEXT).

Arrays are kept short: `arr[k]` for k past the end is the last element. Gaps of CAP days or
more (and missing neighbours) are stored as CAP, so the rollup answers periods shorter than CAP
days; longer ones read the facts (metrics.kpis.customer_base). Pending retention depends on the
clock (a window still open): it is derived, not stored (customer_base).

Upkeep: `customer_links.refresh` subtracts the contribution of each fact row whose links it
rewrites (and of the facts the engine deleted) and adds the new one (`contributions`, `Acc`,
`apply`);
`rebuild` recomputes everything from the facts (the full recompute). A test compares the two.
"""
from __future__ import annotations

import json
from datetime import date
from itertools import accumulate

from django.db import connection

CAP = 400  # days: periods up to CAP days read the rollup
TAIL_NEXT = 31  # time groupings: a group spans at most 31 days (months)
CUSTOMERS, RETAINED, LTV, TAIL_PERIOD, TAIL = 0, 1, 2, 3, 4
LOCK = 7_240_013  # pg_advisory_xact_lock key: one writer of the rollup rows at a time
DIM_FIELDS = {"all": None, "channel": "origin_kind", "agent": "resolution_agent_id", "team": "resolution_team_id"}


def dim_value(value) -> str:
    return "" if value is None else str(value)


def _gap(later, earlier) -> int:
    if later is None or earlier is None:
        return CAP
    return min((later - earlier).days, CAP)


def contributions(f):
    """[(key, start, end, amount)]: the fact adds `amount` to `arr[k]` for start <= k < end of the
    row `key` = (dim, value, day, kind, b). `f` maps field names to values (a fact's row)."""
    if f["cv_retained"] is None or f["resolved_day"] is None or f.get("customer_id") is None:
        return []
    d = f["resolved_day"]
    retained = f["cv_retained"]
    ltv = f["cv_ltv_cents"] or 0
    tail = f["cv_tail"] or ()
    out = []
    for dim, field in DIM_FIELDS.items():
        v = "" if field is None else dim_value(f[field])
        a = d - f[f"cv_prev_{dim}"] if f[f"cv_prev_{dim}"] is not None else None
        out.append(((dim, v, d, CUSTOMERS, 0), 0, CAP if a is None else min(a.days, CAP), 1))
        if retained:
            out.append(((dim, v, d, RETAINED, 0), 0, _gap(d, f[f"cv_retb_{dim}"]), 1))
        n = _gap(f[f"cv_next_{dim}"], d)
        if ltv:
            out.append(((dim, v, d, LTV, 0), 0, n, ltv))
        b = min(n, TAIL_NEXT)
        for off, cents in tail:
            if off < n:
                out.append(((dim, v, d, TAIL_PERIOD, 0), off, n, cents))
            if b > 0:
                out.append(((dim, v, d, TAIL, b), off, CAP, cents))
    return out


class Acc:
    """Dense difference arrays per row key; `rows()` gives the trimmed cumulative arrays."""

    def __init__(self):
        self.diff: dict = {}
        self.hi: dict = {}

    def add(self, items, sign: int = 1) -> None:
        diff, hi = self.diff, self.hi
        for key, start, end, amount in items:
            if start >= end:
                continue
            row = diff.get(key)
            if row is None:
                row = diff[key] = [0] * (CAP + 1)
                hi[key] = 0
            row[start] += sign * amount
            row[end] -= sign * amount
            top = end if end < CAP else start
            if top > hi[key]:
                hi[key] = top

    def rows(self):
        """(key, trimmed cumulative array) of every row touched (arrays may be all zeros)."""
        for key, row in self.diff.items():
            yield key, list(accumulate(row[:self.hi[key] + 1]))


def _trim(arr: list) -> list:
    n = len(arr)
    while n > 1 and arr[n - 2] == arr[n - 1]:
        n -= 1
    return arr[:n]


def _plus(a: list, b: list) -> list:
    n = max(len(a), len(b))
    a = a + [a[-1]] * (n - len(a))
    b = b + [b[-1]] * (n - len(b))
    return _trim([x + y for x, y in zip(a, b)])


def _lock(cur) -> None:
    if connection.vendor == "postgresql":
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK])


def apply(acc: Acc) -> None:
    """Add the accumulated differences to the stored rows (call in a transaction)."""
    from .models import CustomerLinkDay

    deltas = {key: arr for key, arr in acc.rows() if any(arr)}
    if not deltas:
        return
    table = CustomerLinkDay._meta.db_table
    keys = sorted(deltas)
    found = {}
    with connection.cursor() as cur:
        _lock(cur)
        for i in range(0, len(keys), 150):
            chunk = keys[i:i + 150]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
            params = [x for k in chunk for x in k]
            cur.execute(f"""WITH v(dim, value, day, kind, b) AS (VALUES {values})
                            SELECT t.id, t.dim, t.value, t.day, t.kind, t.b, t.arr FROM {table} t
                            JOIN v ON t.dim = v.dim AND t.value = v.value AND t.day = v.day AND t.kind = v.kind
                                      AND t.b = v.b""", params)
            for rid, dim, value, day, kind, b, arr in cur.fetchall():
                if isinstance(day, str):  # SQLite
                    day = date.fromisoformat(day)
                found[(dim, value, day, kind, b)] = (rid, arr)
    create, update, delete = [], [], []
    for key in keys:
        if key in found:
            rid, arr = found[key]
            if isinstance(arr, str):
                arr = json.loads(arr)
            new = _plus(arr, deltas[key])
            if any(new):
                update.append(CustomerLinkDay(id=rid, arr=new))
            else:
                delete.append(rid)
        else:
            create.append(CustomerLinkDay(dim=key[0], value=key[1], day=key[2], kind=key[3], b=key[4],
                                          arr=_trim(deltas[key])))
    if create:
        CustomerLinkDay.objects.bulk_create(create, batch_size=1000)
    if update:
        CustomerLinkDay.objects.bulk_update(update, ["arr"], batch_size=1000)
    if delete:
        CustomerLinkDay.objects.filter(id__in=delete).delete()


READ_FIELDS = ["customer_id", "resolved_day", "origin_kind", "resolution_agent_id", "resolution_team_id"]


def fact_row(fact) -> dict:
    """A ConversationFact instance as the mapping `contributions` reads."""
    from .customer_links import FIELDS

    return {name: getattr(fact, name) for name in (*READ_FIELDS, *FIELDS)}


def rebuild() -> None:
    """The whole rollup from the facts' links (call in the full recompute's transaction, after the
    links): one streamed pass over the resolved facts; on PostgreSQL the gaps come computed and the
    rows go back with COPY."""
    from .models import CustomerLinkDay

    if connection.vendor == "postgresql":
        _write(_text(_fetch_pg()))
        return
    from .customer_links import FIELDS
    from .models import ConversationFact

    acc = Acc()
    cols = [*READ_FIELDS, *FIELDS]
    qs = (ConversationFact.objects.filter(cv_retained__isnull=False, customer_id__isnull=False)
          .values_list(*cols))
    for values in qs.iterator(chunk_size=20_000):
        acc.add(contributions(dict(zip(cols, values))))
    with connection.cursor() as cur:
        _lock(cur)
        cur.execute(f"DELETE FROM {CustomerLinkDay._meta.db_table}")
    CustomerLinkDay.objects.bulk_create(
        [CustomerLinkDay(dim=k[0], value=k[1], day=k[2], kind=k[3], b=k[4], arr=arr)
         for k, arr in acc.rows() if any(arr)], batch_size=1000)


_FORKED: dict = {}


def rebuild_in_background():
    """`rebuild` on PostgreSQL with the Python fold in a forked process, so it runs beside the
    caller's next statements (the full recompute's indexes and histograms). Reads the facts now,
    in the caller's transaction; returns `finish()`, which writes the rows (same transaction);
    `finish.cancel()` stops the child when the caller fails before finishing."""
    import multiprocessing

    _FORKED["rows"] = _fetch_pg()
    try:
        pool = multiprocessing.get_context("fork").Pool(1)
    finally:
        _FORKED.clear()  # the child has its copy
    result = pool.apply_async(_forked_text)

    def finish() -> None:
        try:
            text = result.get()
        finally:
            pool.terminate()  # no cleanup in the child: it holds a copy of our connection
        _write(text)

    finish.cancel = pool.terminate
    return finish


def _forked_text() -> str:
    return _text(_FORKED["rows"])


def _write(text: str) -> None:
    import io

    from .models import CustomerLinkDay

    table = CustomerLinkDay._meta.db_table
    with connection.cursor() as cur:
        _lock(cur)
        cur.execute(f"DELETE FROM {table}")
        # size positionally: under DEBUG Django's debug cursor passes *args only
        cur.copy_expert(f"COPY {table} (dim, value, day, kind, b, arr) FROM STDIN", io.StringIO(text), 1 << 20)


def _fetch_pg() -> list:
    """The rows `_text` folds: per resolved fact its day, verdict, lifetime value, tail and per
    dimension (value, gap to the previous, to the latest earlier retained, to the next), capped."""
    from django.db import transaction

    from .models import ConversationFact

    facts = ConversationFact._meta.db_table
    cols = []
    for dim, field in DIM_FIELDS.items():
        value = "''" if field is None else f"coalesce({field}::text, '')"
        cols += [value, f"coalesce(least(resolved_day - cv_prev_{dim}, {CAP}), {CAP})",
                 f"coalesce(least(resolved_day - cv_retb_{dim}, {CAP}), {CAP})",
                 f"coalesce(least(cv_next_{dim} - resolved_day, {CAP}), {CAP})"]
    sql = (f"SELECT resolved_day, cv_retained, coalesce(cv_ltv_cents, 0), cv_tail::text, {', '.join(cols)} "
           f"FROM {facts} WHERE cv_retained IS NOT NULL AND customer_id IS NOT NULL")
    with transaction.atomic(), connection.connection.cursor(name="link_rollup_rebuild") as cur:
        cur.itersize = 50_000
        cur.execute(sql)
        return cur.fetchall()


def _text(facts: list) -> str:
    """`contributions` of every fetched fact (`_fetch_pg`: the same arithmetic; tests compare the
    rollup with the generic fold) as COPY text of the rollup rows."""
    from .engine import _copy_text  # COPY's text format, as the engine writes it

    # integer row keys (hashing tuples of dates was most of the time): ((dim value, day) * 8 + kind) * 64 + b
    index: dict = {}
    names: list = []
    rows: dict = {}
    size = CAP + 2  # the last slot: the highest limit below CAP (the trimmed length - 1)
    dims = list(DIM_FIELDS)
    for r in facts:
        day = r[0].toordinal()
        retained, ltv, tail = r[1], r[2], r[3]
        tail = json.loads(tail) if tail else ()
        for i in range(4):
            j = 4 + 4 * i
            v, a, b, n = r[j], r[j + 1], r[j + 2], r[j + 3]
            dv = index.get((i, v))
            if dv is None:
                dv = index[(i, v)] = len(names)
                names.append((dims[i], v))
            base = (dv * 1_000_000 + day) * 512
            if a > 0:
                row = rows.get(base)
                if row is None:
                    row = rows[base] = [0] * size
                row[0] += 1
                row[a] -= 1
                if a < CAP and a > row[-1]:
                    row[-1] = a
            if retained and b > 0:
                key = base + RETAINED * 64
                row = rows.get(key)
                if row is None:
                    row = rows[key] = [0] * size
                row[0] += 1
                row[b] -= 1
                if b < CAP and b > row[-1]:
                    row[-1] = b
            if ltv and n > 0:
                key = base + LTV * 64
                row = rows.get(key)
                if row is None:
                    row = rows[key] = [0] * size
                row[0] += ltv
                row[n] -= ltv
                if n < CAP and n > row[-1]:
                    row[-1] = n
            if tail:
                bucket = min(n, TAIL_NEXT)
                for off, cents in tail:
                    if off < n:
                        key = base + TAIL_PERIOD * 64
                        row = rows.get(key)
                        if row is None:
                            row = rows[key] = [0] * size
                        row[off] += cents
                        row[n] -= cents
                        top = n if n < CAP else off
                        if top > row[-1]:
                            row[-1] = top
                    if bucket > 0:
                        key = base + TAIL * 64 + bucket
                        row = rows.get(key)
                        if row is None:
                            row = rows[key] = [0] * size
                        row[off] += cents
                        row[CAP] -= cents
                        if off > row[-1]:
                            row[-1] = off
    out = []
    for key, row in rows.items():
        b = key % 64
        kind = (key // 64) % 8
        dv, day = divmod(key // 512, 1_000_000)
        dim, v = names[dv]
        arr = list(accumulate(row[:row[-1] + 1]))
        if any(arr):
            out.append((dim, day, f"{dim}\t{_copy_text(v)}\t{date.fromordinal(day).isoformat()}\t{kind}\t{b}\t"
                                  f"[{','.join(map(str, arr))}]\n"))
    # in (dim, day) order, the order of the reads' index: a period's rows on neighbouring pages
    out.sort(key=lambda r: (r[0], r[1]))
    return "".join(line for _dim, _day, line in out)


def snapshot() -> dict:
    """{(dim, value, day, kind, b): arr} of every row (tests: incremental == rebuild)."""
    from .models import CustomerLinkDay

    return {(r.dim, r.value, r.day, r.kind, r.b): r.arr for r in CustomerLinkDay.objects.all()}
