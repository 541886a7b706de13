"""Publishing to agents' browsers through the channel layer (after commit).

Groups (ARCHITECTURE.md): `inbox` (users who see everything), `team.<id>` or
`team.none`, `agent.<id>`, `conversation.<id>`. Every event carries an `id`
(a socket in several groups drops the copies), the server time `at` and the
conversation's `updated_at`, so a client that reconnects can ask for what
changed since.
"""
from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import uuid
import weakref

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
    event = broadcast_event(payload)
    try:
        publisher = _sync_publisher(layer)
        if publisher is not None and not _in_event_loop():
            publisher.publish(groups, event)
        else:
            _run(_group_send_all(layer, groups, event))
    except Exception:  # realtime is best effort: the data is committed already
        log.exception("realtime publish failed for %s", payload.get("event"))


def group_send(groups: list[str], event: dict) -> None:
    """Send a channel-layer event to groups from sync code: straight to Redis
    when the layer allows (_SyncPubSub), else through the layer's event loop.
    Raises what the layer raises (callers decide whether that is best effort)."""
    layer = get_channel_layer()
    if layer is None:
        return
    publisher = _sync_publisher(layer)
    if publisher is not None and not _in_event_loop():
        publisher.publish(groups, event)
    else:
        _run(_group_send_all(layer, groups, event))


def broadcast_event(payload: dict) -> dict:
    """The channel-layer event for `payload`: the frame text, encoded once here
    (as AsyncJsonWebsocketConsumer.encode_json does) instead of once per
    receiving socket, and what AgentConsumer.broadcast needs to dedupe and
    re-check permissions (id, at, the conversation's id/team/assignee)."""
    event = {"type": "broadcast", "text": json.dumps(payload),
             "id": payload.get("id"), "at": payload.get("at")}
    conv = payload.get("conversation")
    if isinstance(conv, dict):
        event["conversation"] = {"id": conv.get("id"), "team": conv.get("team"), "assignee": conv.get("assignee")}
    return event


async def _await(coro) -> None:
    await coro


async def _group_send_all(layer, groups, event) -> None:
    await asyncio.gather(*(layer.group_send(group, event) for group in groups))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _SyncPubSub:
    """Publishes to channels_redis' RedisPubSubChannelLayer from sync code with
    a plain (thread-safe) redis-py client: the event is serialized once and
    PUBLISHed to every group in one pipelined round trip, with no hop to an
    event loop thread. Same Redis channels and wire format as the layer's own
    group_send (`<prefix>__group__<group>`, the layer's serializer)."""

    def __init__(self, layer, hosts: list[str], prefix: str):
        import redis

        self.layer = layer
        self.prefix = prefix
        self.clients = [redis.Redis.from_url(url) for url in hosts]

    def publish(self, groups, event) -> None:
        from channels_redis.utils import _consistent_hash

        data = self.layer.serialize(event)
        pipes = {}
        for group in groups:
            channel = f"{self.prefix}__group__{group}"
            index = _consistent_hash(channel, len(self.clients))
            if index not in pipes:
                pipes[index] = self.clients[index].pipeline(transaction=False)
            pipes[index].publish(channel, data)
        for pipe in pipes.values():
            pipe.execute()


_sync_lock = threading.Lock()
_SYNC_ATTR = "_threadline_sync_publisher"


def _sync_publisher(layer):
    """A _SyncPubSub for `layer` when it is a RedisPubSubChannelLayer whose hosts
    are plain URLs; None otherwise (other layers publish through their loop).
    Kept on the layer object itself (its __dict__: the layer's __getattr__
    proxies to a per-event-loop layer)."""
    if _SYNC_ATTR in layer.__dict__:
        return layer.__dict__[_SYNC_ATTR]
    with _sync_lock:
        if _SYNC_ATTR not in layer.__dict__:
            publisher = None
            try:
                from channels_redis.pubsub import RedisPubSubChannelLayer
                from channels_redis.utils import decode_hosts
            except ImportError:
                RedisPubSubChannelLayer = None
            if RedisPubSubChannelLayer is not None and isinstance(layer, RedisPubSubChannelLayer):
                kwargs = layer._kwargs
                hosts = decode_hosts(kwargs.get("hosts"))
                if not layer._args and all(set(h) == {"address"} for h in hosts):
                    publisher = _SyncPubSub(layer, [h["address"] for h in hosts], kwargs.get("prefix", "asgi"))
            layer.__dict__[_SYNC_ATTR] = publisher
    return layer.__dict__[_SYNC_ATTR]


