"""WebSocket routes for agents (`/ws/agent/`).

Agents' browsers must come from one of our own hosts (ALLOWED_HOSTS): the
session cookie alone must not let another site open a socket (CSWSH).
"""
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from .consumers import AgentConsumer

websocket_urlpatterns = [
    path("ws/agent/", AllowedHostsOriginValidator(AgentConsumer.as_asgi())),
]
