"""Benchmark: inbound mail through the SMTP listener, and the same corpus through
django-helpdesk's `get_email` (local-directory mailbox) for comparison.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/tl_email REDIS_URL=redis://127.0.0.1:6379/1 \
        .venv/bin/python bench/email.py --messages 2000 --big 25

With REDIS_URL set, after-commit work (realtime publish, automation and metrics
tasks) goes to Redis as in production (no worker consumes it during the run; the
queue is purged at the end). Without it, Celery runs eagerly and that work is
done inline by the listener, which is much slower.

1. Generates a corpus: --messages mails with a mean size of about 20 KB (text +
   HTML, a third with attachments, a quarter replying to an earlier mail), plus a
   few large ones (1-5 MB) and one of --big MB.
2. Threadline: starts the SMTP listener in this process and sends the corpus
   from a separate client process over --connections parallel SMTP sessions.
   Each mail is answered 250 only after it is stored, parsed and ingested, so
   messages/s is the end-to-end rate. Peak RSS of the listener process is
   sampled during the run and while the big message is processed.
3. django-helpdesk: installs `django-helpdesk` into a throwaway venv under /tmp
   (never into ours), writes the same .eml files into a local-directory mailbox
   and times `manage.py get_email` in a subprocess with its own minimal Django
   settings (SQLite). Prints both rates and the ratio.
"""
from __future__ import annotations

import sys
from pathlib import Path

# this file is named email.py: keep its directory off sys.path so `import email` is the stdlib
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
os.environ.setdefault("SECRET_KEY", "bench-only")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tl_email")

WORDS = ("order invoice refund parcel delivery account password login payment card shipping address "
         "please thanks hello regards problem still again week since yesterday urgent help support team "
         "we you they the a an is was not never arrived wrong amount charged twice cancel subscription").split()
DH_VENV = Path(os.environ.get("DH_VENV", "/tmp/threadline-bench-django-helpdesk-venv"))


# --------------------------------------------------------------------------- corpus

