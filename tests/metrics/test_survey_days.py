"""Daily survey counts (metrics.survey_rollup): kept by recount on every write path, equal to a
rebuild, and the CSAT/NPS/CES read from them equal the figures counted from the invitations."""
from __future__ import annotations

import random
import threading
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction

from metrics import engine, survey_rollup, surveys
from metrics.kpis import ces, csat, nps
from metrics.kpis.base import Selection, SharedReads
from metrics.models import SurveyDay, SurveyInvitation
from tests.factories import ConversationFactory, CustomerFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 5)}


def _history(rng: random.Random, n: int, start: date, tz: ZoneInfo):
    agents = [UserFactory(), UserFactory(), None]
    teams = [TeamFactory(), None]
    convs = [ConversationFactory(customer=CustomerFactory()) for _ in range(12)]
    invs = []
    for i in range(n):
        kind = rng.choice(list(KINDS))
        # around midnights (DST change on 2026-03-29 and 2026-10-25 in Berlin) and across weeks
        invited = datetime.combine(start + timedelta(days=rng.randrange(70)), datetime.min.time(), tzinfo=tz) \
            + timedelta(minutes=rng.choice([0, 1, 59, 23 * 60 + 59, rng.randrange(24 * 60)]))
        inv = SurveyInvitation.objects.create(conversation=rng.choice(convs), customer=convs[0].customer, kind=kind,
                                              channel_kind=rng.choice(["email", "chat", ""]),
                                              agent=rng.choice(agents), team=rng.choice(teams), invited_at=invited)
        if rng.random() < 0.7:
            surveys.record_answer(invitation=inv, score=rng.randint(*KINDS[kind]),
                                  at=invited + timedelta(hours=rng.choice([0.01, 5, 30, 24 * 9])))
        invs.append(inv)
    return invs, agents, teams, convs


def _figures(sel: Selection) -> dict:
    out = {}
    for module in (csat, nps, ces):
        out[module.__name__] = module.compute(sel)
    return out


def _selections(start: date):
    for offset, length in ((0, 70), (3, 17), (10, 7), (20, 40), (-5, 9), (60, 30)):
        a = start + timedelta(days=offset)
        b = a + timedelta(days=length - 1)
        for group_by in (None, "channel", "agent", "team", "day", "week", "month"):
            yield Selection(a, b, group_by)
        yield Selection(a, b, None, channel="chat")
        yield Selection(a, b, "week", channel="email")


def assert_reads_equal_invitations(start: date, monkeypatch, agents, teams):
    filtered = [Selection(start, start + timedelta(days=69), "channel", agent_id=agents[0].pk),
                Selection(start, start + timedelta(days=69), "day", team_id=teams[0].pk)]
    for sel in [*_selections(start), *filtered]:
        from_days = _figures(sel)
        shared = SharedReads()
        from_days_shared = _figures(Selection(sel.start, sel.end, sel.group_by, sel.channel, sel.team_id,
                                              sel.agent_id, _shared=shared))
        with monkeypatch.context() as m:
            m.setattr(survey_rollup, "usable", lambda: False)
            raw = _figures(Selection(sel.start, sel.end, sel.group_by, sel.channel, sel.team_id, sel.agent_id))
        assert from_days == raw, sel
        assert from_days_shared == raw, sel


def assert_counts_equal_rebuild():
    incremental = survey_rollup.snapshot()
    survey_rollup.rebuild()
    assert incremental == survey_rollup.snapshot()
    return incremental


@pytest.mark.parametrize("seed", [1, 2])
def test_counts_follow_every_write_and_reads_equal_the_invitations(settings, monkeypatch, seed):
    settings.TIME_ZONE = "Europe/Berlin"
    survey_rollup.rebuild()  # as recompute_metrics after a change of TIME_ZONE: the days count in Berlin's
    tz = ZoneInfo(settings.TIME_ZONE)
    rng = random.Random(seed)
    start = date(2026, 3, 2) if seed == 1 else date(2026, 10, 5)  # both DST changes inside the history
    invs, agents, teams, convs = _history(rng, 150, start, tz)
    counts = assert_counts_equal_rebuild()
    assert counts and any(k[0] == 7 for k in counts) and any(k[6] is None for k in counts)
    assert_reads_equal_invitations(start, monkeypatch, agents, teams)

    # later writes: a changed score, an admin moving the invitation's dates and dimensions,
    # a deleted conversation (cascade), a deleted agent and team (SET_NULL by UPDATE)
    answered = [i for i in invs if SurveyInvitation.objects.filter(pk=i.pk, score__isnull=False).exists()]
    surveys.record_answer(invitation=answered[0], score=KINDS[answered[0].kind][0])
    moved = SurveyInvitation.objects.get(pk=answered[1].pk)
    moved.invited_at -= timedelta(days=8)
    moved.answered_at += timedelta(days=3)
    moved.channel_kind = "whatsapp"
    moved.save()
    assert_counts_equal_rebuild()
    gone_agent, gone_team = agents[0].pk, teams[0].pk
    convs[3].delete()
    agents[0].delete()
    teams[0].delete()
    counts = assert_counts_equal_rebuild()
    assert not any(k[4] == gone_agent or k[5] == gone_team for k in counts)
    assert_reads_equal_invitations(start, monkeypatch, [agents[1]], [TeamFactory()])


