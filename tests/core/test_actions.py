"""Conversation actions, snooze wake-up, customer merge, attachment download."""
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from conversations import services, tasks
from conversations.models import Attachment, Conversation, ConversationEvent, Status
from customers.models import Customer, CustomerMerge, Identity, Order
from customers.services import MergeConflict, customer_merge
from metrics.models import SurveyInvitation

pytestmark = pytest.mark.django_db


@pytest.fixture
def conv(channels, inbound):
    return services.ingest(inbound(channels.chat, "chat", "visitor-1", name="Kim")).message.conversation


def events(conv):
    return list(ConversationEvent.objects.filter(conversation=conv).values_list("kind", flat=True))


def test_assign_team_priority_tags_status_are_logged(conv, personas):
    services.assign(conversation=conv, actor=personas.manager, agent=personas.bob, team=personas.tech, set_team=True)
    services.set_priority(conversation=conv, priority="urgent", actor=personas.bob)
    services.tag(conversation=conv, add=["vip", "billing"], actor=personas.bob)
    services.tag(conversation=conv, remove=["billing"], actor=personas.bob)
    services.set_status(conversation=conv, status="pending", actor=personas.bob)
    conv.refresh_from_db()
    assert (conv.assignee, conv.team, conv.priority, conv.status) == (personas.bob, personas.tech, "urgent", "pending")
    assert list(conv.tags.values_list("name", flat=True)) == ["vip"]
    assert events(conv)[2:] == ["team_changed", "assigned", "priority_changed", "tagged", "tagged", "status_changed"]
    with pytest.raises(ValueError):
        services.set_priority(conversation=conv, priority="whenever")


def test_resolve_and_reopen(conv, personas):
    services.resolve_conversation(conversation=conv, actor=personas.ana)
    services.resolve_conversation(conversation=conv, actor=personas.ana)  # idempotent
    conv.refresh_from_db()
    assert conv.status == Status.RESOLVED and conv.resolved_at
    services.reopen(conversation=conv, actor=personas.ana)
    conv.refresh_from_db()
    assert conv.status == Status.OPEN and conv.resolved_at is None
    assert events(conv).count("resolved") == 1 and events(conv).count("reopened") == 1


def test_snooze_wakes_up_on_time(conv, personas):
    with pytest.raises(ValueError):
        services.snooze(conversation=conv, until=timezone.now() - timedelta(minutes=1))
    services.snooze(conversation=conv, until=timezone.now() + timedelta(hours=1), actor=personas.ana)
    assert tasks.wake_snoozed.apply().get() == 0
    Conversation.objects.filter(pk=conv.pk).update(snoozed_until=timezone.now() - timedelta(seconds=1))
    assert tasks.wake_snoozed.apply().get() == 1
    conv.refresh_from_db()
    assert conv.status == Status.OPEN and conv.snoozed_until is None
    assert events(conv)[-1] == "status_changed"


def test_merge_customers_moves_everything_and_is_audited(channels, inbound, personas):
    a = services.ingest(inbound(channels.api, "email", "kim@example.org", name="Kim")).message.conversation
    b = services.ingest(inbound(channels.whatsapp, "whatsapp", "+15551230001", name="K. Lee")).message.conversation
    survivor, merged = a.customer, b.customer
    merged.company = "Acme"
    merged.attributes = {"plan": "pro"}
    merged.save()
    Order.objects.create(customer=merged, external_id="o1", amount="10.00", placed_at=timezone.now())
    SurveyInvitation.objects.create(conversation=b, customer=merged, score=5, answered_at=timezone.now())

    record = customer_merge(survivor=survivor, merged=merged, actor=personas.manager, reason="same person")

    assert not Customer.objects.filter(pk=merged.pk).exists()
    assert set(Identity.objects.filter(customer=survivor).values_list("kind", flat=True)) == {"email", "whatsapp"}
    assert set(Conversation.objects.filter(customer=survivor).values_list("pk", flat=True)) == {a.pk, b.pk}
    assert Order.objects.get(external_id="o1").customer == survivor
    assert SurveyInvitation.objects.get().customer == survivor
    survivor.refresh_from_db()
    assert survivor.company == "Acme" and survivor.attributes == {"plan": "pro"} and survivor.name == "Kim"
    assert record.snapshot["identities"] == [["whatsapp", "+15551230001"]]
    assert record.moved == {"identities": 1, "orders": 1, "conversations": 1, "survey_answers": 1}
    assert CustomerMerge.objects.count() == 1
    assert ConversationEvent.objects.filter(conversation=b, kind="customers_merged").exists()
    # afterwards WhatsApp messages from that number land on the survivor
    again = services.ingest(inbound(channels.whatsapp, "whatsapp", "15551230001"))
    assert again.message.conversation.customer_id == survivor.pk


