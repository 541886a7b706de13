"""Fixtures for the REST API tests: tokens per persona and a small world of
conversations in two teams."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from conversations import services
from customers.models import Identity
from helpdesk.tokens import token_create


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()  # throttling counters
    yield
    cache.clear()


@pytest.fixture
def api(personas):
    """api("ana") -> an APIClient authenticated with a fresh token of that persona."""
    def make(who: str | None = None) -> APIClient:
        client = APIClient()
        if who:
            _token, raw = token_create(user=getattr(personas, who), name="test")
            client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
            client.raw_token = raw
        return client

    return make


@pytest.fixture
def world(personas, channels, inbound, django_capture_on_commit_callbacks):
    """Conversations: billing (email, Kim), tech (whatsapp, Lee), unteamed (api, Sam)."""
    with django_capture_on_commit_callbacks(execute=True):
        billing = services.ingest(inbound(channels.email, "email", "kim@example.org", subject="Card declined",
                                          text="My card is declined", name="Kim Lee")).message.conversation
        tech = services.ingest(inbound(channels.whatsapp, "whatsapp", "+15551230002", text="App crashes",
                                       name="Lee Tech")).message.conversation
        loose = services.ingest(inbound(channels.api, "email", "sam@example.org", text="Hello there",
                                        name="Sam Loose")).message.conversation
        services.assign(conversation=billing, team=personas.billing, set_team=True)
        services.assign(conversation=tech, team=personas.tech, set_team=True)
        services.assign(conversation=loose, team=None, set_team=True)
    for conv in (billing, tech, loose):
        conv.refresh_from_db()
    return SimpleNamespace(billing=billing, tech=tech, loose=loose)


def assert_error_shape(response, status: int):
    assert response.status_code == status, (response.status_code, getattr(response, "data", response.content))
    body = response.json()
    assert set(body) == {"detail", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], dict)
    for value in body["errors"].values():
        assert isinstance(value, list)
    return body
