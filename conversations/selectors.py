"""Reads for the agent inbox: views, keyset pagination, search, the timeline.

Nothing here writes. The list never uses OFFSET: a page is "the next N rows
after (sort key, id)" so page 1000 costs what page 1 costs, walking the
(status, -last_message_at, -id) / (-last_message_at, -id) / (status,
waiting_since) indexes on Conversation.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection
from django.db.models import F, Prefetch, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from .models import (
    Conversation,
    ConversationEvent,
    Message,
    ReadMarker,
    Status,
    Tag,
    Team,
)
from .services import conversations_visible_to

PAGE_SIZE = 25

# Must match conversations/migrations/0004_fulltext_gin.py exactly.
FTS_MESSAGE = "search_tsv"  # generated: to_tsvector('simple', coalesce(body_text, ''))
FTS_SUBJECT = "to_tsvector('simple'::regconfig, coalesce(subject, ''))"
FTS_CUSTOMER = "to_tsvector('simple'::regconfig, coalesce(name, '') || ' ' || coalesce(company, ''))"

WORKING = (Status.OPEN, Status.PENDING)


# --------------------------------------------------------------------------- views

@dataclass
class InboxView:
    key: str
    label: str
    team: Team | None = None


def inbox_views(user) -> list[InboxView]:
    views = [InboxView("mine", _("Mine")), InboxView("unassigned", _("Unassigned"))]
    for team in user.teams.all():
        views.append(InboxView(f"team-{team.pk}", team.name, team))
    if user.sees_all:
        views.append(InboxView("all", _("All")))
    views += [InboxView("snoozed", _("Snoozed")), InboxView("resolved", _("Resolved"))]
    return views


def view_queryset(user, view_key: str, *, explicit_status: bool = False) -> QuerySet | None:
    """The visible conversations of one named view, or None for an unknown/forbidden view.

    With explicit_status the view does not impose its status (the filter does)."""
    qs = conversations_visible_to(user)
    status = WORKING
    if view_key == "mine":
        qs = qs.filter(assignee=user)
    elif view_key == "unassigned":
        qs = qs.filter(assignee__isnull=True)
    elif view_key.startswith("team-"):
        team_id = view_key[5:]
        if not team_id.isdigit():
            return None
        if not user.sees_all and not user.teams.filter(pk=int(team_id)).exists():
            return None
        qs = qs.filter(team_id=int(team_id))
    elif view_key == "all":
        if not user.sees_all:
            return None
    elif view_key == "snoozed":
        status = (Status.SNOOZED,)
    elif view_key == "resolved":
        status = (Status.RESOLVED,)
    elif view_key == "search":
        status = None
    else:
        return None
    if status and not explicit_status:
        qs = qs.filter(status=status[0]) if len(status) == 1 else qs.filter(status__in=status)
    return qs


# --------------------------------------------------------------------------- search

SEARCH_CAP = 2000  # newest matches taken from each source; a search is for finding, not for counting


def identity_customer_ids(q: str) -> list[int]:
    """Customers owning the identity typed in the search box (an email address or phone number)."""
    from django.db.models import Case, CharField, Value, When

    from customers.models import Identity
    from customers.services import InvalidIdentity, normalize_identity

    kinds = ["email"] if "@" in q else (["phone"] if sum(ch.isdigit() for ch in q) >= 6 else [])
    ids: list[int] = []
    for kind in kinds:
        try:
            kind, value = normalize_identity(kind, q)
        except InvalidIdentity:
            continue
        # the same expression as customers' unique index, so the lookup uses it
        key = Case(When(kind__in=["phone", "whatsapp"], then=Value("tel")), default=F("kind"),
                   output_field=CharField())
        key_value = "tel" if kind in ("phone", "whatsapp") else kind
        ids += list(Identity.objects.annotate(_key=key).filter(_key=key_value, value=value)
                    .values_list("customer_id", flat=True))
    return ids


TSQ = "plainto_tsquery('simple'::regconfig, %s)"
# message id windows searched newest first; later windows only when earlier ones found too little
MESSAGE_WINDOWS = (50_000, 500_000, 5_000_000, None)
CONVERSATION_WINDOWS = (20_000, 200_000, None)
SEARCH_WANT = 200  # conversations: enough for eight pages of results


def _pg_search_ids(q: str, identity_customers: list[int]) -> list[int]:
    """Conversation ids matching q, newest first per source (PostgreSQL).

    Each match set is fenced with OFFSET 0: without it the planner may walk the
    primary key backwards hoping to meet matches early (seconds on a rare
    word). Messages are searched in id windows, newest first, so a very common
    word stops after the newest window instead of rechecking 600,000 rows; a
    rare word costs one GIN lookup per window. Parallel workers and JIT cost
    more than they save on these short queries, so they are off for it."""
    from django.db import transaction

    cap = SEARCH_CAP
    found: dict[int, None] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute("SET LOCAL jit = off")
        # customers: by name/company (few rows) or by the exact identity typed
        cursor.execute(f"""
            (SELECT c.id FROM conversations_conversation c WHERE c.customer_id IN (
                SELECT id FROM (SELECT id FROM customers_customer WHERE {FTS_CUSTOMER} @@ {TSQ} OFFSET 0) cu
                ORDER BY id DESC LIMIT {cap})
             ORDER BY c.id DESC LIMIT {cap})
            UNION
            (SELECT id FROM conversations_conversation WHERE customer_id = ANY(%s) ORDER BY id DESC LIMIT {cap})""",
                       [q, identity_customers or [0]])
        for (pk,) in cursor.fetchall():
            found[pk] = None
        # subjects and message bodies: newest id windows first
        # The newest message window is read through the primary key, testing the
        # stored tsvector row by row (`|| ''` hides it from the GIN index): for a
        # common word, building the GIN bitmap of 600,000 rows costs ~200 ms
        # while 50,000 cheap row tests cost ~15 ms. Older windows use the index.
        sources = [
            ("conversations_conversation", "id", FTS_SUBJECT, CONVERSATION_WINDOWS, False),
            ("conversations_message", "conversation_id", FTS_MESSAGE, MESSAGE_WINDOWS, True),
        ]
        for table, column, vector, windows, scan_first in sources:
            cursor.execute(f"SELECT max(id) FROM {table}")
            top = cursor.fetchone()[0] or 0
            upper = top
            for n, span in enumerate(windows):
                lower = 0 if span is None else max(0, top - span)
                test = f"({vector} || ''::tsvector)" if (scan_first and n == 0) else vector
                cursor.execute(f"""
                    SELECT hit FROM (SELECT id AS k, {column} AS hit FROM {table}
                        WHERE {test} @@ {TSQ} AND id > %s AND id <= %s OFFSET 0) m
                    ORDER BY k DESC LIMIT {cap}""", [q, lower, upper])
                for (pk,) in cursor.fetchall():
                    found[pk] = None
                upper = lower
                if lower == 0 or len(found) >= SEARCH_WANT:
                    break
    return list(found)


def search_filter(qs: QuerySet, q: str) -> QuerySet:
    """Full-text search over message bodies, subjects and customers.

    PostgreSQL: GIN expression indexes with the 'simple' configuration (no
    stemming: the helpdesk is multilingual), plus exact identity match (an
    email address or phone number). The matching conversation ids are
    collected first (newest first, see _pg_search_ids), so the list query
    then walks a short id list instead of filtering the whole table.
    SQLite: icontains on the same fields."""
    q = (q or "").strip()[:200]
    if not q:
        return qs
    identity_customers = identity_customer_ids(q)
    if connection.vendor == "postgresql":
        ids = _pg_search_ids(q, identity_customers)
        return qs.filter(pk__in=ids) if ids else qs.none()
    words = q.split()
    cond = Q()
    for word in words[:8]:
        cond &= (Q(subject__icontains=word) | Q(customer__name__icontains=word)
                 | Q(customer__company__icontains=word)
                 | Q(pk__in=Message.objects.filter(body_text__icontains=word).values("conversation_id")))
    return qs.filter(cond | Q(customer_id__in=identity_customers))


# --------------------------------------------------------------------------- keyset pages

SORTS = {
    "activity": _("Last activity"),
    "waiting": _("Longest waiting"),
}


def _encode(values: list) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> list | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != 2 or not isinstance(values[1], int):
            return None
        if values[0] is not None:
            dt = parse_datetime(values[0])
            if dt is None:
                return None
            values[0] = dt
        return values
    except (ValueError, TypeError):
        return None


@dataclass
class Page:
    rows: list
    next_cursor: str | None
    sort: str
    extra: dict = field(default_factory=dict)


def _db_value(value: datetime):
    """A datetime as the backend stores it (SQLite: naive UTC text), for raw row comparisons."""
    return connection.ops.adapt_datetimefield_value(value)


def _row_lt(column: str) -> str:
    return f'("conversations_conversation"."{column}", "conversations_conversation"."id") < (%s, %s)'


def _row_gt(column: str) -> str:
    return f'("conversations_conversation"."{column}", "conversations_conversation"."id") > (%s, %s)'


def paginate(qs: QuerySet, *, sort: str = "activity", cursor: str | None = None, size: int = PAGE_SIZE) -> Page:
    """One keyset page. sort=activity: newest activity first (NULLs first, like the
    DESC index); sort=waiting: customers waiting longest first (waiting ones only)."""
    size = max(1, min(size, 100))
    after = _decode(cursor) if cursor else None
    if sort == "waiting":
        qs = qs.filter(waiting_since__isnull=False)
        if after and after[0] is not None:
            qs = qs.extra(where=[_row_gt("waiting_since")], params=[_db_value(after[0]), after[1]])
        qs = qs.order_by("waiting_since", "id")
        key = "waiting_since"
    else:
        sort = "activity"
        if after:
            ts, pk = after
            if ts is None:
                qs = qs.filter(Q(last_message_at__isnull=True, pk__lt=pk) | Q(last_message_at__isnull=False))
            else:
                qs = qs.extra(where=[_row_lt("last_message_at")], params=[_db_value(ts), pk])
        qs = qs.order_by(F("last_message_at").desc(nulls_first=True), "-id")
        key = "last_message_at"
    rows = list(qs[: size + 1])
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        value = getattr(last, key)
        next_cursor = _encode([value.isoformat() if value else None, last.pk])
    return Page(rows, next_cursor, sort)


def list_queryset(qs: QuerySet) -> QuerySet:
    """What a list row shows: customer, assignee, team, tags (one prefetch query)."""
    return qs.select_related("customer", "assignee", "team").prefetch_related(
        Prefetch("tags", queryset=Tag.objects.order_by("name")))


def mark_unread(rows: list, user) -> None:
    """Set row.unread (one query for the page): the agent has not looked since the last message."""
    if not rows:
        return
    markers = dict(ReadMarker.objects.filter(user=user, conversation_id__in=[r.pk for r in rows])
                   .values_list("conversation_id", "read_at"))
    for row in rows:
        seen = markers.get(row.pk)
        row.unread = bool(row.last_message_at and (seen is None or seen < row.last_message_at))


def sla_due(rows: list) -> None:
    """SLA timers from the metrics engine (metrics.sla.due_times), if installed.

    Sets row.sla_due (the nearest due time: first response, else resolution),
    row.sla_breached and row.sla_warning; two queries per page (policies and
    business hours), none per row. Without the engine rows only show waiting time."""
    for row in rows:
        row.sla_due, row.sla_breached, row.sla_warning = None, False, False
    if not rows:
        return
    try:
        from metrics import sla
        from metrics.businesshours import schedules as load_schedules
        from metrics.models import SlaPolicy
    except ImportError:
        return
    try:
        policies = {p.priority: p for p in SlaPolicy.objects.filter(active=True)}
        if not policies:
            return
        schedules = load_schedules()
        now = timezone.now()
        for row in rows:
            timers = sla.due_times(row, now=now, policies=policies, schedules=schedules)
            row.sla_due = timers.get("first_response_due") or timers.get("resolution_due")
            row.sla_breached = bool(timers.get("first_response_breached") or timers.get("resolution_breached"))
            row.sla_warning = bool(timers.get("warning"))
    except Exception:  # a broken SLA engine must not break the inbox
        import logging

        logging.getLogger(__name__).exception("SLA timers failed")


# --------------------------------------------------------------------------- conversation

def visible_conversation(user, pk: int) -> Conversation | None:
    return (conversations_visible_to(user).select_related("customer", "assignee", "team", "origin_channel")
            .prefetch_related("tags").filter(pk=pk).first())


@dataclass
class TimelineItem:
    kind: str  # "message" or "event"
    at: datetime
    obj: object


# event kinds that are already visible as a message in the timeline
_MESSAGE_EVENTS = {"message_in", "message_out", "note"}


def timeline(conversation: Conversation, *, limit: int = 500) -> tuple[list[TimelineItem], bool]:
    """Messages (all channels, with attachments) and system events, oldest first.

    Returns (items, truncated): only the latest `limit` messages are loaded."""
    msgs = list(Message.objects.filter(conversation=conversation)
                .select_related("author_user", "channel").prefetch_related("attachments")
                .order_by("-created_at", "-id")[: limit + 1])
    truncated = len(msgs) > limit
    msgs = list(reversed(msgs[:limit]))
    events = ConversationEvent.objects.filter(conversation=conversation).exclude(kind__in=_MESSAGE_EVENTS)
    if truncated and msgs:
        events = events.filter(at__gte=msgs[0].created_at)
    events = list(events.select_related("actor_user").order_by("at", "id")[:limit])
    items = [TimelineItem("message", m.created_at, m) for m in msgs]
    items += [TimelineItem("event", e.at, e) for e in events]
    items.sort(key=lambda i: (i.at, 0 if i.kind == "event" else 1))
    return items, truncated


def other_conversations(conversation: Conversation, user, limit: int = 20) -> list[Conversation]:
    return list(conversations_visible_to(user).filter(customer_id=conversation.customer_id)
                .exclude(pk=conversation.pk).order_by(F("last_message_at").desc(nulls_last=True))[:limit])


def now() -> datetime:
    return timezone.now()
