"""Channel-side automation hooks (called from conversations.automation)."""
from __future__ import annotations


def auto_acknowledge_hook(message, conversation_created: bool) -> None:
    """Send the channel's optional auto-acknowledgement (email channels)."""
    channel = message.channel
    if channel is None or not channel.settings.get("auto_ack"):
        return
    try:
        from .adapters.email.autoack import maybe_acknowledge
    except ImportError:
        return
    maybe_acknowledge(message, conversation_created)


auto_acknowledge_hook.wants = lambda message, created: bool(message.channel and message.channel.settings.get("auto_ack"))
