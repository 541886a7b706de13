"""SLA notice task benchmark (issue 7): one run of metrics.sla_tasks.run() with
many open conversations.

    .venv/bin/python bench/sla.py --seed --open 100000
    .venv/bin/python bench/sla.py            # measure only (reuses the seeded database)

Database: tl_bench_sla on 127.0.0.1 (override with BENCH_DATABASE_URL). The
open conversations' first messages are spread evenly over the last 30 days
(about 2 per minute at 100k), priorities low/normal/high/urgent with
calendar-hour policies of 8 h/4 h/1 h/30 min first response and 3/2/1/1 days
resolution, one team with business hours. Printed: the median and worst wall
time of a steady-state run (notices already stored: what every 30 s costs) over
--repeat runs, the conversations it loaded, and PostgreSQL's plan of the
first-response window query.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_bench_sla")
os.environ.setdefault("SECRET_KEY", "bench-only-key-0123456789abcdef0123456789abcdef")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", action="store_true")
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from bench._db import ensure_database

    ensure_database(DB_URL, fresh=args.seed)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from metrics import sla_tasks
    from metrics.models import BusinessHours, SlaNotice, SlaPolicy

    if args.seed:
        call_command("migrate", verbosity=0, interactive=False)
        t0 = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute("""INSERT INTO conversations_team (name, assignment_mode, created_at) VALUES ('Billing', 'manual', now()), ('Tech', 'manual', now())
                           RETURNING id""")
            teams = [r[0] for r in cur.fetchall()]
            cur.execute("""INSERT INTO customers_customer (id, name, company, attributes, language, first_seen_at,
                               last_seen_at, last_inbound_kind, created_at, updated_at)
                           SELECT g, 'Customer ' || g, '', '{}'::jsonb, 'en', now(), now(), '', now(), now()
                           FROM generate_series(1, 1000) g""")
            cur.execute(f"""
                INSERT INTO conversations_conversation (customer_id, subject, status, priority, team_id,
                    origin_kind, last_inbound_kind, last_inbound_at, last_message_at, last_message_preview,
                    waiting_since, first_inbound_at, first_reply_at, reply_token, message_count, created_at,
                    updated_at)
                SELECT 1 + g % 1000, 'Question ' || g, (ARRAY['open','open','open','pending','snoozed'])[1 + g % 5],
                       (ARRAY['low','normal','high','urgent'])[1 + (g / 3) % 4], (ARRAY[{teams[0]}, {teams[1]}])[1 + g % 2],
                       'email', 'email', ts, ts, 'hello', ts, ts,
                       CASE WHEN g % 3 = 0 THEN ts + interval '20 minutes' END, md5(g::text), 1, ts, ts
                FROM (SELECT g, now() - (g * (30 * 86400.0 / {args.open})) * interval '1 second' AS ts
                      FROM generate_series(1, {args.open}) g) s""")
            # plus resolved history, as a real table has
            cur.execute(f"""
                INSERT INTO conversations_conversation (customer_id, subject, status, priority, origin_kind,
                    last_inbound_kind, last_message_at, last_message_preview, first_inbound_at, first_reply_at,
                    resolved_at, reply_token, message_count, created_at, updated_at)
                SELECT 1 + g % 1000, 'Old ' || g, 'resolved', 'normal', 'email', 'email', ts, 'bye', ts, ts, ts,
                       md5('r' || g::text), 1, ts, ts
                FROM (SELECT g, now() - interval '30 days' - g * interval '1 minute' AS ts
                      FROM generate_series(1, {args.open * 4}) g) s""")
            cur.execute("ANALYZE")
        for priority, frt, res in (("low", 8 * 3600, 3 * 86400), ("normal", 4 * 3600, 2 * 86400),
                                   ("high", 3600, 86400), ("urgent", 1800, 86400)):
            SlaPolicy.objects.create(priority=priority, first_response_seconds=frt, resolution_seconds=res)
        BusinessHours.objects.create(team_id=teams[1], timezone="Europe/Berlin")
        SlaPolicy.objects.filter(priority="low").update(business_hours=True)
        print(f"seeded {args.open} open + {args.open * 4} resolved conversations in {time.perf_counter() - t0:.0f}s")

    first = sla_tasks.run()
    print(f"first run published {first} notices (stored: {SlaNotice.objects.count()})")
    loaded = {}
    real = sla_tasks._candidates

    def counting(policy, kind, *a, **kw):
        rows = real(policy, kind, *a, **kw)
        loaded[(policy.priority, kind)] = len(rows)
        return rows

    sla_tasks._candidates = counting
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        sla_tasks.run()
        times.append(time.perf_counter() - t0)
    print(f"steady-state run: median {statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
          f"over {args.repeat} runs; conversations loaded per run: {sum(loaded.values())} {loaded}")
    from datetime import timedelta

    from django.utils import timezone

    from conversations.models import ACTIVE_STATUSES, Conversation

    now = timezone.now()
    qs = Conversation.objects.filter(priority="urgent", status__in=ACTIVE_STATUSES, first_reply_at__isnull=True,
                                     first_inbound_at__isnull=False,
                                     first_inbound_at__gte=now - timedelta(seconds=1800 + 3600),
                                     first_inbound_at__lte=now - timedelta(seconds=1800 - 360))
    print(qs.explain(analyze=True))


if __name__ == "__main__":
    main()
