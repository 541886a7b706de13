"""Visitor messages into the core: stored as an envelope and, in the same
transaction, parsed by the adapter and ingested (channels_app.services); a
message that fails is kept as a failed envelope, so nothing is lost."""
from __future__ import annotations

import json

from django.db import transaction

from channels_app.services import envelope_store_and_process
from customers.models import Identity
from customers.services import InvalidIdentity, customer_resolve, identity_add, normalize_identity

from .i18n import remember_language


def ingest_visitor_message(channel, body: dict, *, headers: dict | None = None, remote_addr: str | None = None,
                           source: str = "widget"):
    """Store and ingest one visitor message. Returns the stored Message.
    Raises ValueError (ParseError, InvalidInbound) for a message we refuse."""
    _envelope, result = envelope_store_and_process(channel=channel, kind="chat", body=json.dumps(body).encode(),
                                                   headers=headers or {}, source=source, remote_addr=remote_addr)
    return result.messages[0].meta["_result"].message


def visitor_email(channel, visitor_id: str, email: str, name: str = "", language: str = "") -> bool:
    """The visitor gave an email address (pre-chat or offline form): link it to
    the visitor's customer through the core, which joins (or suggests merging
    with) the customer who already owns that address."""
    try:
        kind, value = normalize_identity("email", email)
    except InvalidIdentity:
        return False
    with transaction.atomic():
        ident = Identity.objects.filter(kind="chat", value=visitor_id).select_related("customer").first()
        if ident is None:
            # no message yet: one customer for both identities (the existing owner of the email, if any)
            customer, _new = customer_resolve(identities=[("chat", visitor_id), (kind, value)], name=name,
                                              language=language)
            remember_language(customer, language)
            return True
        customer = ident.customer
        identity_add(customer=customer, kind=kind, value=value)
        remember_language(customer, language)
        if name and not customer.name:
            from customers.services import customer_update

            customer_update(customer=customer, name=name)
    return True
