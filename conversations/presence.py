"""Agent presence: who views or types in a conversation, and availability.

State lives in the Django cache (Redis in production, so every ASGI process
sees the same thing); every entry carries a timestamp and expires when its
socket stops sending heartbeats, so a crashed process cannot leave ghosts.

Availability (online, away, offline) is stored on `User.availability`, which
`conversations.assignment` reads. An agent's *chosen* status is remembered in
the cache: when their last socket closes they become offline, and when they
connect again their chosen status (online by default) comes back.
"""
from __future__ import annotations

import time

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from helpdesk.models import Availability, User

from . import realtime

# A viewer/typer entry older than this is dropped (clients heartbeat every 25 s).
VIEW_TTL = 70
TYPING_TTL = 8
# An agent with no socket heartbeat for this long is set offline by the sweep.
AGENT_TTL = 90


def _conv_key(conversation_id: int) -> str:
    return f"presence:conv:{conversation_id}"


def _agent_key(user_id: int) -> str:
    return f"presence:agent:{user_id}"


def _chosen_key(user_id: int) -> str:
    return f"presence:chosen:{user_id}"


def agent_card(user) -> dict:
    return {"id": user.pk, "name": user.name, "initials": user.initials, "color": user.avatar_color}


# --------------------------------------------------------------- conversation presence

def _load(conversation_id: int) -> dict:
    state = cache.get(_conv_key(conversation_id)) or {}
    now = time.time()
    return {uid: e for uid, e in state.items() if now - e.get("seen", 0) < VIEW_TTL}


def _store(conversation_id: int, state: dict) -> None:
    if state:
        cache.set(_conv_key(conversation_id), state, VIEW_TTL * 2)
    else:
        cache.delete(_conv_key(conversation_id))


def snapshot(conversation_id: int) -> tuple[list[dict], list[dict]]:
    """(viewers, typing) of a conversation, as agent cards."""
    state = _load(conversation_id)
    now = time.time()
    viewers = [e["card"] for e in state.values()]
    typing = [e["card"] for e in state.values() if e.get("typing") and now - e.get("typing_at", 0) < TYPING_TTL]
    return viewers, typing


def _publish(conversation_id: int) -> None:
    viewers, typing = snapshot(conversation_id)
    realtime.publish_presence(conversation_id, viewers, typing)


def viewing(user, conversation_id: int, socket: str) -> None:
    """`socket` names the agent tab; an agent with two tabs stays a viewer until both leave."""
    state = _load(conversation_id)
    entry = state.get(str(user.pk)) or {"card": agent_card(user), "sockets": []}
    if socket not in entry["sockets"]:
        entry["sockets"].append(socket)
    changed = str(user.pk) not in state
    entry["seen"] = time.time()
    state[str(user.pk)] = entry
    _store(conversation_id, state)
    if changed:
        _publish(conversation_id)


def heartbeat(user, conversation_ids, socket: str) -> None:
    for conversation_id in conversation_ids:
        viewing(user, conversation_id, socket)


def leave(user, conversation_id: int, socket: str) -> None:
    state = _load(conversation_id)
    entry = state.get(str(user.pk))
    if entry is None:
        return
    entry["sockets"] = [s for s in entry["sockets"] if s != socket]
    if entry["sockets"]:
        state[str(user.pk)] = entry
        _store(conversation_id, state)
        return
    state.pop(str(user.pk), None)
    _store(conversation_id, state)
    _publish(conversation_id)


def typing(user, conversation_id: int, is_typing: bool, socket: str) -> bool:
    """Returns True when the typing state changed (and was published)."""
    state = _load(conversation_id)
    entry = state.get(str(user.pk)) or {"card": agent_card(user), "sockets": [socket]}
    was = bool(entry.get("typing")) and time.time() - entry.get("typing_at", 0) < TYPING_TTL
    entry["typing"] = bool(is_typing)
    entry["typing_at"] = time.time()
    entry["seen"] = time.time()
    state[str(user.pk)] = entry
    _store(conversation_id, state)
    if was != bool(is_typing):
        _publish(conversation_id)
        return True
    return False


# --------------------------------------------------------------- availability

def set_availability(user, status: str, *, chosen: bool = True) -> bool:
    """Store an agent's availability and tell everyone. Returns True if it changed.

    chosen=True records it as the agent's own choice (restored on reconnect).
    """
    if status not in Availability.values:
        raise ValueError(f"Unknown availability {status!r}")
    if chosen:
        cache.set(_chosen_key(user.pk), status, None)
    with transaction.atomic():
        changed = User.objects.filter(pk=user.pk).exclude(availability=status).update(
            availability=status, availability_changed_at=timezone.now())
    user.availability = status
    if changed:
        transaction.on_commit(lambda: _availability_changed(user, status))
    return bool(changed)


def _availability_changed(user, status: str) -> None:
    realtime.publish_availability(user.pk, status)
    try:  # chat widgets switch between online and offline (computed once here, not per widget)
        from channels_app.adapters.chat import live
    except ImportError:
        return
    live.availability_changed(user)


def chosen_availability(user) -> str:
    return cache.get(_chosen_key(user.pk)) or Availability.ONLINE


def agent_connected(user, socket: str) -> None:
    sockets = _live_sockets(user.pk)
    sockets[socket] = time.time()
    cache.set(_agent_key(user.pk), sockets, AGENT_TTL * 2)
    wanted = chosen_availability(user)
    if user.availability != wanted:
        set_availability(user, wanted, chosen=False)


def agent_heartbeat(user, socket: str) -> None:
    sockets = _live_sockets(user.pk)
    sockets[socket] = time.time()
    cache.set(_agent_key(user.pk), sockets, AGENT_TTL * 2)


def agent_disconnected(user, socket: str) -> None:
    sockets = _live_sockets(user.pk)
    sockets.pop(socket, None)
    if sockets:
        cache.set(_agent_key(user.pk), sockets, AGENT_TTL * 2)
        return
    cache.delete(_agent_key(user.pk))
    set_availability(user, Availability.OFFLINE, chosen=False)


def _live_sockets(user_id: int) -> dict:
    now = time.time()
    return {k: t for k, t in (cache.get(_agent_key(user_id)) or {}).items() if now - t < AGENT_TTL}


def is_connected(user_id: int) -> bool:
    return bool(_live_sockets(user_id))


def sweep() -> int:
    """Set offline every agent marked online/away whose sockets all went silent
    (a crashed server process, a laptop put to sleep). Returns how many."""
    count = 0
    for user in User.objects.exclude(availability=Availability.OFFLINE):
        if not is_connected(user.pk):
            if set_availability(user, Availability.OFFLINE, chosen=False):
                count += 1
    return count


def team_online(team) -> bool:
    """Is any agent who would answer this team's chat online? No team: any agent."""
    qs = User.objects.filter(is_active=True, availability=Availability.ONLINE)
    if team is not None:
        qs = qs.filter(teams=team)
    return qs.exists()
