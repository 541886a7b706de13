"""Periodic tasks of the live chat and agent presence (scheduled in helpdesk/celery.py)."""
from __future__ import annotations

from celery import shared_task


@shared_task(name="channels_app.adapters.chat.tasks.email_unseen_replies")
def email_unseen_replies() -> int:
    from .offline import email_unseen_replies as run

    return run()


@shared_task(name="channels_app.adapters.chat.tasks.presence_sweep")
def presence_sweep() -> int:
    from conversations.presence import sweep

    return sweep()
