"""A new customer and their identities: one statement on PostgreSQL
(customers.services._create_with_identities), the ORM's INSERTs elsewhere."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from customers.models import Customer, Identity
from customers.services import customer_resolve

pytestmark = pytest.mark.django_db


def test_a_new_customer_with_two_identities():
    at = timezone.now() - timedelta(minutes=5)
    with CaptureQueriesContext(connection) as queries:
        customer, created = customer_resolve(identities=[("email", "kim@example.org"), ("chat", "v-1")],
                                             name="Kim", at=at, language="de")
    assert created and customer.pk and not customer._state.adding
    writes = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SELECT", "SAVEPOINT", "RELEASE"))]
    assert len(writes) == (1 if connection.vendor == "postgresql" else 2), writes
    stored = Customer.objects.get(pk=customer.pk)
    assert (stored.name, stored.language, stored.first_seen_at, stored.last_seen_at) == ("Kim", "de", at, at)
    assert sorted(Identity.objects.filter(customer=stored).values_list("kind", "value", "created_at")) == [
        ("chat", "v-1", at), ("email", "kim@example.org", at)]
    # known now: the same customer again, nothing created
    assert customer_resolve(identities=[("chat", "v-1")]) == (stored, False)


def test_a_taken_identity_fails_the_whole_statement():
    from customers.services import _create_with_identities

    owner, _ = customer_resolve(identities=[("chat", "v-taken")])
    before = Customer.objects.count()
    at = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        _create_with_identities(Customer(first_seen_at=at, last_seen_at=at, created_at=at),
                                [Identity(kind="email", value="new@example.org", created_at=at),
                                 Identity(kind="chat", value="v-taken", created_at=at)])
    assert Customer.objects.count() == before
    assert not Identity.objects.filter(value="new@example.org").exists()
    assert Identity.objects.get(value="v-taken").customer_id == owner.pk
