"""The parser against a corpus of real-world mail shapes (tests/fixtures/email/)."""
from __future__ import annotations

import pytest

from channels_app.models import EnvelopeStatus, InboundEnvelope
from conversations.models import Message

from .conftest import FIXTURES, load

ALL = sorted(p.name for p in FIXTURES.glob("*.eml"))


def test_corpus_is_complete():
    expected = {"gmail_reply.eml", "outlook_reply.eml", "apple_mail_reply.eml", "forwarded.eml", "iso_8859_1.eml",
                "windows_1252.eml", "shift_jis.eml", "gb2312.eml", "broken_charset.eml", "eight_bit.eml",
                "nested_multipart.eml", "calendar_invite.eml", "tnef_winmail.eml", "missing_headers.eml",
                "broken_mime.eml", "auto_reply.eml", "dsn_bounce.eml", "mailing_list.eml"}
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_shape_is_stored_and_ingested(name, deliver_raw):
    envelope, result = deliver_raw(load(name))
    assert envelope.status == EnvelopeStatus.PROCESSED, envelope.error
    assert bytes(envelope.body) == load(name)  # the raw original is kept byte for byte
    assert len(envelope.message_ids) == 1
    message = Message.objects.get(pk=envelope.message_ids[0])
    assert message.body_text or message.body_html or message.attachments.exists()


@pytest.mark.parametrize("name", ALL)
def test_redelivery_is_deduplicated(name, deliver_raw):
    first, _ = deliver_raw(load(name))
    second, _ = deliver_raw(load(name))
    assert first.message_ids == second.message_ids
    assert Message.objects.filter(direction="inbound").count() == 1


def _ingest(deliver_raw, name) -> Message:
    envelope, _ = deliver_raw(load(name))
    return Message.objects.get(pk=envelope.message_ids[0])


def test_gmail_reply_quoted_history_folded(deliver_raw):
    msg = _ingest(deliver_raw, "gmail_reply.eml")
    assert msg.author_name == "Kim Lee"
    assert msg.conversation.customer.identities.get().value == "kim.lee@gmail.example"
    assert "120 €" in msg.body_text
    # full original kept, the quoted part marked for folding
    assert "we corrected invoice 1042" in msg.body_text
    folded = msg.body_text[msg.meta["quoted_from"]:]
    assert folded.startswith("On Sun, 1 Mar 2026") and "Thanks" not in folded
    assert '<blockquote type="cite">' in msg.body_html
    assert msg.meta["references"] == ["CAF=original-1@mail.gmail.com", "tl.41.abcdef0123456789@acme.test"]
    assert msg.external_id == "CAF=gmail-reply-2@mail.gmail.com"


def test_outlook_reply_windows_1252_and_folding(deliver_raw):
    msg = _ingest(deliver_raw, "outlook_reply.eml")
    assert msg.author_name == "Jürgen Müller"
    assert msg.subject == "AW: Lieferung für Bestellung 77"
    assert "angekommen – bitte prüfen" in msg.body_text
    assert msg.body_text[msg.meta["quoted_from"]:].lstrip("_\n").startswith("From: Acme Support")
    assert "<style" not in msg.body_html and '<blockquote type="cite">' in msg.body_html


def test_apple_mail_inline_image_and_sanitizing(deliver_raw):
    msg = _ingest(deliver_raw, "apple_mail_reply.eml")
    att = msg.attachments.get()
    assert (att.filename, att.content_type, att.inline, att.content_id) == (
        "screenshot.png", "image/png", True, "A1B2C3D4-0001@apple.example")
    assert att.file.read().startswith(b"\x89PNG")
    html = msg.body_html
    assert f'src="/attachments/{att.pk}/inline/"' in html  # the cid: image is shown in place
    assert "cid:" not in html
    assert "<script" not in html and "javascript:" not in html and "onclick" not in html
    assert 'data-remote-src="https://tracker.example/pixel.gif"' in html
    assert ' src="https://tracker.example' not in html
    assert msg.meta["html_quoted"] == "blockquote[type=cite]"
    assert msg.body_text[msg.meta["quoted_from"]:].startswith("> On 2 Mar 2026")


def test_forwarded_mail_keeps_original_as_attachment(deliver_raw):
    msg = _ingest(deliver_raw, "forwarded.eml")
    assert "tracking link" in msg.body_text
    att = msg.attachments.get()
    assert att.content_type == "message/rfc822" and b"ship-555@shop.example" in att.file.read()


@pytest.mark.parametrize("name,subject,name_,snippet", [
    ("iso_8859_1.eml", "Problème de facturation", "Renée Dupré", "erronée. Merci de vérifier, ça presse"),
    ("windows_1252.eml", "Refund", "Tom O'Brien", "I paid €50 – “express” shipping"),
    ("shift_jis.eml", "注文について", "山田太郎", "注文した商品がまだ届きません"),
    ("gb2312.eml", "退款申请", "王小明", "您好，我想申请退款"),
    ("eight_bit.eml", "Ünïcödé 8bit", "Zoë Ångström", "ÆØÅ – 日本語 – 😀"),
])
def test_charsets_decoded(deliver_raw, name, subject, name_, snippet):
    msg = _ingest(deliver_raw, name)
    assert msg.subject == subject
    assert msg.author_name == name_
    assert snippet in msg.body_text


