"""Outbound delivery: the outbox worker side of `conversations.services.reply`.

A queued message is claimed with a lease (its next_attempt_at is pushed
forward), sent through its channel's adapter outside any transaction, then
marked sent, retried with exponential backoff, or failed.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from conversations.models import DeliveryStatus, Direction, Message
from conversations.services import delivery_update
from helpdesk.http import TransportError

from .adapters import UnknownAdapter, get_adapter

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    status: str  # sent, failed, retry, skipped
    retry_in: float | None = None


def backoff(attempt: int) -> float:
    """Seconds before retry number `attempt` (1-based): 15 s doubling to 1 h, with jitter."""
    base = min(15 * (2 ** (attempt - 1)), 3600)
    return base * random.uniform(0.8, 1.2)


def _claim(message_id: int) -> Message | None:
    now = timezone.now()
    lease = now + timedelta(seconds=settings.OUTBOX_STALE_AFTER)
    claimed = Message.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        pk=message_id, direction=Direction.OUTBOUND, delivery_status=DeliveryStatus.QUEUED,
    ).update(next_attempt_at=lease)
    if not claimed:
        return None
    return Message.objects.select_related("channel", "conversation", "conversation__customer").get(pk=message_id)


def deliver(message_id: int) -> Outcome:
    message = _claim(message_id)
    if message is None:
        return Outcome("skipped")
    attempt = message.delivery_attempts + 1
    try:
        if message.channel is None:
            raise TransportError("The message has no channel.", permanent=True)
        adapter = get_adapter(message.channel.kind)
        result = adapter.send(message)
    except (TransportError, UnknownAdapter) as exc:
        permanent = getattr(exc, "permanent", True)
        error = getattr(exc, "message", str(exc))
        if permanent or attempt >= settings.OUTBOX_MAX_ATTEMPTS:
            Message.objects.filter(pk=message.pk).update(delivery_attempts=attempt, next_attempt_at=None)
            delivery_update(message=message, status=DeliveryStatus.FAILED, error=error)
            log.warning("delivery of message %s failed permanently: %s", message.pk, error)
            return Outcome("failed")
        delay = max(backoff(attempt), getattr(exc, "retry_after", None) or 0)
        Message.objects.filter(pk=message.pk).update(
            delivery_attempts=attempt, delivery_error=error[:2000],
            next_attempt_at=timezone.now() + timedelta(seconds=delay))
        log.info("delivery of message %s failed (attempt %s), retry in %.0fs: %s", message.pk, attempt, delay, error)
        return Outcome("retry", retry_in=delay)
    except Exception as exc:  # a bug in an adapter: keep the message, retry later
        log.exception("adapter crashed sending message %s", message.pk)
        delay = backoff(attempt)
        Message.objects.filter(pk=message.pk).update(
            delivery_attempts=attempt, delivery_error=f"{type(exc).__name__}: {exc}"[:2000],
            next_attempt_at=timezone.now() + timedelta(seconds=delay))
        if attempt >= settings.OUTBOX_MAX_ATTEMPTS:
            delivery_update(message=message, status=DeliveryStatus.FAILED, error=str(exc))
            return Outcome("failed")
        return Outcome("retry", retry_in=delay)
    fields = {"delivery_attempts": attempt, "next_attempt_at": None, "delivery_error": ""}
    if result.external_id:
        clash = Message.objects.filter(channel=message.channel, external_id=result.external_id).exclude(pk=message.pk)
        if not clash.exists():
            fields["external_id"] = result.external_id
    if result.meta:
        fields["meta"] = {**message.meta, **result.meta}
    Message.objects.filter(pk=message.pk).update(**fields)
    delivery_update(message=message, status=result.status or DeliveryStatus.SENT)
    return Outcome("sent")


def due_outbox(limit: int = 500) -> list[int]:
    """Queued messages whose attempt is due: lost tasks, expired leases, retries."""
    now = timezone.now()
    return list(
        Message.objects.filter(direction=Direction.OUTBOUND, delivery_status=DeliveryStatus.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    )
