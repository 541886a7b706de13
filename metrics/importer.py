"""Import history in API.md's format (JSON document or JSON Lines), streaming.

Two paths write the same rows. The per-object path sends every write through
the services (conversations.services.ingest / reply internals / add_note /
assign / resolve_conversation / reopen, customers.services) with the original
timestamps, one savepoint per object. The bulk path (the default) replays the
services' rules in memory for a batch of objects and writes its rows at once
(COPY on PostgreSQL); a batch it cannot write goes through the per-object
path. Either way imported history yields the same KPIs as live traffic, a bad
object is reported with its position while the rest still lands, and
importing the same file twice changes nothing (idempotent on external ids).
"""
from __future__ import annotations

import io
import json
import logging
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from channels_app.models import Channel
from conversations import services as conv_services
from conversations.inbound import InboundMessage
from conversations.models import (
    AuthorType,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    EventKind,
    Message,
    Priority,
    Status,
    Team,
)
from conversations.sanitize import html_to_text, sanitize_html
from customers import services as cust_services
from customers.models import Customer, Identity, Order
from helpdesk.models import User

from . import customer_links, engine, resultcache, survey_rollup, surveys
from .models import SurveyInvitation, SurveyKind

log = logging.getLogger(__name__)

PRIORITIES = frozenset(Priority.values)
TYPES = ("agent", "customer", "conversation", "survey", "order")
SECTIONS = {"agents": "agent", "customers": "customer", "conversations": "conversation", "surveys": "survey",
            "orders": "order"}


class ObjectError(ValueError):
    def __init__(self, errors):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()) if isinstance(errors, dict) else errors)
        self.errors = errors if isinstance(errors, dict) else {"detail": [str(errors)]}


@dataclass
class ImportResult:
    created: dict = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    skipped: dict = field(default_factory=lambda: dict.fromkeys(TYPES, 0))
    messages: int = 0
    errors: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"created": self.created, "unchanged": self.skipped, "messages": self.messages,
                "errors": self.errors, "error_count": len(self.errors)}


# --------------------------------------------------------------------------- reading

