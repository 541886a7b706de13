"""Provider webhooks for the email channel, under /hooks/email/anymail/<esp>/...
(e.g. /hooks/email/anymail/mailgun/inbound_mime/, /hooks/email/anymail/postmark/tracking/)."""
from django.urls import re_path

from .webhooks import connect, guarded

connect()


def _patterns():
    from anymail.urls import urlpatterns as anymail_patterns

    out = []
    for pattern in anymail_patterns:
        view_class = getattr(pattern.callback, "view_class", None)
        regex = pattern.pattern.regex.pattern.lstrip("^")
        out.append(re_path(r"^hooks/email/anymail/" + regex, guarded(pattern.callback, view_class),
                           name=f"email_{pattern.name}"))
    return out


urlpatterns = _patterns()
