"""Encryption at rest for secrets kept in the database (channel credentials)."""
from __future__ import annotations

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import models


def _fernet() -> Fernet:
    material = settings.FIELD_ENCRYPTION_KEY or settings.SECRET_KEY
    key = base64.urlsafe_b64encode(hashlib.sha256(("threadline-fields:" + material).encode()).digest())
    return Fernet(key)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


class EncryptedJSONField(models.TextField):
    """A JSON object stored encrypted (Fernet). Never rendered by serializers."""

    def from_db_value(self, value, expression, connection):
        if value in (None, ""):
            return {}
        try:
            return json.loads(decrypt(value))
        except (InvalidToken, ValueError):
            # Wrong key: do not crash the page; the channel will fail to send.
            return {}

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        if value in (None, ""):
            return {}
        try:
            return json.loads(decrypt(value))
        except (InvalidToken, ValueError):
            return {}

    def get_prep_value(self, value):
        if value in (None, {}, ""):
            return ""
        return encrypt(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj):  # dumpdata never exports the clear text
        return ""
