"""/api/v1/teams/ and /api/v1/agents/: everybody reads; admins create/update/delete teams and
update agents (role, access, capacity, teams...). Agents are created in the admin screens
(they need a password)."""
from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets

from conversations.models import AssignmentMode, Team
from helpdesk import people
from helpdesk.models import Availability, Role, User

from .permissions import ReadOnlyOrAdmin


class TeamSerializer(serializers.ModelSerializer):
    members = serializers.PrimaryKeyRelatedField(many=True, queryset=User.objects.all(), required=False)
    assignment_mode = serializers.ChoiceField(choices=AssignmentMode.choices, required=False)

    class Meta:
        model = Team
        fields = ["id", "name", "assignment_mode", "members", "created_at"]
        read_only_fields = ["id", "created_at"]


class AgentSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    availability = serializers.ChoiceField(choices=Availability.choices, required=False)
    teams = serializers.PrimaryKeyRelatedField(many=True, queryset=Team.objects.all(), required=False)

    class Meta:
        model = User
        fields = ["id", "username", "email", "name", "display_name", "role", "teams", "availability", "capacity",
                  "access_all", "is_active", "date_joined", "last_login"]
        read_only_fields = ["id", "username", "date_joined", "last_login"]


@extend_schema_view(list=extend_schema(summary="List teams"), retrieve=extend_schema(summary="A team"),
                    create=extend_schema(summary="Create a team (admins)"),
                    update=extend_schema(summary="Update a team (admins)"),
                    partial_update=extend_schema(summary="Update a team (admins)"),
                    destroy=extend_schema(summary="Delete a team (admins); its conversations keep no team"))
class TeamViewSet(viewsets.ModelViewSet):
    queryset = Team.objects.prefetch_related("members").order_by("name")
    serializer_class = TeamSerializer
    permission_classes = [ReadOnlyOrAdmin]
    filterset_fields = ["name"]
    ordering_fields = ["id", "name"]

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = people.team_save(name=data["name"], assignment_mode=data.get("assignment_mode"),
                                               members=data.get("members"))

    def perform_update(self, serializer):
        data = serializer.validated_data
        serializer.instance = people.team_save(team=serializer.instance, name=data.get("name"),
                                               assignment_mode=data.get("assignment_mode"),
                                               members=data.get("members"))

    def perform_destroy(self, instance):
        people.team_delete(team=instance)


class AgentFilter(django_filters.FilterSet):
    team = django_filters.ModelChoiceFilter(field_name="teams", queryset=Team.objects.all())

    class Meta:
        model = User
        fields = ["role", "availability", "is_active", "team"]


@extend_schema_view(list=extend_schema(summary="List agents"), retrieve=extend_schema(summary="An agent"),
                    update=extend_schema(summary="Update an agent (admins)"),
                    partial_update=extend_schema(summary="Update an agent (admins)"))
class AgentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                   viewsets.GenericViewSet):
    queryset = User.objects.prefetch_related("teams").order_by("username")
    serializer_class = AgentSerializer
    permission_classes = [ReadOnlyOrAdmin]
    filterset_class = AgentFilter
    ordering_fields = ["id", "username", "email"]

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        teams = data.pop("teams", None)
        serializer.instance = people.agent_update(agent=serializer.instance, teams=teams, **data)
