"""All writes on conversations: ingest, reply, notes and the conversation actions.

Views, consumers, API viewsets, tasks, commands and the importer call these
functions; nothing else writes conversations, messages or events.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from customers.models import Customer, Identity
from customers.services import InvalidIdentity, customer_resolve, normalize_identity
from helpdesk.db import transactions as db_transactions
from helpdesk.db.sql import insert_columns as _insert_columns

from . import realtime
from .inbound import InboundAttachment, InboundMessage
from .models import (
    ACTIVE_STATUSES,
    Attachment,
    AuthorType,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    EventKind,
    Message,
    Priority,
    Status,
    Tag,
    Team,
    ThreadKey,
)
from .sanitize import html_to_text, sanitize_html

log = logging.getLogger(__name__)


class InvalidInbound(ValueError):
    """The inbound message cannot be ingested (no usable identity...)."""


class NoRecipient(ValueError):
    """The customer has no identity on the chosen channel."""


@dataclass
class IngestResult:
    message: Message
    created: bool  # False: a repeated delivery, the stored message is returned
    conversation_created: bool = False
    reopened: bool = False
    channel_switched: bool = False


# --------------------------------------------------------------------------- events

def record_event(conversation: Conversation, kind: str, *, at: datetime | None = None, actor=None,
                 actor_type: str | None = None, message: Message | None = None, data: dict | None = None
                 ) -> ConversationEvent:
    if actor_type is None:
        actor_type = AuthorType.AGENT if actor is not None else AuthorType.SYSTEM
    event = ConversationEvent.objects.create(
        conversation=conversation, kind=kind, at=at or timezone.now(), actor_type=actor_type,
        actor_user=actor, message=message, data=data or {},
    )
    transaction.on_commit(lambda: _events_committed([event.pk]))
    return event


def _events_committed(event_ids: list[int]) -> None:
    """Hand new events to the metrics engine (batched by the task)."""
    from metrics import tasks as metrics_tasks

    metrics_tasks.events_recorded(event_ids)


# --------------------------------------------------------------------------- ingest

def _normalized_identities(msg: InboundMessage) -> list[tuple[str, str]]:
    result: list[tuple[str, str]] = []
    for kind, value in msg.identities:
        try:
            pair = normalize_identity(kind, value)
        except InvalidIdentity as exc:
            msg.notes.append(str(exc))
            continue
        if pair not in result:
            result.append(pair)
    if not result:
        raise InvalidInbound("The message carries no usable sender identity: " + "; ".join(msg.notes))
    return result


def ingest(msg: InboundMessage, *, savepoint: bool = True, envelope=None) -> IngestResult:
    """Store one inbound message: dedupe, resolve the customer, thread it, log events.

    A repeated delivery (same channel and external id) returns the stored
    message with created=False. Side effects (realtime, automation, metrics)
    run after commit.

    savepoint=False, inside the caller's transaction: no savepoint of its own
    (SAVEPOINT and RELEASE are two round trips), nor around a new customer.
    A repeated delivery (or a concurrent one creating the same customer) then
    raises IntegrityError and the caller's whole transaction is lost: only for
    callers that run it again with the default (channels_app.services.
    envelope_store_and_process).

    envelope: an unsaved InboundEnvelope (its state set by the caller) that
    the statement writing the message inserts too, with the message's id in
    its message_ids (only where writes_envelope(): PostgreSQL's one statement).

    A transaction of its own begins with its first statement (helpdesk.db.
    transactions.atomic: no BEGIN round trip on PostgreSQL).
    """
    identities = _normalized_identities(msg)
    if envelope is not None and not writes_envelope():
        raise ValueError("ingest(envelope=...) needs the one-statement writes (writes_envelope())")
    if not savepoint:
        with db_transactions.atomic(savepoint=False):
            return _ingest(msg, identities, savepoint=False, envelope=envelope)
    try:
        with db_transactions.atomic():
            return _ingest(msg, identities, envelope=envelope)
    except IntegrityError:
        # a concurrent delivery of the same message won the race: the whole
        # transaction is rolled back and the stored message returned
        existing = (Message.objects.filter(channel=msg.channel, external_id=msg.external_id).first()
                    if msg.external_id else None)
        if existing is None:
            raise
        return IngestResult(existing, created=False)


def _ingest(msg: InboundMessage, identities, savepoint: bool = True, envelope=None) -> IngestResult:
    now = timezone.now()
    at = msg.created_at or now
    channel = msg.channel
    kind = channel.kind
    # Serialize everything that threads messages of one customer: two messages
    # of the same customer at the same instant must agree on one conversation.
    # The lookup locks the customer row (PostgreSQL); a customer created here is
    # invisible to others until commit; SQLite serializes whole transactions.
    customer, new_customer = customer_resolve(identities=identities, name=msg.name, at=at, language=msg.language,
                                              lock=True, savepoint=savepoint)
    if not connection.features.has_select_for_update_of and connection.features.has_select_for_update:
        customer = Customer.objects.select_for_update().get(pk=customer.pk)

    conversation, reopen = _thread(msg, customer, at, new_customer=new_customer)
    conversation_created = conversation is None
    fast = FAST_INGEST_WRITES and connection.vendor == "postgresql"
    if conversation_created:
        conversation = Conversation(
            customer=customer, subject=(msg.subject or _preview(msg))[:300], status=Status.OPEN,
            team=channel.team, origin_channel=channel, origin_kind=kind, created_at=at, updated_at=now,
            follow_up_of=msg.meta.get("_follow_up_of"),
        )
        if not fast:  # else inserted by _ingest_writes_one_statement, with the message
            conversation.save(force_insert=True)
    body_html = sanitize_html(msg.html) if msg.html else ""
    text = msg.text or (html_to_text(body_html) if body_html else "")
    meta = {k: v for k, v in msg.meta.items() if not k.startswith("_")}
    if msg.notes:
        meta["notes"] = msg.notes
    if msg.auto_submitted:
        meta["auto_submitted"] = True
    message = Message(
        conversation=conversation, direction=Direction.INBOUND, channel=channel, channel_kind=kind,
        author_type=AuthorType.CUSTOMER, author_name=(msg.name or customer.name)[:200],
        automated=msg.auto_submitted, body_text=text, body_html=body_html, subject=msg.subject[:300],
        external_id=msg.external_id, meta=meta, envelope_id=msg.envelope_id, created_at=at,
        recipient=meta.get("to", "")[:320] if isinstance(meta.get("to"), str) else "",
    )
    switched = (not conversation_created and conversation.last_inbound_kind
                and conversation.last_inbound_kind != kind)
    events = []
    if conversation_created:
        events.append(ConversationEvent(conversation=conversation, kind=EventKind.CREATED, at=at,
                                        actor_type=AuthorType.CUSTOMER, data={"channel": kind}))
    if reopen:
        events.append(ConversationEvent(conversation=conversation, kind=EventKind.REOPENED, at=at,
                                        actor_type=AuthorType.CUSTOMER, data={"by": "customer", "channel": kind}))
    if switched:
        events.append(ConversationEvent(conversation=conversation, kind=EventKind.CHANNEL_SWITCHED, at=at,
                                        actor_type=AuthorType.CUSTOMER,
                                        data={"from": conversation.last_inbound_kind, "to": kind}))
    events.append(ConversationEvent(conversation=conversation, kind=EventKind.MESSAGE_IN, at=at,
                                    actor_type=AuthorType.CUSTOMER, message=message,
                                    data={"channel": kind, "automated": msg.auto_submitted}))
    updates = _after_inbound_fields(conversation, channel, at, now, message, reopen, msg.auto_submitted)
    cust_updates = {}
    if at > customer.last_seen_at:
        cust_updates["last_seen_at"] = at
    if not customer.last_inbound_at or at >= customer.last_inbound_at:
        cust_updates.update(last_inbound_at=at, last_inbound_kind=kind, last_inbound_channel_id=channel.pk)

    from metrics import engine as metrics_engine

    if fast:
        _ingest_writes_one_statement(message, events, conversation, updates, customer, cust_updates, envelope)
    else:
        message.save(force_insert=True)
        ConversationEvent.objects.bulk_create(events)
        Conversation.objects.filter(pk=conversation.pk).update(message_count=F("message_count") + 1, **updates)
        if cust_updates:
            Customer.objects.filter(pk=customer.pk).update(**cust_updates)
        metrics_engine.conversations_changed([conversation.pk])
    _store_attachments(message, msg.attachments)
    _store_thread_keys(conversation, msg)
    for key, value in updates.items():
        setattr(conversation, key, value)
    message.conversation = conversation
    transaction.on_commit(lambda: _after_ingest(message, conversation_created))
    if fast:
        # after the publish: the agents see the message one cache round trip sooner
        transaction.on_commit(metrics_engine._flush_unless_suspended)
    return IngestResult(message, created=True, conversation_created=conversation_created, reopened=reopen,
                        channel_switched=bool(switched))


# PostgreSQL: the ingest writes (message, events, conversation and customer
# updates, metrics dirty mark) go out as one data-modifying CTE instead of five
# statements. False: the ORM statements every database runs (tests compare both).
FAST_INGEST_WRITES = True


def writes_envelope() -> bool:
    """Whether ingest(envelope=...) can insert the envelope with the message
    (PostgreSQL's one statement)."""
    return FAST_INGEST_WRITES and connection.vendor == "postgresql"


def _update_sets(model, updates: dict) -> tuple[list[str], list]:
    conn = connections[DEFAULT_DB_ALIAS]  # the wrapper itself, not the proxy (see helpdesk.db.sql.insert_columns)
    sets, params = [], []
    for name, value in updates.items():
        field = model._meta.get_field(name)
        if hasattr(value, "_meta"):  # a model instance for a foreign key
            value = value.pk
        sets.append(f"{conn.ops.quote_name(field.column)} = %s")
        params.append(field.get_db_prep_save(value, conn))
    return sets, params


def _ingest_writes_one_statement(message, events, conversation, updates, customer, cust_updates,
                                 envelope=None) -> None:
    """The generic path's five writes in one round trip (PostgreSQL only):
    INSERT message RETURNING id, INSERT events (the message_in one pointing at
    it), UPDATE conversation, UPDATE customer, mark the conversation dirty for
    metrics. Rows are identical to the generic path's (tests compare them).

    A new conversation (not saved yet, `conversation.pk` None) is inserted by
    the same statement, with `updates` and its first message counted, instead
    of INSERT and UPDATE: one round trip less for a first message.

    `envelope` (unsaved, or None): inserted by the same statement, its id taken
    from its sequence for the message's envelope_id, message_ids = [the
    message's id] (instead of INSERT before and UPDATE after: two round trips
    less on the widget's path)."""
    qn = connection.ops.quote_name
    parts, params = [], []
    conv_pk = qn(Conversation._meta.pk.column)
    new_conversation = conversation.pk is None
    if new_conversation:
        for name, value in updates.items():
            setattr(conversation, name, value)
        conversation.message_count += 1
        cols, marks, vals = _insert_columns(conversation)
        parts.append(f"cv AS (INSERT INTO {qn(Conversation._meta.db_table)} ({', '.join(cols)}) "
                     f"VALUES ({', '.join(marks)}) RETURNING {conv_pk})")
        params += vals
        conv_ref = {Message._meta.get_field("conversation").column: f"(SELECT {conv_pk} FROM cv)"}
    else:
        conv_ref = {}
    msg_pk = qn(Message._meta.pk.column)
    if envelope is not None:
        env_model = type(envelope)
        env_col = Message._meta.get_field("envelope").column
        conv_ref[env_col] = (f"nextval(pg_get_serial_sequence('{qn(env_model._meta.db_table)}', "
                             f"'{env_model._meta.pk.column}'))")
    cols, marks, vals = _insert_columns(message, conv_ref)
    parts.append(f"m AS (INSERT INTO {qn(Message._meta.db_table)} ({', '.join(cols)}) "
                 f"VALUES ({', '.join(marks)}) RETURNING {msg_pk}"
                 f"{f', {qn(env_col)}' if envelope is not None else ''})")
    params += vals
    if envelope is not None:
        cols, marks, vals = _insert_columns(envelope, {
            env_model._meta.get_field("message_ids").column: f"jsonb_build_array((SELECT {msg_pk} FROM m))"})
        parts.append(f"ev AS (INSERT INTO {qn(env_model._meta.db_table)} "
                     f"({qn(env_model._meta.pk.column)}, {', '.join(cols)}) "
                     f"VALUES ((SELECT {qn(env_col)} FROM m), {', '.join(marks)}))")
        params += vals
    rows = []
    event_conv = ({ConversationEvent._meta.get_field("conversation").column: f"(SELECT {conv_pk} FROM cv)"}
                  if new_conversation else {})
    for event in events:
        if event.message is message:
            event.message = None  # its id comes from `m`
            cols, marks, vals = _insert_columns(event, {**event_conv,
                                                        ConversationEvent._meta.get_field("message").column:
                                                        f"(SELECT {qn(Message._meta.pk.column)} FROM m)"})
        else:
            cols, marks, vals = _insert_columns(event, event_conv)
        rows.append(f"({', '.join(marks)})")
        params += vals
    parts.append(f"e AS (INSERT INTO {qn(ConversationEvent._meta.db_table)} ({', '.join(cols)}) "
                 f"VALUES {', '.join(rows)})")
    if not new_conversation:
        sets, vals = _update_sets(Conversation, updates)
        count = qn(Conversation._meta.get_field("message_count").column)
        parts.append(f"c AS (UPDATE {qn(Conversation._meta.db_table)} SET {count} = {count} + 1"
                     f"{''.join(', ' + s for s in sets)} WHERE {conv_pk} = %s)")
        params += vals + [conversation.pk]
    if cust_updates:
        sets, vals = _update_sets(Customer, cust_updates)
        parts.append(f"u AS (UPDATE {qn(Customer._meta.db_table)} SET {', '.join(sets)} "
                     f"WHERE {qn(Customer._meta.pk.column)} = %s)")
        params += vals + [customer.pk]
    from metrics.models import DirtyConversation

    if new_conversation:
        parts.append(f"d AS (INSERT INTO {qn(DirtyConversation._meta.db_table)} (conversation_id, marked_at) "
                     f"VALUES ((SELECT {conv_pk} FROM cv), %s) ON CONFLICT DO NOTHING)")
        params += [timezone.now()]
    else:
        parts.append(f"d AS (INSERT INTO {qn(DirtyConversation._meta.db_table)} (conversation_id, marked_at) "
                     f"VALUES (%s, %s) ON CONFLICT DO NOTHING)")
        params += [conversation.pk, timezone.now()]
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {msg_pk}, "
                       f"{f'(SELECT {conv_pk} FROM cv)' if new_conversation else 'NULL'}, "
                       f"{qn(env_col) if envelope is not None else 'NULL'} FROM m", params)
        message.pk, conv_id, env_id = cursor.fetchone()
    if envelope is not None:
        envelope.pk = env_id
        envelope._state.adding = False
        envelope._state.db = connection.alias
        envelope.message_ids = [message.pk]
        message.envelope = envelope
    if new_conversation:
        conversation.pk = conv_id
        conversation._state.adding = False
        conversation._state.db = connection.alias
        message.conversation = conversation
    message._state.adding = False
    message._state.db = connection.alias
    for event in events:
        if new_conversation:
            event.conversation = conversation
        if event.message_id is None and event.kind == EventKind.MESSAGE_IN:
            event.message = message


def _after_inbound_fields(conversation, channel, at, now, message, reopen, automated) -> dict:
    updates = {"updated_at": now}
    latest = conversation.last_message_at is None or at >= conversation.last_message_at
    if latest:
        updates["last_message_at"] = at
        updates["last_message_preview"] = (message.body_text or message.subject or "")[:200]
    if conversation.last_inbound_at is None or at >= conversation.last_inbound_at:
        updates.update(last_inbound_at=at, last_inbound_kind=channel.kind, last_inbound_channel=channel)
    if conversation.first_inbound_at is None or at < conversation.first_inbound_at:
        updates["first_inbound_at"] = at
    if not automated and conversation.waiting_since is None and (
            conversation.first_reply_at is None or latest):
        updates["waiting_since"] = at
    if reopen:
        updates.update(status=Status.OPEN, resolved_at=None, snoozed_until=None)
    elif conversation.status == Status.SNOOZED and not automated:
        # a customer writing wakes a snoozed conversation
        updates.update(status=Status.OPEN, snoozed_until=None)
    elif conversation.status == Status.PENDING and not automated:
        updates["status"] = Status.OPEN
    return updates


def _after_ingest(message: Message, conversation_created: bool) -> None:
    from . import tasks

    from . import automation

    realtime.publish_message(message.pk, conversation_created=conversation_created, message=message)
    if automation.wanted(message, conversation_created):
        tasks.after_ingest.delay(message.pk, conversation_created)


def _preview(msg: InboundMessage) -> str:
    text = (msg.text or html_to_text(msg.html or "")).strip().splitlines()
    return text[0][:120] if text else ""


def _thread(msg: InboundMessage, customer: Customer, at: datetime, *,
            new_customer: bool = False) -> tuple[Conversation | None, bool]:
    """Pick the conversation for this message (ARCHITECTURE.md threading rules).

    Returns (conversation or None for a new one, whether it is reopened).
    new_customer: the customer was created in this transaction, so has no
    conversation to join or reopen (two queries less for a first message).
    """
    explicit = _explicit_conversation(msg, customer)
    if explicit is not None:
        if explicit.status != Status.RESOLVED:
            return explicit, False
        if msg.auto_submitted:
            return explicit, False  # auto-replies never reopen
        resolved_at = explicit.resolved_at or explicit.updated_at
        if at - resolved_at <= timedelta(seconds=settings.FOLLOW_UP_WINDOW):
            return explicit, True
        msg.meta["_follow_up_of"] = explicit
        return None, False
    if msg.new_conversation or new_customer:
        return None, False

    active = _active_conversation(customer)
    if active is not None:
        if not msg.is_email_thread:
            return active, False
        # A new email thread joins an open case only as a channel switch.
        if (active.last_inbound_kind and active.last_inbound_kind != msg.channel.kind
                and active.last_inbound_at and at - active.last_inbound_at <= timedelta(seconds=settings.SWITCH_WINDOW)):
            return active, False
        return None, False
    if msg.is_email_thread or msg.auto_submitted:
        return None, False
    recent = (Conversation.objects.filter(customer=customer, status=Status.RESOLVED,
                                          resolved_at__gte=at - timedelta(seconds=settings.REOPEN_WINDOW))
              .order_by("-resolved_at").first())
    if recent is not None:
        return recent, True
    return None, False


_CUSTOMER_SLOT = -7_240_101  # no customer has this id: the parameter replaced by helpdesk.db.sql.Prepared


def _active_conversation(customer: Customer) -> Conversation | None:
    """The customer's latest active conversation, with its team as of now
    (auto-assignment's `wants` skips the task for a manual team). Compiled
    once (helpdesk.db.sql.prepared)."""
    from helpdesk.db.sql import prepared

    def build():
        return (Conversation.objects.filter(customer_id=_CUSTOMER_SLOT, status__in=ACTIVE_STATUSES)
                .select_related("team").order_by(F("last_message_at").desc(nulls_last=True), "-id")[:1],
                {"customer": _CUSTOMER_SLOT})

    found = prepared("active_conversation", build).run(customer=customer.pk)
    if not found:
        return None
    found[0].customer = customer  # as filter(customer=customer) would
    return found[0]


def _explicit_conversation(msg: InboundMessage, customer: Customer) -> Conversation | None:
    keys = [k for k in msg.thread_keys if k]
    if keys:
        tk = (ThreadKey.objects.filter(key__in=keys).select_related("conversation")
              .order_by("-conversation__last_message_at").first())
        if tk:
            return tk.conversation
    if msg.own_key:
        # mail arriving out of order: a stored message already referenced this one
        tk = ThreadKey.objects.filter(key=msg.own_key, own=False).select_related("conversation").first()
        if tk:
            return tk.conversation
    if msg.reply_token:
        conv = Conversation.objects.filter(reply_token=msg.reply_token).first()
        if conv:
            return conv
    if msg.conversation_number:
        # a subject tag is guessable: only trust it for the conversation's own customer
        conv = Conversation.objects.filter(pk=msg.conversation_number, customer=customer).first()
        if conv:
            return conv
    return None


def _store_thread_keys(conversation: Conversation, msg: InboundMessage) -> None:
    rows = []
    if msg.own_key:
        rows.append(ThreadKey(conversation=conversation, key=msg.own_key[:500], own=True))
    for key in msg.thread_keys:
        if key and key != msg.own_key:
            rows.append(ThreadKey(conversation=conversation, key=key[:500], own=False))
    if rows:
        ThreadKey.objects.bulk_create(rows, ignore_conflicts=True)


def _store_attachments(message: Message, attachments: list[InboundAttachment]) -> None:
    limit = settings.ATTACHMENT_MAX_BYTES
    dropped, stored = [], []
    for att in attachments:
        if len(att.content) > limit:
            dropped.append(att.filename)
            continue
        obj = Attachment(message=message, filename=(att.filename or "attachment")[:255],
                         content_type=(att.content_type or "application/octet-stream")[:200],
                         size=len(att.content), content_id=att.content_id[:255], inline=att.inline)
        obj.file.save(_safe_name(att.filename), ContentFile(att.content), save=False)
        obj.save()
        stored.append(obj)
    # message.attachments.all() without a query: the widget's answer lists
    # them (chat live.message_payload), mostly none, after commit
    attachments_qs = message.attachments.all()
    attachments_qs._result_cache = stored
    attachments_qs._prefetch_done = True
    message._prefetched_objects_cache = {"attachments": attachments_qs}
    if dropped:
        notes = message.meta.setdefault("notes", [])
        for name in dropped:
            notes.append(_("Attachment %(name)s was dropped: larger than %(limit)s bytes.")
                         % {"name": name, "limit": limit})
        Message.objects.filter(pk=message.pk).update(meta=message.meta)


def _safe_name(filename: str) -> str:
    from django.utils.text import get_valid_filename

    try:
        return get_valid_filename(filename or "attachment")[:100] or "attachment"
    except Exception:
        return "attachment"


def attachment_add(*, message: Message, filename: str, content_type: str, content: bytes) -> Attachment:
    if len(content) > settings.ATTACHMENT_MAX_BYTES:
        raise ValueError(_("Attachment is larger than the limit of %(limit)s bytes.")
                         % {"limit": settings.ATTACHMENT_MAX_BYTES})
    obj = Attachment(message=message, filename=filename[:255], content_type=content_type[:200], size=len(content))
    obj.file.save(_safe_name(filename), ContentFile(content), save=False)
    obj.save()
    getattr(message, "_prefetched_objects_cache", {}).pop("attachments", None)  # as ingest left it: stale now
    return obj


# --------------------------------------------------------------------------- reply

def recipient_for(customer: Customer, channel_kind: str) -> str:
    from channels_app.models import RECIPIENT_IDENTITY_KINDS

    kinds = RECIPIENT_IDENTITY_KINDS.get(channel_kind, [])
    idents = {i.kind: i.value for i in Identity.objects.filter(customer=customer, kind__in=kinds)}
    for kind in kinds:
        if kind in idents:
            return idents[kind]
    return ""


def reply_channels(conversation: Conversation) -> list:
    """Active channels the customer can be reached on, the default first."""
    from channels_app.models import RECIPIENT_IDENTITY_KINDS, Channel

    kinds = set(Identity.objects.filter(customer=conversation.customer_id).values_list("kind", flat=True))
    usable = [c for c in Channel.objects.filter(active=True)
              if c.kind == "api" or (c.kind != "phone"  # calls are logged, not sent
                                     and kinds.intersection(RECIPIENT_IDENTITY_KINDS.get(c.kind, [])))]
    default, _reason = default_reply_channel(conversation)
    usable.sort(key=lambda c: (c.pk != getattr(default, "pk", None), c.kind, c.name))
    return usable


def default_reply_channel(conversation: Conversation):
    """The channel of the customer's latest inbound message, with the reason."""
    from channels_app.models import Channel

    customer = conversation.customer
    candidates = [
        (customer.last_inbound_channel_id, customer.last_inbound_at),
        (conversation.last_inbound_channel_id, conversation.last_inbound_at),
        (conversation.origin_channel_id, conversation.created_at),
    ]
    if "phone" in (customer.last_inbound_kind, conversation.last_inbound_kind):
        # A call is not a channel to write to: after a call, text replies go
        # where the customer last wrote (their latest non-phone message).
        written = (Message.objects.filter(conversation__customer=customer, direction=Direction.INBOUND,
                                          channel__isnull=False).exclude(channel_kind="phone")
                   .order_by("-created_at", "-id").values_list("channel_id", "created_at").first())
        if written:
            candidates.insert(2, written)
    for channel_id, when in candidates:
        if not channel_id:
            continue
        channel = Channel.objects.filter(pk=channel_id, active=True).first()
        if channel is None or channel.kind == "phone":
            continue
        if channel.kind == "webform":  # the web form answers by email
            email = Channel.objects.filter(kind="email", active=True).order_by("pk").first()
            if email:
                return email, {"kind": channel.kind, "at": when, "via": "email"}
        return channel, {"kind": channel.kind, "at": when}
    return None, {}


def check_reply(*, conversation: Conversation, channel=None) -> tuple[object, str]:
    """Validate a reply before writing it: returns (channel, recipient)."""
    if channel is None:
        channel, _reason = default_reply_channel(conversation)
    if channel is None:
        raise NoRecipient(_("The customer has no channel to reply on."))
    if not channel.active:
        raise NoRecipient(_("Channel %(name)s is not active.") % {"name": channel.name})
    recipient = recipient_for(conversation.customer, channel.kind)
    if not recipient and channel.kind not in ("api",):
        raise NoRecipient(_("The customer has no identity on %(kind)s.") % {"kind": channel.get_kind_display()})
    return channel, recipient


def reply(*, conversation: Conversation, author=None, body: str, html: str = "", channel=None,
          attachments: list[InboundAttachment] | tuple = (), automated: bool = False, author_name: str = "",
          resolve: bool = False, meta: dict | None = None, at: datetime | None = None,
          external_id: str | None = None, deliver: bool = True) -> Message:
    """Queue a public reply in the outbox; a Celery task delivers it after commit.

    `at`, `external_id` and deliver=False serve imports of history: the message
    is stored as already sent at that time and never handed to a provider.
    """
    channel, recipient = check_reply(conversation=conversation, channel=channel)
    with transaction.atomic():
        return _do_reply(conversation=conversation, author=author, body=body, html=html, channel=channel,
                         recipient=recipient, attachments=attachments, automated=automated,
                         author_name=author_name, resolve=resolve, meta=meta or {}, at=at,
                         external_id=external_id, deliver=deliver)


def _do_reply(*, conversation, author, body, html, channel, recipient, attachments, automated, author_name,
              resolve, meta, at=None, external_id=None, deliver=True) -> Message:
    now = at or timezone.now()
    author_type = AuthorType.AUTOMATION if (automated or author is None) else AuthorType.AGENT
    body_html = sanitize_html(html) if html else ""
    message = Message.objects.create(
        conversation=conversation, direction=Direction.OUTBOUND, channel=channel, channel_kind=channel.kind,
        author_type=author_type, author_user=author if author_type == AuthorType.AGENT else None,
        author_name=(author_name or (author.name if author else "")) [:200], automated=author_type != AuthorType.AGENT,
        body_text=body, body_html=body_html, recipient=recipient[:320],
        delivery_status=DeliveryStatus.QUEUED if deliver else DeliveryStatus.SENT,
        next_attempt_at=now if deliver else None, sent_at=None if deliver else now, created_at=now, meta=meta,
        external_id=external_id,
    )
    for att in attachments:
        attachment_add(message=message, filename=att.filename, content_type=att.content_type, content=att.content)
    public = author_type == AuthorType.AGENT
    record_event(conversation, EventKind.MESSAGE_OUT, at=now, actor=author if public else None,
                 actor_type=author_type, message=message,
                 data={"channel": channel.kind, "automated": not public})
    updates = {"updated_at": timezone.now()}
    if conversation.last_message_at is None or now >= conversation.last_message_at:
        updates.update(last_message_at=now, last_message_preview=body[:200])
    if public:
        updates["waiting_since"] = None
        if conversation.first_reply_at is None:
            updates["first_reply_at"] = now
        if conversation.assignee_id is None and author is not None:
            # the first agent to answer takes the conversation
            updates["assignee"] = author
            record_event(conversation, EventKind.ASSIGNED, at=now, actor=author,
                         data={"assignee": author.pk, "auto": "reply"})
    Conversation.objects.filter(pk=conversation.pk).update(message_count=F("message_count") + 1, **updates)
    for key, value in updates.items():
        setattr(conversation, key, value)
    if resolve:
        resolve_conversation(conversation=conversation, actor=author, at=at)
    message_id = message.pk
    transaction.on_commit(lambda: _after_reply(message_id, deliver))
    return message


def _after_reply(message_id: int, deliver: bool = True) -> None:
    from . import tasks

    realtime.publish_message(message_id)
    if deliver:
        tasks.deliver_message.delay(message_id)


def add_note(*, conversation: Conversation, author, body: str, mentions=(), at: datetime | None = None,
             external_id: str | None = None) -> Message:
    with transaction.atomic():
        now = at or timezone.now()
        message = Message.objects.create(
            conversation=conversation, direction=Direction.NOTE, author_type=AuthorType.AGENT, author_user=author,
            author_name=author.name if author else "", body_text=body, created_at=now, external_id=external_id,
            meta={"mentions": [u.pk for u in mentions]} if mentions else {},
        )
        record_event(conversation, EventKind.NOTE, at=now, actor=author, message=message,
                     data={"mentions": [u.pk for u in mentions]})
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now(),
                                                               message_count=F("message_count") + 1)
        mention_ids = [u.pk for u in mentions]
        message_id = message.pk
        transaction.on_commit(lambda: (realtime.publish_message(message_id),
                                       realtime.publish_mentions(message_id, mention_ids)))
    return message


