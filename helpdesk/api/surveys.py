"""/api/v1/survey-responses/: answered CSAT/NPS/CES surveys, scoped like conversations.

SurveyInvitation belongs to metrics (which may add fields): the serializer
lists the fields it knows and only those the model has."""
from __future__ import annotations

import django_filters

from helpdesk.api.filters import UTCIsoDateTimeFilter
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from conversations.services import conversations_visible_to
from metrics.models import SurveyInvitation

_WANTED = ["id", "conversation", "customer", "kind", "channel_kind", "agent", "team", "score", "comment",
           "invited_at", "answered_at", "external_id", "language", "reason", "question", "scale"]
_MODEL_FIELDS = {f.name for f in SurveyInvitation._meta.get_fields() if getattr(f, "concrete", False)}


class SurveyResponseSerializer(serializers.ModelSerializer):
    channel = serializers.CharField(source="channel_kind", read_only=True, default="")

    class Meta:
        model = SurveyInvitation
        fields = [f for f in _WANTED if f in _MODEL_FIELDS and f != "channel_kind"] + ["channel"]
        read_only_fields = fields


class SurveyResponseFilter(django_filters.FilterSet):
    answered_after = UTCIsoDateTimeFilter(field_name="answered_at", lookup_expr="gte")
    answered_before = UTCIsoDateTimeFilter(field_name="answered_at", lookup_expr="lt")
    channel = django_filters.CharFilter(field_name="channel_kind")

    class Meta:
        model = SurveyInvitation
        fields = [f for f in ["kind", "conversation", "customer", "agent", "team"] if f in _MODEL_FIELDS]


@extend_schema_view(list=extend_schema(summary="List survey responses (answered surveys)"),
                    retrieve=extend_schema(summary="A survey response"))
class SurveyResponseViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = SurveyResponseSerializer
    filterset_class = SurveyResponseFilter
    ordering_fields = ["answered_at", "id", "score"]

    def get_queryset(self):
        qs = SurveyInvitation.objects.filter(answered_at__isnull=False, score__isnull=False).order_by("-answered_at",
                                                                                                      "-id")
        if getattr(self, "swagger_fake_view", False):
            return qs.none()
        user = self.request.user
        if not user.sees_all:
            qs = qs.filter(conversation__in=conversations_visible_to(user).values("pk"))
        return qs
