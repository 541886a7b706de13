"""Benchmark of the history import (metrics.importer) on PostgreSQL (database tli_bench_import).

Generates a JSON Lines file in API.md's import format (agents, customers,
conversations with M messages each plus assignment/resolution events, surveys,
orders), imports it through the same code as `manage.py import_history`
(bulk path, metrics folded as --fold says), prints messages/s with the time
spent folding the KPIs shown apart, then imports the same file again
(idempotent: nothing changes) and prints that time and the peak RSS.

    .venv/bin/python bench/import.py --conversations 100000 --messages 10
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone as dt_tz
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds email.py: keep it off sys.path so it does not shadow the standard library
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
from bench._db import ensure_database  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")


def generate(path: Path, n: int, m: int) -> int:
    base = datetime(2026, 1, 1, tzinfo=dt_tz.utc)
    kinds = ["email", "chat", "whatsapp", "sms"]
    messages = 0
    with path.open("w") as fh:
        for a in range(10):
            fh.write(json.dumps({"type": "agent", "email": f"agent{a}@bench.test", "name": f"Agent {a}",
                                 "team": f"Team {a % 3}"}) + "\n")
        customers = max(1, n // 2)
        for c in range(customers):
            fh.write(json.dumps({"type": "customer", "external_id": f"c{c}", "name": f"Customer {c}",
                                 "identities": [{"kind": "email", "value": f"c{c}@bench.test"},
                                                {"kind": "phone", "value": f"+1555{c:07d}"}]}) + "\n")
        for t in range(n):
            start = base + timedelta(minutes=37 * t)
            kind = kinds[t % 4]
            agent = f"agent{t % 10}@bench.test"
            msgs = []
            for i in range(m):
                inbound = i % 2 == 0
                msg = {"external_id": f"m{t}-{i}", "direction": "inbound" if inbound else "outbound",
                       "channel": kind, "body": f"message {i} of {t}",
                       "created_at": (start + timedelta(minutes=7 * i)).isoformat()}
                if not inbound:
                    msg["author"] = agent
                msgs.append(msg)
            messages += m
            events = [{"type": "assigned", "agent": agent, "at": (start + timedelta(minutes=1)).isoformat()},
                      {"type": "resolved", "at": (start + timedelta(minutes=7 * m + 5)).isoformat()}]
            fh.write(json.dumps({"type": "conversation", "external_id": f"t{t}", "customer": f"c{t % customers}",
                                 "subject": f"Question {t}", "team": f"Team {t % 3}", "messages": msgs,
                                 "events": events}) + "\n")
            if t % 3 == 0:
                fh.write(json.dumps({"type": "survey", "external_id": f"s{t}", "conversation": f"t{t}", "kind": "csat",
                                     "channel": kind, "invited_at": (start + timedelta(hours=3)).isoformat(),
                                     "score": 1 + t % 5, "answered_at": (start + timedelta(hours=4)).isoformat()})
                         + "\n")
            if t % 4 == 0:
                fh.write(json.dumps({"type": "order", "external_id": f"o{t}", "customer": f"c{t % customers}",
                                     "amount": "19.90", "currency": "USD",
                                     "placed_at": (start + timedelta(days=2)).isoformat()}) + "\n")
    return messages


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--fold", default="auto", choices=["auto", "batch", "end", "none"],
                        help="how the KPIs are folded (metrics.importer.run)")
    parser.add_argument("--workers", type=int, default=2, help="processes (as manage.py import_history)")
    parser.add_argument("--per-object", action="store_true", help="the per-object service path instead of bulk")
    parser.add_argument("--no-copy", action="store_true", help="bulk_create instead of COPY")
    parser.add_argument("--file", help="keep the generated file here (reused when it exists)")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/tli_bench_import")
    args = parser.parse_args()
    ensure_database(args.database, fresh=True)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from metrics import engine, importer

    call_command("migrate", verbosity=0)
    folding = {"seconds": 0.0}
    for name in ("recompute_all", "flush"):
        original = getattr(engine, name)

        def timed(*a, _original=original, **kw):
            folding.setdefault("rss_before", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            t = time.monotonic()
            try:
                return _original(*a, **kw)
            finally:
                folding["seconds"] += time.monotonic() - t
        setattr(engine, name, timed)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "history.jsonl"
        t0 = time.monotonic()
        if args.file and path.exists():
            total = sum(len(json.loads(line).get("messages") or []) for line in path.open())
        else:
            total = generate(path, args.conversations, args.messages)
        size = path.stat().st_size
        print(f"file: {args.conversations:,} conversations, {total:,} messages, {size / 1e6:.1f} MB "
              f"({time.monotonic() - t0:.0f}s to write)", flush=True)
        for label in ("first import", "re-import (idempotent)"):
            folding["seconds"] = 0.0
            t0 = time.monotonic()
            with path.open("rb") as fh:
                result = importer.run(fh, fold=args.fold, bulk=not args.per_object,
                                      use_copy=False if args.no_copy else None, workers=args.workers)
            took = time.monotonic() - t0
            fold = folding["seconds"]
            data = result.as_dict()
            n = data["messages"]
            print(f"{label} (fold={args.fold}, workers={args.workers}): {took:.1f}s, {n / took if n else 0:,.0f} messages/s with KPIs folded "
                  f"(import {took - fold:.1f}s = {n / (took - fold) if n else 0:,.0f} messages/s, folding {fold:.1f}s), "
                  f"{total / took:,.0f} file messages/s; created {data['created']}, "
                  f"unchanged {data['unchanged']}, errors {data['error_count']}", flush=True)
            for err in data["errors"][:5]:
                print("  ", err)
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM conversations_message")
            stored = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM metrics_conversationfact")
            facts = cur.fetchone()[0]
        print(f"stored: {stored:,} messages, {facts:,} conversation facts; "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
              f"({folding.get('rss_before', 0):.0f} MB before the first fold) "
              f"(largest worker {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
