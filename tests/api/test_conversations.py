"""/api/v1/conversations/: scoping, filters, cursor pages, updates, actions, messages."""
from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import Conversation, Message
from helpdesk.models import IdempotencyKey

from .conftest import assert_error_shape

URL = "/api/v1/conversations/"


def ids(response):
    return {c["id"] for c in response.json()["results"]}


def test_list_is_scoped_by_team(api, world):
    # given the three conversations; when each persona lists them
    assert ids(api("admin").get(URL)) == {world.billing.pk, world.tech.pk, world.loose.pk}
    assert ids(api("manager").get(URL)) == {world.billing.pk, world.tech.pk, world.loose.pk}
    # then agents see their team's and the unteamed ones only
    assert ids(api("ana").get(URL)) == {world.billing.pk, world.loose.pk}
    assert ids(api("bob").get(URL)) == {world.tech.pk, world.loose.pk}


def test_other_teams_conversation_is_404_everywhere(api, world):
    ana = api("ana")
    pk = world.tech.pk
    assert_error_shape(ana.get(f"{URL}{pk}/"), 404)
    assert_error_shape(ana.get(f"{URL}{pk}/messages/"), 404)
    assert_error_shape(ana.post(f"{URL}{pk}/messages/", {"text": "hi"}, format="json"), 404)
    for act in ("resolve", "reopen"):
        assert_error_shape(ana.post(f"{URL}{pk}/{act}/"), 404)
    assert_error_shape(ana.post(f"{URL}{pk}/assign/", {"assignee": None}, format="json"), 404)
    assert_error_shape(ana.patch(f"{URL}{pk}/", {"priority": "high"}, format="json"), 404)
    assert Conversation.objects.get(pk=pk).priority == "normal"


def test_retrieve_shape(api, world):
    body = api("ana").get(f"{URL}{world.billing.pk}/").json()
    assert body["customer"]["name"] == "Kim Lee"
    assert body["team"] == {"id": world.billing.team_id, "name": "Billing"}
    assert body["channel"] == "email" and body["status"] == "open"
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert body["messages_url"].endswith(f"/api/v1/conversations/{world.billing.pk}/messages/")


@pytest.mark.parametrize("query,expected", [
    ("status=open", {"billing", "tech", "loose"}),
    ("status=resolved", set()),
    ("channel=whatsapp", {"tech"}),
    ("channel=email,whatsapp", {"billing", "tech"}),
    ("priority=normal", {"billing", "tech", "loose"}),
    ("team=none", {"loose"}),
    ("q=declined", {"billing"}),
    ("assignee=none", {"billing", "tech", "loose"}),
])
def test_filters(api, world, query, expected):
    got = ids(api("admin").get(f"{URL}?{query}"))
    assert got == {getattr(world, name).pk for name in expected}


def test_filters_by_team_tag_customer_and_ranges(api, world, personas):
    admin = api("admin")
    assert ids(admin.get(f"{URL}?team={personas.billing.pk}")) == {world.billing.pk}
    admin.patch(f"{URL}{world.tech.pk}/", {"tags": ["vip"]}, format="json")
    assert ids(admin.get(f"{URL}?tag=vip")) == {world.tech.pk}
    assert ids(admin.get(f"{URL}?customer={world.loose.customer_id}")) == {world.loose.pk}
    Conversation.objects.filter(pk=world.billing.pk).update(created_at=timezone.now() - timedelta(days=10))
    cutoff = (timezone.now() - timedelta(days=5)).isoformat()
    assert ids(admin.get(URL, {"created_before": cutoff})) == {world.billing.pk}
    assert ids(admin.get(URL, {"created_after": cutoff})) == {world.tech.pk, world.loose.pk}
    assert ids(admin.get(URL, {"updated_after": cutoff})) == {world.billing.pk, world.tech.pk, world.loose.pk}


