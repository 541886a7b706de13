"""Fixtures for the realtime and chat widget tests."""
from __future__ import annotations

import json

import pytest
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from helpdesk.routing import websocket_urlpatterns

ORIGIN = (b"origin", b"http://localhost")

# the routes without the session middleware: tests put the user into the scope
router = URLRouter(websocket_urlpatterns)


def agent_socket(user, origin=ORIGIN):
    headers = [(b"host", b"localhost")] + ([origin] if origin else [])
    comm = WebsocketCommunicator(router, "/ws/agent/", headers=headers)
    comm.scope["user"] = user
    return comm


def widget_socket(channel, origin=b"http://localhost"):
    headers = [(b"host", b"localhost")] + ([(b"origin", origin)] if origin else [])
    return WebsocketCommunicator(router, f"/ws/widget/{channel.uuid}/", headers=headers)


async def recv_until(comm, predicate, timeout=3.0, limit=50):
    """Frames until one matches; returns it (fails on timeout)."""
    for _ in range(limit):
        frame = await comm.receive_json_from(timeout=timeout)
        if predicate(frame):
            return frame
    raise AssertionError("no matching frame")


async def drain(comm, timeout=0.3) -> list[dict]:
    frames = []
    while not await comm.receive_nothing(timeout=timeout):
        frames.append(json.loads((await comm.receive_output())["text"]))
    return frames


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    """Presence and throttles live in the cache: give each test its own key
    prefix (never clear(): with Redis that would flush a shared database)."""
    import copy
    import uuid

    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["KEY_PREFIX"] = f"{caches['default'].get('KEY_PREFIX', '')}-t{uuid.uuid4().hex[:8]}"
    if "LOCATION" in caches["default"] and "locmem" in caches["default"]["BACKEND"]:
        caches["default"]["LOCATION"] = f"rt-{uuid.uuid4().hex[:8]}"
    settings.CACHES = caches
    yield
