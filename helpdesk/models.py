"""Users (agents) with roles, and API tokens."""
from __future__ import annotations

import hashlib
import secrets

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    ADMIN = "admin", _("Admin")
    MANAGER = "manager", _("Manager")
    AGENT = "agent", _("Agent")


class Availability(models.TextChoices):
    ONLINE = "online", _("Online")
    AWAY = "away", _("Away")
    OFFLINE = "offline", _("Offline")


class User(AbstractUser):
    """An agent, manager or admin. Customers are not users (see customers.Customer)."""

    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.AGENT)
    access_all = models.BooleanField(
        _("access to all conversations"), default=False,
        help_text=_("Agents see their teams' conversations only unless this is set."),
    )
    availability = models.CharField(_("availability"), max_length=16, choices=Availability.choices,
                                    default=Availability.OFFLINE)
    availability_changed_at = models.DateTimeField(null=True, blank=True)
    capacity = models.PositiveIntegerField(_("capacity"), default=20,
                                           help_text=_("Most open conversations assigned automatically."))
    display_name = models.CharField(_("display name"), max_length=150, blank=True)
    avatar_color = models.CharField(max_length=7, default="#4f46e5")
    language = models.CharField(_("language"), max_length=10, blank=True)

    class Meta:
        verbose_name = _("agent")
        verbose_name_plural = _("agents")

    @property
    def name(self) -> str:
        return self.display_name or self.get_full_name() or self.username

    @property
    def sees_all(self) -> bool:
        return self.is_superuser or self.role in (Role.ADMIN, Role.MANAGER) or self.access_all

    @property
    def is_manager(self) -> bool:
        return self.is_superuser or self.role in (Role.ADMIN, Role.MANAGER)

    @property
    def is_admin_role(self) -> bool:
        return self.is_superuser or self.role == Role.ADMIN

    @property
    def initials(self) -> str:
        parts = self.name.split()
        return ("".join(p[0] for p in parts[:2]) or self.username[:2]).upper()


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A per-user API token. Only its SHA-256 is stored; the key is shown once."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(_("name"), max_length=100, default="default")
    prefix = models.CharField(max_length=12, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user: User, name: str = "default") -> tuple["ApiToken", str]:
        raw = "tl_" + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw[:10], key_hash=hash_token(raw))
        return token, raw

    @property
    def active(self) -> bool:
        return self.revoked_at is None


# --------------------------------------------------------------------------- outbound webhooks (issue 8)

WEBHOOK_EVENTS = [
    ("conversation.created", _("Conversation created")),
    ("conversation.updated", _("Conversation updated")),
    ("conversation.resolved", _("Conversation resolved")),
    ("message.created", _("Message created")),
    ("survey.answered", _("Survey answered")),
    ("customer.merged", _("Customer merged")),
]
WEBHOOK_EVENT_NAMES = [name for name, _label in WEBHOOK_EVENTS]


def _webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class WebhookSubscription(models.Model):
    """An integrator's URL that receives signed JSON for the events it chose."""

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="webhook_subscriptions")
    name = models.CharField(_("name"), max_length=100, blank=True)
    url = models.URLField(_("target URL"), max_length=500)
    events = models.JSONField(_("events"), default=list)
    secret = models.CharField(max_length=100, default=_webhook_secret)
    active = models.BooleanField(_("active"), default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("webhook subscription")

    def __str__(self) -> str:
        return f"{self.name or self.url} ({', '.join(self.events)})"


class DeliveryState(models.TextChoices):
    PENDING = "pending", _("Pending")
    RETRYING = "retrying", _("Retrying")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")


class WebhookDelivery(models.Model):
    """One event for one subscription, with every attempt's outcome (the delivery log)."""

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(db_index=True)
    event = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["subscription", "-created_at"], name="webhook_delivery_sub_created"),
                   models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due"),
                   models.Index(fields=["created_at"], name="webhook_delivery_created")]


class IdempotencyKey(models.Model):
    """A stored response for an `Idempotency-Key` POST: a repeat gets the same answer."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    scope = models.CharField(max_length=200)  # method + path
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_user_key")]
