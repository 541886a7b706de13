"""API token services: issue (the key is returned once) and revoke."""
from __future__ import annotations

from django.utils import timezone

from .models import ApiToken


def token_create(*, user, name: str = "default") -> tuple[ApiToken, str]:
    return ApiToken.issue(user, name=(name or "default")[:100])


def token_revoke(*, token: ApiToken) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token
