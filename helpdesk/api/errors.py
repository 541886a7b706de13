"""One JSON error shape for the whole API: {"detail": ..., "errors": {field: [...]}}."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.exceptions import APIException
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


def _flatten(data):
    if isinstance(data, dict):
        return {k: (v if isinstance(v, list) else [v]) for k, v in data.items()}
    if isinstance(data, list):
        return {"non_field_errors": data}
    return {}


def exception_handler(exc, context):
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        body = {"detail": "Invalid input.", "errors": _flatten(data)}
    elif isinstance(data, dict) and "detail" in data:
        body = {"detail": str(data["detail"]), "errors": {k: v for k, v in data.items() if k != "detail"}}
    else:
        body = {"detail": str(exc), "errors": _flatten(data)}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        response["Retry-After"] = str(int(exc.wait) + 1)
    response.data = body
    return response


# --------------------------------------------------------------------------- schema

from drf_spectacular.utils import OpenApiResponse  # noqa: E402
from rest_framework import serializers  # noqa: E402


class ErrorSerializer(serializers.Serializer):
    """The one error body of the API."""

    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.JSONField()),
                                   help_text="Field name -> list of messages (empty unless input was invalid).")


def _err(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


ERROR_RESPONSES = {
    400: _err("Invalid input: `errors` maps each field to its messages."),
    401: _err("Missing or invalid token."),
    403: _err("Your role does not allow this."),
    404: _err("Not found (or not visible to you)."),
    409: _err("Conflict."),
    413: _err("Request body too large."),
    415: _err("Unsupported media type."),
    429: _err("Rate limited: retry after `Retry-After` seconds."),
}
READ_ERRORS = {k: ERROR_RESPONSES[k] for k in (401, 403, 404, 429)}
