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

    class Meta:
        ordering = ["-invited_at"]
        indexes = [models.Index(fields=["answered_at"]), models.Index(fields=["customer", "invited_at"])]