def test_broken_charset_declaration_is_replaced_not_fatal(deliver_raw):
    msg = _ingest(deliver_raw, "broken_charset.eml")
    assert "Café crème" in msg.body_text
    assert "latin-1 bytes" in msg.body_html
    assert msg.subject.startswith("Caf")


def test_nested_multipart_attachments(deliver_raw):
    msg = _ingest(deliver_raw, "nested_multipart.eml")
    atts = {a.filename: a for a in msg.attachments.all()}
    assert set(atts) == {"logo.png", "contract.pdf", "préces.csv"}
    assert atts["logo.png"].inline and atts["logo.png"].content_id == "logo@example.com"
    assert not atts["contract.pdf"].inline and atts["contract.pdf"].file.read() == b"%PDF-1.4 fake contract"
    assert "signed contract attached" in msg.body_text


def test_calendar_invite_kept(deliver_raw):
    msg = _ingest(deliver_raw, "calendar_invite.eml")
    att = msg.attachments.get()
    assert att.content_type == "text/calendar" and att.filename.endswith(".ics")
    assert b"BEGIN:VCALENDAR" in att.file.read()
    assert "Onboarding call" in msg.body_text


def test_tnef_kept_as_attachment(deliver_raw):
    msg = _ingest(deliver_raw, "tnef_winmail.eml")
    att = msg.attachments.get()
    assert (att.filename, att.content_type) == ("winmail.dat", "application/ms-tnef")
    assert att.file.read()[:4] == bytes([0x78, 0x9f, 0x3e, 0x22])


def test_missing_headers_gets_a_stable_id(deliver_raw):
    msg = _ingest(deliver_raw, "missing_headers.eml")
    assert msg.external_id.startswith("sha256-")
    assert msg.meta["message_id_missing"] is True
    assert msg.conversation.subject  # falls back to the first line


def test_broken_mime_ingested_as_far_as_possible(deliver_raw):
    msg = _ingest(deliver_raw, "broken_mime.eml")
    assert "This is not base64 at all" in msg.body_text
    assert msg.attachments.get().filename == "data.bin"


@pytest.mark.parametrize("name", ["auto_reply.eml", "mailing_list.eml"])
def test_automated_mail_flagged(deliver_raw, name):
    msg = _ingest(deliver_raw, name)
    assert msg.automated is True and msg.meta["auto_submitted"] is True


def test_over_limit_attachment_dropped_with_visible_note(deliver_raw, settings):
    settings.ATTACHMENT_MAX_BYTES = 50
    msg = _ingest(deliver_raw, "nested_multipart.eml")
    names = set(msg.attachments.values_list("filename", flat=True))
    assert "logo.png" not in names and "contract.pdf" in names  # 70 bytes > 50, 22 bytes kept
    assert any("logo.png" in note for note in msg.meta["notes"])


def test_envelope_kept_even_when_processing_fails(deliver_raw, monkeypatch):
    from conversations import services

    def boom(msg):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "ingest", boom)
    with pytest.raises(RuntimeError):
        deliver_raw(load("gmail_reply.eml"))
    env = InboundEnvelope.objects.get()
    assert env.status == EnvelopeStatus.FAILED and "database on fire" in env.error
    assert bytes(env.body) == load("gmail_reply.eml")


def test_inline_image_served_only_to_agents_who_see_the_conversation(deliver_raw, client, personas):
    msg = _ingest(deliver_raw, "apple_mail_reply.eml")
    att = msg.attachments.get()
    url = f"/attachments/{att.pk}/inline/"
    client.force_login(personas.ana)  # billing team owns the email channel
    resp = client.get(url)
    assert resp.status_code == 200 and resp["Content-Type"] == "image/png"
    client.force_login(personas.bob)  # tech team: not his conversation
    assert client.get(url).status_code == 404


def test_large_attachment_is_decoded_from_the_raw_bytes(deliver_raw, monkeypatch):
    """Big base64 parts skip the email package (memory): the result is byte-exact."""
    import os
    from email.message import EmailMessage

    from channels_app.adapters.email import parser

    monkeypatch.setattr(parser, "LIFT_MIN_BYTES", 4096)
    blob = os.urandom(300_000)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "a@example.org", "support@acme.test", "scan", "<big@x>"
    msg.set_content("see attached")
    msg.add_attachment(blob, maintype="application", subtype="octet-stream", filename="scan.bin")
    raw = msg.as_bytes()
    skeleton, regions = parser._lift_big_parts(raw)
    assert len(regions) == 1 and len(skeleton) < 2000
    stored = _ingest_raw(deliver_raw, raw)
    att = stored.attachments.get()
    assert att.filename == "scan.bin" and att.file.read() == blob
    assert stored.body_text.strip() == "see attached"


def test_large_base64_text_body_falls_back_to_a_full_parse(deliver_raw, monkeypatch):
    from email.message import EmailMessage

    from channels_app.adapters.email import parser

    monkeypatch.setattr(parser, "LIFT_MIN_BYTES", 4096)
    text = "ünïcode line of a long text body\n" * 2000
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "a@example.org", "support@acme.test", "long", "<long@x>"
    msg.set_content(text, cte="base64")
    stored = _ingest_raw(deliver_raw, msg.as_bytes())
    assert stored.body_text.replace("\r\n", "\n") == text


def _ingest_raw(deliver_raw, raw: bytes) -> Message:
    envelope, _ = deliver_raw(raw)
    return Message.objects.get(pk=envelope.message_ids[0])
