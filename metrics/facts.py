"""Fold one conversation's events into a ConversationFact (KPI.md, "Per-conversation figures").

`build_fact` is a pure function of the event log (plus the customer's other
conversations for FCR and repeat contact, and the current time for the FCR
window), so the incremental path and a full recompute give the same result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from conversations.models import AuthorType, EventKind

from .businesshours import _account_tz, business_seconds


@dataclass(slots=True)
class Ev:
    """The part of a ConversationEvent the engine reads (so the importer and the
    bulk recompute can feed rows from a raw query)."""

    id: int
    kind: str
    at: datetime
    actor_type: str
    actor_user_id: int | None
    data: dict
    msg_kind: str = ""  # channel kind of the message, if any


@dataclass
class ConvInfo:
    id: int
    customer_id: int | None
    team_id: int | None
    priority: str = "normal"


@dataclass
class Base:
    """Per-conversation figures that depend on this conversation's events only."""

    conversation_id: int
    customer_id: int | None
    origin_kind: str = ""
    started_at: datetime | None = None
    outbound_first: bool = False
    initial_team_id: int | None = None
    first_inbound_at: datetime | None = None
    frt_at: datetime | None = None
    frt_seconds: float | None = None
    frt_bh_seconds: float | None = None
    frt_kind: str = ""
    frt_agent_id: int | None = None
    frt_team_id: int | None = None
    awaiting_since: datetime | None = None
    resolved_at: datetime | None = None
    resolution_seconds: float | None = None
    resolution_bh_seconds: float | None = None
    resolution_agent_id: int | None = None
    resolution_team_id: int | None = None
    reopen_count: int = 0
    public_replies: int = 0
    contacts: int = 0
    switches: int = 0
    reopens: list = field(default_factory=list)  # (at, agent, team)
    responses: list = field(default_factory=list)  # (at, seconds, kind, agent, team)
    sla_frt_met: bool | None = None
    sla_resolution_met: bool | None = None


def _is_public_reply(ev: Ev) -> bool:
    return (ev.kind == EventKind.MESSAGE_OUT and ev.actor_type == AuthorType.AGENT
            and not ev.data.get("automated"))


def _is_inbound(ev: Ev) -> bool:
    # auto-submitted inbound mail (out-of-office...) is not the customer reaching out
    return ev.kind == EventKind.MESSAGE_IN and not ev.data.get("automated")


def _kind_of(ev: Ev) -> str:
    return ev.data.get("channel") or ev.msg_kind or ""


def build_base(conv: ConvInfo, events: list[Ev], schedules: dict, sla_policies: dict) -> Base:
    events = sorted(events, key=lambda e: (e.at, e.id))
    base = Base(conversation_id=conv.id, customer_id=conv.customer_id)

    # team and assignee over time: the first change tells what it was before
    team = conv.team_id
    assignee = None
    for ev in events:
        if ev.kind == EventKind.TEAM_CHANGED:
            team = ev.data.get("from")
            break
    else:
        team = conv.team_id
    for ev in events:
        if ev.kind == EventKind.ASSIGNED:
            assignee = ev.data.get("from")
            break
    base.initial_team_id = team

    # final resolution: the last status event is a resolution
    final_resolution = None
    for ev in events:
        if ev.kind == EventKind.RESOLVED:
            final_resolution = ev
        elif ev.kind == EventKind.REOPENED:
            final_resolution = None

    prev_visible_at = None
    prev_inbound_kind = None
    turn_start: Ev | None = None
    first_message: Ev | None = None
    for ev in events:
        kind = ev.kind
        if kind == EventKind.TEAM_CHANGED:
            team = ev.data.get("to")
            continue
        if kind == EventKind.ASSIGNED:
            assignee = ev.data.get("assignee")
            continue
        if kind == EventKind.REOPENED:
            base.reopen_count += 1
            base.reopens.append((ev.at, assignee, team))
            continue
        if kind == EventKind.RESOLVED and ev is final_resolution:
            base.resolved_at = ev.at
            base.resolution_agent_id = assignee
            base.resolution_team_id = team
            continue
        if kind not in (EventKind.MESSAGE_IN, EventKind.MESSAGE_OUT):
            continue
        before_final = final_resolution is None or ev.at <= final_resolution.at
        if first_message is None:
            first_message = ev
            base.started_at = ev.at
            base.origin_kind = _kind_of(ev)
            base.outbound_first = kind == EventKind.MESSAGE_OUT
        if _is_inbound(ev):
            ch = _kind_of(ev)
            if base.first_inbound_at is None:
                base.first_inbound_at = ev.at
                new_contact = True
            else:
                new_contact = (prev_visible_at is None
                               or (ev.at - prev_visible_at).total_seconds() > settings.CONTACT_GAP
                               or ch != prev_inbound_kind)
            if before_final:
                if new_contact:
                    base.contacts += 1
                if prev_inbound_kind is not None and ch != prev_inbound_kind:
                    base.switches += 1
            prev_inbound_kind = ch
            if turn_start is None:
                turn_start = ev
        elif kind == EventKind.MESSAGE_OUT:
            if _is_public_reply(ev):
                if before_final:
                    base.public_replies += 1
                agent = ev.actor_user_id
                if base.frt_at is None and base.first_inbound_at is not None and not base.outbound_first:
                    base.frt_at = ev.at
                    base.frt_seconds = (ev.at - base.first_inbound_at).total_seconds()
                    base.frt_bh_seconds = business_seconds(base.first_inbound_at, ev.at, schedules.get(team))
                    base.frt_kind = base.origin_kind
                    base.frt_agent_id = agent
                    base.frt_team_id = team
                if turn_start is not None:
                    base.responses.append((ev.at, (ev.at - turn_start.at).total_seconds(), _kind_of(turn_start),
                                           agent, team))
                    turn_start = None
        prev_visible_at = ev.at
    if turn_start is not None:
        base.awaiting_since = turn_start.at
    if base.first_inbound_at is not None and base.frt_at is None and not base.outbound_first:
        base.frt_kind = base.origin_kind
    if base.resolved_at is not None and base.started_at is not None:
        base.resolution_seconds = max(0.0, (base.resolved_at - base.started_at).total_seconds())
        base.resolution_bh_seconds = business_seconds(base.started_at, base.resolved_at,
                                                      schedules.get(base.resolution_team_id))
        policy = sla_policies.get(conv.priority)
        if policy is not None:
            sched = schedules.get(base.resolution_team_id) if policy.business_hours else None
            if policy.first_response_seconds is None or base.outbound_first or base.first_inbound_at is None:
                base.sla_frt_met = True
            elif base.frt_at is None:
                base.sla_frt_met = False
            else:
                spent = business_seconds(base.first_inbound_at, base.frt_at, sched)
                base.sla_frt_met = spent <= policy.first_response_seconds
            if policy.resolution_seconds is None:
                base.sla_resolution_met = True
            else:
                spent = business_seconds(base.started_at, base.resolved_at, sched)
                base.sla_resolution_met = spent <= policy.resolution_seconds
    return base


