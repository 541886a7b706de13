"""Metrics tasks. The KPI engine folds events into facts and rollups."""
from __future__ import annotations

from celery import shared_task


def events_recorded(event_ids: list[int]) -> None:
    """Called after commit with new ConversationEvent ids (batched by the engine)."""
    try:
        from . import engine
    except ImportError:
        return
    engine.events_recorded(event_ids)


@shared_task(name="metrics.tasks.periodic")
def periodic() -> None:
    try:
        from . import engine
    except ImportError:
        return
    engine.periodic()
