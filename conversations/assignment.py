"""Automatic assignment per team: round-robin or least-loaded, respecting
availability and each agent's capacity."""
from __future__ import annotations

from django.db import transaction
from django.db.models import Count, Q

from helpdesk.models import Availability, User

from .models import ACTIVE_STATUSES, AssignmentMode, Conversation, Team


def candidates(team: Team) -> list[User]:
    agents = (team.members.filter(is_active=True, availability=Availability.ONLINE)
              .annotate(load=Count("assigned_conversations",
                                   filter=Q(assigned_conversations__status__in=ACTIVE_STATUSES)))
              .order_by("pk"))
    return [a for a in agents if a.load < a.capacity]


def pick_agent(team: Team) -> User | None:
    agents = candidates(team)
    if not agents:
        return None
    if team.assignment_mode == AssignmentMode.LEAST_LOADED:
        return min(agents, key=lambda a: (a.load, a.pk))
    # round robin: the next agent after the last one assigned
    last = team.last_assigned_id or 0
    after = [a for a in agents if a.pk > last]
    return (after or agents)[0]


def auto_assign(conversation: Conversation) -> User | None:
    from .services import assign

    if conversation.assignee_id or not conversation.team_id:
        return None
    with transaction.atomic():
        team = Team.objects.select_for_update().get(pk=conversation.team_id)
        if team.assignment_mode == AssignmentMode.MANUAL:
            return None
        agent = pick_agent(team)
        if agent is None:
            return None
        assign(conversation=conversation, agent=agent, auto=True)
        team.last_assigned = agent
        team.save(update_fields=["last_assigned"])
    return agent


def auto_assign_hook(message, conversation_created: bool) -> None:
    conversation = message.conversation
    if conversation.assignee_id is None and conversation.status != "resolved":
        auto_assign(conversation)


def _auto_assign_wanted(message, conversation_created: bool) -> bool:
    conversation = message.conversation
    if conversation.assignee_id is not None or conversation.team_id is None or conversation.status == "resolved":
        return False
    # the team read with the conversation in the ingest transaction (services._thread):
    # a manual team's task would do nothing (auto_assign reads the mode again)
    if not conversation_created and Conversation.team.is_cached(conversation):
        return conversation.team.assignment_mode != AssignmentMode.MANUAL
    return True


auto_assign_hook.wants = _auto_assign_wanted
