from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from conversations.models import Attachment, Conversation, Message, Priority, Status, Team
from helpdesk.models import User


def absolute(context, path: str) -> str:
    request = (context or {}).get("request")
    if request is not None:
        return request.build_absolute_uri(path)
    from django.conf import settings

    return settings.PUBLIC_URL + path


class CustomerBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class AgentBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    name = serializers.CharField()
    email = serializers.EmailField()


class TeamBriefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class ConversationSerializer(serializers.ModelSerializer):
    # plain dicts instead of nested serializers: a list page builds 3 fewer serializers per row
    customer = serializers.SerializerMethodField()
    assignee = serializers.SerializerMethodField()
    team = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    channel = serializers.SerializerMethodField(help_text="Channel kind the customer last wrote on (or started on).")
    messages_url = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = ["id", "subject", "status", "priority", "channel", "origin_kind", "customer", "assignee", "team",
                  "tags", "message_count", "last_message_at", "last_message_preview", "last_inbound_at",
                  "waiting_since", "first_inbound_at", "first_reply_at", "snoozed_until", "resolved_at",
                  "follow_up_of", "created_at", "updated_at", "messages_url"]
        read_only_fields = fields

    @extend_schema_field(CustomerBriefSerializer)
    def get_customer(self, obj) -> dict:
        return {"id": obj.customer_id, "name": obj.customer.name}

    @extend_schema_field(AgentBriefSerializer(allow_null=True))
    def get_assignee(self, obj) -> dict | None:
        user = obj.assignee
        if user is None:
            return None
        return {"id": user.pk, "username": user.username, "name": user.name, "email": user.email}

    @extend_schema_field(TeamBriefSerializer(allow_null=True))
    def get_team(self, obj) -> dict | None:
        return {"id": obj.team.pk, "name": obj.team.name} if obj.team_id else None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_tags(self, obj) -> list[str]:
        tags = self.context.get("tags_by_conversation")
        if tags is not None:  # preloaded for a whole page (see ConversationViewSet.list)
            return tags.get(obj.pk, [])
        return [t.name for t in obj.tags.all()]

    def get_channel(self, obj) -> str:
        return obj.last_inbound_kind or obj.origin_kind or ""

    def get_messages_url(self, obj) -> str:
        # resolved once per response: reverse() and build_absolute_uri() per row add up on a 200-row page
        template = self.context.get("_messages_url_template")
        if template is None:
            template = absolute(self.context, reverse("api-conversation-messages", kwargs={"pk": 0}))
            template = template.replace("/0/messages/", "/{}/messages/")
            if isinstance(self.context, dict):
                self.context["_messages_url_template"] = template
        return template.format(obj.pk)


@extend_schema_serializer(examples=[
    OpenApiExample("Escalate", request_only=True, value={"priority": "urgent", "tags": ["vip", "refund"]}),
])
class ConversationUpdateSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)
    team = serializers.PrimaryKeyRelatedField(queryset=Team.objects.all(), required=False, allow_null=True)
    assignee = serializers.PrimaryKeyRelatedField(queryset=User.objects.filter(is_active=True), required=False,
                                                  allow_null=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=60), required=False,
                                 help_text="The complete set of tag names (replaces the current tags).")


class AssignSerializer(serializers.Serializer):
    assignee = serializers.PrimaryKeyRelatedField(queryset=User.objects.filter(is_active=True), allow_null=True,
                                                  required=False, help_text="Agent id; null unassigns.")
    team = serializers.PrimaryKeyRelatedField(queryset=Team.objects.all(), allow_null=True, required=False,
                                              help_text="Team id; null removes the team. Omit to keep it.")

    def validate(self, attrs):
        if "assignee" not in attrs and "team" not in attrs:
            raise serializers.ValidationError({"assignee": ["Give an assignee and/or a team."]})
        return attrs


class SnoozeSerializer(serializers.Serializer):
    until = serializers.DateTimeField(help_text="ISO 8601 with offset, in the future.")


class AttachmentSerializer(serializers.ModelSerializer):
    download_url = serializers.SerializerMethodField(
        help_text="Download with the same token; checks that you may see the conversation.")

    class Meta:
        model = Attachment
        fields = ["id", "filename", "content_type", "size", "inline", "created_at", "download_url"]
        read_only_fields = fields

    def get_download_url(self, obj) -> str:
        return absolute(self.context, reverse("api-attachment-download", kwargs={"pk": obj.pk}))


class MessageSerializer(serializers.ModelSerializer):
    kind = serializers.SerializerMethodField(help_text="`message` for customer-visible messages, `note` for notes.")
    channel = serializers.CharField(source="channel_kind", read_only=True, help_text="Channel kind.")
    channel_id = serializers.IntegerField(read_only=True, allow_null=True)
    author = AgentBriefSerializer(source="author_user", read_only=True, allow_null=True)
    text = serializers.CharField(source="body_text", read_only=True)
    html = serializers.CharField(source="body_html", read_only=True)
    delivery_status = serializers.CharField(
        read_only=True, help_text="queued, sent, delivered, read or failed; empty for inbound messages and notes.")
    call = serializers.SerializerMethodField(help_text="Call details for logged phone calls, else null.")
    attachments = AttachmentSerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = ["id", "conversation", "kind", "direction", "channel", "channel_id", "author_type", "author",
                  "author_name", "automated", "subject", "text", "html", "recipient", "external_id",
                  "delivery_status", "delivery_error", "sent_at", "delivered_at", "read_at", "created_at", "call",
                  "attachments"]
        read_only_fields = fields

    def get_kind(self, obj) -> str:
        return "note" if obj.direction == "note" else "message"

    @extend_schema_field({"type": "object", "nullable": True, "additionalProperties": {}})
    def get_call(self, obj) -> dict | None:
        return (obj.meta or {}).get("call")


class AttachmentUploadSerializer(serializers.Serializer):
    filename = serializers.CharField(max_length=255)
    content_type = serializers.CharField(max_length=200, default="application/octet-stream")
    content_base64 = serializers.CharField()


@extend_schema_serializer(examples=[
    OpenApiExample("Public reply", request_only=True,
                   value={"text": "Thanks Kim, your refund is on its way.", "channel": "email"}),
    OpenApiExample("Reply and resolve", request_only=True, value={"text": "Done!", "resolve": True}),
    OpenApiExample("Internal note", request_only=True, value={"kind": "note", "text": "Checked with finance."}),
])
class MessageCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=[("reply", "reply"), ("note", "note")], default="reply",
                                   help_text="`reply` (public, default) or `note` (internal).")
    text = serializers.CharField(max_length=100_000, trim_whitespace=False)
    html = serializers.CharField(required=False, allow_blank=True, default="", max_length=500_000)
    channel = serializers.CharField(required=False, allow_blank=True, default="",
                                    help_text="Reply channel: a channel id or kind (`email`, `whatsapp`...). "
                                              "Default: where the customer last wrote.")
    resolve = serializers.BooleanField(default=False, help_text="Resolve the conversation after replying.")
    attachments = AttachmentUploadSerializer(many=True, required=False)

    def validate_text(self, value):
        if not value.strip():
            raise serializers.ValidationError("Must not be blank.")
        return value


class CallSerializer(serializers.Serializer):
    direction = serializers.ChoiceField(choices=[("inbound", "inbound"), ("outbound", "outbound")])
    duration_seconds = serializers.IntegerField(min_value=0, max_value=24 * 3600)
    outcome = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    summary = serializers.CharField(max_length=20_000)
    at = serializers.DateTimeField(required=False, allow_null=True, default=None)
