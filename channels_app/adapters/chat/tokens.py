"""Signed visitor tokens (django.core.signing) and signed attachment links.

A visitor token names one browser of one chat channel; the widget keeps it in
localStorage so a reload or a return visit continues the same conversation.
It is never an identity an attacker can guess: it is signed with SECRET_KEY.
"""
from __future__ import annotations

import uuid

from django.core import signing

SALT = "threadline.chat.visitor"
ATTACHMENT_SALT = "threadline.chat.attachment"
# A returning visitor keeps their conversation for a year; a token older than
# that is replaced by a new one (a new visitor).
MAX_AGE = 365 * 24 * 3600
ATTACHMENT_MAX_AGE = 30 * 24 * 3600


def new_visitor_id() -> str:
    return uuid.uuid4().hex


def make_token(channel, visitor_id: str) -> str:
    return signing.dumps({"c": channel.uuid.hex, "v": visitor_id}, salt=SALT, compress=True)


def read_token(channel, token: str | None) -> str | None:
    """The visitor id in a valid token for this channel, or None."""
    if not token or not isinstance(token, str) or len(token) > 500:
        return None
    try:
        data = signing.loads(token, salt=SALT, max_age=MAX_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("c") != channel.uuid.hex:
        return None
    visitor = data.get("v")
    if not isinstance(visitor, str) or not visitor.isalnum() or len(visitor) > 64:
        return None
    return visitor


def attachment_token(attachment_id: int, visitor_id: str) -> str:
    return signing.dumps({"a": attachment_id, "v": visitor_id}, salt=ATTACHMENT_SALT)


def read_attachment_token(token: str) -> tuple[int, str] | None:
    try:
        data = signing.loads(token, salt=ATTACHMENT_SALT, max_age=ATTACHMENT_MAX_AGE)
    except signing.BadSignature:
        return None
    try:
        return int(data["a"]), str(data["v"])
    except (KeyError, TypeError, ValueError):
        return None
