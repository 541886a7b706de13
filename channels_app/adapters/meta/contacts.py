"""Contact details a customer writes in a message (an email address, a phone
number) are linked to that customer, never merged silently: when another
customer already owns the detail, a merge is suggested for an agent to confirm
(customers.services.identity_add does exactly that)."""
from __future__ import annotations

import logging
import re

import phonenumbers
from django.conf import settings
from django.utils.translation import gettext as _

from customers.services import InvalidIdentity, identity_add

log = logging.getLogger(__name__)

# channel kinds whose messages are scanned
KINDS = {"whatsapp", "messenger", "instagram", "telegram", "twitter"}

EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")


def find_contact_details(text: str) -> list[tuple[str, str]]:
    """(kind, value) pairs for the email addresses and phone numbers in a text."""
    found: list[tuple[str, str]] = []
    for match in EMAIL_RE.finditer(text or ""):
        pair = ("email", match.group(0).lower())
        if pair not in found:
            found.append(pair)
    region = getattr(settings, "PHONE_REGION", None) or None
    try:
        matcher = phonenumbers.PhoneNumberMatcher(text or "", region)
        for match in matcher:
            if not phonenumbers.is_possible_number(match.number):
                continue
            pair = ("phone", phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164))
            if pair not in found:
                found.append(pair)
    except Exception:  # phonenumbers is defensive, but never let a text break ingest hooks
        log.debug("phone matching failed", exc_info=True)
    return found


def link_contact_details(message) -> list[str]:
    """Link what the customer wrote to the customer; returns the notes added."""
    customer = message.conversation.customer
    notes = []
    for kind, value in find_contact_details(message.body_text):
        try:
            ident = identity_add(customer=customer, kind=kind, value=value)
        except InvalidIdentity:
            continue
        if ident.customer_id == customer.pk:
            notes.append(_("The customer wrote %(kind)s %(value)s; it is linked to this customer.")
                         % {"kind": kind, "value": value})
        else:
            notes.append(_("The customer wrote %(kind)s %(value)s, which belongs to customer #%(other)s: "
                           "a merge is suggested for an agent to confirm.")
                         % {"kind": kind, "value": value, "other": ident.customer_id})
    return notes


def contact_details_hook(message, conversation_created: bool) -> None:
    """conversations.automation AFTER_INGEST hook for the messaging channels."""
    if message.direction != "inbound" or message.automated or not message.body_text:
        return
    if message.channel_kind not in KINDS:
        return
    notes = link_contact_details(message)
    if notes:
        from conversations.models import Message

        meta = dict(message.meta or {})
        meta["notes"] = [*meta.get("notes", []), *notes]
        Message.objects.filter(pk=message.pk).update(meta=meta)


def _contact_details_wanted(message, conversation_created: bool) -> bool:
    return (message.direction == "inbound" and not message.automated and message.channel_kind in KINDS
            and bool(find_contact_details(message.body_text or "")))


contact_details_hook.wants = _contact_details_wanted
