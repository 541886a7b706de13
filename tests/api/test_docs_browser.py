"""Swagger UI at /api/docs/ renders in Chromium with every request outside
loopback blocked: the assets come from drf-spectacular-sidecar, not a CDN."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import require

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]


def test_swagger_ui_works_offline(live_server, personas, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    require(Path(CHROMIUM).exists() or bool(shutil.which("chromium")), f"Chromium ({CHROMIUM})")
    from playwright.sync_api import sync_playwright

    blocked, failed = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()

            def route(r):
                if urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"):
                    return r.continue_()
                blocked.append(r.request.url)
                return r.abort()

            page.route("**/*", route)
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(f"{live_server.url}/api/docs/")
            page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
            assert "Threadline API" in page.inner_text(".swagger-ui .info .title")
            page.wait_for_selector("text=/api/v1/conversations/{id}/messages/", timeout=20_000)
            assert page.locator(".opblock").count() > 30
        finally:
            browser.close()
    assert blocked == [] and failed == []
