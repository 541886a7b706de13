"""Writes of the metrics app's settings (business hours, SLA policies).

Changing them changes business-hours figures and SLA verdicts of past
conversations, so every fact is marked for recomputation afterwards.
"""
from __future__ import annotations

from django.db import transaction

from . import engine
from .models import ConversationFact


def settings_changed() -> None:
    """Mark every fact dirty; the periodic task recomputes them in batches."""
    def mark():
        ids = ConversationFact.objects.values_list("conversation_id", flat=True)
        batch = []
        for cid in ids.iterator(chunk_size=10000):
            batch.append(cid)
            if len(batch) >= 10000:
                engine.mark_dirty(batch)
                batch = []
        engine.mark_dirty(batch)
        engine.schedule_flush()

    transaction.on_commit(mark)


@transaction.atomic
def business_hours_save(form) -> object:
    obj = form.save()
    settings_changed()
    return obj


@transaction.atomic
def business_hours_delete(obj) -> None:
    obj.delete()
    settings_changed()


@transaction.atomic
def sla_policy_save(form) -> object:
    obj = form.save()
    settings_changed()
    return obj


@transaction.atomic
def sla_policy_delete(obj) -> None:
    obj.delete()
    settings_changed()
