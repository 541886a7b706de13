"""The widget follows the visitor's language (es, fr, de): strings from the
server, the configured texts' defaults and the offline email."""
from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.core import mail

from conversations import services
from conversations.models import Conversation, Message

from .conftest import recv_until, widget_socket

pytestmark = pytest.mark.django_db(transaction=True)


async def hello(comm, **frame):
    connected, code = await comm.connect()
    assert connected, code
    await comm.send_json_to({"type": "hello", "token": None, **frame})
    return await recv_until(comm, lambda f: f["type"] == "welcome")


def test_french_hello_gives_french_strings_and_a_french_offline_email(personas, channels):
    chat = channels.chat  # no greeting or offline text configured: the defaults are translated

    async def scenario():
        visitor = widget_socket(chat)
        welcome = await hello(visitor, language="fr-FR", languages=["fr-FR", "en"])
        assert welcome["language"] == "fr"
        assert welcome["strings"]["open"] == "Ouvrir le chat"
        assert welcome["strings"]["typing"] == "est en train d'écrire…"
        assert welcome["strings"]["csat"] == "Comment évaluez-vous notre assistance ?"
        assert welcome["strings"]["save"] == "Recevoir les réponses par e-mail"
        assert welcome["config"]["greeting"] == "Bonjour ! Comment pouvons-nous vous aider ?"
        assert welcome["config"]["offline_message"].startswith("Personne n'est disponible")
        await visitor.send_json_to({"type": "message", "client_id": "o", "text": "Il y a quelqu'un ?"})
        await recv_until(visitor, lambda f: f["type"] == "sent")
        await visitor.send_json_to({"type": "email", "email": "zoe@example.fr", "name": "Zoé"})
        assert (await recv_until(visitor, lambda f: f["type"] in ("email_saved", "error")))["type"] == "email_saved"
        await visitor.disconnect()
    async_to_sync(scenario)()
    conv = Conversation.objects.get()
    assert conv.customer.language == "fr"
    reply = services.reply(conversation=conv, author=personas.ana, body="Désolée pour l'attente !")
    reply.refresh_from_db()
    copy = Message.objects.get(pk=reply.meta["emailed_as"])
    assert copy.body_text.startswith("Vous avez une réponse à votre conversation avec nous :")
    assert "Répondez à cet e-mail pour poursuivre la conversation." in copy.body_text
    assert not any("You have a reply" in m.body for m in mail.outbox)


def test_offline_form_gives_the_language_to_a_visitor_who_has_not_written_yet(personas, channels):
    async def scenario():
        visitor = widget_socket(channels.chat)
        await hello(visitor, language="de-AT")
        await visitor.send_json_to({"type": "email", "email": "max@example.de"})
        assert (await recv_until(visitor, lambda f: f["type"] in ("email_saved", "error")))["type"] == "email_saved"
        await visitor.disconnect()
    async_to_sync(scenario)()
    from customers.models import Identity

    assert Identity.objects.get(kind="email", value="max@example.de").customer.language == "de"


@pytest.mark.parametrize("frame, channel_language, expected, greeting", [
    ({"language": "pt-BR", "languages": ["pt-BR", "ja"]}, "", "en", "Hi! How can we help you?"),
    ({"language": "pt-BR"}, "es", "es", "¡Hola! ¿En qué podemos ayudarle?"),
    ({"languages": ["pt", "de-CH", "fr"]}, "es", "de", "Hallo! Wie können wir Ihnen helfen?"),
    ({}, "", "en", "Hi! How can we help you?"),
    ({"language": 42, "languages": "fr"}, "", "en", "Hi! How can we help you?"),  # junk is ignored
])
def test_unknown_language_falls_back_to_the_channel_then_english(channels, frame, channel_language, expected,
                                                                  greeting):
    chat = channels.chat
    chat.settings = {"language": channel_language} if channel_language else {}
    chat.save()

    async def scenario():
        visitor = widget_socket(chat)
        welcome = await hello(visitor, **frame)
        await visitor.disconnect()
        return welcome
    welcome = async_to_sync(scenario)()
    assert welcome["language"] == expected
    assert welcome["config"]["greeting"] == greeting
    assert welcome["strings"]["send"] == {"en": "Send", "es": "Enviar", "de": "Senden"}[expected]


def test_every_widget_string_is_translated_in_every_language():
    from django.conf import settings
    from django.utils.translation import gettext as _
    from django.utils.translation import override

    from channels_app.adapters.chat import i18n

    english = i18n.widget_strings("en")
    for lang in ("de", "es", "fr"):
        strings = i18n.widget_strings(lang)
        untranslated = [k for k, v in strings.items() if v == english[k] and k not in ("optional", "label")]
        assert not untranslated, (lang, untranslated)
        with override(lang):
            for text in ("You have a reply to your chat with us:", "Reply to this email to continue the conversation.",
                         "We are closed right now. Leave a message and your email, we will answer by email."):
                assert _(text) != text, (lang, text)
    assert {code for code, _label in settings.LANGUAGES} >= {"de", "es", "fr"}