CALL_DIRECTIONS = ("inbound", "outbound")
CALL_OUTCOMES = ("answered", "voicemail", "missed", "no_answer", "busy", "failed")


def log_call(*, conversation: Conversation, author, direction: str, duration_seconds: int, outcome: str,
             summary: str, at: datetime | None = None, channel=None) -> Message:
    """An agent's call note: a phone-channel message that counts like any other.

    An inbound call is the customer's message (it may switch the channel); an
    outbound one is the agent's, and counts as a reply only when it reached
    the customer (answered or voicemail left)."""
    from channels_app.models import Channel

    if direction not in CALL_DIRECTIONS:
        raise ValueError(_("Unknown call direction: %(value)s") % {"value": direction})
    outcome = (outcome or "").strip()[:100]  # forms offer CALL_OUTCOMES; "" means not said
    duration = int(duration_seconds or 0)
    if duration < 0:
        raise ValueError(_("A call cannot last less than 0 seconds."))
    channel = channel or Channel.objects.filter(kind="phone", active=True).order_by("pk").first()
    now = timezone.now()
    at = at or now
    meta = {"call": {"direction": direction, "duration": duration, "outcome": outcome, "source": "agent",
                     "logged_by": author.pk if author else None}}
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        latest = conversation.last_message_at is None or at >= conversation.last_message_at
        if direction == "inbound":
            message = Message.objects.create(
                conversation=conversation, direction=Direction.INBOUND, channel=channel, channel_kind="phone",
                author_type=AuthorType.CUSTOMER, author_name=conversation.customer.name, body_text=summary,
                created_at=at, meta=meta)
            switched = conversation.last_inbound_kind and conversation.last_inbound_kind != "phone"
            if switched:
                record_event(conversation, EventKind.CHANNEL_SWITCHED, at=at, actor_type=AuthorType.CUSTOMER,
                             data={"from": conversation.last_inbound_kind, "to": "phone"})
            record_event(conversation, EventKind.MESSAGE_IN, at=at, actor_type=AuthorType.CUSTOMER,
                         message=message, data={"channel": "phone", "call": True})
            if channel:
                updates = _after_inbound_fields(conversation, channel, at, now, message, False, False)
            else:  # no phone channel configured: the same fields, without a channel
                updates = {"updated_at": now}
                if latest:
                    updates.update(last_message_at=at, last_message_preview=summary[:200])
                if conversation.last_inbound_at is None or at >= conversation.last_inbound_at:
                    updates.update(last_inbound_at=at, last_inbound_kind="phone")
            Conversation.objects.filter(pk=conversation.pk).update(message_count=F("message_count") + 1, **updates)
            customer = conversation.customer
            cust_updates = {}
            if at > customer.last_seen_at:
                cust_updates["last_seen_at"] = at
            if not customer.last_inbound_at or at >= customer.last_inbound_at:
                cust_updates.update(last_inbound_at=at, last_inbound_kind="phone",
                                    last_inbound_channel_id=channel.pk if channel else None)
            if cust_updates:
                Customer.objects.filter(pk=customer.pk).update(**cust_updates)
        else:
            message = Message.objects.create(
                conversation=conversation, direction=Direction.OUTBOUND, channel=channel, channel_kind="phone",
                author_type=AuthorType.AGENT, author_user=author, author_name=author.name if author else "",
                body_text=summary, created_at=at, delivery_status=DeliveryStatus.DELIVERED, meta=meta)
            record_event(conversation, EventKind.MESSAGE_OUT, at=at, actor=author, message=message,
                         data={"channel": "phone", "call": True, "outcome": outcome})
            updates = {"updated_at": now}
            if latest:
                updates.update(last_message_at=at, last_message_preview=summary[:200])
            if outcome not in ("missed", "no_answer", "busy", "failed"):  # the customer was reached: a reply
                updates["waiting_since"] = None
                if conversation.first_reply_at is None:
                    updates["first_reply_at"] = at
            Conversation.objects.filter(pk=conversation.pk).update(message_count=F("message_count") + 1, **updates)
        message_id = message.pk
        transaction.on_commit(lambda: realtime.publish_message(message_id))
    return message


