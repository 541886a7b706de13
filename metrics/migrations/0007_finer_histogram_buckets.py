from django.db import migrations


def recount(apps, schema_editor):
    """THRESHOLDS went from 15 % to 5 % steps: recount the value histograms from the facts
    (metrics.histograms.rebuild; reads skip counts of other thresholds until then)."""
    from metrics import histograms

    histograms.rebuild(resplit=True)


class Migration(migrations.Migration):

    dependencies = [
        ("metrics", "0006_customer_links"),
    ]

    operations = [
        migrations.RunPython(recount, migrations.RunPython.noop),
    ]
