"""The OpenAPI schema: valid, offline Swagger UI, and schemathesis against a
live server with a seeded database (no 5xx, every response conforms)."""
from __future__ import annotations

import base64
from io import StringIO

import pytest
from django.core.management import call_command

from conversations import services
from helpdesk.tokens import token_create

pytestmark = pytest.mark.slow


def test_schema_validates_without_warnings():
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert "/api/v1/conversations/{id}/messages/" in out.getvalue()


def test_swagger_ui_is_served_offline(client):
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")


def _seed(personas, channels, inbound):
    convs = []
    for i in range(4):
        r = services.ingest(inbound(channels.email if i % 2 else channels.whatsapp,
                                    "email" if i % 2 else "whatsapp",
                                    f"kim{i}@example.org" if i % 2 else f"+1555123000{i}", text=f"Hello {i}"))
        convs.append(r.message.conversation)
    services.assign(conversation=convs[0], team=personas.tech, set_team=True)
    msg = services.reply(conversation=convs[1], author=personas.ana, body="With file", channel=channels.api,
                         attachments=[__import__("conversations.inbound", fromlist=["x"]).InboundAttachment(
                             filename="a.txt", content_type="text/plain", content=b"hi")], deliver=False)
    services.add_note(conversation=convs[1], author=personas.ana, body="note")
    return convs, msg


# The metrics engineer owns /api/v1/metrics/ and /api/v1/imports/: checked separately so a
# failure there is reported against the right area.
OTHER_AREAS = ("/api/v1/metrics", "/api/v1/imports")


@pytest.mark.parametrize("area", ["core", "metrics"])
def test_schemathesis_no_5xx_and_conformant(area, live_server, personas, channels, inbound, settings):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hsettings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    import httpx

    settings.API_RATE_LIMIT = "100000/min"
    from helpdesk.api.throttling import TokenRateThrottle

    TokenRateThrottle.THROTTLE_RATES = {"token": "100000/min"}
    _seed(personas, channels, inbound)
    tokens = {who: token_create(user=getattr(personas, who), name="st")[1] for who in ("admin", "ana")}
    raw = httpx.get(f"{live_server.url}/api/schema/?format=json", timeout=30).json()
    raw["servers"] = [{"url": live_server.url}]
    schema = schemathesis.openapi.from_dict(raw)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: dict[str, str] = {}
    calls = {"n": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if operation.path.startswith(OTHER_AREAS) != (area == "metrics"):
            continue

        for who, token in tokens.items():
            @hsettings(max_examples=6, deadline=None, database=None, derandomize=True,
                       suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            @given(case=operation.as_strategy())
            def run(case):
                calls["n"] += 1
                response = case.call(base_url=live_server.url, headers={"Authorization": f"Token {token}"},
                                     timeout=30)
                case.validate_response(response, checks=checks)

            try:
                run()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # collect per operation (exception groups too), report all at the end
                failures[f"{label} as {who}"] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert calls["n"] > (200 if area == "core" else 5)
    assert not failures, "failing: " + ", ".join(failures) + "\n\n" + "\n\n".join(
        f"{k}\n{v}" for k, v in failures.items())
