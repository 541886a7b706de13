"""Benchmark: signed Twilio SMS webhooks over HTTP into the ASGI server.

Two uvicorn worker processes (helpdesk.asgi:application) on PostgreSQL, a
`wrk` load generator on loopback sending Twilio-signed form posts (each a new
MessageSid, senders spread over many numbers) to /hooks/sms/<uuid>/. Then, in
the same run and the same way, a bare Django view that inserts one row
(bench/bare_asgi.py: same settings and middleware) as the stack's ceiling.
Prints requests/s, p50 and p99 of both and the ratio.
Target (issue #4): >= 60% of the ceiling with p99 < 50 ms.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tl_bench_hooks \
    REDIS_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/webhooks.py --duration 20 --connections 8

Needs `wrk` (apt-get install wrk). With REDIS_URL, after-commit work is what a
web process does in production (realtime publish, Celery task messages; no
worker consumes them during the run, and the Celery queue is purged at the end).
With a broker the SMS hook answers once the envelope is stored and verified and
queues the ingest (SmsAdapter.process_later); --inline also measures the
webhook with parse + ingest done in the request (channel setting process_inline).
"""
from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds scripts named like stdlib modules (email.py): never import from it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_URL = os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_bench_hooks")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdef0123456789")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
AUTH_TOKEN = "b3nchb3nchb3nchb3nchb3nchb3nch00"
ACCOUNT_SID = "AC" + "be" * 16

