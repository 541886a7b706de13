"""Presence under concurrency: many joins and leaves at once (threads of one
process, and two processes sharing Redis) leave exactly the state they should;
stale entries expire."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from django.conf import settings

from conversations import presence, realtime
from helpdesk.models import User
from tests.conftest import require

from .servers import ROOT

CONV = 4242


def _agent(pk: int):
    return SimpleNamespace(pk=pk, name=f"Agent {pk}", initials=f"A{pk % 10}", avatar_color="#123456")


@pytest.fixture
def published(monkeypatch):
    calls = []
    monkeypatch.setattr(realtime, "publish_presence", lambda cid, viewers, typing: calls.append((viewers, typing)))
    return calls


def _viewer_ids(conversation_id=CONV):
    viewers, _typing = presence.snapshot(conversation_id)
    return sorted(v["id"] for v in viewers)


def test_concurrent_joins_and_leaves_in_threads_leave_a_consistent_state(published):
    """8 threads, 4 agents (two tabs each), 150 join/typing/leave rounds each; every
    even thread keeps its last tab open. A lost update would drop a kept tab or
    keep a closed one."""
    start = threading.Barrier(8)
    errors = []

    def worker(n):
        user = _agent(100 + n % 4)
        try:
            start.wait()
            for i in range(150):
                socket = f"tab-{n}-{i}"
                presence.viewing(user, CONV, socket)
                presence.typing(user, CONV, i % 2 == 0, socket)
                if n % 2 == 1 or i < 149:
                    presence.leave(user, CONV, socket)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    # even threads n = 0, 2, 4, 6 are agents 100 and 102
    assert _viewer_ids() == [100, 102]
    for pk in (101, 103):
        presence.viewing(_agent(pk), CONV, "late")
        presence.leave(_agent(pk), CONV, "late")
    assert _viewer_ids() == [100, 102]
    # closing the kept tabs empties it
    for n in (0, 2, 4, 6):
        presence.leave(_agent(100 + n % 4), CONV, f"tab-{n}-149")
    assert presence.snapshot(CONV) == ([], [])
    # the last event published shows the final state
    assert published[-1] == ([], [])


def test_stale_entries_expire(monkeypatch, personas, published):
    now = time.time()
    monkeypatch.setattr(presence, "_now", lambda: now)
    ana = _agent(7)
    presence.viewing(ana, CONV, "tab")
    assert presence.typing(ana, CONV, True, "tab") is True
    assert presence.snapshot(CONV)[1] == [presence.agent_card(ana)]
    monkeypatch.setattr(presence, "_now", lambda: now + presence.TYPING_TTL + 1)
    assert presence.snapshot(CONV) == ([presence.agent_card(ana)], [])  # typing stopped, still viewing
    monkeypatch.setattr(presence, "_now", lambda: now + presence.VIEW_TTL + 1)
    assert presence.snapshot(CONV) == ([], [])  # the tab died without a leave
    presence.viewing(ana, CONV, "tab2")  # coming back is a change again
    assert published[-1][0] == [presence.agent_card(ana)]

    # an agent whose socket died without a close goes offline at the sweep
    monkeypatch.setattr(presence, "_now", lambda: now)
    presence.agent_connected(personas.bob, "sock-1")
    assert User.objects.get(pk=personas.bob.pk).availability == "online"
    assert presence.is_connected(personas.bob.pk)
    monkeypatch.setattr(presence, "_now", lambda: now + presence.AGENT_TTL + 1)
    assert not presence.is_connected(personas.bob.pk)
    assert presence.sweep() == 1
    assert User.objects.get(pk=personas.bob.pk).availability == "offline"


SCRIPT = r"""
import os, sys, time
import django
django.setup()
from types import SimpleNamespace
from conversations import presence, realtime
from helpdesk.models import User
realtime.publish_presence = lambda *a, **k: None
name, start_at, conv = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
ana, bob = User.objects.get(username="ana"), User.objects.get(username="bob")
agents = [SimpleNamespace(pk=200 + n, name=f"P{n}", initials="P", avatar_color="#000000") for n in range(4)]
while time.time() < start_at:
    time.sleep(0.001)
for i in range(120):
    for n, agent in enumerate(agents):
        socket = f"{name}-{n}-{i}"
        presence.viewing(agent, conv, socket)
        if not (name == "b" and n % 2 == 0 and i == 119):
            presence.leave(agent, conv, socket)
    presence.agent_connected(ana, f"{name}-{i}")
    presence.agent_connected(bob, f"{name}-{i}")
    if not (name == "b" and i == 119):
        presence.agent_disconnected(ana, f"{name}-{i}")
    presence.agent_disconnected(bob, f"{name}-{i}")
print("done")
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_processes_joining_and_leaving_at_once_agree(personas):
    require(bool(settings.REDIS_URL), "Redis (REDIS_URL)")
    db = settings.DATABASES["default"]
    if settings.IS_POSTGRES:
        url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    env.update({"DATABASE_URL": url, "REDIS_URL": settings.REDIS_URL, "DEBUG": "1", "LOG_LEVEL": "WARNING",
                "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
                "DJANGO_SETTINGS_MODULE": "helpdesk.settings"})
    start_at = f"{time.time() + 3:.3f}"
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, name, start_at, str(CONV)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "done" in out, err[-2000:]
    # process b kept the tabs of agents 200 and 202 and one socket of ana
    assert _viewer_ids() == [200, 202]
    assert presence.is_connected(personas.ana.pk)
    assert not presence.is_connected(personas.bob.pk)
    assert User.objects.get(pk=personas.ana.pk).availability == "online"
    assert User.objects.get(pk=personas.bob.pk).availability == "offline"