def iter_objects(stream, *, jsonl: bool | None = None):
    """Yield (position, type, object) from a binary stream, without loading it whole."""
    if jsonl is None:
        head = stream.peek(2048)[:2048] if hasattr(stream, "peek") else b""
        jsonl = _looks_like_jsonl(head)
    if jsonl:
        for lineno, raw in enumerate(stream, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                yield f"line {lineno}", None, ObjectError(f"Invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield f"line {lineno}", None, ObjectError("Each line must be a JSON object.")
                continue
            yield f"line {lineno}", obj.get("type"), obj
        return
    yield from _iter_document(stream)


def _looks_like_jsonl(head: bytes) -> bool:
    text = head.lstrip()
    if not text.startswith(b"{"):
        return False
    first = text.split(b"\n", 1)[0]
    try:
        obj = json.loads(first)
    except ValueError:
        return False
    return isinstance(obj, dict) and "type" in obj


def _iter_document(stream):
    import ijson

    builder = None
    section = None
    index = -1
    depth = 0
    try:
        for prefix, event, value in ijson.parse(stream, use_float=False):
            if builder is None:
                if event == "start_map" and prefix.endswith(".item") and prefix.count(".") == 1:
                    section = prefix.split(".")[0]
                    index += 1
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                    depth = 1
                elif event == "start_array" and "." not in prefix and prefix:
                    index = -1
                elif event in ("string", "number", "boolean", "null", "start_array") and prefix.endswith(".item") \
                        and prefix.count(".") == 1:
                    index += 1
                    yield f"{prefix.split('.')[0]}[{index}]", None, ObjectError("Each item must be a JSON object.")
                continue
            builder.event(event, value)
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
                if depth == 0:
                    obj = builder.value
                    builder = None
                    kind = SECTIONS.get(section)
                    if kind is None:
                        yield f"{section}[{index}]", None, ObjectError(f"Unknown section {section!r}.")
                    else:
                        yield f"{section}[{index}]", kind, obj
    except ijson.JSONError as exc:
        yield "document", None, ObjectError(f"Invalid JSON: {exc}")


# --------------------------------------------------------------------------- helpers

def _time(value, name: str) -> datetime:
    dt = None
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            dt = parse_datetime(value)
    if dt is None:
        raise ObjectError({name: ["An ISO 8601 time with offset is required."]})
    if dt.tzinfo is None:
        raise ObjectError({name: ["The time needs an offset (e.g. +00:00)."]})
    return dt


def _required(obj: dict, *names):
    missing = {n: ["This field is required."] for n in names if obj.get(n) in (None, "")}
    if missing:
        raise ObjectError(missing)


class _Cache:
    def __init__(self):
        self.agents: dict[str, User] = {}
        self.teams: dict[str, Team] = {}
        self.channels: dict[str, Channel] = {}

    def reset_objects(self) -> None:
        """Forget cached rows after a transaction (a rolled-back team or agent must not be reused)."""
        self.agents.clear()
        self.teams.clear()
        self.channels.clear()

    def team(self, name: str) -> Team:
        if name not in self.teams:
            self.teams[name] = Team.objects.get_or_create(name=name[:100])[0]
        return self.teams[name]

    def agent(self, email: str) -> User:
        key = email.strip().lower()
        if key not in self.agents:
            user = User.objects.filter(email__iexact=key).first()
            if user is None:
                raise ObjectError({"agent": [f"Unknown agent {email!r}."]})
            self.agents[key] = user
        return self.agents[key]

    def channel(self, kind: str) -> Channel:
        if kind in self.channels:
            return self.channels[kind]
        from channels_app.models import ChannelKind

        if kind not in ChannelKind.values:
            raise ObjectError({"channel": [f"Unknown channel kind {kind!r}."]})
        if kind not in self.channels:
            ch = (Channel.objects.filter(kind=kind, active=True).order_by("pk").first()
                  or Channel.objects.filter(kind=kind).order_by("pk").first())
            if ch is None:
                ch = Channel.objects.create(kind=kind, name=f"Imported {kind}", active=False)
            self.channels[kind] = ch
        return self.channels[kind]


# --------------------------------------------------------------------------- objects

def import_agent(obj: dict, cache: _Cache) -> bool:
    _required(obj, "email")
    email = obj["email"].strip().lower()
    if "@" not in email:
        raise ObjectError({"email": ["Not an email address."]})
    user = User.objects.filter(email__iexact=email).first()
    created = False
    if user is None:
        name = (obj.get("name") or "").strip()
        user = User(username=email[:150], email=email, first_name=name[:150], role="agent", is_active=False)
        user.set_unusable_password()
        user.save()
        created = True
    cache.agents[email] = user
    if obj.get("team"):
        team = cache.team(obj["team"])
        if not team.members.filter(pk=user.pk).exists():
            team.members.add(user)
            created = True if created else created
    return created


def import_customer(obj: dict, cache: _Cache) -> bool:
    _required(obj, "external_id")
    ext = str(obj["external_id"])
    if Customer.objects.filter(external_id=ext).exists():
        return False
    pairs = []
    errors = []
    for i, ident in enumerate(obj.get("identities") or []):
        try:
            pairs.append(cust_services.normalize_identity(ident.get("kind"), ident.get("value")))
        except (cust_services.InvalidIdentity, AttributeError) as exc:
            errors.append(f"identities[{i}]: {exc}")
    if errors:
        raise ObjectError({"identities": errors})
    owner_ids = {i.customer_id for kind, value in pairs
                 for i in Identity.objects.filter(cust_services._lookup_q(kind, value))}
    if owner_ids:
        # the same person is already known under one of these identities: attach the external id
        customer = Customer.objects.get(pk=min(owner_ids))
        if customer.external_id:
            raise ObjectError({"identities": [f"Already belong to customer {customer.external_id!r}."]})
        Customer.objects.filter(pk=customer.pk).update(external_id=ext)
        for kind, value in pairs:
            cust_services.identity_add(customer=customer, kind=kind, value=value)
        return True
    cust_services.customer_create(name=obj.get("name") or "", language=obj.get("language") or "",
                                  company=obj.get("company") or "", external_id=ext, identities=pairs)
    return True


def _customer(ref) -> Customer:
    customer = Customer.objects.filter(external_id=str(ref)).first() if ref not in (None, "") else None
    if customer is None:
        raise ObjectError({"customer": [f"Unknown customer {ref!r}."]})
    return customer


def _identity_for(customer: Customer) -> tuple[str, str]:
    ident = Identity.objects.filter(customer=customer).order_by("created_at", "id").first()
    if ident is None:
        ident = Identity.objects.create(customer=customer, kind="chat", value=f"import:{customer.external_id}")
    return ident.kind, ident.value


def _timeline(obj: dict, cache: _Cache) -> list:
    """The conversation's messages and events, checked, in time order (messages before events at one instant)."""
    timeline = []
    for i, m in enumerate(obj.get("messages") or []):
        if not isinstance(m, dict):
            raise ObjectError({f"messages[{i}]": ["Must be an object."]})
        direction = m.get("direction")
        if direction not in ("inbound", "outbound", "note"):
            raise ObjectError({f"messages[{i}].direction": ["One of inbound, outbound, note."]})
        at = _time(m.get("created_at"), f"messages[{i}].created_at")
        if direction != "note":
            cache.channel(m.get("channel") or "")
        if direction == "note" or (direction == "outbound" and not m.get("automated")):
            if not m.get("author"):
                raise ObjectError({f"messages[{i}].author": ["A human reply or note needs its agent's email."]})
            cache.agent(m["author"])
        timeline.append((at, 0, i, "message", m))
    for i, e in enumerate(obj.get("events") or []):
        if not isinstance(e, dict) or e.get("type") not in ("assigned", "resolved", "reopened", "unassigned"):
            raise ObjectError({f"events[{i}].type": ["One of assigned, unassigned, resolved, reopened."]})
        at = _time(e.get("at"), f"events[{i}].at")
        if e["type"] == "assigned" and e.get("agent"):
            cache.agent(e["agent"])
        timeline.append((at, 1, i, "event", e))
    if not any(t[3] == "message" and t[4]["direction"] != "note" for t in timeline):
        raise ObjectError({"messages": ["A conversation needs at least one inbound or outbound message."]})
    timeline.sort(key=lambda t: (t[0], t[1], t[2]))
    return timeline


def import_conversation(obj: dict, cache: _Cache):
    """Returns (conversation id, messages imported), or -1 when the conversation exists already."""
    _required(obj, "external_id", "customer")
    ext = str(obj["external_id"])
    if Conversation.objects.filter(external_id=ext).exists():
        return -1
    customer = _customer(obj["customer"])
    priority = obj.get("priority") or Priority.NORMAL
    if priority not in PRIORITIES:
        raise ObjectError({"priority": [f"One of {', '.join(Priority.values)}."]})
    team = cache.team(obj["team"]) if obj.get("team") else None
    timeline = _timeline(obj, cache)
    identity = _identity_for(customer)
    count = 0
    with transaction.atomic():
        conversation = None
        for at, _order, i, what, item in timeline:
            if what == "message":
                conversation, stored = _import_message(conversation, item, at, obj, customer, identity, team,
                                                       cache, ext, priority)
                count += stored
                continue
            if conversation is None:  # status events before the first message: apply after it
                continue
            # the services keep the instance they are given current (or return a fresh one)
            if item["type"] == "assigned":
                agent = cache.agent(item["agent"]) if item.get("agent") else None
                conv_services.assign(conversation=conversation, agent=agent, at=at)
            elif item["type"] == "unassigned":
                conv_services.assign(conversation=conversation, agent=None, at=at)
            elif item["type"] == "resolved":
                conversation = conv_services.resolve_conversation(conversation=conversation, at=at)
            elif item["type"] == "reopened":
                conversation = conv_services.reopen(conversation=conversation, at=at)
    return conversation.pk, count


def _import_message(conversation, m, at, obj, customer, identity, team, cache, ext, priority):
    direction = m["direction"]
    body = str(m.get("body") or "")
    msg_ext = str(m["external_id"]) if m.get("external_id") not in (None, "") else None
    if direction == "inbound":
        channel = cache.channel(m.get("channel"))
        inbound = InboundMessage(channel=channel, identities=[identity], text=body, html=m.get("html") or "",
                                 subject=(obj.get("subject") or "") if conversation is None else "",
                                 external_id=f"import:{ext}:{msg_ext}" if msg_ext else None, created_at=at,
                                 name=customer.name, meta={"imported": True},
                                 new_conversation=conversation is None,
                                 reply_token=conversation.reply_token if conversation is not None else "")
        result = conv_services.ingest(inbound)
        if not result.created:  # a repeated external id: ingest returns the stored message
            return result.message.conversation, False
        conv = result.message.conversation
        if conversation is not None and conv.pk != conversation.pk:
            raise ObjectError({"messages": ["An inbound message could not be threaded into its conversation."]})
        if conversation is None:
            _adopt(conv, ext, obj, team, priority, at)
        return conv, True
    if conversation is None:
        conversation = _start_outbound(customer, m, at, obj, team, cache, ext, priority)
    if direction == "note":
        conv_services.add_note(conversation=conversation, author=cache.agent(m["author"]), body=body, at=at,
                               external_id=msg_ext)
        return conversation, True
    channel = cache.channel(m.get("channel"))
    automated = bool(m.get("automated"))
    author = None if automated else cache.agent(m["author"])
    recipient = conv_services.recipient_for(customer, channel.kind)
    # history is stored as already sent: no provider is called (deliver=False)
    conv_services._do_reply(conversation=conversation, author=author, body=body, html=m.get("html") or "",
                            channel=channel, recipient=recipient, attachments=(), automated=automated,
                            author_name=str(m.get("author") or "") if automated else "", resolve=False,
                            meta={"imported": True}, at=at, external_id=f"import:{ext}:{msg_ext}" if msg_ext else None,
                            deliver=False)
    return conversation, True


def _adopt(conv: Conversation, ext: str, obj: dict, team, priority, at) -> None:
    fields = {"external_id": ext, "priority": priority}
    if obj.get("subject"):
        fields["subject"] = str(obj["subject"])[:300]
    Conversation.objects.filter(pk=conv.pk).update(**fields)
    conv.refresh_from_db()
    if team is not None and conv.team_id != team.pk:
        conv_services.assign(conversation=conv, team=team, set_team=True, at=at)


def _start_outbound(customer, m, at, obj, team, cache, ext, priority) -> Conversation:
    """An agent-started (outbound-first) conversation: there is no inbound message to ingest."""
    channel = cache.channel(m.get("channel"))
    conv = Conversation.objects.create(
        customer=customer, subject=str(obj.get("subject") or "")[:300], status=Status.OPEN, team=team,
        origin_channel=channel, origin_kind=channel.kind, created_at=at, updated_at=at, external_id=ext,
        priority=priority)
    conv_services.record_event(conv, EventKind.CREATED, at=at, actor_type=AuthorType.AGENT,
                               data={"channel": channel.kind, "outbound": True})
    return conv


def _survey_values(obj: dict) -> tuple[str, datetime, int | None, datetime | None]:
    """kind, invited_at, score and answered_at of an import survey object (checked), for both paths."""
    kind = obj["kind"]
    if kind not in SurveyKind.values:
        raise ObjectError({"kind": ["One of csat, nps, ces."]})
    invited = _time(obj.get("invited_at") or obj.get("answered_at"), "invited_at")
    score = obj.get("score")
    answered = None
    if score is not None:
        try:
            score = surveys.check_score(kind, score)
        except surveys.InvalidAnswer as exc:
            raise ObjectError({"score": [str(exc)]}) from None
        answered = _time(obj.get("answered_at") or obj.get("invited_at"), "answered_at")
    return kind, invited, score, answered


def import_survey(obj: dict, cache: _Cache) -> bool:
    _required(obj, "external_id", "conversation", "kind")
    ext = str(obj["external_id"])
    if SurveyInvitation.objects.filter(external_id=ext).exists():
        return False
    conv = Conversation.objects.filter(external_id=str(obj["conversation"])).first()
    if conv is None:
        raise ObjectError({"conversation": [f"Unknown conversation {obj['conversation']!r}."]})
    kind, invited, score, answered = _survey_values(obj)
    with transaction.atomic():
        inv = SurveyInvitation.objects.create(
            conversation=conv, customer_id=conv.customer_id, kind=kind,
            channel_kind=obj.get("channel") or conv.last_inbound_kind or conv.origin_kind,
            agent_id=conv.assignee_id, team_id=conv.team_id, external_id=ext, invited_at=invited)
        conv_services.record_event(conv, EventKind.SURVEY_SENT, at=invited,
                                   data={"kind": kind, "invitation": inv.pk, "imported": True})
        if score is not None:
            surveys.record_answer(invitation=inv, score=score, comment=obj.get("comment") or None, at=answered)
    return conv.pk


def _order_values(obj: dict) -> tuple[Decimal, str, datetime]:
    try:
        amount = Decimal(str(obj["amount"]))
    except InvalidOperation:
        raise ObjectError({"amount": ["A decimal string is required."]}) from None
    if not amount.is_finite() or abs(amount) >= Decimal("1e12"):
        raise ObjectError({"amount": ["Out of range."]})
    placed = _time(obj.get("placed_at"), "placed_at")
    currency = str(obj.get("currency") or "USD").upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ObjectError({"currency": ["An ISO 4217 code."]})
    return amount, currency, placed


def import_order(obj: dict, cache: _Cache) -> bool:
    _required(obj, "external_id", "customer", "amount")
    customer = _customer(obj["customer"])
    amount, currency, placed = _order_values(obj)
    existing = Order.objects.filter(external_id=str(obj["external_id"])).first()
    if existing and existing.customer_id == customer.pk and existing.amount == amount.quantize(Decimal("0.01")) \
            and existing.placed_at == placed and existing.currency == currency:
        return False
    cust_services.order_upsert(customer=customer, external_id=str(obj["external_id"]), amount=amount,
                               currency=currency, placed_at=placed)
    return True


HANDLERS = {"agent": import_agent, "customer": import_customer, "conversation": import_conversation,
            "survey": import_survey, "order": import_order}


# --------------------------------------------------------------------------- bulk path
#
# The same rows the services write (Conversation, Message, ConversationEvent,
# SurveyInvitation, Identity, Order, the customer's seen/inbound fields), built
# in memory per batch by replaying the services' rules, then written in one
# go: COPY on PostgreSQL, bulk_create elsewhere. Ids are reserved up front
# (nextval ranges) so events can point at their messages before anything is
# written. A batch that fails as a whole (a constraint, a NUL byte) is rolled
# back and imported again object by object through the services, so the bad
# object is reported alone. tests/metrics/test_import_bulk.py compares the
# rows with the service path's, row for row.

PHONE_KEY = "tel"


def _ikey(kind: str) -> str:
    return PHONE_KEY if kind in cust_services.PHONE_KINDS else kind


class _Ids:
    """Reserve primary keys before writing (PostgreSQL: the table's sequence; SQLite: above the max)."""

    def __init__(self):
        self.high: dict[str, int] = {}

    def take(self, model, n: int) -> list[int]:
        if n <= 0:
            return []
        table = model._meta.db_table
        with connection.cursor() as cur:
            if connection.vendor == "postgresql":
                cur.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                            [table, n])
                return sorted(r[0] for r in cur.fetchall())
            cur.execute(f'SELECT MAX(id) FROM "{table}"')
            start = max(cur.fetchone()[0] or 0, self.high.get(table, 0)) + 1
        self.high[table] = start + n - 1
        return list(range(start, start + n))


_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _null(fmt):
    return lambda v: "\\N" if v is None else fmt(v)


def _copy_converter(f):
    """How one field's value is written in COPY's text format."""
    from django.db import models

    if isinstance(f, models.BooleanField):
        return lambda v: "t" if v else "f"
    if isinstance(f, models.DateTimeField):
        return _null(datetime.isoformat)
    if isinstance(f, models.JSONField):
        return lambda v: json.dumps(v).translate(_COPY_ESCAPE)
    if isinstance(f, (models.CharField, models.TextField)):
        return _null(lambda v: v.translate(_COPY_ESCAPE))
    return _null(str)  # integers, keys, decimals


class _Writer:
    """Rows as dicts of attnames; every concrete field must be given."""

    def __init__(self, use_copy: bool):
        self.use_copy = use_copy
        self.layouts: dict = {}

    def _layout(self, model):
        if model not in self.layouts:
            fields = model._meta.concrete_fields
            self.layouts[model] = ([(f.attname, _copy_converter(f)) for f in fields],
                                   ", ".join(f'"{f.column}"' for f in fields))
        return self.layouts[model]

    def write(self, model, rows: list[dict]) -> None:
        if not rows:
            return
        if self.use_copy:
            layout, cols = self._layout(model)
            buf = io.StringIO()
            buf.write("\n".join(["\t".join([conv(row[name]) for name, conv in layout]) for row in rows]))
            buf.write("\n")
            buf.seek(0)
            with connection.cursor() as cur:
                cur.copy_expert(f'COPY "{model._meta.db_table}" ({cols}) FROM STDIN', buf)
            return
        model.objects.bulk_create([model(**row) for row in rows], batch_size=500)


class _State:
    """One conversation while its timeline is replayed (the fields the services read and write)."""

    __slots__ = ("id", "customer_id", "subject", "status", "priority", "assignee_id", "team_id", "origin_channel_id",
                 "origin_kind", "last_inbound_channel_id", "last_inbound_kind", "last_inbound_at", "last_message_at",
                 "last_message_preview", "waiting_since", "first_inbound_at", "first_reply_at", "resolved_at",
                 "external_id", "message_count", "created_at", "updated_at")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, None)
        self.message_count = 0
        self.last_message_preview = ""
        self.last_inbound_kind = ""

    def row(self) -> dict:
        r = {name: getattr(self, name) for name in self.__slots__}
        r.update(snoozed_until=None, reply_token=secrets.token_hex(8), follow_up_of_id=None)
        return r


