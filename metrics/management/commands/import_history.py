from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from metrics import importer


class Command(BaseCommand):
    help = "Import history (API.md import format, JSON or JSON Lines) with its original timestamps."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--jsonl", action="store_true", help="Force JSON Lines (detected by default).")

    def handle(self, *args, file, jsonl, **options):
        try:
            stream = open(file, "rb")
        except OSError as exc:
            raise CommandError(str(exc)) from exc
        with stream, tqdm(unit="msg", desc="import", disable=options.get("verbosity", 1) == 0) as bar:
            result = importer.run(stream, jsonl=True if jsonl else None, progress=bar.update)
        data = result.as_dict()
        self.stdout.write(f"created: {data['created']}  unchanged: {data['unchanged']}  messages: {data['messages']}")
        for err in data["errors"][:200]:
            self.stderr.write(f"{err['position']}: {err.get('external_id') or ''} {err['errors']}")
        if data["errors"]:
            self.stderr.write(f"{len(data['errors'])} object(s) failed; the others were imported.")
