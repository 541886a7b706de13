"""The widget's WebSocket: `/ws/widget/<channel uuid>/`.

Visitor -> server (JSON):
    {"type": "hello", "token": "<signed token or null>", "page": "...", "language": "de-CH",
     "languages": ["de-CH", "fr"]}          the browser's languages, best first (i18n.widget_language)
    {"type": "message", "client_id": "c-3", "text": "...", "name": "...", "email": "..."}
    {"type": "typing", "typing": true}
    {"type": "ack", "ids": [12, 13], "status": "delivered" | "read"}
    {"type": "email", "email": "kim@example.org", "name": "Kim"}   (offline form / pre-chat)
    {"type": "ping"}
Server -> visitor:
    {"type": "welcome", "token": "...", "config": {...}, "messages": [...], "status": "open", "survey": null,
     "language": "de", "strings": {...}}   the widget's texts in the visitor's language
    {"type": "message", "message": {...}}      a message (ours, or the visitor's own from another tab)
    {"type": "sent", "client_id": "c-3", "message": {...}}   the visitor's message is stored
    {"type": "typing", "typing": true, "author": {...}}
    {"type": "seen", "at": "..."}              an agent opened the conversation
    {"type": "status", "status": "resolved", "survey": {"url": ..., "kind": "csat"} | null}
    {"type": "availability", "online": false}
    {"type": "email_saved"}
    {"type": "error", "code": "throttled" | "too_long" | "bad_request" | ..., "retry_after": 5}

Nothing from a visitor is trusted: the channel's allowed origins are checked
on the handshake, the visitor id comes only from our signed token, messages
are size limited and rate limited through the cache (a flooding visitor gets
"throttled" and is finally disconnected; the server carries on).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils.translation import override

from conversations.consumers import PumpedConsumer
from helpdesk.cache import count_hit

from . import config as chat_settings
from . import i18n, ingest_pool, live, tokens

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024
NEW_TOKENS_PER_IP = 120  # per 10 minutes (a shop behind one NAT has many visitors)
TYPING_MIN_INTERVAL = 1.0


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def throttle_hit(key: str, limit: int, window: int) -> tuple[bool, int]:
    """Fixed-window counter in the (shared) cache. Returns (over the limit, retry after seconds)."""
    now = int(time.time())
    bucket = now // window
    count = count_hit(f"chat:rl:{key}:{bucket}", window * 2)
    return count > limit, window - (now % window)


def throttle_and_ingest(channel, visitor: str, origin: str, ip: str, body: dict
                        ) -> tuple[tuple[bool, int], dict | None, int | None]:
    """A visitor's message: the rate limit, then store and ingest it (sync code;
    in a thread or in an ingest_pool worker). Returns (throttle hit, the frame
    for the visitor or None when throttled, the conversation id)."""
    from customers.models import Identity

    from .inbound import ingest_visitor_message, visitor_email

    hit = throttle_hit(f"msg:{visitor}", chat_settings.rate_limit(channel), 10)
    if hit[0]:
        return hit, None, None
    if body.get("email") and Identity.objects.filter(kind="chat", value=visitor).exists():
        # a known visitor: link the address through the core instead of
        # letting this message thread into another customer's conversation
        visitor_email(channel, visitor, body.pop("email"), body.get("name", ""))
    try:
        message = ingest_visitor_message(channel, body, headers={"origin": origin},
                                         remote_addr=ip if ip != "unknown" else None)
    except ValueError as exc:
        return hit, {"type": "error", "code": "rejected", "detail": str(exc)[:200],
                     "client_id": body["client_id"]}, None
    payload = live.message_payload(message, visitor)
    # the visitor's other tabs show it too
    live.push([visitor], {"type": "message", "message": payload})
    return hit, {"type": "sent", "client_id": body["client_id"], "message": payload}, message.conversation_id


class WidgetConsumer(PumpedConsumer, AsyncJsonWebsocketConsumer):
    # PumpedConsumer: a visitor's message reaches on_message a loop turn after
    # it is read (was three: channels.utils.await_many_dispatch)
    async def connect(self):
        self.visitor = None
        self.channel = await database_sync_to_async(self._load_channel)()
        if self.channel is None:
            await self.close(code=4404)
            return
        origin = _header(self.scope, b"origin")
        if not chat_settings.origin_allowed(self.channel, origin):
            log.info("widget socket for %s refused: origin %r not allowed", self.channel.uuid, origin)
            await self.close(code=4403)
            return
        self.origin = origin
        client = self.scope.get("client") or ("", 0)
        self.ip = client[0] or "unknown"
        self.strikes = 0
        self.last_typing = 0.0
        if ingest_pool.pool() is None:  # started with the first widget, not on its first message
            ingest_pool.threads()
        await self.accept()

    def _load_channel(self):
        from channels_app.models import Channel

        uuid = self.scope["url_route"]["kwargs"]["uuid"]
        return Channel.objects.filter(uuid=uuid, kind="chat", active=True).select_related("team").first()

    async def disconnect(self, code):
        if getattr(self, "visitor", None):
            await self.channel_layer.group_discard(live.visitor_group(self.visitor), self.channel_name)
            await self.channel_layer.group_discard(live.channel_group(self.channel.pk), self.channel_name)
            await database_sync_to_async(live.visitor_gone)(self.visitor, self.channel_name)
            conv_id = getattr(self, "conversation_id", None)
            if conv_id and getattr(self, "typing_on", False):
                await database_sync_to_async(self._customer_typing)(False)

    # ------------------------------------------------------------------ frames

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None or len(text_data) > MAX_FRAME:
            await self._error("too_large")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._error("bad_request")
            return
        if not isinstance(content, dict):
            await self._error("bad_request")
            return
        kind = content.get("type")
        if kind != "hello" and not self.visitor:
            await self._error("hello_first")
            return
        handler = {"hello": self.on_hello, "message": self.on_message, "typing": self.on_typing,
                   "ack": self.on_ack, "email": self.on_email, "ping": self.on_ping}.get(kind)
        if handler is None:
            await self._error("bad_request")
            return
        try:
            await handler(content)
        except Exception:
            log.exception("widget socket: %s failed", kind)
            await self._error("server_error")

    async def _error(self, code: str, **extra):
        await self.send_json({"type": "error", "code": code, **extra})

    async def on_hello(self, content):
        if self.visitor:
            return
        visitor = tokens.read_token(self.channel, content.get("token"))
        token = content.get("token")
        if visitor is None:
            limited, retry = await database_sync_to_async(throttle_hit)(f"newtoken:{self.ip}", NEW_TOKENS_PER_IP, 600)
            if limited:
                await self._error("throttled", retry_after=retry)
                await self.close(code=4429)
                return
            visitor = tokens.new_visitor_id()
            token = tokens.make_token(self.channel, visitor)
        self.visitor = visitor
        languages = content.get("languages") if isinstance(content.get("languages"), list) else []
        self.language = i18n.widget_language([*languages, content.get("language")], self.channel)
        await self.channel_layer.group_add(live.visitor_group(visitor), self.channel_name)
        await self.channel_layer.group_add(live.channel_group(self.channel.pk), self.channel_name)
        welcome = await database_sync_to_async(self._welcome)(token)
        await self.send_json(welcome)

    def _welcome(self, token: str) -> dict:
        from conversations import presence
        from customers.models import Identity

        live.visitor_seen(self.visitor, self.channel_name)
        online = presence.team_online(self.channel.team)
        with override(self.language):
            config = chat_settings.public_config(self.channel, online=online)
        data = {"type": "welcome", "token": token, "visitor": self.visitor, "config": config,
                "language": self.language, "strings": i18n.widget_strings(self.language),
                "messages": [], "status": None, "survey": None, "email": False}
        ident = Identity.objects.filter(kind="chat", value=self.visitor).select_related("customer").first()
        if ident is None:
            return data
        customer = ident.customer
        i18n.remember_language(customer, self.language)
        data["email"] = Identity.objects.filter(customer=customer, kind="email").exists()
        data["name"] = customer.name
        conv = live.current_conversation(customer.pk)
        if conv is not None:
            self.conversation_id = conv.pk
            messages = list(live.visible_messages(conv))[-100:]
            data["messages"] = [live.message_payload(m, self.visitor) for m in messages]
            data["status"] = conv.status
            data["survey"] = live.survey_for(conv)
        return data

    async def on_ping(self, content):
        await database_sync_to_async(live.visitor_seen)(self.visitor, self.channel_name)
        await self.send_json({"type": "pong"})

    def _throttle_hit(self) -> tuple[bool, int]:
        return throttle_hit(f"msg:{self.visitor}", chat_settings.rate_limit(self.channel), 10)

    async def _throttled(self, hit: tuple[bool, int] | None = None) -> bool:
        """`hit`: the result of _throttle_hit when the caller already took it."""
        limit = chat_settings.rate_limit(self.channel)
        limited, retry = hit if hit is not None else await database_sync_to_async(self._throttle_hit)()
        if not limited:
            return False
        self.strikes += 1
        await self._error("throttled", retry_after=retry)
        if self.strikes > limit * 3:
            await self.close(code=4429)  # still flooding after being told: hang up
        return True

    async def on_message(self, content):
        text = content.get("text")
        if not isinstance(text, str) or not text.strip():
            await self._error("empty")
            return
        if len(text) > chat_settings.max_chars(self.channel):
            await self._error("too_long", max_chars=chat_settings.max_chars(self.channel),
                              client_id=str(content.get("client_id") or "")[:64])
            return
        body = {"visitor": self.visitor, "text": text, "client_id": str(content.get("client_id") or "")[:64],
                "page": str(content.get("page") or "")[:500], "language": self.language}
        for key in ("name", "email"):
            if isinstance(content.get(key), str) and content[key].strip():
                body[key] = content[key].strip()[:320]
        args = (self.channel, self.visitor, self.origin, self.ip, body)
        workers = ingest_pool.pool()
        if workers is not None:
            # in a worker process: the ORM work does not hold this event loop's GIL
            loop = asyncio.get_running_loop()
            hit, result, conversation_id = await loop.run_in_executor(
                workers, ingest_pool.run, throttle_and_ingest, *args)
        else:
            # this process's ingest threads (not the one thread-sensitive thread,
            # where they would queue behind every other socket's DB work), each
            # on a connection it keeps; the rate limit is taken in the same hop
            hit, result, conversation_id = await sync_to_async(
                throttle_and_ingest, thread_sensitive=False, executor=ingest_pool.threads())(*args)
        if conversation_id:
            self.conversation_id = conversation_id
        if await self._throttled(hit):
            return
        await self.send_json(result)

    async def on_typing(self, content):
        now = time.monotonic()
        is_typing = bool(content.get("typing"))
        if is_typing and now - self.last_typing < TYPING_MIN_INTERVAL:
            return
        self.last_typing = now
        if not getattr(self, "conversation_id", None):
            return
        self.typing_on = is_typing
        await database_sync_to_async(self._customer_typing)(is_typing)

    def _customer_typing(self, is_typing: bool) -> None:
        from conversations import realtime

        realtime.publish_customer_typing(self.conversation_id, is_typing)

    async def on_ack(self, content):
        status = content.get("status")
        ids = content.get("ids")
        if status not in ("delivered", "read") or not isinstance(ids, list):
            await self._error("bad_request")
            return
        ids = [i for i in ids if isinstance(i, int)][:100]
        await database_sync_to_async(self._ack)(ids, status)

    def _ack(self, ids: list[int], status: str) -> None:
        from conversations.models import Message
        from conversations.services import delivery_update
        from customers.models import Identity

        customer_ids = Identity.objects.filter(kind="chat", value=self.visitor).values_list("customer_id", flat=True)
        for message in Message.objects.filter(pk__in=ids, direction="outbound", channel_kind="chat",
                                              conversation__customer_id__in=list(customer_ids)):
            delivery_update(message=message, status=status)

    async def on_email(self, content):
        email = content.get("email")
        if not isinstance(email, str) or "@" not in email or len(email) > 320:
            await self._error("bad_email")
            return
        if await self._throttled():
            return
        name = content.get("name") if isinstance(content.get("name"), str) else ""
        ok = await database_sync_to_async(self._save_email)(email.strip(), name.strip()[:200])
        await self.send_json({"type": "email_saved"} if ok else {"type": "error", "code": "bad_email"})

    def _save_email(self, email: str, name: str) -> bool:
        from .inbound import visitor_email

        return visitor_email(self.channel, self.visitor, email, name, language=self.language)

    # ------------------------------------------------------------------ group events

    async def dispatch(self, message):
        # as AgentConsumer.dispatch: group events only send a frame, no
        # per-message close_old_connections hop to the sync thread
        if message.get("type") == "visitor.event":
            await self.visitor_event(message)
            return
        if message.get("type") == "websocket.receive":
            # the visitor's frames neither: every handler reaches the database
            # only through database_sync_to_async (which closes stale
            # connections itself) or the ingest threads / workers (their own
            # connections). That hop queued a visitor's message behind all of
            # the process's thread-sensitive work (p99 +11 ms measured).
            await self.websocket_receive(message)
            return
        await super().dispatch(message)

    async def visitor_event(self, event):
        await self.send_json(event.get("payload") or {})
