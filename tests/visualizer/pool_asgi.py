"""The product's ASGI application, but the lab socket takes its hot pool from ``?pool=KEY``.

The workshop pages decide a participant's pool; until a test has them, this seam stands in for
that one decision (everything else is LabConsumer as daphne serves it).
"""

from urllib.parse import parse_qs

from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import SessionMiddlewareStack
from django.urls import path

from core.asgi import application as _product  # sets Django up first
from visualizer.consumers import LabConsumer


class PoolLabConsumer(LabConsumer):
    async def connect(self) -> None:
        await super().connect()
        self.pool = parse_qs(self.scope.get("query_string", b"").decode()).get("pool", [None])[0]


application = ProtocolTypeRouter({
    "http": _product.application_mapping["http"],
    "websocket": AllowedHostsOriginValidator(SessionMiddlewareStack(URLRouter([
        path("ws/lab/<slug:slug>/", PoolLabConsumer.as_asgi()),
    ]))),
})
