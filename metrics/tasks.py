"""Metrics tasks (thin: they call the engine)."""
from __future__ import annotations

from celery import shared_task


def events_recorded(event_ids: list[int]) -> None:
    """Called after commit with new ConversationEvent ids; the engine batches them."""
    from . import engine

    engine.events_recorded(event_ids)


@shared_task(name="metrics.tasks.flush")
def flush() -> int:
    from . import engine

    return engine.flush()


@shared_task(name="metrics.tasks.periodic")
def periodic() -> None:
    from . import engine

    engine.periodic()