class _Msg:
    """What _after_inbound_fields reads of a message."""

    __slots__ = ("body_text", "subject")

    def __init__(self, body_text, subject):
        self.body_text = body_text
        self.subject = subject


@dataclass
class _Customer:
    id: int
    external_id: str | None
    name: str
    first_seen_at: datetime
    last_seen_at: datetime
    last_inbound_at: datetime | None
    last_inbound_kind: str
    last_inbound_channel_id: int | None
    recipients: dict = field(default_factory=dict)  # identity kind -> value (recipient_for)
    has_identity: bool = False
    changed: bool = False
    # this batch's history of the customer (the update is computed from it in SQL on PostgreSQL, so that
    # concurrent batches of one customer agree whatever order they commit in)
    hist_first: datetime | None = None
    hist_last: datetime | None = None
    hist_inbound: tuple | None = None


class BulkImporter:
    def __init__(self, cache: _Cache, result: ImportResult, *, use_copy: bool | None = None):
        self.cache = cache
        self.result = result
        self.ids = _Ids()
        self.writer = _Writer(connection.vendor == "postgresql" if use_copy is None else use_copy)
        self.marker = timezone.now()  # first/last_seen_at of customers created here until history sets them
        self.follow_up = timedelta(seconds=settings.FOLLOW_UP_WINDOW)

    # ------------------------------------------------------------------ batch

    def batch(self, items, touched: set[int]) -> tuple[ImportResult, list]:
        """Import one batch. Returns (counts, [(seq, error)]); raises on a write failure."""
        self.now = timezone.now()
        if connection.vendor == "postgresql":
            # a crash loses at most the last batches, and importing again is harmless (idempotent)
            with connection.cursor() as cur:
                cur.execute("SET LOCAL synchronous_commit TO OFF")
        self.counts = ImportResult()
        self.errors: list[tuple[int, dict]] = []
        self.rows: dict = defaultdict(list)
        self.customers: dict[str, _Customer] = {}
        self.conversations: dict[str, _State] = {}
        self.handles: list[Identity] = []
        by_kind = defaultdict(list)
        for seq, (position, kind, obj) in items:
            if isinstance(obj, ObjectError):
                self.errors.append((seq, {"position": position, "errors": obj.errors}))
            elif kind not in HANDLERS:
                self.errors.append((seq, {"position": position, "external_id": obj.get("external_id"),
                                          "errors": {"type": [f"One of {', '.join(TYPES)}."]}}))
            else:
                by_kind[kind].append((seq, position, obj))
        for seq, position, obj in by_kind["agent"]:
            self._service(seq, position, "agent", obj, touched)
        self._customers(by_kind["customer"], touched)
        self._conversations(by_kind["conversation"], touched)
        self._surveys(by_kind["survey"], touched)
        self._orders(by_kind["order"], touched)
        self._write()
        return self.counts, self.errors

    def _fail(self, seq, position, kind, obj, exc: ObjectError) -> None:
        self.errors.append((seq, {"position": position, "type": kind,
                                  "external_id": obj.get("external_id") or obj.get("email"), "errors": exc.errors}))

    def _service(self, seq, position, kind, obj, touched) -> None:
        """One object through the services (agents; customers whose identities someone owns already)."""
        error = _one((position, kind, obj), self.cache, self.counts, touched, None)
        if error:
            self.errors.append((seq, error))

    def _write(self) -> None:
        events = self.rows[ConversationEvent]
        for row, pk in zip(events, self.ids.take(ConversationEvent, len(events))):
            row["id"] = pk
        for model in (Customer, Identity, Conversation, Message, ConversationEvent, SurveyInvitation, Order):
            self.writer.write(model, self.rows.pop(model, []))
        # a concurrent batch of the same customer may add the same handle: it waits, then keeps that one
        Identity.objects.bulk_create(self.handles, ignore_conflicts=True)
        changed = [c for c in self.customers.values() if c.changed]
        if not changed:
            return
        if self.writer.use_copy:
            from psycopg2.extras import execute_values

            # _CustomerChanges.commit's rules, evaluated on the row as committed (ORDER BY: one lock order)
            table = Customer._meta.db_table
            newer = "(v.ia IS NOT NULL AND (c.last_inbound_at IS NULL OR v.ia >= c.last_inbound_at))"
            with connection.cursor() as cur:
                execute_values(
                    cur.cursor,
                    f'UPDATE "{table}" AS c SET first_seen_at = LEAST(c.first_seen_at, v.f), '
                    f'last_seen_at = CASE WHEN c.last_inbound_at IS NULL AND c.first_seen_at = c.last_seen_at '
                    f'THEN COALESCE(v.l, v.f) ELSE GREATEST(c.last_seen_at, v.l) END, '
                    f'last_inbound_at = CASE WHEN {newer} THEN v.ia ELSE c.last_inbound_at END, '
                    f'last_inbound_kind = CASE WHEN {newer} THEN v.k ELSE c.last_inbound_kind END, '
                    f'last_inbound_channel_id = CASE WHEN {newer} THEN v.ch ELSE c.last_inbound_channel_id END '
                    f'FROM (VALUES %s) AS v(id, f, l, ia, k, ch) WHERE c.id = v.id',
                    sorted((c.id, c.hist_first, c.hist_last, *(
                        (c.hist_inbound[0], c.hist_inbound[1].kind, c.hist_inbound[1].pk) if c.hist_inbound
                        else (None, "", None))) for c in changed),
                    template="(%s, %s::timestamptz, %s::timestamptz, %s::timestamptz, %s, %s::bigint)",
                    page_size=len(changed))
            return
        objs = [Customer(id=c.id, first_seen_at=c.first_seen_at, last_seen_at=c.last_seen_at,
                         last_inbound_at=c.last_inbound_at, last_inbound_kind=c.last_inbound_kind,
                         last_inbound_channel_id=c.last_inbound_channel_id) for c in changed]
        Customer.objects.bulk_update(objs, ["first_seen_at", "last_seen_at", "last_inbound_at", "last_inbound_kind",
                                            "last_inbound_channel_id"], batch_size=500)

    # ------------------------------------------------------------------ customers

    def _customers(self, items, touched) -> None:
        if not items:
            return
        prepared = []
        for seq, position, obj in items:
            try:
                _required(obj, "external_id")
                pairs, errors = [], []
                for i, ident in enumerate(obj.get("identities") or []):
                    try:
                        pairs.append(cust_services.normalize_identity(ident.get("kind"), ident.get("value")))
                    except (cust_services.InvalidIdentity, AttributeError) as exc:
                        errors.append(f"identities[{i}]: {exc}")
                prepared.append((seq, position, obj, str(obj["external_id"]), list(dict.fromkeys(pairs)), errors))
            except ObjectError as exc:
                self._fail(seq, position, "customer", obj, exc)
        exts = [p[3] for p in prepared]
        existing = set(Customer.objects.filter(external_id__in=exts).values_list("external_id", flat=True))
        values = {v for p in prepared for _k, v in p[4]}
        owned = {}
        for kind, value, cid in Identity.objects.filter(value__in=values).values_list("kind", "value", "customer_id"):
            owned[(_ikey(kind), value)] = cid
        claimed: dict[tuple, str] = {}
        slow = []
        for seq, position, obj, ext, pairs, errors in prepared:
            if ext in existing:
                self.counts.skipped["customer"] += 1
                continue
            try:
                if errors:
                    raise ObjectError({"identities": errors})
                keys = [(_ikey(k), v) for k, v in pairs]
                if any(k in owned for k in keys):
                    slow.append((seq, position, obj))  # attach the external id to the owner: the service path
                    existing.add(ext)
                    continue
                taken = next((claimed[k] for k in keys if k in claimed), None)
                if taken is not None:
                    raise ObjectError({"identities": [f"Already belong to customer {taken!r}."]})
                if len(set(keys)) != len(keys):
                    raise ObjectError({"identities": ["The same phone number is given twice."]})
            except ObjectError as exc:
                self._fail(seq, position, "customer", obj, exc)
                continue
            existing.add(ext)
            for k in keys:
                claimed[k] = ext
            self.rows[Customer].append({
                "id": None, "name": (obj.get("name") or "")[:200], "company": (obj.get("company") or "")[:200],
                "attributes": {}, "language": (obj.get("language") or "")[:10], "external_id": ext,
                "first_seen_at": self.marker, "last_seen_at": self.marker, "last_inbound_kind": "",
                "last_inbound_channel_id": None, "last_inbound_at": None, "created_at": self.now,
                "updated_at": self.now})
            customer = self.rows[Customer][-1]
            for kind, value in pairs:
                self.rows[Identity].append({"id": None, "customer": customer, "kind": kind, "value": value,
                                            "verified": False, "created_at": self.now})
            self.counts.created["customer"] += 1
        for row, pk in zip(self.rows[Customer], self.ids.take(Customer, len(self.rows[Customer]))):
            row["id"] = pk
        idents = self.rows[Identity]
        for row, pk in zip(idents, self.ids.take(Identity, len(idents))):
            row["id"] = pk
            row["customer_id"] = row.pop("customer")["id"]
        # written now: conversations and orders of this batch may name these customers
        self.writer.write(Customer, self.rows.pop(Customer, []))
        self.writer.write(Identity, self.rows.pop(Identity, []))
        for seq, position, obj in slow:
            self._service(seq, position, "customer", obj, touched)

    def _load_customers(self, refs) -> None:
        refs = [r for r in refs if r not in self.customers]
        if not refs:
            return
        found = {}
        for row in Customer.objects.filter(external_id__in=refs).values(
                "id", "external_id", "name", "first_seen_at", "last_seen_at", "last_inbound_at",
                "last_inbound_kind", "last_inbound_channel_id"):
            found[row["id"]] = self.customers[row["external_id"]] = _Customer(**row)
        for cid, kind, value in (Identity.objects.filter(customer_id__in=found).order_by("created_at", "id")
                                 .values_list("customer_id", "kind", "value")):
            found[cid].recipients[kind] = value
            found[cid].has_identity = True

    # ------------------------------------------------------------------ conversations

    def _conversations(self, items, touched) -> None:
        if not items:
            return
        exts = {str(obj["external_id"]) for _s, _p, obj in items if obj.get("external_id") not in (None, "")}
        existing = set(Conversation.objects.filter(external_id__in=exts).values_list("external_id", flat=True))
        self._load_customers({str(obj["customer"]) for _s, _p, obj in items
                              if obj.get("customer") not in (None, "")})
        pending = []  # (state, messages, events)
        for seq, position, obj in items:
            try:
                _required(obj, "external_id", "customer")
                ext = str(obj["external_id"])
                if ext in existing:
                    self.counts.skipped["conversation"] += 1
                    continue
                built = self._replay(obj, ext)
            except ObjectError as exc:
                self._fail(seq, position, "conversation", obj, exc)
                continue
            existing.add(ext)
            pending.append(built)
            self.conversations[ext] = built[0]
            self.counts.created["conversation"] += 1
            self.counts.messages += len(built[1])
        conv_ids = self.ids.take(Conversation, len(pending))
        msg_ids = iter(self.ids.take(Message, sum(len(p[1]) for p in pending)))
        event_rows = self.rows[ConversationEvent]
        for (state, messages, events, customer), pk in zip(pending, conv_ids):
            state.id = pk
            touched.add(pk)
            self.rows[Conversation].append(state.row())
            for m in messages:
                m["id"] = next(msg_ids)
                m["conversation_id"] = pk
            self.rows[Message].extend(messages)
            for e in events:
                msg = e.pop("message")
                e["message_id"] = msg["id"] if msg is not None else None
                e["conversation_id"] = pk
            event_rows.extend(events)

    def _replay(self, obj: dict, ext: str):
        """The service path's rows for one conversation (import_conversation and the services it calls)."""
        cache = self.cache
        customer = self.customers.get(str(obj["customer"]))
        if customer is None:
            raise ObjectError({"customer": [f"Unknown customer {obj['customer']!r}."]})
        priority = obj.get("priority") or Priority.NORMAL
        if priority not in PRIORITIES:
            raise ObjectError({"priority": [f"One of {', '.join(Priority.values)}."]})
        team = cache.team(obj["team"]) if obj.get("team") else None
        timeline = _timeline(obj, cache)
        new_identity = None
        if not customer.has_identity:  # _identity_for: a customer without identities gets a chat handle
            new_identity = customer.recipients["chat"] = f"import:{customer.external_id}"
        try:
            built = self._play(obj, ext, customer, priority, team, timeline)
        except ObjectError:
            if new_identity:
                customer.recipients.pop("chat", None)
            raise
        if new_identity:
            self.handles.append(Identity(customer_id=customer.id, kind="chat", value=new_identity,
                                         created_at=self.now))
            customer.has_identity = True
        return built

    def _play(self, obj, ext, customer, priority, team, timeline):
        cache = self.cache
        subject = str(obj.get("subject") or "")
        c = None
        messages: list[dict] = []
        events: list[dict] = []
        seen_ext: set = set()
        cust = _CustomerChanges(customer)

        def event(kind, at, actor_type=AuthorType.SYSTEM, actor=None, message=None, data=None):
            events.append({"id": None, "conversation_id": None, "kind": kind, "at": at, "actor_type": actor_type,
                           "actor_user_id": actor, "message": message, "data": data or {}})

        for at, _order, i, what, item in timeline:
            if what == "event":
                if c is not None:
                    self._status_event(c, item, at, event)
                continue
            direction = item["direction"]
            msg_ext = str(item["external_id"]) if item.get("external_id") not in (None, "") else None
            body = str(item.get("body") or "")
            if direction == "inbound":
                channel = cache.channel(item.get("channel"))
                full_ext = f"import:{ext}:{msg_ext}" if msg_ext else None
                if full_ext and (channel.pk, full_ext) in seen_ext:
                    continue  # a repeated delivery: ingest returns the stored message
                seen_ext.add((channel.pk, full_ext))
                html = item.get("html") or ""
                body_html = sanitize_html(html) if html else ""
                text = body or (html_to_text(body_html) if body_html else "")
                created = c is None
                reopen = False
                if created:
                    c = _State()
                    c.customer_id = customer.id
                    preview = text.strip().splitlines()
                    c.subject = (subject or (preview[0][:120] if preview else ""))[:300]
                    c.status = Status.OPEN
                    c.priority = priority
                    c.team_id = channel.team_id
                    c.origin_channel_id = channel.pk
                    c.origin_kind = channel.kind
                    c.created_at = at
                    c.external_id = ext
                elif c.status == Status.RESOLVED:
                    if at - (c.resolved_at or c.updated_at) > self.follow_up:
                        raise ObjectError({"messages": [
                            "An inbound message could not be threaded into its conversation."]})
                    reopen = True
                msg = {"id": None, "conversation_id": None, "direction": Direction.INBOUND, "channel_id": channel.pk,
                       "channel_kind": channel.kind, "author_type": AuthorType.CUSTOMER,
                       "author_user_id": None, "author_name": customer.name[:200], "automated": False,
                       "body_text": text, "body_html": body_html, "subject": subject[:300] if created else "",
                       "external_id": full_ext, "recipient": "", "delivery_status": "", "delivery_error": "",
                       "delivery_attempts": 0, "next_attempt_at": None, "sent_at": None, "delivered_at": None,
                       "read_at": None, "meta": {"imported": True}, "envelope_id": None, "created_at": at}
                messages.append(msg)
                switched = not created and c.last_inbound_kind and c.last_inbound_kind != channel.kind
                if created:
                    event(EventKind.CREATED, at, AuthorType.CUSTOMER, data={"channel": channel.kind})
                if reopen:
                    event(EventKind.REOPENED, at, AuthorType.CUSTOMER, data={"by": "customer", "channel": channel.kind})
                if switched:
                    event(EventKind.CHANNEL_SWITCHED, at, AuthorType.CUSTOMER,
                          data={"from": c.last_inbound_kind, "to": channel.kind})
                event(EventKind.MESSAGE_IN, at, AuthorType.CUSTOMER, message=msg,
                      data={"channel": channel.kind, "automated": False})
                updates = conv_services._after_inbound_fields(c, channel, at, self.now, _Msg(text, msg["subject"]),
                                                              reopen, False)
                ch = updates.pop("last_inbound_channel", None)
                if ch is not None:
                    updates["last_inbound_channel_id"] = ch.pk
                updates.pop("snoozed_until", None)
                for key, value in updates.items():
                    setattr(c, key, value)
                c.message_count += 1
                cust.inbound(at, channel)
                if created:
                    if subject:
                        c.subject = subject[:300]
                    if team is not None and c.team_id != team.pk:  # _adopt: assign(team=..., set_team=True)
                        event(EventKind.TEAM_CHANGED, at, data={"from": c.team_id, "to": team.pk, "name": team.name})
                        c.team_id = team.pk
                        c.updated_at = at
                continue
            if c is None:  # _start_outbound: an agent-started conversation
                channel = cache.channel(item.get("channel"))
                c = _State()
                c.customer_id = customer.id
                c.subject = subject[:300]
                c.status = Status.OPEN
                c.priority = priority
                c.team_id = team.pk if team else None
                c.origin_channel_id = channel.pk
                c.origin_kind = channel.kind
                c.created_at = c.updated_at = at
                c.external_id = ext
                event(EventKind.CREATED, at, AuthorType.AGENT, data={"channel": channel.kind, "outbound": True})
            cust.seen(at)
            if direction == "note":
                author = cache.agent(item["author"])
                msg = {"id": None, "conversation_id": None, "direction": Direction.NOTE, "channel_id": None,
                       "channel_kind": "", "author_type": AuthorType.AGENT, "author_user_id": author.pk,
                       "author_name": author.name, "automated": False, "body_text": body, "body_html": "",
                       "subject": "", "external_id": msg_ext, "recipient": "", "delivery_status": "",
                       "delivery_error": "", "delivery_attempts": 0, "next_attempt_at": None, "sent_at": None,
                       "delivered_at": None, "read_at": None, "meta": {}, "envelope_id": None, "created_at": at}
                messages.append(msg)
                event(EventKind.NOTE, at, AuthorType.AGENT, actor=author.pk, message=msg, data={"mentions": []})
                c.message_count += 1
                c.updated_at = self.now
                continue
            channel = cache.channel(item.get("channel"))
            full_ext = f"import:{ext}:{msg_ext}" if msg_ext else None
            if full_ext and (channel.pk, full_ext) in seen_ext:
                raise ObjectError({f"messages[{i}].external_id": [f"Repeated external id {msg_ext!r}."]})
            seen_ext.add((channel.pk, full_ext))
            automated = bool(item.get("automated"))
            author = None if automated else cache.agent(item["author"])
            public = author is not None
            author_type = AuthorType.AGENT if public else AuthorType.AUTOMATION
            html = item.get("html") or ""
            msg = {"id": None, "conversation_id": None, "direction": Direction.OUTBOUND, "channel_id": channel.pk,
                   "channel_kind": channel.kind, "author_type": author_type,
                   "author_user_id": author.pk if public else None,
                   "author_name": (author.name if public else str(item.get("author") or ""))[:200],
                   "automated": not public, "body_text": body, "body_html": sanitize_html(html) if html else "",
                   "subject": "", "external_id": full_ext, "recipient": _recipient(customer, channel.kind)[:320],
                   "delivery_status": DeliveryStatus.SENT, "delivery_error": "", "delivery_attempts": 0,
                   "next_attempt_at": None, "sent_at": at, "delivered_at": None, "read_at": None,
                   "meta": {"imported": True}, "envelope_id": None, "created_at": at}
            messages.append(msg)
            event(EventKind.MESSAGE_OUT, at, author_type, actor=author.pk if public else None, message=msg,
                  data={"channel": channel.kind, "automated": not public})
            c.updated_at = self.now
            if c.last_message_at is None or at >= c.last_message_at:
                c.last_message_at = at
                c.last_message_preview = body[:200]
            if public:
                c.waiting_since = None
                if c.first_reply_at is None:
                    c.first_reply_at = at
                if c.assignee_id is None:
                    c.assignee_id = author.pk
                    event(EventKind.ASSIGNED, at, AuthorType.AGENT, actor=author.pk,
                          data={"assignee": author.pk, "auto": "reply"})
            c.message_count += 1
        cust.commit()
        return c, messages, events, customer

    def _status_event(self, c: _State, item: dict, at: datetime, event) -> None:
        kind = item["type"]
        if kind in ("assigned", "unassigned"):
            agent = self.cache.agent(item["agent"]) if kind == "assigned" and item.get("agent") else None
            if (agent.pk if agent else None) != c.assignee_id:
                event(EventKind.ASSIGNED, at, data={"from": c.assignee_id, "assignee": agent.pk if agent else None,
                                                    "name": agent.name if agent else "", "auto": False})
                c.assignee_id = agent.pk if agent else None
                c.updated_at = at
        elif kind == "resolved":
            if c.status != Status.RESOLVED:
                event(EventKind.RESOLVED, at, data={"from": c.status, "assignee": c.assignee_id, "team": c.team_id})
                c.status = Status.RESOLVED
                c.resolved_at = at
                c.waiting_since = None
                c.updated_at = self.now
        elif kind == "reopened":
            if c.status == Status.RESOLVED:
                event(EventKind.REOPENED, at, data={"by": "system"})
                c.status = Status.OPEN
                c.resolved_at = None
                c.updated_at = self.now

    # ------------------------------------------------------------------ surveys

    def _surveys(self, items, touched) -> None:
        if not items:
            return
        exts = {str(o["external_id"]) for _s, _p, o in items if o.get("external_id") not in (None, "")}
        existing = set(SurveyInvitation.objects.filter(external_id__in=exts).values_list("external_id", flat=True))
        refs = {str(o["conversation"]) for _s, _p, o in items if o.get("conversation") not in (None, "")}
        stored = {row["external_id"]: row for row in Conversation.objects.filter(
            external_id__in=refs - set(self.conversations)).values(
            "id", "external_id", "customer_id", "last_inbound_kind", "origin_kind", "assignee_id", "team_id")}
        built = []
        for seq, position, obj in items:
            try:
                _required(obj, "external_id", "conversation", "kind")
                ext = str(obj["external_id"])
                if ext in existing:
                    self.counts.skipped["survey"] += 1
                    continue
                ref = str(obj["conversation"])
                state = self.conversations.get(ref)
                conv = ({"id": state.id, "customer_id": state.customer_id, "last_inbound_kind": state.last_inbound_kind,
                         "origin_kind": state.origin_kind, "assignee_id": state.assignee_id, "team_id": state.team_id}
                        if state is not None else stored.get(ref))
                if conv is None:
                    raise ObjectError({"conversation": [f"Unknown conversation {obj['conversation']!r}."]})
                kind, invited, score, answered = _survey_values(obj)
                comment = (obj.get("comment") or "").strip()[:5000] if score is not None else ""
            except ObjectError as exc:
                self._fail(seq, position, "survey", obj, exc)
                continue
            existing.add(ext)
            built.append((conv, ext, kind, obj, invited, score, answered, comment))
        for (conv, ext, kind, obj, invited, score, answered, comment), pk in zip(
                built, self.ids.take(SurveyInvitation, len(built))):
            channel_kind = obj.get("channel") or conv["last_inbound_kind"] or conv["origin_kind"]
            self.rows[SurveyInvitation].append({
                "id": pk, "conversation_id": conv["id"], "customer_id": conv["customer_id"], "kind": kind,
                "channel_kind": channel_kind, "agent_id": conv["assignee_id"], "team_id": conv["team_id"],
                "token": secrets.token_urlsafe(16), "external_id": ext, "invited_at": invited, "score": score,
                "comment": comment, "answered_at": answered, "language": "", "message_id": None})
            self.rows[ConversationEvent].append({
                "id": None, "conversation_id": conv["id"], "kind": EventKind.SURVEY_SENT, "at": invited,
                "actor_type": AuthorType.SYSTEM, "actor_user_id": None, "message_id": None,
                "data": {"kind": kind, "invitation": pk, "imported": True}})
            if score is not None:
                self.rows[ConversationEvent].append({
                    "id": None, "conversation_id": conv["id"], "kind": EventKind.SURVEY_ANSWERED, "at": answered,
                    "actor_type": AuthorType.CUSTOMER, "actor_user_id": None, "message_id": None,
                    "data": {"kind": kind, "score": score, "invitation": pk, "channel": channel_kind}})
            touched.add(conv["id"])
            self.counts.created["survey"] += 1

    # ------------------------------------------------------------------ orders

    def _orders(self, items, touched) -> None:
        if not items:
            return
        exts = {str(o["external_id"]) for _s, _p, o in items if o.get("external_id") not in (None, "")}
        stored = {o.external_id: o for o in Order.objects.filter(external_id__in=exts)}
        self._load_customers({str(o["customer"]) for _s, _p, o in items if o.get("customer") not in (None, "")})
        new: dict[str, dict] = {}
        for seq, position, obj in items:
            try:
                _required(obj, "external_id", "customer", "amount")
                customer = self.customers.get(str(obj["customer"]))
                if customer is None:
                    raise ObjectError({"customer": [f"Unknown customer {obj['customer']!r}."]})
                amount, currency, placed = _order_values(obj)
            except ObjectError as exc:
                self._fail(seq, position, "order", obj, exc)
                continue
            ext = str(obj["external_id"])
            values = {"customer_id": customer.id, "amount": amount.quantize(Decimal("0.01")), "currency": currency,
                      "placed_at": placed}
            current = new.get(ext) or (vars(stored[ext]) if ext in stored else None)
            if current is not None and all(current[k] == v for k, v in values.items()):
                self.counts.skipped["order"] += 1
                continue
            self.counts.created["order"] += 1
            if ext in stored:  # a changed order: the service updates it
                cust_services.order_upsert(customer=Customer(pk=customer.id), external_id=ext, amount=amount,
                                           currency=currency, placed_at=placed)
                stored[ext].__dict__.update(values)
                continue
            if ext not in new:
                new[ext] = {"id": None, "external_id": ext, "created_at": self.now, **values}
            else:
                new[ext].update(values)
        rows = list(new.values())
        for row, pk in zip(rows, self.ids.take(Order, len(rows))):
            row["id"] = pk
            row["amount"] = str(row["amount"]) if self.writer.use_copy else row["amount"]
        self.rows[Order] = rows


