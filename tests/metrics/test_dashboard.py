"""Dashboard permissions, rendering and CSV export; segments."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from customers.models import Order
from metrics.segments import filter_customers, segment_for
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db(transaction=True)


def login(user):
    c = Client()
    c.force_login(user)
    return c


def test_dashboard_permissions(personas, play, channels):
    play.inbound(channels.chat, "kim", timezone.now().isoformat())
    assert login(personas.ana).get("/dashboard/").status_code == 403
    assert login(personas.ana).get("/dashboard/export/channel.csv").status_code == 403
    assert Client().get("/dashboard/").status_code == 302  # login first
    r = login(personas.manager).get("/dashboard/")
    assert r.status_code == 200
    assert b"chart.umd.min.js" in r.content and b"open now" in r.content
    assert login(personas.admin).get("/dashboard/service-levels/").status_code == 200
    assert login(personas.manager).get("/dashboard/segments/").status_code == 200
    assert login(personas.ana).get("/dashboard/segments/").status_code == 403


def test_dashboard_csv_exports(personas, play, channels):
    play.inbound(channels.chat, "kim", timezone.now().isoformat())
    c = login(personas.manager)
    for table in ("summary", "channel", "team", "agent", "day", "distribution", "comments", "segments"):
        r = c.get(f"/dashboard/export/{table}.csv")
        assert r.status_code == 200 and r["Content-Type"].startswith("text/csv"), table
    body = c.get("/dashboard/export/channel.csv").content.decode()
    assert body.splitlines()[1].startswith("chat,")
    assert c.get("/dashboard/export/secrets.csv").status_code == 404


def test_business_hours_and_sla_screens(personas):
    c = login(personas.manager)
    r = c.post(f"/dashboard/service-levels/hours/{personas.billing.pk}/",
               {"timezone": "Europe/Berlin", "schedule_text": "Mon 09:00-17:00\nTue 09:00-12:00 13:00-17:00",
                "holidays_text": "2026-12-25"})
    assert r.status_code == 302
    bh = personas.billing.business_hours
    assert bh.schedule == {"0": [["09:00", "17:00"]], "1": [["09:00", "12:00"], ["13:00", "17:00"]]}
    r = c.post("/dashboard/service-levels/sla/new/", {"priority": "high", "first_response_minutes": 30,
                                                      "resolution_hours": 8, "active": "on"})
    assert r.status_code == 302
    assert login(personas.ana).get("/dashboard/service-levels/").status_code == 403


def test_segments(db):
    now = timezone.now()
    fresh = CustomerFactory(first_seen_at=now - timedelta(days=3))
    loyal = CustomerFactory(first_seen_at=now - timedelta(days=400), last_inbound_at=now - timedelta(days=10))
    Order.objects.create(customer=loyal, external_id="1", amount=Decimal("600"), placed_at=now - timedelta(days=20))
    risky = CustomerFactory(first_seen_at=now - timedelta(days=400), last_inbound_at=now - timedelta(days=120))
    gone = CustomerFactory(first_seen_at=now - timedelta(days=900), last_inbound_at=now - timedelta(days=800))
    assert segment_for(fresh).recency == "new"
    seg = segment_for(loyal)
    assert (seg.recency, seg.value, seg.lifetime_value) == ("active", "high", Decimal("600"))
    assert segment_for(risky).recency == "at_risk" and segment_for(risky).value == "low"
    assert segment_for(gone).recency == "former"
    from customers.models import Customer

    assert set(filter_customers(Customer.objects.all(), recency="active")) == {loyal}
    assert set(filter_customers(Customer.objects.all(), value="high")) == {loyal}
    assert set(filter_customers(Customer.objects.all(), recency="former")) == {gone}
