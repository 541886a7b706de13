"""bench/realtime.py --trace DIR: per-stage timestamps and machine events (bench only).

Nothing here is imported by the product. The ASGI processes are started through
`serve` (hooks installed by wrapping functions before uvicorn imports the app),
the ingest workers and the bench client call `install_*` themselves. Every
process appends records to a list that a daemon thread writes to
DIR/<role>-<pid>.jsonl twice a second:

  ["gc", t_start, seconds, generation, collected]      (every collection >= 1 ms)
  ["lag", t, seconds]                                 (event loop 5 ms tick late by >= 10 ms)
  ["tlag", t, seconds]                                (a plain thread's 5 ms sleep late by >= 10 ms)
  ["w_recv", t, text] / ["w_done", t, text]           widget consumer: on_message entry / exit
  ["ing0", t, text, thread] / ["ing1", t, text]       throttle_and_ingest in the ingest thread
  ["pub", id, text, t_commit, t_pub0, t_pub1, t_after_end]  _after_ingest: commit seen, publish, end
  ["dlv", id, user, t0, t1, depth]                    AgentConsumer.broadcast entry / after send, queue left
  ["rcv", id, agent_index, t]                         bench client: frame read (client)
  ["ingx", text, wall, cpu, pg_s, pg_n, redis_s, redis_n, gc_s, gc_n]
                                                      RT_TRACE_IO=1: a visitor message's ingest thread
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

RECORDS: list = []
_started = False


def _writer(path: Path) -> None:
    with open(path, "a") as f:
        while True:
            time.sleep(0.5)
            n = len(RECORDS)
            if n:
                batch = RECORDS[:n]
                del RECORDS[:n]
                f.write("".join(json.dumps(r) + "\n" for r in batch))
                f.flush()


def start(directory: str, role: str) -> None:
    global _started
    if _started:
        return
    _started = True
    Path(directory).mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_writer, args=(Path(directory) / f"{role}-{os.getpid()}.jsonl",), daemon=True).start()
    _gc_hook()
    threading.Thread(target=_thread_lag, daemon=True).start()


def _gc_hook() -> None:
    state = {}

    def cb(phase, info):
        if phase == "start":
            state["t"] = time.perf_counter()
            state["w"] = time.time()
        else:
            d = time.perf_counter() - state.get("t", time.perf_counter())
            if d >= 0.001:
                RECORDS.append(["gc", state["w"], d, info.get("generation"), info.get("collected")])

    gc.callbacks.append(cb)


def _thread_lag() -> None:
    while True:
        t = time.perf_counter()
        time.sleep(0.005)
        late = time.perf_counter() - t - 0.005
        if late >= 0.010:
            RECORDS.append(["tlag", time.time(), late])


async def loop_lag() -> None:
    import asyncio

    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        late = time.perf_counter() - t - 0.005
        if late >= 0.010:
            RECORDS.append(["lag", time.time(), late])


_local = threading.local()


def install_ingest_hooks() -> None:
    """_after_ingest / realtime.send: commit, publish start and end (any process that ingests)."""
    import uuid

    from conversations import realtime, services

    orig_after, orig_send = services._after_ingest, realtime.send

    def after(message, conversation_created):
        _local.commit = time.time()
        _local.rec = None
        try:
            return orig_after(message, conversation_created)
        finally:
            if _local.rec is not None:
                _local.rec.append(time.time())
                RECORDS.append(_local.rec)
            _local.commit = None

    def send(groups, payload):
        t0 = time.time()
        payload.setdefault("id", uuid.uuid4().hex)
        orig_send(groups, payload)
        commit = getattr(_local, "commit", None)
        if commit is not None and _local.rec is None:
            msg = payload.get("message") or {}
            _local.rec = ["pub", payload["id"], msg.get("text"), commit, t0, time.time()]

    services._after_ingest = after
    realtime.send = send


def install_server_hooks() -> None:
    import asyncio

    from channels_app.adapters.chat import consumers as chat
    from conversations import consumers

    install_ingest_hooks()
    orig_tai = chat.throttle_and_ingest

    def tai(channel, visitor, origin, ip, body):
        text = body.get("text")
        RECORDS.append(["ing0", time.time(), text, threading.current_thread().name])
        try:
            return orig_tai(channel, visitor, origin, ip, body)
        finally:
            RECORDS.append(["ing1", time.time(), text])

    chat.throttle_and_ingest = tai
    if os.environ.get("RT_TRACE_IO"):
        _install_io_hooks(chat)
    orig_on_message = chat.WidgetConsumer.on_message

    async def on_message(self, content):
        text = content.get("text")
        RECORDS.append(["w_recv", time.time(), text])
        try:
            return await orig_on_message(self, content)
        finally:
            RECORDS.append(["w_done", time.time(), text])

    chat.WidgetConsumer.on_message = on_message
    orig_broadcast = consumers.AgentConsumer.broadcast
    lag_task = []

    async def broadcast(self, event):
        if not lag_task:
            lag_task.append(asyncio.ensure_future(loop_lag()))
        t0 = time.time()
        await orig_broadcast(self, event)
        try:  # messages still queued for this socket in the layer (channels_redis pub/sub)
            depth = self.channel_layer._get_layer().channels[self.channel_name].qsize()
        except Exception:
            depth = -1
        RECORDS.append(["dlv", event.get("id"), self.user.pk, t0, time.time(), depth])

    consumers.AgentConsumer.broadcast = broadcast


def _install_io_hooks(chat) -> None:
    """RT_TRACE_IO=1: per visitor message, the ingest thread's wall and CPU time,
    its PostgreSQL and Redis calls' wall time (each call's wall includes
    retaking the GIL after the reply; Redis counts sends and reads) and the
    collections it ran (CPU)."""
    import redis.connection as rc

    from helpdesk.db.postgresql import base as pgbase

    acc = threading.local()

    def timed(fn, kind):
        def wrapper(*a, **k):
            if getattr(acc, "on", False):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    d = time.perf_counter() - t
                    setattr(acc, kind, getattr(acc, kind) + d)
                    setattr(acc, kind + "_n", getattr(acc, kind + "_n") + 1)
            return fn(*a, **k)
        return wrapper

    conn_cls = getattr(rc, "AbstractConnection", rc.Connection)
    conn_cls.send_packed_command = timed(conn_cls.send_packed_command, "redis")
    conn_cls.read_response = timed(conn_cls.read_response, "redis")
    orig_cursor_class = pgbase._cursor_class

    def cursor_class(lazy):
        cls = orig_cursor_class(lazy)
        cls.execute = timed(cls.execute, "pg")
        return cls

    pgbase._cursor_class = cursor_class
    inner = chat.throttle_and_ingest

    def gccb(phase, info):
        if getattr(acc, "on", False):
            if phase == "start":
                acc.gc0 = time.thread_time()
            else:
                acc.gc += time.thread_time() - acc.gc0
                acc.gc_n += 1

    gc.callbacks.append(gccb)

    def tai(channel, visitor, origin, ip, body):
        acc.on, acc.pg, acc.pg_n, acc.redis, acc.redis_n, acc.gc, acc.gc_n = True, 0.0, 0, 0.0, 0, 0.0, 0
        t, c = time.perf_counter(), time.thread_time()
        try:
            return inner(channel, visitor, origin, ip, body)
        finally:
            acc.on = False
            RECORDS.append(["ingx", body.get("text"), time.perf_counter() - t, time.thread_time() - c,
                            acc.pg, acc.pg_n, acc.redis, acc.redis_n, acc.gc, acc.gc_n])

    chat.throttle_and_ingest = tai


def serve(directory: str, argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
    start(directory, "asgi")
    import django

    django.setup()
    install_server_hooks()
    import uvicorn

    uvicorn.main(argv, standalone_mode=False)


# ------------------------------------------------------------------ machine sampler

def sampler(directory: str, db_url: str, stop) -> None:
    """A process of its own: CPU of the machine (busy, iowait), CPU pressure and
    the busiest processes every 50/250 ms; PostgreSQL backends' wait events
    every 100 ms; checkpointer/WAL counters every second."""
    import psycopg2

    start(directory, "sampler")
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    cur = conn.cursor()
    hz = os.sysconf("SC_CLK_TCK")
    prev_stat = None
    prev_psi = None
    prev_proc: dict = {}
    n = 0
    while not stop.is_set():
        t = time.time()
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        psi = Path("/proc/pressure/cpu").read_text().split("\n")[0].rsplit("total=", 1)[1]
        iopsi = Path("/proc/pressure/io").read_text().split("\n")[0].rsplit("total=", 1)[1]
        if prev_stat is not None:
            d = [a - b for a, b in zip(ticks, prev_stat)]
            total = sum(d) or 1
            RECORDS.append(["cpu", t, 1 - (d[3] + d[4]) / total, d[4] / total,
                            (int(psi) - prev_psi[0]) / 1e6, (int(iopsi) - prev_psi[1]) / 1e6, d[7] / total])
        prev_stat, prev_psi = ticks, (int(psi), int(iopsi))
        if n % 2 == 0:
            cur.execute("SELECT pid, datname, state, wait_event_type, wait_event, "
                        "extract(epoch from now() - xact_start), left(query, 60), backend_type "
                        "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND (state IS NULL OR state <> 'idle')")
            rows = [r for r in cur.fetchall() if r[3] is not None or r[2] == "active"]
            RECORDS.append(["pg", t, [list(map(lambda v: v if isinstance(v, (int, str, type(None))) else float(v), r))
                                      for r in rows]])
        if n % 5 == 0:
            procs = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        stat = (entry / "stat").read_text()
                        name = stat[stat.index("(") + 1:stat.rindex(")")]
                        f = stat.rsplit(")", 1)[1].split()
                        procs[int(entry.name)] = (name, int(f[11]) + int(f[12]))
                    except (OSError, ValueError, IndexError):
                        pass
            busy = sorted(((v[1] - prev_proc.get(pid, (None, v[1]))[1]) / hz, pid, v[0])
                          for pid, v in procs.items())[-6:]
            RECORDS.append(["procs", t, [b for b in busy if b[0] > 0]])
            prev_proc = procs
        if n % 20 == 0:
            cur.execute("SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint, buffers_backend, "
                        "buffers_backend_fsync FROM pg_stat_bgwriter")
            bg = cur.fetchone()
            cur.execute("SELECT wal_records, wal_bytes::bigint, wal_write, wal_sync FROM pg_stat_wal")
            RECORDS.append(["bgw", t, list(bg), [int(v) for v in cur.fetchone()]])
        n += 1
        time.sleep(max(0.0, 0.05 - (time.time() - t)))
    time.sleep(0.6)


if __name__ == "__main__" and len(sys.argv) > 2:
    ROOT = Path(__file__).resolve().parent.parent
    # bench/ holds email.py, which would shadow the standard library's email package
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
    sys.path.insert(0, str(ROOT))
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "sample":
        import signal

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        sampler(sys.argv[2], sys.argv[3], stop)
