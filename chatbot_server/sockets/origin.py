"""Origin check on the websocket handshake, against cross-site websocket hijacking."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp import web


def origin_allowed(request: web.Request, allowed: Iterable[str], trusted_proxies: Iterable[str] = ()) -> bool:
    """Same-origin, or an Origin listed in `allowed`; a request without Origin (not a browser) passes."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    allowed_set = {a.strip().lower().rstrip("/") for a in allowed}
    if "*" in allowed_set or origin in allowed_set:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    # The browser's Origin must name the host the page came from (behind one of our proxies: the
    # host it forwards).
    host = request.host
    if request.remote in set(trusted_proxies):
        host = request.headers.get("X-Forwarded-Host") or host
    return parts.netloc == host.lower()
