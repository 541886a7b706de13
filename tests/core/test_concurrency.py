"""Concurrent ingest on PostgreSQL: one customer, one conversation, no duplicates."""
import threading

import pytest
from django.db import connection

from conversations import services
from conversations.inbound import InboundMessage
from conversations.models import Conversation, Message
from customers.models import Customer, Identity
from tests.conftest import require
from tests.factories import ChannelFactory


def _run_concurrently(fns):
    barrier = threading.Barrier(len(fns))
    errors, results = [], []

    def run(fn):
        try:
            barrier.wait()
            results.append(fn())
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_messages_from_a_new_customer_at_the_same_instant():
    from django.conf import settings

    require(settings.IS_POSTGRES, "PostgreSQL (DATABASE_URL) for concurrency tests")
    chat = ChannelFactory(kind="chat", name="chat")
    wa = ChannelFactory(kind="whatsapp", name="wa")
    for round_ in range(5):
        msgs = [
            InboundMessage(channel=wa, external_id=f"r{round_}-a", identities=[("whatsapp", f"+1555000{round_:04d}")],
                           text="a"),
            InboundMessage(channel=wa, external_id=f"r{round_}-b", identities=[("phone", f"+1555000{round_:04d}")],
                           text="b"),
            InboundMessage(channel=chat, external_id=f"r{round_}-c",
                           identities=[("chat", f"v{round_}"), ("phone", f"+1555000{round_:04d}")], text="c"),
        ]
        results, errors = _run_concurrently([lambda m=m: services.ingest(m) for m in msgs])
        assert errors == []
        assert len({r.message.conversation_id for r in results}) == 1
    assert Customer.objects.count() == 5
    assert Conversation.objects.count() == 5
    assert Message.objects.count() == 15
    assert Identity.objects.filter(kind__in=["phone", "whatsapp"]).count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_delivery_twice_at_the_same_instant_is_stored_once():
    from django.conf import settings

    require(settings.IS_POSTGRES, "PostgreSQL (DATABASE_URL) for concurrency tests")
    wa = ChannelFactory(kind="whatsapp", name="wa")
    msg = lambda: InboundMessage(channel=wa, external_id="wamid.same", identities=[("whatsapp", "+15551239999")],
                                 text="hi")  # noqa: E731
    results, errors = _run_concurrently([lambda: services.ingest(msg()) for _ in range(4)])
    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len({r.message.pk for r in results}) == 1
    assert Message.objects.count() == 1