def paragraph(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_mail(rng: random.Random, n: int, target: int, earlier: list[str]) -> bytes:
    msg = EmailMessage()
    sender = rng.randrange(600)
    msg["From"] = f"Customer {sender} <customer{sender}@example.org>"
    msg["To"] = "support@acme.test"
    msg["Subject"] = f"Question {n}: {paragraph(rng, 5)}"
    msg["Date"] = formatdate(localtime=False)
    own = f"<bench-{n}-{rng.getrandbits(40):x}@example.org>"
    msg["Message-ID"] = own
    if earlier and rng.random() < 0.25:
        parent = rng.choice(earlier)
        msg["In-Reply-To"] = parent
        msg["References"] = parent
    earlier.append(own)
    attach = rng.random() < 0.33
    body_budget = target // 2 if attach else target
    # text + HTML alternatives share the budget
    paras, size = [], 0
    while size < body_budget // 2:
        p = paragraph(rng, rng.randint(20, 80))
        paras.append(p)
        size += len(p) + 2
    text = "\n\n".join(paras) + "\n\n> quoted history\n> from the previous mail\n"
    msg.set_content(text)
    msg.add_alternative("<html><body>" + "".join(f"<p>{p}</p>" for p in paras)
                        + "<blockquote type=\"cite\">quoted</blockquote></body></html>", subtype="html")
    if attach:
        blob = rng.randbytes(max(target - body_budget, 100) * 3 // 4)  # base64 inflates by 4/3
        msg.add_attachment(blob, maintype="application", subtype="pdf", filename=f"doc-{n}.pdf")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF, as on the wire


def make_big(rng: random.Random, n: int, megabytes: float) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Big Sender <big@example.org>"
    msg["To"] = "support@acme.test"
    msg["Subject"] = f"Large attachment {n}"
    msg["Message-ID"] = f"<bench-big-{n}-{rng.getrandbits(40):x}@example.org>"
    msg["Date"] = formatdate(localtime=False)
    msg.set_content("See the attached scan.")
    # base64 inflates by 4/3 plus CRLF every 76 characters: the whole mail is about `megabytes`
    raw_size = int(megabytes * 1024 * 1024 * 3 / 4 * 76 / 78) - 4096
    msg.add_attachment(rng.randbytes(raw_size), maintype="application", subtype="octet-stream",
                       filename=f"scan-{n}.bin")
    return msg.as_bytes(policy=policy.SMTP)  # CRLF, as on the wire


def generate(directory: Path, count: int, big_mb: float, seed: int = 7) -> tuple[list[Path], list[Path]]:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    earlier: list[str] = []
    normal = []
    for n in range(count):
        target = int(min(max(rng.lognormvariate(9.6, 0.7), 1500), 250_000))  # mean about 20 KB
        path = directory / f"{n:06d}.eml"
        path.write_bytes(make_mail(rng, n, target, earlier))
        normal.append(path)
    big = []
    for i, mb in enumerate([1, 3, 5][: max(0, min(3, count // 500))] + [big_mb]):
        path = directory / f"big-{i}.eml"
        path.write_bytes(make_big(rng, i, mb))
        big.append(path)
    return normal, big


# --------------------------------------------------------------------------- memory

def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


# --------------------------------------------------------------------------- Threadline

CLIENT = textwrap.dedent("""
    import smtplib, sys, time, threading
    port, conns, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    chunks = [files[i::conns] for i in range(conns)]
    errors = []
    def run(chunk):
        with smtplib.SMTP("127.0.0.1", port, timeout=600) as s:
            for f in chunk:
                data = open(f, "rb").read()
                try:
                    refused = s.sendmail("bench@example.org", ["support@acme.test"], data)
                    if refused:
                        errors.append(refused)
                except smtplib.SMTPException as e:
                    errors.append(repr(e)[:200])
    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(c,)) for c in chunks if c]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(time.perf_counter() - t0, len(errors), errors[:3])
""")


def send(port: int, files: list[Path], connections: int) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", CLIENT, str(port), str(connections), *map(str, files)],
                         capture_output=True, text=True, check=True)
    elapsed, errors, sample = out.stdout.split(" ", 2)
    if int(errors):
        print("  client errors:", sample.strip())
    return float(elapsed), int(errors)


def run_threadline(normal: list[Path], big: list[Path], connections: int, workers: int) -> dict:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from channels_app.adapters.email.smtp import start_listener
    from channels_app.models import Channel, InboundEnvelope
    from conversations.models import Message

    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="tl-email-bench-media-")
    call_command("migrate", verbosity=0)
    Channel.objects.filter(kind="email", settings__address="support@acme.test").delete()
    Channel.objects.create(kind="email", name="Bench mail", settings={"address": "support@acme.test", "rate_limit": 0})
    before_msgs = Message.objects.count()
    before_env = InboundEnvelope.objects.count()
    connection.close()
    listener = start_listener("127.0.0.1", 0, workers=workers)
    try:
        baseline = rss_mb()
        with RssSampler() as corpus_rss:
            elapsed, errors = send(listener.port, normal, connections)
        big_results = []
        for path in big:
            with RssSampler() as big_rss:
                t, e = send(listener.port, [path], 1)
            big_results.append((path.stat().st_size / 1024 / 1024, t, big_rss.peak, e))
    finally:
        listener.stop()
        if settings.REDIS_URL:
            # no worker consumes during the run: drop the queued after-ingest tasks
            from helpdesk.celery import app

            app.control.purge()
    stored = Message.objects.count() - before_msgs
    envelopes = InboundEnvelope.objects.count() - before_env
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)
    return {"elapsed": elapsed, "errors": errors, "rate": len(normal) / elapsed, "baseline": baseline,
            "peak": corpus_rss.peak, "big": big_results, "stored": stored, "envelopes": envelopes,
            "db": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]}


# --------------------------------------------------------------------------- django-helpdesk

DH_SETTINGS = textwrap.dedent("""
    import os
    BASE = os.environ["DH_BASE"]
    SECRET_KEY = "bench-only"
    DEBUG = False
    ALLOWED_HOSTS = ["*"]
    SITE_ID = 1
    USE_TZ = True
    INSTALLED_APPS = [
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
        "django.contrib.messages", "django.contrib.staticfiles", "django.contrib.sites", "django.contrib.humanize",
        "helpdesk",
    ]
    for _optional in ("bootstrap4form", "rest_framework", "django_filters", "pinax.teams", "account", "reversion"):
        try:
            __import__(_optional)
            INSTALLED_APPS.insert(-1, _optional)
        except ImportError:
            pass
    MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware",
                  "django.contrib.auth.middleware.AuthenticationMiddleware",
                  "django.contrib.messages.middleware.MessageMiddleware"]
    ROOT_URLCONF = "dh_urls"
    TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                  "OPTIONS": {"context_processors": ["django.contrib.auth.context_processors.auth",
                                                     "django.contrib.messages.context_processors.messages",
                                                     "django.template.context_processors.request"]}}]
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(BASE, "dh.sqlite3")}}
    MEDIA_ROOT = os.path.join(BASE, "media")
    STATIC_URL = "/static/"
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
    HELPDESK_TEAMS_MODE_ENABLED = False
    LOGGING = {"version": 1, "disable_existing_loggers": True}
""")

DH_RUN = textwrap.dedent("""
    import os, sys, time
    import django
    django.setup()
    from django.core.management import call_command
    from helpdesk.models import Queue, Ticket, FollowUp
    call_command("migrate", verbosity=0)
    q = Queue.objects.create(title="Support", slug="support", email_address="support@acme.test",
                             allow_email_submission=True, email_box_type="local",
                             email_box_local_dir=sys.argv[1], email_box_interval=0)
    n = len([f for f in os.listdir(sys.argv[1])])
    t0 = time.perf_counter()
    call_command("get_email")
    elapsed = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss of the parent across fork+exec
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
    print(elapsed, n, Ticket.objects.count(), FollowUp.objects.count(), peak)
""")


def ensure_django_helpdesk() -> Path:
    python = DH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DH_VENV)], check=True)
    # run from /tmp: in this repository `helpdesk` would be found as our own package
    check = subprocess.run([str(python), "-c", "import importlib.util, sys; "
                            "sys.exit(importlib.util.find_spec('django') is None "
                            "or importlib.util.find_spec('helpdesk') is None)"], capture_output=True, cwd="/tmp")
    if check.returncode != 0:
        print("  installing django-helpdesk into", DH_VENV, flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "django-helpdesk"], check=True)
    return python


