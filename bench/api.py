"""REST API benchmark (issue 8): 1M conversations in PostgreSQL, 8 concurrent clients.

    .venv/bin/python bench/api.py --seed --conversations 1000000   # seed once (SQL generate_series)
    .venv/bin/python bench/api.py --duration 20                    # measure

Database tl_bench_api (override with BENCH_DATABASE_URL); seeding reuses
bench/inbox.py's SQL seeder (INSERT ... SELECT generate_series, indexes
rebuilt after the load). The app runs under uvicorn (helpdesk.asgi, 2 worker
processes, DEBUG off, persistent DB connections) on a free loopback port with
Redis db 8 as cache/broker/channel layer; 8 client threads with keep-alive
connections send token-authenticated requests for --duration seconds per
scenario. Prints p50/p95/p99 and requests/s per scenario. Target: reads p95 < 50 ms.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# python puts this script's folder first on sys.path; bench/email.py would shadow the stdlib there
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_bench_api")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")

import importlib.util  # noqa: E402

# bench/inbox.py's seeder (it sets DATABASE_URL from BENCH_DATABASE_URL); loaded by path because
# putting bench/ on sys.path would shadow stdlib modules (bench/email.py)
_spec = importlib.util.spec_from_file_location("bench_inbox", ROOT / "bench" / "inbox.py")
seeder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, interface: str = "asgi") -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": seeder.DB_URL, "REDIS_URL": REDIS_URL, "DEBUG": "0",
           "SECRET_KEY": "bench-only-key-0123456789abcdef0123456789abcdef", "ALLOWED_HOSTS": "127.0.0.1",
           "SECURE_SSL_REDIRECT": "0", "CONN_MAX_AGE": "600", "API_RATE_LIMIT": "100000000/min",
           "LOG_LEVEL": "WARNING", "CACHE_KEY_PREFIX": "tlbenchapi", "CHANNEL_LAYER_PREFIX": "tlbenchapi"}
    app = "helpdesk.asgi:application" if interface == "asgi" else "helpdesk.wsgi:application"
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", app, "--interface", "asgi3" if interface == "asgi" else "wsgi",
                             "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--no-access-log",
                             "--log-level", "warning"], cwd=ROOT, env=env, start_new_session=True)
    import httpx

    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503):
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_server(proc)
    raise SystemExit("server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def run_scenario(name: str, base: str, token: str, make_request, clients: int, duration: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = {"n": 0, "sample": ""}
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def worker(seed: int):
        rnd = random.Random(seed)
        local, bad, sample = [], 0, ""
        with httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=30) as client:
            while time.perf_counter() < stop_at:
                method, url, body = make_request(rnd)
                t0 = time.perf_counter()
                resp = client.request(method, url, json=body)
                elapsed = time.perf_counter() - t0
                if resp.status_code >= 300:
                    bad += 1
                    sample = f"{resp.status_code} {url} {resp.text[:200]}"
                local.append(elapsed)
        with lock:
            latencies.extend(local)
            errors["n"] += bad
            errors["sample"] = errors["sample"] or sample

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    result = {"name": name, "requests": len(latencies), "rps": len(latencies) / wall, "p50": q[49] * 1000,
              "p95": q[94] * 1000, "p99": q[98] * 1000, "errors": errors["n"], "sample": errors["sample"]}
    print(f"{name:<48} {result['requests']:>7} req {result['rps']:>8.1f} req/s  p50 {result['p50']:>6.1f} ms  "
          f"p95 {result['p95']:>6.1f} ms  p99 {result['p99']:>6.1f} ms  errors {result['errors']}"
          + (f"  ({errors['sample']})" if errors["n"] else ""), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", action="store_true", help="(re)create and seed the database")
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--messages-per", type=int, default=2)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--interface", choices=["asgi", "wsgi", "both"], default="both",
                        help="asgi: helpdesk.asgi as `manage.py serve` runs it (Django gives every request a "
                             "fresh thread, so a fresh DB connection); wsgi: helpdesk.wsgi on uvicorn's "
                             "thread pool (persistent connections), how an API-only node can be deployed")
    args = parser.parse_args()

    seeder.ensure_database()
    seeder.setup_django()
    if args.seed:
        seeder.migrate()
        seeder.seed(args.conversations, args.messages_per)
    from django.db import connection

    from channels_app.models import Channel
    from conversations.models import Conversation, Team
    from helpdesk.models import User
    from helpdesk.tokens import token_create

    n_conv = Conversation.objects.count()
    max_id = Conversation.objects.order_by("-id").values_list("id", flat=True).first()
    if not n_conv:
        raise SystemExit("empty database: run with --seed first")
    if not Channel.objects.filter(kind="api", name="Bench api").exists():
        Channel.objects.create(kind="api", name="Bench api")
    admin = User.objects.get(username="benchadmin")
    agent = User.objects.get(username="agent1")
    admin_token = token_create(user=admin, name="bench")[1]
    agent_token = token_create(user=agent, name="bench")[1]
    team = Team.objects.get(name="Billing")
    agent_team = agent.teams.first()
    connection.close()
    print(f"database: {seeder.DB_URL.rsplit('/', 1)[1]}, {n_conv} conversations; "
          f"{args.clients} clients, {args.workers} uvicorn workers, {args.duration:.0f}s per scenario", flush=True)

    def conv_id(rnd):
        return rnd.randint(1, max_id)

    lists = [
        "/api/v1/conversations/?status=open",
        f"/api/v1/conversations/?status=open&team={team.pk}",
        f"/api/v1/conversations/?status=open,pending&team={team.pk}&priority=high",
        "/api/v1/conversations/?status=resolved&channel=email",
        f"/api/v1/conversations/?assignee={agent.pk}&status=open",
        "/api/v1/conversations/?created_after=2026-01-01T00:00:00Z&page_size=50",
        "/api/v1/conversations/?ordering=-updated_at&status=open",
    ]
    scenarios = [
        ("conversations list, filters (admin)", admin_token, lambda r: ("GET", r.choice(lists), None)),
        ("conversations list, filters (agent, team-scoped)", agent_token,
         lambda r: ("GET", r.choice(lists).replace(f"team={team.pk}", f"team={agent_team.pk}"), None)),
        ("conversation messages (admin)", admin_token,
         lambda r: ("GET", f"/api/v1/conversations/{conv_id(r)}/messages/", None)),
        ("conversation detail (admin)", admin_token,
         lambda r: ("GET", f"/api/v1/conversations/{conv_id(r)}/", None)),
        ("post a reply (admin, api channel)", admin_token,
         lambda r: ("POST", f"/api/v1/conversations/{conv_id(r)}/messages/",
                    {"text": "Benchmark reply", "channel": "api"})),
    ]
    try:
        for interface in (["asgi", "wsgi"] if args.interface == "both" else [args.interface]):
            port = free_port()
            proc = start_server(port, args.workers, interface)
            base = f"http://127.0.0.1:{port}"
            print(f"--- uvicorn --interface {interface}, {args.workers} workers", flush=True)
            try:
                # warm-up: connections, caches, plans
                run_scenario("warm-up", base, admin_token, scenarios[0][2], args.clients, 3)
                for name, token, make in scenarios:
                    run_scenario(name, base, token, make, args.clients, args.duration)
            finally:
                stop_server(proc)
    finally:
        try:
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()  # our own db 8: queued tasks and cache
        except Exception as exc:  # noqa: BLE001
            print(f"(could not flush {REDIS_URL}: {exc})")


if __name__ == "__main__":
    main()
