"""The SMTP listener (aiosmtpd).

Accepts RCPT only for configured email channel addresses and their
`local+<token>@domain` variants (550 otherwise), refuses mail over
SMTP_LISTENER_MAX_BYTES (552), and answers 250 only once the raw message is
stored as an InboundEnvelope. Parsing and ingest follow in the same worker;
a processing failure leaves the envelope `failed` for replay, the sender still
gets 250 because the message is safe.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.smtp import SMTP
from django.conf import settings
from django.db import connections

from . import parser

log = logging.getLogger(__name__)


def close_broken_connections() -> None:
    """The listener's worker threads keep their database connection between
    messages (connecting per message is slow); one that failed is replaced."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and (conn.errors_occurred or conn.in_atomic_block):
            if conn.in_atomic_block or not conn.is_usable():
                conn.close()
            else:
                conn.errors_occurred = False
# aiosmtpd logs every SMTP command at INFO: keep that out of the logs unless configured
if logging.getLogger("mail.log").level == logging.NOTSET:
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def channel_for_recipient(address: str):
    """The active email channel receiving `address` (or its +token variant), else None."""
    from channels_app.models import Channel

    wanted = parser.base_address(address)
    if not wanted or "@" not in wanted:
        return None
    for channel in Channel.objects.filter(kind="email", active=True).order_by("pk"):
        own = str(channel.settings.get("address") or "").strip().lower()
        if own and parser.base_address(own) == wanted:
            return channel
    return None


def store_and_process(data: bytes, rcpt_tos: list[str], *, mail_from: str = "", remote_addr: str | None = None,
                      helo: str = "") -> list[int]:
    """Store one envelope per receiving channel, then process each. Raises only
    if storing fails (the caller answers 451 so the sender retries)."""
    from .adapter import store_raw

    from .adapter import process_envelope as envelope_process

    close_broken_connections()
    try:
        by_channel: dict[int, tuple[object, list[str]]] = {}
        for rcpt in rcpt_tos:
            channel = channel_for_recipient(rcpt)
            if channel is not None:
                by_channel.setdefault(channel.pk, (channel, []))[1].append(rcpt)
        stored = []
        for channel, rcpts in by_channel.values():
            envelope = store_raw(channel=channel, body=data, source="smtp",
                                 headers={"rcpt_to": rcpts, "mail_from": mail_from[:320], "helo": helo[:200]},
                                 remote_addr=remote_addr)
            stored.append(envelope)
        for envelope in stored:
            try:
                envelope_process(envelope)
            except Exception:
                log.exception("email envelope %s stored but processing failed; kept for replay", envelope.pk)
        return [e.pk for e in stored]
    finally:
        close_broken_connections()


class ThreadlineHandler:
    def __init__(self, executor: ThreadPoolExecutor):
        self.executor = executor

    async def _run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        def lookup():
            close_broken_connections()
            return channel_for_recipient(address) is not None

        try:
            known = await self._run(lookup)
        except Exception:
            log.exception("recipient lookup failed")
            return "451 4.3.0 Temporary failure, please retry"
        if not known:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        try:
            await self._run(store_and_process, data, list(envelope.rcpt_tos), mail_from=envelope.mail_from or "",
                            remote_addr=peer, helo=session.host_name or "")
        except Exception:
            log.exception("storing inbound mail failed")
            return "451 4.3.0 Could not store the message, please retry"
        return "250 2.0.0 Message accepted"


class Listener:
    """An SMTP server on its own event loop thread. `port=0` picks a free port
    (read it back from `.port`)."""

    def __init__(self, host: str, port: int, *, max_bytes: int | None = None, workers: int | None = None):
        self.host = host
        self.port = port
        self.max_bytes = max_bytes or settings.SMTP_LISTENER_MAX_BYTES
        self.executor = ThreadPoolExecutor(max_workers=workers or getattr(settings, "SMTP_LISTENER_WORKERS", 4),
                                           thread_name_prefix="smtp-ingest")
        self.handler = ThreadlineHandler(self.executor)
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=f"smtp-listener-{port}", daemon=True)

    def _factory(self):
        return SMTP(self.handler, data_size_limit=self.max_bytes, enable_SMTPUTF8=True, decode_data=False,
                    hostname=getattr(settings, "SMTP_LISTENER_HOSTNAME", None) or "threadline", loop=self.loop,
                    timeout=300)

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(self.loop.create_server(self._factory, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self._server.close()
            self.loop.run_until_complete(self._server.wait_closed())
            self.loop.close()

    def start(self) -> Listener:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        # close each worker thread's database connection: one task per thread, held at a barrier
        workers = self.executor._max_workers
        barrier = threading.Barrier(workers)

        def close_in_thread():
            try:
                barrier.wait(5)
            except threading.BrokenBarrierError:
                pass
            connections.close_all()

        for future in [self.executor.submit(close_in_thread) for _ in range(workers)]:
            future.result()
        self.executor.shutdown(wait=True)


def start_listener(host: str = "127.0.0.1", port: int = 2525, **kwargs) -> Listener:
    return Listener(host, port, **kwargs).start()
