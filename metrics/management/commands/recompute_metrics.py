import time

from django.core.management.base import BaseCommand
from tqdm import tqdm

from conversations.models import Conversation
from metrics import engine


class Command(BaseCommand):
    help = "Rebuild every conversation fact and daily rollup from the event log (equals the incremental result)."

    def handle(self, *args, **options):
        total = Conversation.objects.count()
        started = time.monotonic()
        quiet = options.get("verbosity", 1) == 0
        with tqdm(total=total, unit="conv", desc="recompute", disable=quiet) as bar:
            n = engine.recompute_all(progress=lambda k, _stage: bar.update(k))
        self.stdout.write(f"recomputed {n} conversations in {time.monotonic() - started:.1f}s")
