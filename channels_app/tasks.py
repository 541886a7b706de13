from __future__ import annotations

from celery import shared_task


@shared_task(name="channels_app.tasks.poll_all_imap")
def poll_all_imap() -> int:
    """Poll every active email channel that has IMAP settings."""
    try:
        from .adapters.email import imap
    except ImportError:
        return 0
    return imap.poll_all()


@shared_task(name="channels_app.tasks.replay_envelope")
def replay_envelope(envelope_id: int) -> bool:
    from .models import InboundEnvelope
    from .services import envelope_replay

    envelope = InboundEnvelope.objects.filter(pk=envelope_id).first()
    return bool(envelope and envelope_replay(envelope))


@shared_task(name="channels_app.tasks.process_stale_pending")
def process_stale_pending(older_than: int = 120, limit: int = 500) -> int:
    """Process envelopes still pending a while after they arrived: their queued
    task was lost (broker restart) or the process died mid-request. Ingest
    dedupes, so an envelope processed twice is harmless."""
    from datetime import timedelta

    from django.utils import timezone

    from .models import EnvelopeStatus, InboundEnvelope
    from .services import envelope_replay

    cutoff = timezone.now() - timedelta(seconds=older_than)
    ids = list(InboundEnvelope.objects.filter(status=EnvelopeStatus.PENDING, received_at__lt=cutoff)
               .order_by("received_at").values_list("pk", flat=True)[:limit])
    done = 0
    for envelope in InboundEnvelope.objects.filter(pk__in=ids).order_by("received_at"):
        done += bool(envelope_replay(envelope))
    return done
