"""Configured endpoints (a mailbox, a widget, a WhatsApp number...) and the raw inbound log."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from helpdesk.crypto import EncryptedJSONField


class ChannelKind(models.TextChoices):
    EMAIL = "email", _("Email")
    CHAT = "chat", _("Live chat")
    WHATSAPP = "whatsapp", _("WhatsApp")
    MESSENGER = "messenger", _("Messenger")
    INSTAGRAM = "instagram", _("Instagram")
    TELEGRAM = "telegram", _("Telegram")
    TWITTER = "twitter", _("X (Twitter)")
    SMS = "sms", _("SMS")
    PHONE = "phone", _("Phone")
    WEBFORM = "webform", _("Web form")
    API = "api", _("API")


# Which identity kinds can receive a message on a channel kind (first is preferred).
RECIPIENT_IDENTITY_KINDS = {
    "email": ["email"],
    "webform": ["email"],
    "chat": ["chat"],
    "whatsapp": ["whatsapp", "phone"],
    "sms": ["phone", "whatsapp"],
    "phone": ["phone", "whatsapp"],
    "messenger": ["messenger"],
    "instagram": ["instagram"],
    "telegram": ["telegram"],
    "twitter": ["twitter"],
    "api": ["email", "phone", "whatsapp", "messenger", "instagram", "telegram", "twitter", "chat"],
}

# Settings keys that are secrets: stored encrypted, write-only in the API.
SECRET_KEYS = {
    "app_secret", "access_token", "page_access_token", "bot_token", "secret_token", "auth_token",
    "consumer_secret", "password", "verify_token", "api_key", "webhook_secret",
}


class Channel(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(_("kind"), max_length=20, choices=ChannelKind.choices)
    name = models.CharField(_("name"), max_length=100)
    team = models.ForeignKey("conversations.Team", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="channels", verbose_name=_("team"))
    settings = models.JSONField(_("settings"), default=dict, blank=True)
    secrets = EncryptedJSONField(_("secrets"), blank=True, default=dict)
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "name"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def get(self, key: str, default=None):
        """A setting or a secret by key."""
        if key in self.secrets:
            return self.secrets[key]
        return self.settings.get(key, default)

    @property
    def webhook_path(self) -> str:
        return reverse("channels_app:hook", kwargs={"kind": self.kind, "uuid": self.uuid})

    @property
    def webhook_url(self) -> str:
        return settings.PUBLIC_URL + self.webhook_path

    def set_config(self, values: dict) -> None:
        """Split a flat dict of settings into clear settings and encrypted secrets."""
        secrets = dict(self.secrets or {})
        clear = dict(self.settings or {})
        for key, value in values.items():
            if key in SECRET_KEYS:
                if value not in (None, ""):
                    secrets[key] = value
            else:
                clear[key] = value
        self.settings, self.secrets = clear, secrets


class EnvelopeStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    PROCESSED = "processed", _("Processed")
    IGNORED = "ignored", _("Ignored")
    FAILED = "failed", _("Failed")
    REJECTED = "rejected", _("Rejected")


class InboundEnvelope(models.Model):
    """Every raw inbound payload exactly as received, stored before parsing."""

    channel = models.ForeignKey(Channel, null=True, blank=True, on_delete=models.SET_NULL, related_name="envelopes")
    kind = models.CharField(max_length=20)
    source = models.CharField(max_length=20, default="webhook")  # webhook, smtp, imap, api, form
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    headers = models.JSONField(default=dict, blank=True)
    body = models.BinaryField()
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=EnvelopeStatus.choices, default=EnvelopeStatus.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    message_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.kind} envelope #{self.pk} ({self.status})"


# The email adapter's IMAP cursor lives in its package (channels_app/adapters/email/models.py).
from .adapters.email.models import ImapCursor  # noqa: E402,F401
