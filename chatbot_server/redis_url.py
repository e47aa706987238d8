"""Redis URLs: one server, a Sentinel-managed primary, or a Redis Cluster.

    redis://[[user]:password@]host[:port][/db]          one server (rediss:// for TLS, unix://)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[[user]:password@]host:port[,host:port...]

`rediss+sentinel://` and `rediss+cluster://` use TLS for every connection (sentinels and nodes
too). The userinfo is the password of the data nodes; sentinels that need a password of their
own take `?sentinel_password=…`. TLS options go in the query as redis-py names them
(`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`, `ssl_check_hostname`). One
server's URL is handed to redis-py as it is (its own parser); this module only reads the two
multi-host forms, whose comma-separated host lists redis-py's `from_url` does not accept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

Kind = Literal["standalone", "sentinel", "cluster"]

SENTINEL_PORT = 26379
REDIS_PORT = 6379
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_TLS_FLAGS = ("ssl_check_hostname",)
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL points at. For "standalone", only `kind`, `tls` and `url` are set."""

    kind: Kind
    url: str
    tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls_options: dict[str, Any] = field(default_factory=dict)


def parse_redis_url(url: str) -> RedisTarget:
    """Parse `url`; a ValueError names what is wrong (never the password)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ValueError(f"a Redis URL starts with one of {known}")
    kind, tls = _SCHEMES[scheme.lower()]
    if kind == "standalone":
        return RedisTarget(kind=kind, url=url, tls=tls)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts, userinfo = netloc, ""
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else unquote(user)
        if not colon:
            username = None  # redis://secret@host: a bare userinfo is a password
    default_port = SENTINEL_PORT if kind == "sentinel" else REDIS_PORT
    nodes = tuple(_node(part, default_port, scheme) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise ValueError(f"{scheme}:// needs at least one host:port")
    segments = [unquote(part) for part in path.split("/") if part]
    service, db = "", 0
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise ValueError(f"{scheme}://host:port[,host:port...]/service_name[/db]: the service name is missing")
        service = segments[0]
        if len(segments) == 2:
            db = _db(segments[1], scheme)
    elif segments and segments != ["0"]:
        raise ValueError(f"{scheme}:// takes no database: a Redis Cluster has only database 0")
    options: dict[str, Any] = {}
    sentinel_password = None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "sentinel_password" and kind == "sentinel":
            sentinel_password = value
        elif key in _TLS_OPTIONS:
            options[key] = value
        elif key in _TLS_FLAGS:
            options[key] = value.lower() in ("1", "true", "yes", "on")
        else:
            raise ValueError(f"{scheme}:// does not know the query option {key!r}")
    if options and not tls:
        raise ValueError(f"TLS options need {scheme.replace('redis', 'rediss', 1)}://")
    return RedisTarget(
        kind=kind,
        url=url,
        tls=tls,
        nodes=nodes,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
        tls_options=options,
    )


def _node(part: str, default_port: int, scheme: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [::1]:26379
        host, _, tail = part[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ValueError(f"{scheme}://: a host is missing in {part!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{scheme}://: {part!r} has no valid port")
    return host, int(port_text)


def _db(text: str, scheme: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{scheme}://: the database must be a number, not {text!r}")
    return int(text)