def test_extreme_offsets_are_normalized_not_500(api, world):
    # PostgreSQL refuses offsets beyond +-15:59; Python accepts up to +-23:59 (schemathesis found this)
    admin = api("admin")
    assert admin.get(URL, {"updated_after": "2000-01-01T00:00:00+16:59"}).status_code == 200
    assert admin.get("/api/v1/customers/", {"created_before": "3653-12-28T20:36:53-17:02"}).status_code == 200
    body = assert_error_shape(admin.get(URL, {"created_after": "0001-01-01T00:00:00+05:00"}), 400)
    assert "created_after" in body["errors"]


def test_invalid_filter_value_is_400(api, world):
    body = assert_error_shape(api("admin").get(f"{URL}?status=bogus"), 400)
    assert "status" in body["errors"]


def test_cursor_pagination_walks_everything_once(api, world, personas):
    from tests.factories import ConversationFactory

    for _ in range(7):
        ConversationFactory(team=personas.billing)
    admin = api("admin")
    seen, url, pages = [], f"{URL}?page_size=3", 0
    while url:
        body = admin.get(url).json()
        assert "count" not in body  # cursor pages do not count
        seen += [c["id"] for c in body["results"]]
        url, pages = body["next"], pages + 1
    assert len(seen) == len(set(seen)) == Conversation.objects.count() == 10
    assert pages == 4
    assert "cursor" in assert_error_shape(admin.get(f"{URL}?cursor=garbage"), 400)["errors"]


def test_patch_updates_through_services(api, world, personas):
    admin = api("admin")
    resp = admin.patch(f"{URL}{world.loose.pk}/", {"priority": "urgent", "tags": ["refund", "vip"],
                                                    "team": personas.billing.pk, "assignee": personas.ana.pk,
                                                    "status": "pending"}, format="json")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["priority"] == "urgent" and sorted(body["tags"]) == ["refund", "vip"]
    assert body["team"]["id"] == personas.billing.pk and body["assignee"]["id"] == personas.ana.pk
    assert body["status"] == "pending"
    kinds = set(world.loose.events.values_list("kind", flat=True))
    assert {"priority_changed", "tagged", "team_changed", "assigned", "status_changed"} <= kinds
    err = assert_error_shape(admin.patch(f"{URL}{world.loose.pk}/", {"priority": "huge"}, format="json"), 400)
    assert "priority" in err["errors"]


def test_actions(api, world, personas):
    ana = api("ana")
    pk = world.billing.pk
    body = ana.post(f"{URL}{pk}/assign/", {"assignee": personas.ana.pk}, format="json").json()
    assert body["assignee"]["id"] == personas.ana.pk
    assert ana.post(f"{URL}{pk}/resolve/").json()["status"] == "resolved"
    assert ana.post(f"{URL}{pk}/reopen/").json()["status"] == "open"
    until = (timezone.now() + timedelta(hours=2)).isoformat()
    body = ana.post(f"{URL}{pk}/snooze/", {"until": until}, format="json").json()
    assert body["status"] == "snoozed" and body["snoozed_until"]
    past = (timezone.now() - timedelta(hours=2)).isoformat()
    err = assert_error_shape(ana.post(f"{URL}{pk}/snooze/", {"until": past}, format="json"), 400)
    assert "until" in err["errors"]
    assert_error_shape(ana.post(f"{URL}{pk}/assign/", {}, format="json"), 400)
    assert_error_shape(ana.post(f"{URL}{pk}/assign/", {"assignee": 999999}, format="json"), 400)


