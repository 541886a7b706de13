"""helpdesk.cache.RedisCache keeps one Redis client per pool for the process."""
from __future__ import annotations

import os
import threading
import uuid

import pytest

from helpdesk.cache import RedisCache


def test_one_client_per_pool_shared_by_every_instance_and_thread():
    url = "redis://127.0.0.1:6379/15"  # nothing connects until a command runs
    first = RedisCache(url, {"KEY_PREFIX": "a"})
    client = first._cache.get_client(write=True)
    assert first._cache.get_client(write=True) is client  # not a new client per operation
    seen = []
    thread = threading.Thread(target=lambda: seen.append(RedisCache(url, {"KEY_PREFIX": "b"})._cache.get_client()))
    thread.start()
    thread.join()
    assert seen == [client]  # another instance (another thread's) shares it
    other = RedisCache("redis://127.0.0.1:6379/14", {})
    assert other._cache.get_client() is not client


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")
def test_round_trip_with_prefixes():
    url = os.environ["REDIS_URL"]
    prefix = f"t{uuid.uuid4().hex[:8]}"
    one, two = RedisCache(url, {"KEY_PREFIX": prefix + "1"}), RedisCache(url, {"KEY_PREFIX": prefix + "2"})
    one.set("k", {"v": 1}, 30)
    assert one.get("k") == {"v": 1} and two.get("k") is None
    assert one.add("n", 1, 30) and one.incr("n") == 2
    one.delete_many(["k", "n"])
    assert one.get("k") is None


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")
def test_incr_is_one_round_trip_and_never_creates_the_key(monkeypatch):
    """The chat throttle increments a counter per visitor message: one command
    (Django's incr sends EXISTS, then INCRBY); a missing key stays missing."""
    cache = RedisCache(os.environ["REDIS_URL"], {"KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}"})
    client = cache._cache.get_client(write=True)
    commands = []
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *args, **kw: (commands.append(args[0]), real(*args, **kw))[1])
    with pytest.raises(ValueError):
        cache.incr("n")
    assert cache.get("n") is None
    cache.add("n", 1, 30)
    commands.clear()
    assert cache.incr("n") == 2 and cache.incr("n", 5) == 7 and cache.decr("n") == 6
    assert commands == ["EVAL", "EVAL", "EVAL"]
    assert 0 < real("TTL", cache.make_and_validate_key("n")) <= 30  # the window's expiry kept
    cache.delete("n")


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")
def test_add_or_get_is_one_round_trip_and_returns_what_was_there(monkeypatch):
    """The metrics flush lock: add() that also says what the key holds (when
    the queued flush is due), in one command."""
    cache = RedisCache(os.environ["REDIS_URL"], {"KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}"})
    client = cache._cache.get_client(write=True)
    commands = []
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *args, **kw: (commands.append(args[0]), real(*args, **kw))[1])
    assert cache.add_or_get("lock", 1234, 5) == (True, None)
    assert cache.add_or_get("lock", 99, 5) == (False, 1234)
    assert commands == ["EVAL", "EVAL"]
    assert cache.get("lock") == 1234  # the value add() would have stored, read back by get()
    assert 0 < real("TTL", cache.make_and_validate_key("lock")) <= 5
    cache.set("obj", {"a": 1}, 30)
    assert cache.add_or_get("obj", 1, 5) == (False, {"a": 1})
    assert cache.add_or_get("forever", 1, None) == (True, None)
    assert real("TTL", cache.make_and_validate_key("forever")) == -1
    assert cache.add_or_get("gone", 1, 0) == (False, None) and cache.get("gone") is None
    cache.delete_many(["lock", "obj", "forever"])


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")
def test_hit_counts_in_one_round_trip_and_the_first_hit_sets_the_expiry(monkeypatch):
    cache = RedisCache(os.environ["REDIS_URL"], {"KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}"})
    client = cache._cache.get_client(write=True)
    commands = []
    real = client.execute_command
    monkeypatch.setattr(client, "execute_command", lambda *args, **kw: (commands.append(args[0]), real(*args, **kw))[1])
    assert [cache.hit("c", 30) for _ in range(3)] == [1, 2, 3]
    assert commands == ["EVAL"] * 3
    key = cache.make_and_validate_key("c")
    assert 0 < real("TTL", key) <= 30
    real("EXPIRE", key, 100)
    cache.hit("c", 30)
    assert real("TTL", key) > 30  # later hits keep the first hit's expiry
    assert cache.get("c") == 4
    assert [cache.hit("f", None) for _ in range(2)] == [1, 2]
    assert real("TTL", cache.make_and_validate_key("f")) == -1  # None: kept for ever, as add(timeout=None)
    assert cache.hit("z", 0) == 1 and cache.get("z") is None
    cache.delete_many(["c", "f"])


def test_count_hit_on_other_caches_adds_then_increments():
    from django.core.cache.backends.locmem import LocMemCache

    from helpdesk.cache import count_hit

    cache = LocMemCache(f"t{uuid.uuid4().hex}", {})
    assert [count_hit("k", 30, cache) for _ in range(3)] == [1, 2, 3]
    cache.delete("k")
    assert count_hit("k", 30, cache) == 1
