from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from helpdesk.api.validators import no_nul

from channels_app.models import SECRET_KEYS, Channel, ChannelKind
from conversations.models import Team


@extend_schema_serializer(examples=[
    OpenApiExample("An API channel", request_only=True, value={
        "kind": "api", "name": "Mobile app", "team": 1,
        "settings": {"webhook_url": "https://app.example.com/threadline"},
        "secrets": {"webhook_secret": "s3cr3t"}}),
])
class ChannelSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=ChannelKind.choices)
    team = serializers.PrimaryKeyRelatedField(queryset=Team.objects.all(), allow_null=True, required=False)
    settings = serializers.DictField(required=False, help_text="Non-secret configuration.")
    secrets = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, write_only=True,
                                    help_text="Credentials; write-only (never returned). An empty value keeps the "
                                              "stored one. Keys: " + ", ".join(sorted(SECRET_KEYS)))
    secrets_set = serializers.SerializerMethodField(help_text="Names of the secrets that are stored.")
    webhook_url = serializers.CharField(read_only=True, help_text="Inbound URL to give the provider.")

    class Meta:
        model = Channel
        fields = ["id", "uuid", "kind", "name", "team", "active", "settings", "secrets", "secrets_set",
                  "webhook_url", "created_at"]
        read_only_fields = ["id", "uuid", "webhook_url", "created_at"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_secrets_set(self, obj) -> list[str]:
        return sorted((obj.secrets or {}).keys())

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # a secret that someone put in `settings` is still never shown
        data["settings"] = {k: v for k, v in (instance.settings or {}).items() if k not in SECRET_KEYS}
        return data

    def validate_settings(self, value):
        return no_nul(value)

    def validate(self, attrs):
        if self.instance is not None and "kind" in attrs and attrs["kind"] != self.instance.kind:
            raise serializers.ValidationError({"kind": ["The kind of a channel cannot change."]})
        return attrs

