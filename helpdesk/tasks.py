"""Thin Celery tasks of the helpdesk app: outbound webhook deliveries."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="helpdesk.tasks.deliver_webhook", acks_late=True)
def deliver_webhook(delivery_id: int) -> str:
    from helpdesk import webhooks

    state, retry_in = webhooks.deliver(delivery_id)
    if retry_in is not None and not deliver_webhook.app.conf.task_always_eager:
        # Eager mode has no delay: the periodic task picks it up when due.
        deliver_webhook.apply_async((delivery_id,), countdown=retry_in)
    return state


@shared_task(name="helpdesk.tasks.retry_webhooks")
def retry_webhooks() -> int:
    """Safety net: deliveries whose time has come (lost tasks, eager mode, restarts)."""
    from helpdesk import webhooks

    ids = webhooks.due_deliveries()
    for pk in ids:
        deliver_webhook.delay(pk)
    webhooks.prune_log()
    return len(ids)
