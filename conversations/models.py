"""Conversations, messages, attachments, the event log, teams and tags."""
from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def _reply_token() -> str:
    return secrets.token_hex(8)


class AssignmentMode(models.TextChoices):
    MANUAL = "manual", _("Manual")
    ROUND_ROBIN = "round_robin", _("Round robin")
    LEAST_LOADED = "least_loaded", _("Least loaded")


class Team(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True,
                                     verbose_name=_("members"))
    assignment_mode = models.CharField(_("assignment"), max_length=20, choices=AssignmentMode.choices,
                                       default=AssignmentMode.MANUAL)
    last_assigned = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                      on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name = _("team")
        verbose_name_plural = _("teams")

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(_("name"), max_length=60, unique=True)
    color = models.CharField(max_length=7, default="#64748b")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Status(models.TextChoices):
    OPEN = "open", _("Open")
    PENDING = "pending", _("Pending")
    SNOOZED = "snoozed", _("Snoozed")
    RESOLVED = "resolved", _("Resolved")


ACTIVE_STATUSES = (Status.OPEN, Status.PENDING, Status.SNOOZED)


class Priority(models.TextChoices):
    LOW = "low", _("Low")
    NORMAL = "normal", _("Normal")
    HIGH = "high", _("High")
    URGENT = "urgent", _("Urgent")


class Conversation(models.Model):
    """One case, whatever channels it crosses. Its pk is the number shown as #N."""

    customer = models.ForeignKey("customers.Customer", on_delete=models.PROTECT, related_name="conversations")
    subject = models.CharField(_("subject"), max_length=300, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.OPEN)
    priority = models.CharField(_("priority"), max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="assigned_conversations", verbose_name=_("assignee"))
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="conversations", verbose_name=_("team"))
    tags = models.ManyToManyField(Tag, blank=True, related_name="conversations")
    origin_channel = models.ForeignKey("channels_app.Channel", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")
    origin_kind = models.CharField(max_length=20, blank=True)
    last_inbound_channel = models.ForeignKey("channels_app.Channel", null=True, blank=True,
                                             on_delete=models.SET_NULL, related_name="+")
    last_inbound_kind = models.CharField(max_length=20, blank=True)
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_message_preview = models.CharField(max_length=200, blank=True)
    # set while the customer waits for a public reply; cleared by the reply
    waiting_since = models.DateTimeField(null=True, blank=True)
    first_inbound_at = models.DateTimeField(null=True, blank=True)
    first_reply_at = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    reply_token = models.CharField(max_length=32, unique=True, default=_reply_token)
    external_id = models.CharField(max_length=200, null=True, blank=True, unique=True)
    follow_up_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="follow_ups")
    message_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_message_at"]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [
            models.Index(fields=["customer", "status"]),
            models.Index(fields=["status", "-last_message_at", "-id"], name="conv_status_activity"),
            models.Index(fields=["team", "status", "-last_message_at"], name="conv_team_status_activity"),
            models.Index(fields=["assignee", "status", "-last_message_at"], name="conv_assignee_status_activity"),
            models.Index(fields=["status", "waiting_since"], name="conv_status_waiting"),
            # inbox "longest waiting" keyset walk (issue 6): only waiting rows, small
            models.Index(fields=["waiting_since", "id"], name="conv_waiting_keyset",
                         condition=models.Q(waiting_since__isnull=False)),
            models.Index(fields=["-last_message_at", "-id"], name="conv_activity"),
            models.Index(fields=["created_at"]),
            models.Index(fields=["updated_at"]),
            # API cursor pages (newest created first) per status / team / assignee (issue 8)
            models.Index(fields=["status", "-created_at", "-id"], name="conv_status_created"),
            models.Index(fields=["team", "status", "-created_at"], name="conv_team_status_created"),
            models.Index(fields=["assignee", "status", "-created_at"], name="conv_assignee_status_created"),
            # SLA warnings (metrics.sla_tasks): unanswered active conversations by first-response start
            models.Index(fields=["priority", "first_inbound_at"], name="conv_sla_first_response",
                         condition=models.Q(first_reply_at__isnull=True, status__in=["open", "pending", "snoozed"])),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject}".strip()

    @property
    def number(self) -> int:
        return self.pk

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class Direction(models.TextChoices):
    INBOUND = "inbound", _("Inbound")
    OUTBOUND = "outbound", _("Outbound")
    NOTE = "note", _("Note")


class AuthorType(models.TextChoices):
    CUSTOMER = "customer", _("Customer")
    AGENT = "agent", _("Agent")
    AUTOMATION = "automation", _("Automation")
    SYSTEM = "system", _("System")


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    READ = "read", _("Read")
    FAILED = "failed", _("Failed")


