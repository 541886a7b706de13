"""reply(): default channel, outbox states, retries with backoff, re-enqueue of lost tasks."""
from datetime import timedelta

import pytest
from django.utils import timezone

from channels_app import delivery
from conversations import services, tasks
from conversations.models import ConversationEvent, Message
from tests.fakeprovider import FakeProvider

pytestmark = pytest.mark.django_db


@pytest.fixture
def conv(channels, inbound):
    return services.ingest(inbound(channels.api, "email", "kim@example.org", name="Kim Lee")).message.conversation


def test_reply_defaults_to_customer_latest_inbound_channel(channels, inbound, personas):
    from tests.factories import IdentityFactory

    first = services.ingest(inbound(channels.chat, "chat", "visitor-1"))
    conv = first.message.conversation
    IdentityFactory(customer=conv.customer, kind="phone", value="+15551230001")
    services.ingest(inbound(channels.whatsapp, "whatsapp", "+15551230001"))
    conv.refresh_from_db()
    channel, reason = services.default_reply_channel(conv)
    assert channel == channels.whatsapp and reason["kind"] == "whatsapp"
    msg = services.reply(conversation=conv, author=personas.ana, body="On it")
    assert msg.channel == channels.whatsapp and msg.recipient == "+15551230001"
    assert msg.delivery_status == "queued"


def test_reply_without_identity_on_channel_is_refused(conv, channels, personas):
    with pytest.raises(services.NoRecipient):
        services.reply(conversation=conv, author=personas.ana, body="x", channel=channels.sms)
    assert not Message.objects.filter(direction="outbound").exists()


def test_public_reply_sets_first_reply_clears_waiting_and_assigns(conv, personas, django_capture_on_commit_callbacks):
    assert conv.waiting_since is not None
    with django_capture_on_commit_callbacks(execute=True):
        services.reply(conversation=conv, author=personas.ana, body="Hello")
    conv.refresh_from_db()
    assert conv.first_reply_at and conv.waiting_since is None and conv.assignee == personas.ana


def test_automated_reply_is_not_public(conv, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        msg = services.reply(conversation=conv, author=None, body="We got your message", automated=True)
    conv.refresh_from_db()
    assert msg.automated and msg.author_type == "automation"
    assert conv.first_reply_at is None and conv.waiting_since is not None


def _webhook_channel(channels, url):
    ch = channels.api
    ch.set_config({"webhook_url": url + "/hook", "webhook_secret": "s3cret"})
    ch.save()
    return ch


def test_outbox_retries_transient_errors_then_sends(conv, channels, personas, django_capture_on_commit_callbacks):
    with FakeProvider() as fake:
        _webhook_channel(channels, fake.url)
        fake.respond(503, {"error": "busy"})
        fake.respond(200, {"id": "remote-1"})
        with django_capture_on_commit_callbacks(execute=True):
            msg = services.reply(conversation=conv, author=personas.ana, body="Hi", channel=channels.api)
        msg.refresh_from_db()
        assert msg.delivery_status == "queued" and msg.delivery_attempts == 1
        assert "503" in msg.delivery_error
        wait = (msg.next_attempt_at - timezone.now()).total_seconds()
        assert 10 < wait < 20  # first backoff: 15 s with jitter
        assert delivery.due_outbox() == []  # not due yet
        Message.objects.filter(pk=msg.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        assert tasks.requeue_stale_outbox.apply().get() == 1
        msg.refresh_from_db()
        assert msg.delivery_status == "sent" and msg.external_id == "remote-1" and msg.sent_at
        assert len(fake.requests) == 2
        body = fake.requests[1].json()
        assert body["text"] == "Hi" and "X-Threadline-Signature" in fake.requests[1].headers


def test_permanent_error_fails_with_provider_message(conv, channels, personas, django_capture_on_commit_callbacks):
    with FakeProvider() as fake:
        _webhook_channel(channels, fake.url)
        fake.respond(400, {"error": "invalid recipient"})
        with django_capture_on_commit_callbacks(execute=True):
            msg = services.reply(conversation=conv, author=personas.ana, body="Hi", channel=channels.api)
    msg.refresh_from_db()
    assert msg.delivery_status == "failed" and "invalid recipient" in msg.delivery_error
    assert ConversationEvent.objects.filter(conversation=conv, kind="delivery_failed").exists()


def test_gives_up_after_max_attempts(conv, channels, personas, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 3
    with FakeProvider() as fake:
        _webhook_channel(channels, fake.url)
        for _ in range(3):
            fake.respond(500, {"error": "boom"})
        msg = services.reply(conversation=conv, author=personas.ana, body="Hi", channel=channels.api)
        outcomes = []
        for _ in range(3):
            Message.objects.filter(pk=msg.pk).update(next_attempt_at=timezone.now())
            outcomes.append(delivery.deliver(msg.pk).status)
    assert outcomes == ["retry", "retry", "failed"]
    msg.refresh_from_db()
    assert msg.delivery_status == "failed" and msg.delivery_attempts == 3


def test_lost_task_is_reenqueued_and_lease_prevents_double_send(conv, channels, personas):
    with FakeProvider() as fake:
        _webhook_channel(channels, fake.url)
        # reply() outside on_commit execution: the task was "lost" (broker down)
        msg = services.reply(conversation=conv, author=personas.ana, body="Hi", channel=channels.api)
        assert delivery.due_outbox() == [msg.pk]
        claimed = delivery._claim(msg.pk)
        assert claimed is not None
        assert delivery.due_outbox() == []  # leased while in flight
        assert delivery.deliver(msg.pk).status == "skipped"
        Message.objects.filter(pk=msg.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        assert tasks.requeue_stale_outbox.apply().get() == 1
        assert len(fake.requests) == 1
    msg.refresh_from_db()
    assert msg.delivery_status == "sent"


def test_delivery_statuses_in_any_order_are_idempotent(conv, channels, personas):
    msg = services.reply(conversation=conv, author=personas.ana, body="Hi", channel=channels.api)
    services.delivery_update(message=msg, status="read")
    services.delivery_update(message=msg, status="sent")
    services.delivery_update(message=msg, status="delivered")
    services.delivery_update(message=msg, status="failed", error="late failure")
    msg.refresh_from_db()
    assert msg.delivery_status == "read" and msg.read_at and msg.delivered_at and msg.sent_at
    assert msg.delivery_error == ""


def test_backoff_grows_and_is_capped():
    values = [delivery.backoff(n) for n in range(1, 12)]
    assert values[0] < values[3] < values[6]
    assert max(values) <= 3600 * 1.2
