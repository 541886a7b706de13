"""`InboundMessage`: the only thing an adapter hands to the core."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class InboundAttachment:
    filename: str
    content_type: str
    content: bytes
    content_id: str = ""
    inline: bool = False


@dataclass
class InboundMessage:
    """A normalized inbound message. No ORM objects except the channel.

    identities: (kind, value) pairs, not yet normalized; the first one is the
    sender's primary identity on this channel.
    thread_keys: explicit thread hints (email In-Reply-To/References, a
    provider's thread id); `own_key` is this message's own thread key (email
    Message-ID) so mail arriving out of order can be threaded.
    """

    channel: object  # channels_app.models.Channel
    external_id: str | None
    identities: list[tuple[str, str]]
    text: str = ""
    html: str = ""
    subject: str = ""
    name: str = ""
    language: str = ""
    created_at: datetime | None = None
    attachments: list[InboundAttachment] = field(default_factory=list)
    thread_keys: list[str] = field(default_factory=list)
    own_key: str = ""
    reply_token: str = ""
    conversation_number: int | None = None
    # automated mail (auto-replies, bounces): never reopens, never answered
    auto_submitted: bool = False
    meta: dict = field(default_factory=dict)
    envelope_id: int | None = None
    # force a new conversation (e.g. a web form submission is always a new case)
    new_conversation: bool = False
    # email threads follow the stricter continuity rule of ARCHITECTURE.md
    is_email_thread: bool = False
    notes: list[str] = field(default_factory=list)
