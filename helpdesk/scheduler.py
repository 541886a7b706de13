"""Runs the Celery beat schedule in a thread for the one-process default
(no REDIS_URL, eager Celery). With Redis, `celery beat` does this instead."""
from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections
from django.utils.module_loading import import_string

from .celery import PERIODIC_TASKS

log = logging.getLogger(__name__)


class EmbeddedScheduler(threading.Thread):
    def __init__(self, tick: float = 1.0):
        super().__init__(name="threadline-scheduler", daemon=True)
        self.tick = tick
        self._stop = threading.Event()
        self._due = {name: time.monotonic() + 5 for name in PERIODIC_TASKS}

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            for name, (task_path, every) in PERIODIC_TASKS.items():
                if now < self._due[name]:
                    continue
                self._due[name] = now + every
                try:
                    close_old_connections()
                    import_string(task_path).apply()
                except Exception:
                    log.exception("periodic task %s failed", name)
                finally:
                    close_old_connections()
