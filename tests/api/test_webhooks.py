"""Outbound webhooks over real HTTP to a loopback receiver (tests/fakeprovider.py)."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from conversations import services
from helpdesk import tasks, webhooks
from helpdesk.models import DeliveryState, WebhookDelivery, WebhookSubscription
from tests.fakeprovider import FakeProvider

from .conftest import assert_error_shape


def verify_like_the_docs(secret: str, headers: dict, body: bytes, tolerance: int = 300) -> bool:
    """The receiver recipe of README.md, verbatim in spirit: HMAC-SHA256 over
    "<timestamp>.<raw body>", constant-time compare, reject stale timestamps."""
    timestamp = headers["X-Threadline-Timestamp"]
    signature = headers["X-Threadline-Signature"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@pytest.fixture
def receiver():
    with FakeProvider() as fake:
        yield fake


def subscribe(api, who, url, events):
    resp = api(who).post("/api/v1/webhook-subscriptions/", {"url": url, "events": events, "name": "t"},
                         format="json")
    assert resp.status_code == 201, resp.json()
    return resp.json()


def test_message_created_is_delivered_signed(api, personas, channels, inbound, receiver,
                                             django_capture_on_commit_callbacks):
    sub = subscribe(api, "admin", receiver.url + "/hook", ["message.created", "conversation.created"])
    assert sub["secret"].startswith("whsec_")
    # when a customer writes in
    with django_capture_on_commit_callbacks(execute=True):
        result = services.ingest(inbound(channels.email, "email", "kim@example.org", text="Hello"))
    # then both events arrive, signed, with an event id and time
    events = {}
    for req in receiver.requests:
        assert req.method == "POST" and req.path == "/hook"
        assert verify_like_the_docs(sub["secret"], req.headers, req.body)
        assert not verify_like_the_docs("wrong", req.headers, req.body)
        payload = req.json()
        assert payload["id"] and payload["created_at"] and req.headers["X-Threadline-Event"] == payload["event"]
        events[payload["event"]] = payload
    assert set(events) == {"message.created", "conversation.created"}
    msg = events["message.created"]["data"]["message"]
    assert msg["id"] == result.message.pk and msg["text"] == "Hello" and msg["channel"] == "email"
    assert events["conversation.created"]["data"]["conversation"]["id"] == result.message.conversation_id
    assert WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).count() == 2
    # a tampered body fails verification
    req = receiver.requests[0]
    assert not verify_like_the_docs(sub["secret"], req.headers, req.body.replace(b"Hello", b"Hallo"))
    # the delivery log in the API
    log = api("admin").get(f"/api/v1/webhook-subscriptions/{sub['id']}/deliveries/").json()["results"]
    assert {d["event"] for d in log} == {"message.created", "conversation.created"}
    assert all(d["state"] == "delivered" and d["response_status"] == 200 for d in log)


def test_resolve_update_and_merge_events(api, personas, world, receiver, django_capture_on_commit_callbacks):
    subscribe(api, "admin", receiver.url, ["conversation.resolved", "conversation.updated", "customer.merged"])
    admin = api("admin")
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(f"/api/v1/conversations/{world.billing.pk}/resolve/")
    with django_capture_on_commit_callbacks(execute=True):
        admin.patch(f"/api/v1/conversations/{world.tech.pk}/", {"priority": "high"}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        admin.post(f"/api/v1/customers/{world.billing.customer_id}/merge/", {"other": world.loose.customer_id},
                   format="json")
    got = [(r.json()["event"], r.json()["data"]) for r in receiver.requests]
    resolved = [d for e, d in got if e == "conversation.resolved"]
    assert resolved and resolved[0]["conversation"]["status"] == "resolved"
    assert any(e == "conversation.updated" and d["conversation"]["priority"] == "high" for e, d in got)
    assert ("customer.merged", {"survivor": world.billing.customer_id, "merged": world.loose.customer_id}) in got


def test_events_respect_the_owners_team(api, personas, world, receiver, django_capture_on_commit_callbacks):
    # bob (tech) subscribes; a reply on a billing conversation must not reach him
    subscribe(api, "bob", receiver.url, ["message.created"])
    with django_capture_on_commit_callbacks(execute=True):
        api("ana").post(f"/api/v1/conversations/{world.billing.pk}/messages/", {"kind": "note", "text": "x"},
                        format="json")
    assert receiver.requests == []
    with django_capture_on_commit_callbacks(execute=True):
        api("bob").post(f"/api/v1/conversations/{world.tech.pk}/messages/", {"kind": "note", "text": "y"},
                        format="json")
    assert [r.json()["data"]["message"]["text"] for r in receiver.requests] == ["y"]


def test_retry_on_500_then_success(api, personas, world, receiver, django_capture_on_commit_callbacks):
    sub = subscribe(api, "admin", receiver.url, ["conversation.updated"])
    receiver.respond(500, {"error": "boom"})
    with django_capture_on_commit_callbacks(execute=True):
        api("admin").patch(f"/api/v1/conversations/{world.billing.pk}/", {"priority": "low"}, format="json")
    delivery = WebhookDelivery.objects.get(subscription_id=sub["id"])
    assert delivery.state == DeliveryState.RETRYING and delivery.attempts == 1 and delivery.response_status == 500
    assert timedelta(seconds=20) < delivery.next_attempt_at - timezone.now() < timedelta(seconds=40)
    # not due yet: the periodic task leaves it alone
    assert tasks.retry_webhooks.apply().get() == 0
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert tasks.retry_webhooks.apply().get() == 1
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.DELIVERED and delivery.attempts == 2
    first, second = receiver.requests
    assert first.json()["id"] == second.json()["id"]  # same event id on retry: receivers dedupe on it
    assert WebhookSubscription.objects.get(pk=sub["id"]).consecutive_failures == 0


def test_backoff_grows_and_stops_after_24h(api, personas, receiver, settings):
    sub = webhooks.subscription_create(owner=personas.admin, url=receiver.url, events=["conversation.updated"])
    receiver.default.status = 503
    delivery = WebhookDelivery.objects.create(subscription=sub, event_id="00000000-0000-0000-0000-000000000001",
                                              event="conversation.updated", payload={"x": 1},
                                              next_attempt_at=timezone.now())
    gaps = []
    for _ in range(4):
        state, retry_in = webhooks.deliver(delivery.pk)
        assert state == DeliveryState.RETRYING
        gaps.append(retry_in)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert all(b > a * 1.5 for a, b in zip(gaps, gaps[1:])), gaps
    # older than the retry window: the next failure is final
    WebhookDelivery.objects.filter(pk=delivery.pk).update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
    assert webhooks.deliver(delivery.pk) == (DeliveryState.FAILED, None)
    assert webhooks.deliver(delivery.pk) == ("skipped", None)


def test_permanent_4xx_fails_at_once(personas, receiver):
    sub = webhooks.subscription_create(owner=personas.admin, url=receiver.url, events=["conversation.updated"])
    receiver.respond(410, {"gone": True})
    delivery = WebhookDelivery.objects.create(subscription=sub, event_id="00000000-0000-0000-0000-000000000002",
                                              event="conversation.updated", payload={}, next_attempt_at=timezone.now())
    assert webhooks.deliver(delivery.pk) == (DeliveryState.FAILED, None)
    delivery.refresh_from_db()
    assert delivery.response_status == 410 and delivery.attempts == 1


def test_disabled_after_repeated_failures_and_owner_emailed(api, personas, world, receiver, settings,
                                                           django_capture_on_commit_callbacks):
    settings.WEBHOOK_DISABLE_AFTER = 3
    sub = subscribe(api, "admin", receiver.url, ["conversation.updated"])
    receiver.default.status = 500
    for priority in ("low", "high", "urgent"):
        with django_capture_on_commit_callbacks(execute=True):
            api("admin").patch(f"/api/v1/conversations/{world.billing.pk}/", {"priority": priority}, format="json")
    sub_obj = WebhookSubscription.objects.get(pk=sub["id"])
    assert not sub_obj.active and sub_obj.disabled_at and "3 failed attempts" in sub_obj.disabled_reason
    assert len(receiver.requests) == 3
    assert not WebhookDelivery.objects.filter(subscription=sub_obj, state__in=["pending", "retrying"]).exists()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [personas.admin.email]
    assert receiver.url in mail.outbox[0].subject
    # no more deliveries while disabled
    with django_capture_on_commit_callbacks(execute=True):
        api("admin").patch(f"/api/v1/conversations/{world.billing.pk}/", {"priority": "normal"}, format="json")
    assert len(receiver.requests) == 3
    # re-enabled by its owner, it works again
    receiver.default.status = 200
    resp = api("admin").patch(f"/api/v1/webhook-subscriptions/{sub['id']}/", {"active": True}, format="json")
    assert resp.json()["active"] is True and resp.json()["consecutive_failures"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        api("admin").patch(f"/api/v1/conversations/{world.billing.pk}/", {"priority": "low"}, format="json")
    assert len(receiver.requests) == 4


def test_ssrf_private_targets_refused_when_not_allowed(api, personas, receiver, settings,
                                                       django_capture_on_commit_callbacks):
    # allowed in tests by default: a subscription to the loopback receiver exists
    sub = webhooks.subscription_create(owner=personas.admin, url=receiver.url, events=["conversation.updated"])
    settings.OUTBOUND_ALLOW_PRIVATE = False
    for url in (receiver.url, "http://10.0.0.5/hook", "http://169.254.169.254/latest/meta-data/", "http://[::1]/x",
                "ftp://example.com/x"):
        body = assert_error_shape(api("admin").post("/api/v1/webhook-subscriptions/",
                                                    {"url": url, "events": ["conversation.updated"]},
                                                    format="json"), 400)
        assert "url" in body["errors"], url
    # and at delivery time (DNS may change after saving): refused, permanent, nothing sent
    delivery = WebhookDelivery.objects.create(subscription=sub, event_id="00000000-0000-0000-0000-000000000003",
                                              event="conversation.updated", payload={}, next_attempt_at=timezone.now())
    assert webhooks.deliver(delivery.pk) == (DeliveryState.FAILED, None)
    delivery.refresh_from_db()
    assert "private" in delivery.error and receiver.requests == []


def test_subscription_api_validation_and_ownership(api, personas, receiver, django_capture_on_commit_callbacks):
    ana = api("ana")
    assert "events" in assert_error_shape(ana.post("/api/v1/webhook-subscriptions/",
                                                   {"url": receiver.url, "events": []}, format="json"),
                                          400)["errors"]
    assert "events" in assert_error_shape(ana.post("/api/v1/webhook-subscriptions/",
                                                   {"url": receiver.url, "events": ["nope"]}, format="json"),
                                          400)["errors"]
    sub = subscribe(api, "ana", receiver.url, ["message.created"])
    shown = ana.get(f"/api/v1/webhook-subscriptions/{sub['id']}/").json()
    assert shown["secret"] != sub["secret"] and "…" in shown["secret"]
    assert_error_shape(api("bob").get(f"/api/v1/webhook-subscriptions/{sub['id']}/"), 404)
    assert api("admin").get(f"/api/v1/webhook-subscriptions/{sub['id']}/").status_code == 200
    rotated = ana.post(f"/api/v1/webhook-subscriptions/{sub['id']}/rotate-secret/").json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != sub["secret"]
    with django_capture_on_commit_callbacks(execute=True):
        ping = ana.post(f"/api/v1/webhook-subscriptions/{sub['id']}/ping/")
    assert ping.status_code == 202
    assert receiver.requests and receiver.requests[-1].json()["event"] == "ping"
    assert verify_like_the_docs(rotated["secret"], receiver.requests[-1].headers, receiver.requests[-1].body)
    deliveries = ana.get("/api/v1/webhook-deliveries/").json()["results"]
    assert [d["event"] for d in deliveries] == ["ping"]
    assert api("bob").get("/api/v1/webhook-deliveries/").json()["results"] == []
    with django_capture_on_commit_callbacks(execute=True):
        redo = ana.post(f"/api/v1/webhook-deliveries/{deliveries[0]['id']}/redeliver/")
    assert redo.status_code == 202 and len(receiver.requests) == 2
    assert ana.delete(f"/api/v1/webhook-subscriptions/{sub['id']}/").status_code == 204


def test_survey_answered_hook_for_metrics(personas, world, receiver, django_capture_on_commit_callbacks):
    from metrics.models import SurveyInvitation

    webhooks.subscription_create(owner=personas.admin, url=receiver.url, events=["survey.answered"])
    inv = SurveyInvitation.objects.create(conversation=world.billing, customer=world.billing.customer, score=4,
                                          answered_at=timezone.now(), comment="ok")
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.survey_answered(inv)
    payload = receiver.requests[0].json()
    assert payload["event"] == "survey.answered"
    assert payload["data"]["survey_response"]["score"] == 4


def test_webhook_pages(client, personas, receiver, django_capture_on_commit_callbacks):
    client.force_login(personas.ana)
    resp = client.post("/settings/webhooks/", {"url": receiver.url, "events": ["message.created"], "name": "CRM"})
    assert resp.status_code == 200 and resp.context["new_secret"]
    sub = WebhookSubscription.objects.get(owner=personas.ana)
    page = client.get(f"/settings/webhooks/{sub.pk}/")
    assert page.status_code == 200 and sub.secret not in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/settings/webhooks/{sub.pk}/", {"op": "ping"}).status_code == 302
    assert "ping" in client.get(f"/settings/webhooks/{sub.pk}/").content.decode()
    bob = type(client)()
    bob.force_login(personas.bob)
    assert bob.get(f"/settings/webhooks/{sub.pk}/").status_code == 404
    bad = client.post("/settings/webhooks/", {"url": receiver.url, "events": []})
    assert "events" in bad.context["errors"]


def test_old_finished_deliveries_are_pruned(personas, receiver, settings):
    settings.WEBHOOK_LOG_DAYS = 30
    sub = webhooks.subscription_create(owner=personas.admin, url=receiver.url, events=["conversation.updated"])
    old = timezone.now() - timedelta(days=31)
    make = lambda state, created: WebhookDelivery.objects.create(  # noqa: E731
        subscription=sub, event_id="00000000-0000-0000-0000-000000000009", event="conversation.updated",
        payload={}, state=state, created_at=created)
    gone = [make(DeliveryState.DELIVERED, old), make(DeliveryState.FAILED, old)]
    kept = [make(DeliveryState.RETRYING, old), make(DeliveryState.DELIVERED, timezone.now())]
    assert webhooks.prune_log() == 2
    assert not WebhookDelivery.objects.filter(pk__in=[d.pk for d in gone]).exists()
    assert WebhookDelivery.objects.filter(pk__in=[d.pk for d in kept]).count() == 2


def test_survey_answered_is_emitted(personas, channels, inbound, django_capture_on_commit_callbacks):
    from conversations import services
    from metrics.models import SurveyInvitation
    from metrics.surveys import record_answer

    sub = webhooks.subscription_create(owner=personas.admin, url="https://hooks.example.com/x",
                                       events=["survey.answered"])
    conv = services.ingest(inbound(channels.api, "email", "kim@example.org")).message.conversation
    inv = SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, kind="csat",
                                          channel_kind="api")
    with django_capture_on_commit_callbacks(execute=True):
        record_answer(invitation=inv, score=5)
    delivery = WebhookDelivery.objects.get(subscription=sub)
    assert delivery.event == "survey.answered"
    assert delivery.payload["data"]["survey_response"]["score"] == 5


def test_wanted_events_are_reused_for_a_second_and_forgotten_at_once_here(personas, monkeypatch):
    """emit() runs after every ingest: the events some subscription wants are
    read from the cache once per WANTED_LOCAL_SECONDS per process. A change made
    in another process (only the shared cache dropped, as its
    _forget_wanted_events does) is seen when that second is over; one made in
    this process at once."""
    from django.core.cache import cache

    from helpdesk.models import WebhookSubscription

    now = [100.0]
    monkeypatch.setattr(webhooks, "_clock", lambda: now[0])
    reads = []
    real_get = cache.get
    monkeypatch.setattr(cache, "get", lambda key, *a, **kw: (reads.append(key), real_get(key, *a, **kw))[1])
    assert webhooks._wanted_events() == set()
    assert webhooks._wanted_events() == set() and len(reads) == 1  # reused: no second cache read
    # another process adds a subscription: the row, and the shared cache entry dropped
    WebhookSubscription.objects.create(owner=personas.admin, url="https://hooks.example.com/x",
                                       events=["message.created"])
    cache.delete(webhooks._WANTED_EVENTS)
    now[0] += webhooks.WANTED_LOCAL_SECONDS - 0.01
    assert webhooks._wanted_events() == set()  # still within the second
    now[0] += 0.02
    assert webhooks._wanted_events() == {"message.created"} and len(reads) == 2
    # a change made here is seen at once
    webhooks.subscription_create(owner=personas.admin, url="https://hooks.example.com/y",
                                 events=["conversation.updated"])
    assert webhooks._wanted_events() == {"message.created", "conversation.updated"}
