"""Inbox fixtures: a cross-channel conversation for billing (Ana's team), one for tech (Bob's)."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from conversations import services
from conversations.inbound import InboundAttachment
from tests.factories import ChannelFactory

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
       b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.fixture
def inbox_data(db, personas, channels, inbound):
    now = timezone.now()
    # Kim writes by email, then on WhatsApp: one conversation, two channels
    first = services.ingest(inbound(channels.email, "email", "kim@example.org", name="Kim Lee",
                                    subject="Refund for order 1042", text="I want a refund for order 1042 please",
                                    created_at=now - timedelta(minutes=30), is_email_thread=True,
                                    attachments=[InboundAttachment("receipt.png", "image/png", PNG)]))
    conv = first.message.conversation
    from customers.services import identity_add

    identity_add(customer=conv.customer, kind="whatsapp", value="+4915112345678")
    services.ingest(inbound(channels.whatsapp, "whatsapp", "+4915112345678", name="Kim Lee",
                            text="Any news about my refund?", created_at=now - timedelta(minutes=3)))
    conv.refresh_from_db()
    # a chat conversation of another billing customer
    chat = services.ingest(inbound(channels.chat, "chat", "visitor-77", name="Lou Park",
                                   text="The invoice page is broken", created_at=now - timedelta(minutes=10)))
    # tech team: Bob's
    tech_channel = ChannelFactory(kind="sms", name="Tech SMS", team=personas.tech)
    tech = services.ingest(inbound(tech_channel, "phone", "+14155550100", name="Tia Tech",
                                   text="My router keeps rebooting", created_at=now - timedelta(minutes=20)))
    return SimpleNamespace(conv=conv, chat=chat.message.conversation, tech=tech.message.conversation,
                           customer=conv.customer)



@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the test item (browser tests save a screenshot on failure)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
