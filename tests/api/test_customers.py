"""/api/v1/customers/ (nested identities, merge) and /api/v1/orders/."""
from __future__ import annotations

from customers.models import Customer, Identity, Order

from .conftest import assert_error_shape

URL = "/api/v1/customers/"


def test_create_with_identities_and_conflicts(api, personas):
    ana = api("ana")
    resp = ana.post(URL, {"name": "Kim Lee", "company": "Acme", "identities": [
        {"kind": "email", "value": "Kim@Example.org"}, {"kind": "phone", "value": "+1 555 123 0001"}]},
        format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert {(i["kind"], i["value"]) for i in body["identities"]} == {("email", "kim@example.org"),
                                                                     ("phone", "+15551230001")}
    # the same email again: 409, nothing created
    dup = ana.post(URL, {"name": "Other", "identities": [{"kind": "email", "value": "kim@example.org"}]},
                   format="json")
    assert_error_shape(dup, 409)
    # whatsapp and phone share one number space
    assert_error_shape(ana.post(URL, {"identities": [{"kind": "whatsapp", "value": "+15551230001"}]},
                                format="json"), 409)
    bad = assert_error_shape(ana.post(URL, {"identities": [{"kind": "email", "value": "not-an-email"}]},
                                      format="json"), 400)
    assert "identities" in bad["errors"]
    bad = assert_error_shape(ana.post(URL, {"identities": [{"kind": "fax", "value": "1"}]}, format="json"), 400)
    assert "identities" in bad["errors"]
    assert Customer.objects.count() == 1


def test_update_adds_identities(api, personas):
    ana = api("ana")
    pk = ana.post(URL, {"name": "Kim"}, format="json").json()["id"]
    resp = ana.patch(f"{URL}{pk}/", {"company": "Acme", "identities": [{"kind": "telegram", "value": "@kimlee"}]},
                     format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["company"] == "Acme"
    assert [(i["kind"], i["value"]) for i in resp.json()["identities"]] == [("telegram", "kimlee")]
    assert ana.get(f"{URL}?email=nobody@example.org").json()["count"] == 0


def test_filters(api, personas):
    ana = api("ana")
    ana.post(URL, {"name": "Kim", "identities": [{"kind": "email", "value": "kim@example.org"}]}, format="json")
    ana.post(URL, {"name": "Lee", "identities": [{"kind": "phone", "value": "+15551230009"}]}, format="json")
    assert [c["name"] for c in ana.get(f"{URL}?email=KIM@example.org").json()["results"]] == ["Kim"]
    assert [c["name"] for c in ana.get(f"{URL}?phone=%2B1 555 123 0009").json()["results"]] == ["Lee"]
    assert [c["name"] for c in ana.get(f"{URL}?q=lee").json()["results"]] == ["Lee"]
    body = ana.get(f"{URL}?limit=1").json()
    assert body["count"] == 2 and len(body["results"]) == 1 and body["next"]


def test_merge(api, personas, world):
    ana = api("ana")
    survivor, merged = world.billing.customer_id, world.loose.customer_id
    resp = ana.post(f"{URL}{survivor}/merge/", {"other": merged}, format="json")
    assert resp.status_code == 200, resp.json()
    assert {i["value"] for i in resp.json()["identities"]} == {"kim@example.org", "sam@example.org"}
    assert not Customer.objects.filter(pk=merged).exists()
    world.loose.refresh_from_db()
    assert world.loose.customer_id == survivor
    err = assert_error_shape(ana.post(f"{URL}{survivor}/merge/", {"other": survivor}, format="json"), 409)
    assert "itself" in err["detail"]
    assert "other" in assert_error_shape(ana.post(f"{URL}{survivor}/merge/", {"other": 999999}, format="json"),
                                         400)["errors"]
    assert_error_shape(ana.post(f"{URL}999999/merge/", {"other": survivor}, format="json"), 404)


def test_orders(api, world):
    customer = world.billing.customer_id
    payload = {"customer": customer, "external_id": "o-1", "amount": "49.90", "currency": "usd",
               "placed_at": "2026-03-20T12:00:00+02:00"}
    assert_error_shape(api("ana").post("/api/v1/orders/", payload, format="json"), 403)
    manager = api("manager")
    resp = manager.post("/api/v1/orders/", payload, format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["amount"] == "49.90" and body["currency"] == "USD"
    assert body["placed_at"].endswith("Z") and body["placed_at"].startswith("2026-03-20T10:00:00")
    # the same external id again updates (idempotent for a shop's sync)
    again = manager.post("/api/v1/orders/", {**payload, "amount": "59.90"}, format="json")
    assert again.json()["id"] == body["id"] and str(Order.objects.get().amount) == "59.90"
    assert [o["id"] for o in api("ana").get(f"/api/v1/orders/?customer={customer}").json()["results"]] == [body["id"]]
    bad = assert_error_shape(manager.post("/api/v1/orders/", {**payload, "amount": "abc"}, format="json"), 400)
    assert "amount" in bad["errors"]
    patched = manager.patch(f"/api/v1/orders/{body['id']}/", {"amount": "10.00"}, format="json")
    assert patched.status_code == 200 and patched.json()["amount"] == "10.00"
