"""`manage.py run_smtp --host H --port P`: the inbound SMTP listener on its own."""
from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Receive inbound mail for the email channels over SMTP."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=2525)

    def handle(self, *args, host, port, **options):
        from channels_app.adapters.email.smtp import start_listener

        listener = start_listener(host=host, port=port)
        self.stdout.write(self.style.SUCCESS(f"SMTP listener on {host}:{listener.port}"))
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(1):
                pass
        finally:
            listener.stop()
            self.stdout.write("SMTP listener stopped")