def test_saving_other_fields_recounts_nothing(django_assert_num_queries):
    conv = ConversationFactory(customer=CustomerFactory())
    inv = SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, kind="csat")
    inv.message_id = 7
    with django_assert_num_queries(1):  # the UPDATE only
        inv.save(update_fields=["message_id"])
    assert SurveyDay.objects.filter(span=1, score__isnull=True).values_list("sent", flat=True).get() == 1


def test_another_time_zone_reads_the_invitations_until_recompute(settings, monkeypatch):
    conv = ConversationFactory(customer=CustomerFactory())
    at = datetime(2026, 5, 4, 23, 30, tzinfo=ZoneInfo("UTC"))
    inv = SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, kind="csat", invited_at=at)
    surveys.record_answer(invitation=inv, score=5, at=at)
    assert survey_rollup.usable()
    settings.TIME_ZONE = "Asia/Tokyo"  # 2026-05-05 08:30 there
    assert not survey_rollup.usable()
    sel = Selection(date(2026, 5, 5), date(2026, 5, 5))
    assert csat.compute(sel)[None]["responses"] == 1  # counted from the invitations
    inv2 = SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, kind="csat", invited_at=at)
    surveys.record_answer(invitation=inv2, score=1, at=at)  # not counted in the stale days
    engine.recompute_all()
    assert survey_rollup.usable()
    assert SurveyDay.objects.filter(span=1, day=date(2026, 5, 5), score__isnull=False).count() == 2
    assert csat.compute(Selection(date(2026, 5, 5), date(2026, 5, 5)))[None]["responses"] == 2


def test_import_recounts_the_days(monkeypatch):
    from metrics import importer

    conv = ConversationFactory(customer=CustomerFactory(), external_id="c-1")
    payload = b"".join(
        f'{{"type": "survey", "external_id": "s-{i}", "conversation": "c-1", "kind": "csat", "score": {1 + i % 5}, '
        f'"invited_at": "2026-04-0{1 + i % 7}T10:00:00Z", "answered_at": "2026-04-0{1 + i % 7}T11:00:00Z"}}\n'.encode()
        for i in range(20))
    result = importer.run(payload, jsonl=True, fold="none")
    assert result.created["survey"] == 20, result.errors
    assert SurveyInvitation.objects.filter(conversation=conv).count() == 20
    counts = assert_counts_equal_rebuild()
    assert sum(v[0] for k, v in counts.items() if k[0] == 1) == 20
    assert_reads_equal_invitations(date(2026, 3, 30), monkeypatch, [UserFactory()], [TeamFactory()])


def test_concurrent_answers_of_one_week_are_counted_once_each(postgres_only):
    """Two transactions answering in the same week: the second waits for the first's week lock,
    then counts with its rows committed (without the lock both would write the week's rows)."""
    conv = ConversationFactory(customer=CustomerFactory())
    at = datetime(2026, 6, 3, 12, tzinfo=ZoneInfo("UTC"))
    a, b = (SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, kind="csat", invited_at=at)
            for _ in range(2))
    first_wrote, release, errors = threading.Event(), threading.Event(), []

    def answer(inv, hold):
        try:
            with transaction.atomic():
                surveys.record_answer(invitation=inv, score=4, at=at + timedelta(hours=1))
                if hold:
                    first_wrote.set()
                    release.wait(10)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    t1 = threading.Thread(target=answer, args=(a, True))
    t1.start()
    assert first_wrote.wait(10)
    t2 = threading.Thread(target=answer, args=(b, False))
    t2.start()
    t2.join(1.0)
    assert t2.is_alive()  # waiting for the week's lock
    release.set()
    t1.join(10)
    t2.join(10)
    assert not errors
    counts = assert_counts_equal_rebuild()
    assert counts[(1, date(2026, 6, 3), "csat", "", None, None, 4)] == (2, 0, 0)
    assert counts[(7, date(2026, 6, 1), "csat", "", None, None, None)] == (0, 2, 2)
