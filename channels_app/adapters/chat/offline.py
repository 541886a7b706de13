"""Replies a chat visitor will not see in the widget go by email.

Two cases: the visitor was not on the page when the agent replied (and left
an email address, e.g. in the offline form), or the reply stayed unread in an
open-but-abandoned widget for CHAT_OFFLINE_EMAIL_DELAY seconds after the
visitor left (the periodic task `email_unseen_replies`).

The copy is a reply through an active email channel
(`conversations.services.reply(channel=...)`): the email adapter gives it the
conversation's reply-token Reply-To address, so the customer's email answer
continues the same conversation.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import override

from conversations.models import DeliveryStatus, Direction, Message

from .i18n import widget_language

log = logging.getLogger(__name__)


def email_channel_for(message):
    from channels_app.models import Channel

    team_id = message.conversation.team_id
    channels = Channel.objects.filter(kind="email", active=True).order_by("pk")
    return channels.filter(team_id=team_id).first() or channels.first()


def email_copy(message: Message, *, reason: str) -> Message | None:
    """Send a chat reply again by email, once. Returns the email message or None."""
    from conversations import services
    from customers.models import Identity

    if (message.meta or {}).get("emailed_as"):
        return None
    customer = message.conversation.customer
    if not Identity.objects.filter(customer=customer, kind="email").exists():
        return None
    channel = email_channel_for(message)
    if channel is None:
        log.warning("chat reply %s not emailed (%s): no active email channel", message.pk, reason)
        return None
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message.pk)
        if (locked.meta or {}).get("emailed_as"):
            return None
        with override(widget_language(customer.language, getattr(message, "channel", None))):
            intro = _("You have a reply to your chat with us:")
            outro = _("Reply to this email to continue the conversation.")
        body = f"{intro}\n\n{message.body_text}\n\n-- \n{outro}"
        try:
            copy = services.reply(conversation=message.conversation, author=None, body=body, channel=channel,
                                  automated=True, author_name=message.author_name,
                                  meta={"chat_copy_of": message.pk, "reason": reason})
        except services.NoRecipient:
            return None
        locked.meta = {**(locked.meta or {}), "emailed_as": copy.pk}
        locked.save(update_fields=["meta"])
    message.meta = locked.meta
    return copy


def email_unseen_replies(now=None) -> int:
    """Email agent replies on chat that nobody read, once the visitor has been
    gone for CHAT_OFFLINE_EMAIL_DELAY seconds. Returns how many were emailed."""
    from . import live

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.CHAT_OFFLINE_EMAIL_DELAY)
    candidates = (Message.objects.filter(direction=Direction.OUTBOUND, channel_kind="chat", automated=False,
                                         created_at__lte=cutoff, created_at__gte=now - timedelta(days=7),
                                         delivery_status__in=[DeliveryStatus.SENT, DeliveryStatus.DELIVERED])
                  .exclude(meta__has_key="emailed_as")
                  .select_related("conversation", "conversation__customer").order_by("created_at")[:200])
    count = 0
    for message in candidates:
        customer_id = message.conversation.customer_id
        if live.customer_online(customer_id):
            continue  # still on the page: the widget shows it
        left = live.customer_left_at(customer_id)
        if left and now.timestamp() - left < settings.CHAT_OFFLINE_EMAIL_DELAY:
            continue  # left only a moment ago: they may come back and read it
        if email_copy(message, reason="unseen"):
            count += 1
    return count
