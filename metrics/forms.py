from __future__ import annotations

import json
from zoneinfo import available_timezones

from django import forms
from django.utils.translation import gettext_lazy as _

from conversations.models import Priority

from .models import BusinessHours, SlaPolicy

WEEKDAYS = [_("Monday"), _("Tuesday"), _("Wednesday"), _("Thursday"), _("Friday"), _("Saturday"), _("Sunday")]


class BusinessHoursForm(forms.ModelForm):
    schedule_text = forms.CharField(
        label=_("Weekly schedule"), widget=forms.Textarea(attrs={"rows": 7}),
        help_text=_("One line per weekday: 'Mon 09:00-12:00 13:00-17:00'. Days left out are closed."))
    holidays_text = forms.CharField(label=_("Holidays"), required=False, widget=forms.Textarea(attrs={"rows": 3}),
                                    help_text=_("One date per line, YYYY-MM-DD."))

    class Meta:
        model = BusinessHours
        fields = ["timezone"]

    DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        inst = self.instance
        if inst and inst.pk:
            lines = []
            for d in range(7):
                spans = inst.schedule.get(str(d)) or []
                if spans:
                    lines.append(self.DAY_NAMES[d].capitalize() + " " + " ".join(f"{a}-{b}" for a, b in spans))
            self.fields["schedule_text"].initial = "\n".join(lines)
            self.fields["holidays_text"].initial = "\n".join(inst.holidays or [])
        else:
            self.fields["schedule_text"].initial = "\n".join(f"{d.capitalize()} 09:00-17:00" for d in self.DAY_NAMES[:5])

    def clean_timezone(self):
        tz = self.cleaned_data["timezone"]
        if tz not in available_timezones():
            raise forms.ValidationError(_("Unknown time zone."))
        return tz

    def clean_schedule_text(self):
        import re

        schedule: dict[str, list] = {}
        for line in self.cleaned_data["schedule_text"].splitlines():
            line = line.strip()
            if not line:
                continue
            parts = line.split()
            day = parts[0][:3].lower()
            if day not in self.DAY_NAMES:
                raise forms.ValidationError(_("Unknown weekday in '%(line)s'.") % {"line": line})
            spans = []
            for span in parts[1:]:
                m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)-(([01]\d|2[0-3]):[0-5]\d|24:00)", span)
                if not m:
                    raise forms.ValidationError(_("Bad time range '%(span)s'.") % {"span": span})
                a, b = span.split("-")
                if b != "24:00" and b <= a:
                    raise forms.ValidationError(_("Range '%(span)s' ends before it starts.") % {"span": span})
                spans.append([a, b])
            schedule[str(self.DAY_NAMES.index(day))] = spans
        return schedule

    def clean_holidays_text(self):
        from datetime import date

        out = []
        for line in self.cleaned_data.get("holidays_text", "").split():
            try:
                out.append(date.fromisoformat(line.strip()).isoformat())
            except ValueError:
                raise forms.ValidationError(_("'%(d)s' is not a date.") % {"d": line}) from None
        return out

    def save(self, commit=True):
        self.instance.schedule = self.cleaned_data["schedule_text"]
        self.instance.holidays = self.cleaned_data["holidays_text"]
        return super().save(commit)


class SlaPolicyForm(forms.ModelForm):
    first_response_minutes = forms.IntegerField(label=_("First response within (minutes)"), min_value=1,
                                                required=False)
    resolution_hours = forms.FloatField(label=_("Resolution within (hours)"), min_value=0.1, required=False)

    class Meta:
        model = SlaPolicy
        fields = ["priority", "business_hours", "active"]
        widgets = {"priority": forms.Select(choices=Priority.choices)}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            if self.instance.first_response_seconds:
                self.fields["first_response_minutes"].initial = self.instance.first_response_seconds // 60
            if self.instance.resolution_seconds:
                self.fields["resolution_hours"].initial = self.instance.resolution_seconds / 3600

    def save(self, commit=True):
        m = self.cleaned_data.get("first_response_minutes")
        h = self.cleaned_data.get("resolution_hours")
        self.instance.first_response_seconds = m * 60 if m else None
        self.instance.resolution_seconds = int(h * 3600) if h else None
        return super().save(commit)


def dumps(value) -> str:
    return json.dumps(value, default=str)