def fcr_verdict(base, other_starts: list[datetime], now: datetime) -> tuple[bool | None, bool, bool | None, datetime | None]:
    """(fcr, fcr_final, repeat_contact, window_end) for a resolved conversation.

    `other_starts`: start times of the same customer's other customer-started conversations.
    """
    if base.resolved_at is None:
        return None, False, None, None
    window = timedelta(seconds=settings.FCR_WINDOW)
    end = base.resolved_at + window
    repeat = any(base.resolved_at < s <= end for s in other_starts)
    if base.contacts != 1 or base.reopen_count:
        return False, True, repeat, end
    if repeat:
        return False, True, True, end
    if now < end:
        return True, False, False, end
    return True, True, False, end


def ms(seconds: float | None) -> int:
    return int(round((seconds or 0) * 1000))


def contributions(fact) -> dict:
    """What one fact adds to DailyRollup: {"day|channel|agent|team": {column: value}}."""
    out: dict[str, dict[str, int]] = {}
    tz = _account_tz()

    def add(at, channel, agent, team, **cols):
        key = f"{at.astimezone(tz).date().isoformat()}|{channel or ''}|{agent or 0}|{team or 0}"
        row = out.get(key)
        if row is None:
            row = out[key] = {}
        for col, val in cols.items():
            if val:
                row[col] = row.get(col, 0) + int(val)

    if fact.started_at is not None:
        add(fact.started_at, fact.origin_kind, None, fact.initial_team_id, created=1)
    for at, agent, team in fact.reopens:
        add(at, fact.origin_kind, agent, team, reopened=1)
    if fact.frt_at is not None:
        add(fact.frt_at, fact.frt_kind, fact.frt_agent_id, fact.frt_team_id, frt_count=1,
            frt_sum_ms=ms(fact.frt_seconds), frt_bh_sum_ms=ms(fact.frt_bh_seconds))
    for at, seconds, kind, agent, team in fact.responses:  # the most frequent: add() inlined
        key = f"{at.astimezone(tz).date().isoformat()}|{kind or ''}|{agent or 0}|{team or 0}"
        row = out.get(key)
        if row is None:
            row = out[key] = {}
        row["rt_count"] = row.get("rt_count", 0) + 1
        spent = ms(seconds)
        if spent:
            row["rt_sum_ms"] = row.get("rt_sum_ms", 0) + spent
    if fact.resolved_at is not None:
        cols = dict(resolved=1, res_sum_ms=ms(fact.resolution_seconds), res_bh_sum_ms=ms(fact.resolution_bh_seconds),
                    contacts_sum=fact.contacts, switches_sum=fact.switches,
                    one_touch=1 if fact.one_touch else 0, repeat_yes=1 if fact.repeat_contact else 0)
        if fact.fcr is not None:
            if fact.fcr_final:
                cols.update(fcr_final_count=1, fcr_final_yes=1 if fact.fcr else 0)
            else:
                cols.update(fcr_prov_count=1, fcr_prov_yes=1 if fact.fcr else 0)
        if fact.sla_met is not None:
            cols.update(sla_count=1, sla_met=1 if fact.sla_met else 0)
        add(fact.resolved_at, fact.origin_kind, fact.resolution_agent_id, fact.resolution_team_id, **cols)
    return {k: v for k, v in out.items() if v}


def now() -> datetime:
    return timezone.now()