class _CustomerChanges:
    """ingest's updates of the customer (last_seen_at, last_inbound_*), applied when the conversation imports.

    first_seen_at takes the history's earliest time (a customer the import created carries the import's time
    until then); a customer never seen writing takes the history's last inbound time as last_seen_at."""

    def __init__(self, customer: _Customer):
        self.c = customer
        self.first = self.last = self.latest = None

    def seen(self, at):
        if self.first is None or at < self.first:
            self.first = at

    def inbound(self, at, channel):
        self.seen(at)
        if self.last is None or at > self.last:
            self.last = at
        if self.latest is None or at >= self.latest[0]:
            self.latest = (at, channel)

    def commit(self):
        c = self.c
        if self.first is None:
            return
        unset = c.last_inbound_at is None and c.first_seen_at == c.last_seen_at
        c.first_seen_at = min(c.first_seen_at, self.first)
        if unset:
            c.last_seen_at = self.last or self.first
        elif self.last is not None and self.last > c.last_seen_at:
            c.last_seen_at = self.last
        if self.latest and (c.last_inbound_at is None or self.latest[0] >= c.last_inbound_at):
            c.last_inbound_at = self.latest[0]
            c.last_inbound_kind = self.latest[1].kind
            c.last_inbound_channel_id = self.latest[1].pk
        c.changed = True
        c.hist_first = self.first if c.hist_first is None else min(c.hist_first, self.first)
        if self.last is not None and (c.hist_last is None or self.last > c.hist_last):
            c.hist_last = self.last
        if self.latest and (c.hist_inbound is None or self.latest[0] >= c.hist_inbound[0]):
            c.hist_inbound = self.latest


