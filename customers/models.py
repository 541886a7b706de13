"""One customer across every channel, and what they bought."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class IdentityKind(models.TextChoices):
    EMAIL = "email", _("Email")
    PHONE = "phone", _("Phone")
    WHATSAPP = "whatsapp", _("WhatsApp")
    MESSENGER = "messenger", _("Messenger")
    INSTAGRAM = "instagram", _("Instagram")
    TELEGRAM = "telegram", _("Telegram")
    TWITTER = "twitter", _("X (Twitter)")
    CHAT = "chat", _("Chat visitor")


class Customer(models.Model):
    name = models.CharField(_("name"), max_length=200, blank=True)
    company = models.CharField(_("company"), max_length=200, blank=True)
    attributes = models.JSONField(_("custom attributes"), default=dict, blank=True)
    language = models.CharField(_("language"), max_length=10, blank=True)
    external_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    # the channel kind and time of the customer's latest inbound message, on any conversation
    last_inbound_kind = models.CharField(max_length=20, blank=True)
    last_inbound_channel = models.ForeignKey("channels_app.Channel", null=True, blank=True,
                                             on_delete=models.SET_NULL, related_name="+")
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen_at"]
        verbose_name = _("customer")
        verbose_name_plural = _("customers")

    def __str__(self) -> str:
        return self.name or self.primary_identity_value or f"Customer #{self.pk}"

    @property
    def primary_identity_value(self) -> str:
        ident = next(iter(self.identities.all()), None)
        return ident.value if ident else ""

    @property
    def first_name(self) -> str:
        return (self.name or "").split(" ")[0]

    @property
    def display_name(self) -> str:
        return str(self)


class Identity(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(_("kind"), max_length=20, choices=IdentityKind.choices)
    value = models.CharField(_("value"), max_length=320)
    verified = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # phone and whatsapp identities share one number space: a number
            # belongs to one customer whichever of the two kinds it came as
            models.UniqueConstraint(
                models.Case(models.When(kind__in=["phone", "whatsapp"], then=models.Value("tel")),
                            default=models.F("kind"), output_field=models.CharField()),
                "value", name="identity_unique_kind_value"),
        ]
        # lookups filter on value (and a set of kinds); the unique index above
        # leads with an expression and cannot serve them
        indexes = [models.Index(fields=["value"], name="identity_value")]
        ordering = ["kind", "created_at"]
        verbose_name = _("identity")
        verbose_name_plural = _("identities")

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class CustomerMerge(models.Model):
    """Audit record of a merge: what the merged customer was, and what moved."""

    survivor = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="merges")
    merged_customer_id = models.BigIntegerField()
    snapshot = models.JSONField(default=dict)
    moved = models.JSONField(default=dict)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]


class MergeSuggestion(models.Model):
    """Two customers that are probably one person; an agent confirms or dismisses."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    other = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    dismissed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "other"], name="merge_suggestion_unique")]


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    external_id = models.CharField(max_length=200, unique=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3, default="USD")
    placed_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-placed_at"]
        indexes = [models.Index(fields=["customer", "placed_at"])]
