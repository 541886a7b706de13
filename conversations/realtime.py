"""Publishing to agents' browsers through the channel layer (after commit).

Groups (ARCHITECTURE.md): `inbox` (users who see everything), `team.<id>` or
`team.none`, `agent.<id>`, `conversation.<id>`. Every event carries a
per-process monotonic `seq` and the conversation's `updated_at`, so a client
that reconnects can ask for what changed since.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)


def conversation_groups(conversation) -> list[str]:
    groups = ["inbox", f"team.{conversation.team_id}" if conversation.team_id else "team.none",
              f"conversation.{conversation.pk}"]
    if conversation.assignee_id:
        groups.append(f"agent.{conversation.assignee_id}")
    return groups


def send(groups: list[str], payload: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    # `id` lets a socket that is in several of these groups drop the copies;
    # `at` (server time) is what a reconnecting client passes to catch_up.
    payload.setdefault("id", uuid.uuid4().hex)
    payload.setdefault("at", timezone.now().isoformat())
    event = {"type": "broadcast", "payload": payload}
    try:
        _run(_group_send_all(layer, groups, event))
    except Exception:  # realtime is best effort: the data is committed already
        log.exception("realtime publish failed for %s", payload.get("event"))


async def _await(coro) -> None:
    await coro


async def _group_send_all(layer, groups, event) -> None:
    for group in groups:
        await layer.group_send(group, event)


_loop = None
_loop_lock = threading.Lock()


def _publisher_loop():
    """One long-lived event loop thread per process for publishing from sync
    code (Celery workers, WSGI, management commands). async_to_sync would
    start a fresh loop per call, and the Redis layers open a connection per
    loop: about 10 ms per publish instead of well under one."""
    global _loop
    with _loop_lock:
        if _loop is None or not _loop.is_running():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="realtime-publisher", daemon=True).start()
            started.wait(5)
            _loop = loop
    return _loop


def _run(coro) -> None:
    if not getattr(settings, "REDIS_URL", ""):
        # the in-memory layer only works on the loop that serves the sockets
        async_to_sync(_await)(coro)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # called from async code: schedule it there instead of blocking the loop
        asyncio.ensure_future(coro)
        return
    asyncio.run_coroutine_threadsafe(coro, _publisher_loop()).result(timeout=10)


def _conversation_payload(conversation) -> dict:
    return {
        "id": conversation.pk,
        "status": conversation.status,
        "priority": conversation.priority,
        "assignee": conversation.assignee_id,
        "team": conversation.team_id,
        "subject": conversation.subject,
        "customer": conversation.customer_id,
        "last_message_at": conversation.last_message_at.isoformat() if conversation.last_message_at else None,
        "updated_at": conversation.updated_at.isoformat(),
        "preview": conversation.last_message_preview,
        "channel": conversation.last_inbound_kind or conversation.origin_kind,
    }


def publish_message(message_id: int, conversation_created: bool = False, message=None) -> None:
    """`message` (with its conversation attached and current) saves a query on the hot path."""
    from .models import Message

    msg = message if message is not None else (
        Message.objects.select_related("conversation").filter(pk=message_id).first())
    if msg is None:
        return
    conv = msg.conversation
    payload = {
        "event": "conversation.created" if conversation_created else "message.created",
        "conversation": _conversation_payload(conv),
        "message": {"id": msg.pk, "direction": msg.direction, "channel": msg.channel_kind,
                    "author": msg.author_name, "text": msg.body_text[:500], "created_at": msg.created_at.isoformat(),
                    "delivery_status": msg.delivery_status, "automated": msg.automated},
    }
    groups = conversation_groups(conv)
    if msg.direction == "note":
        payload["message"]["text"] = msg.body_text[:500]
    send(groups, payload)
    _notify_integrations("message.created", msg)
    if conversation_created:
        _notify_integrations("conversation.created", conv)


def publish_conversation(conversation_id: int, event: str = "conversation.updated") -> None:
    from .models import Conversation

    conv = Conversation.objects.filter(pk=conversation_id).first()
    if conv is None:
        return
    send(conversation_groups(conv), {"event": event, "conversation": _conversation_payload(conv)})
    _notify_integrations("conversation.resolved" if conv.status == "resolved" and event == "conversation.updated"
                         else event, conv)


def publish_conversation_deleted(conversation_id: int) -> None:
    send(["inbox", f"conversation.{conversation_id}"], {"event": "conversation.deleted", "id": conversation_id})


def publish_delivery(message_id: int) -> None:
    from .models import Message

    msg = Message.objects.select_related("conversation").filter(pk=message_id).first()
    if msg is None:
        return
    send([f"conversation.{msg.conversation_id}"],
         {"event": "message.status", "conversation": msg.conversation_id,
          "message": {"id": msg.pk, "delivery_status": msg.delivery_status, "error": msg.delivery_error[:300]}})


def publish_mentions(message_id: int, user_ids: list[int]) -> None:
    for user_id in user_ids:
        send([f"agent.{user_id}"], {"event": "mention", "message": message_id})


def publish_customer_merged(survivor_id: int, merged_id: int) -> None:
    send(["inbox"], {"event": "customer.merged", "survivor": survivor_id, "merged": merged_id})
    _notify_integrations("customer.merged", {"survivor": survivor_id, "merged": merged_id})


def publish_sla_warning(conversation_id: int, *, kind: str, due_at, breached: bool = False) -> None:
    """An SLA timer is about to run out (or ran out) on a conversation: for the
    SLA engine to call. `kind` names the timer (first_response, resolution)."""
    from .models import Conversation

    conv = Conversation.objects.filter(pk=conversation_id).first()
    if conv is None:
        return
    send(conversation_groups(conv), {
        "event": "sla.breached" if breached else "sla.warning", "conversation": _conversation_payload(conv),
        "sla": {"kind": kind, "due_at": due_at.isoformat() if hasattr(due_at, "isoformat") else due_at}})


def publish_presence(conversation_id: int, viewers: list[dict], typing: list[dict]) -> None:
    """Who is viewing / typing a reply in a conversation (collision detection)."""
    send([f"conversation.{conversation_id}"],
         {"event": "presence", "conversation": conversation_id, "viewers": viewers, "typing": typing})


def publish_availability(user_id: int, status: str) -> None:
    """An agent went online, away or offline. Every agent socket is in `inbox`
    or `team.none`, so these two groups reach every agent exactly once."""
    send(["inbox", "team.none"], {"event": "agent.availability", "agent": user_id, "status": status})


def publish_customer_typing(conversation_id: int, typing: bool) -> None:
    send([f"conversation.{conversation_id}"],
         {"event": "customer.typing", "conversation": conversation_id, "typing": bool(typing)})


def _notify_integrations(event: str, obj) -> None:
    """Outbound webhooks for integrators (helpdesk.webhooks), if configured."""
    try:
        from helpdesk import webhooks
    except ImportError:
        return
    try:
        webhooks.emit(event, obj)
    except Exception:
        log.exception("webhook emit failed for %s", event)
