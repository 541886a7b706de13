"""The visitor side of realtime: groups, payloads and pushes to widgets.

Each visitor (one signed token) has a group `chatv.<visitor id>` joined by all
of their open widget tabs. Visitors never join agents' groups: agent events
carry internal notes and other customers' data.
"""
from __future__ import annotations

import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.urls import reverse

from customers.models import Identity

from . import tokens

log = logging.getLogger(__name__)

VISITOR_TTL = 70  # widgets heartbeat every 25 s


def visitor_group(visitor_id: str) -> str:
    return f"chatv.{visitor_id}"


def push(visitor_ids, payload: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    from conversations import realtime

    try:
        realtime.group_send([visitor_group(vid) for vid in visitor_ids], {"type": "visitor.event", "payload": payload})
    except Exception:  # best effort: the message is stored, the widget reloads history
        log.exception("push to chat visitors failed")


def channel_group(channel_id: int) -> str:
    return f"chatch.{channel_id}"


def visitors_of(customer_id: int) -> list[str]:
    return list(Identity.objects.filter(customer_id=customer_id, kind="chat").values_list("value", flat=True))


# ------------------------------------------------------------------ visitor online state

def _online_key(visitor_id: str) -> str:
    return f"chat:visitor:{visitor_id}"


def visitor_seen(visitor_id: str, socket: str) -> None:
    now = time.time()
    sockets = {k: t for k, t in (cache.get(_online_key(visitor_id)) or {}).items() if now - t < VISITOR_TTL}
    sockets[socket] = now
    cache.set(_online_key(visitor_id), sockets, VISITOR_TTL * 2)


def visitor_gone(visitor_id: str, socket: str) -> None:
    now = time.time()
    sockets = {k: t for k, t in (cache.get(_online_key(visitor_id)) or {}).items() if now - t < VISITOR_TTL}
    sockets.pop(socket, None)
    if sockets:
        cache.set(_online_key(visitor_id), sockets, VISITOR_TTL * 2)
    else:
        cache.delete(_online_key(visitor_id))
    cache.set(f"chat:visitor-left:{visitor_id}", now, 30 * 24 * 3600)


def visitor_online(visitor_id: str) -> bool:
    now = time.time()
    return any(now - t < VISITOR_TTL for t in (cache.get(_online_key(visitor_id)) or {}).values())


def customer_left_at(customer_id: int) -> float | None:
    """When the customer's last widget closed (epoch seconds), if we know."""
    times = [cache.get(f"chat:visitor-left:{v}") for v in visitors_of(customer_id)]
    times = [t for t in times if t]
    return max(times) if times else None


def customer_online(customer_id: int) -> bool:
    return any(visitor_online(v) for v in visitors_of(customer_id))


# ------------------------------------------------------------------ payloads

def author_card(message) -> dict | None:
    user = message.author_user
    if user is not None:
        return {"name": user.display_name or user.first_name or user.name, "initials": user.initials,
                "color": user.avatar_color}
    if message.author_name:
        parts = message.author_name.split()
        return {"name": message.author_name, "initials": "".join(p[0] for p in parts[:2]).upper(),
                "color": "#64748b"}
    return None


def message_payload(message, visitor_id: str) -> dict:
    """One message as the widget shows it. Only chat messages and our replies
    on chat ever reach here (see history)."""
    atts = []
    for att in message.attachments.all():
        url = reverse("channels_app:chat_widget_attachment", kwargs={"token": tokens.attachment_token(att.pk, visitor_id)})
        atts.append({"id": att.pk, "name": att.filename, "type": att.content_type, "size": att.size, "url": url,
                     "image": att.content_type.startswith("image/")})
    data = {
        "id": message.pk,
        "from": "visitor" if message.direction == "inbound" else "agent",
        "text": message.body_text,
        "created_at": message.created_at.isoformat(),
        # a visitor's message is "sent" once stored; ours carry their delivery status
        "status": message.delivery_status or ("sent" if message.direction == "inbound" else ""),
        "attachments": atts,
    }
    if message.direction == "outbound":
        data["author"] = author_card(message)
    client_id = (message.meta or {}).get("client_id")
    if client_id:
        data["client_id"] = client_id
    survey = (message.meta or {}).get("survey")
    if isinstance(survey, dict) and survey.get("url"):
        data["survey"] = {"url": str(survey["url"]), "kind": str(survey.get("kind") or "csat")}
    return data


def visible_messages(conversation):
    """What a visitor may see of a conversation: chat messages in and out.
    Never notes, and never what came or went on other channels (a visitor who
    typed someone's email address must not read that person's mail)."""
    from conversations.models import Message

    return (Message.objects.filter(conversation=conversation, channel_kind="chat", direction__in=["inbound", "outbound"])
            .select_related("author_user").prefetch_related("attachments").order_by("created_at", "pk"))


def current_conversation(customer_id: int, channel=None):
    """The visitor's conversation: the latest one with chat messages."""
    from conversations.models import Conversation

    return (Conversation.objects.filter(customer_id=customer_id, messages__channel_kind="chat")
            .order_by("-last_message_at", "-pk").distinct().first())


def survey_for(conversation) -> dict | None:
    """The CSAT question to show inline after resolution: the survey message
    the metrics app sent, else an invitation linked to /survey/<token>/."""
    if conversation.status != "resolved":
        return None
    try:
        from metrics.models import SurveyInvitation
    except ImportError:
        return None
    invitation = (SurveyInvitation.objects.filter(conversation=conversation, answered_at__isnull=True)
                  .order_by("-invited_at").first())
    if invitation is None:
        return None
    try:
        url = reverse("metrics:survey", kwargs={"token": invitation.token})
    except Exception:
        url = f"/survey/{invitation.token}/"
    return {"url": url, "kind": invitation.kind}


# ------------------------------------------------------------------ called from the agent side

def _chat_conversation(conversation_id: int):
    from conversations.models import Conversation

    conv = Conversation.objects.filter(pk=conversation_id).only("pk", "customer_id", "last_inbound_kind",
                                                               "origin_kind").first()
    if conv is None or "chat" not in (conv.last_inbound_kind, conv.origin_kind):
        return None
    return conv


def agent_viewing(conversation_id: int) -> None:
    """An agent opened the conversation: the visitor's messages are seen."""
    conv = _chat_conversation(conversation_id)
    if conv is None:
        return
    from django.utils import timezone

    push(visitors_of(conv.customer_id), {"type": "seen", "at": timezone.now().isoformat()})


def agent_typing(conversation_id: int, user, typing: bool) -> None:
    conv = _chat_conversation(conversation_id)
    if conv is None:
        return
    push(visitors_of(conv.customer_id), {"type": "typing", "typing": bool(typing),
                                         "author": {"name": user.display_name or user.first_name or user.name,
                                                    "initials": user.initials, "color": user.avatar_color}})


def conversation_resolved(conversation) -> None:
    """After resolution: tell the widget, with the CSAT question if there is one."""
    if "chat" not in (conversation.last_inbound_kind, conversation.origin_kind):
        return
    push(visitors_of(conversation.customer_id),
         {"type": "status", "status": conversation.status, "survey": survey_for(conversation)})


def availability_changed(user) -> None:
    """An agent's availability changed: tell the widgets of each chat channel
    whose online state flipped (one group message per channel, not per widget)."""
    from channels_app.models import Channel
    from conversations import presence

    from . import config

    team_ids = set(user.teams.values_list("pk", flat=True))
    layer = get_channel_layer()
    for channel in Channel.objects.filter(kind="chat", active=True).select_related("team"):
        if channel.team_id is not None and channel.team_id not in team_ids:
            continue
        online = presence.team_online(channel.team) and config.within_business_hours(channel)
        key = f"chat:channel-online:{channel.pk}"
        if cache.get(key) == online:
            continue
        cache.set(key, online, 24 * 3600)
        if layer is not None:
            try:
                async_to_sync(layer.group_send)(channel_group(channel.pk), {
                    "type": "visitor.event", "payload": {"type": "availability", "online": online}})
            except Exception:
                log.exception("availability push to chat widgets failed")
