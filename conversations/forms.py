"""Forms of the agent inbox. Validation only: the views call services."""
from __future__ import annotations

import re

from django import forms
from django.utils.translation import gettext_lazy as _

from helpdesk.models import User

from .models import Priority, Status, Team

MENTION = re.compile(r"(?<![\w@])@([\w.\-+]{2,150})")


class ComposerForm(forms.Form):
    kind = forms.ChoiceField(choices=[("reply", _("Reply")), ("note", _("Internal note"))], initial="reply")
    body = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 4}), max_length=20000,
                           strip=True)
    channel = forms.IntegerField(required=False)
    resolve = forms.BooleanField(required=False)


class AssignForm(forms.Form):
    agent = forms.CharField(required=False)  # user id, "" to unassign, "me"
    team = forms.CharField(required=False)  # team id or "" (no team); absent: keep


class SnoozeForm(forms.Form):
    until = forms.DateTimeField(label=_("Snooze until"),
                                input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"])


class PriorityForm(forms.Form):
    priority = forms.ChoiceField(choices=Priority.choices)


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=Status.choices)


class SavedViewForm(forms.Form):
    name = forms.CharField(label=_("View name"), max_length=80)


class CustomerEditForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200, required=False)
    company = forms.CharField(label=_("Company"), max_length=200, required=False)
    language = forms.CharField(label=_("Language"), max_length=10, required=False)
    attributes = forms.CharField(label=_("Custom attributes"), required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                 help_text=_("One per line: key = value"))

    def clean_attributes(self) -> dict:
        out: dict = {}
        for line in (self.cleaned_data.get("attributes") or "").splitlines():
            if not line.strip():
                continue
            if "=" not in line:
                raise forms.ValidationError(_("Write each attribute as key = value."))
            key, value = line.split("=", 1)
            key = key.strip()[:60]
            if key:
                out[key] = value.strip()[:500]
        return out


def mentioned_users(body: str) -> list[User]:
    names = {m.group(1).rstrip(".") for m in MENTION.finditer(body or "")}
    if not names:
        return []
    return list(User.objects.filter(is_active=True, username__in=names))


def team_choice(value: str) -> Team | None:
    if value and value.isdigit():
        return Team.objects.filter(pk=int(value)).first()
    return None
