"""List endpoints run a constant number of queries, whatever the page holds (STYLE.md 14)."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from conversations import services
from tests.factories import ConversationFactory, MessageFactory


def count(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx)


@pytest.mark.parametrize("url", ["/api/v1/conversations/?page_size=50", "/api/v1/customers/?limit=50",
                                 "/api/v1/agents/", "/api/v1/teams/", "/api/v1/channels/"])
def test_list_query_count_is_constant(personas, channels, url):
    client = APIClient()
    client.force_authenticate(personas.ana)
    ConversationFactory(team=personas.billing)
    small = count(client, url)
    for _ in range(15):
        conv = ConversationFactory(team=personas.billing)
        services.tag(conversation=conv, add=["vip", "refund"])
    assert count(client, url) == small


def test_messages_query_count_is_constant(personas, channels):
    client = APIClient()
    client.force_authenticate(personas.ana)
    conv = ConversationFactory(team=personas.billing)
    MessageFactory(conversation=conv)
    url = f"/api/v1/conversations/{conv.pk}/messages/"
    small = count(client, url)
    for _ in range(20):
        MessageFactory(conversation=conv, author_user=personas.ana, direction="outbound", author_type="agent")
    assert count(client, url) == small
