"""The agents' WebSocket (`/ws/agent/`): one per browser tab.

Protocol: see the comment at the top of static/js/realtime.js.

Permissions: an agent joins `inbox` only if they see everything, otherwise
`team.<id>` for each of their teams, `team.none` and `agent.<id>`;
`conversation.<id>` only after `conversations_visible_to` says yes. Every
broadcast is checked again against the payload's team/assignee before it is
forwarded, so a conversation moved to another team stops reaching an agent who
still has it open.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import presence

log = logging.getLogger(__name__)

CATCH_UP_LIMIT = 500  # events per catch_up reply; `truncated` tells the client to reload
MAX_FRAME = 16 * 1024
# client messages per 10 s before the socket is told to slow down
AGENT_RATE = 100


# a socket's queued broadcasts are forwarded back to back; after this many
# without a pause the loop lets the other sockets run (see _pump)
PUMP_YIELD_EVERY = 64


class PumpedConsumer:
    """For a Channels async consumer (before it in the bases): AsyncConsumer.
    __call__ with the frames of the browser and the channel layer's events
    each read by a loop of their own (_pump) instead of channels.utils.
    await_many_dispatch.

    await_many_dispatch starts a new task per message and waits for it with
    asyncio.wait: three turns of the event loop per message (one here when the
    socket was idle, none for a queued one): a message waited for three turns
    (10 ms and more each on the bench's busy loop) before its handler ran, and
    a socket forwarded at most one event per three turns (see __call__)."""

    async def __call__(self, scope, receive, send):
        """Handlers still run one at a time (a lock), as Channels runs them.

        Measured on the agent socket: await_many_dispatch's three turns per
        event, however many are queued, let a socket forward at most one event
        per three turns. On a
        busy loop (bench/realtime.py on 2 shared cores: turns of 10 ms and more)
        that is under 40 events/s: in a traced run the 20 sockets of the team
        that got 40 events/s fell behind together by up to 1 s while the other
        teams' sockets (20/s) stayed within 0.3 s. Here the queued events go
        out back to back in one turn."""
        layer = get_channel_layer(self.channel_layer_alias)
        if layer is None:
            return await super().__call__(scope, receive, send)
        self.scope = scope
        self.channel_layer = layer
        self.channel_name = await layer.new_channel()
        self.channel_receive = functools.partial(layer.receive, self.channel_name)
        self.base_send = send
        lock = asyncio.Lock()
        pumps = [asyncio.ensure_future(self._pump(receive, lock)),
                 asyncio.ensure_future(self._pump(self.channel_receive, lock))]
        try:
            done, _pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        except StopConsumer:
            pass
        finally:
            for task in pumps:
                task.cancel()
            for task in pumps:
                try:
                    await task
                except (asyncio.CancelledError, StopConsumer):
                    pass

    async def _pump(self, source, lock: asyncio.Lock) -> None:
        """Dispatch what `source` returns, one message after the other. A
        receive from a non-empty queue, an uncontended lock and a frame written
        without back-pressure do not suspend: a backlog goes out in one turn
        (every PUMP_YIELD_EVERY messages the other sockets get a turn)."""
        count = 0
        while True:
            message = await source()
            async with lock:
                await self.dispatch(message)
            count += 1
            if count % PUMP_YIELD_EVERY == 0:
                await asyncio.sleep(0)


class AgentConsumer(PumpedConsumer, AsyncJsonWebsocketConsumer):

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.user = user
        self.viewing: set[int] = set()
        self.seen_ids: OrderedDict[str, None] = OrderedDict()
        self.window = (0, 0)
        self.groups_joined = await database_sync_to_async(self._groups)()
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await database_sync_to_async(presence.agent_connected)(user, self.channel_name)
        await self.send_json({"event": "ready", "at": timezone.now().isoformat(), "user": presence.agent_card(user),
                              "availability": user.availability})

    def _groups(self) -> list[str]:
        user = self.user
        user.refresh_from_db(fields=["role", "access_all", "is_superuser", "is_active"])
        self.sees_all = user.sees_all
        self.team_ids = set(user.teams.values_list("pk", flat=True))
        return self._group_names()

    def _group_names(self) -> list[str]:
        if self.sees_all:
            return ["inbox"]
        return [f"team.{pk}" for pk in sorted(self.team_ids)] + ["team.none", f"agent.{self.user.pk}"]

    async def disconnect(self, code):
        if not hasattr(self, "user"):
            return
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        for conversation_id in list(self.viewing):
            await self.channel_layer.group_discard(f"conversation.{conversation_id}", self.channel_name)
            await database_sync_to_async(presence.leave)(self.user, conversation_id, self.channel_name)
        await database_sync_to_async(presence.agent_disconnected)(self.user, self.channel_name)

    # ------------------------------------------------------------------ inbound frames

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None or len(text_data) > MAX_FRAME:
            await self.send_json({"event": "error", "code": "too_large"})
            return
        start, count = self.window
        now = int(time.monotonic() // 10)
        self.window = (now, count + 1) if start == now else (now, 1)
        if self.window[1] > AGENT_RATE:
            await self.send_json({"event": "error", "code": "throttled"})
            return
        await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        handler = {
            "viewing": self.on_viewing, "leave": self.on_leave, "typing": self.on_typing,
            "availability": self.on_availability, "catch_up": self.on_catch_up, "ping": self.on_ping,
        }.get(kind)
        if handler is None:
            await self.send_json({"event": "error", "code": "unknown_type", "type": str(kind)[:40]})
            return
        try:
            await handler(content)
        except Exception:
            log.exception("agent socket: %s failed", kind)
            await self.send_json({"event": "error", "code": "server_error", "type": kind})

    @staticmethod
    def _conversation_id(content) -> int | None:
        try:
            value = int(content.get("conversation"))
        except (TypeError, ValueError):
            return None
        return value if value > 0 else None

    def _may_see(self, conversation_id: int) -> bool:
        from .services import conversations_visible_to

        return conversations_visible_to(self.user).filter(pk=conversation_id).exists()

    async def on_viewing(self, content):
        conversation_id = self._conversation_id(content)
        if conversation_id is None or not await database_sync_to_async(self._may_see)(conversation_id):
            # the same answer for "does not exist" and "not yours"
            await self.send_json({"event": "error", "code": "not_found", "conversation": conversation_id})
            return
        if conversation_id not in self.viewing:
            self.viewing.add(conversation_id)
            await self.channel_layer.group_add(f"conversation.{conversation_id}", self.channel_name)
        await database_sync_to_async(self._viewing)(conversation_id)
        await self.send_json(self._direct)

    def _viewing(self, conversation_id: int) -> None:
        presence.viewing(self.user, conversation_id, self.channel_name)
        viewers, typing = presence.snapshot(conversation_id)
        self._direct = {"event": "presence", "conversation": conversation_id, "viewers": viewers, "typing": typing}
        try:
            from channels_app.adapters.chat import live

            live.agent_viewing(conversation_id)
        except ImportError:
            pass

    async def on_leave(self, content):
        conversation_id = self._conversation_id(content)
        if conversation_id is None or conversation_id not in self.viewing:
            return
        self.viewing.discard(conversation_id)
        await self.channel_layer.group_discard(f"conversation.{conversation_id}", self.channel_name)
        await database_sync_to_async(presence.leave)(self.user, conversation_id, self.channel_name)

    async def on_typing(self, content):
        conversation_id = self._conversation_id(content)
        if conversation_id is None or conversation_id not in self.viewing:
            await self.send_json({"event": "error", "code": "not_viewing", "conversation": conversation_id})
            return
        is_typing = bool(content.get("typing"))
        await database_sync_to_async(self._typing)(conversation_id, is_typing)

    def _typing(self, conversation_id: int, is_typing: bool) -> None:
        if presence.typing(self.user, conversation_id, is_typing, self.channel_name):
            try:
                from channels_app.adapters.chat import live

                live.agent_typing(conversation_id, self.user, is_typing)
            except ImportError:
                pass

    async def on_availability(self, content):
        status = content.get("status")
        from helpdesk.models import Availability

        if status not in Availability.values:
            await self.send_json({"event": "error", "code": "bad_status"})
            return
        await database_sync_to_async(presence.set_availability)(self.user, status)
        # the broadcast to every agent (this one too) follows in the next batch
        await self.send_json({"event": "agent.availability", "agent": self.user.pk, "status": status,
                              "agents": [{"agent": self.user.pk, "status": status}]})

    async def on_ping(self, content):
        await database_sync_to_async(self._heartbeat)()
        await self.send_json({"event": "pong", "at": timezone.now().isoformat()})

    def _heartbeat(self) -> None:
        presence.agent_heartbeat(self.user, self.channel_name)
        presence.heartbeat(self.user, list(self.viewing), self.channel_name)

    async def on_catch_up(self, content):
        since = parse_datetime(str(content.get("since") or ""))
        if since is None or since.tzinfo is None:
            await self.send_json({"event": "error", "code": "bad_since"})
            return
        events, truncated = await database_sync_to_async(self._catch_up)(since)
        wanted = self._group_names()
        for group in set(self.groups_joined) - set(wanted):
            await self.channel_layer.group_discard(group, self.channel_name)
        for group in set(wanted) - set(self.groups_joined):
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = wanted
        for payload in events:
            await self.send_json(payload)
        await self.send_json({"event": "catch_up.done", "since": since.isoformat(), "at": self._catch_up_at,
                              "count": len(events), "truncated": truncated})

    def _catch_up(self, since):
        """What changed since `since` in conversations this agent may see:
        conversation.updated for each changed conversation (oldest first), then
        message.created for each message of them created since then. Payloads
        have the shape of conversations.realtime with "catch_up": true."""
        from .models import Message
        from .realtime import _conversation_payload
        from .services import conversations_visible_to

        self._catch_up_at = timezone.now().isoformat()
        # refresh team membership: it may have changed since the socket opened
        self._groups()
        convs = list(conversations_visible_to(self.user).filter(updated_at__gt=since)
                     .order_by("updated_at", "pk")[:CATCH_UP_LIMIT + 1])
        truncated = len(convs) > CATCH_UP_LIMIT
        convs = convs[:CATCH_UP_LIMIT]
        events = [{"event": "conversation.updated", "conversation": _conversation_payload(c), "catch_up": True,
                   "at": c.updated_at.isoformat()} for c in convs]
        by_id = {c.pk: c for c in convs}
        # provider timestamps may lag the commit a little: a small overlap, the client dedupes by id
        messages = (Message.objects.filter(conversation_id__in=list(by_id), created_at__gt=since - timedelta(seconds=60))
                    .order_by("created_at", "pk")[:CATCH_UP_LIMIT + 1])
        messages = list(messages)
        truncated = truncated or len(messages) > CATCH_UP_LIMIT
        for msg in messages[:CATCH_UP_LIMIT]:
            events.append({"event": "message.created", "catch_up": True, "at": msg.created_at.isoformat(),
                           "conversation": _conversation_payload(by_id[msg.conversation_id]),
                           "message": {"id": msg.pk, "direction": msg.direction, "channel": msg.channel_kind,
                                       "author": msg.author_name, "text": msg.body_text[:500],
                                       "created_at": msg.created_at.isoformat(),
                                       "delivery_status": msg.delivery_status, "automated": msg.automated}})
        return events, truncated

    # ------------------------------------------------------------------ outbound events

    async def dispatch(self, message):
        # Broadcasts are the hot path (every event to every agent socket).
        # Channels runs close_old_connections through the one thread-sensitive
        # sync thread before every handler: a thread hop per delivery, queued
        # behind every socket's database work. broadcast() reaches the database
        # only through database_sync_to_async, which closes stale connections
        # itself, so it skips that hop.
        if message.get("type") == "broadcast":
            await self.broadcast(message)
            return
        await super().dispatch(message)

    async def broadcast(self, event):
        # realtime.broadcast_event: the frame is encoded once by the publisher
        # ("text") next to what the checks below need; an event with a
        # "payload" dict instead is encoded here
        payload = event.get("payload")
        head = payload if payload is not None else event
        event_id = head.get("id")
        if event_id:
            if event_id in self.seen_ids:
                return  # the same event reached us through a second group
            self.seen_ids[event_id] = None
            if len(self.seen_ids) > 512:
                self.seen_ids.popitem(last=False)
        if not self._allowed(head):
            conv = head.get("conversation")
            conv_id = conv.get("id") if isinstance(conv, dict) else None
            if conv_id in self.viewing:
                # it moved out of this agent's reach while open: say so and stop listening
                self.viewing.discard(conv_id)
                await self.channel_layer.group_discard(f"conversation.{conv_id}", self.channel_name)
                await database_sync_to_async(presence.leave)(self.user, conv_id, self.channel_name)
                await self.send_json({"event": "conversation.hidden", "conversation": conv_id,
                                      "at": head.get("at")})
            return
        text = event.get("text") if payload is None else None
        if isinstance(text, str):
            await self.send(text_data=text)
        else:
            await self.send_json(payload or {})

    def _allowed(self, payload: dict) -> bool:
        """Second line of defence: the groups already filter, this catches stale
        memberships (a conversation that changed team while open)."""
        if self.sees_all:
            return True
        conv = payload.get("conversation")
        if isinstance(conv, dict):
            team, assignee = conv.get("team"), conv.get("assignee")
            return team is None or team in self.team_ids or assignee == self.user.pk
        return True
