"""CLTV and post-service retention on a hand-computed scenario; on PostgreSQL the
one-statement path equals the generic fold for every grouping."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from customers.models import Order
from metrics import report
from metrics.kpis import customer_base
from metrics.kpis.base import Selection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def scenario(play, channels, personas):
    now = timezone.now().replace(microsecond=0)

    def at(days, minutes=0):
        return (now - timedelta(days=days) + timedelta(minutes=minutes)).isoformat()

    kim = play.inbound(channels.chat, "kim", at(30)).message.conversation
    play.reply(kim, personas.ana, at(30, 5))
    play.resolve(kim, at(30, 10))
    lee = play.inbound(channels.email, "lee@x.org", at(10)).message.conversation
    play.reply(lee, personas.ana, at(10, 5))
    play.resolve(lee, at(10, 10))
    max_ = play.inbound(channels.whatsapp, "+15550001111", at(100)).message.conversation
    play.reply(max_, personas.bob, at(100, 5))
    play.resolve(max_, at(100, 10))
    # kim: an order 10 days after the resolution (retained) and an older one; max: only an old order (lost);
    # lee: no order, window still open (pending); an order after the period does not count in the CLTV
    Order.objects.create(customer=kim.customer, external_id="k1", amount=Decimal("100.99"), placed_at=now - timedelta(days=20))
    Order.objects.create(customer=kim.customer, external_id="k0", amount=Decimal("50.00"), placed_at=now - timedelta(days=200))
    Order.objects.create(customer=max_.customer, external_id="m0", amount=Decimal("30.00"), placed_at=now - timedelta(days=300))
    return timezone.localdate()


def test_cltv_and_retention_hand_computed(scenario):
    today = scenario
    m = report.build(Selection(today - timedelta(days=119), today))[0]
    assert m["cltv"] == "60.33"  # (150.99 + 0 + 30) / 3 customers
    assert m["retention"] == {"rate": 0.5, "retained": 1, "lost": 1, "pending": 1}
    # the last 60 days: kim (retained, 150.99) and lee (pending, 0): 75.495 rounded half-even
    m = report.build(Selection(today - timedelta(days=59), today))[0]
    assert m["cltv"] == "75.50" and m["retention"] == {"rate": 1.0, "retained": 1, "lost": 0, "pending": 1}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL statement")
@pytest.mark.parametrize("group_by", [None, "channel", "agent", "team", "day", "week", "month"])
def test_sql_path_equals_fold(scenario, group_by):
    today = scenario
    for start in (today - timedelta(days=119), today - timedelta(days=59)):
        sel = Selection(start, today, group_by)
        sql = customer_base._groups_sql(sel)
        assert sql and sql == customer_base._groups_fold(Selection(start, today, group_by))
