"""WebSocket routes of channel adapters (the chat widget).

The widget consumer checks the Origin itself against the channel's
allowed_origins (a per-channel list, not ALLOWED_HOSTS).
"""
from django.urls import path

from .adapters.chat.consumers import WidgetConsumer

websocket_urlpatterns = [
    path("ws/widget/<uuid:uuid>/", WidgetConsumer.as_asgi()),
]
