"""What happens automatically after an inbound message or a resolution.

Channel adapters and the metrics app plug in here through small hooks so the
core never imports an adapter: `AFTER_INGEST_HOOKS` and `AFTER_RESOLVE_HOOKS`
are lists of dotted paths called with (message, conversation_created) and
(conversation) respectively.
"""
from __future__ import annotations

import logging

from django.utils.module_loading import import_string

from .models import Conversation, Message

log = logging.getLogger(__name__)

AFTER_INGEST_HOOKS = [
    "conversations.assignment.auto_assign_hook",
    "channels_app.automation.auto_acknowledge_hook",
    "channels_app.adapters.meta.contacts.contact_details_hook",
]
AFTER_RESOLVE_HOOKS = [
    "metrics.surveys.after_resolve_hook",
    "channels_app.adapters.chat.hooks.after_resolve_hook",
]


def _run(hooks, *args) -> None:
    for path in hooks:
        try:
            fn = import_string(path)
        except ImportError:
            continue
        try:
            fn(*args)
        except Exception:
            log.exception("automation hook %s failed", path)


def wanted(message, conversation_created: bool) -> bool:
    """Whether any after-ingest hook has work for this message. A hook may carry
    a cheap in-process `wants(message, conversation_created)` predicate; one
    without it is always run. Saves a task per message on the hot path."""
    for path in AFTER_INGEST_HOOKS:
        try:
            fn = import_string(path)
        except ImportError:
            continue
        wants = getattr(fn, "wants", None)
        if wants is None or wants(message, conversation_created):
            return True
    return False


def after_ingest(message_id: int, conversation_created: bool) -> None:
    message = Message.objects.select_related("conversation", "channel").filter(pk=message_id).first()
    if message is None:
        return
    if (message.meta or {}).get("imported"):
        return  # history imported by metrics.importer: no auto-assignment or auto-acknowledgement
    _run(AFTER_INGEST_HOOKS, message, conversation_created)


def after_resolve(conversation_id: int) -> None:
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return
    _run(AFTER_RESOLVE_HOOKS, conversation)
