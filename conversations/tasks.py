"""Thin Celery tasks: take ids, load, call a service."""
from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="conversations.tasks.deliver_message", acks_late=True)
def deliver_message(message_id: int) -> str:
    from channels_app import delivery

    outcome = delivery.deliver(message_id)
    if outcome.retry_in is not None and not deliver_message.app.conf.task_always_eager:
        # Eager mode has no delay: the periodic requeue picks it up when due.
        deliver_message.apply_async((message_id,), countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="conversations.tasks.requeue_stale_outbox")
def requeue_stale_outbox() -> int:
    from channels_app import delivery

    ids = delivery.due_outbox()
    for message_id in ids:
        deliver_message.delay(message_id)
    return len(ids)


@shared_task(name="conversations.tasks.wake_snoozed")
def wake_snoozed() -> int:
    from .services import wake_due

    return wake_due()


@shared_task(name="conversations.tasks.after_ingest")
def after_ingest(message_id: int, conversation_created: bool) -> None:
    from . import automation

    automation.after_ingest(message_id, conversation_created)


@shared_task(name="conversations.tasks.after_resolve")
def after_resolve(conversation_id: int) -> None:
    from . import automation

    automation.after_resolve(conversation_id)
