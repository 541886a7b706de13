"""/api/v1/metrics/ and /api/v1/imports/ (API.md)."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.settings import api_settings
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from helpdesk.api.errors import ErrorSerializer

from .. import importer, report
from ..models import ImportJob

IMPORT_MAX_BYTES = getattr(settings, "IMPORT_MAX_BYTES", 200 * 1024 * 1024)
IMPORT_TYPES = ("application/json", "application/x-ndjson", "application/jsonl", "application/x-jsonlines",
                "application/json-seq")


class _TooLarge(Exception):
    pass


class _Limited:
    """A read-only view of the request body that refuses to go past `limit` bytes
    (a chunked body has no Content-Length to check up front)."""

    def __init__(self, raw, limit: int):
        self.raw = raw
        self.left = limit

    def _count(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise _TooLarge()
        return data

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""  # ijson probes read(0) to tell bytes from text
        return self._count(self.raw.read(size if size and size > 0 else self.left + 1))

    def readline(self, size: int = -1) -> bytes:
        return self._count(self.raw.readline(size if size and size > 0 else self.left + 1))

    def __iter__(self):
        while True:
            line = self.readline()
            if not line:
                return
            yield line


class IsManager(BasePermission):
    message = "Managers and admins only."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated and request.user.is_manager)


def _time_stats(name):
    return inline_serializer(name, {"count": serializers.IntegerField(), "mean": serializers.FloatField(allow_null=True),
                                    "median": serializers.FloatField(allow_null=True),
                                    "p90": serializers.FloatField(allow_null=True)})


METRICS_FIELDS = {
    "first_response_time": _time_stats("FirstResponseTime"),
    "first_response_time_business": _time_stats("FirstResponseTimeBusiness"),
    "response_time": _time_stats("ResponseTime"),
    "resolution_time": _time_stats("ResolutionTime"),
    "resolution_time_business": _time_stats("ResolutionTimeBusiness"),
    "fcr_rate": serializers.FloatField(allow_null=True),
    "one_touch_rate": serializers.FloatField(allow_null=True),
    "repeat_contact_rate": serializers.FloatField(allow_null=True),
    "contacts_per_resolution": serializers.FloatField(allow_null=True),
    "channel_switches": serializers.FloatField(allow_null=True),
    "csat": serializers.DictField(), "nps": serializers.DictField(), "ces": serializers.DictField(),
    "cltv": serializers.CharField(allow_null=True), "retention_rate": serializers.FloatField(allow_null=True),
    "sla_attainment": serializers.FloatField(allow_null=True), "volume": serializers.DictField(),
}


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (str, bytes)) else report.to_csv(data if isinstance(data, list) else [data])


_MetricsGroup = type(inline_serializer("MetricsGroup", METRICS_FIELDS))


class MetricsView(APIView):
    permission_classes = [IsManager]
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, CSVRenderer]

    @extend_schema(
        summary="KPIs per group (KPI.md)",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First day (account time zone)"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last day, inclusive"),
            OpenApiParameter("group_by", str, enum=list(report.GROUPINGS)),
            OpenApiParameter("channel", str, description="Channel kind"),
            OpenApiParameter("team", str, description="Team id or name"),
            OpenApiParameter("agent", str, description="Agent id or email"),
            OpenApiParameter("format", str, enum=["json", "csv"]),
        ],
        responses={200: PolymorphicProxySerializer(
            component_name="MetricsResult",
            serializers=[_MetricsGroup(), _MetricsGroup(many=True)],
            resource_type_field_name=None, many=False,
            # one object for the whole selection without group_by, a list of groups with it
        ), 400: ErrorSerializer},
    )
    def get(self, request, format=None):
        try:
            sel = report.parse_selection(request.query_params)
        except report.SelectionError as exc:
            return Response({"detail": "Invalid parameters.", "errors": exc.errors}, status=400)
        rows = report.build(sel)
        if format == "csv" or request.query_params.get("format") == "csv":
            response = HttpResponse(report.to_csv(rows), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="metrics-{sel.start}-{sel.end}.csv"'
            return response
        if sel.group_by is None:
            return Response(rows[0])
        return Response(rows)


class RawParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


ImportResponse = inline_serializer("ImportResult", {
    "created": serializers.DictField(child=serializers.IntegerField()),
    "unchanged": serializers.DictField(child=serializers.IntegerField()),
    "messages": serializers.IntegerField(),
    "error_count": serializers.IntegerField(),
    "errors": serializers.ListField(child=serializers.DictField()),
})


class ImportView(APIView):
    permission_classes = [IsManager]
    parser_classes = [RawParser]

    @extend_schema(
        summary="Import history (API.md import format)",
        description="Body: one JSON document or JSON Lines (Content-Type application/json or application/x-ndjson). "
                    "Idempotent on external ids; honour `Idempotency-Key`. Per-object errors with their position.",
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": OpenApiTypes.STR},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
        responses={200: ImportResponse, 207: ImportResponse, 413: OpenApiTypes.OBJECT, 415: OpenApiTypes.OBJECT},
    )
    def post(self, request):
        ctype = (request.content_type or "").split(";")[0].strip().lower()
        if ctype not in IMPORT_TYPES:
            return Response({"detail": f"Unsupported content type {ctype!r}; use application/json or "
                                       "application/x-ndjson."}, status=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > IMPORT_MAX_BYTES:
            return Response({"detail": f"Body larger than {IMPORT_MAX_BYTES} bytes; use manage.py import_history."},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        key = (request.headers.get("Idempotency-Key") or "").strip()[:200] or None
        if key:
            done = ImportJob.objects.filter(idempotency_key=key).first()
            if done is not None:
                if done.user_id != request.user.pk:
                    return Response({"detail": "Idempotency-Key already used by another user."}, status=409)
                resp = Response(done.result, status=done.status_code)
                resp["Idempotent-Replayed"] = "true"
                return resp
        jsonl = ctype != "application/json"
        stream = _Limited(request._request, IMPORT_MAX_BYTES)  # streamed from the request body, never held whole
        try:
            result = importer.run(stream, jsonl=jsonl).as_dict()
        except _TooLarge:
            return Response({"detail": f"Body larger than {IMPORT_MAX_BYTES} bytes; objects before the limit "
                                       "were imported. Use manage.py import_history for large files."},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        code = 200 if not result["errors"] else 207
        if key:
            ImportJob.objects.get_or_create(idempotency_key=key,
                                            defaults={"user": request.user, "status_code": code, "result": result})
        else:
            ImportJob.objects.create(user=request.user, status_code=code, result={"error_count": result["error_count"],
                                                                                  "created": result["created"]})
        return Response(result, status=code)
