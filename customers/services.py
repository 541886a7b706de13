"""Writes on customers: identity resolution, updates and merging."""
from __future__ import annotations

import logging
from datetime import datetime

import phonenumbers
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from .models import Customer, CustomerMerge, Identity, IdentityKind, MergeSuggestion, Order

log = logging.getLogger(__name__)

PHONE_KINDS = (IdentityKind.PHONE, IdentityKind.WHATSAPP)


class InvalidIdentity(ValueError):
    pass


def normalize_phone(value: str, region: str | None = None) -> str:
    raw = (value or "").strip()
    if raw.lower().startswith(("whatsapp:", "tel:", "sms:")):
        raw = raw.split(":", 1)[1]
    if raw and raw[0].isdigit() and not raw.startswith("00") and region is None:
        raw = "+" + raw  # WhatsApp wa_id and Telegram give digits without '+'
    try:
        number = phonenumbers.parse(raw, region or getattr(settings, "PHONE_REGION", None))
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentity(f"Not a phone number: {value!r}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentity(f"Not a possible phone number: {value!r}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_identity(kind: str, value: str) -> tuple[str, str]:
    """The canonical (kind, value): lower-cased email, E.164 phone, trimmed handle."""
    if kind not in IdentityKind.values:
        raise InvalidIdentity(f"Unknown identity kind: {kind!r}")
    value = (value or "").strip()
    if not value:
        raise InvalidIdentity("Empty identity value")
    if kind == IdentityKind.EMAIL:
        value = value.lower()
        if "@" not in value or len(value) > 320:
            raise InvalidIdentity(f"Not an email address: {value!r}")
    elif kind in PHONE_KINDS:
        value = normalize_phone(value)
    elif kind in (IdentityKind.TWITTER, IdentityKind.INSTAGRAM, IdentityKind.TELEGRAM):
        value = value.lstrip("@") if not value.isdigit() else value
    return kind, value[:320]


def _lookup_q(kind: str, value: str) -> Q:
    if kind in PHONE_KINDS:
        return Q(kind__in=PHONE_KINDS, value=value)
    return Q(kind=kind, value=value)


def find_customer(identities: list[tuple[str, str]]) -> Customer | None:
    q = Q()
    for kind, value in identities:
        q |= _lookup_q(kind, value)
    if not q:
        return None
    ident = Identity.objects.filter(q).select_related("customer").order_by("created_at", "id").first()
    return ident.customer if ident else None


def customer_resolve(*, identities: list[tuple[str, str]], name: str = "", at: datetime | None = None,
                     language: str = "", lock: bool = False, savepoint: bool = True) -> tuple[Customer, bool]:
    """Return the customer owning any of these identities, creating one if none does.
    The flag: whether the customer was created here (in this transaction).

    Identities must be normalized. Safe under concurrency: two callers with the
    same new identity get the same customer (the unique constraint decides and
    the loser re-reads). Must run inside a transaction.

    savepoint=False: a new customer is created without a savepoint of its own
    (SAVEPOINT and RELEASE are two round trips); the loser of that race then
    gets IntegrityError with the caller's whole transaction lost, for callers
    that run it again with the default (conversations.services.ingest with
    savepoint=False, from channels_app.services.envelope_store_and_process).
    """
    at = at or timezone.now()
    for _attempt in range(3):
        matches = _identity_matches(identities, lock and connection.features.has_select_for_update_of)
        if matches:
            customer = matches[0].customer
            _attach_missing(customer, identities, matches, at)
            if name and not customer.name:
                customer.name = name[:200]
                Customer.objects.filter(pk=customer.pk, name="").update(name=customer.name)
            return customer, False
        customer = Customer(name=name[:200], first_seen_at=at, last_seen_at=at,
                            created_at=min(at, timezone.now()), language=language[:10])
        try:
            with transaction.atomic(savepoint=savepoint):
                _create_with_identities(customer, [Identity(kind=k, value=v, created_at=at) for k, v in identities])
            return customer, True
        except IntegrityError:
            if not savepoint:
                raise  # the transaction is lost: the caller runs it again
            continue  # somebody else created it first: read theirs
    raise RuntimeError("customer_resolve could not settle on a customer")


def _identity_matches(identities, lock: bool) -> list[Identity]:
    """The identities (with their customers) owning any of these, oldest
    first; lock: the customers' rows locked by the same query (FOR UPDATE OF).
    Compiled once per list of kinds (helpdesk.db.sql.prepared)."""
    from helpdesk.db.sql import prepared

    def build():
        slots = {f"v{i}": f"<identity value {i}>" for i in range(len(identities))}
        qs = (Identity.objects.filter(_or([(kind, slots[f"v{i}"]) for i, (kind, _v) in enumerate(identities)]))
              .select_related("customer").order_by("created_at", "id"))
        if lock:
            # lock the customer row with the same query that finds it
            qs = qs.select_for_update(of=("customer",))
        return qs, slots

    key = ("customer_resolve", tuple(kind for kind, _v in identities), lock)
    return prepared(key, build).run(**{f"v{i}": value for i, (_k, value) in enumerate(identities)})


def _create_with_identities(customer: Customer, identities: list[Identity]) -> None:
    """INSERT the customer and their identities: on PostgreSQL in one statement
    (a data-modifying CTE, one round trip less for a new customer), elsewhere
    as the ORM does. A taken identity raises IntegrityError either way."""
    if connection.vendor != "postgresql":
        customer.save(force_insert=True)
        for ident in identities:
            ident.customer = customer
        Identity.objects.bulk_create(identities)
        return
    from helpdesk.db.sql import insert_columns

    qn = connection.ops.quote_name
    pk = qn(Customer._meta.pk.column)
    cols, marks, params = insert_columns(customer)
    parts = [f"c AS (INSERT INTO {qn(Customer._meta.db_table)} ({', '.join(cols)}) VALUES ({', '.join(marks)}) "
             f"RETURNING {pk})"]
    rows = []
    for ident in identities:
        cols, marks, vals = insert_columns(ident, {Identity._meta.get_field("customer").column: f"(SELECT {pk} FROM c)"})
        rows.append(f"({', '.join(marks)})")
        params += vals
    parts.append(f"i AS (INSERT INTO {qn(Identity._meta.db_table)} ({', '.join(cols)}) VALUES {', '.join(rows)})")
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {pk} FROM c", params)
        customer.pk = cursor.fetchone()[0]
    customer._state.adding = False
    customer._state.db = connection.alias
    for ident in identities:
        ident.customer = customer


def _or(identities):
    q = Q()
    for kind, value in identities:
        q |= _lookup_q(kind, value)
    return q


def _attach_missing(customer: Customer, identities, matches, at) -> None:
    """Add the identities this message carries that nobody owns yet; suggest a
    merge (never merge silently) when another customer owns one."""
    owned = {(m.kind, m.value): m.customer_id for m in matches}
    phone_owned = {m.value: m.customer_id for m in matches if m.kind in PHONE_KINDS}
    for kind, value in identities:
        owner = owned.get((kind, value)) or (phone_owned.get(value) if kind in PHONE_KINDS else None)
        if owner is None:
            try:
                with transaction.atomic():
                    Identity.objects.create(customer=customer, kind=kind, value=value, created_at=at)
            except IntegrityError:
                pass
        elif owner != customer.pk:
            suggest_merge(customer.pk, owner, reason=f"Both use {kind} {value}")


def suggest_merge(a_id: int, b_id: int, *, reason: str) -> None:
    a_id, b_id = sorted((a_id, b_id))
    try:
        with transaction.atomic():
            MergeSuggestion.objects.get_or_create(customer_id=a_id, other_id=b_id, defaults={"reason": reason[:200]})
    except IntegrityError:
        pass


def identity_add(*, customer: Customer, kind: str, value: str, actor=None) -> Identity:
    """Link an identity to a customer. If another customer owns it, a merge is
    suggested and the existing identity is returned unchanged."""
    kind, value = normalize_identity(kind, value)
    existing = Identity.objects.filter(_lookup_q(kind, value)).first()
    if existing:
        if existing.customer_id != customer.pk:
            suggest_merge(customer.pk, existing.customer_id, reason=f"Both use {kind} {value}")
        return existing
    return Identity.objects.create(customer=customer, kind=kind, value=value)


def customer_update(*, customer: Customer, **fields) -> Customer:
    allowed = {"name", "company", "attributes", "language"}
    for key, value in fields.items():
        if key not in allowed:
            raise ValueError(f"Field {key} cannot be updated")
        setattr(customer, key, value)
    customer.save(update_fields=[*fields.keys(), "updated_at"])
    return customer


class MergeConflict(ValueError):
    pass


@transaction.atomic
def customer_merge(*, survivor: Customer, merged: Customer, actor=None, reason: str = "") -> CustomerMerge:
    """Move everything of `merged` to `survivor`, delete `merged`, keep an audit record."""
    from conversations.models import Conversation, EventKind
    from conversations.services import record_event

    if survivor.pk == merged.pk:
        raise MergeConflict("A customer cannot be merged into itself.")
    # lock both rows in a stable order
    list(Customer.objects.select_for_update().filter(pk__in=[survivor.pk, merged.pk]).order_by("pk"))
    snapshot = {
        "id": merged.pk, "name": merged.name, "company": merged.company, "attributes": merged.attributes,
        "external_id": merged.external_id,
        "identities": [[i.kind, i.value] for i in merged.identities.all()],
        "first_seen_at": merged.first_seen_at.isoformat(), "last_seen_at": merged.last_seen_at.isoformat(),
    }
    moved = {
        "identities": Identity.objects.filter(customer=merged).update(customer=survivor),
        "orders": Order.objects.filter(customer=merged).update(customer=survivor),
    }
    from metrics import customer_links  # the survivor's CLTV/retention links see the moved orders

    customer_links.refresh([survivor.pk])
    conversation_ids = list(Conversation.objects.filter(customer=merged).values_list("pk", flat=True))
    moved["conversations"] = Conversation.objects.filter(pk__in=conversation_ids).update(customer=survivor)
    try:
        from metrics.models import SurveyInvitation

        moved["survey_answers"] = SurveyInvitation.objects.filter(customer=merged).update(customer=survivor)
    except ImportError:  # pragma: no cover
        moved["survey_answers"] = 0
    # fill blanks of the survivor from the merged customer
    changed = []
    for field in ("name", "company", "language"):
        if not getattr(survivor, field) and getattr(merged, field):
            setattr(survivor, field, getattr(merged, field))
            changed.append(field)
    if merged.attributes:
        survivor.attributes = {**merged.attributes, **survivor.attributes}
        changed.append("attributes")
    if merged.first_seen_at < survivor.first_seen_at:
        survivor.first_seen_at = merged.first_seen_at
        changed.append("first_seen_at")
    if merged.last_seen_at > survivor.last_seen_at:
        survivor.last_seen_at = merged.last_seen_at
        changed.append("last_seen_at")
    if merged.last_inbound_at and (not survivor.last_inbound_at or merged.last_inbound_at > survivor.last_inbound_at):
        survivor.last_inbound_at = merged.last_inbound_at
        survivor.last_inbound_kind = merged.last_inbound_kind
        survivor.last_inbound_channel_id = merged.last_inbound_channel_id
        changed += ["last_inbound_at", "last_inbound_kind", "last_inbound_channel"]
    if not survivor.external_id and merged.external_id:
        ext = merged.external_id
        merged.external_id = None
        merged.save(update_fields=["external_id"])
        survivor.external_id = ext
        changed.append("external_id")
    if changed:
        survivor.save(update_fields=[*changed, "updated_at"])
    record = CustomerMerge.objects.create(survivor=survivor, merged_customer_id=merged.pk, snapshot=snapshot,
                                          moved=moved, actor=actor, reason=reason[:200])
    for conv in Conversation.objects.filter(pk__in=conversation_ids):
        record_event(conv, EventKind.CUSTOMERS_MERGED, actor=actor,
                     data={"survivor": survivor.pk, "merged": merged.pk, "merge": record.pk})
    MergeSuggestion.objects.filter(Q(customer=merged) | Q(other=merged)).delete()
    merged.delete()
    from conversations import realtime

    realtime.publish_customer_merged(survivor.pk, snapshot["id"])
    return record


class IdentityTaken(ValueError):
    """An identity given for a new customer already belongs to another customer."""

    def __init__(self, message: str, customer_id: int):
        super().__init__(message)
        self.customer_id = customer_id


@transaction.atomic
def customer_create(*, name: str = "", company: str = "", language: str = "", attributes: dict | None = None,
                    external_id: str | None = None, identities=(), actor=None) -> Customer:
    """Create a customer with its identities (raw kind/value pairs, normalized here).

    Raises InvalidIdentity for a bad identity and IdentityTaken when another
    customer already owns one (the caller decides: merge or update that one)."""
    normalized = [normalize_identity(kind, value) for kind, value in identities]
    for kind, value in normalized:
        owner = Identity.objects.filter(_lookup_q(kind, value)).values_list("customer_id", flat=True).first()
        if owner:
            raise IdentityTaken(f"{kind} {value} already belongs to customer {owner}.", owner)
    now = timezone.now()
    customer = Customer.objects.create(name=name[:200], company=company[:200], language=language[:10],
                                       attributes=attributes or {}, external_id=external_id or None,
                                       first_seen_at=now, last_seen_at=now)
    Identity.objects.bulk_create([Identity(customer=customer, kind=k, value=v) for k, v in dict.fromkeys(normalized)])
    return customer


@transaction.atomic
def order_upsert(*, customer: Customer, external_id: str, amount, currency: str = "USD",
                 placed_at: datetime | None = None) -> tuple[Order, bool]:
    """Create or update an order by its shop's external id (idempotent)."""
    defaults = {"customer": customer, "amount": amount, "currency": (currency or "USD").upper()[:3],
                "placed_at": placed_at or timezone.now()}
    return Order.objects.update_or_create(external_id=external_id, defaults=defaults)
