"""Daily counts of the survey invitations and answers (table `SurveyDay`), so the CSAT, NPS and
CES of a period sum a few hundred rows instead of reading every invitation of the period.

Per local day (settings.TIME_ZONE), survey kind, channel, agent and team:
- rows with a `score`: `answers`, how many answers dated on that day (answered_at) gave that score;
- the row without a score: `sent`, the invitations sent that day (invited_at), and `answered`,
  how many of those have a score.
Every day is counted on its day (span 1) and on its week (span 7, `day` the Monday), so a
long period reads whole weeks (`kpis.base.split_period`, as the rollups and histograms).

Upkeep is by recount, never by difference: a write of an invitation recounts the days it was
on and is on now (`refresh`: delete the days' rows, count the invitations of those days, then
the weeks' rows from the days' rows), under a transaction-scoped advisory lock per week on
PostgreSQL, taken before the counting statements so each of them sees every earlier writer's
committed rows. The ORM's signals call it for saves and deletes (cascades included); the bulk
importer, which writes with COPY, rebuilds at its end (`rebuild`, also part of the full
recompute). Counts are made in one time zone: `usable()` is False after TIME_ZONE changed until
`manage.py recompute_metrics` rebuilds them, and the readers then count the invitations.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from .kpis.base import split_period, time_key

STATE_KEY = "survey_days"
LOCK = 7_240_014  # pg_advisory_xact_lock: shared by refreshes (then one per week), exclusive by rebuild
DIMS = ("kind", "channel_kind", "agent_id", "team_id")
# fields of an invitation the counts depend on: saving only others (comment, message_id) recounts nothing
COUNTED = {"kind", "channel_kind", "agent", "agent_id", "team", "team_id", "invited_at", "score", "answered_at"}


def _tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def _state() -> dict | None:
    from .models import MetricsState

    return MetricsState.objects.filter(key=STATE_KEY).values_list("value", flat=True).first()


def usable() -> bool:
    """Whether the stored counts are in the current TIME_ZONE (no record: nothing was counted
    in another one, e.g. a new or flushed database)."""
    state = _state()
    return state is None or state.get("tz") == settings.TIME_ZONE


def _mark() -> None:
    from .models import MetricsState

    MetricsState.objects.update_or_create(key=STATE_KEY, defaults={"value": {"tz": settings.TIME_ZONE}})


def local_day(at: datetime | None) -> date | None:
    return None if at is None else at.astimezone(_tz()).date()


def _bounds(day: date) -> tuple[datetime, datetime]:
    tz = _tz()
    return (datetime.combine(day, time(0), tzinfo=tz), datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz))


# --------------------------------------------------------------------------- counting

def _count_days(days: list[date] | None) -> list:
    """SurveyDay rows (span 1) of the given local days (None: every day)."""
    from .models import SurveyDay, SurveyInvitation

    tz = _tz()
    rows = []

    def within(field):
        if days is None:
            return Q()
        q = Q()
        for d in days:
            lo, hi = _bounds(d)
            q |= Q(**{f"{field}__gte": lo, f"{field}__lt": hi})
        return q

    answers = (SurveyInvitation.objects.filter(within("answered_at"), score__isnull=False)
               .annotate(d=TruncDate("answered_at", tzinfo=tz)).values("d", *DIMS, "score")
               .annotate(n=Count("*")).order_by())
    for r in answers:
        rows.append(SurveyDay(span=1, day=r["d"], kind=r["kind"], channel_kind=r["channel_kind"],
                              agent_id=r["agent_id"], team_id=r["team_id"], score=r["score"], answers=r["n"]))
    sent = (SurveyInvitation.objects.filter(within("invited_at"))
            .annotate(d=TruncDate("invited_at", tzinfo=tz)).values("d", *DIMS)
            .annotate(sent=Count("*"), answered=Count("score")).order_by())
    for r in sent:
        rows.append(SurveyDay(span=1, day=r["d"], kind=r["kind"], channel_kind=r["channel_kind"],
                              agent_id=r["agent_id"], team_id=r["team_id"], score=None, sent=r["sent"],
                              answered=r["answered"]))
    return rows


def _weeks_from_days(days) -> list:
    """Week rows (span 7) summing the given day rows (of whole weeks)."""
    from .models import SurveyDay

    acc: dict = defaultdict(lambda: [0, 0, 0])
    for r in days:
        a = acc[(time_key(r.day, "week"), r.kind, r.channel_kind, r.agent_id, r.team_id, r.score)]
        a[0] += r.answers
        a[1] += r.sent
        a[2] += r.answered
    return [SurveyDay(span=7, day=k[0], kind=k[1], channel_kind=k[2], agent_id=k[3], team_id=k[4], score=k[5],
                      answers=a[0], sent=a[1], answered=a[2]) for k, a in acc.items()]


def refresh(days) -> None:
    """Recount the given local days (and their weeks), in the caller's transaction."""
    from .models import SurveyDay

    days = {d for d in days if d is not None}
    if not days or not usable():
        return
    weeks = sorted({time_key(d, "week") for d in days})
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", [LOCK])
                for w in weeks:  # sorted: one lock order
                    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK % 2 ** 31, w.toordinal()])
        SurveyDay.objects.filter(span=1, day__in=sorted(days)).delete()
        SurveyDay.objects.bulk_create(_count_days(sorted(days)), batch_size=2000)
        SurveyDay.objects.filter(span=7, day__in=weeks).delete()
        week_days = [d for w in weeks for d in (w + timedelta(days=i) for i in range(7))]
        SurveyDay.objects.bulk_create(_weeks_from_days(SurveyDay.objects.filter(span=1, day__in=week_days)),
                                      batch_size=2000)
        if _state() is None:
            _mark()


