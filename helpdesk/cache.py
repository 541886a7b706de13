"""Django's RedisCache, keeping its Redis clients.

django.core.cache.backends.redis builds a redis.Redis object for every cache
operation (RedisCacheClient.get_client), and the cache handler gives every
thread and async context its own RedisCache, each with its own connection
pools. Here one client per (servers, options) and pool serves the whole
process: redis-py clients are thread-safe and take a connection from the pool
for each command (the pool notices a fork and starts afresh).
"""
from __future__ import annotations

import threading

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_shared: dict = {}
_lock = threading.Lock()


class KeptRedisCacheClient(RedisCacheClient):
    def __init__(self, servers, **options):
        super().__init__(servers, **options)
        self._clients = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            with _lock:
                client = self._clients.get(index)
                if client is None:
                    pool = self._get_connection_pool(write)
                    client = self._clients[index] = self._client(connection_pool=pool)
        return client


    def incr(self, key, delta):
        """One round trip (Django's: EXISTS, then INCRBY), and atomic: raises
        ValueError for a missing key, as Django's does."""
        client = self.get_client(key, write=True)
        value = client.eval(_INCR_EXISTING, 1, key, delta)
        if value is None:
            raise ValueError("Key '%s' not found." % key)
        return value

    def add_or_get(self, key, value, timeout):
        """add() that returns what was there instead when the key exists, in one
        round trip: (True, None) when added, else (False, the current value)."""
        client = self.get_client(key, write=True)
        data = self._serializer.dumps(value)
        current = (client.eval(_ADD_OR_GET, 1, key, data, timeout) if timeout is not None
                   else client.eval(_ADD_OR_GET_FOREVER, 1, key, data))
        if current is None:
            return True, None
        return False, self._serializer.loads(current)

    def hit(self, key, timeout):
        """One more on the counter `key` (made with `timeout` seconds to live
        when missing, None: for ever): the count so far, in one round trip."""
        client = self.get_client(key, write=True)
        if timeout is None:
            return int(client.incr(key))
        return int(client.eval(_HIT, 1, key, timeout))


_HIT = "local n = redis.call('incr', KEYS[1]) if n == 1 then redis.call('expire', KEYS[1], ARGV[1]) end return n"
_ADD_OR_GET = ("local v = redis.call('get', KEYS[1]) if v then return v end "
               "redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) return false")
_ADD_OR_GET_FOREVER = ("local v = redis.call('get', KEYS[1]) if v then return v end "
                       "redis.call('set', KEYS[1], ARGV[1]) return false")

# INCRBY only an existing key (INCRBY alone would create it, without expiry)
_INCR_EXISTING = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end return false"


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = KeptRedisCacheClient

    def add_or_get(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        """Like add(); returns (added, the value already there or None)."""
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        if timeout is not None and timeout <= 0:  # expires at once: add() of Django's sets nothing either
            return False, None
        return self._cache.add_or_get(key, value, timeout)

    def hit(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        """One more on the counter `key`, which lives `timeout` from its first
        hit (as add() would store it); returns the count so far."""
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        if timeout is not None and timeout <= 0:  # expires at once: nothing is kept
            return 1
        return self._cache.hit(key, timeout)

    @property
    def _cache(self):
        key = (tuple(self._servers), repr(sorted(self._options.items())))
        client = _shared.get(key)
        if client is None:
            with _lock:
                client = _shared.get(key)
                if client is None:
                    client = _shared[key] = self._class(self._servers, **self._options)
        return client


def count_hit(key: str, timeout: int, cache=None) -> int:
    """Count one hit on the counter `key` of the cache (the default one), which
    lives `timeout` seconds from its first hit; returns the count so far. One
    round trip on Redis (RedisCache.hit); other backends add, then incr."""
    if cache is None:
        from django.core.cache import cache
    hit = getattr(cache, "hit", None)
    if hit is not None:
        return hit(key, timeout)
    if cache.add(key, 1, timeout):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout)
        return 1
