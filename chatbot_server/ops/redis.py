"""The Redis client of a process: one connection pool, one retry policy, one health-check policy.

The channel layer, the conversation store and the handoff queue of an application share the
client that `redis_client()` makes (app.setup builds it once, hands it to each with `client=`
and closes it after they have closed). Only blocking pops get a pool of their own, made from the
shared one by `blocking_client()`. See docs/redis.md ("Connections").
"""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

# redis-py's defaults for these changed between 7 and 8 (8 retries three times by default, with
# another backoff), so they are set explicitly: an upgrade must not change how we fail.
HEALTH_CHECK_INTERVAL = 30  # a connection idle this long is PINGed before reuse (NAT/LB idle drops)
RETRIES = 2
BLOCK_SECONDS = 2.0  # what a blocking pop of the channel layer waits at most


def redact(url: str) -> str:
    """The URL with every credential hidden, for logs and health details: a password in the
    userinfo (`redis://user:secret@host`, `redis://:secret@host`), a bare userinfo
    (`redis://secret@host`, which some write meaning a password), and `password=` / `username=`
    in the query (`redis://host/0?password=secret`, `unix:///run/redis.sock?password=secret`),
    all of which redis-py accepts."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    redacted = urlunsplit(parts._replace(netloc=netloc, query=query))
    if url.startswith(f"{parts.scheme}://") and not redacted.startswith(f"{parts.scheme}://"):
        redacted = f"{parts.scheme}://{redacted[len(parts.scheme) + 1 :]}"  # unix:///path keeps its slashes
    return redacted


_SECRET_QUERY_KEYS = frozenset({"password", "username"})


def client_name() -> str:
    """The name this process's connections carry in `CLIENT LIST` (who is connected, by pid)."""
    return f"chatbot_server:{os.getpid()}"


def redis_client(
    url: str,
    *,
    pool_size: int = 50,
    connect_timeout: float = 5.0,
    socket_timeout: float = 5.0,
    name: str | None = None,
) -> aioredis.Redis:
    """The one Redis client of a process; it connects lazily (on its first command).

    - A *blocking* pool of `pool_size` connections: a burst (10,000 sockets joining at once)
      waits for a free connection instead of failing, as channels_redis's plain pool does with
      "Too many connections" at about 100 concurrent connects. The wait is bounded by
      `connect_timeout + socket_timeout`, so a command never waits longer for a connection than
      it could take to make one and run on it.
    - `socket_connect_timeout` and `socket_timeout` bound a connect and a command: a hung Redis
      (SIGSTOP, a black-holed network) is reported as down instead of blocking forever.
    - One retry policy, `Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)`: a command that
      finds its connection dropped (Redis restarted, an idle connection cut) is retried on a new
      one twice within a second; a longer outage is the callers' business (the layer's
      supervisor reconnects, the store writes behind and retries).
    - One health-check policy, `health_check_interval=30`: a connection idle that long is
      PINGed before it is reused.
    - Replies are bytes (no `decode_responses`): the layer and the store read binary frames;
      the handoff queue decodes what it reads.
    - Connections are named `chatbot_server:<pid>` (`name`), so operators see who is connected.
    """
    if pool_size < 1:
        raise ValueError("pool_size must be at least 1")
    if connect_timeout <= 0 or socket_timeout <= 0:
        raise ValueError("connect_timeout and socket_timeout must be positive")
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=connect_timeout + socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
        health_check_interval=HEALTH_CHECK_INTERVAL,
        client_name=name if name is not None else client_name(),
    )
    return aioredis.Redis.from_pool(pool)


def blocking_client(
    client: aioredis.Redis, *, block_seconds: float = BLOCK_SECONDS, max_connections: int | None = None
) -> aioredis.Redis:
    """A client for blocking pops (BLMPOP, BLPOP) on the server and database of `client`.

    A blocking pop parks its connection for up to `block_seconds`: on the shared pool, parked
    pops would starve ordinary commands, so they get a pool of their own, built from the shared
    pool's connection settings (same server, credentials, TLS, name) with a socket timeout of
    `block_seconds` longer than the shared one (a pop that waits its full block is not a
    timeout). It opens one connection per pop in flight: the layer's inbox reader, plus one per
    `receive()` on a shared channel (up to `max_connections`: by default one more than the
    shared pool's size). No retries (`Retry(NoBackoff(), 0)`): a pop that failed is not
    repeated blindly, the layer's supervisor reconnects. Close it with `aclose()`; closing it
    never closes `client`.
    """
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = block_seconds + float(kwargs.get("socket_timeout") or 5.0)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs["health_check_interval"] = HEALTH_CHECK_INTERVAL
    if max_connections is None:
        max_connections = pool.max_connections + 1
    blocking_pool = aioredis.BlockingConnectionPool(
        connection_class=pool.connection_class, max_connections=max_connections, timeout=None, **kwargs
    )
    return aioredis.Redis.from_pool(blocking_pool)
