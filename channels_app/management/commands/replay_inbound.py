from django.core.management.base import BaseCommand

from channels_app.models import EnvelopeStatus, InboundEnvelope
from channels_app.services import envelope_replay


class Command(BaseCommand):
    help = "Reprocess inbound envelopes that failed (or a given list of ids)."

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Envelope ids (default: every failed one)")
        parser.add_argument("--include-pending", action="store_true", help="Also replay pending envelopes")

    def handle(self, *args, **options):
        qs = InboundEnvelope.objects.all()
        if options["ids"]:
            qs = qs.filter(pk__in=options["ids"])
        else:
            states = [EnvelopeStatus.FAILED] + ([EnvelopeStatus.PENDING] if options["include_pending"] else [])
            qs = qs.filter(status__in=states)
        ok = failed = 0
        for envelope in qs.order_by("received_at").iterator():
            if envelope_replay(envelope):
                ok += 1
            else:
                failed += 1
                envelope.refresh_from_db()
                self.stderr.write(f"envelope {envelope.pk}: {envelope.error.strip().splitlines()[-1:] or ''}")
        self.stdout.write(f"replayed {ok}, still failing {failed}")