def rebuild() -> None:
    """Recount every day and week (the full recompute, the bulk importer, migration 0009)."""
    from .models import SurveyDay

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK])
        SurveyDay.objects.all().delete()
        # in day order: a period's rows on neighbouring pages
        days = sorted(_count_days(None), key=lambda r: r.day)
        SurveyDay.objects.bulk_create(days, batch_size=5000)
        SurveyDay.objects.bulk_create(sorted(_weeks_from_days(days), key=lambda r: r.day), batch_size=5000)
        _mark()


def snapshot() -> dict:
    """{(span, day, kind, channel, agent, team, score): (answers, sent, answered)} of non-zero rows (tests)."""
    from .models import SurveyDay

    out: dict = defaultdict(lambda: [0, 0, 0])
    for r in SurveyDay.objects.values_list("span", "day", *DIMS, "score", "answers", "sent", "answered"):
        a = out[r[:7]]
        for i in range(3):
            a[i] += r[7 + i]
    return {k: tuple(v) for k, v in out.items() if any(v)}


# --------------------------------------------------------------------------- reads

def rows(sel, what: str, by_day: bool):
    """The rows of the selection's period and filters: what="answers" gives dicts of
    kind, channel_kind, agent_id, team_id, score, n; what="sent" of kind, channel_kind, agent_id,
    team_id, sent, answered; by_day gives `day` (a day, or the Monday of a whole week that lies in
    one group of sel.group_by) and kind instead of the dimensions."""
    from .kpis.base import filter_dims
    from .models import SurveyDay

    days, weeks = split_period(sel.start, sel.end, sel.group_by if by_day else None)
    period = Q(span=1, day__in=days) if days else Q(pk__in=[])
    if weeks:
        period |= Q(span=7, day__in=weeks)
    qs = filter_dims(SurveyDay.objects.filter(period), sel, channel="channel_kind", agent="agent_id", team="team_id")
    # by day: the time groupings' rows, which need no dimension (they are filters, applied above)
    keys = ["day", "kind"] if by_day else list(DIMS)
    if what == "answers":
        return qs.filter(score__isnull=False).values(*keys, "score").annotate(n=Sum("answers")).order_by()
    return qs.filter(score__isnull=True).values(*keys).annotate(sent=Sum("sent"), answered=Sum("answered")).order_by()


# --------------------------------------------------------------------------- upkeep by signals

def connect_signals() -> None:
    """A save or delete of an invitation through the ORM (a cascade too) recounts its days,
    the ones it was on before a save included."""
    from django.db.models.signals import post_delete, post_save, pre_save

    from conversations.models import Team
    from helpdesk.models import User

    from .models import SurveyDay, SurveyInvitation

    def counted(update_fields) -> bool:
        return update_fields is None or bool(COUNTED & set(update_fields))

    def _before(instance, update_fields=None, **_kwargs):
        instance._survey_old_days = ()
        if instance.pk and counted(update_fields):
            old = SurveyInvitation.objects.filter(pk=instance.pk).values_list("invited_at", "answered_at").first()
            instance._survey_old_days = tuple(local_day(t) for t in old or ())

    def _after(instance, update_fields=None, **_kwargs):
        if counted(update_fields):
            refresh({local_day(instance.invited_at), local_day(instance.answered_at),
                     *getattr(instance, "_survey_old_days", ())})

    def _deleted(instance, **_kwargs):
        refresh({local_day(instance.invited_at), local_day(instance.answered_at)})

    def _forget(field):
        # on_delete=SET_NULL clears the invitations' agent/team with an UPDATE (no signals): the counts follow
        def run(instance, **_kwargs):
            SurveyDay.objects.filter(**{field: instance.pk}).update(**{field: None})
        return run

    pre_save.connect(_before, sender=SurveyInvitation, weak=False, dispatch_uid="metrics-survey-days-pre")
    post_save.connect(_after, sender=SurveyInvitation, weak=False, dispatch_uid="metrics-survey-days")
    post_delete.connect(_deleted, sender=SurveyInvitation, weak=False, dispatch_uid="metrics-survey-days-del")
    post_delete.connect(_forget("agent_id"), sender=User, weak=False, dispatch_uid="metrics-survey-days-user")
    post_delete.connect(_forget("team_id"), sender=Team, weak=False, dispatch_uid="metrics-survey-days-team")
