"""/api/v1/conversations/ with messages, actions, calls; /api/v1/attachments/.

Every queryset starts from conversations_visible_to(user): a conversation
another team owns is a 404. Writes go through conversations.services.
"""
from __future__ import annotations

import base64
import binascii

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from channels_app.models import Channel
from conversations import services
from conversations.inbound import InboundAttachment
from conversations.models import Attachment, Conversation, Message
from helpdesk.api.idempotency import idempotent
from helpdesk.api.pagination import ConversationCursorPagination, MessageCursorPagination

from .filters import ApiConversationFilter
from .serializers import (
    AssignSerializer,
    AttachmentSerializer,
    CallSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    SnoozeSerializer,
)

IDEMPOTENCY_PARAM = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="Repeat a POST safely: the same key and body return the stored response; "
                "the same key with another body is a 422.")


def _message_queryset():
    return Message.objects.select_related("author_user").prefetch_related("attachments")


def _resolve_channel(value: str):
    value = (value or "").strip()
    if not value:
        return None
    qs = Channel.objects.filter(active=True)
    channel = qs.filter(pk=int(value)).first() if value.isdigit() else qs.filter(kind=value).order_by("pk").first()
    if channel is None:
        raise serializers.ValidationError({"channel": [f"No active channel {value!r}."]})
    return channel


