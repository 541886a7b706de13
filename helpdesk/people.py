"""Writes on teams and agents for the API (the admin screens use forms on the same fields)."""
from __future__ import annotations

from django.db import transaction

from conversations.models import Team

AGENT_FIELDS = {"display_name", "first_name", "last_name", "email", "role", "access_all", "capacity",
                "availability", "is_active"}


@transaction.atomic
def team_save(*, team: Team | None = None, name: str | None = None, assignment_mode: str | None = None,
              members=None) -> Team:
    team = team or Team()
    if name is not None:
        team.name = name
    if assignment_mode is not None:
        team.assignment_mode = assignment_mode
    team.save()
    if members is not None:
        team.members.set(members)
    return team


def team_delete(*, team: Team) -> None:
    team.delete()  # conversations keep going, without a team (SET_NULL)


@transaction.atomic
def agent_update(*, agent, teams=None, **fields):
    unknown = set(fields) - AGENT_FIELDS
    if unknown:
        raise ValueError(f"Fields {sorted(unknown)} cannot be updated")
    for key, value in fields.items():
        setattr(agent, key, value)
    if fields:
        agent.save(update_fields=list(fields))
    if teams is not None:
        agent.teams.set(teams)
    return agent
