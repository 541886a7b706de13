"""Dashboard, its CSV exports, service-level settings and the public survey page."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from conversations.models import Team
from helpdesk.models import User

from . import dashboard as dash
from . import report, services, surveys
from .forms import BusinessHoursForm, SlaPolicyForm
from .models import BusinessHours, SlaPolicy, SurveyInvitation


def _manager(request):
    if not request.user.is_manager:
        raise PermissionDenied(_("The dashboard is for managers and admins."))


def _selection(request):
    try:
        return report.parse_selection(request.GET), {}
    except report.SelectionError as exc:
        return report.parse_selection({}), exc.errors


@login_required
def dashboard(request):
    _manager(request)
    sel, errors = _selection(request)
    data = dash.data(sel)
    headline = [
        ("volume.created", _("Conversations created"), "count"),
        ("volume.resolved", _("Resolved"), "count"),
        ("first_response_time.median", _("First response (median)"), "duration"),
        ("first_response_time_business.median", _("First response, business hours (median)"), "duration"),
        ("response_time.mean", _("Response time (mean)"), "duration"),
        ("resolution_time.median", _("Resolution time (median)"), "duration"),
        ("resolution_time_business.median", _("Resolution, business hours (median)"), "duration"),
        ("fcr_rate", _("First contact resolution"), "rate"),
        ("fcr_provisional.rate", _("FCR, provisional"), "rate"),
        ("one_touch_rate", _("One-touch resolution"), "rate"),
        ("repeat_contact_rate", _("Repeat contact"), "rate"),
        ("contacts_per_resolution", _("Contacts per resolution"), "number"),
        ("channel_switches", _("Channel switches per resolution"), "number"),
        ("sla_attainment", _("SLA attainment"), "rate"),
        ("csat.percent", _("CSAT %"), "percent"),
        ("nps.score", _("NPS"), "number"),
        ("ces.mean", _("CES (lower is easier)"), "number"),
        ("retention_rate", _("Post-service retention"), "rate"),
        ("cltv", _("Lifetime value (mean)"), "money"),
    ]
    cur, prev = report.flatten(data["current"]), report.flatten(data["previous"])
    cards = [{"key": k, "label": label, "fmt": fmt, "value": cur.get(k), "previous": prev.get(k)}
             for k, label, fmt in headline]
    return render(request, "metrics/dashboard.html", {
        "sel": sel, "errors": errors, "data": data, "cards": cards, "query": request.GET.urlencode(),
        "teams": Team.objects.all(),
        "agents": User.objects.filter(is_active=True).order_by("first_name", "username"),
        "channel_kinds": sorted({r["channel"] for r in data["by_channel"] if r["channel"]}),
        "chart_data": {
            "trend": [{"key": r[data["trend_group"]], "created": r["volume"]["created"],
                       "resolved": r["volume"]["resolved"], "frt": r["first_response_time"]["median"],
                       "csat": r["csat"]["percent"]} for r in data["trend"]],
            "distribution": data["distribution"],
            "channels": [{"key": r["channel"], "created": r["volume"]["created"]} for r in data["by_channel"]],
        },
    })


@login_required
def segments(request):
    """Mean lifetime value per customer segment (a page of its own: it walks every customer)."""
    _manager(request)
    sel, errors = _selection(request)
    return render(request, "metrics/segments.html", {"sel": sel, "errors": errors, "rows": dash.table(sel, "segments"),
                                                     "query": request.GET.urlencode()})


@login_required
def dashboard_csv(request, table):
    _manager(request)
    if table not in dash.TABLES:
        raise Http404
    sel, errors = _selection(request)
    rows = dash.table(sel, table)
    response = HttpResponse(report.to_csv(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="threadline-{table}-{sel.start}-{sel.end}.csv"'
    return response


@login_required
def service_levels(request):
    _manager(request)
    teams = Team.objects.select_related("business_hours").all()
    return render(request, "metrics/service_levels.html", {
        "teams": teams, "policies": SlaPolicy.objects.all(),
    })


@login_required
@require_http_methods(["GET", "POST"])
def business_hours_edit(request, team_id):
    _manager(request)
    team = get_object_or_404(Team, pk=team_id)
    instance = BusinessHours.objects.filter(team=team).first() or BusinessHours(team=team)
    if request.method == "POST" and request.POST.get("delete") and instance.pk:
        services.business_hours_delete(instance)
        return redirect("metrics:service-levels")
    form = BusinessHoursForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        services.business_hours_save(form)
        return redirect("metrics:service-levels")
    return render(request, "metrics/business_hours_form.html", {"form": form, "team": team, "instance": instance})


@login_required
@require_http_methods(["GET", "POST"])
def sla_edit(request, pk=None):
    _manager(request)
    instance = get_object_or_404(SlaPolicy, pk=pk) if pk else SlaPolicy()
    if request.method == "POST" and request.POST.get("delete") and instance.pk:
        services.sla_policy_delete(instance)
        return redirect("metrics:service-levels")
    form = SlaPolicyForm(request.POST or None, instance=instance)
    if request.method == "POST" and form.is_valid():
        services.sla_policy_save(form)
        return redirect("metrics:service-levels")
    return render(request, "metrics/sla_form.html", {"form": form, "instance": instance})


@require_http_methods(["GET", "POST"])
def survey(request, token):
    """Public: no login. The link in the invitation carries the chosen score; a GET
    never records anything (mail scanners and link previews fetch every link). The page
    confirms the score with a POST: by itself in a browser that runs scripts (one click
    for the customer), with the visible button otherwise. Then an optional comment."""
    invitation = SurveyInvitation.objects.select_related("customer").filter(token=token).first()
    if invitation is None:
        raise Http404
    language = invitation.language or invitation.customer.language or translation.get_language()
    with translation.override(language):
        error = ""
        saved_comment = False
        pending = None  # a score from the link, waiting for the POST that confirms it
        if request.method == "POST":
            score = request.POST.get("score")
            comment = request.POST.get("comment")
            try:
                if score not in (None, ""):
                    invitation = surveys.record_answer(invitation=invitation, score=score)
                if comment is not None and comment.strip():
                    invitation = surveys.record_answer(invitation=invitation, comment=comment)
                    saved_comment = True
            except surveys.InvalidAnswer as exc:
                error = str(exc)
        elif request.GET.get("score") not in (None, ""):
            try:
                pending = surveys.check_score(invitation.kind, request.GET["score"])
            except surveys.InvalidAnswer as exc:
                error = str(exc)
            if pending is not None and pending == invitation.score:
                pending = None  # already recorded: nothing to confirm
        low, high = surveys.SCALES[invitation.kind]
        lo_label, hi_label = surveys.scale_labels(invitation.kind)
        response = render(request, "metrics/survey.html", {
            "invitation": invitation, "question": surveys.question(invitation.kind),
            "scores": list(range(low, high + 1)), "low_label": lo_label, "high_label": hi_label,
            "error": error, "saved_comment": saved_comment, "language": language, "pending": pending,
        })
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "same-origin"  # no-referrer makes Chromium post Origin: null, which CSRF refuses
    response["X-Robots-Tag"] = "noindex"
    return response
