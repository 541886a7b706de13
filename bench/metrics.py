"""Benchmark of the KPI engine on PostgreSQL (database tl_bench_metrics unless --database).

1. Bulk-loads N conversations with M messages each (SQL generate_series: customers,
   conversations, messages and the ConversationEvents the services would write:
   created, message_in/out, assigned, resolved; 10 % reopened and re-resolved)
   spread over the last 365 days; reply and resolution times are heavy-tailed with
   microsecond timestamps, so percentiles have real work to do.
2. Times `manage.py recompute_metrics` (engine.recompute_all): full rebuild of facts and rollups.
3. Times the dashboard page and GET /api/v1/metrics/ for R 90-day ranges (server time
   measured around the Django test client, no network), p50/p95: "cold" is the first
   request of a range (the result cache has nothing: every figure is computed), "warm"
   the second.

    .venv/bin/python bench/metrics.py --conversations 100000 --messages 10
    .venv/bin/python bench/metrics.py --reuse                  # keep the loaded data, recompute, time
    .venv/bin/python bench/metrics.py --reuse --skip-recompute --only dashboard

The issue's target size is 1,000,000 conversations / 10,000,000 messages
(`--conversations 1000000`); the figures printed say which size was measured.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds email.py: keep it off sys.path so it does not shadow the standard library
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
from bench._db import ensure_database  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")


def pct(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def load(n: int, m: int) -> None:
    from django.db import connection

    from channels_app.models import Channel
    from conversations.models import Team
    from helpdesk.models import User

    teams = [Team.objects.get_or_create(name=f"Team {i}")[0].pk for i in range(4)]
    agents = []
    for i in range(20):
        u, _ = User.objects.get_or_create(username=f"bench-agent{i}", defaults={"email": f"agent{i}@bench.test"})
        agents.append(u.pk)
    kinds = ["email", "chat", "whatsapp", "sms"]
    chans = [Channel.objects.get_or_create(kind=k, name=f"bench {k}")[0].pk for k in kinds]
    customers = max(1, n // 3)
    pairs = max(1, m // 2)
    PAIR = 6 * 3600  # seconds between the starts of two customer turns
    t0 = time.monotonic()
    with connection.cursor() as c:
        c.execute("SELECT coalesce(max(id), 0) FROM customers_customer")
        c.execute(f"""
            INSERT INTO customers_customer (name, company, attributes, language, first_seen_at, last_seen_at,
                                            last_inbound_kind, created_at, updated_at)
            SELECT 'Customer ' || g, '', '{{}}', '', now() - interval '400 days', now(), '', now(), now()
            FROM generate_series(1, {customers}) g""")
        c.execute("SELECT min(id) FROM customers_customer")
        cmin = c.fetchone()[0]
        # realistic spread (percentiles must not be trivially cheap): u(n, salt) is a deterministic
        # uniform [0, 1) per conversation (and per message pair), so one formula can be used twice
        u = "((hashint8extended(({key})::bigint, {salt}) & 4294967295) / 4294967296.0)"
        c.execute(f"""
            CREATE TEMP TABLE bench_conv AS
            SELECT g AS n,
                   {cmin} + (g % {customers}) AS customer_id,
                   now() - interval '3 days' - ({u.format(key="g", salt=1)} * interval '365 days') AS started,
                   (ARRAY{chans})[1 + g % 4] AS channel_id,
                   (ARRAY{kinds!r})[1 + g % 4] AS kind,
                   (ARRAY{teams})[1 + (g / 7) % 4] AS team_id,
                   (ARRAY{agents})[1 + (g / 3) % 20] AS agent_id,
                   (g % 10 = 0) AS reopened,
                   -- first resolution after the last message pair: 5 min .. ~2 days, heavy-tailed
                   interval '1 second' * ({pairs} * {PAIR} + 300 - ln(1 - {u.format(key="g", salt=2)}) * 14400)
                       AS resolve_after
            FROM generate_series(1, {n}) g""".replace("ARRAY['", "ARRAY['").replace("[\"", "['"))
        c.execute(f"""
            INSERT INTO conversations_conversation (customer_id, subject, status, priority, assignee_id, team_id,
                origin_channel_id, origin_kind, last_inbound_kind, last_message_preview, reply_token,
                message_count, created_at, updated_at, first_inbound_at, resolved_at, last_message_at)
            SELECT customer_id, 'Question ' || n, 'resolved', 'normal', agent_id, team_id, channel_id, kind, kind, '',
                   md5(random()::text || n), {m}, started, now(), started,
                   started + resolve_after, started + interval '1 second' * {pairs * PAIR}
            FROM bench_conv ORDER BY n""")
        c.execute("CREATE TEMP TABLE bench_map AS SELECT b.*, c.id AS conv_id FROM bench_conv b "
                  "JOIN conversations_conversation c ON c.reply_token IS NOT NULL AND c.subject = 'Question ' || b.n")
        c.execute("CREATE INDEX ON bench_map (conv_id)")
        # messages in pairs j = 0 .. m/2-1: the customer writes at j*PAIR + up to 10 min, the agent replies
        # 20 s .. hours later (exponential, mean 30 min, microsecond timestamps: nearly all values distinct)
        key = "n::bigint * 1000 + j"
        c.execute(f"""
            INSERT INTO conversations_message (conversation_id, direction, channel_id, channel_kind, author_type,
                author_user_id, author_name, automated, body_text, body_html, subject, recipient, delivery_status,
                delivery_error, delivery_attempts, meta, created_at)
            SELECT conv_id, CASE WHEN d = 0 THEN 'inbound' ELSE 'outbound' END, channel_id, kind,
                   CASE WHEN d = 0 THEN 'customer' ELSE 'agent' END,
                   CASE WHEN d = 0 THEN NULL ELSE agent_id END, '', false, 'message ' || (2 * j + d), '', '', '',
                   CASE WHEN d = 0 THEN '' ELSE 'sent' END, '', 0, '{{}}',
                   started + interval '1 second' * (j * {PAIR} + {u.format(key=key, salt=3)} * 600
                       + d * (20 + least(-ln(1 - {u.format(key=key, salt=4)}) * 1800, {PAIR} - 700)))
            FROM bench_map, generate_series(0, {pairs - 1}) j, (VALUES (0), (1)) v(d)""")
        c.execute("""
            INSERT INTO conversations_conversationevent (conversation_id, kind, at, actor_type, actor_user_id,
                                                         message_id, data)
            SELECT conversation_id, CASE WHEN direction = 'inbound' THEN 'message_in' ELSE 'message_out' END,
                   created_at, author_type, author_user_id, id,
                   jsonb_build_object('channel', channel_kind, 'automated', false)
            FROM conversations_message""")
        c.execute("""
            INSERT INTO conversations_conversationevent (conversation_id, kind, at, actor_type, data)
            SELECT conv_id, 'created', started, 'customer', jsonb_build_object('channel', kind) FROM bench_map""")
        c.execute("""
            INSERT INTO conversations_conversationevent (conversation_id, kind, at, actor_type, actor_user_id, data)
            SELECT conv_id, 'assigned', started + interval '1 minute', 'agent', agent_id,
                   jsonb_build_object('assignee', agent_id) FROM bench_map""")
        c.execute("""
            INSERT INTO conversations_conversationevent (conversation_id, kind, at, actor_type, data)
            SELECT conv_id, 'resolved', started + resolve_after, 'agent', '{}'::jsonb
            FROM bench_map WHERE reopened
            UNION ALL
            SELECT conv_id, 'reopened', started + resolve_after + interval '30 minutes', 'agent', '{}'::jsonb
            FROM bench_map WHERE reopened
            UNION ALL
            SELECT conv_id, 'resolved', started + resolve_after + CASE WHEN reopened THEN interval '2 hours'
                   ELSE interval '0' END, 'agent', '{}'::jsonb
            FROM bench_map""")
        # a few survey answers and orders for the survey/CLTV figures
        c.execute("""
            INSERT INTO metrics_surveyinvitation (conversation_id, customer_id, kind, channel_kind, agent_id, team_id,
                token, invited_at, score, comment, answered_at, language)
            SELECT conv_id, customer_id, 'csat', kind, agent_id, team_id, md5(random()::text || n),
                   started + interval '1 day', CASE WHEN n % 3 = 0 THEN NULL ELSE 1 + n % 5 END,
                   CASE WHEN n % 50 = 0 THEN 'comment ' || n ELSE '' END,
                   CASE WHEN n % 3 = 0 THEN NULL ELSE started + interval '2 days' END, ''
            FROM bench_map WHERE n % 4 = 0""")
        c.execute("""
            INSERT INTO customers_order (customer_id, external_id, amount, currency, placed_at, created_at)
            SELECT customer_id, 'bench-' || n, (n % 200) + 0.99, 'USD', started + interval '10 days', now()
            FROM bench_map WHERE n % 5 = 0""")
        c.execute("VACUUM ANALYZE")  # visibility map: index-only scans, as autovacuum would give
    print(f"loaded {n:,} conversations, {n * m:,} messages in {time.monotonic() - t0:.0f}s", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=10, help="messages per conversation")
    parser.add_argument("--requests", type=int, default=12, help="90-day ranges (30 days apart) per target")
    parser.add_argument("--reuse", action="store_true", help="keep the loaded data of a previous run")
    parser.add_argument("--skip-recompute", action="store_true", help="only time the requests (with --reuse)")
    parser.add_argument("--only", default="", help="time only the targets whose name contains this")
    parser.add_argument("--load-only", action="store_true", help="load the data and stop (no recompute, no requests)")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/tl_bench_metrics")
    args = parser.parse_args()
    ensure_database(args.database, fresh=not args.reuse)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from conversations.models import Conversation, Message
    from metrics import engine

    from django.conf import settings

    # server time of the views only: plain static storage (no collectstatic manifest needed)
    settings.STORAGES = {**settings.STORAGES,
                         "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    call_command("migrate", verbosity=0)
    if not args.reuse or not Conversation.objects.exists():
        load(args.conversations, args.messages)
    n_conv = Conversation.objects.count()
    with connection.cursor() as c:
        c.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'conversations_message'")
        n_msg = c.fetchone()[0] or Message.objects.count()
    print(f"size: {n_conv:,} conversations, ~{n_msg:,} messages", flush=True)
    if args.load_only:
        return

    if args.skip_recompute:
        return run_requests(args)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.monotonic()
    engine.recompute_all()
    took = time.monotonic() - t0
    print(f"full recompute: {took:.1f}s ({n_conv / took:,.0f} conversations/s; "
          f"linear extrapolation to 1,000,000: {1_000_000 / (n_conv / took) / 60:.1f} min)", flush=True)
    with connection.cursor() as c:
        c.execute("ANALYZE")
    run_requests(args)


def run_requests(args):
    """Per target and 90-day range: the first request with the result cache on but empty
    (cold: it computes every figure), then a second one (warm: from the cache). The data
    version is bumped first, so nothing of an earlier run is served."""
    from django.conf import settings
    from django.test import Client
    from django.utils import timezone

    from helpdesk.models import User
    from metrics import resultcache

    manager, _ = User.objects.get_or_create(username="bench-manager", defaults={"role": "manager"})
    client = Client()
    client.force_login(manager)
    today = timezone.localdate()
    ranges = [(today - timezone.timedelta(days=89 + k * 30), today - timezone.timedelta(days=k * 30))
              for k in range(args.requests)]
    targets = [
        ("dashboard", lambda a, b: f"/dashboard/?from={a}&to={b}"),
        ("api metrics (whole)", lambda a, b: f"/api/v1/metrics/?from={a}&to={b}"),
        ("api metrics group_by=day", lambda a, b: f"/api/v1/metrics/?from={a}&to={b}&group_by=day"),
        ("api metrics group_by=agent", lambda a, b: f"/api/v1/metrics/?from={a}&to={b}&group_by=agent"),
        ("api metrics group_by=channel", lambda a, b: f"/api/v1/metrics/?from={a}&to={b}&group_by=channel"),
    ]
    if args.only:
        targets = [t for t in targets if args.only in t[0]]
    settings.METRICS_CACHE_SECONDS = 600
    resultcache.bump()
    for name, url in targets:
        # process warm-up (imports, templates, connections) on a range outside the timed ones
        client.get(url(today - timezone.timedelta(days=89 + 30 * args.requests), today - timezone.timedelta(
            days=30 * args.requests)), secure=True)
        times = {"cold": [], "warm": []}
        for a, b in ranges:
            for mode in ("cold", "warm"):
                t = time.monotonic()
                r = client.get(url(a, b), secure=True)
                times[mode].append(time.monotonic() - t)
                assert r.status_code == 200, (name, r.status_code)
        for mode, values in times.items():
            print(f"{mode} {name:30s} {len(values)} 90-day ranges: p50 {pct(values, .5) * 1000:7.1f} ms  "
                  f"p95 {pct(values, .95) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms", flush=True)


if __name__ == "__main__":
    main()
