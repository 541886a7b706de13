"""/support/ contact form and the customer portal reached by a magic link."""
from __future__ import annotations

import re

import pytest
from django.core import mail, signing
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from channels_app.adapters.webform.views import PORTAL_SALT, portal_token
from channels_app.models import EnvelopeStatus, InboundEnvelope
from conversations import services
from conversations.models import Conversation, Direction, Message
from customers.models import Customer
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def webform(personas):
    return ChannelFactory(kind="webform", name="Contact form", team=personas.billing,
                          settings={"address": "help@acme.test", "rate_limit": 3, "max_files": 2,
                                    "max_file_bytes": 1000})


def _data(**kw):
    data = {"name": "Kim Lee", "email": "Kim@Example.org", "subject": "Broken charger",
            "message": "My charger stopped working.", "website": ""}
    data.update(kw)
    return data


def _post(client, **kw):
    return client.post("/support/", _data(**kw))


def _portal_link(message) -> str:
    m = re.search(r"https?://[^\s\"]+/portal/[^\s\"]+/", message.body)
    assert m, message.body
    return m.group(0).split("://", 1)[1].split("/", 1)[1].join(["/", ""])


# ---------------------------------------------------------------- /support/

def test_form_page_renders_translated_and_mobile_ready(client, webform):
    resp = client.get("/support/", HTTP_ACCEPT_LANGUAGE="de")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert 'name="viewport"' in html and "css/public.css" in html and 'lang="de"' in html
    assert 'name="csrfmiddlewaretoken"' in html and 'name="website"' in html
    assert "Wie können wir helfen?" in html  # channels_app/locale/de