LUA = r"""
local lines = {}
local counter = 0
local thread_id = 0
local threads = 0
local path = os.getenv("BENCH_PATH")
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  tid = tonumber(tid or 1)
  local f = assert(io.open(os.getenv("BENCH_REQUESTS"), "r"))
  local n = 0
  for line in f:lines() do
    n = n + 1
    if n % tonumber(os.getenv("BENCH_THREADS")) == tid - 1 then
      local sig, body = line:match("^([^\t]+)\t(.*)$")
      lines[#lines + 1] = {sig, body}
    end
  end
  f:close()
end
function request()
  counter = counter + 1
  local item = lines[(counter - 1) % #lines + 1]
  return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded",
                                   ["X-Twilio-Signature"] = item[1]}, item[2])
end
function done(summary, latency, requests)
  io.write(string.format("JSON{\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"errors_status\":%d,\"errors_other\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_database() -> None:
    import psycopg2
    from urllib.parse import urlsplit

    parts = urlsplit(DB_URL)
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                            password=parts.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if not c.fetchone():
            c.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def server_env(port: int) -> dict:
    env = dict(os.environ)
    env.update({
        "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1,localhost", "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0", "SECURE_HSTS_SECONDS": "0",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        # 0: under ASGI each request runs in its own thread, so persistent
        # connections pile up (one per dead thread) until PostgreSQL refuses more
        "CONN_MAX_AGE": os.environ.get("CONN_MAX_AGE", "0"),
        "PYTHONPATH": str(ROOT),
    })
    env.pop("PYTEST_VERSION", None)
    return env


def start_server(app: str, port: int, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning", "--app-dir", str(ROOT)]
    proc = subprocess.Popen(cmd, env=server_env(port), cwd=str(ROOT), start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server {app} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except Exception:
            time.sleep(0.3)
    stop_server(proc)
    raise SystemExit(f"server {app} did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group of the uvicorn we started (its workers)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def make_requests(path_file: Path, url: str, count: int, senders: int) -> None:
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    run = "%08x" % random.getrandbits(32)
    with path_file.open("w") as f:
        for i in range(count):
            sid = f"SM{run}{i:024x}"
            params = {"ToCountry": "US", "SmsMessageSid": sid, "NumMedia": "0", "SmsSid": sid,
                      "SmsStatus": "received", "Body": f"Where is my order {i}?", "FromCountry": "US",
                      "To": "+14155550100", "NumSegments": "1", "MessageSid": sid, "AccountSid": ACCOUNT_SID,
                      "From": f"+1415{(5550000 + i % senders) % 10_000_000:07d}", "ApiVersion": "2010-04-01"}
            f.write(validator.compute_signature(url, params) + "\t" + urlencode(params) + "\n")


def run_wrk(port: int, path: str, requests_file: Path, duration: int, connections: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(LUA)
    env = dict(os.environ, BENCH_PATH=path, BENCH_REQUESTS=str(requests_file), BENCH_THREADS=str(threads))
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s",
                          "-s", lua.name, f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True,
                         check=True).stdout
    os.unlink(lua.name)
    line = next(ln for ln in out.splitlines() if ln.startswith("JSON"))
    data = json.loads(line[4:])
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def phase(name, app, path_for, args, requests_file_for) -> dict:
    port = free_port()
    proc = start_server(app, port, args.workers)
    try:
        path, url = path_for(port)
        req_file = requests_file_for(url)
        run_wrk(port, path, req_file, args.warmup, args.connections, args.threads)  # warm up, fill pools
        result = run_wrk(port, path, req_file, args.duration, args.connections, args.threads)
    finally:
        stop_server(proc)
    print(f"{name:<32} {result['rps']:8.0f} req/s   p50 {result['p50_us'] / 1000:6.1f} ms   "
          f"p99 {result['p99_us'] / 1000:6.1f} ms   non-2xx {result['errors_status']}  "
          f"socket errors {result['errors_other']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds measured per phase")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--senders", type=int, default=2000, help="distinct phone numbers writing")
    parser.add_argument("--requests", type=int, default=60000, help="distinct signed requests prepared")
    parser.add_argument("--inline", action="store_true",
                        help="also measure with the channel's process_inline (parse + ingest in the request)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    ensure_database()
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from channels_app.models import Channel

    channel = Channel.objects.filter(kind="sms", name="bench webhooks").first() or Channel(kind="sms",
                                                                                          name="bench webhooks")
    channel.set_config({"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": "+14155550100",
                        "process_inline": False})
    channel.save()
    print(f"database {settings.DATABASES['default']['NAME']}, redis {'yes' if os.environ.get('REDIS_URL') else 'no'}, "
          f"{args.workers} uvicorn workers, wrk {args.connections} connections, {args.duration}s per phase, "
          f"{os.cpu_count()} CPUs", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="tl-bench-hooks-"))

    def hook_requests(url):
        path = tmp / "hooks.txt"
        make_requests(path, url, args.requests, args.senders)
        return path

    def bare_requests(url):
        path = tmp / "bare.txt"
        make_requests(path, url, min(args.requests, 5000), args.senders)
        return path

    try:
        hooks = phase("signed Twilio SMS webhook", "helpdesk.asgi:application",
                      lambda port: (channel.webhook_path, f"http://127.0.0.1:{port}{channel.webhook_path}"),
                      args, hook_requests)
        bare = phase("bare view, one INSERT (ceiling)", "bench.bare_asgi:application",
                     lambda port: ("/bare/", f"http://127.0.0.1:{port}/bare/"), args, bare_requests)
        if args.inline:
            channel.settings["process_inline"] = True
            channel.save()
            inline = phase("same webhook, ingested inline", "helpdesk.asgi:application",
                           lambda port: (channel.webhook_path, f"http://127.0.0.1:{port}{channel.webhook_path}"),
                           args, hook_requests)
            channel.settings["process_inline"] = False
            channel.save()
            print(f"inline ingest: {inline['rps'] / bare['rps']:.0%} of the ceiling", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.environ.get("REDIS_URL"):
            try:
                import redis

                redis.Redis.from_url(os.environ["REDIS_URL"]).delete("celery")  # queued task messages only
            except Exception as exc:
                print(f"could not purge the Celery queue: {exc}")
    ratio = hooks["rps"] / bare["rps"] if bare["rps"] else 0
    ok = ratio >= 0.6 and hooks["p99_us"] < 50_000
    print(f"ratio {ratio:.0%} of the ceiling; p99 {hooks['p99_us'] / 1000:.1f} ms -> target "
          f"(>= 60% and p99 < 50 ms) {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
