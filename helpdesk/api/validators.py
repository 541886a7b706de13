"""Validators shared by the API serializers."""
from rest_framework import serializers


def has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_nul(v) for v in value)
    return False


def no_nul(value):
    """PostgreSQL's jsonb (and text) cannot store U+0000: a 400, not a 500."""
    if has_nul(value):
        raise serializers.ValidationError("Must not contain NUL characters.")
    return value
