"""Fixtures for the WhatsApp, Messenger, Instagram, Telegram and X adapter tests.

Payload fixtures live in tests/fixtures/<kind>/*.json, shaped as the providers
document them; "__MEDIA_URL__" stands for the provider's media URL and is
pointed at the local fake provider by the tests.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from channels_app.adapters.meta.common import b64_hmac_sha256, meta_signature
from channels_app.models import Channel
from tests.fakeprovider import FakeProvider

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

APP_SECRET = "6f1d2c3b4a5e6f708192a3b4c5d6e7f8"
VERIFY_TOKEN = "verify-me-please"
TG_SECRET = "tg-Secret_token-123"
X_SECRET = "x-consumer-secret-0123456789abcdef"


def load(kind: str, name: str, **subs) -> bytes:
    """A fixture's raw bytes with "__KEY__" placeholders substituted."""
    text = (FIXTURES / kind / f"{name}.json").read_text()
    for key, value in subs.items():
        text = text.replace(f"__{key.upper()}__", value)
    return text.encode()


def load_json(kind: str, name: str, **subs):
    return json.loads(load(kind, name, **subs))


@pytest.fixture
def fake():
    with FakeProvider() as server:
        yield server


def _channel(kind, name, team, config, api_base):
    channel = Channel(kind=kind, name=name, team=team)
    channel.set_config({**config, "api_base": api_base})
    channel.save()
    return channel


@pytest.fixture
def meta_channels(db, personas, fake):
    """One channel per kind of this area, all pointed at the fake provider."""
    team = personas.billing
    return SimpleNamespace(
        whatsapp=_channel("whatsapp", "WhatsApp Kundenservice", team, {
            "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN, "access_token": "EAAwa-token",
            "phone_number_id": "106540352242922"}, fake.url),
        messenger=_channel("messenger", "Acme Messenger", team, {
            "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN, "page_access_token": "EAApage-token",
            "page_id": "107331365478916", "fetch_profile": False}, fake.url),
        instagram=_channel("instagram", "Acme Instagram", team, {
            "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN, "page_access_token": "EAAig-token",
            "page_id": "17841405822304914", "fetch_profile": False}, fake.url),
        telegram=_channel("telegram", "Acme bot", team, {
            "bot_token": "7000000001:AAHfake-bot-token", "secret_token": TG_SECRET}, fake.url),
        twitter=_channel("twitter", "Acme on X", team, {
            "consumer_secret": X_SECRET, "access_token": "x-user-access-token", "user_id": "3001969357"}, fake.url),
    )


def meta_post(client, channel, body: bytes, *, signature: str | None = "valid", secret: str = APP_SECRET):
    headers = {}
    if signature == "valid":
        headers["HTTP_X_HUB_SIGNATURE_256"] = meta_signature(secret, body)
    elif signature is not None:
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature
    return client.post(channel.webhook_path, data=body, content_type="application/json", **headers)


def telegram_post(client, channel, body: bytes, *, secret: str | None = TG_SECRET):
    headers = {"HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": secret} if secret is not None else {}
    return client.post(channel.webhook_path, data=body, content_type="application/json", **headers)


def x_signature(body: bytes, secret: str = X_SECRET) -> str:
    return "sha256=" + b64_hmac_sha256(secret, body)


def twitter_post(client, channel, body: bytes, *, signature: str | None = "valid"):
    headers = {}
    if signature == "valid":
        headers["HTTP_X_TWITTER_WEBHOOKS_SIGNATURE"] = x_signature(body)
    elif signature is not None:
        headers["HTTP_X_TWITTER_WEBHOOKS_SIGNATURE"] = signature
    return client.post(channel.webhook_path, data=body, content_type="application/json", **headers)
