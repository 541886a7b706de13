"""/api/v1/channels/ (secrets write-only), teams, agents, survey responses, tokens."""
from __future__ import annotations

from io import StringIO

from django.core.management import call_command
from django.utils import timezone

from channels_app.models import Channel
from helpdesk.models import ApiToken

from .conftest import assert_error_shape


def test_channel_crud_admin_only_and_secrets_write_only(api, personas):
    payload = {"kind": "api", "name": "Mobile app", "team": personas.billing.pk,
               "settings": {"webhook_url": "https://app.example.com/tl"},
               "secrets": {"webhook_secret": "s3cr3t-value"}}
    assert_error_shape(api("ana").post("/api/v1/channels/", payload, format="json"), 403)
    admin = api("admin")
    resp = admin.post("/api/v1/channels/", payload, format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert "s3cr3t-value" not in resp.content.decode()
    assert "secrets" not in body and body["secrets_set"] == ["webhook_secret"]
    assert body["webhook_url"].endswith(f"/hooks/api/{body['uuid']}/")
    channel = Channel.objects.get(pk=body["id"])
    assert channel.get("webhook_secret") == "s3cr3t-value" and "webhook_secret" not in channel.settings
    # a secret put into settings by mistake is still stored encrypted and never shown
    resp = admin.patch(f"/api/v1/channels/{channel.pk}/", {"settings": {"api_key": "k-123"}, "name": "App"},
                       format="json")
    assert resp.status_code == 200 and "k-123" not in resp.content.decode()
    channel.refresh_from_db()
    assert channel.secrets["api_key"] == "k-123" and channel.get("webhook_secret") == "s3cr3t-value"
    # empty secret keeps the stored one
    admin.patch(f"/api/v1/channels/{channel.pk}/", {"secrets": {"webhook_secret": ""}}, format="json")
    channel.refresh_from_db()
    assert channel.get("webhook_secret") == "s3cr3t-value"
    assert "kind" in assert_error_shape(admin.patch(f"/api/v1/channels/{channel.pk}/", {"kind": "sms"},
                                                    format="json"), 400)["errors"]
    # everybody reads, nobody sees secrets
    listed = api("bob").get("/api/v1/channels/?kind=api")
    assert [c["id"] for c in listed.json()["results"]] == [channel.pk]
    assert "s3cr3t" not in listed.content.decode()
    assert_error_shape(api("bob").delete(f"/api/v1/channels/{channel.pk}/"), 403)
    assert admin.delete(f"/api/v1/channels/{channel.pk}/").status_code == 204
    assert not Channel.objects.filter(pk=channel.pk).exists()


def test_teams_and_agents(api, personas):
    ana = api("ana")
    teams = ana.get("/api/v1/teams/").json()["results"]
    assert [(t["name"], t["members"]) for t in teams] == [("Billing", [personas.ana.pk]), ("Tech", [personas.bob.pk])]
    agents = ana.get(f"/api/v1/agents/?team={personas.tech.pk}").json()["results"]
    assert [a["username"] for a in agents] == ["bob"]
    assert [a["username"] for a in ana.get("/api/v1/agents/?role=manager").json()["results"]] == ["manager"]
    assert "password" not in ana.get(f"/api/v1/agents/{personas.bob.pk}/").json()
    assert_error_shape(ana.post("/api/v1/teams/", {"name": "X"}, format="json"), 403)
    assert_error_shape(ana.patch(f"/api/v1/agents/{personas.ana.pk}/", {"role": "admin"}, format="json"), 403)
    admin = api("admin")
    created = admin.post("/api/v1/teams/", {"name": "Sales", "assignment_mode": "round_robin",
                                           "members": [personas.ana.pk, personas.bob.pk]}, format="json")
    assert created.status_code == 201, created.json()
    sales = created.json()["id"]
    assert sorted(created.json()["members"]) == sorted([personas.ana.pk, personas.bob.pk])
    assert "name" in assert_error_shape(admin.post("/api/v1/teams/", {"name": "Sales"}, format="json"),
                                        400)["errors"]
    assert admin.patch(f"/api/v1/teams/{sales}/", {"members": [personas.bob.pk]}, format="json").json()[
        "members"] == [personas.bob.pk]
    agent = admin.patch(f"/api/v1/agents/{personas.bob.pk}/", {"capacity": 5, "access_all": True,
                                                                "teams": [personas.tech.pk]}, format="json")
    assert agent.status_code == 200 and agent.json()["capacity"] == 5 and agent.json()["teams"] == [personas.tech.pk]
    assert admin.delete(f"/api/v1/teams/{sales}/").status_code == 204


def test_survey_responses_scoped(api, world, personas):
    from metrics.models import SurveyInvitation

    now = timezone.now()
    on_tech = SurveyInvitation.objects.create(conversation=world.tech, customer=world.tech.customer, kind="csat",
                                              channel_kind="whatsapp", score=5, answered_at=now, comment="great")
    on_billing = SurveyInvitation.objects.create(conversation=world.billing, customer=world.billing.customer,
                                                 kind="nps", score=9, answered_at=now)
    SurveyInvitation.objects.create(conversation=world.billing, customer=world.billing.customer)  # unanswered
    assert {r["id"] for r in api("admin").get("/api/v1/survey-responses/").json()["results"]} == {on_tech.pk,
                                                                                                  on_billing.pk}
    assert [r["id"] for r in api("ana").get("/api/v1/survey-responses/").json()["results"]] == [on_billing.pk]
    assert_error_shape(api("ana").get(f"/api/v1/survey-responses/{on_tech.pk}/"), 404)
    body = api("bob").get(f"/api/v1/survey-responses/{on_tech.pk}/").json()
    assert body["score"] == 5 and body["channel"] == "whatsapp" and body["comment"] == "great"
    assert [r["id"] for r in api("admin").get("/api/v1/survey-responses/?kind=nps").json()["results"]] == [
        on_billing.pk]


def test_token_auth_errors(api, personas, world):
    from rest_framework.test import APIClient

    assert_error_shape(APIClient().get("/api/v1/conversations/"), 401)
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token tl_nope")
    assert_error_shape(bad.get("/api/v1/conversations/"), 401)
    ana = api("ana")
    assert ana.get("/api/v1/conversations/").status_code == 200
    token = ApiToken.objects.get(user=personas.ana)
    assert token.last_used_at is not None
    assert token.key_hash != ana.raw_token and ana.raw_token not in token.key_hash
    token.revoked_at = timezone.now()
    token.save()
    assert_error_shape(ana.get("/api/v1/conversations/"), 401)
    personas.bob.is_active = False
    personas.bob.save()
    assert_error_shape(api("bob").get("/api/v1/conversations/"), 401)


def test_create_api_token_command(personas):
    out = StringIO()
    call_command("create_api_token", "ana", stdout=out)
    raw = out.getvalue().split()[-1]
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    assert client.get("/api/v1/teams/").status_code == 200


def test_error_shapes_415_413_405_429(api, world, settings, monkeypatch):
    admin = api("admin")
    url = f"/api/v1/conversations/{world.billing.pk}/messages/"
    assert_error_shape(admin.post(url, "text=x", content_type="text/plain"), 415)
    settings.API_MAX_BODY_BYTES = 100
    assert_error_shape(admin.post(url, {"text": "x" * 200}, format="json"), 413)
    settings.API_MAX_BODY_BYTES = 10_000
    assert_error_shape(admin.delete("/api/v1/agents/1/"), 405)
    from helpdesk.api.throttling import TokenRateThrottle

    monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
    from django.core.cache import cache

    cache.clear()
    statuses = [admin.get("/api/v1/teams/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = admin.get("/api/v1/teams/")
    assert_error_shape(resp, 429)
    assert int(resp["Retry-After"]) >= 1
    # the limit is per token: another token of another user is unaffected
    assert api("manager").get("/api/v1/teams/").status_code == 200


def test_token_page(client, personas):
    client.force_login(personas.ana)
    resp = client.post("/settings/api-tokens/", {"name": "CRM"})
    assert resp.status_code == 200
    raw = resp.context["new_key"]
    assert raw in resp.content.decode()
    token = ApiToken.objects.get(user=personas.ana, name="CRM")
    page = client.get("/settings/api-tokens/").content.decode()
    assert raw not in page and token.prefix in page and "never" in page
    # bob cannot revoke ana's token
    other = type(client)()
    other.force_login(personas.bob)
    assert other.post(f"/settings/api-tokens/{token.pk}/revoke/").status_code == 404
    assert client.post(f"/settings/api-tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client.get("/settings/api-tokens/").status_code == 200
    anon = type(client)()
    assert anon.get("/settings/api-tokens/").status_code == 302
