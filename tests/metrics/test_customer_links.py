"""Customer links (metrics.customer_links): CLTV and retention read from them equal the
per-customer fold on random data; incremental refreshes equal a rebuild; the PostgreSQL
rebuild statement equals the Python fold; the engine, order writes, merges and imports keep
them current."""
from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from customers import services as cust_services
from customers.models import Customer, Order
from metrics import customer_links, link_rollup
from metrics.kpis import customer_base
from metrics.kpis.base import Selection
from metrics.models import ConversationFact

pytestmark = pytest.mark.django_db(transaction=True)
PG = connection.vendor == "postgresql"


def _random_history(rng: random.Random, customers: int = 12, facts: int = 90, orders: int = 40):
    """Facts written directly (the links depend only on facts and orders): several resolutions per
    customer, same-day ones, ties in resolved_at, unresolved ones, no customer; orders before,
    between and after them."""
    tz = ZoneInfo(settings.TIME_ZONE)
    today = timezone.localdate()
    custs = [Customer.objects.create(name=f"c{i}", first_seen_at=timezone.now(), last_seen_at=timezone.now())
             for i in range(customers)]
    rows = []
    for n in range(facts):
        cust = rng.choice(custs).pk if rng.random() > 0.05 else None
        day = today - timedelta(days=rng.randrange(0, 200))
        at = datetime.combine(day, time(rng.choice([0, 9, 9, 17, 23]), rng.choice([0, 0, 30])), tzinfo=tz)
        resolved = rng.random() > 0.1
        rows.append(ConversationFact(
            conversation_id=10_000 + n, customer_id=cust, started_at=at - timedelta(hours=1),
            resolved_at=at if resolved else None, resolved_day=day if resolved else None,
            origin_kind=rng.choice(["email", "chat", ""]), resolution_agent_id=rng.choice([None, 1, 2]),
            resolution_team_id=rng.choice([None, 7, 8])))
    ConversationFact.objects.bulk_create(rows)
    for n in range(orders):
        placed = timezone.now() - timedelta(days=rng.randrange(-5, 260), hours=rng.randrange(0, 24))
        if n % 4 == 0:  # exactly at a local midnight: the end of one day, not of the day before
            placed = datetime.combine(today - timedelta(days=rng.randrange(0, 200)), time(0), tzinfo=tz)
        Order.objects.create(customer=rng.choice(custs), external_id=f"o{n}",
                             amount=Decimal(rng.randrange(100, 20000)) / 100, placed_at=placed)
    return custs


def _selections(today):
    for start, end in ((today - timedelta(days=89), today), (today - timedelta(days=150), today - timedelta(days=40)),
                       (today - timedelta(days=9), today), (today - timedelta(days=199), today)):
        for group_by in (None, "channel", "agent", "team", "day", "week", "month"):
            yield Selection(start, end, group_by)
        yield Selection(start, end, None, channel="email")
        yield Selection(start, end, "week", agent_id=1)
        yield Selection(start, end, "team", team_id=8)
        yield Selection(start, end, None, channel="", team_id=None)


@pytest.mark.skipif(not PG, reason="the links are read on PostgreSQL (SQLite folds per customer)")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_links_read_equals_fold(seed):
    _random_history(random.Random(seed))
    customer_links.rebuild()
    assert customer_links.usable()
    today = timezone.localdate()
    compared = 0
    for sel in _selections(today):
        dim = customer_base.links_dim(sel)
        assert dim is not None
        fast = customer_base._groups_links(sel, dim)
        assert fast == customer_base._groups_fold(sel), sel
        assert fast == customer_base._groups_sql(sel), sel
        compared += bool(fast)
    assert compared > 20
    # what the figures go through picks the links
    assert customer_base.groups(Selection(today - timedelta(days=89), today)) == customer_base._groups_fold(
        Selection(today - timedelta(days=89), today))


