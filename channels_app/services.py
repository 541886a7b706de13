"""Inbound envelopes: store first, then parse and ingest; replay failures."""
from __future__ import annotations

import logging
import traceback

from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations import services as conv_services
from helpdesk.db import transactions as db_transactions

from .adapters import get_adapter
from .adapters.base import ParseError, ParseResult
from .models import Channel, EnvelopeStatus, InboundEnvelope

log = logging.getLogger(__name__)

# Headers never stored (credentials of the caller).
_DROP_HEADERS = {"authorization", "cookie", "proxy-authorization",
                 # a shared secret sent verbatim (not a signature): never persisted
                 "x-telegram-bot-api-secret-token"}


def envelope_store(*, channel: Channel | None, kind: str, body: bytes, headers: dict | None = None,
                   source: str = "webhook", remote_addr: str | None = None) -> InboundEnvelope:
    """Keep the raw payload before anything else looks at it."""
    clean_headers = {k: v for k, v in (headers or {}).items() if k.lower() not in _DROP_HEADERS}
    return InboundEnvelope.objects.create(channel=channel, kind=kind, body=body, headers=clean_headers,
                                          source=source, remote_addr=remote_addr)


def envelope_store_and_process(*, channel: Channel, kind: str, body: bytes, headers: dict | None = None,
                               source: str = "webhook", remote_addr: str | None = None) -> tuple[InboundEnvelope,
                                                                                                  ParseResult]:
    """Keep the raw payload and ingest it in one transaction: one commit per
    message instead of three (store, ingest, mark processed), for callers that
    answer only after the message is stored (the chat widget).

    The ingest runs without a savepoint of its own (two round trips less per
    message). A repeated delivery, or its concurrent twin that committed first,
    then fails the message's unique key and loses the whole transaction: it is
    run once more the way envelope_process runs it, where ingest returns the
    stored message (created=False) and the envelope is marked processed.

    Nothing is lost: when parsing or ingest fails, that transaction is rolled
    back and the envelope is stored on its own as failed, with the error, for
    envelope_replay; the exception is re-raised as envelope_process does."""
    clean_headers = {k: v for k, v in (headers or {}).items() if k.lower() not in _DROP_HEADERS}
    envelope = InboundEnvelope(channel=channel, kind=kind, body=body, headers=clean_headers, source=source,
                               remote_addr=remote_addr)
    try:
        try:
            with db_transactions.atomic():
                envelope.attempts += 1
                result = _store_and_process(envelope, get_adapter(envelope.kind))
        except IntegrityError:
            _unsaved(envelope)
            envelope.attempts = 0
            with transaction.atomic():
                envelope.save(force_insert=True)
                result = envelope_process(envelope)
        return envelope, result
    except Exception as exc:
        error = f"ParseError: {exc}" if isinstance(exc, ParseError) else traceback.format_exc()
        _unsaved(envelope)
        envelope.status = EnvelopeStatus.FAILED
        envelope.error = error[-4000:]
        envelope.processed_at = timezone.now()
        envelope.message_ids = []
        envelope.save(force_insert=True)
        raise


def _store_and_process(envelope: InboundEnvelope, adapter) -> ParseResult:
    """In the caller's transaction: store the envelope and ingest what it
    carries without a savepoint. On PostgreSQL, for an adapter whose parse
    does not need the envelope's id (Adapter.parses_unsaved: chat), parsed
    first; one message and nothing else: the statement that writes the
    message inserts the envelope too, already processed (two round trips less
    than INSERT first and UPDATE after)."""
    if adapter.parses_unsaved and conv_services.writes_envelope():
        result = adapter.parse(envelope, envelope.channel)
        if len(result.messages) == 1 and not result.statuses:
            msg = result.messages[0]
            envelope.status = EnvelopeStatus.PROCESSED
            envelope.error = result.ignored_reason[:2000]
            envelope.processed_at = timezone.now()
            # a repeated delivery raises IntegrityError here (no savepoint): the caller runs it again
            msg.meta["_result"] = conv_services.ingest(msg, savepoint=False, envelope=envelope)
            return result
        envelope.save(force_insert=True)
        return _process(envelope, envelope.channel, adapter, savepoint=False, parsed=result)
    envelope.save(force_insert=True)
    return _process(envelope, envelope.channel, adapter, savepoint=False)


