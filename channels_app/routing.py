"""WebSocket routes of channel adapters (the chat widget)."""
websocket_urlpatterns = []
