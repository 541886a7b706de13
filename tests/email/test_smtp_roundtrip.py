"""A full round trip over real sockets: smtplib -> our SMTP listener -> ingest;
agent reply -> Django SMTP backend -> a local aiosmtpd sink; the customer's
answer (with the headers a mail client sets, or only the reply-token address)
lands in the same conversation."""
from __future__ import annotations

import smtplib
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid

import pytest

from channels_app.adapters.email.smtp import start_listener
from channels_app.models import InboundEnvelope
from conversations import services
from conversations.models import Conversation, Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listener(email_channel):
    server = start_listener("127.0.0.1", 0)
    yield server
    server.stop()


def send(listener, msg: EmailMessage, rcpt: list[str] | None = None):
    with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
        return client.send_message(msg, to_addrs=rcpt)


def first_mail() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Kim Lee <kim@example.org>"
    msg["To"] = "Acme Support <support@acme.test>"
    msg["Subject"] = "My parcel never arrived"
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg.set_content("Hello, order 555 never arrived.\n\nKim\n")
    return msg


def test_round_trip_threads_by_headers_and_by_reply_token(listener, smtp_sink, personas):
    # given: a customer writes to the listener
    original = first_mail()
    send(listener, original)
    conv = Conversation.objects.get()
    inbound = conv.messages.get()
    assert inbound.external_id == original["Message-ID"].strip("<>")
    assert InboundEnvelope.objects.get().source == "smtp"

    # when: an agent replies through the service
    services.reply(conversation=conv, author=personas.ana, body="We are on it.\nAna", html="<p>We are on it.</p>")

    # then: the sink got a proper mail
    raw = smtp_sink.wait(1)[0]["data"]
    sent = BytesParser(policy=policy.default).parsebytes(raw)
    assert smtp_sink.messages[0]["rcpt_tos"] == ["kim@example.org"]
    assert str(sent["From"]) == "Ana via Acme Support <support@acme.test>"
    assert str(sent["Reply-To"]) == f"support+{conv.reply_token}@acme.test"
    assert str(sent["In-Reply-To"]) == original["Message-ID"]
    assert original["Message-ID"] in str(sent["References"])
    assert f"[#{conv.pk}]" in str(sent["Subject"]) and str(sent["Subject"]).startswith("Re: ")
    assert sent["Auto-Submitted"] is None
    assert sent.get_content_type() == "multipart/alternative"
    assert {p.get_content_type() for p in sent.iter_parts()} == {"text/plain", "text/html"}
    reply_msg = Message.objects.get(direction="outbound")
    assert reply_msg.delivery_status == "sent"
    assert f"<{reply_msg.external_id}>" == str(sent["Message-ID"])

    # when: the customer answers it like a mail client does (quoting, In-Reply-To, References)
    answer = EmailMessage()
    answer["From"] = "Kim Lee <kim@example.org>"
    answer["To"] = str(sent["Reply-To"])
    answer["Subject"] = "Re: " + str(sent["Subject"])
    answer["Message-ID"] = make_msgid(domain="example.org")
    answer["In-Reply-To"] = str(sent["Message-ID"])
    answer["References"] = f"{sent['References']} {sent['Message-ID']}"
    answer.set_content("Thanks!\n\nOn Mon, 2 Mar 2026, Ana via Acme Support wrote:\n> We are on it.\n> Ana\n")
    send(listener, answer)

    # then: same conversation, quoted part marked
    conv.refresh_from_db()
    latest = conv.messages.filter(direction="inbound").order_by("-id").first()
    assert Conversation.objects.count() == 1
    assert latest.body_text.startswith("Thanks!") and "quoted_from" in latest.meta

    # when: the customer writes a brand-new mail with no thread headers, to the reply-token address only,
    # after the conversation was resolved
    services.resolve_conversation(conversation=conv)
    bare = EmailMessage()
    bare["From"] = "kim@example.org"
    bare["To"] = f"support+{conv.reply_token}@acme.test"
    bare["Subject"] = "one more thing"
    bare.set_content("Also, the invoice is wrong.")
    send(listener, bare)

    # then: it reopens the same conversation
    conv.refresh_from_db()
    assert Conversation.objects.count() == 1
    assert conv.status == "open"
    assert conv.messages.filter(direction="inbound").count() == 3


def test_unknown_recipient_is_refused_with_550(listener):
    msg = first_mail()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        send(listener, msg, rcpt=["sales@acme.test"])
    assert exc.value.recipients["sales@acme.test"][0] == 550
    assert not InboundEnvelope.objects.exists()


def test_token_variant_is_accepted_and_other_recipients_refused(listener):
    msg = first_mail()
    with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
        refused = client.send_message(msg, to_addrs=["support+0123456789abcdef@acme.test", "nobody@acme.test"])
    assert refused == {"nobody@acme.test": (550, b"5.1.1 No such mailbox here")}
    env = InboundEnvelope.objects.get()
    assert env.headers["rcpt_to"] == ["support+0123456789abcdef@acme.test"]


def test_over_size_limit_is_refused_with_552(email_channel):
    server = start_listener("127.0.0.1", 0, max_bytes=2000)
    try:
        msg = first_mail()
        msg.set_content(("x" * 70 + "\n") * 80)
        # an ESMTP client announcing SIZE is refused at MAIL FROM
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            send(server, msg)
        assert exc.value.smtp_code == 552
        # a plain SMTP client (no SIZE) is refused after DATA
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            client.helo("client.example")
            with pytest.raises(smtplib.SMTPDataError) as exc:
                client.send_message(msg)
        assert exc.value.smtp_code == 552
        assert not InboundEnvelope.objects.exists()
    finally:
        server.stop()


def test_store_failure_answers_451_so_the_sender_retries(listener, monkeypatch):
    from channels_app import services as channel_services

    def broken_store(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(channel_services, "envelope_store", broken_store)
    with pytest.raises(smtplib.SMTPDataError) as exc:
        send(listener, first_mail())
    assert exc.value.smtp_code == 451


def test_run_smtp_command_serves_and_stops_on_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from .conftest import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'cmd.sqlite3'}",
           "SMTP_LISTENER_MAX_BYTES": "12345"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "manage.py", "run_smtp", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "run_smtp did not start"
                time.sleep(0.2)
        with client:
            code, _ = client.ehlo("test.example")
            assert code == 250 and client.esmtp_features["size"] == "12345"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()
    assert b"SMTP listener stopped" in out


def test_large_mail_is_stored_in_chunks_byte_exact(listener, monkeypatch):
    """On PostgreSQL a large body is appended in chunks (memory); the stored bytes are exact."""
    from channels_app.adapters.email import adapter

    monkeypatch.setattr(adapter, "STORE_CHUNK", 1000)
    msg = first_mail()
    msg.set_content("".join(f"line {n} of a longer message\n" for n in range(600)))
    send(listener, msg)
    env = InboundEnvelope.objects.get()
    assert bytes(env.body) == msg.as_bytes(policy=policy.SMTP)
    assert env.status == "processed"
