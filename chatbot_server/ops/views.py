"""HTTP views: the chat page, the embeddable widget's files and the health check."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterable
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import CIMultiDict

from ..config import Settings
from ..keys import BOT_KEY, CONNECTIONS_KEY, LAYER_KEY, SETTINGS_KEY, STORE_KEY, TEMPLATES_KEY
from ..resources import static_dir
from ..sockets.origin import origin_allowed
from ..version import __version__
from .access import forbidden, monitoring_allowed
from .metrics import CONTENT_TYPE

#: An origin as a CSP source and a postMessage target: scheme, host (a name or a bracketed IPv6
#: address) and port, nothing else (no path, no wildcard, no space or ";" that would end the directive).
_ORIGIN = re.compile(
    r"https?://(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?"
)


def normal_origin(text: str) -> str | None:
    """`text` as an origin in lower case without a trailing "/", or None if it is not one."""
    origin = text.strip().lower().rstrip("/")
    return origin if _ORIGIN.fullmatch(origin) else None


def frame_ancestors(allowed: Iterable[str]) -> str:
    """The CSP frame-ancestors sources: the page's own origin and each of security.allowed_origins
    (the same list the websocket's Origin check reads, so the widget works wherever it may appear).
    "*" there allows any; an entry that is not an origin is left out rather than break the header."""
    sources = ["'self'"]
    for entry in allowed:
        source = "*" if entry.strip() == "*" else normal_origin(entry)
        if source is not None and source not in sources:
            sources.append(source)
    return " ".join(sources)


def embed_parent(request: web.Request, settings: Settings) -> str | None:
    """The origin of the page that embeds the chat (widget.js asks for `?embed=1&parent=<origin>`),
    if that page may: its own origin or one of security.allowed_origins, by the websocket's own
    rule (sockets/origin.py). None otherwise: the page then sends and accepts no messages at all."""
    if request.query.get("embed") != "1":
        return None
    parent = normal_origin(request.query.get("parent", ""))
    if parent is None:
        return None
    headers = CIMultiDict(request.headers)
    headers["Origin"] = parent
    security = settings.security
    if not origin_allowed(request.clone(headers=headers), security.allowed_origins, settings.server.trusted_proxies):
        return None
    return parent


async def chat_page(request: web.Request) -> web.Response:
    """The chat page, rendered from chat.html with the UI texts from config."""
    settings = request.config_dict[SETTINGS_KEY]
    router = request.app.router
    parent = embed_parent(request, settings)
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
    if parent is not None:
        context["client_config"]["embed"] = {"parentOrigin": parent}
    response = aiohttp_jinja2.render_template("chat.html", request, context, app_key=TEMPLATES_KEY)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self' ws: wss:; "
        f"frame-ancestors {frame_ancestors(settings.security.allowed_origins)}; base-uri 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


#: What GET /widget.js and /widget.css answer with (static/widget.*): a host page names these
#: fixed URLs, so they are cached only briefly and a release reaches every page within minutes.
_WIDGET_TYPES = {"js": "application/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


async def widget_asset(request: web.Request) -> web.FileResponse:
    """The embeddable widget's script or stylesheet (docs/widget.md), for any site to load."""
    ext = request.match_info["ext"]
    return web.FileResponse(
        static_dir() / f"widget.{ext}",
        headers={
            "Content-Type": _WIDGET_TYPES[ext],
            "Cache-Control": "public, max-age=300",
            "X-Content-Type-Options": "nosniff",
            # Loadable by host pages that require it (Cross-Origin-Embedder-Policy: require-corp).
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


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
