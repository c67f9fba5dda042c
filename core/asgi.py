"""ASGI entry point for daphne: Django for HTTP, Channels for the lab WebSocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
# Build the Django app first: it sets up the app registry that the consumer's imports need.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import SessionMiddlewareStack  # noqa: E402

from visualizer.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # /static/ is WhiteNoise's, a middleware (core.settings): not Django's development handler.
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            SessionMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