@pytest.mark.skipif(not PG, reason="the daily rollup of the links is read on PostgreSQL (SQLite folds per customer)")
@pytest.mark.parametrize("seed,window_days", [(1, 90), (2, 30), (3, 150), (6, 1)])
def test_rollup_read_equals_fold(seed, window_days):
    """The figures from the daily rollup equal the per-customer fold, for periods before, across and
    after the day the retention window opened on (the pending customers are derived there)."""
    with override_settings(RETENTION_WINDOW=window_days * 86400):
        _random_history(random.Random(seed), customers=15, facts=140, orders=60)
        customer_links.rebuild()
        assert customer_links.rollup_usable()
        today = timezone.localdate()
        compared = pending = lost = 0
        sels = list(_selections(today)) + [Selection(today - timedelta(days=199), today - timedelta(days=160), g)
                                           for g in (None, "week", "agent")]
        for sel in sels:
            dim = customer_base.links_dim(sel)
            rolled = customer_base._groups_rollup(sel, dim)
            assert rolled == customer_base._groups_fold(sel), sel
            assert all(type(v[k]) is int for v in rolled.values() for k in ("customers", "retained", "pending", "lost"))
            compared += bool(rolled)
            pending += sum(v["pending"] for v in rolled.values())
            lost += sum(v["lost"] for v in rolled.values())
        assert compared > 20
        assert lost or window_days > 90
        assert pending or window_days == 1
        assert customer_base.groups(Selection(today - timedelta(days=89), today, "week")) == customer_base._groups_fold(
            Selection(today - timedelta(days=89), today, "week"))
        # a period of CAP days or more reads the facts
        long = Selection(today - timedelta(days=link_rollup.CAP), today)
        assert customer_base.groups(long) == customer_base._groups_fold(long)


@pytest.mark.skipif(not PG, reason="the daily rollup of the links is read on PostgreSQL (SQLite folds per customer)")
def test_rollup_every_period_of_a_small_history():
    """Every period of a small history with the edges on the same day: an order on the day of a
    customer's next resolution, orders on resolution days, two resolutions on one day; periods
    swept over all starts and ends, grouped and not, with the retention window opening inside."""
    tz = ZoneInfo(settings.TIME_ZONE)
    today = timezone.localdate()
    custs = [Customer.objects.create(name=f"c{i}", first_seen_at=timezone.now(), last_seen_at=timezone.now())
             for i in range(5)]

    def day(n, hour=12):
        return datetime.combine(today - timedelta(days=n), time(hour), tzinfo=tz)

    facts = [(0, 40, "email", 1), (0, 30, "chat", 1), (0, 30, "email", 2), (0, 12, "email", 1),
             (1, 38, "chat", 2), (1, 20, "chat", 2), (2, 33, "email", None), (2, 5, "email", 1),
             (3, 41, "chat", 1), (3, 24, "email", 1), (4, 22, "chat", None), (4, 21, "chat", 2)]
    ConversationFact.objects.bulk_create([
        ConversationFact(conversation_id=500 + i, customer_id=custs[c].pk, started_at=day(n, 9),
                         resolved_at=day(n, 10 + i % 3), resolved_day=today - timedelta(days=n), origin_kind=kind,
                         resolution_agent_id=agent, resolution_team_id=None)
        for i, (c, n, kind, agent) in enumerate(facts)])
    for i, (c, n, hour) in enumerate([(0, 30, 23), (0, 35, 12), (0, 12, 8), (1, 20, 23), (1, 25, 1), (2, 30, 12),
                                      (2, 6, 12)]):
        Order.objects.create(customer=custs[c], external_id=f"s{i}", amount=Decimal(10 + i), placed_at=day(n, hour))
    compared = lost = pending = 0
    with override_settings(RETENTION_WINDOW=22 * 86400):  # d0 = today - 22
        customer_links.rebuild()
        assert ConversationFact.objects.filter(cv_tail__isnull=False).exists()
        for lo in range(42, -1, -3):
            for hi in range(lo, -1, -4):
                for group_by in (None, "week", "agent", "channel"):
                    sel = Selection(today - timedelta(days=lo), today - timedelta(days=hi), group_by)
                    rolled = customer_base._groups_rollup(sel, customer_base.links_dim(sel))
                    assert rolled == customer_base._groups_fold(sel), sel
                    compared += bool(rolled)
                    lost += sum(v["lost"] for v in rolled.values())
                    pending += sum(v["pending"] for v in rolled.values())
    assert compared > 250 and lost and pending