DELIVERY_RANK = {"queued": 0, "sent": 1, "delivered": 2, "read": 3}


class Message(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    direction = models.CharField(max_length=10, choices=Direction.choices)
    channel = models.ForeignKey("channels_app.Channel", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="messages")
    channel_kind = models.CharField(max_length=20, blank=True)
    author_type = models.CharField(max_length=12, choices=AuthorType.choices)
    author_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    author_name = models.CharField(max_length=200, blank=True)
    automated = models.BooleanField(default=False)
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)  # sanitized
    subject = models.CharField(max_length=300, blank=True)
    external_id = models.CharField(max_length=500, null=True, blank=True)
    recipient = models.CharField(max_length=320, blank=True)
    delivery_status = models.CharField(max_length=10, choices=DeliveryStatus.choices, blank=True)
    delivery_error = models.TextField(blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    envelope = models.ForeignKey("channels_app.InboundEnvelope", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["channel", "external_id"], name="message_unique_channel_external_id"),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at", "id"], name="msg_conversation_created"),
            models.Index(fields=["external_id"], name="msg_external_id"),
            models.Index(fields=["delivery_status", "next_attempt_at"], name="msg_outbox"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.channel_kind} #{self.pk}"

    @property
    def is_public_reply(self) -> bool:
        return self.direction == Direction.OUTBOUND and self.author_type == AuthorType.AGENT and not self.automated


class Attachment(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to="attachments/%Y/%m/", max_length=300)
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=200, default="application/octet-stream")
    size = models.PositiveBigIntegerField(default=0)
    content_id = models.CharField(max_length=255, blank=True)  # for inline cid: images
    inline = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.filename

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/") and self.content_type != "image/svg+xml"


class ThreadKey(models.Model):
    """Keys that point at a conversation: email Message-IDs (own and referenced)
    and provider thread ids. Threading looks inbound hints up here."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="thread_keys")
    key = models.CharField(max_length=500, db_index=True)
    own = models.BooleanField(default=False)  # the message's own id, not a reference

    class Meta:
        constraints = [models.UniqueConstraint(fields=["conversation", "key"], name="threadkey_unique")]


class EventKind(models.TextChoices):
    CREATED = "created", _("Created")
    MESSAGE_IN = "message_in", _("Message received")
    MESSAGE_OUT = "message_out", _("Reply sent")
    NOTE = "note", _("Note added")
    ASSIGNED = "assigned", _("Assigned")
    TEAM_CHANGED = "team_changed", _("Team changed")
    STATUS_CHANGED = "status_changed", _("Status changed")
    RESOLVED = "resolved", _("Resolved")
    REOPENED = "reopened", _("Reopened")
    SNOOZED = "snoozed", _("Snoozed")
    PRIORITY_CHANGED = "priority_changed", _("Priority changed")
    TAGGED = "tagged", _("Tags changed")
    CHANNEL_SWITCHED = "channel_switched", _("Channel switched")
    CUSTOMERS_MERGED = "customers_merged", _("Customers merged")
    CONVERSATIONS_MERGED = "conversations_merged", _("Conversations merged")
    DELIVERY_FAILED = "delivery_failed", _("Delivery failed")
    SURVEY_SENT = "survey_sent", _("Survey sent")
    SURVEY_ANSWERED = "survey_answered", _("Survey answered")


class ConversationEvent(models.Model):
    """Append-only log of everything that happens to a conversation. KPIs are
    computed from it (KPI.md)."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=EventKind.choices)
    at = models.DateTimeField(default=timezone.now)
    actor_type = models.CharField(max_length=12, choices=AuthorType.choices, default=AuthorType.SYSTEM)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["conversation", "at", "id"], name="event_conversation_at"),
            models.Index(fields=["kind", "at"], name="event_kind_at"),
            models.Index(fields=["at"], name="event_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on #{self.conversation_id} at {self.at:%Y-%m-%d %H:%M}"


class CannedResponse(models.Model):
    title = models.CharField(_("title"), max_length=100)
    shortcut = models.SlugField(_("shortcut"), max_length=40, unique=True)
    body = models.TextField(_("body"), help_text=_("Placeholders: {{ customer.first_name }}, {{ agent.name }}…"))
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["title"]


class SavedView(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(_("name"), max_length=80)
    query = models.CharField(max_length=1000)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]


class ReadMarker(models.Model):
    """When an agent last looked at a conversation (unread markers)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="read_markers")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "conversation"], name="readmarker_unique")]


class Notification(models.Model):
    """A small per-agent notification list (mentions in notes; issue 6)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=20, default="mention")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    text = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at", "-created_at"], name="notification_user_unread")]
