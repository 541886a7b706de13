"""ASGI entry point: HTTP through Django, WebSockets through Channels."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.ASGI_SWITCH_INTERVAL_US > 0:
    import sys

    sys.setswitchinterval(settings.ASGI_SWITCH_INTERVAL_US / 1_000_000)

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware  # noqa: E402

from helpdesk.routing import websocket_urlpatterns  # noqa: E402


class SocketSessionWrapper(InstanceSessionWrapper):
    """Channels' session wrapper wraps every outgoing message to save the
    session on "http.response.start"; on a socket that is every frame, each
    looking at the session's `modified` and `is_empty()` for nothing. Frames
    of other types go straight out (what the parent does with them, minus
    that look)."""

    async def send(self, message):
        if message["type"] not in self.save_message_types:
            return await self.real_send(message)
        return await super().send(message)


class SocketSessionMiddleware(SessionMiddleware):
    async def __call__(self, scope, receive, send):
        wrapper = SocketSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, wrapper.send)


def SocketAuthMiddlewareStack(inner):
    """channels.auth.AuthMiddlewareStack with SocketSessionMiddleware."""
    return CookieMiddleware(SocketSessionMiddleware(AuthMiddleware(inner)))


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Origin checks are done per consumer: agents must come from our own
        # host, widget visitors from the channel's allowed origins.
        "websocket": SocketAuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
