"""HTTP views: the chat page and the health check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from ..keys import BOT_KEY, CONNECTIONS_KEY, LAYER_KEY, SETTINGS_KEY, STORE_KEY, TEMPLATES_KEY
from ..version import __version__
from .access import forbidden, monitoring_allowed
from .metrics import CONTENT_TYPE


async def chat_page(request: web.Request) -> web.Response:
    """The chat page, rendered from chat.html with the UI texts from config."""
    settings = request.config_dict[SETTINGS_KEY]
    router = request.app.router
    context: dict[str, Any] = {
        "ui": settings.ui,
        "ws_path": str(router["chatbot_ws"].url_for()),
        "static": lambda path: f"{router['chatbot_static'].url_for(filename=path)}?v={__version__}",
        "client_config": {
            "wsPath": str(router["chatbot_ws"].url_for()),
            "texts": {
                "thinking": settings.ui.thinking_text,
                "connecting": settings.ui.connecting_text,
                "connected": settings.ui.connected_text,
                "disconnected": settings.ui.disconnected_text,
            },
            "maxTextLength": settings.limits.max_text_length,
        },
    }
    response = aiohttp_jinja2.render_template("chat.html", request, context, app_key=TEMPLATES_KEY)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'self'; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def healthz(request: web.Request) -> web.Response:
    """Layer and store health as JSON; 503 (with the reason) when either cannot work."""
    if not monitoring_allowed(request):  # monitoring.allow: the backends and version are not public
        return forbidden()
    layer = request.config_dict[LAYER_KEY]
    store = request.config_dict[STORE_KEY]
    deadline = 0.5  # a hung backend (a paused Redis) is reported, never waited for

    async def probe(check: Awaitable[tuple[bool, str]], backend: str) -> tuple[bool, str]:
        try:
            async with asyncio.timeout(deadline):
                return await check
        except TimeoutError:
            return False, f"{backend} did not answer within {deadline:g} s"

    async def layer_health() -> tuple[bool, str]:
        health = await layer.health()
        return health.ok, health.detail

    # Concurrently: the answer takes the slower probe's time, at most the deadline.
    (layer_ok, layer_detail), (store_ok, store_detail) = await asyncio.gather(
        probe(layer_health(), layer.backend), probe(store.health(), store.backend)
    )
    ok = layer_ok and store_ok
    body = {
        "status": "ok" if ok else "degraded",
        "layer": {"backend": layer.backend, "ok": layer_ok, "detail": layer_detail},
        "store": {"backend": store.backend, "ok": store_ok, "detail": store_detail},
        "bot": type(request.config_dict[BOT_KEY]).__name__,
        "connections": len(request.config_dict[CONNECTIONS_KEY]),
        "version": __version__,
        "accepting": request.config_dict[CONNECTIONS_KEY].accepting,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: sockets, messages, errors by code, bot latency, layer counters."""
    if not monitoring_allowed(request):
        return forbidden()
    body = request.config_dict[CONNECTIONS_KEY].stats.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