_loop = None
_loop_lock = threading.Lock()


def _publisher_loop():
    """One long-lived event loop thread per process for publishing from sync
    code through layers _SyncPubSub does not cover. async_to_sync would
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
    if _in_event_loop():  # called from async code: schedule it there instead of blocking the loop
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


AVAILABILITY_GROUPS = ["inbox", "team.none"]  # every agent socket is in one of them, exactly once
# availability changes made while serving sockets are sent as one frame per
# this many seconds and process: N agents connecting at once (a deploy, a
# network blip) would otherwise send N frames to each of the N agent sockets
AVAILABILITY_BATCH_SECONDS = 0.25


def publish_availability(user_id: int, status: str) -> None:
    """An agent went online, away or offline.

    Frame: {"event": "agent.availability", "agents": [{"agent": id, "status": ...}, ...]}.
    In an ASGI process (the change was made from a socket or view, whose event
    loop asgiref knows) the change joins that loop's batch: one frame per
    AVAILABILITY_BATCH_SECONDS with the agents' statuses as stored when it is
    sent. Elsewhere (Celery's sweep, WSGI) it is sent at once."""
    loop = _serving_loop()
    if loop is not None:
        try:
            # an empty context, not this thread's: in Channels' sync thread it
            # marks asgiref's single thread executor as in use, and the batch's
            # task (which inherits it) could then not reach the database
            loop.call_soon_threadsafe(_availability_batch(loop).add, user_id, context=contextvars.Context())
            return
        except RuntimeError:  # the loop closed meanwhile
            pass
    send(AVAILABILITY_GROUPS, {"event": "agent.availability", "agents": [{"agent": user_id, "status": status}]})


def _serving_loop():
    """The running event loop that serves this process's sockets: the current
    one, or for sync code run by sync_to_async, the loop that called it."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    from asgiref.sync import SyncToAsync

    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running() and not loop.is_closed():
        return loop
    return None


_batches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _availability_batch(loop) -> "_AvailabilityBatch":
    with _loop_lock:
        batch = _batches.get(loop)
        if batch is None:
            batch = _batches[loop] = _AvailabilityBatch(loop)
    return batch


class _AvailabilityBatch:
    """Availability changes of one event loop, sent together (runs on that loop)."""

    def __init__(self, loop):
        self.loop = loop
        self.pending: set[int] = set()
        self.handle = None

    def add(self, user_id: int) -> None:
        self.pending.add(user_id)
        if self.handle is None:
            self.handle = self.loop.call_later(AVAILABILITY_BATCH_SECONDS, self.flush)

    def flush(self) -> None:
        self.handle = None
        ids, self.pending = self.pending, set()
        if ids:
            self.loop.create_task(self._send(sorted(ids)))

    async def _send(self, ids: list[int]) -> None:
        from channels.db import database_sync_to_async

        try:
            # the statuses as stored now: a later change made in another
            # process must not be overtaken by this batch's older value
            agents = await database_sync_to_async(_stored_availability)(ids)
            layer = get_channel_layer()
            if layer is None or not agents:
                return
            payload = {"event": "agent.availability", "agents": agents, "id": uuid.uuid4().hex,
                       "at": timezone.now().isoformat()}
            await _group_send_all(layer, AVAILABILITY_GROUPS, broadcast_event(payload))
        except Exception:  # realtime is best effort
            log.exception("realtime publish failed for agent.availability")


def _stored_availability(ids: list[int]) -> list[dict]:
    from helpdesk.models import User

    return [{"agent": pk, "status": status}
            for pk, status in User.objects.filter(pk__in=ids).order_by("pk").values_list("pk", "availability")]


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
