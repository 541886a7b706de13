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
