"""The website live chat widget (a `chat` channel). See adapter.py and consumers.py."""
from __future__ import annotations

from django.conf import settings
from django.utils.html import format_html


def widget_base_url(request=None) -> str:
    if request is not None:
        return request.build_absolute_uri("/").rstrip("/")
    return settings.PUBLIC_URL


def snippet(channel, request=None) -> str:
    """The <script> tag a site owner pastes into their pages (shown in the
    channel's settings). The host page's CSP must allow this origin in
    script-src, style-src, img-src and connect-src (wss:)."""
    base = widget_base_url(request)
    return str(format_html('<script src="{}/widget/widget.js" data-threadline-channel="{}" async></script>',
                           base, channel.uuid))
