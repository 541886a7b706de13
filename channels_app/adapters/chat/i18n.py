"""The widget speaks the visitor's language.

The widget's hello frame carries the browser's languages (`language`, and
`languages` in order of preference); `widget_language` picks the first one
Threadline is translated into (settings.LANGUAGES, "es-ES" counts as "es"),
else the channel's `language` setting, else LANGUAGE_CODE. The welcome frame
then brings every string the widget shows (`widget_strings`) and the
configured texts' defaults in that language; the visitor's customer record
keeps the language (when it has none yet), so the replies emailed to an
offline visitor (offline.py) are in it too.
"""
from __future__ import annotations

from django.conf import settings
from django.utils.translation import override, pgettext_lazy

# key -> text; the keys are the widget's (static/widget/widget.js keeps the English as a fallback)
WIDGET_STRINGS = {
    "open": pgettext_lazy("chat widget", "Open chat"),
    "close": pgettext_lazy("chat widget", "Close chat"),
    "send": pgettext_lazy("chat widget", "Send"),
    "attach": pgettext_lazy("chat widget", "Attach a file"),
    "placeholder": pgettext_lazy("chat widget", "Type your message…"),
    "label": pgettext_lazy("chat widget", "Message"),
    "sending": pgettext_lazy("chat widget", "Sending…"),
    "sent": pgettext_lazy("chat widget", "Sent"),
    "delivered": pgettext_lazy("chat widget", "Delivered"),
    "read": pgettext_lazy("chat widget", "Seen"),
    "failed": pgettext_lazy("chat widget", "Not sent. Tap to retry"),
    "typing": pgettext_lazy("chat widget", "is typing…"),
    "offline": pgettext_lazy("chat widget", "We are offline"),
    "name": pgettext_lazy("chat widget", "Your name"),
    "email": pgettext_lazy("chat widget", "Your email"),
    "start": pgettext_lazy("chat widget", "Start chat"),
    "save": pgettext_lazy("chat widget", "Send me replies by email"),
    "saved": pgettext_lazy("chat widget", "Thanks! We will reply to your email."),
    "prechat": pgettext_lazy("chat widget", "Before we start, tell us who you are."),
    "throttled": pgettext_lazy("chat widget", "You are sending messages too fast. Please wait a moment."),
    "tooLong": pgettext_lazy("chat widget", "That message is too long."),
    "tooBig": pgettext_lazy("chat widget", "That file is too large."),
    "badType": pgettext_lazy("chat widget", "This type of file cannot be sent."),
    "badEmail": pgettext_lazy("chat widget", "Please enter a valid email address."),
    "error": pgettext_lazy("chat widget", "Something went wrong. Please try again."),
    "connecting": pgettext_lazy("chat widget", "Connecting…"),
    "csat": pgettext_lazy("chat widget", "How would you rate our support?"),
    "thanks": pgettext_lazy("chat widget", "Thank you for your feedback!"),
    "resolved": pgettext_lazy("chat widget", "This conversation was resolved."),
    "you": pgettext_lazy("chat widget", "You"),
    "unread": pgettext_lazy("chat widget", "new message"),
    "optional": pgettext_lazy("chat widget", "(optional)"),
    "skip": pgettext_lazy("chat widget", "Skip"),
}


def _supported(tag) -> str | None:
    """"es-ES" -> "es" if Threadline speaks it, else None."""
    if not isinstance(tag, str) or not tag.strip():
        return None
    tag = tag.strip().lower().replace("_", "-")[:35]
    codes = [code for code, _name in settings.LANGUAGES]
    if tag in codes:
        return tag
    base = tag.split("-", 1)[0]
    return base if base in codes else None


def widget_language(requested, channel=None) -> str:
    """The language to talk to a visitor in: the first supported of `requested`
    (a tag or a list of tags, best first), else the channel's, else LANGUAGE_CODE."""
    tags = requested if isinstance(requested, (list, tuple)) else [requested]
    for tag in list(tags)[:10]:
        if lang := _supported(tag):
            return lang
    if channel is not None and (lang := _supported((channel.settings or {}).get("language"))):
        return lang
    return _supported(settings.LANGUAGE_CODE) or "en"


def widget_strings(language: str) -> dict[str, str]:
    with override(language):
        return {key: str(text) for key, text in WIDGET_STRINGS.items()}


def remember_language(customer, language: str) -> None:
    """Keep the visitor's language on their customer record, unless it has one."""
    if language and not customer.language:
        from customers.models import Customer

        Customer.objects.filter(pk=customer.pk, language="").update(language=language)
        customer.language = language
