"""The agent inbox in a real browser: Playwright driving Debian's Chromium
against pytest-django's live server (WSGI, real sockets, real database).

Failures save a screenshot under test-results/."""
from __future__ import annotations

import os
import re
import threading
import shutil
from pathlib import Path

import pytest

from tests.conftest import require

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
SHOTS = os.environ.get("THREADLINE_SCREENSHOTS")  # a directory: also save the README screenshots there

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_page(request):
    require(os.path.exists(CHROMIUM) or bool(shutil.which(CHROMIUM)), f"Chromium ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        require(False, "playwright (pip install playwright)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        page = context.new_page()
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        yield page
        report = getattr(request.node, "rep_call", None)  # set by tests/inbox/conftest.py
        if report is not None and report.failed:
            RESULTS.mkdir(exist_ok=True)
            page.screenshot(path=str(RESULTS / f"{request.node.name}.png"), full_page=True)
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


def sign_in(page, live_server, username: str) -> None:
    page.goto(live_server.url + "/login/?next=/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")
    page.click("button[type=submit]")
    page.wait_for_selector(".inbox")


def test_agent_day_in_the_browser(personas, inbox_data, live_server, browser_page):
    page = browser_page
    from playwright.sync_api import expect

    sign_in(page, live_server, "ana")
    # Unassigned view, then filter by channel (htmx swaps the list, URL is pushed)
    page.click(f"a[href='/?view=team-{personas.billing.pk}']")
    expect(page.locator(".conv")).to_have_count(2)
    page.click("[data-filters-toggle]")
    page.select_option("select[data-filter=channel]", "chat")
    expect(page.locator(".conv")).to_have_count(1)
    expect(page.locator(".conv").first).to_contain_text("Lou Park")
    assert "channel=chat" in page.url
    # the filters can be saved as a named view (the form follows the htmx-applied filters)
    page.fill("#sv-name", "Billing chats")
    page.click(".save-view button")
    expect(page.locator(".views.saved")).to_contain_text("Billing chats")
    page.click(".views.saved a")
    expect(page.locator(".conv")).to_have_count(1)

    # search with the keyboard: "/" focuses the search box
    page.keyboard.press("Escape")
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("/")
    page.keyboard.type("refund")
    page.keyboard.press("Enter")
    expect(page.locator(".conv")).to_have_count(1)
    expect(page.locator(".conv").first).to_contain_text("Kim Lee")
    shot(page, "inbox-search")

    # open it with j + Enter: one timeline across email and WhatsApp
    page.locator("#main").click(position={"x": 5, "y": 5})
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_selector(".conv-page")
    expect(page.locator(".timeline")).to_contain_text("Moved from Email to WhatsApp")
    expect(page.locator(".timeline .ch-email")).to_have_count(1)
    expect(page.locator(".timeline .ch-whatsapp")).to_have_count(1)
    expect(page.locator("[data-channel-reason]")).to_contain_text("last wrote on WhatsApp")
    expect(page.locator(".customer-panel")).to_contain_text("kim@example.org")

    # reply (r focuses the composer)
    page.keyboard.press("r")
    page.keyboard.type("Your refund is on its way.")
    page.click("[data-send]")
    expect(page.locator(".msg-item.dir-outbound")).to_contain_text("Your refund is on its way.")

    # internal note (n), with a mention
    page.locator(".timeline").click()
    page.keyboard.press("n")
    page.keyboard.type("@manager please approve the refund")
    page.click("[data-send]")
    expect(page.locator(".msg-item.dir-note")).to_contain_text("please approve")
    expect(page.locator(".msg-item.dir-note .note-badge")).to_be_visible()

    # assign to Bob's manager colleague Maria
    page.select_option("#assign-agent", label="Maria")
    page.click(".act-assign button[type=submit]")
    expect(page.locator(".timeline")).to_contain_text("Assigned to Maria")
    shot(page, "conversation")

    # resolve with the keyboard
    page.locator(".timeline").click()
    page.keyboard.press("e")
    expect(page.locator(".conv-state .status")).to_have_text("Resolved")
    assert not page.js_errors, page.js_errors


def test_bulk_resolve_and_merge_customers(personas, inbox_data, live_server, browser_page):
    page = browser_page
    from playwright.sync_api import expect

    from conversations.models import Conversation
    from customers.models import Customer

    sign_in(page, live_server, "ana")
    page.goto(live_server.url + f"/?view=team-{personas.billing.pk}")
    expect(page.locator(".conv")).to_have_count(2)
    shot(page, "inbox")
    page.check("[data-check-all]")
    expect(page.locator("[data-selected-count]")).to_have_text("2")
    page.click("[data-bulk-resolve]")
    expect(page.locator(".empty")).to_be_visible()
    assert set(Conversation.objects.filter(team=personas.billing).values_list("status", flat=True)) == {"resolved"}

    # merge Lou (chat visitor) into Kim, with a preview first
    kim, lou = inbox_data.customer, inbox_data.chat.customer
    page.goto(live_server.url + f"/customers/{kim.pk}/")
    expect(page.locator(".profile")).to_contain_text("Kim Lee")
    shot(page, "customer-panel")
    page.goto(live_server.url + f"/customers/{kim.pk}/merge/")
    page.fill("#merge-other", str(lou.pk))
    page.click(".merge-find button")
    expect(page.locator("[data-merge-preview]")).to_contain_text("visitor-77")
    expect(page.locator("[data-merge-preview]")).to_contain_text("kim@example.org")
    page.on("dialog", lambda d: d.accept())
    page.click("[data-confirm-merge]")
    expect(page.locator(".msg-success")).to_contain_text("merged")
    assert not Customer.objects.filter(pk=lou.pk).exists()
    assert Conversation.objects.get(pk=inbox_data.chat.pk).customer_id == kim.pk
    assert re.search(rf"/customers/{kim.pk}/$", page.url)
    assert not page.js_errors, page.js_errors


def test_phone_layout_and_shortcut_help(personas, inbox_data, live_server, browser_page):
    page = browser_page
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, live_server, "ana")
    expect(page.locator("#sidebar")).to_be_hidden()
    page.click("[data-nav-toggle]")
    expect(page.locator("#sidebar")).to_be_visible()
    page.keyboard.press("Escape")
    page.locator("#main").click(position={"x": 5, "y": 5})
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    # no horizontal scrolling on a phone
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_live_updates_and_presence_from_the_realtime_contract(personas, inbox_data, live_server, browser_page):
    """inbox.js reacts to the realtime layer's DOM events (threadline:<event>), whatever transport delivers them."""
    page = browser_page
    from playwright.sync_api import expect

    from conversations import services

    sign_in(page, live_server, "ana")
    conv = inbox_data.conv
    page.goto(live_server.url + f"/c/{conv.pk}/")
    page.wait_for_selector(".conv-page")
    page.evaluate("""id => document.dispatchEvent(new CustomEvent("threadline:presence", {detail: {
        conversation: id, viewers: [{id: 999, name: "Bob", initials: "BB", color: "#16a34a"}],
        typing: [{id: 999, name: "Bob", initials: "BB", color: "#16a34a"}]}}))""", conv.pk)
    expect(page.locator("[data-presence] .avatar")).to_have_text("BB")
    expect(page.locator("[data-typing-warning]")).to_be_visible()
    expect(page.locator("[data-typing-warning]")).to_contain_text("Bob")
    # a message arrives: the timeline reloads without a full page load
    # outside Playwright's event-loop thread, as in the server (realtime publishes from sync code)
    def add_note():
        from django.db import connection

        try:
            services.add_note(conversation=conv, author=personas.manager, body="Approved by finance")
        finally:
            connection.close()

    worker = threading.Thread(target=add_note)
    worker.start()
    worker.join()
    page.evaluate("""id => { window.__marker = 1; document.dispatchEvent(new CustomEvent("threadline:message.created",
        {detail: {conversation: {id: id}, message: {id: 1}}})); }""", conv.pk)
    expect(page.locator(".timeline")).to_contain_text("Approved by finance")
    assert page.evaluate("window.__marker") == 1  # same document: no reload
    # someone else resolves it: header and timeline follow, the draft in the composer stays
    page.fill("[data-composer]", "my unsent draft")
    worker = threading.Thread(target=_in_thread(services.resolve_conversation, conversation=conv,
                                                actor=personas.manager))
    worker.start()
    worker.join()
    page.evaluate("""id => document.dispatchEvent(new CustomEvent("threadline:conversation.updated",
        {detail: {conversation: {id: id, status: "resolved"}}}))""", conv.pk)
    expect(page.locator(".conv-state .status")).to_have_text("Resolved")
    expect(page.locator(".timeline")).to_contain_text("Resolved by Maria")
    expect(page.locator("[data-composer]")).to_have_value("my unsent draft")
    assert page.evaluate("window.__marker") == 1
    assert not page.js_errors, page.js_errors


def _in_thread(fn, **kwargs):
    def run():
        from django.db import connection

        try:
            fn(**kwargs)
        finally:
            connection.close()

    return run