# --------------------------------------------------------------------------- actions

def _save_and_publish(conversation: Conversation, fields: list[str], now: datetime) -> None:
    conversation.updated_at = now
    conversation.save(update_fields=[*fields, "updated_at"])
    conv_id = conversation.pk
    transaction.on_commit(lambda: realtime.publish_conversation(conv_id))


@transaction.atomic
def assign(*, conversation: Conversation, actor=None, agent=None, team=None, set_team: bool = False,
           auto: bool = False, at: datetime | None = None) -> Conversation:
    """Assign to an agent (None unassigns) and/or a team (set_team=True)."""
    now = at or timezone.now()
    fields = []
    if set_team and (team.pk if team else None) != conversation.team_id:
        old = conversation.team_id
        conversation.team = team
        fields.append("team")
        record_event(conversation, EventKind.TEAM_CHANGED, at=now, actor=actor,
                     data={"from": old, "to": team.pk if team else None, "name": team.name if team else ""})
    if (agent.pk if agent else None) != conversation.assignee_id:
        old = conversation.assignee_id
        conversation.assignee = agent
        fields.append("assignee")
        record_event(conversation, EventKind.ASSIGNED, at=now, actor=actor,
                     actor_type=AuthorType.AUTOMATION if auto else None,
                     data={"from": old, "assignee": agent.pk if agent else None,
                           "name": agent.name if agent else "", "auto": auto})
    if fields:
        _save_and_publish(conversation, fields, now)
    return conversation


