"""/api/v1/teams/ and /api/v1/agents/ (read-only)."""
from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from conversations.models import AssignmentMode, Team
from helpdesk.models import Availability, Role, User


class TeamSerializer(serializers.ModelSerializer):
    members = serializers.PrimaryKeyRelatedField(many=True, read_only=True)
    assignment_mode = serializers.ChoiceField(choices=AssignmentMode.choices, read_only=True)

    class Meta:
        model = Team
        fields = ["id", "name", "assignment_mode", "members", "created_at"]
        read_only_fields = fields


class AgentSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, read_only=True)
    availability = serializers.ChoiceField(choices=Availability.choices, read_only=True)
    teams = serializers.PrimaryKeyRelatedField(many=True, read_only=True)

    class Meta:
        model = User
        fields = ["id", "username", "email", "name", "role", "teams", "availability", "capacity", "access_all",
                  "is_active", "date_joined", "last_login"]
        read_only_fields = fields


@extend_schema_view(list=extend_schema(summary="List teams"), retrieve=extend_schema(summary="A team"))
class TeamViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Team.objects.prefetch_related("members").order_by("name")
    serializer_class = TeamSerializer
    filterset_fields = ["name"]
    ordering_fields = ["id", "name"]


class AgentFilter(django_filters.FilterSet):
    team = django_filters.ModelChoiceFilter(field_name="teams", queryset=Team.objects.all())

    class Meta:
        model = User
        fields = ["role", "availability", "is_active", "team"]


@extend_schema_view(list=extend_schema(summary="List agents"), retrieve=extend_schema(summary="An agent"))
class AgentViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = User.objects.prefetch_related("teams").order_by("username")
    serializer_class = AgentSerializer
    filterset_class = AgentFilter
    ordering_fields = ["id", "username", "email"]
