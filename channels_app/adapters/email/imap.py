"""IMAP polling for email channels (run by Celery beat through
channels_app.tasks.poll_all_imap).

Per-channel settings: host, port (993 with TLS, else 143), tls (bool, default
true), user, folder (default INBOX), move_to (optional folder; otherwise
ingested mail is flagged \\Seen); the password is a secret ("password"). Keys
may also be spelled imap_host, imap_port, ... .

A cursor (ImapCursor: UIDVALIDITY + last UID) advances after each message is
stored and processed, so a re-poll never fetches it again; a dropped
connection is reconnected and polling resumes from the cursor. Message-ID
dedupe in ingest covers a crash between storing and advancing the cursor.
"""
from __future__ import annotations

import imaplib
import logging
import re
import socket
import ssl
import time

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

log = logging.getLogger(__name__)

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_UID = re.compile(rb"UID (\d+)")
RETRYABLE = (imaplib.IMAP4.abort, OSError, EOFError, socket.timeout, ssl.SSLError)


class ImapConfigError(Exception):
    pass


def _conf(channel, key, default=None):
    value = channel.get(f"imap_{key}")
    if value in (None, ""):
        value = channel.get(key, default)
    return default if value in (None, "") else value


def imap_configured(channel) -> bool:
    return bool(_conf(channel, "host") and _conf(channel, "user"))


def _connect(channel) -> imaplib.IMAP4:
    host = str(_conf(channel, "host"))
    tls = str(_conf(channel, "tls", True)).lower() not in ("0", "false", "no", "off")
    port = int(_conf(channel, "port", 993 if tls else 143))
    timeout = int(_conf(channel, "timeout", 30))
    if tls:
        conn = imaplib.IMAP4_SSL(host, port, ssl_context=ssl.create_default_context(), timeout=timeout)
    else:
        conn = imaplib.IMAP4(host, port, timeout=timeout)
    typ, data = conn.login(str(_conf(channel, "user")), str(_conf(channel, "password", "")))
    if typ != "OK":
        raise ImapConfigError(f"login failed: {data!r}")
    return conn


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uidvalidity(conn: imaplib.IMAP4, select_data) -> int:
    typ, data = conn.response("UIDVALIDITY")
    for item in data or []:
        if item:
            try:
                return int(item)
            except (TypeError, ValueError):
                pass
    typ, data = conn.status(_quote(conn._tl_folder), "(UIDVALIDITY)")  # type: ignore[attr-defined]
    match = _UIDVALIDITY.search(b" ".join(d for d in data if isinstance(d, bytes)))
    return int(match.group(1)) if match else 0


def poll_channel(channel, *, max_messages: int = 500, max_reconnects: int = 3) -> int:
    """Fetch new mail of one channel. Returns how many messages were stored."""
    from channels_app.models import ImapCursor

    folder = str(_conf(channel, "folder", "INBOX"))
    cursor, _ = ImapCursor.objects.get_or_create(channel=channel, folder=folder)
    counter = [0]  # survives an attempt that dies half-way
    attempts = 0
    while True:
        stored = counter[0]
        try:
            _poll_once(channel, cursor, folder, max_messages - stored, counter)
            stored = counter[0]
            ImapCursor.objects.filter(pk=cursor.pk).update(last_polled_at=timezone.now(), last_error="")
            return stored
        except RETRYABLE as exc:
            attempts += 1
            log.warning("IMAP connection for channel %s dropped (%s), attempt %s", channel.pk, exc, attempts)
            stored = counter[0]
            if attempts > max_reconnects:
                ImapCursor.objects.filter(pk=cursor.pk).update(last_polled_at=timezone.now(),
                                                               last_error=f"{type(exc).__name__}: {exc}"[:2000])
                return stored
            time.sleep(min(0.25 * 2 ** attempts, 5))  # a short backoff before reconnecting
            cursor.refresh_from_db()
        except (imaplib.IMAP4.error, ImapConfigError) as exc:
            stored = counter[0]
            log.warning("IMAP error for channel %s: %s", channel.pk, exc)
            ImapCursor.objects.filter(pk=cursor.pk).update(last_polled_at=timezone.now(),
                                                           last_error=f"{type(exc).__name__}: {exc}"[:2000])
            return stored


def _poll_once(channel, cursor, folder: str, budget: int, counter: list[int]) -> None:
    from channels_app.models import ImapCursor
    from .adapter import store_raw

    from .adapter import process_envelope as envelope_process

    conn = _connect(channel)
    conn._tl_folder = folder  # type: ignore[attr-defined]
    try:
        typ, data = conn.select(_quote(folder))
        if typ != "OK":
            raise ImapConfigError(f"cannot select {folder}: {data!r}")
        validity = _uidvalidity(conn, data)
        if validity != cursor.uidvalidity:
            if cursor.uidvalidity:
                log.warning("UIDVALIDITY of %s changed (%s -> %s): rescanning", folder, cursor.uidvalidity, validity)
            cursor.uidvalidity, cursor.last_uid = validity, 0
            ImapCursor.objects.filter(pk=cursor.pk).update(uidvalidity=validity, last_uid=0, updated_at=timezone.now())
        typ, data = conn.uid("SEARCH", None, f"UID {cursor.last_uid + 1}:*")
        uids = sorted(int(u) for u in (data[0] or b"").split() if int(u) > cursor.last_uid) if typ == "OK" else []
        move_to = _conf(channel, "move_to")
        can_move = _has_capability(conn, b"MOVE")
        for uid in uids[:max(budget, 0)]:
            typ, fetched = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
            raw = b""
            for item in fetched or []:
                if isinstance(item, tuple) and len(item) >= 2:
                    raw = item[1]
                    break
            if typ == "OK" and raw:
                envelope = store_raw(channel=channel, body=raw, source="imap",
                                     headers={"imap_folder": folder, "imap_uid": uid, "imap_uidvalidity": validity})
                try:
                    with transaction.atomic():
                        envelope_process(envelope)
                except Exception:
                    log.exception("IMAP message uid %s stored as envelope %s; processing failed", uid, envelope.pk)
                counter[0] += 1
            ImapCursor.objects.filter(pk=cursor.pk).update(last_uid=uid, updated_at=timezone.now())
            cursor.last_uid = uid
            if move_to:
                if can_move:
                    conn.uid("MOVE", str(uid), _quote(str(move_to)))
                else:
                    conn.uid("COPY", str(uid), _quote(str(move_to)))
                    conn.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
            else:
                conn.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Seen)")
        if move_to and not can_move and uids:
            conn.expunge()
    finally:
        try:
            conn.logout()
        except Exception:
            pass


def _has_capability(conn: imaplib.IMAP4, name: bytes) -> bool:
    try:
        typ, data = conn.capability()  # after login: the authenticated capability list
        return typ == "OK" and name in b" ".join(d for d in data if isinstance(d, bytes)).upper().split()
    except imaplib.IMAP4.error:
        return False


def poll_all() -> int:
    from channels_app.models import Channel

    total = 0
    for channel in Channel.objects.filter(kind="email", active=True):
        if not imap_configured(channel):
            continue
        # one poller per mailbox at a time (overlapping beat ticks, several workers)
        lock = f"imap-poll-lock:{channel.pk}"
        if not cache.add(lock, 1, timeout=600):
            log.info("IMAP polling of channel %s already running", channel.pk)
            continue
        try:
            total += poll_channel(channel)
        except Exception:
            log.exception("IMAP polling of channel %s failed", channel.pk)
        finally:
            cache.delete(lock)
    return total
