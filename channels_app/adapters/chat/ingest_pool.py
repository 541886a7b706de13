"""Where the ASGI process ingests visitor messages, off its event loop.

Threads (the default): each ASGI process has CHAT_INGEST_THREADS threads of its
own for them (IngestThreads). Each thread keeps its database connection between
messages (closed after IDLE_CLOSE seconds without one, or after an error it did
not survive), whatever CONN_MAX_AGE says: a fresh PostgreSQL connection per
message cost ~4 ms (p99 12 ms) on the visitor -> agent path. The rate limit
check, the store and ingest (one transaction) and the publish run there.

Processes: in a thread that Python work (ORM, JSON) holds the GIL that the
event loop needs to deliver every other socket's frames. With
CHAT_INGEST_PROCESSES = N (> 0) and a Redis channel layer, each ASGI process
hands them to a pool of N worker processes of its own instead: the worker
stores and ingests the message (in one transaction, as in a thread), publishes
to the agents through Redis and returns the frame for the visitor. Without
Redis (the in-memory layer lives in the serving process) or with 0, threads.

Both are warmed up when started (warm_up: the imports and connections of a
visitor message): the first messages after a start no longer wait 0.3-0.8 s.

A socket's messages are handled one after another (the consumer awaits each),
so a visitor's messages are stored in the order they were sent.
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor

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
    """Stop this process's worker processes and ingest threads (the threads
    close their database connections); both start again on next use."""
    global _pool, _threads
    with _lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=True, cancel_futures=False)
        _pool = None
        if _threads is not None and _threads_pid == os.getpid():
            _threads.shutdown(wait=True)
        _threads = None


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
    warm_up()


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


# ------------------------------------------------------------------ warm-up

# what a visitor message imports on its way (adapter, ingest, publish, metrics,
# automation, outbound webhooks): ~0.25 s on an idle core, 0.5-0.8 s under load
WARM_MODULES = (
    "channels_app.services", "channels_app.adapters.chat.adapter", "channels_app.adapters.chat.inbound",
    "channels_app.adapters.chat.live", "conversations.services", "conversations.realtime",
    "conversations.automation", "conversations.tasks", "customers.services", "metrics.engine",
    "metrics.tasks", "helpdesk.webhooks",
)


def warm_up() -> None:
    """Import what ingesting a visitor message needs and open its connections
    (database in this thread, the cache's Redis client, the Redis publisher),
    so the first visitors after a start do not wait for that. Best effort."""
    try:
        for name in WARM_MODULES:
            importlib.import_module(name)
        from channels.layers import get_channel_layer
        from django.core.cache import cache
        from django.db import connections

        from conversations import realtime

        cache.get("chat:warm-up")
        layer = get_channel_layer()
        if layer is not None:
            realtime._sync_publisher(layer)
        connections["default"].ensure_connection()
    except Exception:
        log.warning("chat ingest warm-up failed", exc_info=True)
    try:
        warm_up_celery()
    except Exception:
        log.warning("chat ingest warm-up of Celery failed", exc_info=True)


def warm_up_celery() -> None:
    """What the process's first task (the after-ingest automation, sent after
    the publish on the ingest thread) would otherwise do on a visitor's
    message: build Celery's task registry, load the result backend, connect to
    the broker and declare the queues. That first .delay() took 80-110 ms on an
    idle core and held an ingest thread 0.25-0.5 s under bench/realtime.py's
    load, while the next visitors' messages queued behind it (after it: 2-7 ms).
    Sends nothing."""
    from helpdesk.celery import app

    if app.conf.task_always_eager:
        return
    app.finalize(auto=True)
    app.backend  # noqa: B018 (a cached property: loads the backend)
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1)
        for task_queue in app.amqp.queues.values():
            producer.maybe_declare(task_queue)


# ------------------------------------------------------------------ threads

IDLE_CLOSE = 10.0  # seconds: an ingest thread's database connection is closed after this long unused

_threads: "IngestThreads | None" = None
_threads_pid = 0


class IngestThreads(Executor):
    """A fixed number of threads that run visitor messages, each on a database
    connection of its own that it keeps between messages (see the module
    docstring). For asyncio / asgiref's sync_to_async(executor=...)."""

    def __init__(self, workers: int, name: str = "chat-ingest"):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._shutdown = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()
        self._queue.put((None, warm_up, (), {}))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        from django.db import connections

        conn = connections["default"]
        try:
            while True:
                try:
                    item = self._queue.get(timeout=IDLE_CLOSE if conn.connection is not None else None)
                except queue.Empty:
                    conn.close()  # unused for a while: do not hold a server connection
                    continue
                if item is None:
                    return
                future, fn, args, kwargs = item
                if future is not None and not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    if future is not None:
                        future.set_exception(exc)
                else:
                    if future is not None:
                        future.set_result(result)
                finally:
                    self._keep(conn)
                del item, future, fn, args, kwargs
        finally:
            connections.close_all()

    @staticmethod
    def _keep(conn) -> None:
        """After a message: keep the connection unless it broke (or was left
        out of autocommit); CONN_MAX_AGE does not apply here."""
        if conn.connection is None:
            return
        conn.close_at = None
        try:
            conn.close_if_unusable_or_obsolete()
        except Exception:
            log.warning("closing a chat ingest connection failed", exc_info=True)


def threads() -> IngestThreads:
    """This process's ingest threads (CHAT_INGEST_THREADS, started on first use)."""
    global _threads, _threads_pid
    with _lock:
        if _threads is None or _threads_pid != os.getpid():
            _threads = IngestThreads(getattr(settings, "CHAT_INGEST_THREADS", 4))
            _threads_pid = os.getpid()
    return _threads
