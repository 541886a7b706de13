"""Filter building blocks shared by the API filtersets."""
from __future__ import annotations

from datetime import timezone as dt_timezone

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField


class UTCIsoDateTimeField(IsoDateTimeField):
    """ISO 8601 with any offset Python accepts, normalized to UTC: PostgreSQL
    refuses offsets beyond ±15:59 (a 500 otherwise), and out-of-range results are a 400."""

    def clean(self, value):
        value = super().clean(value)
        if value is None:
            return value
        try:
            return value.astimezone(dt_timezone.utc)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Date and time out of range.", code="overflow")


class UTCIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField
