"""Surveys and KPI storage. The KPI engine (facts, rollups) extends this module."""
from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def _survey_token() -> str:
    return secrets.token_urlsafe(16)


class SurveyKind(models.TextChoices):
    CSAT = "csat", _("CSAT")
    NPS = "nps", _("NPS")
    CES = "ces", _("CES")


class SurveyInvitation(models.Model):
    """One survey sent for a conversation; answered when `score` is set."""

    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE,
                                     related_name="surveys")
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="surveys")
    kind = models.CharField(max_length=8, choices=SurveyKind.choices, default=SurveyKind.CSAT)
    channel_kind = models.CharField(max_length=20, blank=True)
    agent = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    team = models.ForeignKey("conversations.Team", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    token = models.CharField(max_length=40, unique=True, default=_survey_token)
    external_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    invited_at = models.DateTimeField(default=timezone.now)
    score = models.SmallIntegerField(null=True, blank=True)
    comment = models.TextField(blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    language = models.CharField(max_length=10, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)  # the invitation message, if sent by us

    class Meta:
        ordering = ["-invited_at"]
        indexes = [models.Index(fields=["answered_at"]), models.Index(fields=["customer", "invited_at"]),
                   # covering (PostgreSQL): the survey KPIs read only the index
                   models.Index(fields=["answered_at"], include=["kind", "score", "channel_kind", "agent_id", "team_id"],
                                name="survey_answered_cover"),
                   models.Index(fields=["invited_at"], include=["kind", "score", "channel_kind", "agent_id", "team_id"],
                                name="survey_invited_cover"),
                   # the dashboard's latest comments: a few index entries instead of every answer of the period
                   models.Index(fields=["answered_at"], condition=models.Q(score__isnull=False) & ~models.Q(comment=""),
                                name="survey_comments")]


# --------------------------------------------------------------------------- business hours and SLA

def _default_schedule() -> dict:
    return {str(d): [["09:00", "17:00"]] for d in range(5)}


class BusinessHours(models.Model):
    """A team's weekly schedule in a time zone, minus holidays.

    `schedule` maps a weekday ("0" Monday .. "6" Sunday) to a list of
    ["HH:MM", "HH:MM"] intervals in local time; `holidays` lists ISO dates.
    """

    team = models.OneToOneField("conversations.Team", on_delete=models.CASCADE, related_name="business_hours",
                                verbose_name=_("team"))
    timezone = models.CharField(_("time zone"), max_length=64, default="UTC")
    schedule = models.JSONField(_("weekly schedule"), default=_default_schedule)
    holidays = models.JSONField(_("holidays"), default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("business hours")
        verbose_name_plural = _("business hours")

    def __str__(self) -> str:
        return f"{self.team} ({self.timezone})"


class SlaPolicy(models.Model):
    """First response and resolution targets for one priority."""

    priority = models.CharField(_("priority"), max_length=10, unique=True)
    first_response_seconds = models.PositiveIntegerField(_("first response target (seconds)"), null=True, blank=True)
    resolution_seconds = models.PositiveIntegerField(_("resolution target (seconds)"), null=True, blank=True)
    business_hours = models.BooleanField(_("count business hours only"), default=False)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["priority"]
        verbose_name = _("SLA policy")
        verbose_name_plural = _("SLA policies")

    def __str__(self) -> str:
        return f"SLA {self.priority}"


class SlaNotice(models.Model):
    """One SLA warning or breach pushed to agents (metrics.sla_tasks).

    The unique key makes the push happen once per conversation, timer, level
    and due time, however many workers run the task at once; a new due time
    (priority changed, conversation reopened) is a new key and warns again."""

    class Kind(models.TextChoices):
        FIRST_RESPONSE = "first_response", _("first response")
        RESOLUTION = "resolution", _("resolution")

    class Level(models.TextChoices):
        WARNING = "warning", _("warning")
        BREACHED = "breached", _("breached")

    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    level = models.CharField(max_length=10, choices=Level.choices)
    due_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["conversation", "kind", "level", "due_at"],
                                               name="sla_notice_once")]
        indexes = [models.Index(fields=["due_at"], name="sla_notice_due")]


# --------------------------------------------------------------------------- facts and rollups

class ConversationFact(models.Model):
    """Everything KPI.md needs about one conversation, folded from its events.

    `conversation_id` is a plain integer (no foreign key) so the rollup
    contributions of a deleted (merged-away) conversation can be withdrawn.
    `contrib` keeps exactly what this fact added to DailyRollup, so a
    recomputation applies the difference (incremental == full recompute).
    """

    conversation_id = models.BigIntegerField(primary_key=True)
    customer_id = models.BigIntegerField(null=True, db_index=True)
    origin_kind = models.CharField(max_length=20, blank=True)
    started_at = models.DateTimeField(null=True)
    created_day = models.DateField(null=True)
    outbound_first = models.BooleanField(default=False)
    first_inbound_at = models.DateTimeField(null=True)
    # first response
    frt_at = models.DateTimeField(null=True)
    frt_day = models.DateField(null=True)
    frt_seconds = models.FloatField(null=True)
    frt_bh_seconds = models.FloatField(null=True)
    frt_kind = models.CharField(max_length=20, blank=True)
    frt_agent_id = models.BigIntegerField(null=True)
    frt_team_id = models.BigIntegerField(null=True)
    awaiting_since = models.DateTimeField(null=True)
    # resolution (final: null while not resolved now)
    resolved_at = models.DateTimeField(null=True)
    resolved_day = models.DateField(null=True)
    resolution_seconds = models.FloatField(null=True)
    resolution_bh_seconds = models.FloatField(null=True)
    resolution_agent_id = models.BigIntegerField(null=True)
    resolution_team_id = models.BigIntegerField(null=True)
    reopen_count = models.PositiveIntegerField(default=0)
    public_replies = models.PositiveIntegerField(default=0)
    contacts = models.PositiveIntegerField(default=0)
    switches = models.PositiveIntegerField(default=0)
    one_touch = models.BooleanField(null=True)
    fcr = models.BooleanField(null=True)
    fcr_final = models.BooleanField(default=False)
    fcr_window_end = models.DateTimeField(null=True, db_index=True)
    repeat_contact = models.BooleanField(null=True)
    sla_met = models.BooleanField(null=True)
    sla_frt_met = models.BooleanField(null=True)
    sla_resolution_met = models.BooleanField(null=True)
    initial_team_id = models.BigIntegerField(null=True)
    responses = models.JSONField(default=list)  # [[at, seconds, channel, agent, team]]
    reopens = models.JSONField(default=list)  # [[at, agent, team]]
    contrib = models.JSONField(default=dict)
    computed_at = models.DateTimeField(default=timezone.now)
    # customer links (metrics.customer_links): where this resolution stands among its customer's
    # resolutions of the same dimension value, so CLTV and retention of a period count distinct
    # customers row by row (null while not resolved). next order after the resolution, its
    # retention verdict (RETENTION_WINDOW as MetricsState records), and per dimension (all,
    # channel, agent, team) the day of the previous and next resolution and of the latest
    # earlier retained one.
    cv_next_order_at = models.DateTimeField(null=True)
    cv_retained = models.BooleanField(null=True)
    cv_ltv_cents = models.BigIntegerField(null=True)  # the customer's orders up to the end of resolved_day
    # the customer's orders of the next local days, [[days after resolved_day, cents]] (metrics.link_rollup)
    cv_tail = models.JSONField(null=True)
    cv_prev_all = models.DateField(null=True)
    cv_next_all = models.DateField(null=True)
    cv_retb_all = models.DateField(null=True)
    cv_prev_channel = models.DateField(null=True)
    cv_next_channel = models.DateField(null=True)
    cv_retb_channel = models.DateField(null=True)
    cv_prev_agent = models.DateField(null=True)
    cv_next_agent = models.DateField(null=True)
    cv_retb_agent = models.DateField(null=True)
    cv_prev_team = models.DateField(null=True)
    cv_next_team = models.DateField(null=True)
    cv_retb_team = models.DateField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["customer_id", "started_at"], name="fact_customer_started"),
            # (day, value), covering: the values of one histogram bucket over a list of days
            # (metrics.histograms), or of a period (uncovered selections), read only the index
            models.Index(fields=["frt_day", "frt_seconds"], include=["frt_bh_seconds", "frt_kind", "frt_agent_id",
                                                                     "frt_team_id"], name="fact_frt_value"),
            models.Index(fields=["frt_day", "frt_bh_seconds"], include=["frt_kind", "frt_agent_id", "frt_team_id"],
                         name="fact_frt_bh_value"),
            models.Index(fields=["resolved_day", "resolution_seconds"],
                         include=["resolution_bh_seconds", "origin_kind", "resolution_agent_id", "resolution_team_id"],
                         name="fact_res_value"),
            models.Index(fields=["resolved_day", "resolution_bh_seconds"],
                         include=["origin_kind", "resolution_agent_id", "resolution_team_id"],
                         name="fact_res_bh_value"),
            # covering (PostgreSQL): CLTV and retention of a period read only the index
            models.Index(fields=["resolved_day"], include=["resolution_seconds", "resolution_bh_seconds",
                                                           "origin_kind", "resolution_agent_id", "resolution_team_id",
                                                           "customer_id", "resolved_at"], name="fact_resolved_cover"),
            # covering (PostgreSQL): CLTV and retention of a period from the customer links
            models.Index(fields=["resolved_day"], include=[
                "customer_id", "resolved_at", "origin_kind", "resolution_agent_id", "resolution_team_id",
                "cv_next_order_at", "cv_retained", "cv_ltv_cents", "cv_prev_all", "cv_next_all", "cv_retb_all", "cv_prev_channel", "cv_next_channel",
                "cv_retb_channel", "cv_prev_agent", "cv_next_agent", "cv_retb_agent", "cv_prev_team",
                "cv_next_team", "cv_retb_team"], name="fact_customer_links"),
        ]


