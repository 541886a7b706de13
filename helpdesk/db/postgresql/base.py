"""Django's PostgreSQL backend (psycopg2), with transactions that can begin
with their first statement instead of a round trip of their own.

psycopg2 sends BEGIN as a separate round trip before the first statement of a
transaction. For a block entered with helpdesk.db.transactions.atomic() (the
outermost one), this backend leaves psycopg2 in autocommit mode and sends
`BEGIN;` in front of the block's first statement (one simple-query message,
one round trip); COMMIT and ROLLBACK are then sent by this backend (none when
no statement ran). transaction.atomic() and everything else: unchanged.

Raw cursors of the connection get the prefix too (the connection's
cursor_factory); executemany, COPY, callproc and named cursors send BEGIN on
its own first (named cursors are holdable then: psycopg2 believes it is in
autocommit, as Django's backend does outside transactions). psycopg2's own
transaction handling never sees these transactions: code that needs it
(commit() or named cursors on the raw connection) must not run inside one.
"""
from __future__ import annotations

from django.db.backends.postgresql import base as pg_base
from django.db.backends.utils import debug_transaction

try:
    import psycopg2
    from psycopg2 import extensions as pg_ext
except ImportError:  # pragma: no cover - psycopg 3 installed instead: the stock backend
    psycopg2 = None


class _Lazy:
    """Per raw connection: whether a BEGIN is owed to the next statement."""

    __slots__ = ("pending", "active")

    def __init__(self):
        self.pending = False  # BEGIN not sent yet
        self.active = False  # a transaction of this backend's own (psycopg2 left in autocommit)


if psycopg2 is not None:

    def _prefixed(query, conn):
        if isinstance(query, bytes):
            return b"BEGIN;" + query
        if isinstance(query, str):
            return "BEGIN;" + query
        return "BEGIN;" + query.as_string(conn)  # psycopg2.sql.Composable

    def _cursor_class(lazy: _Lazy):
        class LazyBeginCursor(pg_ext.cursor):
            _lazy = lazy

            def _send_begin(self):
                lazy = self._lazy
                if lazy.pending:
                    lazy.pending = False
                    try:
                        with self.connection.cursor() as cur:
                            cur.execute("BEGIN")
                    except BaseException:
                        lazy.pending = True
                        raise

            def execute(self, query, vars=None):
                lazy = self._lazy
                if not lazy.pending:
                    return super().execute(query, vars)
                if self.name is not None:  # a named cursor: DECLARE cannot follow BEGIN in one message
                    self._send_begin()
                    return super().execute(query, vars)
                lazy.pending = False
                try:
                    return super().execute(_prefixed(query, self.connection), vars)
                finally:
                    if self.connection.info.transaction_status == pg_ext.TRANSACTION_STATUS_IDLE:
                        lazy.pending = True  # nothing reached the server (or it failed before BEGIN)

            def executemany(self, query, vars_list):
                self._send_begin()
                return super().executemany(query, vars_list)

            def callproc(self, procname, parameters=None):
                self._send_begin()
                return super().callproc(procname, parameters)

            def copy_expert(self, sql, file, size=8192):
                self._send_begin()
                return super().copy_expert(sql, file, size)

            def copy_from(self, *args, **kwargs):
                self._send_begin()
                return super().copy_from(*args, **kwargs)

            def copy_to(self, *args, **kwargs):
                self._send_begin()
                return super().copy_to(*args, **kwargs)

        return LazyBeginCursor


class DatabaseWrapper(pg_base.DatabaseWrapper):
    # set by helpdesk.db.transactions.atomic: the next
    # transaction begins with its first statement
    begin_lazily = False

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if psycopg2 is not None and not pg_base.is_psycopg3:
            self._lazy = _Lazy()
            connection.cursor_factory = _cursor_class(self._lazy)
        return connection

    def _lazy_state(self) -> _Lazy | None:
        return getattr(self, "_lazy", None) if self.connection is not None else None

    def _set_autocommit(self, autocommit):
        lazy = self._lazy_state()
        if lazy is not None:
            if not autocommit and self.begin_lazily:
                self.begin_lazily = False
                lazy.active = lazy.pending = True
                if not self.connection.autocommit:
                    with self.wrap_database_errors:
                        self.connection.autocommit = True
                return
            lazy.active = lazy.pending = False
        super()._set_autocommit(autocommit)

    def _end(self, sql: str) -> None:
        lazy = self._lazy
        if lazy.pending:  # no statement ran: nothing to end
            return
        if self.connection.info.transaction_status != pg_ext.TRANSACTION_STATUS_IDLE:
            with self.wrap_database_errors, self.connection.cursor() as cursor:
                cursor.execute(sql)
        lazy.pending = True  # still out of autocommit (Django's view): the next statement begins anew

    def _commit(self):
        lazy = self._lazy_state()
        if lazy is None or not lazy.active:
            return super()._commit()
        with debug_transaction(self, "COMMIT"):
            self._end("COMMIT")

    def _rollback(self):
        lazy = self._lazy_state()
        if lazy is None or not lazy.active:
            return super()._rollback()
        with debug_transaction(self, "ROLLBACK"):
            self._end("ROLLBACK")