def _unsaved(envelope: InboundEnvelope) -> None:
    """The envelope as before its rolled-back transaction: to be inserted again
    (not processed: _store_and_process may have set its state for the INSERT)."""
    envelope.pk = None
    envelope._state.adding = True
    envelope.status = EnvelopeStatus.PENDING
    envelope.error = ""
    envelope.processed_at = None
    envelope.message_ids = []


def envelope_from_request(request, channel: Channel, kind: str) -> InboundEnvelope:
    headers = dict(request.headers)
    headers["_method"] = request.method
    headers["_path"] = request.get_full_path()
    return envelope_store(channel=channel, kind=kind, body=request.body, headers=headers,
                          remote_addr=request.META.get("REMOTE_ADDR"))


def envelope_reject(envelope: InboundEnvelope, reason: str) -> None:
    InboundEnvelope.objects.filter(pk=envelope.pk).update(status=EnvelopeStatus.REJECTED, error=reason[:2000],
                                                          processed_at=timezone.now())


def envelope_process(envelope: InboundEnvelope) -> ParseResult:
    """Parse and ingest one envelope. Marks it processed, ignored or failed
    (with the error) and re-raises ParseError for the caller to answer 400."""
    channel = envelope.channel
    adapter = get_adapter(envelope.kind)
    envelope.attempts += 1
    try:
        return _process(envelope, channel, adapter)
    except ParseError as exc:
        _fail(envelope, f"ParseError: {exc}")
        raise
    except Exception:
        _fail(envelope, traceback.format_exc())
        raise


def _process(envelope: InboundEnvelope, channel, adapter, *, savepoint: bool = True,
             parsed: ParseResult | None = None) -> ParseResult:
    """envelope_process without marking a failure. savepoint=False: see
    conversations.services.ingest (the caller retries a repeated delivery).
    parsed: the adapter's result for this envelope, when parsed already."""
    result = parsed if parsed is not None else adapter.parse(envelope, channel)
    message_ids = []
    for msg in result.messages:
        msg.envelope_id = envelope.pk
        ingested = conv_services.ingest(msg) if savepoint else conv_services.ingest(msg, savepoint=False)
        message_ids.append(ingested.message.pk)
        msg.meta["_result"] = ingested
    for status in result.statuses:
        outbound = conv_services.find_outbound(channel=channel, external_id=status.external_id)
        if outbound is None:
            log.info("status %s for unknown message %s on %s", status.status, status.external_id, channel)
            continue
        conv_services.delivery_update(message=outbound, status=status.status, error=status.error, at=status.at)
    state = (EnvelopeStatus.PROCESSED if (result.messages or result.statuses or result.handled)
             else EnvelopeStatus.IGNORED)
    InboundEnvelope.objects.filter(pk=envelope.pk).update(
        status=state, error=result.ignored_reason[:2000], attempts=envelope.attempts,
        processed_at=timezone.now(), message_ids=message_ids)
    envelope.status = state
    return result


def _fail(envelope: InboundEnvelope, error: str) -> None:
    InboundEnvelope.objects.filter(pk=envelope.pk).update(status=EnvelopeStatus.FAILED, error=error[-4000:],
                                                          attempts=envelope.attempts, processed_at=timezone.now())
    envelope.status = EnvelopeStatus.FAILED


def envelope_replay(envelope: InboundEnvelope) -> bool:
    """Reprocess a failed (or pending) envelope. Ingest dedupes, so a replay of
    something already stored is a no-op. Returns True on success."""
    envelope.refresh_from_db()
    try:
        with transaction.atomic():
            envelope_process(envelope)
        return True
    except Exception:
        log.warning("replay of envelope %s failed", envelope.pk)
        return False


# --------------------------------------------------------------------------- channel configuration (API, admin)

def channel_save(*, channel: Channel | None = None, kind: str | None = None, name: str | None = None,
                 team=..., active: bool | None = None, config: dict | None = None) -> Channel:
    """Create or update a channel. `config` is one flat dict: secret keys go to
    the encrypted `secrets` (an empty value keeps the stored secret), the rest
    to `settings` (Channel.set_config)."""
    channel = channel or Channel(kind=kind)
    if name is not None:
        channel.name = name
    if team is not ...:
        channel.team = team
    if active is not None:
        channel.active = active
    if config:
        channel.set_config(config)
    channel.save()
    return channel


def channel_delete(*, channel: Channel) -> None:
    channel.delete()