def resolve_conversation(*, conversation: Conversation, actor=None, at: datetime | None = None) -> Conversation:
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conversation.status == Status.RESOLVED:
            return conversation
        at = at or timezone.now()
        old = conversation.status
        conversation.status = Status.RESOLVED
        conversation.resolved_at = at
        conversation.snoozed_until = None
        conversation.waiting_since = None
        record_event(conversation, EventKind.RESOLVED, at=at, actor=actor,
                     data={"from": old, "assignee": conversation.assignee_id, "team": conversation.team_id})
        _save_and_publish(conversation, ["status", "resolved_at", "snoozed_until", "waiting_since"], timezone.now())
        conv_id = conversation.pk
        transaction.on_commit(lambda: _after_resolve(conv_id))
    return conversation


resolve = resolve_conversation


def _after_resolve(conversation_id: int) -> None:
    from . import tasks

    tasks.after_resolve.delay(conversation_id)


def reopen(*, conversation: Conversation, actor=None, at: datetime | None = None) -> Conversation:
    """Reopen a resolved conversation (wake a snoozed one)."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if conversation.status != Status.RESOLVED:
            if conversation.status == Status.SNOOZED:
                return wake(conversation=conversation, actor=actor)
            return conversation
        at = at or timezone.now()
        conversation.status = Status.OPEN
        conversation.resolved_at = None
        record_event(conversation, EventKind.REOPENED, at=at, actor=actor, data={"by": "agent" if actor else "system"})
        _save_and_publish(conversation, ["status", "resolved_at"], timezone.now())
    return conversation


@transaction.atomic
def snooze(*, conversation: Conversation, until: datetime, actor=None) -> Conversation:
    now = timezone.now()
    if until <= now:
        raise ValueError(_("Snooze time must be in the future."))
    old = conversation.status
    conversation.status = Status.SNOOZED
    conversation.snoozed_until = until
    record_event(conversation, EventKind.SNOOZED, at=now, actor=actor, data={"from": old, "until": until.isoformat()})
    _save_and_publish(conversation, ["status", "snoozed_until"], now)
    return conversation


@transaction.atomic
def wake(*, conversation: Conversation, actor=None) -> Conversation:
    now = timezone.now()
    if conversation.status != Status.SNOOZED:
        return conversation
    conversation.status = Status.OPEN
    conversation.snoozed_until = None
    record_event(conversation, EventKind.STATUS_CHANGED, at=now, actor=actor,
                 data={"from": Status.SNOOZED, "to": Status.OPEN, "reason": "snooze ended" if actor is None else "woken"})
    _save_and_publish(conversation, ["status", "snoozed_until"], now)
    return conversation


def wake_due(now: datetime | None = None) -> int:
    """Wake every snoozed conversation whose time has come. Returns how many."""
    now = now or timezone.now()
    count = 0
    for conv_id in Conversation.objects.filter(status=Status.SNOOZED, snoozed_until__lte=now).values_list("pk", flat=True):
        with transaction.atomic():
            conv = Conversation.objects.select_for_update(skip_locked=True).filter(
                pk=conv_id, status=Status.SNOOZED).first()
            if conv:
                wake(conversation=conv)
                count += 1
    return count


@transaction.atomic
def set_status(*, conversation: Conversation, status: str, actor=None) -> Conversation:
    if status == Status.RESOLVED:
        return resolve_conversation(conversation=conversation, actor=actor)
    if conversation.status == Status.RESOLVED:
        conversation = reopen(conversation=conversation, actor=actor)
    if status == conversation.status:
        return conversation
    now = timezone.now()
    old = conversation.status
    conversation.status = status
    if status != Status.SNOOZED:
        conversation.snoozed_until = None
    record_event(conversation, EventKind.STATUS_CHANGED, at=now, actor=actor, data={"from": old, "to": status})
    _save_and_publish(conversation, ["status", "snoozed_until"], now)
    return conversation


@transaction.atomic
def set_priority(*, conversation: Conversation, priority: str, actor=None) -> Conversation:
    if priority not in Priority.values:
        raise ValueError(f"Unknown priority {priority!r}")
    if priority == conversation.priority:
        return conversation
    now = timezone.now()
    old = conversation.priority
    conversation.priority = priority
    record_event(conversation, EventKind.PRIORITY_CHANGED, at=now, actor=actor, data={"from": old, "to": priority})
    _save_and_publish(conversation, ["priority"], now)
    return conversation


@transaction.atomic
def tag(*, conversation: Conversation, add=(), remove=(), actor=None) -> Conversation:
    add_names = [n.strip()[:60] for n in add if n and n.strip()]
    remove_names = [n.strip() for n in remove if n and n.strip()]
    tags = [Tag.objects.get_or_create(name=name)[0] for name in add_names]
    before = set(conversation.tags.values_list("name", flat=True))
    if tags:
        conversation.tags.add(*tags)
    if remove_names:
        conversation.tags.remove(*Tag.objects.filter(name__in=remove_names))
    after = set(conversation.tags.values_list("name", flat=True))
    if before != after:
        now = timezone.now()
        record_event(conversation, EventKind.TAGGED, at=now, actor=actor,
                     data={"added": sorted(after - before), "removed": sorted(before - after)})
        _save_and_publish(conversation, [], now)
    return conversation


@transaction.atomic
def merge_conversations(*, survivor: Conversation, merged: Conversation, actor=None) -> Conversation:
    """Move all messages and events of `merged` into `survivor` and resolve `merged` away."""
    if survivor.pk == merged.pk:
        raise ValueError(_("A conversation cannot be merged into itself."))
    now = timezone.now()
    Message.objects.filter(conversation=merged).update(conversation=survivor)
    ThreadKey.objects.filter(conversation=merged).exclude(
        key__in=ThreadKey.objects.filter(conversation=survivor).values("key")).update(conversation=survivor)
    ConversationEvent.objects.filter(conversation=merged).update(conversation=survivor)
    record_event(survivor, EventKind.CONVERSATIONS_MERGED, at=now, actor=actor, data={"merged": merged.pk})
    fields = {
        "message_count": Message.objects.filter(conversation=survivor).count(),
        "last_message_at": max(filter(None, [survivor.last_message_at, merged.last_message_at]), default=None),
        "first_inbound_at": min(filter(None, [survivor.first_inbound_at, merged.first_inbound_at]), default=None),
        "updated_at": now,
    }
    Conversation.objects.filter(pk=survivor.pk).update(**fields)
    merged_id = merged.pk
    merged.delete()
    transaction.on_commit(lambda: (realtime.publish_conversation(survivor.pk),
                                   realtime.publish_conversation_deleted(merged_id)))
    survivor.refresh_from_db()
    return survivor


# --------------------------------------------------------------------------- delivery state

def delivery_update(*, message: Message, status: str, error: str = "", at: datetime | None = None) -> bool:
    """Apply a provider's delivery status. Idempotent and order-independent:
    a status never moves backwards (read > delivered > sent), `failed` wins
    unless the message was already delivered or read."""
    from .models import DELIVERY_RANK

    at = at or timezone.now()
    with transaction.atomic():
        msg = Message.objects.select_for_update().get(pk=message.pk)
        current = msg.delivery_status
        fields = []
        if status == DeliveryStatus.FAILED:
            if current in (DeliveryStatus.DELIVERED, DeliveryStatus.READ) or current == DeliveryStatus.FAILED:
                return False
            msg.delivery_status = DeliveryStatus.FAILED
            msg.delivery_error = error[:2000]
            fields += ["delivery_status", "delivery_error"]
            record_event(msg.conversation, EventKind.DELIVERY_FAILED, at=at, message=msg, data={"error": error[:500]})
        else:
            stamp_field = {"sent": "sent_at", "delivered": "delivered_at", "read": "read_at"}.get(status)
            if stamp_field and getattr(msg, stamp_field) is None:
                setattr(msg, stamp_field, at)
                fields.append(stamp_field)
            if status == DeliveryStatus.READ and msg.delivered_at is None:
                msg.delivered_at = at
                fields.append("delivered_at")
            if current == DeliveryStatus.FAILED or DELIVERY_RANK.get(status, -1) > DELIVERY_RANK.get(current, -1):
                msg.delivery_status = status
                fields.append("delivery_status")
                if current == DeliveryStatus.FAILED:
                    msg.delivery_error = ""
                    fields.append("delivery_error")
        if not fields:
            return False
        msg.save(update_fields=fields)
        message_id = msg.pk
        transaction.on_commit(lambda: realtime.publish_delivery(message_id))
    return True


def find_outbound(*, channel, external_id: str) -> Message | None:
    return Message.objects.filter(channel=channel, external_id=external_id, direction=Direction.OUTBOUND).first()


def conversations_visible_to(user):
    """Conversations a user may see: all for managers, admins and `access_all`
    agents; otherwise their teams', their own, and those with no team."""
    qs = Conversation.objects.all()
    if user.sees_all:
        return qs
    team_ids = list(user.teams.values_list("pk", flat=True))
    return qs.filter(Q(team_id__in=team_ids) | Q(assignee=user) | Q(team__isnull=True))


def teams_of(user) -> list[Team]:
    return list(user.teams.all())
