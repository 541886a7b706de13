"""ingest(): dedupe, identity across channels, threading rules, reopen window."""
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, ConversationEvent, Message, Status, ThreadKey
from customers.models import Customer, Identity

pytestmark = pytest.mark.django_db


def kinds(conv):
    return list(ConversationEvent.objects.filter(conversation=conv).order_by("at", "id").values_list("kind", flat=True))


def test_repeated_delivery_returns_the_stored_message(channels, inbound):
    first = services.ingest(inbound(channels.whatsapp, "whatsapp", "15551230001", external_id="wamid.1"))
    again = services.ingest(inbound(channels.whatsapp, "whatsapp", "15551230001", external_id="wamid.1"))
    assert first.created and not again.created
    assert again.message.pk == first.message.pk
    assert Message.objects.count() == 1
    assert ConversationEvent.objects.filter(kind="message_in").count() == 1


def test_same_external_id_on_another_channel_is_another_message(channels, inbound, personas):
    from tests.factories import ChannelFactory

    other = ChannelFactory(kind="whatsapp", name="WA 2", team=personas.billing)
    services.ingest(inbound(channels.whatsapp, "whatsapp", "+15551230001", external_id="x"))
    services.ingest(inbound(other, "whatsapp", "+15551230001", external_id="x"))
    assert Message.objects.count() == 2


def test_email_identity_is_normalized_and_shared(channels, inbound):
    a = services.ingest(inbound(channels.api, "email", "Kim@Example.ORG"))
    b = services.ingest(inbound(channels.chat, "email", "kim@example.org"))
    assert a.message.conversation.customer_id == b.message.conversation.customer_id
    assert list(Identity.objects.values_list("kind", "value")) == [("email", "kim@example.org")]


def test_whatsapp_and_sms_from_one_number_are_one_customer(channels, inbound):
    from tests.factories import CustomerFactory, IdentityFactory

    kim = CustomerFactory(name="Kim")
    IdentityFactory(customer=kim, kind="phone", value="+15551230001")
    wa = services.ingest(inbound(channels.whatsapp, "whatsapp", "15551230001"))  # wa_id: digits, no '+'
    sms = services.ingest(inbound(channels.sms, "phone", "+1 (555) 123-0001"))
    assert wa.message.conversation.customer_id == kim.pk
    assert sms.message.conversation.customer_id == kim.pk
    assert Customer.objects.count() == 1


def test_whatsapp_joins_open_email_case_and_records_channel_switch(channels, inbound):
    from tests.factories import IdentityFactory

    first = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                    subject="Card declined"))
    conv = first.message.conversation
    IdentityFactory(customer=conv.customer, kind="phone", value="+15551230001")
    second = services.ingest(inbound(channels.whatsapp, "whatsapp", "+15551230001", text="any news?"))
    assert second.message.conversation_id == conv.pk
    assert second.channel_switched
    conv.refresh_from_db()
    assert conv.last_inbound_kind == "whatsapp"
    switch = ConversationEvent.objects.get(conversation=conv, kind="channel_switched")
    assert switch.data == {"from": "email", "to": "whatsapp"}


def test_chat_messages_continue_the_open_conversation(channels, inbound):
    a = services.ingest(inbound(channels.chat, "chat", "visitor-1"))
    b = services.ingest(inbound(channels.chat, "chat", "visitor-1"))
    assert a.message.conversation_id == b.message.conversation_id
    assert not b.channel_switched
    conv = a.message.conversation
    conv.refresh_from_db()
    assert conv.message_count == 2
    assert kinds(conv) == ["created", "message_in", "message_in"]


def test_new_email_thread_is_a_new_conversation_unless_channel_switch(channels, inbound):
    now = timezone.now()
    a = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True, created_at=now))
    b = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                created_at=now + timedelta(minutes=5)))
    assert a.message.conversation_id != b.message.conversation_id


def test_new_email_thread_joins_chat_case_within_switch_window(channels, inbound, settings):
    from tests.factories import IdentityFactory

    now = timezone.now()
    chat = services.ingest(inbound(channels.chat, "chat", "visitor-9", created_at=now - timedelta(hours=2)))
    IdentityFactory(customer=chat.message.conversation.customer, kind="email", value="kim@example.org")
    mail = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True, created_at=now))
    assert mail.message.conversation_id == chat.message.conversation_id
    assert mail.channel_switched

    # outside the window: a new conversation
    settings.SWITCH_WINDOW = 3600
    later = services.ingest(inbound(channels.chat, "chat", "visitor-9", created_at=now + timedelta(hours=1)))
    assert later.message.conversation_id == chat.message.conversation_id  # chat continues
    mail2 = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                    created_at=now + timedelta(hours=3)))
    assert mail2.message.conversation_id != chat.message.conversation_id


def test_reopen_within_window_and_new_conversation_after(channels, inbound, settings, personas):
    settings.REOPEN_WINDOW = 72 * 3600
    first = services.ingest(inbound(channels.chat, "chat", "visitor-2"))
    conv = first.message.conversation
    resolved_at = timezone.now() - timedelta(hours=10)
    services.resolve_conversation(conversation=conv, actor=personas.ana, at=resolved_at)
    again = services.ingest(inbound(channels.chat, "chat", "visitor-2"))
    assert again.message.conversation_id == conv.pk and again.reopened
    conv.refresh_from_db()
    assert conv.status == Status.OPEN and conv.resolved_at is None
    assert kinds(conv)[-2:] == ["reopened", "message_in"]

    services.resolve_conversation(conversation=conv, actor=personas.ana, at=timezone.now() - timedelta(hours=80))
    fresh = services.ingest(inbound(channels.chat, "chat", "visitor-2"))
    assert fresh.conversation_created and fresh.message.conversation_id != conv.pk
    conv.refresh_from_db()
    assert conv.status == Status.RESOLVED


