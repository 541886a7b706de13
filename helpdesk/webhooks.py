"""Outbound webhooks for integrators: subscriptions, signed deliveries, retries.

`emit(event, obj)` is called after commit (conversations/realtime.py does it
for conversation.created/updated/resolved, message.created and
customer.merged; metrics calls `survey_answered(invitation)`). It stores one
WebhookDelivery per matching subscription and hands it to Celery.

Each delivery is a POST of JSON

    {"id": "<event uuid>", "event": "message.created", "created_at": "<ISO 8601>", "data": {...}}

with headers

    X-Threadline-Event: message.created
    X-Threadline-Delivery: <event uuid>
    X-Threadline-Timestamp: <unix seconds>
    X-Threadline-Signature: hex(HMAC-SHA256(secret, "<timestamp>.<raw body>"))

A 2xx answer is success. Anything else is retried with exponential backoff
(30 s doubling, capped at 1 h between tries) for WEBHOOK_RETRY_FOR seconds
(24 h); 4xx answers other than 408/429 and refused targets fail at once.
After WEBHOOK_DISABLE_AFTER failed attempts in a row the subscription is
disabled and its owner gets an email.

The target URL is checked by helpdesk.http (SSRF guard) when saved and again
on every attempt, so a DNS change cannot point it at a private address later.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from helpdesk import http
from helpdesk.models import (
    WEBHOOK_EVENT_NAMES,
    DeliveryState,
    WebhookDelivery,
    WebhookSubscription,
    _webhook_secret,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Threadline-Signature"
TIMESTAMP_HEADER = "X-Threadline-Timestamp"
BACKOFF_BASE = 30
BACKOFF_CAP = 3600


class InvalidSubscription(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- signing

def sign(secret: str, timestamp: str, body: bytes) -> str:
    """hex HMAC-SHA256 of "<timestamp>.<body>" with the subscription secret."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: int = 300,
           now: float | None = None) -> bool:
    """What a receiver does (docs/api.md shows the same in a few lines)."""
    try:
        age = abs((now or time.time()) - int(timestamp))
    except (TypeError, ValueError):
        return False
    if age > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")


# --------------------------------------------------------------------------- subscriptions (services)

def _check(url: str, events) -> list[str]:
    events = list(dict.fromkeys(events or []))
    if not events:
        raise InvalidSubscription("events", _("Choose at least one event."))
    unknown = [e for e in events if e not in WEBHOOK_EVENT_NAMES]
    if unknown:
        raise InvalidSubscription("events", _("Unknown events: %(e)s") % {"e": ", ".join(unknown)})
    try:
        http.check_url(url)
    except http.TransportError as exc:
        raise InvalidSubscription("url", exc.message)
    return events


def subscription_create(*, owner, url: str, events, name: str = "") -> WebhookSubscription:
    events = _check(url, events)
    _forget_wanted_events()
    return WebhookSubscription.objects.create(owner=owner, url=url, events=events, name=name[:100])


def subscription_update(*, subscription: WebhookSubscription, **fields) -> WebhookSubscription:
    url = fields.get("url", subscription.url)
    events = fields.get("events", subscription.events)
    fields["events"] = _check(url, events)
    for key in ("url", "events", "name"):
        if key in fields:
            setattr(subscription, key, fields[key])
    if fields.get("active") and not subscription.active:
        # re-enabled by a person: start counting failures afresh
        subscription.active = True
        subscription.consecutive_failures = 0
        subscription.disabled_at = None
        subscription.disabled_reason = ""
    elif fields.get("active") is False:
        subscription.active = False
    subscription.save()
    _forget_wanted_events()
    return subscription


def subscription_rotate_secret(*, subscription: WebhookSubscription) -> WebhookSubscription:
    subscription.secret = _webhook_secret()
    subscription.save(update_fields=["secret", "updated_at"])
    return subscription


def subscription_delete(*, subscription: WebhookSubscription) -> None:
    subscription.delete()


# --------------------------------------------------------------------------- payloads

def _visible(owner, conversation_id) -> bool:
    if conversation_id is None:
        return True
    from conversations.services import conversations_visible_to

    return conversations_visible_to(owner).filter(pk=conversation_id).exists()


def _serialize(event: str, obj) -> tuple[dict, int | None]:
    """(data, conversation id for visibility) for an event's object."""
    from conversations.api.serializers import ConversationSerializer, MessageSerializer
    from conversations.models import Conversation, Message

    if isinstance(obj, Message):
        msg = (Message.objects.select_related("author_user", "conversation").prefetch_related("attachments")
               .get(pk=obj.pk))
        conv = (Conversation.objects.select_related("customer", "assignee", "team").prefetch_related("tags")
                .get(pk=msg.conversation_id))
        return ({"message": MessageSerializer(msg).data, "conversation": ConversationSerializer(conv).data},
                conv.pk)
    if isinstance(obj, Conversation):
        conv = (Conversation.objects.select_related("customer", "assignee", "team").prefetch_related("tags")
                .get(pk=obj.pk))
        return {"conversation": ConversationSerializer(conv).data}, conv.pk
    if event == "survey.answered":
        return _survey_data(obj), getattr(obj, "conversation_id", None)
    if isinstance(obj, dict):
        return dict(obj), None
    return {"id": getattr(obj, "pk", None)}, None


