"""Survey rules (KPI.md): once per conversation, cooldown per customer, answers, response rate."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from conversations import services
from conversations.models import ConversationEvent, Message
from metrics import report
from metrics.kpis.base import Selection
from metrics.models import SurveyInvitation

pytestmark = pytest.mark.django_db(transaction=True)


def resolve_now(play, channel, who, personas):
    now = timezone.now().replace(microsecond=0)
    conv = play.inbound(channel, who, (now - timedelta(minutes=10)).isoformat()).message.conversation
    conv.refresh_from_db()
    services.reply(conversation=conv, author=personas.ana, body="done", at=now - timedelta(minutes=5), deliver=False)
    services.resolve_conversation(conversation=conv, actor=personas.ana)
    return conv


def test_invitation_sent_once_per_conversation_and_cooldown(play, channels, personas):
    conv = resolve_now(play, channels.email, "kim@x.org", personas)
    inv = SurveyInvitation.objects.get(conversation=conv)
    assert inv.kind == "csat" and inv.channel_kind == "email" and inv.agent == personas.ana
    msg = Message.objects.get(pk=inv.message_id)
    assert msg.automated and msg.meta["survey"]["token"] == inv.token
    assert f"/survey/{inv.token}/?score=5" in msg.body_text and f"/survey/{inv.token}/?score=1" in msg.body_html
    # reopen + resolve again: still one invitation for this conversation
    services.reopen(conversation=conv, actor=personas.ana)
    services.resolve_conversation(conversation=conv, actor=personas.ana)
    assert SurveyInvitation.objects.filter(conversation=conv).count() == 1
    # another conversation of the same customer within the cooldown: no invitation
    conv2 = play.inbound(channels.email, "kim@x.org", timezone.now().isoformat(), subject="new",
                         new_conversation=True).message.conversation
    services.resolve_conversation(conversation=conv2, actor=personas.ana)
    assert not SurveyInvitation.objects.filter(conversation=conv2).exists()


def test_channel_setting_kind_and_off(play, channels, personas):
    channels.sms.settings = {"survey": "nps"}
    channels.sms.save()
    conv = resolve_now(play, channels.sms, "+15551239999", personas)
    inv = SurveyInvitation.objects.get(conversation=conv)
    assert inv.kind == "nps"
    assert Message.objects.get(pk=inv.message_id).body_text.endswith(f"/survey/{inv.token}/")  # short link
    channels.chat.settings = {"survey": "off"}
    channels.chat.save()
    conv = resolve_now(play, channels.chat, "visitor-7", personas)
    assert not SurveyInvitation.objects.filter(conversation=conv).exists()


def test_survey_page_records_answer_and_comment(play, channels, personas):
    conv = resolve_now(play, channels.chat, "visitor-1", personas)
    inv = SurveyInvitation.objects.get(conversation=conv)
    client = Client(enforce_csrf_checks=True)
    # the link's GET (also what a mail scanner or a link preview does) records nothing
    r = client.get(f"/survey/{inv.token}/?score=4")
    assert r.status_code == 200 and b"Thank you" not in r.content
    assert b'id="survey-confirm"' in r.content and b'name="score" value="4"' in r.content
    inv.refresh_from_db()
    assert inv.score is None and inv.answered_at is None
    assert not ConversationEvent.objects.filter(conversation=conv, kind="survey_answered").exists()
    token = r.cookies["csrftoken"].value
    # the page confirms it with a POST (by script in a browser, or the visible button)
    r = client.post(f"/survey/{inv.token}/", {"score": "4", "csrfmiddlewaretoken": token})
    assert r.status_code == 200 and b"Thank you" in r.content and b'id="survey-confirm"' not in r.content
    inv.refresh_from_db()
    assert inv.score == 4 and inv.answered_at is not None
    assert ConversationEvent.objects.filter(conversation=conv, kind="survey_answered").count() == 1
    r = client.post(f"/survey/{inv.token}/", {"comment": "Great", "csrfmiddlewaretoken": token})
    inv.refresh_from_db()
    assert inv.comment == "Great" and inv.score == 4
    r = client.get(f"/survey/{inv.token}/?score=9")
    assert r.status_code == 200 and b'id="survey-confirm"' not in r.content and b"between 1 and 5" in r.content
    r = client.post(f"/survey/{inv.token}/", {"score": "9", "csrfmiddlewaretoken": token})
    assert r.status_code == 200 and b"between 1 and 5" in r.content
    inv.refresh_from_db()
    assert inv.score == 4  # out of range for CSAT: rejected
    # without the CSRF token the POST is refused
    assert Client(enforce_csrf_checks=True).post(f"/survey/{inv.token}/", {"score": "2"}).status_code == 403
    assert client.get("/survey/nope/").status_code == 404
    day = timezone.localdate()
    m = report.build(Selection(day, day))[0]
    assert m["csat"]["percent"] == 100.0 and m["csat"]["mean"] == 4.0 and m["csat"]["response_rate"] == 1.0


def test_survey_page_in_customer_language(play, channels, personas):
    conv = resolve_now(play, channels.chat, "visitor-2", personas)
    conv.customer.language = "de"
    conv.customer.save()
    inv = SurveyInvitation.objects.get(conversation=conv)
    inv.language = ""
    inv.save()
    r = Client().get(f"/survey/{inv.token}/?score=4")
    page = r.content.decode()
    assert r.status_code == 200 and 'lang="de"' in page
    assert "Wie zufrieden sind Sie" in page and "Antwort senden" in page and "Sehr unzufrieden" in page
    r = Client().post(f"/survey/{inv.token}/", {"score": "9"})
    assert "Die Bewertung muss zwischen 1 und 5 liegen." in r.content.decode()


@pytest.mark.parametrize("language, question, label", [
    ("es", "¿Qué tan satisfecho está con la ayuda que recibió?", "Muy satisfecho"),
    ("fr", "Dans quelle mesure êtes-vous satisfait de l'aide reçue ?", "Très satisfait"),
    ("pt", "How satisfied are you with the help you received?", "Very satisfied"),  # no catalogue: English
])
def test_email_invitation_in_customer_language(play, channels, personas, language, question, label):
    now = timezone.now().replace(microsecond=0)
    conv = play.inbound(channels.email, f"{language}@x.org", (now - timedelta(minutes=10)).isoformat()
                        ).message.conversation
    conv.customer.language = language
    conv.customer.save()
    services.reply(conversation=conv, author=personas.ana, body="done", at=now - timedelta(minutes=5), deliver=False)
    services.resolve_conversation(conversation=conv, actor=personas.ana)
    inv = SurveyInvitation.objects.get(conversation=conv)
    msg = Message.objects.get(pk=inv.message_id)
    assert inv.language == language
    assert question in msg.body_text and label in msg.body_text
    assert f"<p>{question}</p>" in msg.body_html  # stored sanitized (nh3), apostrophes unescaped


def test_response_rate_counts_unanswered(play, channels, personas):
    c1 = resolve_now(play, channels.chat, "visitor-3", personas)
    c2 = resolve_now(play, channels.chat, "visitor-4", personas)
    from metrics.surveys import record_answer

    record_answer(invitation=SurveyInvitation.objects.get(conversation=c1), score=2)
    assert SurveyInvitation.objects.filter(conversation=c2, score__isnull=True).exists()
    day = timezone.localdate()
    m = report.build(Selection(day, day))[0]
    assert m["csat"]["responses"] == 1 and m["csat"]["response_rate"] == 0.5 and m["csat"]["percent"] == 0.0


def test_no_survey_for_imported_history(play, channels, personas):
    conv = play.inbound(channels.chat, "visitor-5", "2026-03-02 09:00").message.conversation
    play.resolve(conv, "2026-03-02 10:00")
    assert not SurveyInvitation.objects.exists()
