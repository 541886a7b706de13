"""SLA timers for the inbox and the live counters.

    from metrics.sla import due_times
    timers = due_times(conversation)   # dict, see below

`due_times` returns {"policy": SlaPolicy | None,
                     "first_response_due": datetime | None,  # None once answered or without target
                     "resolution_due": datetime | None,      # None once resolved or without target
                     "first_response_breached": bool, "resolution_breached": bool,
                     "warning": bool}   # a due time is less than SLA_WARNING_BEFORE away (20 % of its target)
Business-hours policies count only the team's business hours (metrics.businesshours).
`waiting_past_sla(qs=None)` returns the ids of active conversations past their
first-response target (the dashboard's "waiting past SLA" counter, usable as an inbox filter).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from conversations.models import ACTIVE_STATUSES, Conversation

from .businesshours import Schedule
from .models import BusinessHours, SlaPolicy

WARNING_SHARE = 0.2  # default of SLA_WARNING_BEFORE


def warning_seconds(target_seconds: int) -> float:
    """How long before a due time its warning starts (settings.SLA_WARNING_BEFORE:
    "20%" of the target, or a number of seconds, never more than the target)."""
    raw = str(getattr(settings, "SLA_WARNING_BEFORE", "") or "").strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100 * target_seconds
        elif raw:
            value = float(raw)
        else:
            value = WARNING_SHARE * target_seconds
    except ValueError:
        value = WARNING_SHARE * target_seconds
    return max(0.0, min(value, float(target_seconds)))


def _schedule(conversation) -> Schedule | None:
    bh = BusinessHours.objects.filter(team_id=conversation.team_id).first() if conversation.team_id else None
    return Schedule.from_model(bh) if bh else None


def _due(start: datetime, seconds: int, schedule: Schedule | None) -> datetime | None:
    if schedule is None:
        return start + timedelta(seconds=seconds)
    return schedule.add_seconds(start, seconds)


def due_times(conversation: Conversation, *, now: datetime | None = None, policies: dict | None = None,
              schedules: dict | None = None) -> dict:
    """SLA due times of one conversation (pass `policies`/`schedules` dicts to avoid queries in lists)."""
    now = now or timezone.now()
    if policies is None:
        policy = SlaPolicy.objects.filter(priority=conversation.priority, active=True).first()
    else:
        policy = policies.get(conversation.priority)
    result = {"policy": policy, "first_response_due": None, "resolution_due": None,
              "first_response_breached": False, "resolution_breached": False, "warning": False}
    if policy is None:
        return result
    if policy.business_hours:
        schedule = schedules.get(conversation.team_id) if schedules is not None else _schedule(conversation)
    else:
        schedule = None
    if policy.first_response_seconds and conversation.first_reply_at is None and conversation.first_inbound_at:
        due = _due(conversation.first_inbound_at, policy.first_response_seconds, schedule)
        result["first_response_due"] = due
        if due and now > due:
            result["first_response_breached"] = True
        elif due and (due - now).total_seconds() < warning_seconds(policy.first_response_seconds):
            result["warning"] = True
    if policy.resolution_seconds and conversation.status != "resolved":
        start = conversation.created_at
        due = _due(start, policy.resolution_seconds, schedule)
        result["resolution_due"] = due
        if due and now > due:
            result["resolution_breached"] = True
        elif due and (due - now).total_seconds() < warning_seconds(policy.resolution_seconds):
            result["warning"] = True
    return result


def waiting_past_sla(qs=None, *, now: datetime | None = None) -> list[int]:
    """Ids of active, unanswered conversations past their first-response target."""
    from .businesshours import schedules as load_schedules

    now = now or timezone.now()
    policies = {p.priority: p for p in SlaPolicy.objects.filter(active=True, first_response_seconds__isnull=False)}
    if not policies:
        return []
    qs = (qs if qs is not None else Conversation.objects.all()).filter(
        status__in=ACTIVE_STATUSES, first_reply_at__isnull=True, first_inbound_at__isnull=False)
    schedules = None
    out = []
    for priority, policy in policies.items():
        # calendar time >= business time, so the calendar bound pre-filters both kinds
        cands = qs.filter(priority=priority,
                          first_inbound_at__lt=now - timedelta(seconds=policy.first_response_seconds))
        if not policy.business_hours:
            out += list(cands.values_list("pk", flat=True)[:10000])
            continue
        if schedules is None:
            schedules = load_schedules()
        for conv in cands.only("pk", "priority", "team_id", "first_inbound_at", "first_reply_at", "status",
                               "created_at")[:10000]:
            if due_times(conv, now=now, policies=policies, schedules=schedules)["first_response_breached"]:
                out.append(conv.pk)
    return out


def start_window(due_lo: datetime, due_hi: datetime, seconds: int,
                 schedule: Schedule | None) -> tuple[datetime, datetime]:
    """Bounds (lo, hi) on a timer's start such that every start whose due time
    lies in [due_lo, due_hi] lies in [lo, hi] (a superset, for an indexed range
    query; callers check each candidate's exact due time). Due times grow with
    the start time, so the business-hours bounds are found by bisection."""
    if schedule is None:
        span = timedelta(seconds=seconds)
        return due_lo - span, due_hi - span
    return _earliest_start(due_lo, seconds, schedule), _latest_start(due_hi, seconds, schedule)


def _earliest_start(due_lo: datetime, seconds: int, schedule: Schedule) -> datetime:
    """A start no later than the first start whose business due time is >= due_lo."""
    from .businesshours import MAX_DAYS

    def due(start):
        return schedule.add_seconds(start, seconds)

    hi = due_lo - timedelta(seconds=seconds)  # business due >= calendar due: starts after it are due later
    lo = hi - timedelta(days=MAX_DAYS)
    if (d := due(lo)) is None or d >= due_lo:
        return lo
    # invariant: due(lo) < due_lo; the answer lies in (lo, hi]
    while (hi - lo).total_seconds() > 60:
        mid = lo + (hi - lo) / 2
        d = due(mid)
        if d is None or d >= due_lo:
            hi = mid
        else:
            lo = mid
    return lo


def _latest_start(due_hi: datetime, seconds: int, schedule: Schedule) -> datetime:
    """A start no earlier than the last start whose business due time is <= due_hi."""
    from .businesshours import MAX_DAYS

    def late(start):
        d = schedule.add_seconds(start, seconds)
        return d is None or d > due_hi

    hi = due_hi - timedelta(seconds=seconds)  # later starts are due after due_hi
    if not late(hi):
        return hi
    lo = hi - timedelta(days=MAX_DAYS)
    if late(lo):
        return lo
    # invariant: lo is on time, hi is late; the answer lies in [lo, hi)
    while (hi - lo).total_seconds() > 60:
        mid = lo + (hi - lo) / 2
        if late(mid):
            hi = mid
        else:
            lo = mid
    return hi
