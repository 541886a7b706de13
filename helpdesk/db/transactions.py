"""transaction.atomic() whose transaction begins with its first statement.

On PostgreSQL with psycopg2 (helpdesk.db.postgresql) the outermost block
sends `BEGIN;` with its first statement instead of a BEGIN round trip of its
own; nested blocks, other databases and drivers get transaction.atomic().
For short hot-path transactions of ORM statements only (no raw psycopg2
commit/rollback, see helpdesk.db.postgresql.base).
"""
from __future__ import annotations

from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction


@contextmanager
def atomic(using: str | None = None, savepoint: bool = True):
    conn = connections[using or DEFAULT_DB_ALIAS]
    lazy = hasattr(conn, "begin_lazily") and not conn.in_atomic_block
    if lazy:
        conn.begin_lazily = True  # read (and reset) when the block turns autocommit off
    try:
        with transaction.atomic(using, savepoint=savepoint):
            yield
    finally:
        if lazy:
            conn.begin_lazily = False
