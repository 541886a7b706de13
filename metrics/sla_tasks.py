"""SLA warnings and breaches pushed live to agents (issue #7).

`publish_sla_notices` runs every 30 s (helpdesk/celery.py). For each active
SLA policy it asks the database, through indexed range queries, only for the
active conversations whose first-response or resolution due time lies between
`now - SLA_BREACH_LOOKBACK` and `now + <warning window>`, computes their exact
due times (`metrics.sla.due_times`, business hours included) and announces

- `sla.warning` once a due time is less than SLA_WARNING_BEFORE away,
- `sla.breached` once it has passed (at most SLA_BREACH_LOOKBACK ago, so a
  scheduler that was down does not flood agents with old breaches),

through `conversations.realtime.publish_sla_warning` (the conversation's team,
assignee, `inbox` and `conversation.<id>` groups). Each (conversation, timer,
level, due time) is announced once: a `SlaNotice` row is inserted first and
only the run whose insert succeeds publishes, so concurrent runs never publish
twice; a new due time (priority changed, reopened) is a new notice.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import ACTIVE_STATUSES, Conversation

from . import sla
from .models import SlaNotice, SlaPolicy

log = logging.getLogger(__name__)

FIELDS = ("id", "priority", "team_id", "status", "first_inbound_at", "first_reply_at", "created_at")
KEEP_NOTICES = timedelta(days=1)  # notices older than the lookback plus this are deleted


def _candidates(policy, kind: str, now: datetime, lookback: timedelta, schedules: dict) -> list:
    """Active conversations of this policy's priority whose `kind` due time may be in the window."""
    if kind == "first_response":
        seconds, field = policy.first_response_seconds, "first_inbound_at"
        base = Conversation.objects.filter(priority=policy.priority, status__in=ACTIVE_STATUSES,
                                           first_reply_at__isnull=True, first_inbound_at__isnull=False)
    else:
        seconds, field = policy.resolution_seconds, "created_at"
        base = Conversation.objects.filter(priority=policy.priority, status__in=ACTIVE_STATUSES)
    if not seconds:
        return []
    due_lo = now - lookback
    due_hi = now + timedelta(seconds=sla.warning_seconds(seconds))
    groups = [(None, base.exclude(team_id__in=list(schedules)) if policy.business_hours and schedules else base)]
    if policy.business_hours:
        groups += [(schedule, base.filter(team_id=team_id)) for team_id, schedule in schedules.items()]
    rows = []
    for schedule, qs in groups:
        lo, hi = sla.start_window(due_lo, due_hi, seconds, schedule)
        rows += list(qs.filter(**{f"{field}__gte": lo, f"{field}__lte": hi}).order_by().only(*FIELDS))
    return rows


def due_notices(now: datetime | None = None) -> list[tuple[int, str, str, datetime]]:
    """(conversation id, kind, level, due_at) of every warning/breach due now, announced or not."""
    from .businesshours import schedules as load_schedules

    now = now or timezone.now()
    lookback = timedelta(seconds=getattr(settings, "SLA_BREACH_LOOKBACK", 3600))
    policies = {p.priority: p for p in SlaPolicy.objects.filter(active=True)}
    if not policies:
        return []
    schedules = load_schedules() if any(p.business_hours for p in policies.values()) else {}
    out = {}
    for policy in policies.values():
        for kind in ("first_response", "resolution"):
            for conv in _candidates(policy, kind, now, lookback, schedules):
                timers = sla.due_times(conv, now=now, policies=policies, schedules=schedules)
                due = timers[f"{kind}_due"]
                if due is None or due < now - lookback:
                    continue
                seconds = policy.first_response_seconds if kind == "first_response" else policy.resolution_seconds
                if now > due:
                    level = SlaNotice.Level.BREACHED
                elif (due - now).total_seconds() < sla.warning_seconds(seconds):
                    level = SlaNotice.Level.WARNING
                else:
                    continue
                out[(conv.pk, kind)] = (conv.pk, kind, level, due)
    return list(out.values())


def _publish(conversation_id: int, kind: str, level: str, due_at: datetime) -> None:
    from conversations import realtime

    realtime.publish_sla_warning(conversation_id, kind=kind, due_at=due_at, breached=level == "breached")


def run(now: datetime | None = None) -> int:
    """Announce the warnings and breaches not announced yet. Returns how many were published."""
    now = now or timezone.now()
    notices = due_notices(now)
    if notices:
        known = set(SlaNotice.objects.filter(conversation_id__in={n[0] for n in notices})
                    .values_list("conversation_id", "kind", "level", "due_at"))
        notices = [n for n in notices if n not in known]
    published = 0
    for conversation_id, kind, level, due_at in sorted(notices):
        try:
            with transaction.atomic():
                # another run holding the same key makes this wait, then fail: only one publishes
                SlaNotice.objects.create(conversation_id=conversation_id, kind=kind, level=level, due_at=due_at,
                                         created_at=now)
        except IntegrityError:
            continue
        try:
            _publish(conversation_id, kind, level, due_at)
        except Exception:  # best effort, like every realtime push
            log.exception("SLA %s publish failed for conversation %s", level, conversation_id)
        published += 1
    lookback = timedelta(seconds=getattr(settings, "SLA_BREACH_LOOKBACK", 3600))
    SlaNotice.objects.filter(due_at__lt=now - lookback - KEEP_NOTICES).delete()
    return published


@shared_task(name="metrics.sla_tasks.publish_sla_notices")
def publish_sla_notices() -> int:
    return run()
