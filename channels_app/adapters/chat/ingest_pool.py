"""Visitor messages ingested in worker processes (CHAT_INGEST_PROCESSES).

In the ASGI process, a visitor message's rate limit check and ingest run in a
thread; that thread's Python work (ORM, JSON) holds the GIL that the event loop
needs to deliver every other socket's frames. With CHAT_INGEST_PROCESSES = N
(> 0) and a Redis channel layer, each ASGI process hands them to a pool of N
worker processes of its own instead: the worker stores and ingests the message
(in one transaction, as in a thread), publishes to the agents through Redis and
returns the frame for the visitor. Without Redis (the in-memory layer lives in
the serving process) or with 0, messages are ingested in threads as before.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from django.conf import settings

log = logging.getLogger(__name__)

_pool: ProcessPoolExecutor | None = None
_pool_pid = 0
_lock = threading.Lock()


def enabled() -> bool:
    return getattr(settings, "CHAT_INGEST_PROCESSES", 0) > 0 and bool(getattr(settings, "REDIS_URL", ""))


def pool() -> ProcessPoolExecutor | None:
    """This process's pool (started on first use), or None when disabled."""
    global _pool, _pool_pid
    if not enabled():
        return None
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            from django.db import connections

            db = connections["default"].settings_dict
            # spawn: a fork of a process running an event loop and threads is not safe
            _pool = ProcessPoolExecutor(settings.CHAT_INGEST_PROCESSES, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init,
                                        initargs=(os.environ.get("DJANGO_SETTINGS_MODULE", "helpdesk.settings"),
                                                  db["NAME"]))
            _pool_pid = os.getpid()
            for _ in range(settings.CHAT_INGEST_PROCESSES):  # start the workers now (Django takes a second)
                _pool.submit(_ready)
    return _pool


def _ready() -> bool:
    return True


def shutdown() -> None:
    global _pool
    with _lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=True, cancel_futures=False)
        _pool = None


def _init(settings_module: str, db_name: str) -> None:
    # uvicorn ends with the signal it got, past atexit: a worker whose parent
    # is gone exits by itself instead of living on
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=watch, name="ingest-pool-parent", daemon=True).start()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    import django

    django.setup()
    from django.db import connections

    conn = connections["default"]
    conn.settings_dict["NAME"] = db_name  # the database the parent uses (a test database in tests)
    conn.settings_dict["CONN_MAX_AGE"] = None  # one connection per worker, kept


def run(func, *args):
    """In a worker: run func(*args) on the worker's kept database connection."""
    from django.db import connections

    conn = connections["default"]
    conn.close_if_unusable_or_obsolete()
    try:
        return func(*args)
    finally:
        if conn.errors_occurred:
            conn.close_if_unusable_or_obsolete()
