"""The Celery app. All periodic schedules are defined here, in one place.

Without REDIS_URL, tasks run eagerly in-process and `manage.py serve` runs the
same schedule in a background thread (see helpdesk/scheduler.py).
"""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")

app = Celery("helpdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["channels_app.adapters.chat"])  # chat/presence periodic tasks
app.autodiscover_tasks(["metrics"], related_name="sla_tasks")  # SLA warnings

# name -> (dotted task name, every N seconds)
PERIODIC_TASKS = {
    "wake-snoozed": ("conversations.tasks.wake_snoozed", 30),
    "requeue-outbox": ("conversations.tasks.requeue_stale_outbox", 60),
    "poll-imap": ("channels_app.tasks.poll_all_imap", 60),
    "inbound-stale-pending": ("channels_app.tasks.process_stale_pending", 60),
    "metrics-flush": ("metrics.tasks.periodic", 60),
    "chat-email-unseen": ("channels_app.adapters.chat.tasks.email_unseen_replies", 60),
    "presence-sweep": ("channels_app.adapters.chat.tasks.presence_sweep", 60),
    "retry-webhooks": ("helpdesk.tasks.retry_webhooks", 30),
    "sla-notices": ("metrics.sla_tasks.publish_sla_notices", 30),
}

app.conf.beat_schedule = {
    name: {"task": task, "schedule": float(every)} for name, (task, every) in PERIODIC_TASKS.items()
}
