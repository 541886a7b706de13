"""Inbox views: permissions (404 across teams, role checks), actions, filters, query counts."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations import services
from conversations.models import Conversation, ConversationEvent, Message, Notification, SavedView, Status
from customers.models import Customer, Identity, MergeSuggestion
from tests.factories import ConversationFactory, CustomerFactory

pytestmark = pytest.mark.django_db


def login(client, user):
    client.force_login(user)
    return client


# ------------------------------------------------------------------ permissions

def test_agent_gets_404_for_another_teams_conversation(client, personas, inbox_data):
    login(client, personas.ana)
    assert client.get(reverse("conversations:conversation", args=[inbox_data.conv.pk])).status_code == 200
    assert client.get(reverse("conversations:conversation", args=[inbox_data.tech.pk])).status_code == 404
    # actions and replies on it are 404 as well, and change nothing
    r = client.post(reverse("conversations:action", args=[inbox_data.tech.pk]), {"action": "resolve"})
    assert r.status_code == 404
    r = client.post(reverse("conversations:reply", args=[inbox_data.tech.pk]), {"kind": "note", "body": "x"})
    assert r.status_code == 404
    inbox_data.tech.refresh_from_db()
    assert inbox_data.tech.status == Status.OPEN
    assert not Message.objects.filter(conversation=inbox_data.tech, direction="note").exists()


def test_bulk_ignores_conversations_the_agent_cannot_see(client, personas, inbox_data):
    login(client, personas.ana)
    client.post(reverse("conversations:bulk"), {"action": "resolve", "ids": [inbox_data.conv.pk, inbox_data.tech.pk]})
    assert Conversation.objects.get(pk=inbox_data.conv.pk).status == Status.RESOLVED
    assert Conversation.objects.get(pk=inbox_data.tech.pk).status == Status.OPEN


def test_customer_of_another_team_is_404(client, personas, inbox_data):
    login(client, personas.ana)
    assert client.get(reverse("customers:detail", args=[inbox_data.customer.pk])).status_code == 200
    assert client.get(reverse("customers:detail", args=[inbox_data.tech.customer_id])).status_code == 404
    assert client.post(reverse("customers:edit", args=[inbox_data.tech.customer_id]),
                       {"name": "Hacked"}).status_code == 404


def test_attachment_inline_only_for_raster_images_and_visible(client, personas, inbox_data):
    att = Message.objects.filter(conversation=inbox_data.conv).first().attachments.get()
    login(client, personas.bob)
    assert client.get(reverse("conversations:attachment_inline", args=[att.pk])).status_code == 404
    login(client, personas.ana)
    r = client.get(reverse("conversations:attachment_inline", args=[att.pk]))
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert "sandbox" in r["Content-Security-Policy"]
    att.content_type = "image/svg+xml"
    att.save()
    assert client.get(reverse("conversations:attachment_inline", args=[att.pk])).status_code == 404
    assert client.get(reverse("conversations:attachment", args=[att.pk])).status_code == 200


@pytest.mark.parametrize("name", ["channels", "teams", "agents", "canned"])
def test_admin_screens_need_admin_role(client, personas, channels, name):
    url = reverse(f"helpdesk_admin:{name}")
    assert client.get(url).status_code == 302  # login
    for user in (personas.ana, personas.manager):
        login(client, user)
        assert client.get(url).status_code == 403
    login(client, personas.admin)
    assert client.get(url).status_code == 200


def test_admin_can_set_team_assignment_and_agent_capacity(client, personas):
    login(client, personas.admin)
    r = client.post(reverse("helpdesk_admin:team_edit", args=[personas.billing.pk]),
                    {"name": "Billing", "assignment_mode": "least_loaded", "members": [personas.ana.pk]})
    assert r.status_code == 302
    personas.billing.refresh_from_db()
    assert personas.billing.assignment_mode == "least_loaded"
    data = {"username": "ana", "first_name": "Ana", "last_name": "", "display_name": "", "email": "ana@example.com",
            "role": "agent", "capacity": 3, "availability": "online", "is_active": "on"}
    assert client.post(reverse("helpdesk_admin:agent_edit", args=[personas.ana.pk]), data).status_code == 302
    personas.ana.refresh_from_db()
    assert personas.ana.capacity == 3 and personas.ana.availability == "online"
    login(client, personas.ana)
    assert client.post(reverse("helpdesk_admin:agent_edit", args=[personas.ana.pk]),
                       {**data, "role": "admin"}).status_code == 403


def test_channel_screen_shows_webhook_url_but_no_secrets(client, personas, channels):
    channels.whatsapp.set_config({"access_token": "SUPERSECRET-TOKEN-123"})
    channels.whatsapp.save()
    login(client, personas.admin)
    body = client.get(reverse("helpdesk_admin:channels")).content.decode()
    assert channels.whatsapp.webhook_url in body
    assert "SUPERSECRET-TOKEN-123" not in body
    # the chat widget snippet, escaped inside a read-only textarea (copy button)
    assert f'data-threadline-channel=&quot;{channels.chat.uuid}&quot;' in body
    assert 'data-copy="sn-' in body


def test_all_view_only_for_users_who_see_all(client, personas, inbox_data):
    login(client, personas.ana)
    assert client.get("/?view=all").status_code == 404
    assert client.get(f"/?view=team-{personas.tech.pk}").status_code == 404
    login(client, personas.manager)
    body = client.get("/?view=all").content.decode()
    assert "Tia Tech" in body and "Kim Lee" in body


# ------------------------------------------------------------------ list, filters, search

def test_views_and_filters(client, personas, inbox_data):
    login(client, personas.ana)
    body = client.get(f"/?view=team-{personas.billing.pk}").content.decode()
    assert "Kim Lee" in body and "Lou Park" in body and "Tia Tech" not in body
    body = client.get(f"/?view=team-{personas.billing.pk}&channel=chat").content.decode()
    assert "Lou Park" in body and "Kim Lee" not in body
    body = client.get("/?view=unassigned&channel=whatsapp").content.decode()
    assert "Kim Lee" in body and "Lou Park" not in body
    assert "Nothing assigned to you" in client.get("/?view=mine").content.decode()
    assert client.get("/?view=unassigned&created_after=not-a-date").status_code == 400


def test_search_finds_messages_subjects_customers_and_identities(client, personas, inbox_data):
    login(client, personas.ana)
    for q in ("refund", "1042", "Lou", "kim@example.org", "broken"):
        body = client.get("/", {"view": "search", "q": q}).content.decode()
        assert "conv-list" in body, q
    assert "Lou Park" in client.get("/", {"q": "invoice broken"}).content.decode()
    assert "Nothing matches" in client.get("/", {"q": "zebra-unicorn"}).content.decode()
    # search never reveals another team's conversation
    assert "Tia Tech" not in client.get("/", {"q": "router"}).content.decode()


def test_keyset_pagination_walks_every_row_once(client, personas):
    customer = CustomerFactory()
    from django.utils import timezone
    from datetime import timedelta

    now = timezone.now()
    for i in range(60):
        ConversationFactory(customer=customer, team=personas.billing, last_message_at=now - timedelta(minutes=i % 7))
    login(client, personas.ana)
    seen, url = [], f"/?view=team-{personas.billing.pk}"
    while url:
        r = client.get(url)
        page = r.context["page"]
        seen += [c.pk for c in page.rows]
        url = r.context["next_url"]
    assert len(seen) == 60 and len(set(seen)) == 60


def test_inbox_query_count_does_not_grow_with_rows(client, personas, channels):
    login(client, personas.ana)
    customer = CustomerFactory()

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/?view=team-{personas.billing.pk}").status_code == 200
        return len(ctx.captured_queries)

    ConversationFactory(customer=customer, team=personas.billing)
    few = count()
    for _ in range(20):
        c = ConversationFactory(customer=CustomerFactory(), team=personas.billing, assignee=personas.ana)
        services.tag(conversation=c, add=["vip", "refund"])
    many = count()
    assert many == few, (few, many)
    assert many <= 14


def test_saved_view(client, personas, inbox_data):
    login(client, personas.ana)
    client.post(reverse("conversations:saved_view_create"), {"name": "Chats", "query": "view=unassigned&channel=chat"})
    sv = SavedView.objects.get(user=personas.ana)
    body = client.get("/?view=mine").content.decode()
    assert "Chats" in body and sv.query in body.replace("&amp;", "&")


# ------------------------------------------------------------------ conversation & actions

def test_conversation_timeline_shows_channels_events_and_unread(client, personas, inbox_data):
    login(client, personas.ana)
    assert "class=\"dot\"" in client.get("/?view=unassigned").content.decode()
    body = client.get(reverse("conversations:conversation", args=[inbox_data.conv.pk])).content.decode()
    assert "Moved from Email to WhatsApp" in body
    assert "ch-email" in body and "ch-whatsapp" in body
    assert "receipt.png" in body
    assert "last wrote on WhatsApp" in body
    assert "WhatsApp window open for" in body  # Kim wrote on WhatsApp 3 minutes ago
    # now read: the unread dot is gone for this conversation
    row = client.get("/?view=unassigned&channel=whatsapp").content.decode()
    assert "class=\"dot\"" not in row


def test_reply_note_with_mention_assign_resolve(client, personas, inbox_data, django_capture_on_commit_callbacks):
    conv = inbox_data.conv
    login(client, personas.ana)
    url = reverse("conversations:reply", args=[conv.pk])
    with django_capture_on_commit_callbacks(execute=False):
        r = client.post(url, {"kind": "reply", "body": "Refund is on its way"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and "Refund is on its way" in r.content.decode()
    out = Message.objects.get(conversation=conv, direction="outbound")
    assert out.channel_kind == "whatsapp"  # the default: where the customer last wrote
    r = client.post(url, {"kind": "note", "body": "@bob can you check the router too?"})
    assert r.status_code == 302
    note = Message.objects.get(conversation=conv, direction="note")
    assert note.meta["mentions"] == [personas.bob.pk]
    # Bob cannot see billing conversations: he gets no notification about it
    assert not Notification.objects.filter(user=personas.bob).exists()
    client.post(url, {"kind": "note", "body": "@manager please approve"})
    assert Notification.objects.filter(user=personas.manager, conversation=conv).count() == 1
    act = reverse("conversations:action", args=[conv.pk])
    client.post(act, {"action": "assign", "agent": personas.manager.pk, "team": personas.billing.pk})
    conv.refresh_from_db()
    assert conv.assignee == personas.manager
    assert "Assigned to Maria" in client.get(reverse("conversations:conversation", args=[conv.pk])).content.decode()
    client.post(act, {"action": "priority", "priority": "urgent"})
    client.post(act, {"action": "tag", "add": "vip, refund"})
    client.post(act, {"action": "resolve"})
    conv.refresh_from_db()
    assert (conv.status, conv.priority) == ("resolved", "urgent")
    assert set(conv.tags.values_list("name", flat=True)) == {"vip", "refund"}
    kinds = set(ConversationEvent.objects.filter(conversation=conv).values_list("kind", flat=True))
    assert {"assigned", "priority_changed", "tagged", "resolved"} <= kinds
    client.post(act, {"action": "reopen"})
    conv.refresh_from_db()
    assert conv.status == "open"
    r = client.post(act, {"action": "snooze", "until": "2000-01-01T10:00"})
    conv.refresh_from_db()
    assert conv.status == "open"


def test_send_and_resolve_and_bad_channel(client, personas, inbox_data):
    login(client, personas.ana)
    url = reverse("conversations:reply", args=[inbox_data.conv.pk])
    r = client.post(url, {"kind": "reply", "body": "x", "channel": 999999}, HTTP_HX_REQUEST="true")
    assert "That channel is not available" in r.content.decode()
    client.post(url, {"kind": "reply", "body": "Done!", "resolve": "on"})
    inbox_data.conv.refresh_from_db()
    assert inbox_data.conv.status == "resolved"


def test_canned_response_placeholders_are_not_a_template_engine(client, personas, inbox_data):
    from conversations.models import CannedResponse

    canned = CannedResponse.objects.create(
        title="Hi", shortcut="hi",
        body="Hi {{ customer.first_name }}, {{ agent.name }} here. {% load x %}{{ settings.SECRET_KEY }}")
    login(client, personas.ana)
    text = client.get(reverse("conversations:canned_render", args=[inbox_data.conv.pk, canned.pk])).json()["text"]
    assert text.startswith("Hi Kim, Ana here.")
    assert "{{ settings.SECRET_KEY }}" in text and "{% load x %}" in text


def test_remote_images_and_quoted_history_are_folded(client, personas, inbox_data):
    conv = inbox_data.conv
    Message.objects.create(conversation=conv, direction="inbound", author_type="customer", channel_kind="email",
                           body_html='<p>See <img data-remote-src="https://tracker.example/p.gif"></p>'
                                     '<blockquote type="cite">old stuff</blockquote>',
                           meta={"html_quoted": "blockquote[type=cite]"})
    Message.objects.create(conversation=conv, direction="inbound", author_type="customer", channel_kind="email",
                           body_text="New text\n> quoted line", meta={"quoted_from": 9})
    login(client, personas.ana)
    body = client.get(reverse("conversations:conversation", args=[conv.pk])).content.decode()
    assert ' src="https://tracker.example' not in body and 'data-remote-src="https://tracker.example' in body
    assert "Load remote images" in body and "Show quoted history" in body
    assert '<details class="quoted">' in body


def test_failed_delivery_shows_provider_error(client, personas, inbox_data):
    msg = services.reply(conversation=inbox_data.conv, author=personas.ana, body="hello")
    services.delivery_update(message=msg, status="failed", error="131047: Re-engagement message window closed")
    login(client, personas.ana)
    body = client.get(reverse("conversations:conversation", args=[inbox_data.conv.pk])).content.decode()
    assert "Re-engagement message window closed" in body


# ------------------------------------------------------------------ customers

def test_customer_edit_in_place_and_merge_with_preview(client, personas, inbox_data):
    kim = inbox_data.customer
    other_conv = services.ingest(__import__("conversations.inbound", fromlist=["InboundMessage"]).InboundMessage(
        channel=inbox_data.conv.last_inbound_channel, external_id="dup-1", identities=[("whatsapp", "+4915199999999")],
        name="Kim Lee", text="hi again"))
    dup = other_conv.message.conversation.customer
    login(client, personas.ana)
    r = client.post(reverse("customers:edit", args=[kim.pk]),
                    {"name": "Kim Lee", "company": "Acme", "language": "en", "attributes": "plan = gold"},
                    HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and "gold" in r.content.decode()
    kim.refresh_from_db()
    assert kim.company == "Acme" and kim.attributes == {"plan": "gold"}
    # duplicates: same name
    assert "Kim Lee" in client.get(reverse("customers:duplicates", args=[kim.pk])).content.decode()
    preview = client.get(reverse("customers:merge", args=[kim.pk]), {"other": dup.pk}).content.decode()
    assert "+4915199999999" in preview and "kim@example.org" in preview and "Acme" in preview
    assert Customer.objects.filter(pk=dup.pk).exists()  # a preview writes nothing
    r = client.post(reverse("customers:merge", args=[kim.pk]), {"other": dup.pk})
    assert r.status_code == 302
    assert not Customer.objects.filter(pk=dup.pk).exists()
    assert Identity.objects.filter(customer=kim, value="+4915199999999").exists()
    # the tech customer cannot be merged by Ana (404 preview, nothing happens)
    r = client.post(reverse("customers:merge", args=[kim.pk]), {"other": inbox_data.tech.customer_id})
    assert Customer.objects.filter(pk=inbox_data.tech.customer_id).exists()


def test_merge_suggestions_listed(client, personas, inbox_data):
    other = CustomerFactory(name="Someone else")
    ConversationFactory(customer=other, team=personas.billing)
    MergeSuggestion.objects.create(customer=inbox_data.customer, other=other, reason="Both use phone +49")
    login(client, personas.ana)
    body = client.get(reverse("customers:duplicates", args=[inbox_data.customer.pk])).content.decode()
    assert "Both use phone +49" in body and "Someone else" in body


def test_availability_toggle(client, personas):
    login(client, personas.ana)
    client.post(reverse("conversations:availability"), {"availability": "online", "next": "/"})
    personas.ana.refresh_from_db()
    assert personas.ana.availability == "online"


def test_sla_timer_and_segment_shown_when_metrics_provide_them(client, personas, inbox_data):
    from metrics.models import SlaPolicy

    fields = {f.name for f in SlaPolicy._meta.get_fields()}
    data = {"priority": "normal", "active": True, "first_response_seconds": 60}
    if "name" in fields:
        data["name"] = "Normal"
    SlaPolicy.objects.create(**{k: v for k, v in data.items() if k in fields})
    login(client, personas.ana)
    body = client.get("/?view=unassigned&channel=whatsapp").content.decode()
    assert "SLA breached" in body  # Kim wrote 30 minutes ago, target 1 minute
    body = client.get(reverse("customers:detail", args=[inbox_data.customer.pk])).content.decode()
    assert "seg-low" in body
    assert client.get("/?view=unassigned&segment=new").status_code == 200
    assert "Kim Lee" in client.get("/?view=unassigned&segment=new").content.decode()
    assert "Kim Lee" not in client.get("/?view=unassigned&segment=former").content.decode()


def test_conversation_header_shows_the_sla_badge_on_load(client, personas, inbox_data):
    import re

    from metrics.models import SlaPolicy

    login(client, personas.ana)
    url = reverse("conversations:conversation", args=[inbox_data.conv.pk])
    assert "data-sla-head" not in client.get(url).content.decode()  # no policy, no badge
    fields = {f.name for f in SlaPolicy._meta.get_fields()}
    data = {"priority": "normal", "active": True, "first_response_seconds": 60}
    if "name" in fields:
        data["name"] = "Normal"
    policy = SlaPolicy.objects.create(**{k: v for k, v in data.items() if k in fields})
    head = client.get(url).content.decode().split('<div class="conv-state">', 1)[1].split("</div>", 1)[0]
    badge = re.search(r'<span class="sla breached" data-sla-head data-sla-due="[^"]+" data-sla-state="breached"'
                      r'[^>]*>SLA breached</span>', head)
    assert badge, head  # Kim wrote 30 minutes ago, target 1 minute
    SlaPolicy.objects.filter(pk=policy.pk).update(first_response_seconds=24 * 3600)
    head = client.get(url).content.decode().split('<div class="conv-state">', 1)[1].split("</div>", 1)[0]
    assert 'class="sla"' in head or 'class="sla warning"' in head
    assert "data-sla-head" in head and "SLA breached" not in head


def test_shared_filterset_parameters(personas, inbox_data, rf):
    """The API imports this FilterSet: every documented parameter exists and works."""
    from conversations.filtersets import ConversationFilter

    expected = {"status", "channel", "assignee", "team", "tag", "priority", "customer", "created_after",
                "created_before", "updated_after", "updated_before", "q", "segment"}
    assert expected <= set(ConversationFilter.base_filters)
    request = rf.get("/")
    request.user = personas.ana
    qs = Conversation.objects.all()

    def ids(**params):
        f = ConversationFilter(params, queryset=qs, request=request)
        assert f.is_valid(), f.errors
        return set(f.qs.values_list("pk", flat=True))

    conv, chat, tech = inbox_data.conv.pk, inbox_data.chat.pk, inbox_data.tech.pk
    assert ids(channel="chat") == {chat}
    assert ids(channel="chat,email") == {chat, conv}
    assert ids(team=str(personas.tech.pk)) == {tech}
    assert ids(assignee="none") == {conv, chat, tech}
    services.assign(conversation=inbox_data.chat, agent=personas.ana)
    assert ids(assignee="me") == {chat}
    assert ids(customer=str(inbox_data.customer.pk)) == {conv}
    assert ids(created_after="2000-01-01", created_before="2999-01-01") == {conv, chat, tech}
    assert ids(updated_after="2999-01-01") == set()
    services.tag(conversation=inbox_data.conv, add=["vip"])
    assert ids(tag="vip") == {conv}
    assert ids(q="router") == {tech}
    assert ids(status="open", priority="normal") == {conv, chat, tech}


def test_conversation_query_count_does_not_grow_with_messages(client, personas, inbox_data):
    conv = inbox_data.conv
    login(client, personas.ana)
    url = reverse("conversations:conversation", args=[conv.pk])

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    count()  # first visit creates the read marker
    few = count()
    for i in range(30):
        services.add_note(conversation=conv, author=personas.ana, body=f"note {i}")
    services.tag(conversation=conv, add=["x"])
    many = count()
    assert many == few, (few, many)
    assert many <= 40


def test_bulk_assign_tag_priority(client, personas, inbox_data):
    login(client, personas.ana)
    ids = [inbox_data.conv.pk, inbox_data.chat.pk]
    client.post(reverse("conversations:bulk"), {"action": "assign", "agent": "me", "ids": ids})
    client.post(reverse("conversations:bulk"), {"action": "priority", "priority": "high", "ids": ids})
    client.post(reverse("conversations:bulk"), {"action": "tag", "add": "billing-q", "ids": ids})
    for conv in Conversation.objects.filter(pk__in=ids):
        assert conv.assignee == personas.ana and conv.priority == "high"
        assert list(conv.tags.values_list("name", flat=True)) == ["billing-q"]
    r = client.post(reverse("conversations:bulk"), {"action": "priority", "priority": "bogus", "ids": ids}, follow=True)
    assert "Unknown priority" in r.content.decode()


def test_reply_with_attachment(client, personas, inbox_data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    login(client, personas.ana)
    upload = SimpleUploadedFile("invoice.pdf", b"%PDF-1.4 test", content_type="application/pdf")
    client.post(reverse("conversations:reply", args=[inbox_data.conv.pk]),
                {"kind": "reply", "body": "Here is the invoice", "attachments": [upload]})
    msg = Message.objects.get(conversation=inbox_data.conv, direction="outbound")
    assert [a.filename for a in msg.attachments.all()] == ["invoice.pdf"]
    body = client.get(reverse("conversations:conversation", args=[inbox_data.conv.pk])).content.decode()
    assert "invoice.pdf" in body


@pytest.mark.parametrize("nxt", ["//evil.example/", "/\\evil.example/", "https://evil.example/"])
def test_no_open_redirect(client, personas, nxt):
    login(client, personas.ana)
    r = client.post(reverse("conversations:availability"), {"availability": "away", "next": nxt})
    assert r.status_code == 302 and r["Location"] == "/"
    r = client.post(reverse("conversations:bulk"), {"action": "resolve", "ids": [], "next": nxt})
    assert r["Location"] == reverse("conversations:inbox")


def test_htmx_list_fragment_updates_save_view_form_out_of_band(client, personas, inbox_data):
    login(client, personas.ana)
    full = client.get("/?view=unassigned&channel=chat").content.decode()
    assert full.count('id="save-view"') == 1
    part = client.get("/?view=unassigned&channel=chat", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="inbox-list")
    body = part.content.decode()
    assert "<html" not in body and 'hx-swap-oob="true"' in body and "channel=chat" in body
