"""The per-agent notification list (mentions in internal notes)."""
from __future__ import annotations

from django.utils.translation import gettext as _

from .models import Notification


def notify_mentions(message, users, *, actor=None) -> list[Notification]:
    """One notification per mentioned agent who may see the conversation.

    The realtime push itself is done by services.add_note (publish_mentions)."""
    from .services import conversations_visible_to

    rows = []
    for user in users:
        if not conversations_visible_to(user).filter(pk=message.conversation_id).exists():
            continue
        rows.append(Notification(user=user, kind="mention", conversation_id=message.conversation_id,
                                 message=message, actor=actor,
                                 text=(_("%(name)s mentioned you: %(text)s")
                                       % {"name": actor.name if actor else "", "text": message.body_text})[:200]))
    return Notification.objects.bulk_create(rows)
