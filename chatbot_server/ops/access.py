"""Who may read /healthz and /metrics: clients in monitoring.allow (CIDR networks).

The client address is the one server.trusted_proxies resolve (sockets/ratelimit.client_ip), so
behind nginx it is the monitoring host's, not nginx's. Everyone else gets 403: the health check
and the metrics tell an outsider the backends, the version and the load (#14).
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from ..keys import SETTINGS_KEY
from ..sockets.ratelimit import client_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORBIDDEN = {"error": {"code": "forbidden", "message": "只有监控网络可以访问此地址。"}}


@functools.cache
def networks(allow: tuple[str, ...]) -> tuple[Network, ...]:
    """monitoring.allow parsed (config checked each entry); once per distinct setting, not per request."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in allow)


def monitoring_allowed(request: web.Request) -> bool:
    """Whether the request's client address is in monitoring.allow."""
    settings = request.config_dict[SETTINGS_KEY]
    try:
        address = ipaddress.ip_address(client_ip(request, settings.server.trusted_proxies))
    except ValueError:  # no peer address (a unix socket) or a forwarded value that is not an address
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    return any(address in network for network in networks(settings.monitoring.allow))


def forbidden() -> web.Response:
    """The 403 answer for a client outside monitoring.allow."""
    return web.json_response(FORBIDDEN, status=403)
