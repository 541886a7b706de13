"""helpdesk.db.transactions.atomic on PostgreSQL (helpdesk.db.postgresql): the
transaction begins with its first statement (`BEGIN;<statement>`, one round
trip), and is otherwise the transaction transaction.atomic() would be."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, connections, transaction

from helpdesk.db import transactions as db_transactions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres_only")]


def _other_sees(name: str) -> bool:
    """Whether a second connection sees the group (i.e. it is committed)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM auth_group WHERE name = %s", [name])
            return cursor.fetchone()[0] == 1
    finally:
        other.close()


def test_begin_goes_with_the_first_statement_and_commits(wire_sql):
    with wire_sql() as sent:
        with db_transactions.atomic():
            Group.objects.create(name="a")
            assert connection.connection.info.transaction_status != 0  # in a transaction on the server
            assert not _other_sees("a")
            Group.objects.create(name="b")
    assert len(sent) == 3
    assert sent[0].startswith('BEGIN;INSERT INTO "auth_group"') and sent[1].startswith('INSERT INTO "auth_group"')
    assert sent[2] == "COMMIT"
    assert _other_sees("a") and _other_sees("b")
    assert connection.get_autocommit() and connection.connection.info.transaction_status == 0


def test_an_exception_rolls_back(wire_sql):
    with wire_sql() as sent, pytest.raises(ValueError), db_transactions.atomic():
        Group.objects.create(name="gone")
        raise ValueError
    assert sent[-1] == "ROLLBACK" and not Group.objects.filter(name="gone").exists()


def test_a_failing_first_statement_rolls_back_and_the_connection_carries_on(wire_sql):
    Group.objects.create(name="taken")
    with wire_sql() as sent, pytest.raises(IntegrityError), db_transactions.atomic():
        Group.objects.create(name="taken")
    assert sent[0].startswith("BEGIN;INSERT") and sent[-1] == "ROLLBACK"
    assert connection.connection.info.transaction_status == 0
    assert Group.objects.count() == 1


def test_no_statement_no_round_trip(wire_sql):
    with wire_sql() as sent, db_transactions.atomic():
        pass
    assert sent == []


def test_savepoints_and_named_cursors_inside():
    with db_transactions.atomic():
        Group.objects.create(name="kept")
        with pytest.raises(IntegrityError), transaction.atomic():
            Group.objects.create(name="kept")
        Group.objects.create(name="also")
        # a server-side cursor (chunked iterator) inside the transaction sees its rows
        assert sorted(g.name for g in Group.objects.all().iterator(chunk_size=1)) == ["also", "kept"]
        Group.objects.bulk_create([Group(name="x"), Group(name="y")])
    assert Group.objects.count() == 4


def test_nested_in_an_outer_transaction_it_is_a_savepoint(wire_sql):
    with transaction.atomic():
        Group.objects.create(name="outer")
        with wire_sql() as sent:
            with pytest.raises(ValueError), db_transactions.atomic():
                Group.objects.create(name="inner")
                raise ValueError
    assert sent[0].startswith("SAVEPOINT") and any(s.startswith("ROLLBACK TO SAVEPOINT") for s in sent)
    assert list(Group.objects.values_list("name", flat=True)) == ["outer"]


def test_on_commit_runs_after_the_commit():
    seen = []
    with db_transactions.atomic():
        Group.objects.create(name="hooked")
        transaction.on_commit(lambda: seen.append(_other_sees("hooked")))
        assert seen == []
    assert seen == [True]


def test_transaction_atomic_is_unchanged():
    with transaction.atomic():
        Group.objects.create(name="plain")
        assert connection.connection.autocommit is False  # psycopg2 runs this one
    assert Group.objects.filter(name="plain").exists()
