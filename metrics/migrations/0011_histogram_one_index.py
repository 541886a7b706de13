from django.db import migrations

COLUMNS = "metric, dim, span, day, key, bucket"


def covering(apps, schema_editor):
    """PostgreSQL: the unique key's index includes `n`, so it serves the reads' index-only scans
    (the separate covering index is dropped)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER TABLE metrics_valuehistogram DROP CONSTRAINT histogram_unique_key")
    schema_editor.execute(f"ALTER TABLE metrics_valuehistogram ADD CONSTRAINT histogram_unique_key "
                          f"UNIQUE ({COLUMNS}) INCLUDE (n)")


def plain(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER TABLE metrics_valuehistogram DROP CONSTRAINT histogram_unique_key")
    schema_editor.execute(f"ALTER TABLE metrics_valuehistogram ADD CONSTRAINT histogram_unique_key UNIQUE ({COLUMNS})")


class Migration(migrations.Migration):

    dependencies = [
        ('metrics', '0010_weekly_rollup'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='valuehistogram',
            name='histogram_day_cover',
        ),
        migrations.RunPython(covering, plain),
    ]