def _recipient(customer: _Customer, channel_kind: str) -> str:
    """conversations.services.recipient_for on the batch's copy of the customer's identities."""
    from channels_app.models import RECIPIENT_IDENTITY_KINDS

    for kind in RECIPIENT_IDENTITY_KINDS.get(channel_kind, []):
        if kind in customer.recipients:
            return customer.recipients[kind]
    return ""


# --------------------------------------------------------------------------- driver

BATCH_OBJECTS = 1000  # objects per batch (one transaction)
BATCH_MESSAGES = 10000  # ... or this many messages, whichever comes first
FOLDS = ("auto", "batch", "end", "none")


def run(stream, *, jsonl: bool | None = None, progress=None, fold: str = "auto", bulk: bool = True,
        use_copy: bool | None = None, batch_objects: int = BATCH_OBJECTS, batch_messages: int = BATCH_MESSAGES,
        workers: int = 1) -> ImportResult:
    """Import every object of `stream` (binary). `progress(n_messages)` is called as it goes.

    Objects are imported in batches, one transaction each: in bulk (the
    services' rows replayed in memory and written with COPY / bulk_create),
    or with bulk=False through the services object by object, each in its own
    savepoint. A batch whose bulk write fails is imported again object by
    object, so a bad object is reported alone and the others land. History
    has no side effects: no realtime pushes, webhooks, automation, surveys or
    outbound sends.

    workers > 1 (PostgreSQL, bulk, outside a transaction) imports batches of
    conversations, surveys and orders in that many forked processes at once;
    a batch with agents or customers waits for the running ones and runs
    alone, so everything a batch names was committed before it (a survey
    whose conversation was still in flight is retried at the end).

    The KPIs are folded before this returns: fold="batch" flushes the engine
    after every batch, fold="end" recomputes everything once at the end, and
    "auto" picks "end" when the import is large against the data already
    stored (a full recompute is then cheaper than the incremental one);
    "none" leaves the imported conversations marked dirty for the engine's
    periodic flush.
    """
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}")
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BufferedReader(io.BytesIO(stream))
    result = ImportResult()
    started = timezone.now()
    cache = _Cache()
    importer = BulkImporter(cache, result, use_copy=use_copy) if bulk else None
    before = _conversation_estimate() if fold == "auto" else 0
    objects = enumerate(iter_objects(stream, jsonl=jsonl))
    errors: list = []
    imported = 0
    parallel = (workers > 1 and bulk and connection.vendor == "postgresql" and not connection.in_atomic_block)

    def account(counts, batch_errors, touched):
        nonlocal imported
        for kind in TYPES:
            result.created[kind] += counts.created[kind]
            result.skipped[kind] += counts.skipped[kind]
        result.messages += counts.messages
        errors.extend(batch_errors)
        imported += touched
        if progress:
            progress(counts.messages)
        if touched and fold == "batch":
            engine.flush()

    with engine.suspended(), surveys.paused():
        pool = _Pool(workers, use_copy, account) if parallel else None
        try:
            while True:
                items = _take(objects, batch_objects, batch_messages)
                if not items:
                    break
                if pool is not None and pool.may_run(items, cache):
                    pool.submit(items)
                    continue
                if pool is not None:
                    pool.drain()  # everything before a batch of agents or customers is committed first
                account(*_run_batch(importer, items, cache))
            if pool is not None:
                pool.drain()
                for i in range(0, len(pool.retry), batch_objects):  # surveys whose conversation was in flight
                    account(*_run_batch(importer, pool.retry[i:i + batch_objects], cache))
        finally:
            if pool is not None:
                pool.close()
        if fold == "end" or (fold == "auto" and imported and imported * 2 >= before):
            engine.recompute_all()  # customer links included
        else:
            if imported and fold != "none":
                engine.flush()
            if bulk and result.created["order"]:
                # orders written with COPY / bulk_create send no signals: their customers' links
                customer_links.refresh(Order.objects.filter(created_at__gte=started)
                                       .values_list("customer_id", flat=True).distinct())
            if bulk and result.created["survey"]:
                survey_rollup.rebuild()  # nor do invitations: recount the survey days
        if any(result.created.values()):
            resultcache.bump()  # orders and surveys written with COPY / bulk_create send no signals
    result.errors = [e for _seq, e in sorted(errors, key=lambda x: x[0])]
    return result


