"""Helpers for metrics tests: play a scenario through the services at given times."""
from __future__ import annotations

from datetime import datetime, timezone as dt_tz

import pytest

from conversations import services
from conversations.inbound import InboundMessage


def T(s: str) -> datetime:
    """'2026-03-02 09:00' in UTC."""
    return datetime.fromisoformat(s).replace(tzinfo=dt_tz.utc) if "+" not in s else datetime.fromisoformat(s)


class Player:
    def __init__(self, channels, personas):
        self.ch = channels
        self.p = personas
        self.n = 0

    def inbound(self, channel, who, at, text="hi", **kw):
        self.n += 1
        kind = {"email": "email", "chat": "chat", "sms": "phone", "whatsapp": "whatsapp", "phone": "phone",
                "api": "email"}[channel.kind]
        msg = InboundMessage(channel=channel, identities=[(kind, who)], text=text, external_id=f"in-{self.n}",
                             created_at=T(at) if isinstance(at, str) else at, **kw)
        return services.ingest(msg)

    def reply(self, conversation, agent, at, automated=False, channel=None):
        conversation.refresh_from_db()
        return services.reply(conversation=conversation, author=None if automated else agent, body="answer",
                              automated=automated, at=T(at), deliver=False, channel=channel)

    def resolve(self, conversation, at, actor=None):
        return services.resolve_conversation(conversation=conversation, actor=actor, at=T(at))

    def reopen(self, conversation, at, actor=None):
        return services.reopen(conversation=conversation, actor=actor, at=T(at))


@pytest.fixture
def play(channels, personas, django_capture_on_commit_callbacks):
    return Player(channels, personas)


@pytest.fixture
def live(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (metrics flush) as in production."""

    class Ctx:
        def __enter__(self):
            self.cm = django_capture_on_commit_callbacks(execute=True)
            return self.cm.__enter__()

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    return Ctx