def run_django_helpdesk(files: list[Path]) -> dict | None:
    try:
        python = ensure_django_helpdesk()
    except subprocess.CalledProcessError as exc:
        print("  django-helpdesk could not be installed:", exc)
        return None
    base = Path(tempfile.mkdtemp(prefix="tl-dh-bench-"))
    mailbox = base / "mailbox"
    mailbox.mkdir()
    for path in files:
        shutil.copy(path, mailbox / path.name)
    (base / "dh_settings.py").write_text(DH_SETTINGS)
    (base / "dh_urls.py").write_text("from django.urls import include, path\n"
                                     "urlpatterns = [path('', include('helpdesk.urls'))]\n")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dh_settings", "DH_BASE": str(base), "PYTHONPATH": str(base)}
    env.pop("DATABASE_URL", None)
    try:
        out = subprocess.run([str(python), "-c", DH_RUN, str(mailbox)], capture_output=True, text=True, env=env,
                             cwd=base, timeout=3600)
        if out.returncode != 0:
            print("  django-helpdesk run failed:\n", out.stderr[-3000:])
            return None
        elapsed, n, tickets, followups, peak = out.stdout.strip().splitlines()[-1].split()
        return {"elapsed": float(elapsed), "files": int(n), "tickets": int(tickets), "followups": int(followups),
                "rate": int(n) / float(elapsed), "peak": float(peak)}
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--big", type=float, default=25, help="size in MB of the largest message")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4, help="listener ingest threads")
    ap.add_argument("--skip-django-helpdesk", action="store_true")
    args = ap.parse_args()

    corpus = Path(tempfile.mkdtemp(prefix="tl-email-corpus-"))
    try:
        t0 = time.perf_counter()
        normal, big = generate(corpus, args.messages, args.big)
        sizes = [p.stat().st_size for p in normal]
        print(f"corpus: {len(normal)} messages, mean {sum(sizes) / len(sizes) / 1024:.1f} KB, "
              f"max {max(sizes) / 1024:.0f} KB; large: "
              + ", ".join(f"{p.stat().st_size / 1024 / 1024:.1f} MB" for p in big)
              + f" (generated in {time.perf_counter() - t0:.1f}s)", flush=True)

        tl = run_threadline(normal, big, args.connections, args.workers)
        print(f"\nThreadline SMTP listener ({tl['db']}, {args.connections} connections, {args.workers} workers):")
        print(f"  {len(normal)} messages in {tl['elapsed']:.1f}s = {tl['rate']:.0f} messages/s "
              f"({tl['stored']} new messages stored, {tl['envelopes']} envelopes, {tl['errors']} errors)")
        print(f"  RSS: {tl['baseline']:.0f} MB at start, peak {tl['peak']:.0f} MB during the corpus")
        for size, elapsed, peak, errors in tl["big"]:
            print(f"  {size:.1f} MB message: {elapsed:.2f}s, peak RSS {peak:.0f} MB{' ERROR' if errors else ''}")

        if args.skip_django_helpdesk:
            return
        print("\ndjango-helpdesk get_email (local-directory mailbox, SQLite, same corpus without the large mails):",
              flush=True)
        dh = run_django_helpdesk(normal)
        if dh is None:
            return
        print(f"  {dh['files']} messages in {dh['elapsed']:.1f}s = {dh['rate']:.0f} messages/s "
              f"({dh['tickets']} tickets, {dh['followups']} follow-ups), peak RSS {dh['peak']:.0f} MB")
        print(f"\nratio Threadline / django-helpdesk: {tl['rate'] / dh['rate']:.2f}x"
              + ("  (Threadline run had errors: not comparable)" if tl["errors"] else ""))
    finally:
        shutil.rmtree(corpus, ignore_errors=True)


if __name__ == "__main__":
    main()