def test_submission_creates_conversation_envelope_and_confirmation(client, webform, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        resp = _post(client, attachments=[SimpleUploadedFile("photo.png", b"\x89PNG...", content_type="image/png")])
    assert resp.status_code == 200 and "#" in resp.content.decode()
    conv = Conversation.objects.get()
    assert conv.origin_kind == "webform" and conv.subject == "Broken charger" and conv.team == webform.team
    msg = conv.messages.get()
    assert msg.body_text == "My charger stopped working." and msg.channel == webform
    att = msg.attachments.get()
    assert att.filename == "photo.png" and att.content_type == "image/png"
    assert conv.customer.identities.get().value == "kim@example.org" and conv.customer.name == "Kim Lee"
    env = InboundEnvelope.objects.get()
    assert env.source == "form" and env.status == EnvelopeStatus.PROCESSED and env.message_ids == [msg.pk]
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["Kim@Example.org"] and sent.from_email == "help@acme.test"
    assert f"[#{conv.pk}]" in sent.subject
    assert "/portal/" in sent.body
    # the thanks page never carries the magic link (anyone can type an address)
    assert "/portal/" not in resp.content.decode()


def test_every_submission_is_a_new_conversation(client, webform, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _post(client)
        _post(client, subject="Second question")
    assert Conversation.objects.count() == 2 and Customer.objects.count() == 1


def test_confirmation_follows_the_customers_language(client, webform, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/support/", _data(), HTTP_ACCEPT_LANGUAGE="de")
    customer = Customer.objects.get()
    assert customer.language == "de"
    assert mail.outbox[0].extra_headers["Content-Language"] == "de"
    assert "Vielen Dank für Ihre Nachricht" in mail.outbox[0].body
    assert "Wir haben Ihre Nachricht erhalten" in mail.outbox[0].subject
    # a known customer with a language keeps it whatever the browser says
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/support/", _data(subject="again"), HTTP_ACCEPT_LANGUAGE="fr")
    assert mail.outbox[0].extra_headers["Content-Language"] == "de"


def test_csrf_is_enforced(webform):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/support/", _data()).status_code == 403
    assert not InboundEnvelope.objects.exists() and not Conversation.objects.exists()
    page = strict.get("/support/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    assert strict.post("/support/", _data(csrfmiddlewaretoken=token)).status_code == 200
    assert Conversation.objects.count() == 1


def test_honeypot_creates_nothing_but_keeps_the_envelope(client, webform):
    resp = _post(client, website="http://spam.example")
    assert resp.status_code == 200  # looks like success to the bot
    assert not Conversation.objects.exists() and not mail.outbox
    env = InboundEnvelope.objects.get()
    assert env.status == EnvelopeStatus.REJECTED and "honeypot" in env.error


def test_rate_limit_per_ip(client, webform):
    for i in range(3):
        assert _post(client, subject=f"q{i}").status_code == 200
    blocked = _post(client, subject="q4")
    assert blocked.status_code == 429 and "Too many" in blocked.content.decode()
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert other.post("/support/", _data(subject="other ip")).status_code == 200
    assert Conversation.objects.count() == 4


def test_validation_errors_and_attachment_limits(client, webform):
    webform.settings["rate_limit"] = 100  # every POST counts against the limit, invalid ones too
    webform.save()
    assert _post(client, email="not-an-email").status_code == 400
    too_big = SimpleUploadedFile("big.pdf", b"x" * 1001, content_type="application/pdf")
    resp = _post(client, attachments=[too_big])
    assert resp.status_code == 400 and "too large" in resp.content.decode()
    exe = SimpleUploadedFile("setup.exe", b"MZ", content_type="image/png")
    assert "not accepted" in _post(client, attachments=[exe]).content.decode()
    svg = SimpleUploadedFile("x.svg", b"<svg onload=alert(1)>", content_type="image/svg+xml")
    assert _post(client, attachments=[svg]).status_code == 400
    many = [SimpleUploadedFile(f"{i}.txt", b"hi", content_type="text/plain") for i in range(3)]
    assert "at most 2 files" in _post(client, attachments=many).content.decode()
    assert not Conversation.objects.exists()


def test_no_webform_channel_is_404(client, db):
    assert client.get("/support/").status_code == 404


def test_hook_url_refuses_webform_posts(client, webform):
    assert client.post(webform.webhook_path, {"x": "y"}).status_code == 403


# ---------------------------------------------------------------- portal

@pytest.fixture
def kim_portal(client, webform, channels, inbound, django_capture_on_commit_callbacks, personas):
    """Kim wrote by the form and by chat (with the same email); an agent replied and left a note."""
    with django_capture_on_commit_callbacks(execute=True):
        _post(client)
    form_conv = Conversation.objects.get()
    services.resolve_conversation(conversation=form_conv)
    from conversations.inbound import InboundMessage

    chat = services.ingest(InboundMessage(channel=channels.chat, external_id="chat-1", text="Chat question",
                                          identities=[("chat", "visitor-1"), ("email", "kim@example.org")]))
    chat_conv = chat.message.conversation
    services.reply(conversation=chat_conv, author=personas.ana, body="Public answer", channel=channels.chat)
    services.add_note(conversation=chat_conv, author=personas.ana, body="SECRET internal note")
    return {"link": _portal_link(mail.outbox[0]), "form": form_conv, "chat": chat_conv}


def test_portal_lists_all_conversations_across_channels_without_notes(client, kim_portal):
    resp = client.get(kim_portal["link"])
    html = resp.content.decode()
    assert resp.status_code == 200 and resp["Cache-Control"] == "no-store"
    assert f"#{kim_portal['form'].pk}" in html and f"#{kim_portal['chat'].pk}" in html
    page = client.get(f"{kim_portal['link']}c/{kim_portal['chat'].pk}/").content.decode()
    assert "Chat question" in page and "Public answer" in page
    assert "SECRET" not in page


def test_portal_isolation_between_customers(client, kim_portal, channels, inbound):
    other = services.ingest(inbound(channels.email, "email", "zoe@example.org", text="Zoe's private issue",
                                    is_email_thread=True)).message.conversation
    assert "Zoe" not in client.get(kim_portal["link"]).content.decode()
    assert client.get(f"{kim_portal['link']}c/{other.pk}/").status_code == 404
    assert client.post(f"{kim_portal['link']}c/{other.pk}/", {"message": "hijack"}).status_code == 404
    att_msg = other.messages.get()
    att = services.attachment_add(message=att_msg, filename="zoe.pdf", content_type="application/pdf", content=b"z")
    assert client.get(f"{kim_portal['link']}attachments/{att.pk}/").status_code == 404
    assert not Message.objects.filter(body_text="hijack").exists()


def test_portal_reply_joins_the_conversation_and_reopens(client, kim_portal):
    conv = kim_portal["form"]
    resp = client.post(f"{kim_portal['link']}c/{conv.pk}/", {"message": "It broke again"})
    assert resp.status_code == 302 and f"/c/{conv.pk}/" in resp["Location"]
    msg = Message.objects.get(body_text="It broke again")
    assert msg.conversation_id == conv.pk and msg.direction == Direction.INBOUND
    assert msg.channel.kind == "webform"
    conv.refresh_from_db()
    assert conv.status == "open"  # reopened by the customer
    assert InboundEnvelope.objects.filter(source="portal", status=EnvelopeStatus.PROCESSED).count() == 1
    # replying in the chat conversation lands there, not in the newest one
    chat = kim_portal["chat"]
    client.post(f"{kim_portal['link']}c/{chat.pk}/", {"message": "About the chat"})
    assert Message.objects.get(body_text="About the chat").conversation_id == chat.pk


def test_portal_reply_csrf_enforced(kim_portal):
    strict = Client(enforce_csrf_checks=True)
    url = f"{kim_portal['link']}c/{kim_portal['form'].pk}/"
    assert strict.post(url, {"message": "x"}).status_code == 403


def test_portal_attachment_download(client, kim_portal):
    conv = kim_portal["form"]
    services.attachment_add(message=conv.messages.first(), filename="invoice.pdf", content_type="application/pdf",
                            content=b"%PDF")
    page = client.get(f"{kim_portal['link']}c/{conv.pk}/").content.decode()
    url = re.search(r'href="([^"]+/attachments/\d+/)"', page).group(1)
    resp = client.get(url)
    assert resp.status_code == 200 and b"".join(resp.streaming_content) == b"%PDF"
    assert "attachment" in resp["Content-Disposition"]


def test_tampered_and_expired_tokens_show_clear_error(client, kim_portal, settings):
    link = kim_portal["link"]
    token = link.strip("/").split("/")[-1]
    tampered = client.get(f"/portal/{token[:-2]}xx/")
    assert tampered.status_code == 400 and "not valid" in tampered.content.decode()
    forged = signing.dumps({"e": "kim@example.org"}, salt="another-salt")
    assert client.get(f"/portal/{forged}/").status_code == 400
    settings.PORTAL_LINK_MAX_AGE = -1
    expired = client.get(link)
    assert expired.status_code == 410 and "expired" in expired.content.decode()
    assert "Kim" not in expired.content.decode()


def test_token_for_unknown_email_is_invalid(client, db):
    assert client.get(f"/portal/{portal_token('nobody@example.org')}/").status_code == 400


def test_request_new_link(client, kim_portal):
    mail.outbox.clear()
    resp = client.post("/portal/", {"email": "KIM@example.org"})
    assert resp.status_code == 200 and len(mail.outbox) == 1
    assert client.get(_portal_link(mail.outbox[0])).status_code == 200
    # unknown address: same answer, no mail
    assert client.post("/portal/", {"email": "who@example.org"}).status_code == 200
    assert len(mail.outbox) == 1


def test_portal_follows_customer_language(client, kim_portal):
    Customer.objects.update(language="fr")
    resp = client.get(kim_portal["link"], HTTP_ACCEPT_LANGUAGE="en")
    assert resp["Content-Language"] == "fr"
    assert 'lang="fr"' in resp.content.decode()
    assert "Toutes vos conversations avec nous" in resp.content.decode()


def test_portal_salt_is_private():
    assert portal_token("a@b.c") != signing.dumps({"e": "a@b.c"}, salt="x")
    assert signing.loads(portal_token("A@B.c"), salt=PORTAL_SALT) == {"e": "a@b.c"}
