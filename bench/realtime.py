"""Benchmark: realtime fan-out across two ASGI processes with Redis and PostgreSQL.

200 agent sockets and 200 chat-visitor sockets are spread over two uvicorn
processes (helpdesk.asgi). A separate process ingests inbound messages at
200/s through conversations.services.ingest (10 teams, one api channel each;
each message reaches its team's 20 agents). Visitors send chat messages over
their widget sockets at --visitor-rate per second (they reach team 0's agents).

The load runs --warmup seconds (default 3) before the measured --seconds
(default 15): it starts from nothing in freshly started processes (the four
ingest processes' first full collections, cold caches), and those seconds are
printed on a line of their own, not mixed into the figures.

Prints p50/p99 of:
  * ingest commit -> agent socket: the event's `at` (stamped on publish, right
    after commit) to the moment the agent client reads the frame;
  * visitor message -> agent socket: the visitor's send to the agent's read.

    REDIS_URL=redis://127.0.0.1:6379/4 .venv/bin/python bench/realtime.py --seconds 15

Uses database tl_bench_rt (created and migrated when missing, vacuumed before
every run); Redis keys use the prefix "tlbench"; the Celery queue (no worker
runs) is purged at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import random
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds email.py, which would shadow the standard library's email package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_bench_rt")
os.environ["DATABASE_URL"] = DB_URL
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/4")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", "tlbench")
os.environ.setdefault("CACHE_KEY_PREFIX", "tlbench")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
# production settings (DEBUG off: no SQL query log in every process), loopback only, no TLS redirects
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "bench-only-" + "x" * 40)
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("LOG_LEVEL", "WARNING")

TEAMS = 10
VISITORS = 200
TRACE = os.environ.get("RT_TRACE_DIR", "")


def trace_module():
    """bench/_rttrace.py (--trace), loaded by path (bench/ is not on sys.path)."""
    import importlib.util

    if "_rttrace" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_rttrace", ROOT / "bench" / "_rttrace.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["_rttrace"] = module
        spec.loader.exec_module(module)
    return sys.modules["_rttrace"]


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def setup(agents: int):
    """Teams, agents (with session cookies), one api channel per team and a chat channel."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from channels_app.models import Channel
    from conversations.models import Team
    from helpdesk.models import User

    teams = [Team.objects.get_or_create(name=f"Bench team {i}")[0] for i in range(TEAMS)]
    cookies = []
    for i in range(agents):
        user, created = User.objects.get_or_create(username=f"bench-agent-{i}", defaults={"role": "agent"})
        if created:
            user.set_password(uuid.uuid4().hex)
            user.save()
        teams[i % TEAMS].members.add(user)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
    api = []
    for i, team in enumerate(teams):
        ch, _ = Channel.objects.get_or_create(kind="api", name=f"bench api {i}", defaults={"team": team})
        api.append(ch.pk)
    chat, _ = Channel.objects.get_or_create(kind="chat", name="bench chat", defaults={"team": teams[0]})
    chat.settings = {"rate_limit": 100}
    chat.save()
    from channels_app.adapters.chat import tokens

    # one signed token per visitor, as their browsers would keep (no per-IP new-token limit)
    visitor_tokens = [tokens.make_token(chat, tokens.new_visitor_id()) for _ in range(VISITORS)]
    return cookies, api, str(chat.uuid), visitor_tokens


