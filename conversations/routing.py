"""WebSocket routes for agents (`/ws/agent/`)."""
websocket_urlpatterns = []