def test_links_dim_coverage():
    d = timezone.localdate()
    assert customer_base.links_dim(Selection(d, d)) == "all"
    assert customer_base.links_dim(Selection(d, d, "month")) == "all"
    assert customer_base.links_dim(Selection(d, d, "agent", agent_id=3)) == "agent"
    assert customer_base.links_dim(Selection(d, d, "week", channel="chat")) == "channel"
    assert customer_base.links_dim(Selection(d, d, "team", agent_id=3)) is None
    assert customer_base.links_dim(Selection(d, d, None, channel="chat", team_id=2)) is None


@pytest.mark.skipif(not PG, reason="PostgreSQL statement")
@pytest.mark.parametrize("seed", [4, 5])
def test_sql_rebuild_equals_python(seed):
    custs = _random_history(random.Random(seed))
    customer_links.rebuild()  # the statement
    by_sql = customer_links.snapshot()
    ConversationFact.objects.update(**dict.fromkeys(customer_links.FIELDS))
    customer_links.refresh([c.pk for c in custs], window=settings.RETENTION_WINDOW)
    assert customer_links.snapshot() == by_sql
    assert any(v[1] for v in by_sql.values()) and any(v[1] is False for v in by_sql.values())
    fields = customer_links.FIELDS
    for name in ("cv_ltv_cents", "cv_tail", "cv_prev_all", "cv_next_agent", "cv_retb_all", "cv_retb_channel"):
        assert any(v[fields.index(name)] for v in by_sql.values()), name


def test_incremental_refresh_equals_rebuild():
    rng = random.Random(9)
    custs = _random_history(rng)
    customer_links.rebuild()
    for n in range(25):  # order writes through the ORM refresh their customers (signals)
        op = rng.random()
        if op < 0.5:
            Order.objects.create(customer=rng.choice(custs), external_id=f"x{n}", amount=Decimal("9.99"),
                                 placed_at=timezone.now() - timedelta(days=rng.randrange(0, 200)))
        elif op < 0.7:
            o = Order.objects.order_by("?").first()
            o.customer = rng.choice(custs)  # moved to another customer: both refreshed
            o.placed_at -= timedelta(days=3)
            o.save()
        else:
            Order.objects.order_by("?").first().delete()
    incremental, rolled = customer_links.snapshot(), link_rollup.snapshot()
    customer_links.rebuild()
    assert customer_links.snapshot() == incremental
    assert link_rollup.snapshot() == rolled  # the daily rollup followed each refresh
    assert any(k[3] == link_rollup.TAIL for k in rolled) and any(k[3] == link_rollup.RETAINED for k in rolled)


def test_refresh_does_nothing_until_computed_and_reads_fall_back():
    from metrics.models import MetricsState

    custs = _random_history(random.Random(3), customers=3, facts=10, orders=5)
    MetricsState.objects.all().delete()
    assert not customer_links.usable()
    assert customer_links.refresh([c.pk for c in custs]) == 0
    customer_links.rebuild()
    assert customer_links.usable()
    with override_settings(RETENTION_WINDOW=settings.RETENTION_WINDOW + 1):
        assert not customer_links.usable()  # computed with another window: read the slow way


