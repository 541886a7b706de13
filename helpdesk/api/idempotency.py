"""`Idempotency-Key` for POSTs that create things (messages, imports).

The first request with a key stores its response; a repeat with the same key
and the same body returns the stored response (with `Idempotent-Replayed:
true`) without doing the work again; the same key with a different body is a
422, and a repeat while the first is still running is a 409.
"""
from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from helpdesk.models import IdempotencyKey

from .errors import Conflict

HEADER = "Idempotency-Key"
KEEP_FOR = timedelta(hours=24)


class KeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was used with a different request body."
    default_code = "idempotency_key_reused"


def _request_hash(request) -> str:
    try:
        body = json.dumps(request.data, sort_keys=True, default=str)
    except (TypeError, ValueError):
        body = repr(request.data)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(request, handler):
    """Run `handler()` (which returns a Response) at most once per user and key."""
    key = (request.headers.get(HEADER) or "").strip()
    if not key:
        return handler()
    if len(key) > 255:
        from rest_framework.exceptions import ValidationError

        raise ValidationError({HEADER: ["At most 255 characters."]})
    digest = _request_hash(request)
    scope = f"{request.method} {request.path}"[:200]
    IdempotencyKey.objects.filter(user=request.user, key=key, created_at__lt=timezone.now() - KEEP_FOR).delete()
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(user=request.user, key=key, scope=scope, request_hash=digest)
    except IntegrityError:
        record = IdempotencyKey.objects.filter(user=request.user, key=key).first()
        if record is None:  # expired and deleted in between: treat as new
            return idempotent(request, handler)
        if record.request_hash != digest:
            raise KeyReused()
        if record.response_status is None:
            raise Conflict("A request with this Idempotency-Key is still being processed.")
        response = Response(record.response_body, status=record.response_status)
        response["Idempotent-Replayed"] = "true"
        return response
    try:
        response = handler()
    except Exception:
        IdempotencyKey.objects.filter(pk=record.pk).delete()  # failed: the client may retry with the same key
        raise
    if 200 <= response.status_code < 300:
        IdempotencyKey.objects.filter(pk=record.pk).update(
            response_status=response.status_code, response_body=json.loads(json.dumps(response.data, default=str)))
    else:
        IdempotencyKey.objects.filter(pk=record.pk).delete()
    return response
