"""Import history in API.md's format (JSON document or JSON Lines), streaming.

Every write goes through the services (conversations.services.ingest / reply
internals / add_note / assign / resolve_conversation / reopen, customers.services)
with the original timestamps, so imported history yields the same KPIs as live
traffic. One transaction per object (a conversation with all its messages and
events); a bad object is reported with its position and the rest still lands.
Idempotent on external ids: importing the same file twice changes nothing.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.db import connection, transaction
from django.utils.dateparse import parse_datetime

from channels_app.models import Channel
from conversations import services as conv_services
from conversations.inbound import InboundMessage
from conversations.models import AuthorType, Conversation, EventKind, Priority, Status, Team
from customers import services as cust_services
from customers.models import Customer, Identity, Order
from helpdesk.models import User

from . import engine, surveys
from .models import SurveyInvitation, SurveyKind

log = logging.getLogger(__name__)

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
    dt = parse_datetime(value) if isinstance(value, str) else None
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


def import_conversation(obj: dict, cache: _Cache):
    """Returns (conversation id, messages imported), or -1 when the conversation exists already."""
    _required(obj, "external_id", "customer")
    ext = str(obj["external_id"])
    if Conversation.objects.filter(external_id=ext).exists():
        return -1
    customer = _customer(obj["customer"])
    priority = obj.get("priority") or Priority.NORMAL
    if priority not in Priority.values:
        raise ObjectError({"priority": [f"One of {', '.join(Priority.values)}."]})
    team = cache.team(obj["team"]) if obj.get("team") else None
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
    identity = _identity_for(customer)
    count = 0
    with transaction.atomic():
        conversation = None
        for at, _order, i, what, item in timeline:
            if what == "message":
                conversation = _import_message(conversation, item, at, obj, customer, identity, team, cache, ext,
                                               priority)
                count += 1
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
        if not result.created:
            return result.message.conversation
        conv = result.message.conversation
        if conversation is not None and conv.pk != conversation.pk:
            raise ObjectError({"messages": ["An inbound message could not be threaded into its conversation."]})
        if conversation is None:
            _adopt(conv, ext, obj, team, priority, at)
        return conv
    if conversation is None:
        conversation = _start_outbound(customer, m, at, obj, team, cache, ext, priority)
    if direction == "note":
        conv_services.add_note(conversation=conversation, author=cache.agent(m["author"]), body=body, at=at,
                               external_id=msg_ext)
        return conversation
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
    return conversation


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


def import_survey(obj: dict, cache: _Cache) -> bool:
    _required(obj, "external_id", "conversation", "kind")
    ext = str(obj["external_id"])
    if SurveyInvitation.objects.filter(external_id=ext).exists():
        return False
    conv = Conversation.objects.filter(external_id=str(obj["conversation"])).first()
    if conv is None:
        raise ObjectError({"conversation": [f"Unknown conversation {obj['conversation']!r}."]})
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


def import_order(obj: dict, cache: _Cache) -> bool:
    _required(obj, "external_id", "customer", "amount")
    customer = _customer(obj["customer"])
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
    existing = Order.objects.filter(external_id=str(obj["external_id"])).first()
    if existing and existing.customer_id == customer.pk and existing.amount == amount.quantize(Decimal("0.01")) \
            and existing.placed_at == placed and existing.currency == currency:
        return False
    cust_services.order_upsert(customer=customer, external_id=str(obj["external_id"]), amount=amount,
                               currency=currency, placed_at=placed)
    return True


HANDLERS = {"agent": import_agent, "customer": import_customer, "conversation": import_conversation,
            "survey": import_survey, "order": import_order}


# --------------------------------------------------------------------------- driver

BATCH = 200  # objects per database transaction (each object in its own savepoint)


def run(stream, *, jsonl: bool | None = None, progress=None) -> ImportResult:
    """Import every object of `stream` (binary). `progress(n_messages)` is called as it goes.

    Objects are written in batches of BATCH per transaction, each in its own
    savepoint, so a bad object rolls back alone. The after-commit side effects
    of the services (realtime pushes, outbound webhooks, automation, survey
    invitations) are dropped for imported history; the touched conversations
    are handed to the KPI engine in one batch per transaction instead.
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BufferedReader(io.BytesIO(stream))
    result = ImportResult()
    cache = _Cache()
    objects = iter_objects(stream, jsonl=jsonl)
    done = False
    with engine.suspended(), surveys.paused():
        while not done:
            touched: set[int] = set()
            with transaction.atomic():
                mark = len(connection.run_on_commit)
                for _ in range(BATCH):
                    item = next(objects, None)
                    if item is None:
                        done = True
                        break
                    _one(item, cache, result, touched, progress)
                # history: no pushes, webhooks or automation for it (see docstring)
                del connection.run_on_commit[mark:]
                engine.mark_dirty(touched)
            cache.reset_objects()
            if touched:
                engine.flush()
    return result


def _one(item, cache, result, touched, progress) -> None:
    position, kind, obj = item
    if isinstance(obj, ObjectError):
        result.errors.append({"position": position, "errors": obj.errors})
        return
    if kind not in HANDLERS:
        result.errors.append({"position": position, "external_id": obj.get("external_id"),
                              "errors": {"type": [f"One of {', '.join(TYPES)}."]}})
        return
    try:
        with transaction.atomic():
            outcome = HANDLERS[kind](obj, cache)
    except ObjectError as exc:
        cache.reset_objects()  # rows created inside the rolled-back savepoint are gone
        result.errors.append({"position": position, "type": kind,
                              "external_id": obj.get("external_id") or obj.get("email"), "errors": exc.errors})
        return
    except Exception as exc:  # a bug or a constraint: report it on the object, keep going
        cache.reset_objects()
        log.exception("import of %s at %s failed", kind, position)
        result.errors.append({"position": position, "type": kind, "external_id": obj.get("external_id"),
                              "errors": {"detail": [f"{type(exc).__name__}: {str(exc)[:300]}"]}})
        return
    if kind == "conversation":
        if outcome == -1:
            result.skipped[kind] += 1
            return
        conv_id, count = outcome
        touched.add(conv_id)
        result.created[kind] += 1
        result.messages += count
        if progress:
            progress(count)
        return
    if kind == "survey" and outcome:
        touched.add(outcome)
    (result.created if outcome else result.skipped)[kind] += 1
