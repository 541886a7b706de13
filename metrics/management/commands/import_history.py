import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from metrics import importer


class Command(BaseCommand):
    help = "Import history (API.md import format, JSON or JSON Lines) with its original timestamps."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--jsonl", action="store_true", help="Force JSON Lines (detected by default).")
        parser.add_argument("--fold", choices=importer.FOLDS, default="auto",
                            help="When the KPIs are folded: after every batch, once at the end (a full recompute), "
                                 "auto (the end when the import is large against the stored data), or none "
                                 "(left to the engine's periodic flush).")
        parser.add_argument("--workers", type=int, default=2,
                            help="Processes importing batches of conversations at once (PostgreSQL; default 2).")
        parser.add_argument("--per-object", action="store_true",
                            help="Write object by object through the services (slow; the bulk path's reference).")

    def handle(self, *args, file, jsonl, fold="auto", per_object=False, workers=2, **options):
        try:
            stream = open(file, "rb")
        except OSError as exc:
            raise CommandError(str(exc)) from exc
        started = time.monotonic()
        with stream, tqdm(unit="msg", desc="import", disable=options.get("verbosity", 1) == 0) as bar:
            result = importer.run(stream, jsonl=True if jsonl else None, progress=bar.update, fold=fold,
                                  bulk=not per_object, workers=workers)
        data = result.as_dict()
        took = time.monotonic() - started
        self.stdout.write(f"created: {data['created']}  unchanged: {data['unchanged']}  messages: {data['messages']} "
                          f"in {took:.1f}s (KPIs folded: {fold})")
        for err in data["errors"][:200]:
            self.stderr.write(f"{err['position']}: {err.get('external_id') or ''} {err['errors']}")
        if data["errors"]:
            self.stderr.write(f"{len(data['errors'])} object(s) failed; the others were imported.")
