"""The one conversation FilterSet, shared by the inbox pages and the REST API.

Usage (both callers): ``ConversationFilter(request.GET, queryset=visible_qs, request=request).qs``.
The queryset must already be restricted to what the user may see
(conversations.services.conversations_visible_to); filters only narrow it.

Parameters: status, channel (kind), assignee (id, "me" or "none"), team (id or
"none"), tag (name or id), priority, customer (id), created_after,
created_before, updated_after, updated_before, q (full text), segment.
Multi-valued parameters accept repeats (?status=open&status=pending) or
commas (?status=open,pending).
"""
from __future__ import annotations

from datetime import timezone as dt_timezone

import django_filters
from django import forms
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from channels_app.models import ChannelKind

from .models import Conversation, Priority, Status


def _values(value) -> list[str]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        out += [v.strip() for v in str(item).split(",") if v.strip()]
    return out


class CommaMultipleChoiceFilter(django_filters.MultipleChoiceFilter):
    """A MultipleChoiceFilter that also accepts comma separated values."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.SelectMultiple)
        kwargs.setdefault("distinct", False)  # DISTINCT would defeat the keyset index walk
        super().__init__(*args, **kwargs)

    class field_class(django_filters.MultipleChoiceFilter.field_class):
        def clean(self, value):
            return super().clean(_values(value))


class _DateOrDateTimeField(forms.DateTimeField):
    """ISO 8601 date-time, or a plain date (midnight in the current time zone)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        from datetime import datetime, time

        from django.utils import timezone
        from django.utils.dateparse import parse_date, parse_datetime

        text = str(value).strip()
        try:
            parsed = parse_datetime(text.replace(" ", "T").replace("Z", "+00:00"))
            if parsed is None:
                day = parse_date(text)
                parsed = datetime.combine(day, time.min) if day else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(_("Enter a date (YYYY-MM-DD) or an ISO 8601 date-time."), code="invalid")
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed)
        try:
            # PostgreSQL refuses offsets beyond ±15:59: normalize to UTC (a 400, never a 500)
            return parsed.astimezone(dt_timezone.utc)
        except (OverflowError, ValueError):
            raise forms.ValidationError(_("Date and time out of range."), code="overflow")


class DateTimeRangeFilter(django_filters.DateTimeFilter):
    field_class = _DateOrDateTimeField


class ConversationFilter(django_filters.FilterSet):
    status = CommaMultipleChoiceFilter(choices=Status.choices, label=_("Status"))
    channel = CommaMultipleChoiceFilter(choices=ChannelKind.choices, label=_("Channel"), method="filter_channel")
    priority = CommaMultipleChoiceFilter(choices=Priority.choices, label=_("Priority"))
    assignee = django_filters.CharFilter(method="filter_assignee", label=_("Assignee"))
    team = django_filters.CharFilter(method="filter_team", label=_("Team"))
    tag = django_filters.CharFilter(method="filter_tag", label=_("Tag"))
    customer = django_filters.NumberFilter(field_name="customer_id", label=_("Customer"))
    created_after = DateTimeRangeFilter(field_name="created_at", lookup_expr="gte",
                                                     label=_("Created after"))
    created_before = DateTimeRangeFilter(field_name="created_at", lookup_expr="lt",
                                                      label=_("Created before"))
    updated_after = DateTimeRangeFilter(field_name="updated_at", lookup_expr="gte",
                                                     label=_("Updated after"))
    updated_before = DateTimeRangeFilter(field_name="updated_at", lookup_expr="lt",
                                                      label=_("Updated before"))
    q = django_filters.CharFilter(method="filter_q", label=_("Search"))
    segment = django_filters.CharFilter(method="filter_segment", label=_("Segment"))

    class Meta:
        model = Conversation
        fields = ["status", "channel", "priority", "assignee", "team", "tag", "customer",
                  "created_after", "created_before", "updated_after", "updated_before", "q", "segment"]

    # ------------------------------------------------------------------ methods

    def _user(self):
        request = getattr(self, "request", None)
        user = getattr(request, "user", None)
        return user if user is not None and user.is_authenticated else None

    def filter_channel(self, queryset, name, value):
        kinds = _values(value)
        if not kinds:
            return queryset
        # a conversation "is on" a channel if it started there or the customer last wrote there
        return queryset.filter(Q(origin_kind__in=kinds) | Q(last_inbound_kind__in=kinds))

    def filter_assignee(self, queryset, name, value):
        cond = Q()
        for item in _values(value):
            if item == "me":
                user = self._user()
                cond |= Q(assignee_id=user.pk) if user else Q(pk__in=[])
            elif item == "none":
                cond |= Q(assignee__isnull=True)
            elif item.isdigit():
                cond |= Q(assignee_id=int(item))
            else:
                cond |= Q(assignee__username=item)
        return queryset.filter(cond) if cond else queryset

    def filter_team(self, queryset, name, value):
        cond = Q()
        for item in _values(value):
            if item == "none":
                cond |= Q(team__isnull=True)
            elif item.isdigit():
                cond |= Q(team_id=int(item))
            else:
                cond |= Q(team__name=item)
        return queryset.filter(cond) if cond else queryset

    def filter_tag(self, queryset, name, value):
        items = _values(value)
        ids = [int(i) for i in items if i.isdigit()]
        names = [i for i in items if not i.isdigit()]
        if not items:
            return queryset
        from .models import Conversation as C

        through = C.tags.through.objects.filter(Q(tag_id__in=ids) | Q(tag__name__in=names))
        return queryset.filter(pk__in=through.values("conversation_id"))

    def filter_q(self, queryset, name, value):
        from .selectors import search_filter

        return search_filter(queryset, value)

    def filter_segment(self, queryset, name, value):
        """Customer segment (metrics.segments): a recency (new, active, at_risk,
        inactive, former), a value (high, low) or both ("at_risk,high")."""
        items = _values(value)
        if not items:
            return queryset
        try:
            from metrics import segments
        except ImportError:
            return queryset
        from customers.models import Customer

        recency = next((i for i in items if i in getattr(segments, "RECENCY_LABELS", {})), None)
        worth = next((i for i in items if i in getattr(segments, "VALUE_LABELS", {})), None)
        if not recency and not worth:
            return queryset.none()
        customers = segments.filter_customers(Customer.objects.all(), recency=recency, value=worth)
        return queryset.filter(customer_id__in=customers.values("pk"))
