"""IMAP polling against a real Dovecot started by the test: new mail is
ingested once, even when polled twice, after a dropped connection and after
the server restarts; ingested mail is flagged \\Seen or moved."""
from __future__ import annotations

import imaplib
from email.message import EmailMessage

import pytest

from channels_app.adapters.email import imap
from channels_app.models import ImapCursor, InboundEnvelope
from conversations.models import Message
from tests.conftest import require

from .dovecot import DOVECOT, Dovecot


@pytest.fixture
def dovecot():
    require(DOVECOT is not None, "Dovecot (apt-get install dovecot-imapd)")
    server = Dovecot().start()
    yield server
    server.cleanup()


@pytest.fixture
def mailbox(dovecot, email_channel):
    email_channel.set_config({"host": "127.0.0.1", "port": dovecot.port, "tls": False, "user": dovecot.user,
                              "password": dovecot.password, "folder": "INBOX"})
    email_channel.save()
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(dovecot.user, dovecot.password)
    yield client
    try:
        client.logout()
    except Exception:
        pass


def append(client, n: int, folder: str = "INBOX") -> None:
    msg = EmailMessage()
    msg["From"] = f"Customer {n} <c{n}@example.org>"
    msg["To"] = "support@acme.test"
    msg["Subject"] = f"IMAP question {n}"
    msg["Message-ID"] = f"<imap-{n}@example.org>"
    msg.set_content(f"Body {n}")
    typ, _ = client.append(folder, None, None, msg.as_bytes())
    assert typ == "OK"


def flags(client, folder="INBOX") -> list[bytes]:
    client.select(folder)
    typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
    return [d for d in data if d]


def test_new_mail_ingested_once_polled_twice_and_after_restart(mailbox, dovecot, email_channel):
    # given two new messages
    append(mailbox, 1)
    append(mailbox, 2)
    # when polled twice
    assert imap.poll_all() == 2
    assert imap.poll_all() == 0
    # then each is stored once, flagged \Seen, and the cursor remembers where we stopped
    assert Message.objects.filter(direction="inbound").count() == 2
    assert InboundEnvelope.objects.filter(source="imap").count() == 2
    assert all(b"\\Seen" in f for f in flags(mailbox))
    cursor = ImapCursor.objects.get(channel=email_channel)
    assert cursor.last_uid == 2 and cursor.uidvalidity > 0

    # when the server restarts (every connection dropped) and one more mail arrives
    mailbox.logout()
    dovecot.stop()
    dovecot.start()
    client = imaplib.IMAP4("127.0.0.1", dovecot.port)
    client.login(dovecot.user, dovecot.password)
    append(client, 3)
    client.logout()
    # then only the new one is fetched
    assert imap.poll_all() == 1
    assert imap.poll_all() == 0
    assert sorted(Message.objects.values_list("external_id", flat=True)) == [
        "imap-1@example.org", "imap-2@example.org", "imap-3@example.org"]


def test_dropped_connection_mid_poll_resumes_without_duplicates(mailbox, email_channel, monkeypatch):
    for n in range(1, 5):
        append(mailbox, n)
    real_uid = imaplib.IMAP4.uid
    state = {"fetches": 0, "dropped": False}

    def flaky_uid(self, command, *args):
        if command == "FETCH":
            state["fetches"] += 1
            if state["fetches"] == 3 and not state["dropped"]:
                state["dropped"] = True
                self.sock.shutdown(2)  # the server "drops" the connection under us
        return real_uid(self, command, *args)

    monkeypatch.setattr(imaplib.IMAP4, "uid", flaky_uid)
    stored = imap.poll_all()
    assert state["dropped"]
    assert stored == 4
    assert imap.poll_all() == 0
    assert Message.objects.filter(direction="inbound").count() == 4
    assert ImapCursor.objects.get(channel=email_channel).last_uid == 4


def test_moves_to_a_folder_when_configured(mailbox, email_channel):
    mailbox.create("Processed")
    email_channel.settings["move_to"] = "Processed"
    email_channel.save()
    append(mailbox, 1)
    assert imap.poll_all() == 1
    mailbox.select("INBOX")
    assert mailbox.uid("SEARCH", None, "ALL")[1] == [b""]
    mailbox.select("Processed")
    assert mailbox.uid("SEARCH", None, "ALL")[1][0].split() == [b"1"]


def test_uidvalidity_change_rescans_without_duplicates(mailbox, email_channel):
    append(mailbox, 1)
    assert imap.poll_all() == 1
    # the server renumbered the folder: a stale cursor from another UIDVALIDITY
    ImapCursor.objects.filter(channel=email_channel).update(uidvalidity=1, last_uid=99)
    assert imap.poll_all() == 1  # fetched again...
    assert Message.objects.filter(direction="inbound").count() == 1  # ...but deduplicated on Message-ID


def test_wrong_password_is_recorded_not_raised(mailbox, email_channel):
    email_channel.set_config({"password": "wrong"})
    email_channel.save()
    append(mailbox, 1)
    assert imap.poll_all() == 0
    error = ImapCursor.objects.get(channel=email_channel).last_error
    assert "AUTHENTICATIONFAILED" in error.upper()
    assert "wrong" not in error  # the secret never ends up in the stored error


def test_a_running_poll_is_not_duplicated(mailbox, email_channel):
    from django.core.cache import cache

    append(mailbox, 1)
    cache.add(f"imap-poll-lock:{email_channel.pk}", 1, timeout=60)  # another worker is polling
    try:
        assert imap.poll_all() == 0
    finally:
        cache.delete(f"imap-poll-lock:{email_channel.pk}")
    assert imap.poll_all() == 1