def test_explicit_thread_key_wins_and_out_of_order_mail_threads(channels, inbound):
    a = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                own_key="<a@mail>", external_id="<a@mail>"))
    # a reply naming <a@mail> joins, even from another address
    b = services.ingest(inbound(channels.email, "email", "colleague@example.org", is_email_thread=True,
                                own_key="<b@mail>", external_id="<b@mail>", thread_keys=["<a@mail>"]))
    assert b.message.conversation_id == a.message.conversation_id
    # <d> arrives before <c> but references it; then <c> arrives: it joins <d>'s conversation
    d = services.ingest(inbound(channels.email, "email", "lee@example.org", is_email_thread=True,
                                own_key="<d@mail>", external_id="<d@mail>", thread_keys=["<c@mail>"]))
    c = services.ingest(inbound(channels.email, "email", "lee@example.org", is_email_thread=True,
                                own_key="<c@mail>", external_id="<c@mail>"))
    assert c.message.conversation_id == d.message.conversation_id
    assert set(ThreadKey.objects.filter(key="<c@mail>").values_list("conversation_id", flat=True)) == {c.message.conversation_id}


def test_explicit_reply_after_follow_up_window_starts_linked_conversation(channels, inbound, settings, personas):
    settings.FOLLOW_UP_WINDOW = 24 * 3600
    a = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True, own_key="<a@m>"))
    conv = a.message.conversation
    services.resolve_conversation(conversation=conv, at=timezone.now() - timedelta(days=3))
    b = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True, own_key="<b@m>",
                                thread_keys=["<a@m>"]))
    assert b.conversation_created
    assert b.message.conversation.follow_up_of_id == conv.pk


def test_reply_token_and_subject_tag(channels, inbound, personas):
    a = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True))
    conv = a.message.conversation
    by_token = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                       reply_token=conv.reply_token))
    assert by_token.message.conversation_id == conv.pk
    by_tag = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                     conversation_number=conv.pk))
    assert by_tag.message.conversation_id == conv.pk
    # a subject tag from another customer does not hijack the conversation
    stranger = services.ingest(inbound(channels.email, "email", "eve@example.org", is_email_thread=True,
                                       conversation_number=conv.pk))
    assert stranger.message.conversation_id != conv.pk


def test_auto_submitted_never_reopens(channels, inbound, personas):
    a = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True, own_key="<a@m>"))
    conv = a.message.conversation
    services.resolve_conversation(conversation=conv)
    auto = services.ingest(inbound(channels.email, "email", "kim@example.org", is_email_thread=True,
                                   thread_keys=["<a@m>"], auto_submitted=True))
    assert auto.message.conversation_id == conv.pk and not auto.reopened
    conv.refresh_from_db()
    assert conv.status == Status.RESOLVED
    assert auto.message.automated


def test_customer_writing_wakes_snoozed_conversation(channels, inbound, personas):
    a = services.ingest(inbound(channels.chat, "chat", "visitor-3"))
    conv = a.message.conversation
    services.snooze(conversation=conv, until=timezone.now() + timedelta(days=1), actor=personas.ana)
    services.ingest(inbound(channels.chat, "chat", "visitor-3"))
    conv.refresh_from_db()
    assert conv.status == Status.OPEN and conv.snoozed_until is None


def test_invalid_identity_is_refused_with_a_clear_error(channels, inbound):
    with pytest.raises(services.InvalidInbound, match="no usable sender identity"):
        services.ingest(inbound(channels.sms, "phone", "not a number"))
    assert Message.objects.count() == 0


def test_imported_past_message_keeps_its_time_and_order(channels, inbound):
    past = timezone.now() - timedelta(days=30)
    a = services.ingest(inbound(channels.chat, "chat", "visitor-4", created_at=past + timedelta(minutes=5)))
    b = services.ingest(inbound(channels.chat, "chat", "visitor-4", created_at=past))
    conv = Conversation.objects.get(pk=a.message.conversation_id)
    assert b.message.conversation_id == conv.pk
    assert conv.first_inbound_at == past
    assert conv.last_message_at == past + timedelta(minutes=5)
    assert list(conv.messages.values_list("pk", flat=True)) == [b.message.pk, a.message.pk]


def test_oversized_attachment_is_dropped_with_a_visible_note(channels, inbound, settings):
    from conversations.inbound import InboundAttachment

    settings.ATTACHMENT_MAX_BYTES = 10
    res = services.ingest(inbound(channels.api, "email", "kim@example.org", attachments=[
        InboundAttachment("small.txt", "text/plain", b"ok"),
        InboundAttachment("big.bin", "application/octet-stream", b"x" * 11),
    ]))
    msg = res.message
    msg.refresh_from_db()
    assert [a.filename for a in msg.attachments.all()] == ["small.txt"]
    assert "big.bin" in msg.meta["notes"][0]
