"""helpdesk.db.sql.Prepared: a queryset compiled once, run with other values,
gives what the queryset gives; the ingest's lookups compile once."""
from __future__ import annotations

import pytest
from django.db.models import F
from django.db.models.sql.compiler import SQLCompiler

from conversations import services
from conversations.models import ACTIVE_STATUSES, Conversation
from customers.models import Customer, Identity
from customers.services import customer_resolve
from helpdesk.db.sql import Prepared

pytestmark = pytest.mark.django_db


def _rows(objs):
    return [(o.pk, o.status, o.subject, o.team_id, o.team.name if o.team else None, o.last_message_at) for o in objs]


def test_prepared_equals_the_queryset(channels, inbound):
    for n, value in enumerate(["kim@example.org", "lee@example.org", "kim@example.org"]):
        services.ingest(inbound(channels.api, "email", value, subject=f"s{n}", new_conversation=True))
    Customer.objects.filter(identities__value="lee@example.org").update(attributes={"plan": "gold"})

    def queryset(customer_id):
        return (Conversation.objects.filter(customer_id=customer_id, status__in=ACTIVE_STATUSES)
                .select_related("team", "customer").order_by(F("last_message_at").desc(nulls_last=True), "-id"))

    prepared = Prepared(queryset(-1), {"customer": -1})
    for customer in Customer.objects.all():
        got = prepared.run(customer=customer.pk)
        assert _rows(got) == _rows(queryset(customer.pk)) and got
        assert [c.customer.attributes for c in got] == [customer.attributes] * len(got)  # converters applied
        assert all(not c._state.adding and c._state.db == "default" for c in got)
    assert prepared.run(customer=0) == []


def test_every_slot_must_be_a_parameter():
    with pytest.raises(ValueError):
        Prepared(Identity.objects.filter(value="a"), {"v": "b"})


def test_the_ingest_lookups_compile_once(channels, inbound, monkeypatch):
    services.ingest(inbound(channels.api, "email", "kim@example.org"))
    services.ingest(inbound(channels.api, "email", "kim@example.org"))  # both lookups run (and compiled) once
    compiled = []
    real = SQLCompiler.as_sql
    monkeypatch.setattr(SQLCompiler, "as_sql", lambda self, *a, **k: (compiled.append(self.query.model), real(self, *a, **k))[1])
    result = services.ingest(inbound(channels.api, "email", "kim@example.org", text="third"))
    assert Identity not in compiled and Conversation not in compiled, compiled
    assert Conversation.objects.get(pk=result.message.conversation_id).message_count == 3
    assert result.message.conversation.customer.pk == customer_resolve(identities=[("email", "kim@example.org")])[0].pk
