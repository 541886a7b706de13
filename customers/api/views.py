"""/api/v1/customers/ and /api/v1/orders/. Writes go through customers.services."""
from __future__ import annotations

import django_filters
from django.db.models import Q
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from customers import services
from customers.models import Customer, Order
from helpdesk.api.errors import ERROR_RESPONSES, Conflict
from helpdesk.api.filters import UTCIsoDateTimeFilter
from helpdesk.api.permissions import ReadOnlyOrManager

from .serializers import CustomerMergeSerializer, CustomerSerializer, CustomerUpdateSerializer, OrderSerializer


class CustomerFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_q", label="Name, company or identity value")
    email = django_filters.CharFilter(method="filter_email")
    phone = django_filters.CharFilter(method="filter_phone")
    external_id = django_filters.CharFilter()
    updated_after = UTCIsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    updated_before = UTCIsoDateTimeFilter(field_name="updated_at", lookup_expr="lt")
    created_after = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Customer
        fields = ["q", "email", "phone", "external_id"]

    def filter_q(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(company__icontains=value)
                               | Q(pk__in=Customer.objects.filter(identities__value__icontains=value).values("pk")))

    def filter_email(self, queryset, name, value):
        return queryset.filter(pk__in=Customer.objects.filter(identities__kind="email",
                                                              identities__value=value.strip().lower()).values("pk"))

    def filter_phone(self, queryset, name, value):
        try:
            _kind, normalized = services.normalize_identity("phone", value)
        except services.InvalidIdentity:
            return queryset.none()
        return queryset.filter(pk__in=Customer.objects.filter(identities__kind__in=["phone", "whatsapp"],
                                                              identities__value=normalized).values("pk"))


def _identity_pairs(serializer) -> list[tuple[str, str]]:
    return [(i["kind"], i["value"]) for i in serializer.validated_data.get("identities", [])]


@extend_schema_view(
    list=extend_schema(summary="List customers", description="Every customer with nested identities."),
    retrieve=extend_schema(summary="A customer"),
    create=extend_schema(summary="Create a customer", responses={201: CustomerSerializer, **ERROR_RESPONSES}),
    update=extend_schema(summary="Replace a customer's fields (identities are added)",
                         request=CustomerUpdateSerializer, responses={200: CustomerSerializer, **ERROR_RESPONSES}),
    partial_update=extend_schema(summary="Update a customer (identities are added)",
                                 request=CustomerUpdateSerializer, responses={200: CustomerSerializer, **ERROR_RESPONSES}),
)
class CustomerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.UpdateModelMixin, viewsets.GenericViewSet):
    queryset = Customer.objects.prefetch_related("identities").order_by("-id")
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilter
    ordering_fields = ["id", "name", "created_at", "updated_at", "last_seen_at"]
    ordering = ["-id"]

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return CustomerUpdateSerializer
        if self.action == "merge":
            return CustomerMergeSerializer
        return CustomerSerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            serializer.instance = services.customer_create(
                name=data.get("name", ""), company=data.get("company", ""), language=data.get("language", ""),
                attributes=data.get("attributes"), external_id=data.get("external_id"),
                identities=_identity_pairs(serializer), actor=self.request.user)
        except services.InvalidIdentity as exc:
            raise serializers.ValidationError({"identities": [str(exc)]})
        except services.IdentityTaken as exc:
            raise Conflict(str(exc))

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        identities = _identity_pairs(serializer)
        data.pop("identities", None)
        customer = services.customer_update(customer=serializer.instance, **data)
        for kind, value in identities:
            try:
                services.identity_add(customer=customer, kind=kind, value=value, actor=self.request.user)
            except services.InvalidIdentity as exc:
                raise serializers.ValidationError({"identities": [str(exc)]})
        serializer.instance = Customer.objects.prefetch_related("identities").get(pk=customer.pk)

    @extend_schema(summary="Merge another customer into this one",
                   description="Moves the other customer's identities, conversations, orders and survey answers "
                               "here and deletes it. Merging a customer into itself is a 409.",
                   request=CustomerMergeSerializer,
                   responses={200: CustomerSerializer, **ERROR_RESPONSES})
    @action(detail=True, methods=["post"])
    def merge(self, request, pk=None):
        survivor = self.get_object()
        payload = CustomerMergeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        other_id = payload.validated_data["other"]
        if other_id == survivor.pk:
            raise Conflict("A customer cannot be merged into itself.")
        merged = Customer.objects.filter(pk=other_id).first()
        if merged is None:
            raise serializers.ValidationError({"other": ["No such customer."]})
        try:
            services.customer_merge(survivor=survivor, merged=merged, actor=request.user,
                                    reason=payload.validated_data.get("reason", ""))
        except services.MergeConflict as exc:
            raise Conflict(str(exc))
        survivor = Customer.objects.prefetch_related("identities").get(pk=survivor.pk)
        return Response(CustomerSerializer(survivor, context=self.get_serializer_context()).data)


class OrderFilter(django_filters.FilterSet):
    placed_after = UTCIsoDateTimeFilter(field_name="placed_at", lookup_expr="gte")
    placed_before = UTCIsoDateTimeFilter(field_name="placed_at", lookup_expr="lt")

    class Meta:
        model = Order
        fields = ["customer", "currency", "external_id"]


@extend_schema_view(
    list=extend_schema(summary="List orders"),
    retrieve=extend_schema(summary="An order"),
    create=extend_schema(summary="Create an order (an existing external_id is updated)",
                         responses={201: OrderSerializer, **ERROR_RESPONSES}),
    update=extend_schema(responses={200: OrderSerializer, **ERROR_RESPONSES}),
    partial_update=extend_schema(responses={200: OrderSerializer, **ERROR_RESPONSES}),
)
class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                   mixins.UpdateModelMixin, viewsets.GenericViewSet):
    """Orders: a customer's value for CLTV and retention. Managers and admins write."""

    queryset = Order.objects.all().order_by("-placed_at", "-id")
    serializer_class = OrderSerializer
    permission_classes = [ReadOnlyOrManager]
    filterset_class = OrderFilter
    ordering_fields = ["placed_at", "amount", "id"]
    ordering = ["-placed_at"]

    def _save(self, serializer, instance=None):
        data = serializer.validated_data
        order, _created = services.order_upsert(
            customer=data.get("customer") or instance.customer,
            external_id=data.get("external_id") or instance.external_id,
            amount=data.get("amount", getattr(instance, "amount", None)),
            currency=data.get("currency", getattr(instance, "currency", "USD")),
            placed_at=data.get("placed_at", getattr(instance, "placed_at", None)))
        serializer.instance = order

    def perform_create(self, serializer):
        self._save(serializer)

    def perform_update(self, serializer):
        new_id = serializer.validated_data.get("external_id")
        if new_id is not None and new_id != serializer.instance.external_id:
            raise serializers.ValidationError({"external_id": ["The external id of an order cannot change."]})
        self._save(serializer, serializer.instance)