def ingest_worker(channel_ids, rate: float, seconds: float, offset: float, start, out, warmup: float = 0.0):
    """A separate process: ingest `rate` messages per second for `seconds`
    (the first `warmup` of them not in the CPU figures it returns)."""
    import django

    django.setup()
    from django.db import close_old_connections

    from channels_app.models import Channel
    from conversations import services
    from conversations.inbound import InboundMessage

    if TRACE:
        trace_module().start(TRACE, "ingest")
        trace_module().install_ingest_hooks()
    channels = list(Channel.objects.filter(pk__in=channel_ids))
    run = uuid.uuid4().hex[:6]
    # warm before the measured window, as a running webhook server is: the first
    # ingest of a process imports and connects (~0.25 CPU-s); four cold workers
    # starting together took the first second measured (one message each, to
    # the agents before measuring starts)
    services.ingest(InboundMessage(channel=channels[0], external_id=f"bench-{run}-warm",
                                   identities=[("email", "warm@bench.example")], text="warm-up"))
    # a long-running webhook server's start-up objects have long reached the
    # oldest generation; a fresh process's first full collection (80-180 ms in
    # traced runs, four processes within the same second) is the bench's own
    gc.collect()
    gc.freeze()
    start.wait()
    time.sleep(offset)
    n, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    pg_cpu = -backend_cpu()
    total = int(rate * seconds)
    warm_n = int(rate * warmup)
    late = 0
    while n < total:
        if n == warm_n and warm_n:  # the measured window starts: CPU from here on
            cpu0 = time.process_time()
            pg_cpu = -backend_cpu()
        due = t0 + n / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.5:
            late += 1
        ch = channels[n % len(channels)]
        services.ingest(InboundMessage(channel=ch, external_id=f"bench-{run}-{n}",
                                       identities=[("email", f"c{random.randint(0, 999)}@bench.example")],
                                       text=f"bench {n}"))
        n += 1
        if n % 500 == 0:
            pg_cpu += backend_cpu()
            close_old_connections()
    cpu = time.process_time() - cpu0
    pg_cpu += backend_cpu()
    out.put({"sent": n, "elapsed": time.perf_counter() - t0, "late": late, "cpu": cpu, "pg_cpu": pg_cpu})


def backend_cpu() -> float:
    """CPU seconds used so far by this process's PostgreSQL backend (it exits with
    the connection, before the end-of-run sample of all postgres processes)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cpu_seconds([cursor.fetchone()[0]])


def vacuum_database(connection) -> str:
    """VACUUM (ANALYZE) the bench database before the window, as autovacuum
    keeps a deployment's tables. Every run updates the same ~2,400 conversation
    and customer rows ~3,000 times; on a server with autovacuum off (these
    machines' CI configuration) the dead rows piled up run after run (50,000
    dead next to 4,400 live conversations, 22 MB of index for them after a
    dozen runs) and each run found PostgreSQL slower than the last. Returns
    what it did, for the report."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW autovacuum")
        autovacuum = cursor.fetchone()[0]
        cursor.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables")
        dead = int(cursor.fetchone()[0])
    t = time.perf_counter()
    connection.ensure_connection()
    raw = connection.connection
    autocommit = raw.autocommit
    raw.autocommit = True  # VACUUM cannot run in a transaction
    try:
        with raw.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE)")
    finally:
        raw.autocommit = autocommit
    return (f"server autovacuum {autovacuum}; VACUUM (ANALYZE) before the window: {dead} dead rows, "
            f"{time.perf_counter() - t:.1f} s")


