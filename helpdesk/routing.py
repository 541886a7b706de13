"""WebSocket routes of every app, collected in one list."""
from channels_app.routing import websocket_urlpatterns as channel_routes
from conversations.routing import websocket_urlpatterns as conversation_routes

websocket_urlpatterns = [*conversation_routes, *channel_routes]
