"""The generic hook view with the `api` channel: store first, auth, errors, replay."""
import json

import pytest
from django.core.management import call_command
from django.db import connection

from channels_app.models import Channel, InboundEnvelope
from conversations.models import Message
from helpdesk.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(personas):
    return ApiToken.issue(personas.ana)[1]


def post(client, channel, payload, token=None, raw=None):
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    body = raw if raw is not None else json.dumps(payload)
    return client.post(f"/hooks/api/{channel.uuid}/", data=body, content_type="application/json", **headers)


def test_inbound_message_through_api_channel(client, channels, token):
    resp = post(client, channels.api, {"external_id": "m-1", "from": {"kind": "email", "value": "Kim@Example.org"},
                                       "name": "Kim", "text": "hello"}, token)
    assert resp.status_code == 200
    msg = Message.objects.get(external_id="m-1")
    assert msg.body_text == "hello" and msg.conversation.customer.name == "Kim"
    env = InboundEnvelope.objects.get()
    assert env.status == "processed" and env.message_ids == [msg.pk]
    assert "Authorization" not in env.headers and "authorization" not in {k.lower() for k in env.headers}
    # replay is a no-op
    assert post(client, channels.api, {"external_id": "m-1", "from": {"kind": "email", "value": "kim@example.org"},
                                       "text": "hello"}, token).status_code == 200
    assert Message.objects.count() == 1


def test_missing_or_wrong_token_is_403_and_kept(client, channels):
    assert post(client, channels.api, {"from": {"kind": "email", "value": "a@b.c"}, "text": "x"}).status_code == 403
    assert post(client, channels.api, {"from": {"kind": "email", "value": "a@b.c"}, "text": "x"},
                "tl_wrong").status_code == 403
    assert list(InboundEnvelope.objects.values_list("status", flat=True)) == ["rejected", "rejected"]
    assert Message.objects.count() == 0


def test_revoked_token_is_refused(client, channels, personas):
    from django.utils import timezone

    tok, raw = ApiToken.issue(personas.ana)
    tok.revoked_at = timezone.now()
    tok.save()
    assert post(client, channels.api, {"from": {"kind": "email", "value": "a@b.c"}, "text": "x"}, raw).status_code == 403


def test_invalid_json_is_400_with_envelope_kept(client, channels, token):
    resp = post(client, channels.api, None, token, raw="{not json")
    assert resp.status_code == 400 and "Invalid JSON" in resp.json()["detail"]
    env = InboundEnvelope.objects.get()
    assert env.status == "failed" and bytes(env.body) == b"{not json"


def test_unknown_channel_is_404(client, token):
    import uuid

    resp = client.post(f"/hooks/api/{uuid.uuid4()}/", data="{}", content_type="application/json")
    assert resp.status_code == 404


def test_kind_mismatch_and_inactive_channel_are_404(client, channels, token):
    assert client.post(f"/hooks/whatsapp/{channels.api.uuid}/", data="{}",
                       content_type="application/json").status_code == 404
    Channel.objects.filter(pk=channels.api.pk).update(active=False)
    assert post(client, channels.api, {}, token).status_code == 404


def test_failed_processing_is_kept_and_replayed(client, channels, token, monkeypatch):
    from conversations import services

    real = services.ingest

    def broken(msg):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(services, "ingest", broken)
    resp = post(client, channels.api, {"external_id": "m-9", "from": {"kind": "email", "value": "kim@example.org"},
                                       "text": "hello"}, token)
    assert resp.status_code == 500
    env = InboundEnvelope.objects.get()
    assert env.status == "failed" and "database hiccup" in env.error
    monkeypatch.setattr(services, "ingest", real)
    call_command("replay_inbound")
    env.refresh_from_db()
    assert env.status == "processed" and env.attempts == 2
    assert Message.objects.filter(external_id="m-9").count() == 1


def test_channel_secrets_are_encrypted_at_rest(channels):
    ch = channels.api
    ch.set_config({"webhook_url": "https://example.com/x", "webhook_secret": "very-secret-value"})
    ch.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT settings, secrets FROM channels_app_channel WHERE id = %s", [ch.pk])
        settings_raw, secrets_raw = cursor.fetchone()
    assert "very-secret-value" not in str(secrets_raw) and "very-secret-value" not in str(settings_raw)
    assert "example.com" in str(settings_raw)
    fresh = Channel.objects.get(pk=ch.pk)
    assert fresh.get("webhook_secret") == "very-secret-value"
    assert fresh.webhook_url.endswith(f"/hooks/api/{ch.uuid}/")
