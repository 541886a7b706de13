"""GIN full-text indexes for inbox search (issue 6). PostgreSQL only: the
SQLite fallback searches with icontains and needs no index.

The expressions must stay identical to those in conversations/selectors.py
(FTS_* constants) or the planner will not use the indexes."""
from django.db import migrations

# Message bodies get a stored generated tsvector column (unknown to the Django
# model, maintained by PostgreSQL on every insert/update): a recheck or a
# filter then reads it instead of re-parsing the text (about 20 µs a row).
MESSAGE_COLUMN = ("ALTER TABLE conversations_message ADD COLUMN IF NOT EXISTS search_tsv tsvector "
                  "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, coalesce(body_text, ''))) STORED")

INDEXES = [
    ("conv_message_fts", "conversations_message", "search_tsv"),
    ("conv_subject_fts", "conversations_conversation",
     "to_tsvector('simple'::regconfig, coalesce(subject, ''))"),
    ("customer_fts", "customers_customer",
     "to_tsvector('simple'::regconfig, coalesce(name, '') || ' ' || coalesce(company, ''))"),
]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(MESSAGE_COLUMN)
    for name, table, expr in INDEXES:
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (({expr}))")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, _table, _expr in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
    schema_editor.execute("ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_tsv")


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0003_notification"),
        ("customers", "0002_initial"),
    ]

    operations = [migrations.RunPython(create, drop)]
