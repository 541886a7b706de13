"""Playwright driving Debian's Chromium: the widget on its demo page (strict
CSP) and an agent page in a second browser context, against a real uvicorn
server (WebSockets) on the test database."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from conversations.models import Conversation, Message
from customers.models import Identity
from tests.conftest import require
from tests.factories import ChannelFactory

from .servers import UvicornThread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own
    # ORM calls are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    require(Path(CHROMIUM).exists() or bool(shutil.which("chromium")), f"Chromium ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server(settings):
    settings.ROOT_URLCONF = "tests.realtime.agent_page_urls"
    with UvicornThread() as srv:
        yield srv


def _shoot(pages, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(pages):
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}-{i}.png"), full_page=True)
        except Exception:
            pass


def test_visitor_and_agent_chat_live(personas, channels, client, browser, server):
    chat = channels.chat
    chat.settings = {"greeting": "Hi from Acme", "color": "#0a7d33"}
    chat.save()
    client.force_login(personas.ana)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value

    agent_ctx = browser.new_context()
    agent_ctx.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "domain": "127.0.0.1",
                            "path": "/"}])
    agent = agent_ctx.new_page()
    visitor_ctx = browser.new_context(viewport={"width": 1100, "height": 800})
    visitor = visitor_ctx.new_page()
    csp_errors = []
    visitor.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        agent.goto(server.base + "/test-agent/")
        agent.wait_for_function("document.getElementById('state').textContent === 'open'")

        visitor.goto(f"{server.base}/widget/demo/{chat.uuid}/")
        launcher = visitor.locator(".tl-launcher")
        launcher.click()
        visitor.get_by_text("Hi from Acme").wait_for()
        box = visitor.get_by_label("Message")
        box.fill("Hello, my order #42 is late")
        box.press("Enter")
        visitor.locator(".tl-visitor .tl-status", has_text=re.compile("Sent|Seen")).wait_for()

        # the agent's page shows it without a reload
        agent.locator("#events li", has_text="inbound:Hello, my order #42 is late").wait_for(timeout=10000)
        conv = Conversation.objects.get()
        assert conv.messages.get().envelope_id is not None

        # the agent replies; the visitor sees it with the agent's name
        resp = agent.request.post(f"{server.base}/test-agent/reply/{conv.pk}/", form={"body": "On its way, sorry!"})
        assert resp.ok, resp.text()
        visitor.locator(".tl-agent .tl-bubble", has_text="On its way, sorry!").wait_for(timeout=10000)
        assert visitor.locator(".tl-agent .tl-author", has_text="Ana").count() == 1
        # the open widget acknowledged it (read when the page is visible, else delivered);
        # the agent sees the receipt live
        reply_id = Message.objects.get(direction="outbound").pk
        agent.locator("#events li.status", has_text=re.compile(f"^{reply_id}:(delivered|read)$")).first.wait_for(
            timeout=10000)

        # a reload keeps the history
        visitor.reload()
        visitor.locator(".tl-launcher").click()
        visitor.locator(".tl-visitor .tl-bubble", has_text="Hello, my order #42 is late").wait_for()
        visitor.locator(".tl-agent .tl-bubble", has_text="On its way, sorry!").wait_for()
        assert Conversation.objects.count() == 1
        assert not csp_errors, csp_errors
    except Exception:
        _shoot([visitor, agent], "chat-live")
        print("agent page events:", agent.locator("#events").inner_text())
        raise
    finally:
        agent_ctx.close()
        visitor_ctx.close()


def test_offline_widget_captures_an_email(personas, browser, server):
    chat = ChannelFactory(kind="chat", name="Tech chat", team=personas.tech,
                          settings={"offline_message": "We are away. Leave your email."})
    ctx = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    try:
        page.goto(f"{server.base}/widget/demo/{chat.uuid}/")
        page.locator(".tl-launcher").click()
        page.get_by_text("We are away. Leave your email.").wait_for()
        page.locator("form.tl-person:not([hidden])").get_by_label("Your email").fill("night@example.org")
        page.get_by_role("button", name="Send me replies by email").click()
        page.get_by_text("Thanks! We will reply to your email.").wait_for()
        box = page.get_by_label("Message")
        box.fill("My router blinks red")
        box.press("Enter")
        page.locator(".tl-visitor .tl-status", has_text="Sent").wait_for()
        ident = Identity.objects.get(kind="email", value="night@example.org")
        assert Identity.objects.get(kind="chat").customer_id == ident.customer_id
        assert Message.objects.get().conversation.customer_id == ident.customer_id
        # on a phone the panel fills the screen
        size = page.locator(".tl-panel").bounding_box()
        assert size["width"] >= 380
    except Exception:
        _shoot([page], "chat-offline")
        raise
    finally:
        ctx.close()


def test_real_inbox_shows_a_chat_message_without_reload(personas, channels, client, browser, server):
    """The inbox page (another area, which includes realtime.js from base.html) updates live."""
    client.force_login(personas.ana)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    agent_ctx = browser.new_context()
    agent_ctx.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "domain": "127.0.0.1",
                            "path": "/"}])
    agent = agent_ctx.new_page()
    visitor_ctx = browser.new_context()
    visitor = visitor_ctx.new_page()
    try:
        agent.goto(server.base + "/")
        agent.get_by_role("link", name="Unassigned").click()  # a new chat is nobody's yet
        agent.wait_for_function("window.ThreadlineRealtime && window.ThreadlineRealtime.state === 'open'")
        visitor.goto(f"{server.base}/widget/demo/{channels.chat.uuid}/")
        visitor.locator(".tl-launcher").click()
        box = visitor.get_by_label("Message")
        box.fill("Is the blue kettle back in stock?")
        box.press("Enter")
        agent.get_by_text("Is the blue kettle back in stock?").first.wait_for(timeout=15000)
    except Exception:
        _shoot([visitor, agent], "chat-inbox")
        raise
    finally:
        agent_ctx.close()
        visitor_ctx.close()


def test_inbox_sla_badge_turns_to_warning_then_breached_without_reload(personas, channels, inbound, client,
                                                                         browser, settings):
    """The SLA task pushes sla.warning / sla.breached; the inbox row's badge and the open
    conversation's header change in place."""
    from datetime import timedelta

    from django.urls import reverse
    from django.utils import timezone

    from conversations import services
    from metrics.models import SlaPolicy

    settings.ROOT_URLCONF = "tests.realtime.sla_urls"
    SlaPolicy.objects.create(priority="normal", first_response_seconds=3600)
    conv = services.ingest(inbound(channels.api, "email", "kim@example.org", text="Where is my parcel?")
                           ).message.conversation
    Conversation.objects.filter(pk=conv.pk).update(first_inbound_at=timezone.now() - timedelta(minutes=10))
    client.force_login(personas.ana)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    ctx = browser.new_context()
    ctx.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "domain": "127.0.0.1", "path": "/"}])
    inbox, opened = ctx.new_page(), ctx.new_page()
    with UvicornThread() as server:
        try:
            inbox.goto(server.base + "/?view=unassigned")
            opened.goto(server.base + reverse("conversations:conversation", args=[conv.pk]))
            for page in (inbox, opened):
                page.wait_for_function("window.ThreadlineRealtime && window.ThreadlineRealtime.state === 'open'")
            badge = inbox.locator(f'.conv[data-conv-id="{conv.pk}"] .sla')
            assert "warning" not in badge.get_attribute("class") and "breached" not in badge.get_attribute("class")
            inbox.evaluate("window.__notReloaded = true")

            # 50 of 60 minutes gone: inside the 20 % warning window
            Conversation.objects.filter(pk=conv.pk).update(first_inbound_at=timezone.now() - timedelta(minutes=50))
            assert inbox.request.post(server.base + "/test-sla/run/").json()["published"] == 1
            inbox.locator(f'.conv[data-conv-id="{conv.pk}"] .sla.warning').wait_for(timeout=10000)
            opened.locator(".conv-head [data-sla-head].warning").wait_for(timeout=10000)

            Conversation.objects.filter(pk=conv.pk).update(first_inbound_at=timezone.now() - timedelta(minutes=61))
            assert inbox.request.post(server.base + "/test-sla/run/").json()["published"] == 1
            inbox.locator(f'.conv[data-conv-id="{conv.pk}"] .sla.breached').wait_for(timeout=10000)
            opened.locator(".conv-head [data-sla-head].breached").wait_for(timeout=10000)
            assert badge.inner_text() == "SLA breached"
            assert inbox.evaluate("window.__notReloaded") is True
        except Exception:
            _shoot([inbox, opened], "sla-live")
            raise
        finally:
            ctx.close()


