"""Take the dashboard and survey screenshots with headless Chromium (Playwright).

    VAR_DIR=/tmp/shots DEBUG=1 .venv/bin/python manage.py migrate
    VAR_DIR=/tmp/shots DEBUG=1 .venv/bin/python manage.py seed_demo --conversations 300 --customers 80
    VAR_DIR=/tmp/shots DEBUG=1 .venv/bin/python manage.py recompute_metrics
    VAR_DIR=/tmp/shots .venv/bin/python docs/screenshots/take_dashboard.py

Signs in as the demo manager and saves dashboard.png and survey-phone.png next to this file."""
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
    from metrics.models import SurveyInvitation

    survey = SurveyInvitation.objects.filter(score__isnull=True).first()
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
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.goto(base + "/login/")
            page.fill("#id_username", "manager")
            page.fill("#id_password", "threadline-manager")
            page.click("button[type=submit]")
            page.wait_for_load_state()
            page.goto(base + "/dashboard/")
            page.wait_for_selector(".cards")
            page.wait_for_timeout(800)
            page.screenshot(path=str(OUT / "dashboard.png"))
            if survey:
                phone = browser.new_page(viewport={"width": 390, "height": 700})
                phone.goto(base + f"/survey/{survey.token}/")
                phone.screenshot(path=str(OUT / "survey-phone.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
