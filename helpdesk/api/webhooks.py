"""/api/v1/webhook-subscriptions/ with the delivery log.

Everyone may subscribe; a subscription only receives events about
conversations its owner can see. Admins see every subscription."""
from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from helpdesk import webhooks
from helpdesk.models import WEBHOOK_EVENTS, DeliveryState, WebhookDelivery, WebhookSubscription

from .pagination import DeliveryCursorPagination


@extend_schema_serializer(examples=[
    OpenApiExample("Subscribe", request_only=True, value={
        "name": "CRM sync", "url": "https://crm.example.com/hooks/threadline",
        "events": ["conversation.created", "conversation.resolved", "message.created"]}),
])
class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=WEBHOOK_EVENTS), allow_empty=False)
    owner = serializers.PrimaryKeyRelatedField(read_only=True)
    secret = serializers.SerializerMethodField(
        help_text="Signing secret: shown in full when the subscription is created or its secret rotated, "
                  "masked otherwise.")

    class Meta:
        model = WebhookSubscription
        fields = ["id", "name", "url", "events", "active", "secret", "owner", "consecutive_failures", "disabled_at",
                  "disabled_reason", "created_at", "updated_at"]
        read_only_fields = ["id", "secret", "owner", "consecutive_failures", "disabled_at", "disabled_reason",
                            "created_at", "updated_at"]

    def get_secret(self, obj) -> str:
        if self.context.get("reveal_secret"):
            return obj.secret
        return obj.secret[:8] + "…" + obj.secret[-4:]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    state = serializers.ChoiceField(choices=DeliveryState.choices, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = ["id", "subscription", "event_id", "event", "state", "attempts", "response_status", "response_body",
                  "error", "created_at", "last_attempt_at", "next_attempt_at", "delivered_at", "payload"]
        read_only_fields = fields


def _visible_subscriptions(user):
    qs = WebhookSubscription.objects.all()
    return qs if user.is_admin_role else qs.filter(owner=user)


@extend_schema_view(
    list=extend_schema(summary="List webhook subscriptions"),
    retrieve=extend_schema(summary="A webhook subscription"),
    create=extend_schema(summary="Subscribe a URL to events",
                         description="The response carries the signing `secret` once. Targets that resolve to "
                                     "private, loopback or link-local addresses are refused."),
    update=extend_schema(summary="Update a subscription (`active: true` re-enables it)"),
    partial_update=extend_schema(summary="Update a subscription (`active: true` re-enables it)"),
    destroy=extend_schema(summary="Delete a subscription"),
)
class WebhookSubscriptionViewSet(viewsets.ModelViewSet):
    serializer_class = WebhookSubscriptionSerializer
    filterset_fields = ["active"]
    ordering_fields = ["id", "created_at"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookSubscription.objects.none()
        return _visible_subscriptions(self.request.user).order_by("-created_at", "-id")

    def _invalid(self, exc: webhooks.InvalidSubscription):
        return serializers.ValidationError({exc.field: [exc.message]})

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            sub = webhooks.subscription_create(owner=request.user, url=data["url"], events=data["events"],
                                               name=data.get("name", ""))
        except webhooks.InvalidSubscription as exc:
            raise self._invalid(exc)
        out = WebhookSubscriptionSerializer(sub, context={**self.get_serializer_context(), "reveal_secret": True})
        return Response(out.data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        try:
            serializer.instance = webhooks.subscription_update(subscription=serializer.instance,
                                                               **serializer.validated_data)
        except webhooks.InvalidSubscription as exc:
            raise self._invalid(exc)

    def perform_destroy(self, instance):
        webhooks.subscription_delete(subscription=instance)

    @extend_schema(summary="Rotate the signing secret", request=None,
                   responses={200: WebhookSubscriptionSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        sub = webhooks.subscription_rotate_secret(subscription=self.get_object())
        return Response(WebhookSubscriptionSerializer(
            sub, context={**self.get_serializer_context(), "reveal_secret": True}).data)

    @extend_schema(summary="Send a test `ping` event", request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def ping(self, request, pk=None):
        delivery = webhooks.emit_test(self.get_object())
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="The delivery log of a subscription", request=None,
                   responses={200: WebhookDeliverySerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=DeliveryCursorPagination,
            filterset_fields=[], ordering_fields=[])
    def deliveries(self, request, pk=None):
        sub = self.get_object()
        qs = WebhookDelivery.objects.filter(subscription=sub)
        state = request.query_params.get("state")
        if state:
            if state not in DeliveryState.values:
                raise serializers.ValidationError({"state": [f"One of {', '.join(DeliveryState.values)}."]})
            qs = qs.filter(state=state)
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookDeliveryFilter(django_filters.FilterSet):
    class Meta:
        model = WebhookDelivery
        fields = ["subscription", "state", "event"]


@extend_schema_view(list=extend_schema(summary="All deliveries of your subscriptions"),
                    retrieve=extend_schema(summary="A delivery"))
class WebhookDeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = WebhookDeliverySerializer
    filterset_class = WebhookDeliveryFilter
    pagination_class = DeliveryCursorPagination
    ordering_fields = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookDelivery.objects.none()
        return WebhookDelivery.objects.filter(subscription__in=_visible_subscriptions(self.request.user))

    @extend_schema(summary="Deliver again", request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def redeliver(self, request, pk=None):
        copy = webhooks.redeliver(self.get_object())
        return Response(WebhookDeliverySerializer(copy).data, status=status.HTTP_202_ACCEPTED)
