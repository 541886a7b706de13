"""GIN full-text indexes for inbox search (issue 6). PostgreSQL only: the
SQLite fallback searches with icontains and needs no index.

The expressions must stay identical to those in conversations/selectors.py
(FTS_* constants) or the planner will not use the indexes."""
from django.db import migrations

INDEXES = [
    ("conv_message_fts", "conversations_message",
     "to_tsvector('simple'::regconfig, coalesce(body_text, ''))"),
    ("conv_subject_fts", "conversations_conversation",
     "to_tsvector('simple'::regconfig, coalesce(subject, ''))"),
    ("customer_fts", "customers_customer",
     "to_tsvector('simple'::regconfig, coalesce(name, '') || ' ' || coalesce(company, ''))"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, table, expr in INDEXES:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (({expr}))")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _table, _expr in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_notification"),
        ("customers", "0002_initial"),
    ]

    operations = [migrations.RunPython(create, drop)]
