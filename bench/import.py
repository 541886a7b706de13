"""Benchmark of the history import (metrics.importer) on PostgreSQL (database tl_bench_import).

Generates a JSON Lines file in API.md's import format (agents, customers,
conversations with M messages each plus assignment/resolution events, surveys,
orders), imports it through the same code as `manage.py import_history`
(services with original timestamps, one transaction per conversation, metrics
folded in batches), prints messages/s, then imports the same file again
(idempotent: nothing changes) and prints that time too.

    .venv/bin/python bench/import.py --conversations 5000 --messages 10
"""
from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/tl_bench_import")
    args = parser.parse_args()
    ensure_database(args.database, fresh=True)

    import django

    django.setup()
    from django.core.management import call_command

    from metrics import importer

    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        total = generate(path, args.conversations, args.messages)
        size = path.stat().st_size
        print(f"file: {args.conversations:,} conversations, {total:,} messages, {size / 1e6:.1f} MB", flush=True)
        for label in ("first import", "re-import (idempotent)"):
            t0 = time.monotonic()
            with path.open("rb") as fh:
                result = importer.run(fh)
            took = time.monotonic() - t0
            data = result.as_dict()
            print(f"{label}: {took:.1f}s, {data['messages'] / took if data['messages'] else 0:,.0f} messages/s "
                  f"({total / took:,.0f} file messages/s), created {data['created']}, errors {data['error_count']}",
                  flush=True)


if __name__ == "__main__":
    main()