class ResponseFact(models.Model):
    """One answered customer turn (response time), dated on the reply."""

    conversation_id = models.BigIntegerField(db_index=True)
    at = models.DateTimeField()
    day = models.DateField()
    seconds = models.FloatField()
    channel = models.CharField(max_length=20, blank=True)
    agent_id = models.BigIntegerField(null=True)
    team_id = models.BigIntegerField(null=True)

    class Meta:
        indexes = [models.Index(fields=["day", "seconds"], include=["channel", "agent_id", "team_id"],
                                name="response_day_value")]


class ValueHistogram(models.Model):
    """How many values of a time figure fell in each bucket, per local day and one dimension
    (metrics.histograms): exact medians and p90 read only the buckets that hold them.

    metric: frt, frt_bh, res, res_bh, rt; dim: all, channel, agent, team; key: the channel
    kind or the agent/team id ("" for none, and for dim "all"). Every value is counted on its
    day (span 1) and its week (span 7): a long period reads whole weeks."""

    metric = models.CharField(max_length=8)
    dim = models.CharField(max_length=8)
    span = models.SmallIntegerField(default=1)  # 1: the day; 7: the week starting on Monday `day`
    day = models.DateField()
    key = models.CharField(max_length=40, blank=True, default="")
    bucket = models.SmallIntegerField()
    n = models.BigIntegerField(default=0)

    class Meta:
        # the upserts' key; on PostgreSQL its index also includes `n` (migration 0011), so the sums of a
        # period read only this index (a second, covering index cost ~11 s of the full recompute at 1 M
        # and every upsert; SQLite has no INCLUDE)
        constraints = [models.UniqueConstraint(fields=["metric", "dim", "span", "day", "key", "bucket"],
                                               name="histogram_unique_key")]


