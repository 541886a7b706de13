"""Request parsers that refuse oversized bodies with 413 before reading them."""
from __future__ import annotations

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


def _check_size(parser_context) -> None:
    request = (parser_context or {}).get("request")
    if request is None:
        return
    meta = request.META
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        length = 0
    limit = getattr(settings, "API_MAX_BODY_BYTES", settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    if limit and length > limit:
        raise RequestTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes.")


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        _check_size(parser_context)
        return super().parse(stream, media_type, parser_context)


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        _check_size(parser_context)
        return super().parse(stream, media_type, parser_context)


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        _check_size(parser_context)
        return super().parse(stream, media_type, parser_context)
