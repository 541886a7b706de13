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
