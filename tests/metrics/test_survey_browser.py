"""The one-click survey link in Chromium: the page confirms the score by itself,
while the same link fetched without a browser (a mail scanner) records nothing."""
from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import urllib.request
from django.utils import timezone

from conversations import services
from metrics.models import SurveyInvitation
from tests.conftest import require

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


@pytest.fixture
def browser(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    require(Path(CHROMIUM).exists() or bool(shutil.which("chromium")), f"Chromium ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_one_click_link_records_in_a_browser_not_for_a_scanner(request, live_server, play, channels, personas):
    now = timezone.now().replace(microsecond=0)
    conv = play.inbound(channels.email, "kim@x.org", (now - timedelta(minutes=10)).isoformat()).message.conversation
    services.reply(conversation=conv, author=personas.ana, body="done", at=now - timedelta(minutes=5), deliver=False)
    services.resolve_conversation(conversation=conv, actor=personas.ana)
    inv = SurveyInvitation.objects.get(conversation=conv)
    link = f"{live_server.url}/survey/{inv.token}/?score=5"

    # a scanner: a plain GET, no scripts
    with urllib.request.urlopen(link) as r:
        assert r.status == 200
    inv.refresh_from_db()
    assert inv.score is None

    browser = request.getfixturevalue("browser")  # after the services ran: Playwright runs a loop here
    page = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    page.goto(link)
    page.get_by_text("Thank you! Your answer was recorded.").wait_for()
    inv.refresh_from_db()
    assert inv.score == 5 and inv.answered_at is not None
    assert "score=" not in page.url  # a reload does not resubmit anything from the link
    page.locator("#comment").fill("Quick and kind")
    page.get_by_role("button", name="Send comment").click()
    page.get_by_text("Thanks for your comment.").wait_for()
    inv.refresh_from_db()
    assert inv.comment == "Quick and kind" and inv.score == 5