def _survey_data(invitation) -> dict:
    from helpdesk.api.surveys import SurveyResponseSerializer

    return {"survey_response": SurveyResponseSerializer(invitation).data}


def survey_answered(invitation) -> None:
    """For metrics: call when a survey gets its answer (on commit is handled here)."""
    pk = invitation.pk
    model = type(invitation)

    def later():
        fresh = model.objects.filter(pk=pk).first()
        if fresh is not None:
            emit("survey.answered", fresh)

    transaction.on_commit(later)


_WANTED_EVENTS = "webhooks:wanted-events"


WANTED_LOCAL_SECONDS = 1.0  # how long this process reuses what it read (a change elsewhere reaches it within)
_wanted_local: dict = {"at": 0.0, "events": None}
_clock = time.monotonic


def _wanted_events() -> set:
    """The events some active subscription wants, from the cache: emit() runs
    after every ingest, and most installations have no subscription for most
    events. A superset is harmless (emit re-checks in the database).

    The set read is reused by this process for WANTED_LOCAL_SECONDS (an
    ingest asked Redis for it every message): a subscription created,
    changed or removed in another process counts here within a second; in
    this process at once."""
    now = _clock()
    local = _wanted_local["events"]
    if local is not None and now - _wanted_local["at"] < WANTED_LOCAL_SECONDS:
        return local
    wanted = cache.get(_WANTED_EVENTS)
    if wanted is None:
        wanted = set()
        for events in WebhookSubscription.objects.filter(active=True).values_list("events", flat=True):
            wanted.update(events or [])
        cache.set(_WANTED_EVENTS, wanted, 300)
    _wanted_local.update(at=now, events=wanted)
    return wanted


def _forget_wanted_events() -> None:
    def forget():
        _wanted_local["events"] = None
        cache.delete(_WANTED_EVENTS)

    forget()
    transaction.on_commit(forget)


def emit(event: str, obj) -> list[int]:
    """Queue `event` for every active subscription that wants it. Returns delivery ids."""
    if event not in WEBHOOK_EVENT_NAMES or event not in _wanted_events():
        return []
    subscriptions = [s for s in WebhookSubscription.objects.filter(active=True).select_related("owner")
                     if event in (s.events or [])]
    if not subscriptions:
        return []
    try:
        data, conversation_id = _serialize(event, obj)
    except Exception:  # the object vanished in between (merged, deleted)
        log.warning("webhook %s: could not serialize %r", event, obj, exc_info=True)
        return []
    data = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    now = timezone.now()
    event_id = uuid.uuid4()
    payload = {"id": str(event_id), "event": event, "created_at": now.isoformat(), "data": data}
    ids = []
    for sub in subscriptions:
        if not sub.owner.is_active or not _visible(sub.owner, conversation_id):
            continue  # the owner could not see this conversation in the app either
        delivery = WebhookDelivery.objects.create(subscription=sub, event_id=event_id, event=event,
                                                  payload=payload, next_attempt_at=now)
        ids.append(delivery.pk)
    if ids:
        transaction.on_commit(lambda: _enqueue(ids))
    return ids


def emit_test(subscription: WebhookSubscription) -> WebhookDelivery:
    """A `ping` delivery to check an endpoint (not subject to event selection)."""
    now = timezone.now()
    event_id = uuid.uuid4()
    delivery = WebhookDelivery.objects.create(
        subscription=subscription, event_id=event_id, event="ping", next_attempt_at=now,
        payload={"id": str(event_id), "event": "ping", "created_at": now.isoformat(),
                 "data": {"subscription": subscription.pk}})
    transaction.on_commit(lambda: _enqueue([delivery.pk]))
    return delivery


def _enqueue(ids) -> None:
    from helpdesk import tasks

    for pk in ids:
        tasks.deliver_webhook.delay(pk)


# --------------------------------------------------------------------------- delivery

def backoff(attempt: int) -> float:
    return min(BACKOFF_BASE * (2 ** (attempt - 1)), BACKOFF_CAP) * random.uniform(0.9, 1.1)


def body_bytes(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _claim(delivery_id: int) -> WebhookDelivery | None:
    now = timezone.now()
    lease = now + timedelta(seconds=max(settings.OUTBOUND_HTTP_TIMEOUT * 3, 60))
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state__in=[DeliveryState.PENDING, DeliveryState.RETRYING], next_attempt_at__lte=now,
    ).update(next_attempt_at=lease)
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("subscription", "subscription__owner").get(pk=delivery_id)


