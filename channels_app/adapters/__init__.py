"""Adapter registry: channel kind -> dotted path of its Adapter class.

A new channel is a new package here and one line in this map.
"""
from __future__ import annotations

from functools import lru_cache

from django.utils.module_loading import import_string

ADAPTERS = {
    "api": "channels_app.adapters.api.adapter.ApiAdapter",
    "email": "channels_app.adapters.email.adapter.EmailAdapter",
    "chat": "channels_app.adapters.chat.adapter.ChatAdapter",
    "whatsapp": "channels_app.adapters.whatsapp.adapter.WhatsAppAdapter",
    "messenger": "channels_app.adapters.meta.adapter.MessengerAdapter",
    "instagram": "channels_app.adapters.meta.adapter.InstagramAdapter",
    "telegram": "channels_app.adapters.telegram.adapter.TelegramAdapter",
    "sms": "channels_app.adapters.sms.adapter.SmsAdapter",
    "twitter": "channels_app.adapters.twitter.adapter.TwitterAdapter",
    "phone": "channels_app.adapters.phone.adapter.PhoneAdapter",
    "webform": "channels_app.adapters.webform.adapter.WebformAdapter",
}


class UnknownAdapter(LookupError):
    pass


@lru_cache(maxsize=None)
def get_adapter(kind: str):
    path = ADAPTERS.get(kind)
    if not path:
        raise UnknownAdapter(kind)
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise UnknownAdapter(f"{kind}: {exc}") from exc
    return cls()
