"""Inbox benchmark (issue 6): seed PostgreSQL fast in SQL, then time the views.

    .venv/bin/python bench/inbox.py --seed --conversations 1000000 --messages-per 10
    .venv/bin/python bench/inbox.py            # measure only (reuses the seeded database)

Database: tl_bench_inbox on 127.0.0.1 (override with BENCH_DATABASE_URL).
Seeding uses INSERT ... SELECT generate_series (no ORM, no Python loops over
rows); the non-primary indexes of the big tables are dropped for the load and
rebuilt afterwards. Timings are server time: the Django view called in-process
through the test client (URL resolution, middleware, queries, template
rendering), p50/p95 over --repeat runs after one warm-up run. Also printed:
the median CPU time of the Django process (unaffected by waiting for a core
on a busy machine) and the median wall time spent in SQL.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds scripts named like stdlib modules (bench/email.py): keep it off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_bench_inbox")
os.environ["DATABASE_URL"] = DB_URL
os.environ.setdefault("SECRET_KEY", "bench-only-key-0123456789abcdef0123456789abcdef")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")

WORDS = ("refund invoice card payment delivery parcel broken login password account order shipping "
         "address return exchange discount coupon charge subscription cancel upgrade plan warranty "
         "screen battery charger cable app crash error update email phone receipt tracking late missing "
         "damaged wrong size colour price bill bank transfer paypal voucher gift store pickup courier "
         "customs tax vat company contract renewal trial feature request bug report slow sync backup").split()


def ensure_database() -> None:
    import psycopg2

    base, name = DB_URL.rsplit("/", 1)
    conn = psycopg2.connect(base + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def setup_django():
    import django

    django.setup()
    from django.conf import settings

    # production settings, except static files need no collected manifest here
    settings.STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _drop_indexes(cur, table: str) -> list[str]:
    cur.execute("""SELECT i.indexname, i.indexdef FROM pg_indexes i
                   WHERE i.tablename = %s AND i.indexname NOT IN (
                     SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u'))""", (table,))
    rows = cur.fetchall()
    for name, _definition in rows:
        cur.execute(f'DROP INDEX IF EXISTS "{name}"')
    return [definition for _name, definition in rows]


def seed(n_conv: int, per: int) -> None:
    from django.db import connection

    from channels_app.models import Channel
    from conversations.models import Team
    from helpdesk.models import User

    t0 = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("TRUNCATE conversations_notification, conversations_readmarker, conversations_conversationevent, "
                    "conversations_attachment, conversations_message, conversations_conversation_tags, "
                    "conversations_threadkey, conversations_conversation, customers_identity, customers_order, "
                    "customers_mergesuggestion, customers_customermerge, metrics_surveyinvitation, "
                    "customers_customer CASCADE")
    teams = [Team.objects.get_or_create(name=n)[0] for n in ("Billing", "Tech", "Sales", "Returns")]
    agents = []
    for i in range(40):
        user, created = User.objects.get_or_create(username=f"agent{i}", defaults={"role": "agent",
                                                                                   "first_name": f"Agent{i}"})
        if created:
            user.set_password("pw")
            user.save()
        teams[i % 4].members.add(user)
        agents.append(user)
    admin, created = User.objects.get_or_create(username="benchadmin", defaults={"role": "admin"})
    kinds = ["email", "chat", "whatsapp", "sms", "phone", "messenger"]
    chans = []
    for i, kind in enumerate(kinds):
        ch = Channel.objects.filter(kind=kind, name=f"Bench {kind}").first() or Channel.objects.create(
            kind=kind, name=f"Bench {kind}", team=teams[i % 4])
        chans.append(ch)
    n_cust = max(1000, n_conv // 3)
    agent_ids = "ARRAY[" + ",".join(str(a.pk) for a in agents) + "]::bigint[]"
    team_ids = "ARRAY[" + ",".join(str(t.pk) for t in teams) + "]::bigint[]"
    chan_ids = "ARRAY[" + ",".join(str(c.pk) for c in chans) + "]::bigint[]"
    kind_arr = "ARRAY[" + ",".join(f"'{k}'" for k in kinds) + "]::text[]"
    words = "ARRAY[" + ",".join(f"'{w}'" for w in WORDS) + "]::text[]"
    nw = len(WORDS)

    def w(expr_seed: str) -> str:
        return f"({words})[1 + ((hashint8(({expr_seed})::bigint) & 2147483647) % {nw})]"

    with connection.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '512MB'")
        saved = {t: _drop_indexes(cur, t) for t in ("conversations_message", "conversations_conversation",
                                                    "conversations_conversationevent", "customers_customer")}
        print(f"seed: {n_cust} customers ...", flush=True)
        cur.execute(f"""
            INSERT INTO customers_customer (id, name, company, attributes, language, first_seen_at, last_seen_at,
                last_inbound_kind, created_at, updated_at)
            SELECT g, 'Customer ' || g || ' ' || {w('g')}, 'Company ' || (g % 5000), '{{}}'::jsonb, 'en',
                   now() - interval '3 years', now(), '', now() - interval '3 years', now()
            FROM generate_series(1, {n_cust}) g""")
        cur.execute(f"""INSERT INTO customers_identity (customer_id, kind, value, verified, created_at)
            SELECT g, 'email', 'customer' || g || '@example.org', true, now() FROM generate_series(1, {n_cust}) g""")
        print(f"seed: {n_conv} conversations ... ({time.perf_counter() - t0:.0f}s)", flush=True)
        # conversation g: newest have the highest ids; the newest 4% are open/pending/snoozed
        cur.execute(f"""
            INSERT INTO conversations_conversation (id, customer_id, subject, status, priority, assignee_id, team_id,
                origin_channel_id, origin_kind, last_inbound_channel_id, last_inbound_kind, last_inbound_at,
                last_message_at, last_message_preview, waiting_since, first_inbound_at, first_reply_at,
                snoozed_until, resolved_at, reply_token, message_count, created_at, updated_at)
            SELECT g, 1 + ((hashint8(g::bigint) & 2147483647) % {n_cust}),
                   'Question about ' || {w('g * 7')} || ' ' || {w('g * 13')},
                   CASE WHEN g > {n_conv} * 0.96 THEN (ARRAY['open','open','open','pending','snoozed'])[1 + g % 5]
                        ELSE 'resolved' END,
                   (ARRAY['low','normal','normal','normal','high','urgent'])[1 + (g / 7) % 6],
                   CASE WHEN g % 4 = 0 THEN NULL ELSE ({agent_ids})[1 + (g / 3) % 40] END,
                   ({team_ids})[1 + (g / 5) % 4],
                   ({chan_ids})[1 + g % 6], ({kind_arr})[1 + g % 6],
                   ({chan_ids})[1 + (g / 2) % 6], ({kind_arr})[1 + (g / 2) % 6], ts, ts,
                   'Latest message of conversation ' || g,
                   CASE WHEN g > {n_conv} * 0.96 AND g % 3 = 0 THEN ts END,
                   ts - interval '1 hour', ts - interval '30 minutes',
                   CASE WHEN g > {n_conv} * 0.96 AND g % 5 = 4 THEN now() + interval '1 day' END,
                   CASE WHEN g <= {n_conv} * 0.96 THEN ts + interval '1 hour' END,
                   md5(g::text), {per}, ts - interval '2 hours', ts
            FROM (SELECT g, now() - ({n_conv} - g) * interval '90 seconds' AS ts
                  FROM generate_series(1, {n_conv}) g) s""")
        print(f"seed: {n_conv * per} messages ... ({time.perf_counter() - t0:.0f}s)", flush=True)
        cur.execute(f"""
            INSERT INTO conversations_message (conversation_id, direction, channel_id, channel_kind, author_type,
                author_name, automated, body_text, body_html, subject, recipient, delivery_status, delivery_error,
                delivery_attempts, meta, created_at)
            SELECT c, CASE WHEN k % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                   ({chan_ids})[1 + (c + k / 4) % 6], ({kind_arr})[1 + (c + k / 4) % 6],
                   CASE WHEN k % 2 = 0 THEN 'customer' ELSE 'agent' END, 'Someone', false,
                   'Hello, my ' || {w('c * 31 + k')} || ' ' || {w('c * 17 + k * 3')} || ' is about order ord'
                     || (c * {per} + k) || ' and the ' || {w('c * 5 + k * 11')} || ' ' || {w('c + k * 29')},
                   '', '', '', CASE WHEN k % 2 = 0 THEN '' ELSE 'delivered' END, '', 0, '{{}}'::jsonb,
                   now() - ({n_conv} - c) * interval '90 seconds' - ({per} - k) * interval '1 minute'
            FROM generate_series(1, {n_conv}) c, generate_series(1, {per}) k""")
        print(f"seed: events ... ({time.perf_counter() - t0:.0f}s)", flush=True)
        cur.execute(f"""
            INSERT INTO conversations_conversationevent (conversation_id, kind, at, actor_type, data)
            SELECT id, 'created', created_at, 'customer', jsonb_build_object('channel', origin_kind)
            FROM conversations_conversation
            UNION ALL
            SELECT id, 'assigned', created_at + interval '5 minutes', 'automation',
                   jsonb_build_object('assignee', assignee_id, 'name', 'Agent')
            FROM conversations_conversation WHERE assignee_id IS NOT NULL
            UNION ALL
            SELECT id, 'channel_switched', last_message_at - interval '10 minutes', 'customer',
                   jsonb_build_object('from', origin_kind, 'to', last_inbound_kind)
            FROM conversations_conversation WHERE origin_kind <> last_inbound_kind
            UNION ALL
            SELECT id, 'resolved', resolved_at, 'agent', '{{}}'::jsonb
            FROM conversations_conversation WHERE resolved_at IS NOT NULL""")
        # one big conversation with 200 messages (+ their events)
        big = n_conv
        cur.execute(f"DELETE FROM conversations_message WHERE conversation_id = {big}")
        cur.execute(f"""
            INSERT INTO conversations_message (conversation_id, direction, channel_id, channel_kind, author_type,
                author_name, automated, body_text, body_html, subject, recipient, delivery_status, delivery_error,
                delivery_attempts, meta, created_at)
            SELECT {big}, CASE WHEN k % 3 = 0 THEN 'note' WHEN k % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
                   ({chan_ids})[1 + (k / 20) % 6], ({kind_arr})[1 + (k / 20) % 6],
                   CASE WHEN k % 2 = 0 THEN 'customer' ELSE 'agent' END, 'Someone', false,
                   'Message ' || k || ' of the long conversation about a ' || {w('k')}, '', '', '',
                   CASE WHEN k % 2 = 1 THEN 'delivered' ELSE '' END, '', 0, '{{}}'::jsonb,
                   now() - (200 - k) * interval '1 minute'
            FROM generate_series(1, 200) k""")
        cur.execute(f"""INSERT INTO conversations_conversationevent (conversation_id, kind, at, actor_type, message_id,
                data) SELECT conversation_id, CASE direction WHEN 'inbound' THEN 'message_in' WHEN 'note' THEN 'note'
                ELSE 'message_out' END, created_at, author_type, id, '{{}}'::jsonb
                FROM conversations_message WHERE conversation_id = {big}""")
        cur.execute(f"UPDATE conversations_conversation SET message_count = 200, status = 'open', "
                    f"assignee_id = {agents[0].pk}, team_id = {teams[0].pk} WHERE id = {big}")
        for table in ("customers_customer", "conversations_conversation", "conversations_message",
                      "conversations_conversationevent", "customers_identity"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        print(f"seed: rebuilding indexes ... ({time.perf_counter() - t0:.0f}s)", flush=True)
        for table, definitions in saved.items():
            for definition in definitions:
                t1 = time.perf_counter()
                cur.execute(definition)
                print(f"  {definition[:90]}  {time.perf_counter() - t1:.0f}s", flush=True)
        cur.execute("ANALYZE")
    print(f"seed: done in {time.perf_counter() - t0:.0f}s", flush=True)


def measure(repeat: int) -> None:
    from django.db import connection
    from django.test import Client

    from conversations.models import Conversation, Message
    from helpdesk.models import User

    with connection.cursor() as cur:
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'conversations_conversation'")
        n_conv = cur.fetchone()[0]
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = 'conversations_message'")
        n_msg = cur.fetchone()[0]
    print(f"dataset: ~{n_conv:,} conversations, ~{n_msg:,} messages (pg_class estimates)")
    agent = User.objects.get(username="agent0")
    admin = User.objects.get(username="benchadmin")
    team = agent.teams.first()
    big = Conversation.objects.order_by("-message_count", "-id").first()
    sample = Message.objects.filter(conversation_id=big.pk - 5000).order_by("id").first()
    order_token = sample.body_text.split("order ")[1].split()[0] if sample and "order " in sample.body_text else "x"
    cases = [
        ("agent", "inbox Mine", "/?view=mine"),
        ("agent", "inbox Unassigned", "/?view=unassigned"),
        ("agent", f"inbox team {team.name}", f"/?view=team-{team.pk}"),
        ("admin", "inbox All", "/?view=all"),
        ("agent", "inbox Snoozed", "/?view=snoozed"),
        ("agent", "inbox Resolved", "/?view=resolved"),
        ("admin", "inbox Resolved page 2 (cursor)", None),
        ("admin", "inbox All sorted by longest waiting", "/?view=all&sort=waiting"),
        ("admin", "combined filter (channel+priority+team+assignee=none)",
         f"/?view=all&channel=whatsapp&priority=high&team={team.pk}&assignee=none"),
        ("admin", "combined filter on resolved (email, urgent, created range)",
         "/?view=resolved&channel=email&priority=urgent&created_after=2025-01-01T00:00:00Z"),
        ("agent", f"conversation with {big.message_count} messages", f"/c/{big.pk}/"),
        ("admin", f"search order number ({order_token})", f"/?view=search&q={order_token}"),
        ("admin", "search customer email", "/?view=search&q=customer4242@example.org"),
        ("admin", "search two words (subject/customer/message)", "/?view=search&q=Customer+4242"),
        ("admin", "search a very common word (refund: ~6% of messages)", "/?view=search&q=refund"),
        ("agent", "search as an agent (team-restricted), common word", "/?view=search&q=refund"),
    ]
    clients = {"agent": Client(), "admin": Client()}
    clients["agent"].force_login(agent)
    clients["admin"].force_login(admin)
    import os as _os

    load = _os.getloadavg()[0]
    print(f"machine: {_os.cpu_count()} CPUs, load average {load:.1f} at start (shared with other jobs)")
    sql_time = [0.0]

    def timed(execute, sql, params, many, context):
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_time[0] += time.perf_counter() - t

    print(f"{'case':58} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'sql p50':>8}  status")
    for who, label, url in cases:
        client = clients[who]
        if url is None:
            first = client.get("/?view=resolved", secure=True)
            cursor = first.context["page"].next_cursor if first.context else None
            url = f"/?view=resolved&cursor={cursor}"
        times, cpu, sql = [], [], []
        status = None
        for i in range(repeat + 1):
            sql_time[0] = 0.0
            c0 = time.process_time()
            t0 = time.perf_counter()
            with connection.execute_wrapper(timed):
                response = client.get(url, secure=True)
            elapsed = (time.perf_counter() - t0) * 1000
            status = response.status_code
            if i:
                times.append(elapsed)
                cpu.append((time.process_time() - c0) * 1000)
                sql.append(sql_time[0] * 1000)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(f"{label[:58]:58} {statistics.median(times):8.1f} {p95:8.1f} {statistics.median(cpu):8.1f} "
              f"{statistics.median(sql):8.1f}  {status}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", action="store_true")
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--messages-per", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--no-measure", action="store_true")
    args = parser.parse_args()
    ensure_database()
    setup_django()
    if args.seed:
        migrate()
        seed(args.conversations, args.messages_per)
    if not args.no_measure:
        measure(args.repeat)


if __name__ == "__main__":
    main()