def deliver(delivery_id: int) -> tuple[str, float | None]:
    """One attempt. Returns (state, retry in seconds or None)."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "skipped", None
    sub = delivery.subscription
    now = timezone.now()
    attempt = delivery.attempts + 1
    if not sub.active:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            state=DeliveryState.FAILED, error=_("The subscription is disabled."), next_attempt_at=None)
        return DeliveryState.FAILED, None
    body = body_bytes(delivery.payload)
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json", "User-Agent": "Threadline-Webhooks/1",
        "X-Threadline-Event": delivery.event, "X-Threadline-Delivery": str(delivery.event_id),
        TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(sub.secret, ts, body),
    }
    try:
        resp = http.post(sub.url, content=body, headers=headers)
    except http.TransportError as exc:
        return _failed(delivery, attempt, now, exc)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=DeliveryState.DELIVERED, attempts=attempt, response_status=resp.status,
        response_body=resp.text[:2000], error="", last_attempt_at=now, delivered_at=now, next_attempt_at=None)
    WebhookSubscription.objects.filter(pk=sub.pk).update(consecutive_failures=0)
    return DeliveryState.DELIVERED, None


def _failed(delivery: WebhookDelivery, attempt: int, now, exc: http.TransportError) -> tuple[str, float | None]:
    sub = delivery.subscription
    deadline = delivery.created_at + timedelta(seconds=settings.WEBHOOK_RETRY_FOR)
    delay = max(backoff(attempt), exc.retry_after or 0)
    next_at = now + timedelta(seconds=delay)
    final = exc.permanent or next_at > deadline
    if not final:
        # the last try lands on the deadline rather than being skipped
        next_at = min(next_at, deadline)
    fields = {"attempts": attempt, "response_status": exc.status, "error": exc.message[:2000],
              "last_attempt_at": now,
              "state": DeliveryState.FAILED if final else DeliveryState.RETRYING,
              "next_attempt_at": None if final else next_at}
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    WebhookSubscription.objects.filter(pk=sub.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    sub.refresh_from_db(fields=["consecutive_failures", "active"])
    log.info("webhook delivery %s to subscription %s failed (attempt %s): %s", delivery.pk, sub.pk, attempt,
             exc.message[:200])
    if sub.active and sub.consecutive_failures >= settings.WEBHOOK_DISABLE_AFTER:
        subscription_disable(subscription=sub, reason=_("%(n)s failed attempts in a row; last error: %(e)s")
                             % {"n": sub.consecutive_failures, "e": exc.message[:200]})
    if final:
        return DeliveryState.FAILED, None
    return DeliveryState.RETRYING, (next_at - now).total_seconds()


def subscription_disable(*, subscription: WebhookSubscription, reason: str) -> None:
    """Turn a failing subscription off, stop its pending deliveries and tell its owner."""
    updated = WebhookSubscription.objects.filter(pk=subscription.pk, active=True).update(
        active=False, disabled_at=timezone.now(), disabled_reason=reason[:300])
    if not updated:
        return
    WebhookDelivery.objects.filter(subscription=subscription, state__in=[DeliveryState.PENDING,
                                                                        DeliveryState.RETRYING]).update(
        state=DeliveryState.FAILED, error=_("The subscription was disabled."), next_attempt_at=None)
    owner = subscription.owner
    log.warning("webhook subscription %s disabled: %s", subscription.pk, reason)
    if owner.email:
        from django.utils import translation

        with translation.override(owner.language or settings.LANGUAGE_CODE):
            subject = _("Threadline: webhook to %(url)s disabled") % {"url": subscription.url}
            text = _("Your webhook subscription \"%(name)s\" (%(url)s) was disabled after repeated delivery "
                     "failures.\n\nReason: %(reason)s\n\nFix the endpoint, then re-enable the subscription at "
                     "%(link)s") % {"name": subscription.name or subscription.url, "url": subscription.url,
                                    "reason": reason, "link": settings.PUBLIC_URL + "/settings/webhooks/"}
        try:
            send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, [owner.email])
        except Exception:
            log.exception("could not email the owner of webhook subscription %s", subscription.pk)


def due_deliveries(limit: int = 500) -> list[int]:
    return list(WebhookDelivery.objects.filter(
        state__in=[DeliveryState.PENDING, DeliveryState.RETRYING], next_attempt_at__lte=timezone.now(),
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def prune_log(*, batch: int = 5000) -> int:
    """Delete finished deliveries older than WEBHOOK_LOG_DAYS (a batch per call)."""
    cutoff = timezone.now() - timedelta(days=settings.WEBHOOK_LOG_DAYS)
    ids = list(WebhookDelivery.objects.filter(created_at__lt=cutoff, state__in=[
        DeliveryState.DELIVERED, DeliveryState.FAILED]).values_list("pk", flat=True)[:batch])
    if not ids:
        return 0
    return WebhookDelivery.objects.filter(pk__in=ids).delete()[0]


def redeliver(delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a logged delivery again (a new delivery with the same event id and payload)."""
    copy = WebhookDelivery.objects.create(subscription=delivery.subscription, event_id=delivery.event_id,
                                          event=delivery.event, payload=delivery.payload,
                                          next_attempt_at=timezone.now())
    transaction.on_commit(lambda: _enqueue([copy.pk]))
    return copy
