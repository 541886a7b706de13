"""/api/v1/channels/: everybody reads, admins configure. Secrets are write-only."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets

from channels_app import services
from channels_app.models import Channel
from helpdesk.api.permissions import ReadOnlyOrAdmin

from .serializers import ChannelSerializer


@extend_schema_view(
    list=extend_schema(summary="List channels"),
    retrieve=extend_schema(summary="A channel"),
    create=extend_schema(summary="Create a channel (admins)"),
    update=extend_schema(summary="Update a channel (admins)"),
    partial_update=extend_schema(summary="Update a channel (admins)"),
    destroy=extend_schema(summary="Delete a channel (admins)"),
)
class ChannelViewSet(viewsets.ModelViewSet):
    queryset = Channel.objects.select_related("team").order_by("kind", "name", "id")
    serializer_class = ChannelSerializer
    permission_classes = [ReadOnlyOrAdmin]
    filterset_fields = ["kind", "active", "team"]
    ordering_fields = ["id", "kind", "name", "created_at"]

    def _config(self, data) -> dict:
        return {**data.get("settings", {}), **data.get("secrets", {})}

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.channel_save(kind=data["kind"], name=data["name"],
                                                    team=data.get("team"), active=data.get("active", True),
                                                    config=self._config(data))

    def perform_update(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.channel_save(
            channel=serializer.instance, name=data.get("name"), team=data.get("team", ...),
            active=data.get("active"), config=self._config(data))

    def perform_destroy(self, instance):
        services.channel_delete(channel=instance)