def _attachments(items) -> list[InboundAttachment]:
    out = []
    for i, item in enumerate(items or []):
        try:
            content = base64.b64decode(item["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError({"attachments": [f"Item {i}: content_base64 is not valid base64."]})
        out.append(InboundAttachment(filename=item["filename"], content_type=item["content_type"], content=content))
    return out


@extend_schema_view(
    list=extend_schema(
        summary="List conversations",
        description="Cursor-paginated (follow `next`). Filters: status, channel, assignee (id, `me`, `none`), team "
                    "(id, name, `none`), tag, priority, customer, created/updated ranges and `q` (full text). "
                    "Multi-valued filters take repeats or commas: `?status=open,pending`."),
    retrieve=extend_schema(summary="A conversation"),
    partial_update=extend_schema(summary="Change status, priority, team, assignee or tags",
                                 request=ConversationUpdateSerializer, responses={200: ConversationSerializer}),
    update=extend_schema(summary="Change status, priority, team, assignee or tags",
                         request=ConversationUpdateSerializer, responses={200: ConversationSerializer}),
)
class ConversationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                          viewsets.GenericViewSet):
    serializer_class = ConversationSerializer
    filterset_class = ApiConversationFilter
    pagination_class = ConversationCursorPagination
    ordering_fields = ["created_at", "updated_at", "id"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Conversation.objects.none()
        qs = services.conversations_visible_to(self.request.user).select_related("customer", "assignee", "team")
        return qs if self.action == "list" else qs.prefetch_related("tags")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        # one query for the page's tags: prefetch_related builds a related manager per row, which costs more
        # than the whole list query on a 50-row page
        tags: dict[int, list[str]] = {}
        rows = (Conversation.tags.through.objects.filter(conversation_id__in=[c.pk for c in page])
                .order_by("tag__name").values_list("conversation_id", "tag__name"))
        for conversation_id, name in rows:
            tags.setdefault(conversation_id, []).append(name)
        context = {**self.get_serializer_context(), "tags_by_conversation": tags}
        return self.get_paginated_response(ConversationSerializer(page, many=True, context=context).data)

    def get_serializer_class(self):
        return {
            "update": ConversationUpdateSerializer, "partial_update": ConversationUpdateSerializer,
            "assign": AssignSerializer, "snooze": SnoozeSerializer, "messages": MessageCreateSerializer,
            "calls": CallSerializer,
        }.get(self.action, ConversationSerializer)

    def _detail(self, conversation, code=status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=conversation.pk)
        return Response(ConversationSerializer(fresh, context=self.get_serializer_context()).data, status=code)

    def update(self, request, *args, **kwargs):
        conversation = self.get_object()
        payload = ConversationUpdateSerializer(data=request.data, partial=kwargs.get("partial", False))
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        user = request.user
        with transaction.atomic():
            if "priority" in data:
                services.set_priority(conversation=conversation, priority=data["priority"], actor=user)
            if "team" in data or "assignee" in data:
                conversation.refresh_from_db()
                services.assign(conversation=conversation, actor=user,
                                agent=data.get("assignee", conversation.assignee),
                                team=data.get("team"), set_team="team" in data)
            if "tags" in data:
                current = set(conversation.tags.values_list("name", flat=True))
                wanted = {t.strip() for t in data["tags"] if t.strip()}
                services.tag(conversation=conversation, add=sorted(wanted - current),
                             remove=sorted(current - wanted), actor=user)
            if "status" in data:
                conversation.refresh_from_db()
                services.set_status(conversation=conversation, status=data["status"], actor=user)
        return self._detail(conversation)

    @extend_schema(summary="Assign to an agent and/or a team", request=AssignSerializer,
                   responses={200: ConversationSerializer})
    @action(detail=True, methods=["post"])
    def assign(self, request, pk=None):
        conversation = self.get_object()
        payload = AssignSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        services.assign(conversation=conversation, actor=request.user,
                        agent=data.get("assignee", conversation.assignee) if "assignee" in data
                        else conversation.assignee,
                        team=data.get("team"), set_team="team" in data)
        return self._detail(conversation)

    @extend_schema(summary="Resolve", request=None, responses={200: ConversationSerializer})
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        conversation = self.get_object()
        services.resolve_conversation(conversation=conversation, actor=request.user)
        return self._detail(conversation)

    @extend_schema(summary="Reopen (or wake a snoozed conversation)", request=None,
                   responses={200: ConversationSerializer})
    @action(detail=True, methods=["post"])
    def reopen(self, request, pk=None):
        conversation = self.get_object()
        services.reopen(conversation=conversation, actor=request.user)
        return self._detail(conversation)

    @extend_schema(summary="Snooze until a time", request=SnoozeSerializer, responses={200: ConversationSerializer})
    @action(detail=True, methods=["post"])
    def snooze(self, request, pk=None):
        conversation = self.get_object()
        payload = SnoozeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.snooze(conversation=conversation, until=payload.validated_data["until"], actor=request.user)
        except ValueError as exc:
            raise serializers.ValidationError({"until": [str(exc)]})
        return self._detail(conversation)

    @extend_schema(
        methods=["GET"], summary="List a conversation's messages",
        description="Oldest first, cursor-paginated; includes notes (`kind: note`).",
        request=None, responses={200: MessageSerializer(many=True)})
    @extend_schema(
        methods=["POST"], summary="Send a public reply or add a note",
        description="A reply goes out on `channel` (id or kind; default: where the customer last wrote) "
                    "through the outbox; `kind: note` adds an internal note. Supports `Idempotency-Key`.",
        parameters=[IDEMPOTENCY_PARAM], request=MessageCreateSerializer, responses={201: MessageSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=MessageCursorPagination, filterset_class=None,
            ordering_fields=[])
    def messages(self, request, pk=None):
        conversation = self.get_object()
        if request.method == "GET":
            qs = _message_queryset().filter(conversation=conversation)
            page = self.paginate_queryset(qs)
            return self.get_paginated_response(MessageSerializer(page, many=True,
                                                                 context=self.get_serializer_context()).data)
        return idempotent(request, lambda: self._post_message(request, conversation))

    def _post_message(self, request, conversation):
        payload = MessageCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if data["kind"] == "note":
            message = services.add_note(conversation=conversation, author=request.user, body=data["text"])
        else:
            channel = _resolve_channel(data.get("channel"))
            try:
                message = services.reply(conversation=conversation, author=request.user, body=data["text"],
                                         html=data.get("html", ""), channel=channel,
                                         attachments=_attachments(data.get("attachments")),
                                         resolve=data.get("resolve", False))
            except services.NoRecipient as exc:
                raise serializers.ValidationError({"channel": [str(exc)]})
            except ValueError as exc:  # attachment too large
                raise serializers.ValidationError({"attachments": [str(exc)]})
        message = _message_queryset().get(pk=message.pk)
        return Response(MessageSerializer(message, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(summary="Log a phone call", description="Stored as a phone-channel message "
                   "(inbound: the customer called; outbound: you called).",
                   parameters=[IDEMPOTENCY_PARAM], request=CallSerializer, responses={201: MessageSerializer})
    @action(detail=True, methods=["post"])
    def calls(self, request, pk=None):
        conversation = self.get_object()

        def run():
            payload = CallSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            data = payload.validated_data
            message = services.log_call(conversation=conversation, author=request.user,
                                        direction=data["direction"], duration_seconds=data["duration_seconds"],
                                        outcome=data.get("outcome", ""), summary=data["summary"], at=data.get("at"))
            message = _message_queryset().get(pk=message.pk)
            return Response(MessageSerializer(message, context=self.get_serializer_context()).data,
                            status=status.HTTP_201_CREATED)

        return idempotent(request, run)


@extend_schema_view(
    retrieve=extend_schema(summary="An attachment's metadata"),
)
class AttachmentViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = AttachmentSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Attachment.objects.none()
        visible = services.conversations_visible_to(self.request.user).values("pk")
        return Attachment.objects.filter(message__conversation__in=visible)

    @extend_schema(summary="Download an attachment", request=None,
                   responses={(200, "*/*"): OpenApiResponse(
                       response=OpenApiTypes.BINARY, description="The file, as a download.")})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        from conversations.views import attachment_download

        self.get_object()  # 404 unless visible
        # the app's own download view: the same permission check, headers and sandbox
        return attachment_download(request._request, pk=int(pk))
