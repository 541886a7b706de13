"""Agent presence: who views or types in a conversation, and availability.

State is shared by every ASGI process through Redis (REDIS_URL) and updated
atomically: per conversation a sorted set of viewer sockets ("<user>:<socket>")
and one of typing agents, each member scored with its expiry time, plus a hash
of agent cards; per agent a sorted set of live sockets. Every update is one Lua
script (prune the expired members, read, write, read back), so two processes
joining and leaving at once never lose each other's change, and a crashed
process cannot leave ghosts: its entries expire when heartbeats stop. Without
Redis (one process) the same structures live in the local-memory cache and a
process-wide lock makes each read-modify-write atomic.

Availability (online, away, offline) is stored on `User.availability`, which
`conversations.assignment` reads. An agent's *chosen* status is remembered in
the cache: when their last socket closes they become offline, and when they
connect again their chosen status (online by default) comes back.
"""
from __future__ import annotations

import json
import threading
import time

from django.conf import settings
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

_now = time.time  # patched by tests


def _chosen_key(user_id: int) -> str:
    return f"presence:chosen:{user_id}"


def agent_card(user) -> dict:
    return {"id": user.pk, "name": user.name, "initials": user.initials, "color": user.avatar_color}


# --------------------------------------------------------------- stores

# Lua: KEYS = viewers zset, typing zset, cards hash. Every script prunes expired
# members first and returns {flag, viewer members, typing members, cards (flat)}.
_LUA_SNAPSHOT = """
local function snapshot(flag)
  return {flag, redis.call('ZRANGE', KEYS[1], 0, -1), redis.call('ZRANGE', KEYS[2], 0, -1),
          redis.call('HGETALL', KEYS[3])}
end
local function has_user(uid)
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    if string.sub(m, 1, #uid + 1) == uid .. ':' then return true end
  end
  return false
end
local function keep(ttl)
  for i = 1, 3 do if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ttl) end end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
"""
# ARGV: now, uid, member, expiry, card, key ttl -> flag: the user was not viewing before
_LUA_VIEW = _LUA_SNAPSHOT + """
local added = has_user(ARGV[2]) and 0 or 1
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
keep(ARGV[6])
return snapshot(added)
"""
# ARGV: now, uid, member -> flag: the user's last socket left
_LUA_LEAVE = _LUA_SNAPSHOT + """
local was = redis.call('ZSCORE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[3])
local gone = 0
if was and not has_user(ARGV[2]) then
  gone = 1
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return snapshot(gone)
"""
# ARGV: now, uid, member, view expiry, card, key ttl, typing (0/1), typing expiry -> flag: typing state changed
_LUA_TYPING = _LUA_SNAPSHOT + """
local was = redis.call('ZSCORE', KEYS[2], ARGV[2]) and 1 or 0
if ARGV[7] == '1' then redis.call('ZADD', KEYS[2], ARGV[8], ARGV[2]) else redis.call('ZREM', KEYS[2], ARGV[2]) end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
keep(ARGV[6])
return snapshot((was == tonumber(ARGV[7])) and 0 or 1)
"""
# KEYS = agent sockets zset; ARGV: now, socket -> live sockets left
_LUA_AGENT_REMOVE = """
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


def _decode(value):
    return value.decode() if isinstance(value, bytes) else value


class _RedisStore:
    """The shared store: Redis sorted sets, one Lua script per update."""

    def __init__(self):
        self._scripts = {}

    def _client(self):
        return cache._cache.get_client(write=True)

    def _script(self, name, source):
        client = self._client()
        if name not in self._scripts:
            self._scripts[name] = client.register_script(source)
        script = self._scripts[name]
        return lambda keys, args: script(keys=keys, args=args, client=client)

    @staticmethod
    def _prefix() -> str:
        return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:presence"

    def _conv_keys(self, conversation_id: int) -> list[str]:
        base = f"{self._prefix()}:conv:{conversation_id}"
        return [f"{base}:v", f"{base}:t", f"{base}:c"]

    @staticmethod
    def _state(result) -> tuple[int, dict]:
        flag, viewers, typing, flat = result
        flat = [_decode(x) for x in flat]
        cards = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        return int(flag), {"viewers": [_decode(m) for m in viewers], "typing": [_decode(m) for m in typing],
                           "cards": cards}

    def view(self, conversation_id, uid, socket, card, now):
        result = self._script("view", _LUA_VIEW)(
            keys=self._conv_keys(conversation_id),
            args=[now, uid, f"{uid}:{socket}", now + VIEW_TTL, json.dumps(card), VIEW_TTL * 2])
        return self._state(result)

    def leave(self, conversation_id, uid, socket, now):
        return self._state(self._script("leave", _LUA_LEAVE)(
            keys=self._conv_keys(conversation_id), args=[now, uid, f"{uid}:{socket}"]))

    def typing(self, conversation_id, uid, socket, card, is_typing, now):
        return self._state(self._script("typing", _LUA_TYPING)(
            keys=self._conv_keys(conversation_id),
            args=[now, uid, f"{uid}:{socket}", now + VIEW_TTL, json.dumps(card), VIEW_TTL * 2,
                  1 if is_typing else 0, now + TYPING_TTL]))

    def snapshot(self, conversation_id, now):
        v, t, c = self._conv_keys(conversation_id)
        pipe = self._client().pipeline(transaction=True)
        pipe.zrangebyscore(v, f"({now}", "+inf")
        pipe.zrangebyscore(t, f"({now}", "+inf")
        pipe.hgetall(c)
        viewers, typing, cards = pipe.execute()
        return {"viewers": [_decode(m) for m in viewers], "typing": [_decode(m) for m in typing],
                "cards": {_decode(k): json.loads(val) for k, val in cards.items()}}

    def _agent_key(self, uid) -> str:
        return f"{self._prefix()}:agent:{uid}"

    def agent_add(self, uid, socket, now):
        pipe = self._client().pipeline(transaction=True)
        pipe.zadd(self._agent_key(uid), {socket: now + AGENT_TTL})
        pipe.zremrangebyscore(self._agent_key(uid), "-inf", now)
        pipe.expire(self._agent_key(uid), AGENT_TTL * 2)
        pipe.execute()

    def agent_remove(self, uid, socket, now) -> int:
        return int(self._script("agent_remove", _LUA_AGENT_REMOVE)(keys=[self._agent_key(uid)], args=[now, socket]))

    def agent_live(self, uid, now) -> int:
        return int(self._client().zcount(self._agent_key(uid), f"({now}", "+inf"))


class _MemoryStore:
    """The one-process store: the same structures in the local-memory cache
    (so a cache clear resets them), each read-modify-write under one lock."""

    lock = threading.RLock()

    @staticmethod
    def _prune(state, now):
        state["v"] = {m: exp for m, exp in state["v"].items() if exp > now}
        state["t"] = {u: exp for u, exp in state["t"].items() if exp > now}

    @staticmethod
    def _has_user(state, uid):
        return any(m.startswith(f"{uid}:") for m in state["v"])

    def _update(self, conversation_id, now, change):
        key = f"presence:conv:{conversation_id}"
        with self.lock:
            state = cache.get(key) or {"v": {}, "t": {}, "c": {}}
            self._prune(state, now)
            flag = change(state)
            if state["v"] or state["t"]:
                cache.set(key, state, VIEW_TTL * 2)
            else:
                cache.delete(key)
        return flag, {"viewers": list(state["v"]), "typing": list(state["t"]), "cards": dict(state["c"])}

    def view(self, conversation_id, uid, socket, card, now):
        def change(state):
            added = 0 if self._has_user(state, uid) else 1
            state["v"][f"{uid}:{socket}"] = now + VIEW_TTL
            state["c"][str(uid)] = card
            return added
        return self._update(conversation_id, now, change)

    def leave(self, conversation_id, uid, socket, now):
        def change(state):
            was = state["v"].pop(f"{uid}:{socket}", None)
            if was is not None and not self._has_user(state, uid):
                state["t"].pop(str(uid), None)
                state["c"].pop(str(uid), None)
                return 1
            return 0
        return self._update(conversation_id, now, change)

    def typing(self, conversation_id, uid, socket, card, is_typing, now):
        def change(state):
            was = str(uid) in state["t"]
            if is_typing:
                state["t"][str(uid)] = now + TYPING_TTL
            else:
                state["t"].pop(str(uid), None)
            state["v"][f"{uid}:{socket}"] = now + VIEW_TTL
            state["c"][str(uid)] = card
            return int(was != bool(is_typing))
        return self._update(conversation_id, now, change)

    def snapshot(self, conversation_id, now):
        state = cache.get(f"presence:conv:{conversation_id}") or {"v": {}, "t": {}, "c": {}}
        self._prune(state, now)
        return {"viewers": list(state["v"]), "typing": list(state["t"]), "cards": dict(state["c"])}

    def _agent_update(self, uid, now, change):
        key = f"presence:agent:{uid}"
        with self.lock:
            sockets = {s: exp for s, exp in (cache.get(key) or {}).items() if exp > now}
            change(sockets)
            if sockets:
                cache.set(key, sockets, AGENT_TTL * 2)
            else:
                cache.delete(key)
            return len(sockets)

    def agent_add(self, uid, socket, now):
        self._agent_update(uid, now, lambda sockets: sockets.__setitem__(socket, now + AGENT_TTL))

    def agent_remove(self, uid, socket, now) -> int:
        return self._agent_update(uid, now, lambda sockets: sockets.pop(socket, None))

    def agent_live(self, uid, now) -> int:
        return sum(1 for exp in (cache.get(f"presence:agent:{uid}") or {}).values() if exp > now)


_redis_store = _RedisStore()
_memory_store = _MemoryStore()


def _store():
    if getattr(settings, "REDIS_URL", "") and hasattr(cache, "_cache") and hasattr(cache._cache, "get_client"):
        return _redis_store
    return _memory_store


# --------------------------------------------------------------- conversation presence

def _cards(state: dict) -> tuple[list[dict], list[dict]]:
    """(viewers, typing) agent cards of a store state, one card per agent, in a stable order."""
    uids = sorted({m.split(":", 1)[0] for m in state["viewers"]}, key=lambda u: int(u) if u.isdigit() else 0)
    cards = state["cards"]
    viewers = [cards[u] for u in uids if u in cards]
    typing = [cards[u] for u in sorted(state["typing"], key=lambda u: int(u) if u.isdigit() else 0) if u in cards]
    return viewers, typing


def snapshot(conversation_id: int) -> tuple[list[dict], list[dict]]:
    """(viewers, typing) of a conversation, as agent cards."""
    return _cards(_store().snapshot(conversation_id, _now()))


def _publish(conversation_id: int, state: dict) -> None:
    viewers, typing = _cards(state)
    realtime.publish_presence(conversation_id, viewers, typing)


def viewing(user, conversation_id: int, socket: str) -> None:
    """`socket` names the agent tab; an agent with two tabs stays a viewer until both leave."""
    added, state = _store().view(conversation_id, str(user.pk), socket, agent_card(user), _now())
    if added:
        _publish(conversation_id, state)


def heartbeat(user, conversation_ids, socket: str) -> None:
    for conversation_id in conversation_ids:
        viewing(user, conversation_id, socket)


def leave(user, conversation_id: int, socket: str) -> None:
    gone, state = _store().leave(conversation_id, str(user.pk), socket, _now())
    if gone:
        _publish(conversation_id, state)


def typing(user, conversation_id: int, is_typing: bool, socket: str) -> bool:
    """Returns True when the typing state changed (and was published)."""
    changed, state = _store().typing(conversation_id, str(user.pk), socket, agent_card(user), bool(is_typing),
                                     _now())
    if changed:
        _publish(conversation_id, state)
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
    _store().agent_add(str(user.pk), socket, _now())
    # unconditional (a conditional UPDATE): another process may have just set them offline
    set_availability(user, chosen_availability(user), chosen=False)


def agent_heartbeat(user, socket: str) -> None:
    _store().agent_add(str(user.pk), socket, _now())


def agent_disconnected(user, socket: str) -> None:
    if _store().agent_remove(str(user.pk), socket, _now()):
        return
    set_availability(user, Availability.OFFLINE, chosen=False)
    _reconnected_meanwhile(user)


def _reconnected_meanwhile(user) -> None:
    """A socket of this agent connected (maybe in another process) between our
    "no socket left" and our offline write: its online write may have come
    first, so put the chosen status back."""
    if is_connected(user.pk):
        set_availability(user, chosen_availability(user), chosen=False)


def is_connected(user_id: int) -> bool:
    return _store().agent_live(str(user_id), _now()) > 0


def sweep() -> int:
    """Set offline every agent marked online/away whose sockets all went silent
    (a crashed server process, a laptop put to sleep). Returns how many."""
    count = 0
    for user in User.objects.exclude(availability=Availability.OFFLINE):
        if not is_connected(user.pk):
            if set_availability(user, Availability.OFFLINE, chosen=False):
                count += 1
            _reconnected_meanwhile(user)
    return count


def team_online(team) -> bool:
    """Is any agent who would answer this team's chat online? No team: any agent."""
    qs = User.objects.filter(is_active=True, availability=Availability.ONLINE)
    if team is not None:
        qs = qs.filter(teams=team)
    return qs.exists()