def start_server(port: int, log, deflate: bool = False, ws: str = "websockets-sansio", profile: str = ""):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    # uvicorn re-raises SIGTERM after its graceful shutdown: a no-op handler lets the profile be written
    prof = ["-c", "import cProfile, signal, sys, uvicorn; signal.signal(signal.SIGTERM, lambda *a: None); "
            "p = cProfile.Profile(); p.enable()\ntry: uvicorn.main(sys.argv[3:], standalone_mode=False)\n"
            "finally: p.disable(); p.dump_stats(sys.argv[1])",
            str(Path(profile) / f"asgi-{port}.prof")] if profile else (
                [str(ROOT / "bench" / "_rttrace.py"), "serve", TRACE] if TRACE else ["-m"])
    return subprocess.Popen([sys.executable, *prof, *([] if TRACE and not profile else ["uvicorn"]),
                             "helpdesk.asgi:application", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", "--no-access-log", "--ws", ws,
                             *([] if deflate else ["--ws-per-message-deflate", "false"])],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def cpu_seconds(pids) -> float:
    """User+system CPU time of these processes (Linux /proc), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def with_children(pids) -> list[int]:
    """These processes and their children (the ASGI processes' ingest workers)."""
    pids = list(pids)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) in pids:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_by_name(names) -> dict:
    """CPU seconds so far of all processes whose command name is in `names`
    (redis-server, postgres: shared with whatever else runs on the machine)."""
    totals = dict.fromkeys(names, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name in totals:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                totals[name] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return totals


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def self_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _gc_timer(out: list):
    """A gc callback appending each collection's pause (seconds)."""
    started = [0.0]

    def callback(phase, info):
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            out.append((time.perf_counter() - started[0], info.get("generation")))
    return callback


async def _loop_lag(out: list, tick: float = 0.005):
    """How late this event loop runs a 5 ms timer (seconds), while measuring."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(tick)
        out.append(time.perf_counter() - t - tick)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_clients(bases, cookies, chat_uuid, visitor_tokens, visitor_rate, seconds, start, results, done,
                      settle=5.0, client_nice=0, warmup=0.0):
    visitors = len(visitor_tokens)
    import websockets

    ingest_lat, visitor_lat, received = [], [], []
    records = trace_module().RECORDS if TRACE else None
    if TRACE:
        lag_task = asyncio.ensure_future(trace_module().loop_lag())
    ready = []
    last_frame = [time.time()]
    go = asyncio.Event()
    measuring = [False]

    async def agent(i, cookie):
        base = bases[i % len(bases)]
        async with websockets.connect(base.replace("http", "ws") + "/ws/agent/", origin=base,
                                      additional_headers={"Cookie": cookie}, max_queue=None,
                                      open_timeout=60) as ws:
            ready.append(1)
            async for raw in ws:
                now = time.time()
                if not measuring[0]:
                    last_frame[0] = now
                    continue
                # parsed after the window: the less the instrument does per frame, the less
                # its own CPU time (on the cores it measures) delays the next frame's timestamp
                received.append((now, i, raw))

    async def visitor(i):
        base = bases[i % len(bases)]
        async with websockets.connect(f"{base.replace('http', 'ws')}/ws/widget/{chat_uuid}/", origin=base,
                                      open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "hello", "token": visitor_tokens[i]}))
            ready.append(1)
            # each visitor sends every visitors/visitor_rate seconds, staggered
            period = visitors / visitor_rate if visitor_rate else None
            reader = asyncio.create_task(_drain(ws))
            await go.wait()
            if period:
                await asyncio.sleep(random.random() * period)
                end = time.time() + warmup + seconds
                n = 0
                while time.time() < end:
                    await ws.send(json.dumps({"type": "message", "client_id": f"b{n}", "text": f"v {time.time()}"}))
                    n += 1
                    await asyncio.sleep(period)
            await asyncio.sleep(warmup + seconds + 3)
            reader.cancel()

    async def _drain(ws):
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass

    tasks = []
    for i, cookie in enumerate(cookies):
        tasks.append(asyncio.create_task(agent(i, cookie)))
        if i % 20 == 19:
            await asyncio.sleep(0.05)
    for i in range(visitors):
        tasks.append(asyncio.create_task(visitor(i)))
        if i % 20 == 19:
            await asyncio.sleep(0.05)
    deadline = time.time() + 120
    while len(ready) < len(cookies) + visitors and time.time() < deadline:
        await asyncio.sleep(0.5)
    # let the connection storm settle: every agent coming online is announced to
    # every agent socket (200 x 200 frames), and to every widget; measure from
    # the moment the agents' sockets have been quiet for a second
    storm = time.time()
    await asyncio.sleep(settle)
    while time.time() - last_frame[0] < 1.0 and time.time() - storm < 120:
        await asyncio.sleep(0.2)
    results["storm"] = time.time() - storm
    # the client is the measuring instrument and shares the 2 cores: a full
    # collection of its heap (Django, 400 sockets) took 350-370 ms in traced runs,
    # counted as latency of every frame waiting behind it. Its objects so far are
    # frozen and its collector is off for the window (frames are freed by
    # reference counting); what pauses remain and how late its loop runs is reported
    gc.collect()
    gc.freeze()
    gc.disable()
    if client_nice:
        # the instrument's timestamps first: a frame that arrived waits less for
        # the client to be scheduled (its children, started already, keep theirs)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, client_nice)
        except OSError:
            pass
    results["client_nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    results["client_gc"], results["client_lag"] = [], []
    gc.callbacks.append(_gc_timer(results["client_gc"]))
    lag_probe = asyncio.ensure_future(_loop_lag(results["client_lag"]))
    measuring[0] = True
    results["tree"] = with_children(results["pids"])
    go.set()
    start.set()
    # the load starts from nothing: its first seconds (four fresh ingest
    # processes' first full collections, cold caches) are reported apart
    await asyncio.sleep(warmup)
    results["cpu0"] = cpu_seconds(results["tree"])
    results["load0"] = os.getloadavg()[0]
    results["client0"], results["machine0"] = self_cpu(), machine_busy()
    results["others0"] = cpu_by_name(("redis-server", "postgres"))
    results["t0"] = time.time()
    await asyncio.sleep(seconds + 2)
    while not done.is_set():  # ingest may lag behind schedule on a busy machine: wait for it
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    results["cpu1"] = cpu_seconds(results["tree"])
    results["load1"] = os.getloadavg()[0]
    results["client1"], results["machine1"] = self_cpu(), machine_busy()
    results["others1"] = cpu_by_name(("redis-server", "postgres"))
    results["connected"] = len(ready)
    results["t1"] = time.time()
    lag_probe.cancel()
    results["gc_was_enabled"] = gc.isenabled()
    gc.enable()
    if TRACE:
        lag_task.cancel()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    warm_ingest, warm_visitor = [], []
    for now, i, raw in received:
        frame = json.loads(raw)
        if frame.get("event") not in ("message.created", "conversation.created"):
            continue
        msg = frame["message"]
        if records is not None:
            records.append(["rcv", frame.get("id"), i, now])
        if msg["channel"] == "api":
            stamp = datetime.fromisoformat(frame["at"]).timestamp()
            (ingest_lat if stamp >= results["t0"] else warm_ingest).append(now - stamp)
        elif msg["channel"] == "chat" and msg["text"].startswith("v "):
            stamp = float(msg["text"].split()[1])
            (visitor_lat if stamp >= results["t0"] else warm_visitor).append(now - stamp)
    results["ingest"] = ingest_lat
    results["visitor"] = visitor_lat
    results["warm_ingest"], results["warm_visitor"] = warm_ingest, warm_visitor


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0, help="ingested messages per second")
    parser.add_argument("--visitor-rate", type=float, default=20.0, help="visitor messages per second (all visitors)")
    parser.add_argument("--seconds", type=float, default=15.0, help="the measured window, after --warmup")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the measured window "
                        "(the load starts from nothing in fresh processes); their figures are printed apart")
    parser.add_argument("--settle", type=float, default=2.0, help="at least this long after connecting, then "
                        "until the agents' sockets are quiet for 1 s")
    parser.add_argument("--deflate", action=argparse.BooleanOptionalAction, default=False,
                        help="permessage-deflate on the sockets (off as deployed; --no-deflate, the default, "
                        "is accepted for the commands of earlier runs)")
    parser.add_argument("--profile", default="", help="a directory: run the ASGI processes under cProfile")
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn --ws implementation (websockets-sansio "
                        "as deployed; auto, websockets)")
    parser.add_argument("--ingest-procs", type=int, default=4, help="processes sharing the ingest rate")
    parser.add_argument("--client-nice", type=int, default=-10, help="the bench client's scheduling priority "
                        "during the window (the ASGI, ingest and PostgreSQL processes keep 0); 0: unchanged")
    parser.add_argument("--trace", default="", help="a directory: per-stage timestamps, GC pauses, loop lags "
                        "and machine samples (bench/_rttrace.py; analyse with bench/_rttrace_report.py)")
    parser.add_argument("--chat-ingest-processes", type=int, default=None,
                        help="CHAT_INGEST_PROCESSES of the ASGI processes (visitor messages in worker processes)")
    args = parser.parse_args()

    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_db", ROOT / "bench" / "_db.py")
    bench_db = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_db)
    ensure_database = bench_db.ensure_database

    global TRACE
    if args.trace:
        TRACE = os.environ["RT_TRACE_DIR"] = str(Path(args.trace).resolve())
        trace_module().start(TRACE, "client")
    if args.chat_ingest_processes is not None:
        os.environ["CHAT_INGEST_PROCESSES"] = str(args.chat_ingest_processes)
    ensure_database(DB_URL)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    global VISITORS
    VISITORS = args.visitors
    cookies, api_ids, chat_uuid, visitor_tokens = setup(args.agents)
    from helpdesk.models import User

    agent_pks = [User.objects.get(username=f"bench-agent-{i}").pk for i in range(args.agents)]
    from django.db import connection, connections

    vacuum = vacuum_database(connection)
    connections.close_all()

    logs = [open(ROOT / "var" / f"bench-rt-{n}.log", "wb") for n in (0, 1)]
    ports = [free_port(), free_port()]
    servers = [start_server(p, log, deflate=args.deflate, ws=args.ws, profile=args.profile)
               for p, log in zip(ports, logs)]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        import httpx

        for base in bases:
            for _ in range(200):
                try:
                    httpx.get(base + "/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        start = ctx.Event()
        workers = [ctx.Process(target=ingest_worker, args=(api_ids, args.rate / args.ingest_procs,
                                                            args.warmup + args.seconds,
                                                            i / args.rate, start, out, args.warmup))
                   for i in range(args.ingest_procs)]
        for w in workers:
            w.start()
        sampler = None
        if TRACE:
            import subprocess

            sampler = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_rttrace.py"), "sample", TRACE,
                                        DB_URL.replace("postgres://", "postgresql://")], cwd=ROOT)
        results = {"pids": [srv.pid for srv in servers]}
        class Done:
            @staticmethod
            def is_set():
                return not any(w.is_alive() for w in workers)

        try:  # the client shares the machine with what it measures: the leaner its loop, the better
            import uvloop
            loop_factory = uvloop.new_event_loop
        except ImportError:
            loop_factory = None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run_clients(bases, cookies, chat_uuid, visitor_tokens, args.visitor_rate, args.seconds,
                                   start, results, Done, settle=args.settle, client_nice=args.client_nice,
                                   warmup=args.warmup))
        parts = [out.get(timeout=300) for _ in workers]
        stats = {"sent": sum(p["sent"] for p in parts), "elapsed": max(p["elapsed"] for p in parts),
                 "late": sum(p["late"] for p in parts), "cpu": sum(p["cpu"] for p in parts),
                 "pg_cpu": sum(p["pg_cpu"] for p in parts)}
        for w in workers:
            w.join(30)
        if sampler is not None:
            sampler.terminate()
            sampler.wait(10)
            (Path(TRACE) / "meta.json").write_text(json.dumps({
                "t0": results.get("t0"), "t1": results.get("t1"), "ports": ports,
                "pids": results["pids"], "agents": agent_pks}))
            time.sleep(0.6)
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait(10)
        try:
            import redis

            redis.Redis.from_url(os.environ["REDIS_URL"]).delete("celery")  # tasks nobody consumed
        except Exception:
            pass

    ing, vis = results.get("ingest", []), results.get("visitor", [])
    workers = int(os.environ.get("CHAT_INGEST_PROCESSES") or 0)
    print(f"two uvicorn processes (--ws {args.ws}, permessage-deflate {'on' if args.deflate else 'off'}, "
          f"visitor messages ingested in {f'{workers} worker processes each' if workers else 'threads'}, "
          f"CONN_MAX_AGE {os.environ.get('CONN_MAX_AGE', '0')}), "
          f"Redis pub/sub layer, PostgreSQL; {args.agents} agent + {args.visitors} visitor "
          f"sockets ({results.get('connected')} connected), {TEAMS} teams, visitors {args.visitor_rate:g} msg/s; "
          f"the connection storm took {results.get('storm', 0):.1f} s to settle")
    print(vacuum)
    print(f"ingested {stats['sent']} messages in {stats['elapsed']:.1f}s = {stats['sent'] / stats['elapsed']:.0f}/s "
          f"(target {args.rate:.0f}/s, {stats['late']} more than 0.5 s behind schedule)")
    frames = len(ing) + len(vis)
    cpu = results.get("cpu1", 0) - results.get("cpu0", 0)
    print(f"machine load average {results.get('load0', 0):.1f} -> {results.get('load1', 0):.1f} "
          f"({os.cpu_count()} CPUs, shared); ASGI processes (with their ingest workers) used {cpu:.1f} CPU-s "
          f"for {frames} measured deliveries "
          f"= {cpu * 1000 / max(frames, 1):.2f} CPU-ms per delivery (incl. visitor ingest, pings)")
    busy = results["machine1"][0] - results["machine0"][0]
    window = (results["machine1"][1] - results["machine0"][1]) / (os.cpu_count() or 1)
    others = {k: results["others1"][k] - results["others0"][k] for k in results["others0"]}
    print(f"CPU over the {window:.1f} s measured window: machine {busy / window:.0%} of one core busy "
          f"({os.cpu_count()} cores); ASGI {cpu / window:.0%}, ingest workers {stats['cpu'] / window:.0%}, "
          f"bench client {(results['client1'] - results['client0']) / window:.0%}, "
          f"PostgreSQL {(others['postgres'] + stats['pg_cpu']) / window:.0%} (all databases; "
          f"{stats['pg_cpu'] / window:.0%} the ingest workers' backends), Redis {others['redis-server'] / window:.0%}")
    cgc, lag = results.get("client_gc", []), results.get("client_lag", [])
    gens = sorted({g for _, g in cgc})
    cgc = [d for d, _ in cgc]
    collector = "on" if results.get("gc_was_enabled") else "off"
    print(f"bench client (the instrument) during the window: nice {results.get('client_nice')}, collector {collector}, "
          f"{len(cgc)} GC pauses (generations {gens}, "
          f"max {max(cgc or [0]) * 1000:.1f} ms), "
          f"5 ms timer late p50 {pct(lag, .5) * 1000:.1f} / p99 {pct(lag, .99) * 1000:.1f} / "
          f"max {max(lag or [0]) * 1000:.1f} ms")
    print(f"ingest commit -> agent socket: {len(ing)} deliveries, p50 {pct(ing, .5) * 1000:.1f} ms, "
          f"p99 {pct(ing, .99) * 1000:.1f} ms, max {max(ing or [0]) * 1000:.1f} ms")
    print(f"visitor message -> agent socket: {len(vis)} deliveries, p50 {pct(vis, .5) * 1000:.1f} ms, "
          f"p99 {pct(vis, .99) * 1000:.1f} ms, max {max(vis or [0]) * 1000:.1f} ms")
    if args.warmup:
        wi, wv = results.get("warm_ingest", []), results.get("warm_visitor", [])
        print(f"(not in the figures above) the first {args.warmup:g} s of load: commit -> agent {len(wi)} deliveries, "
              f"p50 {pct(wi, .5) * 1000:.1f} / p99 {pct(wi, .99) * 1000:.1f} / max {max(wi or [0]) * 1000:.1f} ms; "
              f"visitor -> agent {len(wv)} deliveries, p50 {pct(wv, .5) * 1000:.1f} / "
              f"p99 {pct(wv, .99) * 1000:.1f} / max {max(wv or [0]) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
