"""The integrations README.md shows, run as written (through the test client)."""
from __future__ import annotations

import json


def test_inbound_message_through_api_channel_then_list_and_reply(api, personas, channels):
    ana = api("ana")
    # POST /hooks/api/<uuid>/ with a token, the payload of README.md
    payload = {"external_id": "app-msg-1001", "from": {"kind": "email", "value": "kim@example.org"},
               "name": "Kim Lee", "subject": "Card declined", "text": "My card is declined at checkout"}
    url = f"/hooks/api/{channels.api.uuid}/"
    resp = ana.post(url, json.dumps(payload), content_type="application/json")
    assert resp.status_code in (200, 201, 202), resp.content
    again = ana.post(url, json.dumps(payload), content_type="application/json")  # a retry is harmless
    assert again.status_code in (200, 201, 202)
    # without a token: refused
    from rest_framework.test import APIClient

    assert APIClient().post(url, json.dumps(payload), content_type="application/json").status_code == 403
    # list open conversations, reply with an Idempotency-Key, resolve
    listed = ana.get("/api/v1/conversations/?status=open&team=Billing&page_size=50").json()["results"]
    assert [c["subject"] for c in listed] == ["Card declined"]
    conv = listed[0]
    msgs = ana.get(f"/api/v1/conversations/{conv['id']}/messages/").json()["results"]
    assert [m["text"] for m in msgs] == ["My card is declined at checkout"]
    reply = ana.post(f"/api/v1/conversations/{conv['id']}/messages/",
                     {"text": "Thanks Kim, your card works again.", "channel": "email"}, format="json",
                     HTTP_IDEMPOTENCY_KEY="reply-1")
    assert reply.status_code == 201 and reply.json()["recipient"] == "kim@example.org"
    assert ana.post(f"/api/v1/conversations/{conv['id']}/resolve/").json()["status"] == "resolved"
