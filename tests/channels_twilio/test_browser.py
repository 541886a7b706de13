"""Playwright driving Debian's Chromium on a phone-sized screen: a German
customer fills the /support/ form, opens the portal from the confirmation mail
and replies, against pytest-django's live server on loopback."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from django.core import mail

from conversations.models import Conversation, Message
from tests.conftest import require
from tests.factories import ChannelFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    require(Path(CHROMIUM).exists() or bool(shutil.which("chromium")), f"Chromium ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


def _shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"twilio-webform-{name}.png"), full_page=True)


def _no_horizontal_scroll(page):
    return page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")


def test_support_form_and_portal_on_a_phone_in_german(browser, live_server, settings):
    from django.core.cache import cache

    cache.clear()
    settings.PUBLIC_URL = live_server.url
    ChannelFactory(kind="webform", name="Contact form", settings={"address": "help@acme.test"})
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="de-DE", is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/support/")
    assert page.locator("h1").inner_text() == "Kontakt"
    assert _no_horizontal_scroll(page)
    _shoot(page, "form")
    box = page.locator("input[name=website]").bounding_box()  # the honeypot stays off-screen for people
    assert box is None or box["x"] + box["width"] <= 0
    page.fill("input[name=name]", "Jonas Weber")
    page.fill("input[name=email]", "jonas@example.de")
    page.fill("input[name=subject]", "Ladegerät defekt")
    page.fill("textarea[name=message]", "Mein Ladegerät funktioniert nicht mehr.")
    page.set_input_files("input[name=attachments]", files=[
        {"name": "foto.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\nfake"}])
    page.click("button[type=submit]")
    page.wait_for_selector("text=Vielen Dank, wir haben Ihre Nachricht erhalten")

    conv = Conversation.objects.get()
    assert conv.messages.get().attachments.get().filename == "foto.png"
    assert len(mail.outbox) == 1 and "Vielen Dank" in mail.outbox[0].body
    link = re.search(r"http://\S+/portal/\S+/", mail.outbox[0].body).group(0)

    page.goto(link)
    assert _no_horizontal_scroll(page)
    page.click(f"text=#{conv.pk}")
    page.wait_for_selector("text=Mein Ladegerät funktioniert nicht mehr.")
    page.fill("textarea[name=message]", "Es ist ein Modell von 2024.")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Ihre Antwort wurde gesendet.")
    _shoot(page, "portal-conversation")
    assert _no_horizontal_scroll(page)
    reply = Message.objects.get(body_text="Es ist ein Modell von 2024.")
    assert reply.conversation_id == conv.pk and reply.channel.kind == "webform"

    page.goto(link[:-6] + "xxxxx/")  # tampered
    page.wait_for_selector("text=Dieser Link ist ungültig")
    context.close()
