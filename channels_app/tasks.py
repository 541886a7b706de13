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
