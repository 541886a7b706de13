"""Optional auto-acknowledgement of new email conversations.

Called after ingest (channels_app.automation) when the channel setting
`auto_ack` is on. Sent at most once per conversation, never in answer to
automated mail (auto-replies, bounces, lists), through
conversations.services.reply(automated=True) so KPIs count it as automated.
"""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import translation
from django.utils.translation import gettext as _

log = logging.getLogger(__name__)


def default_text(conversation) -> str:
    return _("Thank you for your message. We have received your request (#%(number)s) and will answer "
             "as soon as possible. Reply to this email to add anything.") % {"number": conversation.pk}


def maybe_acknowledge(message, conversation_created: bool):
    """Returns the acknowledgement Message, or None when none is due."""
    from conversations import services
    from conversations.models import Conversation, Direction, Message

    channel = message.channel
    if channel is None or channel.kind != "email" or not channel.settings.get("auto_ack"):
        return None
    if message.direction != Direction.INBOUND or message.automated or (message.meta or {}).get("auto_submitted"):
        return None
    with transaction.atomic():
        # the row lock serializes two inbound mails of the same new conversation
        conversation = Conversation.objects.select_for_update().select_related("customer").get(
            pk=message.conversation_id)
        already = Message.objects.filter(conversation=conversation, direction=Direction.OUTBOUND,
                                         automated=True, meta__auto_ack=True).exists()
        if already:
            return None
        language = getattr(conversation.customer, "language", "") or None
        with translation.override(language):
            body = str(channel.settings.get("auto_ack_text") or "") or default_text(conversation)
        try:
            return services.reply(conversation=conversation, author=None, body=body, channel=channel,
                                  automated=True, author_name=channel.name, meta={"auto_ack": True})
        except services.NoRecipient:
            log.info("no auto-ack for conversation %s: no recipient", conversation.pk)
            return None
