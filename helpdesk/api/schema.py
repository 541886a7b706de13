"""AutoSchema that documents the one error shape on every operation, so the
schema matches what the API really answers (schemathesis checks this)."""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema


class AutoSchema(BaseAutoSchema):
    def _error_codes(self) -> list[str]:
        codes = ["401", "403", "429"]
        method = self.method.upper()
        if "{" in self.path:
            codes.append("404")
        if method in ("POST", "PUT", "PATCH"):
            codes += ["400", "409", "413", "415"]
        if method in ("GET",) and self._is_list_view():
            codes.append("400")  # invalid filter values
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        from .errors import ErrorSerializer

        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
        return responses