def _run_batch(importer, items, cache) -> tuple[ImportResult, list, int]:
    """One batch in one transaction. Returns (counts, [(seq, error)], conversations touched)."""
    touched: set[int] = set()
    with transaction.atomic():
        mark = len(connection.run_on_commit)
        counts, errors = _batch(importer, items, cache, touched)
        # history: no pushes, webhooks or automation for it (see run's docstring)
        del connection.run_on_commit[mark:]
        engine.mark_dirty(touched)
    cache.reset_objects()
    return counts, errors, len(touched)


_WORKER: dict = {}


def _worker_init(use_copy) -> None:
    cache = _Cache()
    _WORKER.update(cache=cache, importer=BulkImporter(cache, ImportResult(), use_copy=use_copy))


def _worker_batch(items):
    return _run_batch(_WORKER["importer"], items, _WORKER["cache"])


class _Pool:
    """Batches of conversations, surveys and orders in forked processes, results taken in order."""

    def __init__(self, workers: int, use_copy, account):
        import multiprocessing

        from django.db import connections

        connections.close_all()  # the children must not share the parent's connection
        self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init,
                                                              initargs=(use_copy,))
        self.limit = workers * 2
        self.pending: list = []
        self.account = account
        self.retry: list = []
        self.ready_kinds: set = set()
        self.ready_teams: set = set()

    def may_run(self, items, cache) -> bool:
        if any(item[1] in ("agent", "customer") for _seq, item in items):
            return False
        # channels and teams a batch needs are created here, once, not by two processes at a time
        for _seq, (_pos, kind, obj) in items:
            if kind != "conversation" or not isinstance(obj, dict):
                continue
            team = obj.get("team")
            if team and isinstance(team, str) and team not in self.ready_teams:
                cache.team(team)
                self.ready_teams.add(team)
            for m in obj.get("messages") or ():
                ch = m.get("channel") if isinstance(m, dict) else None
                if ch and isinstance(ch, str) and ch not in self.ready_kinds:
                    try:
                        cache.channel(ch)
                    except ObjectError:
                        pass  # reported by the batch
                    self.ready_kinds.add(ch)
        return True

    def submit(self, items) -> None:
        surveys_in = {seq: item for seq, item in items if item[1] == "survey"}
        self.pending.append((self.pool.apply_async(_worker_batch, (items,)), surveys_in))
        while len(self.pending) >= self.limit:
            self._collect()

    def _collect(self) -> None:
        handle, surveys_in = self.pending.pop(0)
        counts, errors, touched = handle.get()
        kept = []
        for seq, error in errors:
            if seq in surveys_in and "conversation" in error.get("errors", {}):
                self.retry.append((seq, surveys_in[seq]))  # its conversation may have been in flight
            else:
                kept.append((seq, error))
        self.account(counts, kept, touched)

    def drain(self) -> None:
        while self.pending:
            self._collect()

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def _conversation_estimate() -> int:
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                        [Conversation._meta.db_table])
            row = cur.fetchone()
            if row and row[0] >= 0:
                return row[0]
    return Conversation.objects.count()


