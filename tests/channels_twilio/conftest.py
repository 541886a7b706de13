"""Twilio test helpers: channels, documented fixtures, requests signed with the
twilio package's own RequestValidator.compute_signature."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings
from twilio.request_validator import RequestValidator

from tests.factories import ChannelFactory

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ACCOUNT_SID = "AC3f8e7d6c5b4a39281706f5e4d3c2b1a0"
AUTH_TOKEN = "12345678901234567890123456789012"


def fixture(name: str, **overrides) -> dict:
    data = json.loads((FIXTURES / name).read_text())
    data.update(overrides)
    return data


def make_twilio_channel(kind: str, team=None, **settings_):
    channel = ChannelFactory(kind=kind, name=f"Twilio {kind}", team=team)
    channel.set_config({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": "+14155550100",
                        **settings_})
    channel.save()
    return channel


def signed_url(channel, query: str = "") -> tuple[str, str]:
    path = channel.webhook_path + (f"?{query}" if query else "")
    base = (channel.get("public_url") or settings.PUBLIC_URL).rstrip("/")
    return path, base + path


def twilio_post(client, channel, params: dict, *, query: str = "", token: str = AUTH_TOKEN,
                signature: str | None = None, sign_url: str | None = None):
    """POST a form-encoded webhook as Twilio does, signed unless signature="" (missing)."""
    path, url = signed_url(channel, query)
    headers = {}
    if signature is None:
        signature = RequestValidator(token).compute_signature(sign_url or url, params)
    if signature:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    return client.post(path, data=urlencode(params), content_type="application/x-www-form-urlencoded", **headers)


@pytest.fixture
def sms_channel(personas):
    return make_twilio_channel("sms", team=personas.billing)


@pytest.fixture
def phone_channel(personas):
    return make_twilio_channel("phone", team=personas.billing)