def test_engine_order_merge_keep_links_current(play, channels, personas):
    """Played through the services with the links computed: after each step they equal a rebuild."""
    customer_links.rebuild()
    now = timezone.now().replace(microsecond=0)

    def at(days, minutes=0):
        return (now - timedelta(days=days) + timedelta(minutes=minutes)).isoformat()

    kim = play.inbound(channels.chat, "kim", at(40)).message.conversation
    play.reply(kim, personas.ana, at(40, 5))
    play.resolve(kim, at(40, 10))
    kim2 = play.inbound(channels.chat, "kim", at(20), new_conversation=True).message.conversation
    play.reply(kim2, personas.ana, at(20, 5))
    play.resolve(kim2, at(20, 10))
    fact = ConversationFact.objects.get(conversation_id=kim2.pk)
    assert fact.cv_prev_all == ConversationFact.objects.get(conversation_id=kim.pk).resolved_day
    assert fact.cv_retained is False

    def assert_current():
        got, rolled = customer_links.snapshot(), link_rollup.snapshot()
        customer_links.rebuild()
        assert customer_links.snapshot() == got
        assert link_rollup.snapshot() == rolled

    assert_current()
    # an order 5 days after kim's first resolution: retained
    cust_services.order_upsert(customer=kim.customer, external_id="k1", amount=Decimal("20.00"),
                               placed_at=now - timedelta(days=35))
    assert ConversationFact.objects.get(conversation_id=kim.pk).cv_retained is True
    assert ConversationFact.objects.get(conversation_id=kim2.pk).cv_retb_all is not None
    assert_current()
    # lee has an order; merged into kim, kim's links see it
    lee = play.inbound(channels.email, "lee@x.org", at(15)).message.conversation
    cust_services.order_upsert(customer=lee.customer, external_id="l1", amount=Decimal("5.00"),
                               placed_at=now - timedelta(days=19))
    cust_services.customer_merge(survivor=kim.customer, merged=lee.customer)
    assert ConversationFact.objects.get(conversation_id=kim2.pk).cv_retained is True
    assert_current()
    # a resolved conversation (links, rollup rows) reopened and resolved again: its fact is written
    # anew, its old contribution leaves the rollup
    play.reopen(kim, at(30))
    play.resolve(kim, at(12))
    assert ConversationFact.objects.get(conversation_id=kim.pk).resolved_day == timezone.localdate(
        now - timedelta(days=12))
    assert_current()
    # merged away: its fact is deleted
    from conversations import services as conv_services

    kim.refresh_from_db()
    kim2.refresh_from_db()
    conv_services.merge_conversations(survivor=kim2, merged=kim)
    assert not ConversationFact.objects.filter(conversation_id=kim.pk).exists()
    assert_current()


@pytest.mark.parametrize("fold", ["batch", "none"])
def test_import_refreshes_links(fold):
    """Orders imported in bulk (COPY / bulk_create, no signals) refresh their customers' links,
    also those of customers whose conversations the import does not touch."""
    import io
    import json

    from metrics import engine, importer

    customer_links.rebuild()
    now = timezone.now().replace(microsecond=0)

    def at(days):
        return (now - timedelta(days=days)).isoformat()

    lines = [{"type": "customer", "external_id": f"c{i}", "name": f"C{i}"} for i in range(2)]
    lines += [{"type": "conversation", "external_id": f"t{i}", "customer": f"c{i}", "subject": "s",
               "messages": [{"external_id": f"m{i}", "direction": "inbound", "channel": "email", "body": "hi",
                             "created_at": at(30)}],
               "events": [{"type": "resolved", "at": at(29)}]} for i in range(2)]
    importer.run(io.BufferedReader(io.BytesIO("\n".join(json.dumps(x) for x in lines).encode())), fold="batch")
    # a second import with orders only
    orders = [{"type": "order", "external_id": f"o{i}", "customer": f"c{i}", "amount": "12.50",
               "placed_at": at(20 + i)} for i in range(2)]
    importer.run(io.BufferedReader(io.BytesIO("\n".join(json.dumps(x) for x in orders).encode())), fold=fold)
    facts = list(ConversationFact.objects.filter(resolved_day__isnull=False))
    assert len(facts) == 2 and all(f.cv_retained and f.cv_next_order_at for f in facts)
    engine.flush()
    got, rolled = customer_links.snapshot(), link_rollup.snapshot()
    customer_links.rebuild()
    assert customer_links.snapshot() == got
    assert link_rollup.snapshot() == rolled
