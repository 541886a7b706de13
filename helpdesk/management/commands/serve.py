"""Serve HTTP and WebSockets (ASGI, uvicorn), the SMTP listener and, without
Redis, the periodic tasks, in one process: the embedded default of `make run`."""
from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run Threadline (ASGI server + SMTP listener + scheduler) in one process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--smtp-port", type=int, default=2525, help="0 disables the SMTP listener")
        parser.add_argument("--workers", type=int, default=1)

    def handle(self, *args, host, port, smtp_port, workers, **options):
        import uvicorn

        smtp = None
        if smtp_port:
            try:
                from channels_app.adapters.email.smtp import start_listener

                smtp = start_listener(host=host, port=smtp_port)
                self.stdout.write(f"SMTP listener on {host}:{smtp_port}")
            except ImportError:
                self.stdout.write("SMTP listener not available")
        scheduler = None
        if settings.CELERY_TASK_ALWAYS_EAGER:
            from helpdesk.scheduler import EmbeddedScheduler

            scheduler = EmbeddedScheduler()
            scheduler.start()
        url = f"http://{host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"\nThreadline is running at {url}\n"))
        demo = get_user_model().objects.filter(username__in=["admin", "manager", "ana", "bob"]).exists()
        if demo:
            self.stdout.write("Demo logins (username / password):")
            for name in ("admin", "manager", "ana", "bob"):
                self.stdout.write(f"  {name:8} / threadline-{name}")
            self.stdout.write("")
        try:
            # the sans-I/O WebSocket protocol: ~8 % less CPU per frame than uvicorn's
            # default (websockets' legacy API) in bench/realtime.py; no deflate, as
            # deployed (docker-compose.yml): CPU per frame before bytes on the wire
            uvicorn.run("helpdesk.asgi:application", host=host, port=port, workers=workers,
                        log_level="info", lifespan="off", proxy_headers=True, ws="websockets-sansio",
                        ws_per_message_deflate=False)
        finally:
            if scheduler:
                scheduler.stop()
            if smtp:
                smtp.stop()
