"""Benchmark: inbound messages through conversations.services.ingest() on PostgreSQL.

Mix: 70% to existing open conversations, 20% new conversations of known
customers, 10% new customers. Prints messages/s and p50/p99 per message at
several table sizes (messages already stored), and the rate of bare one-row
INSERT transactions on the same database as the ceiling.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tl_bench_ingest \
    REDIS_URL=redis://127.0.0.1:6379/10 .venv/bin/python bench/ingest.py --levels 10000,1000000

With REDIS_URL set, after-commit work is what the web process really does in
production: realtime publish to Redis and task messages to the broker (no
worker consumes them during the run; the queue is purged at the end).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

# bench/email.py would shadow the standard library's email package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_bench_ingest")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from channels_app.models import Channel  # noqa: E402
from conversations import services  # noqa: E402
from conversations.inbound import InboundMessage  # noqa: E402


def pct(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def stored_messages() -> int:
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM conversations_message")
        return c.fetchone()[0]


def prefill(target: int, channel: Channel) -> None:
    """Bulk-load customers, phone identities, open conversations and messages with SQL
    until `target` messages are stored (10 messages per conversation)."""
    have = stored_messages()
    if have >= target:
        return
    need_convs = (target - have) // 10
    if need_convs <= 0:
        return
    print(f"  prefill: {need_convs:,} conversations / {need_convs * 10:,} messages ...", flush=True)
    t0 = time.monotonic()
    with connection.cursor() as c:
        c.execute("SELECT coalesce(max(id), 0) FROM customers_customer")
        base = c.fetchone()[0]
        c.execute("""
            INSERT INTO customers_customer (id, name, company, attributes, language, first_seen_at, last_seen_at,
                last_inbound_kind, created_at, updated_at)
            SELECT g, 'Bench ' || g, '', '{}', '', now() - interval '30 days', now(), 'whatsapp', now(), now()
            FROM generate_series(%s + 1, %s + %s) g""", [base, base, need_convs])
        c.execute("""
            INSERT INTO customers_identity (kind, value, verified, created_at, customer_id)
            SELECT 'whatsapp', '+1' || (2000000000 + g)::text, false, now(), g
            FROM generate_series(%s + 1, %s + %s) g""", [base, base, need_convs])
        c.execute("SELECT setval(pg_get_serial_sequence('customers_customer', 'id'), (SELECT max(id) FROM customers_customer))")
        c.execute("SELECT coalesce(max(id), 0) FROM conversations_conversation")
        cbase = c.fetchone()[0]
        c.execute("""
            INSERT INTO conversations_conversation (id, subject, status, priority, origin_kind, last_inbound_kind,
                last_message_preview, reply_token, message_count, created_at, updated_at, customer_id,
                origin_channel_id, last_inbound_channel_id, last_inbound_at, last_message_at, first_inbound_at,
                team_id)
            SELECT %s + (g - %s), 'Bench ' || g, 'open', 'normal', 'whatsapp', 'whatsapp', '', md5(g::text || 'x'),
                10, now() - interval '1 day', now(), g, %s, %s, now() - interval '1 hour', now() - interval '1 hour',
                now() - interval '1 day', NULL
            FROM generate_series(%s + 1, %s + %s) g""",
                  [cbase, base, channel.pk, channel.pk, base, base, need_convs])
        c.execute("SELECT setval(pg_get_serial_sequence('conversations_conversation', 'id'), "
                  "(SELECT max(id) FROM conversations_conversation))")
        c.execute("""
            INSERT INTO conversations_message (direction, channel_kind, author_type, author_name, automated,
                body_text, body_html, subject, recipient, delivery_status, delivery_error, delivery_attempts, meta,
                created_at, conversation_id, channel_id, external_id)
            SELECT CASE WHEN m %% 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'whatsapp',
                CASE WHEN m %% 2 = 0 THEN 'customer' ELSE 'agent' END, '', false,
                'bench message ' || m, '', '', '', '', '', 0, '{}',
                now() - interval '1 day' + m * interval '1 minute', c, %s, 'pre-' || c || '-' || m
            FROM generate_series(%s + 1, %s + %s) c, generate_series(1, 10) m""",
                  [channel.pk, cbase, cbase, need_convs])
        c.execute("ANALYZE")
    print(f"  prefill done in {time.monotonic() - t0:.0f}s; {stored_messages():,} messages stored", flush=True)


def open_customers(limit: int) -> list[str]:
    with connection.cursor() as c:
        c.execute("""SELECT i.value FROM customers_identity i
                     JOIN conversations_conversation v ON v.customer_id = i.customer_id AND v.status = 'open'
                     WHERE i.kind = 'whatsapp' ORDER BY random() LIMIT %s""", [limit])
        return [r[0] for r in c.fetchall()]


def run_mix(n: int, wa: Channel, api: Channel) -> tuple[float, list[float]]:
    existing = open_customers(max(n, 100))
    run = uuid.uuid4().hex[:8]
    latencies = []
    t_start = time.perf_counter()
    for i in range(n):
        r = i % 10
        if r < 7:  # existing open conversation
            msg = InboundMessage(channel=wa, external_id=f"{run}-{i}", identities=[("whatsapp", existing[i % len(existing)])],
                                 text="any news on my order?")
        elif r < 9:  # a known customer opens a new conversation
            msg = InboundMessage(channel=wa, external_id=f"{run}-{i}", identities=[("whatsapp", existing[-1 - i % len(existing)])],
                                 text="another question", new_conversation=True)
        else:  # a new customer
            msg = InboundMessage(channel=api, external_id=f"{run}-{i}", identities=[("email", f"new-{run}-{i}@bench.test")],
                                 text="hello, first time here", name="New Customer")
        t0 = time.perf_counter()
        services.ingest(msg)
        latencies.append(time.perf_counter() - t0)
    return n / (time.perf_counter() - t_start), latencies


def ceiling(n: int) -> float:
    with connection.cursor() as c:
        c.execute("CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial primary key, v text, at timestamptz default now())")
    t0 = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            with connection.cursor() as c:
                c.execute("INSERT INTO bench_ceiling (v) VALUES (%s)", [f"row {i}"])
    rate = n / (time.perf_counter() - t0)
    with connection.cursor() as c:
        c.execute("DROP TABLE bench_ceiling")
    return rate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="10000,1000000", help="stored-message levels to measure at")
    parser.add_argument("-n", type=int, default=5000, help="messages ingested per level")
    args = parser.parse_args()
    if not settings.IS_POSTGRES:
        sys.exit("bench/ingest.py needs PostgreSQL: set DATABASE_URL")
    call_command("migrate", verbosity=0)
    wa, _ = Channel.objects.get_or_create(kind="whatsapp", name="bench-wa")
    api, _ = Channel.objects.get_or_create(kind="api", name="bench-api")
    print(f"database: {connection.settings_dict['NAME']}  redis: {settings.REDIS_URL or 'no (eager tasks)'}")
    ceil = ceiling(args.n)
    print(f"ceiling: bare one-row INSERT transactions: {ceil:,.0f}/s")
    rates = []
    for level in [int(x) for x in args.levels.split(",")]:
        prefill(level, wa)
        run_mix(200, wa, api)  # warm-up
        rate, lat = run_mix(args.n, wa, api)
        rates.append(rate)
        print(f"level {stored_messages():>10,} stored: ingest {rate:,.0f} messages/s, "
              f"p50 {pct(lat, .5) * 1000:.2f} ms, p99 {pct(lat, .99) * 1000:.2f} ms, "
              f"{rate / ceil:.0%} of ceiling", flush=True)
    if len(rates) > 1:
        print(f"flatness: slowest/fastest = {min(rates) / max(rates):.0%}")
    if settings.REDIS_URL:
        from helpdesk.celery import app

        app.control.purge()


if __name__ == "__main__":
    main()
