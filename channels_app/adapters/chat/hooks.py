"""Hooks the core calls (conversations.automation)."""
from __future__ import annotations


def after_resolve_hook(conversation) -> None:
    """Tell the visitor's widget the conversation is resolved, with the CSAT
    question (runs after the metrics hook that creates the invitation)."""
    from . import live

    live.conversation_resolved(conversation)