def test_messages_list_and_reply_and_note(api, world, channels):
    ana = api("ana")
    pk = world.billing.pk
    msgs = ana.get(f"{URL}{pk}/messages/").json()
    assert [m["direction"] for m in msgs["results"]] == ["inbound"]
    assert msgs["results"][0]["channel"] == "email"
    resp = ana.post(f"{URL}{pk}/messages/", {"text": "On it", "channel": "api"}, format="json")
    assert resp.status_code == 201, resp.json()
    reply = resp.json()
    assert reply["direction"] == "outbound" and reply["channel"] == "api" and reply["kind"] == "message"
    assert reply["author"]["username"] == "ana"
    note = ana.post(f"{URL}{pk}/messages/", {"kind": "note", "text": "internal"}, format="json").json()
    assert note["kind"] == "note" and note["direction"] == "note"
    listed = ana.get(f"{URL}{pk}/messages/").json()["results"]
    assert [m["id"] for m in listed][-2:] == [reply["id"], note["id"]]
    # reply by email channel id
    resp = ana.post(f"{URL}{pk}/messages/", {"text": "By mail", "channel": str(channels.email.pk)}, format="json")
    assert resp.status_code == 201 and resp.json()["channel"] == "email"
    # errors
    assert "text" in assert_error_shape(ana.post(f"{URL}{pk}/messages/", {"text": " "}, format="json"), 400)["errors"]
    assert "channel" in assert_error_shape(
        ana.post(f"{URL}{pk}/messages/", {"text": "x", "channel": "telegram"}, format="json"), 400)["errors"]


def test_reply_needs_a_reachable_identity(api, world, channels):
    # the tech customer has only a whatsapp number: email is impossible
    body = assert_error_shape(api("bob").post(f"{URL}{world.tech.pk}/messages/", {"text": "x", "channel": "email"},
                                              format="json"), 400)
    assert "channel" in body["errors"]


def test_idempotency_key(api, world):
    ana = api("ana")
    url = f"{URL}{world.billing.pk}/messages/"
    first = ana.post(url, {"text": "Once", "channel": "api"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = ana.post(url, {"text": "Once", "channel": "api"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.filter(body_text="Once").count() == 1
    other = ana.post(url, {"text": "Different", "channel": "api"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert_error_shape(other, 422)
    # keys are per user: bob's k-1 is another key (and bob cannot see this conversation anyway)
    assert IdempotencyKey.objects.filter(key="k-1").count() == 1
    # a failed request does not burn its key
    bad = ana.post(url, {"text": ""}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert bad.status_code == 400
    good = ana.post(url, {"text": "Now ok", "channel": "api"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert good.status_code == 201


def test_log_call(api, world, channels):
    ana = api("ana")
    resp = ana.post(f"{URL}{world.billing.pk}/calls/", {"direction": "outbound", "duration_seconds": 125,
                                                        "outcome": "answered", "summary": "Explained the fee"},
                    format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["channel"] == "phone"
    assert {k: body["call"][k] for k in ("direction", "duration", "outcome")} == {
        "direction": "outbound", "duration": 125, "outcome": "answered"}
    assert_error_shape(ana.post(f"{URL}{world.billing.pk}/calls/", {"direction": "sideways"}, format="json"), 400)


def test_attachment_download_checks_permission(api, world):
    ana = api("ana")
    content = b"%PDF-1.4 invoice"
    resp = ana.post(f"{URL}{world.billing.pk}/messages/", {
        "text": "Invoice attached", "channel": "api",
        "attachments": [{"filename": "invoice.pdf", "content_type": "application/pdf",
                         "content_base64": base64.b64encode(content).decode()}]}, format="json")
    assert resp.status_code == 201, resp.json()
    att = resp.json()["attachments"][0]
    assert att["filename"] == "invoice.pdf" and att["size"] == len(content)
    download = ana.get(att["download_url"])
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == content
    assert "attachment" in download["Content-Disposition"]
    bob = api("bob")
    assert_error_shape(bob.get(att["download_url"]), 404)
    assert_error_shape(bob.get(f"/api/v1/attachments/{att['id']}/"), 404)
    assert_error_shape(api().get(att["download_url"]), 401)
    bad = ana.post(f"{URL}{world.billing.pk}/messages/", {
        "text": "x", "channel": "api", "attachments": [{"filename": "a", "content_base64": "@@@"}]}, format="json")
    assert "attachments" in assert_error_shape(bad, 400)["errors"]


def test_methods_not_allowed_and_no_create(api, world):
    admin = api("admin")
    assert_error_shape(admin.delete(f"{URL}{world.billing.pk}/"), 405)
    assert_error_shape(admin.post(URL, {"subject": "x"}, format="json"), 405)
