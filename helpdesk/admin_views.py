"""In-app admin screens (issue 6): channels (webhook URL, widget snippet),
teams (assignment mode, members), agents (role, capacity, availability),
canned responses. Admin role only. Business hours screens belong to metrics."""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _l


from conversations.models import AssignmentMode, CannedResponse, Team

from .models import Availability, Role, User


def admin_required(view):
    @login_required
    def wrapped(request, *args, **kwargs):
        if not request.user.is_admin_role:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    wrapped.__name__ = view.__name__
    wrapped.__doc__ = view.__doc__
    return wrapped


def _render(request, template, context):
    from conversations.views import _chrome

    context.update(_chrome(request))
    context["admin_section"] = template.rsplit("/", 1)[-1].split(".")[0]
    try:
        context["business_hours_url"] = reverse("metrics:service-levels")
    except NoReverseMatch:
        context["business_hours_url"] = None
    return render(request, template, context)


# --------------------------------------------------------------------------- channels

def widget_snippet(channel, request) -> str | None:
    """The chat engineer's channels_app.adapters.chat.snippet(channel, request), if present."""
    if channel.kind != "chat":
        return None
    try:
        from channels_app.adapters import chat
    except ImportError:
        return None
    fn = getattr(chat, "snippet", None)
    if fn is None:
        return ""
    try:
        return str(fn(channel, request))
    except Exception:
        return ""


@admin_required
def channels(request):
    from channels_app.models import Channel

    rows = []
    for channel in Channel.objects.select_related("team").order_by("kind", "name"):
        rows.append({"channel": channel, "webhook_url": channel.webhook_url,
                     "snippet": widget_snippet(channel, request)})
    return _render(request, "admin_screens/channels.html", {"rows": rows})


# --------------------------------------------------------------------------- teams

class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name", "assignment_mode", "members"]
        widgets = {"members": forms.CheckboxSelectMultiple}


@admin_required
def teams(request):
    form = TeamForm(request.POST or None, prefix="new")
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Team created."))
        return redirect("helpdesk_admin:teams")
    return _render(request, "admin_screens/teams.html", {
        "teams": Team.objects.prefetch_related("members"), "form": form, "modes": AssignmentMode.choices})


@admin_required
def team_edit(request, pk: int):
    team = get_object_or_404(Team, pk=pk)
    form = TeamForm(request.POST or None, instance=team)
    if request.method == "POST":
        if "delete" in request.POST:
            team.delete()
            messages.success(request, _("Team deleted."))
            return redirect("helpdesk_admin:teams")
        if form.is_valid():
            form.save()
            messages.success(request, _("Team saved."))
            return redirect("helpdesk_admin:teams")
    return _render(request, "admin_screens/team_edit.html", {"team": team, "form": form})


# --------------------------------------------------------------------------- agents

class AgentForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["username", "first_name", "last_name", "display_name", "email", "role", "access_all", "capacity",
                  "availability", "is_active"]


class NewAgentForm(AgentForm):
    password = forms.CharField(label=_l("Initial password"), widget=forms.PasswordInput, min_length=8)

    class Meta(AgentForm.Meta):
        fields = ["username", "first_name", "last_name", "email", "role", "capacity"]

    def save(self, commit=True):
        user = super().save(commit=False)
        user.set_password(self.cleaned_data["password"])
        if commit:
            user.save()
        return user


@admin_required
def agents(request):
    form = NewAgentForm(request.POST or None, prefix="new")
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Agent created."))
        return redirect("helpdesk_admin:agents")
    return _render(request, "admin_screens/agents.html", {
        "agents": User.objects.order_by("username").prefetch_related("teams"), "form": form,
        "roles": Role.choices, "availabilities": Availability.choices})


@admin_required
def agent_edit(request, pk: int):
    agent = get_object_or_404(User, pk=pk)
    form = AgentForm(request.POST or None, instance=agent)
    if request.method == "POST" and form.is_valid():
        if agent.pk == request.user.pk and form.cleaned_data["role"] != Role.ADMIN and not agent.is_superuser:
            form.add_error("role", _("You cannot remove your own admin role."))
        else:
            form.save()
            messages.success(request, _("Agent saved."))
            return redirect("helpdesk_admin:agents")
    return _render(request, "admin_screens/agent_edit.html", {"agent": agent, "form": form})


# --------------------------------------------------------------------------- canned responses

class CannedForm(forms.ModelForm):
    class Meta:
        model = CannedResponse
        fields = ["title", "shortcut", "body", "team"]
        widgets = {"body": forms.Textarea(attrs={"rows": 4})}


@admin_required
def canned(request):
    form = CannedForm(request.POST or None, prefix="new")
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, _("Canned response created."))
        return redirect("helpdesk_admin:canned")
    return _render(request, "admin_screens/canned.html", {
        "responses": CannedResponse.objects.select_related("team"), "form": form})


@admin_required
def canned_edit(request, pk: int):
    item = get_object_or_404(CannedResponse, pk=pk)
    form = CannedForm(request.POST or None, instance=item)
    if request.method == "POST":
        if "delete" in request.POST:
            item.delete()
            messages.success(request, _("Canned response deleted."))
            return redirect("helpdesk_admin:canned")
        if form.is_valid():
            form.save()
            messages.success(request, _("Canned response saved."))
            return redirect("helpdesk_admin:canned")
    return _render(request, "admin_screens/canned_edit.html", {"item": item, "form": form})


@admin_required
def index(request):
    return redirect("helpdesk_admin:channels")


app_name = "helpdesk_admin"

urlpatterns = [
    path("manage/", index, name="index"),
    path("manage/channels/", channels, name="channels"),
    path("manage/teams/", teams, name="teams"),
    path("manage/teams/<int:pk>/", team_edit, name="team_edit"),
    path("manage/agents/", agents, name="agents"),
    path("manage/agents/<int:pk>/", agent_edit, name="agent_edit"),
    path("manage/canned/", canned, name="canned"),
    path("manage/canned/<int:pk>/", canned_edit, name="canned_edit"),
]