def _take(objects, max_objects: int, max_messages: int) -> list:
    items = []
    messages = 0
    for seq, item in objects:
        items.append((seq, item))
        obj = item[2]
        if item[1] == "conversation" and isinstance(obj, dict) and isinstance(obj.get("messages"), list):
            messages += len(obj["messages"])
        if len(items) >= max_objects or messages >= max_messages:
            break
    return items


def _batch(importer, items, cache, touched) -> tuple[ImportResult, list]:
    if importer is not None:
        try:
            with transaction.atomic():
                return importer.batch(items, touched)
        except Exception:  # a constraint or a value the database refuses: object by object, through the services
            log.warning("bulk import batch failed; importing it object by object", exc_info=True)
            cache.reset_objects()
            touched.clear()
    counts = ImportResult()
    errors = []
    for seq, item in items:
        error = _one(item, cache, counts, touched, None)
        if error:
            errors.append((seq, error))
    return counts, errors


def _one(item, cache, result, touched, progress) -> dict | None:
    """One object through the services in its own savepoint; returns its error, if any."""
    position, kind, obj = item
    if isinstance(obj, ObjectError):
        return {"position": position, "errors": obj.errors}
    if kind not in HANDLERS:
        return {"position": position, "external_id": obj.get("external_id"),
                "errors": {"type": [f"One of {', '.join(TYPES)}."]}}
    try:
        with transaction.atomic():
            outcome = HANDLERS[kind](obj, cache)
    except ObjectError as exc:
        cache.reset_objects()  # rows created inside the rolled-back savepoint are gone
        return {"position": position, "type": kind, "external_id": obj.get("external_id") or obj.get("email"),
                "errors": exc.errors}
    except Exception as exc:  # a bug or a constraint: report it on the object, keep going
        cache.reset_objects()
        log.exception("import of %s at %s failed", kind, position)
        return {"position": position, "type": kind, "external_id": obj.get("external_id"),
                "errors": {"detail": [f"{type(exc).__name__}: {str(exc)[:300]}"]}}
    if kind == "conversation":
        if outcome == -1:
            result.skipped[kind] += 1
            return None
        conv_id, count = outcome
        touched.add(conv_id)
        result.created[kind] += 1
        result.messages += count
        return None
    if kind == "survey" and outcome:
        touched.add(outcome)
    (result.created if outcome else result.skipped)[kind] += 1
    return None
