"""Take the README screenshots with headless Chromium (Playwright).

    VAR_DIR=/tmp/shots DEBUG=1 .venv/bin/python manage.py migrate
    VAR_DIR=/tmp/shots DEBUG=1 .venv/bin/python manage.py seed_demo --conversations 300 --customers 80
    VAR_DIR=/tmp/shots .venv/bin/python docs/screenshots/take.py

Starts `manage.py runserver` on a free loopback port, signs in as the demo
agent ana and saves inbox.png, conversation.png, customer-panel.png and
inbox-phone.png next to this file."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
    import django

    django.setup()
    from conversations.models import ConversationEvent

    switched = (ConversationEvent.objects.filter(kind="channel_switched", conversation__team__name="Billing")
                .order_by("-at").values_list("conversation_id", flat=True).first())
    port = free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                              cwd=ROOT, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 880})
            page.goto(base + "/login/")
            page.fill("#id_username", "ana")
            page.fill("#id_password", "threadline-ana")
            page.click("button[type=submit]")
            page.wait_for_selector(".inbox")
            page.goto(base + "/?view=team-" + page.eval_on_selector(
                "a[href^='/?view=team-']", "a => a.getAttribute('href').split('team-')[1]"))
            page.screenshot(path=str(OUT / "inbox.png"))
            if switched:
                page.goto(base + f"/c/{switched}/")
                page.wait_for_selector(".conv-page")
                page.screenshot(path=str(OUT / "conversation.png"))
                customer = page.get_attribute(".panel", "data-customer")
                page.goto(base + f"/customers/{customer}/")
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / "customer-panel.png"))
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(base + "/?view=unassigned")
            page.screenshot(path=str(OUT / "inbox-phone.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    print("saved:", ", ".join(sorted(p.name for p in OUT.glob("*.png"))))


if __name__ == "__main__":
    main()