def test_merge_into_itself_is_a_conflict(conv):
    with pytest.raises(MergeConflict):
        customer_merge(survivor=conv.customer, merged=conv.customer)


def test_identity_owned_by_another_customer_is_suggested_not_merged(channels, inbound):
    from customers.models import MergeSuggestion
    from customers.services import identity_add

    a = services.ingest(inbound(channels.api, "email", "kim@example.org")).message.conversation.customer
    b = services.ingest(inbound(channels.chat, "chat", "visitor-77")).message.conversation.customer
    identity_add(customer=b, kind="email", value="KIM@example.org")
    assert Customer.objects.count() == 2
    assert MergeSuggestion.objects.filter(customer=min(a, b, key=lambda c: c.pk)).exists()


def test_merge_conversations(channels, inbound, personas):
    a = services.ingest(inbound(channels.api, "email", "kim@example.org", new_conversation=True)).message.conversation
    b = services.ingest(inbound(channels.api, "email", "kim@example.org", new_conversation=True)).message.conversation
    assert a.pk != b.pk
    merged = services.merge_conversations(survivor=a, merged=b, actor=personas.ana)
    assert merged.message_count == 2
    assert not Conversation.objects.filter(pk=b.pk).exists()


def test_attachment_download_checks_visibility(client, conv, personas):
    msg = conv.messages.first()
    att = Attachment(message=msg, filename="x.html", content_type="text/html", size=5)
    att.file.save("x.html", ContentFile(b"<b>x</b>"))
    Conversation.objects.filter(pk=conv.pk).update(team=personas.billing)
    url = f"/attachments/{att.pk}/"
    assert client.get(url).status_code == 302  # login first
    client.force_login(personas.bob)  # tech team: may not see billing conversations
    assert client.get(url).status_code == 404
    client.force_login(personas.ana)
    resp = client.get(url)
    assert resp.status_code == 200
    assert resp["Content-Disposition"].startswith("attachment")
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert b"".join(resp.streaming_content) == b"<b>x</b>"


def test_visibility_rules(conv, personas):
    Conversation.objects.filter(pk=conv.pk).update(team=personas.billing)
    visible = services.conversations_visible_to
    assert visible(personas.ana).filter(pk=conv.pk).exists()
    assert not visible(personas.bob).filter(pk=conv.pk).exists()
    assert visible(personas.manager).filter(pk=conv.pk).exists()
    personas.bob.access_all = True
    assert visible(personas.bob).filter(pk=conv.pk).exists()
    personas.bob.access_all = False
    Conversation.objects.filter(pk=conv.pk).update(assignee=personas.bob)
    assert visible(personas.bob).filter(pk=conv.pk).exists()


def test_auto_assignment_round_robin_respects_availability_and_capacity(channels, inbound, personas):
    from conversations.assignment import auto_assign
    from tests.factories import UserFactory

    team = personas.billing
    team.assignment_mode = "round_robin"
    team.save()
    cid = UserFactory(username="cid", availability="online", capacity=1)
    dee = UserFactory(username="dee", availability="online", capacity=5)
    team.members.add(cid, dee)  # ana stays offline
    convs = [services.ingest(inbound(channels.api, "email", f"c{i}@example.org")).message.conversation
             for i in range(3)]
    picked = [auto_assign(c) for c in convs]
    assert picked == [cid, dee, dee]  # cid at capacity after one


def test_no_after_ingest_task_for_a_message_to_a_manual_team(channels, inbound, personas, monkeypatch,
                                                              django_capture_on_commit_callbacks):
    """Auto-assignment's task does nothing for a manual team: a message to an
    open conversation of one queues none (its team's mode is read with the
    conversation in the ingest transaction); a new conversation still does."""
    from tests.factories import UserFactory

    queued = []
    monkeypatch.setattr(tasks.after_ingest, "delay", lambda *args: queued.append(args))

    def ingest(text):
        with django_capture_on_commit_callbacks(execute=True):
            return services.ingest(inbound(channels.api, "email", "kim@example.org", text=text)).message

    first = ingest("first")
    assert len(queued) == 1  # a new conversation: the team as the channel had it, not re-read
    ingest("second")
    assert len(queued) == 1  # billing is manual (the default)
    personas.billing.assignment_mode = "round_robin"
    personas.billing.save()
    dee = UserFactory(username="dee", availability="online")
    personas.billing.members.add(dee)
    third = ingest("third")
    assert queued[-1] == (third.pk, False)
    tasks.after_ingest(*queued[-1])
    assert Conversation.objects.get(pk=first.conversation_id).assignee == dee