ROLLUP_COLUMNS = [
    "created", "resolved", "reopened",
    "frt_count", "frt_sum_ms", "frt_bh_sum_ms",
    "rt_count", "rt_sum_ms",
    "res_sum_ms", "res_bh_sum_ms",
    "contacts_sum", "switches_sum", "one_touch",
    "fcr_final_count", "fcr_final_yes", "fcr_prov_count", "fcr_prov_yes",
    "repeat_yes", "sla_count", "sla_met",
]


class RollupRow(models.Model):
    """Sums and counts per local day (or week) and dimension (channel kind, agent, team).

    0 stands for "no agent" / "no team" so the row key is unique and upsertable.
    Means are sum/count at read time; never stored.
    """

    day = models.DateField()
    channel = models.CharField(max_length=20, blank=True, default="")
    agent_id = models.BigIntegerField(default=0)
    team_id = models.BigIntegerField(default=0)
    created = models.BigIntegerField(default=0)
    resolved = models.BigIntegerField(default=0)
    reopened = models.BigIntegerField(default=0)
    frt_count = models.BigIntegerField(default=0)
    frt_sum_ms = models.BigIntegerField(default=0)
    frt_bh_sum_ms = models.BigIntegerField(default=0)
    rt_count = models.BigIntegerField(default=0)
    rt_sum_ms = models.BigIntegerField(default=0)
    res_sum_ms = models.BigIntegerField(default=0)
    res_bh_sum_ms = models.BigIntegerField(default=0)
    contacts_sum = models.BigIntegerField(default=0)
    switches_sum = models.BigIntegerField(default=0)
    one_touch = models.BigIntegerField(default=0)
    fcr_final_count = models.BigIntegerField(default=0)
    fcr_final_yes = models.BigIntegerField(default=0)
    fcr_prov_count = models.BigIntegerField(default=0)
    fcr_prov_yes = models.BigIntegerField(default=0)
    repeat_yes = models.BigIntegerField(default=0)
    sla_count = models.BigIntegerField(default=0)
    sla_met = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class DailyRollup(RollupRow):
    """The sums of one local day."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "channel", "agent_id", "team_id"],
                                               name="rollup_unique_key")]


class WeeklyRollup(RollupRow):
    """The sums of the week starting on Monday `day` (the same rows as DailyRollup's seven days,
    summed): a long period reads whole weeks (metrics.kpis.base.rollups)."""

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "channel", "agent_id", "team_id"],
                                               name="weekly_rollup_unique_key")]


class CustomerLinkDay(models.Model):
    """Daily rollup of the customer links (metrics.link_rollup): per dimension (all, channel, agent,
    team), its value ("" for none), the day of the resolutions and a kind of figure, a cumulative
    array over the distance from that day to a bound of the period (b: the row's next-resolution
    bucket for the kind TAIL, else 0)."""

    dim = models.CharField(max_length=8)
    value = models.CharField(max_length=64)
    day = models.DateField()
    kind = models.SmallIntegerField()
    b = models.SmallIntegerField(default=0)
    arr = models.JSONField(default=list)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dim", "value", "day", "kind", "b"],
                                               name="link_day_unique_key")]
        indexes = [models.Index(fields=["dim", "day"], name="link_day_dim_day")]


class SurveyDay(models.Model):
    """Survey counts per local day or week (metrics.survey_rollup): rows with a score count the
    answers of that day with that score; the row without one counts the invitations sent that day
    and how many of them are answered."""

    span = models.SmallIntegerField(default=1)  # 1: the day; 7: the week starting on Monday `day`
    day = models.DateField()
    kind = models.CharField(max_length=8)
    channel_kind = models.CharField(max_length=20, blank=True)
    agent_id = models.BigIntegerField(null=True)  # no foreign keys: deleting an agent/team nulls them (signals)
    team_id = models.BigIntegerField(null=True)
    score = models.SmallIntegerField(null=True)
    answers = models.IntegerField(default=0)
    sent = models.IntegerField(default=0)
    answered = models.IntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["span", "day"], name="survey_day_span_day")]


class DirtyConversation(models.Model):
    """Conversations whose facts must be recomputed (the batch queue of the engine)."""

    conversation_id = models.BigIntegerField(primary_key=True)
    marked_at = models.DateTimeField(default=timezone.now)


class ImportJob(models.Model):
    """One import through the API (kept for Idempotency-Key replays) or the command."""

    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    status_code = models.PositiveSmallIntegerField(default=200)
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)


class MetricsState(models.Model):
    """Small facts about the derived tables, e.g. "customer_links": the RETENTION_WINDOW the
    customer links were computed with (metrics.customer_links)."""

    key = models.CharField(max_length=40, primary_key=True)
    value = models.JSONField(default=dict)
