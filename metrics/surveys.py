"""CSAT / NPS / CES invitations after a resolution, and recording answers (KPI.md "Surveys").

Rules: at most one invitation per conversation, at most one per customer per
SURVEY_COOLDOWN, on the channel the customer used last; the kind comes from
that channel's settings {"survey": "csat"|"nps"|"ces"|"off"} (default csat).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.html import escape
from django.utils.translation import gettext as _

from conversations import services
from conversations.models import Conversation, EventKind

from .models import SurveyInvitation, SurveyKind

log = logging.getLogger(__name__)

SCALES = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 5)}
HISTORICAL_AFTER = timedelta(hours=24)  # resolutions older than this (imports) get no survey
_paused = {"depth": 0}


class paused:
    """No invitations inside this block (the importer replays history)."""

    def __enter__(self):
        _paused["depth"] += 1

    def __exit__(self, *exc):
        _paused["depth"] -= 1


class InvalidAnswer(ValueError):
    pass


def question(kind: str) -> str:
    return {
        "csat": _("How satisfied are you with the help you received?"),
        "nps": _("How likely are you to recommend us to a friend or colleague?"),
        "ces": _("How easy was it to get your issue resolved?"),
    }[kind]


def scale_labels(kind: str) -> tuple[str, str]:
    return {
        "csat": (_("Very unsatisfied"), _("Very satisfied")),
        "nps": (_("Not at all likely"), _("Extremely likely")),
        "ces": (_("Very easy"), _("Very difficult")),
    }[kind]


def survey_url(invitation: SurveyInvitation, score: int | None = None) -> str:
    url = settings.PUBLIC_URL + reverse("metrics:survey", kwargs={"token": invitation.token})
    return f"{url}?score={score}" if score is not None else url


def after_resolve_hook(conversation: Conversation) -> SurveyInvitation | None:
    """AFTER_RESOLVE_HOOKS entry: send the survey invitation if the rules allow it."""
    if _paused["depth"]:
        return None
    conversation = Conversation.objects.select_related("customer").get(pk=conversation.pk)
    if conversation.status != "resolved":
        return None
    now = timezone.now()
    if conversation.resolved_at and now - conversation.resolved_at > HISTORICAL_AFTER:
        return None
    return send_invitation(conversation, now=now)


def send_invitation(conversation: Conversation, *, now: datetime | None = None) -> SurveyInvitation | None:
    now = now or timezone.now()
    channel, _reason = services.default_reply_channel(conversation)
    if channel is None:
        return None
    kind = (channel.settings or {}).get("survey", "csat")
    if kind not in SurveyKind.values:
        return None  # "off" or unknown
    customer = conversation.customer
    with transaction.atomic():
        # lock the customer so two resolutions at once cannot both pass the cooldown check
        from customers.models import Customer

        Customer.objects.select_for_update().filter(pk=customer.pk).first()
        if SurveyInvitation.objects.filter(conversation=conversation).exists():
            return None
        cooldown = timedelta(seconds=settings.SURVEY_COOLDOWN)
        if SurveyInvitation.objects.filter(customer=customer, invited_at__gt=now - cooldown).exists():
            return None
        language = customer.language or settings.LANGUAGE_CODE
        invitation = SurveyInvitation.objects.create(
            conversation=conversation, customer=customer, kind=kind, channel_kind=channel.kind,
            agent_id=conversation.assignee_id, team_id=conversation.team_id, invited_at=now, language=language)
        with translation.override(language):
            body, html = _message(invitation, channel.kind)
        meta = {"survey": {"token": invitation.token, "kind": kind, "url": survey_url(invitation),
                           "question": str(question(kind)), "scale": list(SCALES[kind])}}
        try:
            message = services.reply(conversation=conversation, author=None, automated=True, body=body, html=html,
                                     channel=channel, meta=meta, author_name="Threadline")
        except services.NoRecipient:
            transaction.set_rollback(True)
            return None
        invitation.message_id = message.pk
        invitation.save(update_fields=["message_id"])
        services.record_event(conversation, EventKind.SURVEY_SENT, at=now,
                              data={"kind": kind, "channel": channel.kind, "invitation": invitation.pk})
    return invitation


def _message(invitation: SurveyInvitation, channel_kind: str) -> tuple[str, str]:
    kind = invitation.kind
    q = question(kind)
    low, high = SCALES[kind]
    url = survey_url(invitation)
    if channel_kind == "email":
        lo_label, hi_label = scale_labels(kind)
        links_text = "\n".join(f"{s}: {survey_url(invitation, s)}" for s in range(low, high + 1))
        text = f"{q}\n\n{low} = {lo_label}, {high} = {hi_label}\n\n{links_text}\n"
        cells = "".join(
            f'<a href="{escape(survey_url(invitation, s))}" style="display:inline-block;min-width:28px;padding:8px 10px;'
            f'margin:2px;border:1px solid #cbd5e1;border-radius:6px;text-decoration:none;color:#0f172a">{s}</a>'
            for s in range(low, high + 1))
        html = (f"<p>{escape(q)}</p><p>{cells}</p>"
                f"<p><small>{low} = {escape(lo_label)}, {high} = {escape(hi_label)}</small></p>")
        return text, html
    if channel_kind == "chat":
        return f"{q} ({low}–{high})", ""
    # SMS, WhatsApp, Telegram and the rest: a short text with the link
    return f"{q} {url}", ""


def check_score(kind: str, score) -> int:
    try:
        score = int(score)
    except (TypeError, ValueError):
        raise InvalidAnswer(_("Choose a score.")) from None
    low, high = SCALES[kind]
    if not low <= score <= high:
        raise InvalidAnswer(_("The score must be between %(low)s and %(high)s.") % {"low": low, "high": high})
    return score


def record_answer(*, invitation: SurveyInvitation, score=None, comment: str | None = None,
                  at: datetime | None = None) -> SurveyInvitation:
    """Store a score (a later click changes it) and/or a comment; the first score
    records a SURVEY_ANSWERED event."""
    at = at or timezone.now()
    with transaction.atomic():
        inv = SurveyInvitation.objects.select_for_update().get(pk=invitation.pk)
        fields = []
        first = inv.score is None
        if score is not None:
            inv.score = check_score(inv.kind, score)
            fields.append("score")
            if first:
                inv.answered_at = at
                fields.append("answered_at")
        if comment is not None:
            if inv.score is None:
                raise InvalidAnswer(_("Choose a score first."))
            inv.comment = comment.strip()[:5000]
            fields.append("comment")
        if fields:
            inv.save(update_fields=fields)
        if score is not None and first:
            services.record_event(inv.conversation, EventKind.SURVEY_ANSWERED, at=at, actor_type="customer",
                                  data={"kind": inv.kind, "score": inv.score, "invitation": inv.pk,
                                        "channel": inv.channel_kind})
            from helpdesk.webhooks import survey_answered

            survey_answered(inv)  # the survey.answered webhook, after commit
    return inv
