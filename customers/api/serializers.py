from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from helpdesk.api.validators import no_nul

from customers.models import Customer, Identity, IdentityKind, Order


class IdentitySerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=IdentityKind.choices)
    value = serializers.CharField(max_length=320)

    class Meta:
        model = Identity
        fields = ["id", "kind", "value", "verified", "created_at"]
        read_only_fields = ["id", "verified", "created_at"]


@extend_schema_serializer(examples=[
    OpenApiExample("A customer", request_only=True, value={
        "name": "Kim Lee", "company": "Acme", "language": "en", "external_id": "shop-1001",
        "identities": [{"kind": "email", "value": "kim@example.org"}, {"kind": "phone", "value": "+15551230001"}]}),
])
class CustomerSerializer(serializers.ModelSerializer):
    identities = IdentitySerializer(many=True, required=False)
    external_id = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    attributes = serializers.DictField(required=False, validators=[no_nul])

    class Meta:
        model = Customer
        fields = ["id", "name", "company", "language", "attributes", "external_id", "identities",
                  "first_seen_at", "last_seen_at", "last_inbound_kind", "last_inbound_at", "created_at", "updated_at"]
        read_only_fields = ["id", "first_seen_at", "last_seen_at", "last_inbound_kind", "last_inbound_at",
                            "created_at", "updated_at"]

    def validate_external_id(self, value):
        value = value or None
        if value and Customer.objects.filter(external_id=value).exclude(pk=getattr(self.instance, "pk", None)).exists():
            raise serializers.ValidationError("A customer with this external id exists.")
        return value


class CustomerUpdateSerializer(CustomerSerializer):
    """PATCH/PUT: identities listed here are added (existing ones stay)."""

    class Meta(CustomerSerializer.Meta):
        read_only_fields = [*CustomerSerializer.Meta.read_only_fields, "external_id"]


class CustomerMergeSerializer(serializers.Serializer):
    other = serializers.IntegerField(help_text="Id of the customer merged into this one (and deleted).")
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


@extend_schema_serializer(examples=[
    OpenApiExample("An order", request_only=True, value={
        "customer": 12, "external_id": "order-5001", "amount": "49.90", "currency": "USD",
        "placed_at": "2026-03-20T12:00:00+00:00"}),
])
class OrderSerializer(serializers.ModelSerializer):
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, coerce_to_string=True)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", max_length=3, default="USD")
    placed_at = serializers.DateTimeField()

    class Meta:
        model = Order
        fields = ["id", "customer", "external_id", "amount", "currency", "placed_at", "created_at"]
        read_only_fields = ["id", "created_at"]
        # external_id uniqueness is an upsert key (POST with a known id updates), not a validation error
        extra_kwargs = {"external_id": {"validators": []}}
