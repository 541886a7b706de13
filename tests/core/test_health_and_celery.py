"""GET /healthz, and a real Celery worker on the Redis broker when REDIS_URL is set."""
import pytest
from django.conf import settings

from tests.conftest import require

pytestmark = pytest.mark.django_db


def test_healthz_reports_every_dependency(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "channel_layer", "broker"}
    assert all(c["ok"] for c in body["checks"].values())


def test_healthz_is_503_when_the_database_is_down(client, monkeypatch):
    from helpdesk import views

    def broken():
        raise RuntimeError("connection refused")

    monkeypatch.setattr(views, "_database", broken)
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["database"] == {"ok": False, "error": "RuntimeError: connection refused"}


@pytest.mark.django_db(transaction=True)
def test_reply_is_delivered_by_a_real_worker_over_redis(channels, inbound, personas):
    require(bool(settings.REDIS_URL), "Redis (REDIS_URL) for the Celery worker test")
    from celery.contrib.testing.worker import start_worker

    from conversations import services
    from conversations.models import Message
    from helpdesk.celery import app
    from tests.fakeprovider import FakeProvider

    app.conf.task_always_eager = False
    try:
        with FakeProvider() as fake, start_worker(app, perform_ping_check=False, pool="solo",
                                                  shutdown_timeout=10):
            ch = channels.api
            ch.set_config({"webhook_url": fake.url + "/hook"})
            ch.save()
            conv = services.ingest(inbound(ch, "email", "kim@example.org")).message.conversation
            msg = services.reply(conversation=conv, author=personas.ana, body="via worker", channel=ch)
            import time

            deadline = time.time() + 20
            while time.time() < deadline:
                msg.refresh_from_db()
                if msg.delivery_status == "sent":
                    break
                time.sleep(0.1)
            assert msg.delivery_status == "sent"
            assert fake.requests and fake.requests[0].json()["text"] == "via worker"
            assert Message.objects.filter(pk=msg.pk, delivery_attempts=1).exists()
    finally:
        app.conf.task_always_eager = True
