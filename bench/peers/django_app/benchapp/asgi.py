"""ASGI entry point: HTTP through Django, websocket /ws through the echo consumer."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchapp.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import EchoConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": URLRouter([path("ws", EchoConsumer.as_asgi())]),
    }
)