def test_spanish_browser_gets_a_spanish_widget(personas, channels, browser, server):
    """Chromium with locale es-ES: every text of the widget comes in Spanish from the server."""
    chat = channels.chat  # nobody of billing is online: the offline form shows
    ctx = browser.new_context(locale="es-ES")
    page = ctx.new_page()
    try:
        page.goto(f"{server.base}/widget/demo/{chat.uuid}/")
        page.get_by_role("button", name="Abrir el chat").wait_for(timeout=10000)  # relabelled by the welcome frame
        launcher = page.locator(".tl-launcher")
        launcher.click()
        page.get_by_text("¡Hola! ¿En qué podemos ayudarle?").wait_for()
        page.get_by_text("Ahora mismo no hay nadie disponible.", exact=False).first.wait_for()
        assert page.locator(".tl-close").get_attribute("aria-label") == "Cerrar el chat"
        assert launcher.get_attribute("aria-label") == "Cerrar el chat"  # the open launcher closes it
        assert page.get_by_placeholder("Escriba su mensaje…").count() == 1
        form = page.locator("form.tl-person:not([hidden])")
        form.get_by_label("Su correo electrónico").fill("ana.lopez@example.es")
        form.get_by_role("button", name="Recibir las respuestas por correo").click()
        page.get_by_text("¡Gracias! Le responderemos por correo electrónico.").wait_for()
        box = page.get_by_label("Mensaje")
        box.fill("¿Tienen la tetera azul?")
        box.press("Enter")
        page.locator(".tl-visitor .tl-status", has_text="Enviado").wait_for()
        assert Message.objects.get().conversation.customer.language == "es"
    except Exception:
        _shoot([page], "chat-spanish")
        raise
    finally:
        ctx.close()
