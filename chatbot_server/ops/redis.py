"""The Redis client of a process: one connection pool, one retry policy, one health-check policy.

The channel layer, the conversation store and the handoff queue of an application share the
client that `redis_client()` makes (app.setup builds it once, hands it to each with `client=`
and closes it after they have closed). Only blocking pops get a pool of their own, made from the
shared one by `blocking_client()`. See docs/redis.md ("Connections").
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..redis_url import RedisTarget, parse_redis_url

RedisClient: TypeAlias = aioredis.Redis | RedisCluster
"""What the layer, the store and the handoff queue talk to: a standalone or Sentinel-managed
primary (`redis.asyncio.Redis`) or a Redis Cluster (`redis.asyncio.cluster.RedisCluster`)."""

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


_SECRET_QUERY_KEYS = frozenset({"password", "username", "sentinel_password"})


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
) -> RedisClient:
    """The one Redis client of a process; it connects lazily (on its first command).

    `url` is `redis://`, `rediss://` or `unix://` (one server), `redis+sentinel://` (the primary
    a set of sentinels names) or `redis+cluster://` (a Redis Cluster); see `parse_redis_url`.

    - A *blocking* pool of `pool_size` connections: a burst (10,000 sockets joining at once)
      waits for a free connection instead of failing, as channels_redis's plain pool does with
      "Too many connections" at about 100 concurrent connects. The wait is bounded by
      `connect_timeout + socket_timeout`, so a command never waits longer for a connection than
      it could take to make one and run on it. (A cluster's per-node pools cannot wait in
      redis-py: each node gets `pool_size` connections, and a burst past that fails with
      MaxConnectionsError, which callers see as Redis unavailable.)
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
    - Sentinel: every new connection asks the sentinels for the current primary, and a
      connection that meets a demoted primary (READONLY) is dropped (redis-py's
      SentinelManagedConnection), so after a failover the next connect reaches the new primary.
    """
    if pool_size < 1:
        raise ValueError("pool_size must be at least 1")
    if connect_timeout <= 0 or socket_timeout <= 0:
        raise ValueError("connect_timeout and socket_timeout must be positive")
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "client_name": name if name is not None else client_name(),
    }
    if target.kind == "cluster":
        return _cluster_client(target, max_connections=pool_size, **common)
    if target.kind == "sentinel":
        return _sentinel_primary(
            target,
            _sentinel(target, connect_timeout, socket_timeout),
            redis_class=SentinelRedis,
            max_connections=pool_size,
            timeout=connect_timeout + socket_timeout,
            **common,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=connect_timeout + socket_timeout, **common
    )
    return aioredis.Redis.from_pool(pool)


class SentinelBlockingPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the sentinels for the primary on every new connection)
    with the waiting behaviour of its BlockingConnectionPool: both are public classes, and the
    Sentinel pool passes its keyword arguments on to the pool class after it in the MRO
    (pinned by tests/test_redis_client.py)."""


class SentinelRedis(aioredis.Redis):
    """The client of a Sentinel-managed primary; `aclose()` also closes the connections to the
    sentinels themselves (redis-py leaves them to the garbage collector)."""

    sentinel_manager: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the primary's pool (when owned) and the sentinel clients."""
        await super().aclose(close_connection_pool)
        for sentinel in self.sentinel_manager.sentinels:
            await sentinel.aclose()


def _sentinel(target: RedisTarget, connect_timeout: float, socket_timeout: float) -> Sentinel:
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": socket_timeout,
        "password": target.sentinel_password,
        # The next sentinel is the retry: with redis-py 8's default (3 retries, backoff up to
        # 10 s) each sentinel that refused (a wrong CA, a sentinel down) was retried for seconds
        # before the next was asked; a required layer took 37 s to give up on a wrong CA.
        "retry": Retry(NoBackoff(), 0),
        "ssl": target.tls,
        **target.tls_options,
    }
    return ReadableSentinel(list(target.nodes), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]


class ReadableSentinel(Sentinel):
    """redis-py's Sentinel whose MasterNotFoundError says why each sentinel failed. redis-py 8
    lists every sentinel client's repr with `repr(error)`, which RedisError reduces to its type
    ("network:ConnectionError"): a wrong CA read as kilobytes of pool settings with no reason."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The primary's address as the first sentinel that knows a healthy one says (that
        sentinel is asked first from then on), as redis-py does (we never set force_master_ip)."""
        reasons = []
        for number, sentinel in enumerate(self.sentinels):
            try:
                masters: Any = await sentinel.sentinel_masters()  # type: ignore[no-untyped-call]
            except (RedisConnectionError, RedisTimeoutError) as error:  # its text names the sentinel
                reasons.append(str(error) or type(error).__name__)
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
            where = "{host}:{port}".format(**sentinel.connection_pool.connection_kwargs)
            reasons.append(f"{where} knows no healthy primary of that name")
        raise MasterNotFoundError(f"no sentinel names a primary for {service_name!r}: {' '.join(reasons)}")


def _sentinel_primary(
    target: RedisTarget, sentinel: Sentinel, *, redis_class: type[aioredis.Redis], **kwargs: Any
) -> aioredis.Redis:
    client = sentinel.master_for(
        target.service,
        redis_class=redis_class,
        connection_pool_class=SentinelBlockingPool,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **target.tls_options,
        **kwargs,
    )
    if isinstance(client, SentinelRedis):
        client.sentinel_manager = sentinel
    assert isinstance(client, aioredis.Redis)
    return client


def _cluster_client(target: RedisTarget, **kwargs: Any) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **target.tls_options,
        **kwargs,
    )


def blocking_client(
    client: RedisClient, *, block_seconds: float = BLOCK_SECONDS, max_connections: int | None = None
) -> RedisClient:
    """A client for blocking pops (BLMPOP, BLPOP) on the server and database of `client`.

    A blocking pop parks its connection for up to `block_seconds`: on the shared pool, parked
    pops would starve ordinary commands, so they get a pool of their own, built from the shared
    pool's connection settings (same server, credentials, TLS, name) with a socket timeout of
    `block_seconds` longer than the shared one (a pop that waits its full block is not a
    timeout). It opens one connection per pop in flight: the layer's inbox reader, plus one per
    `receive()` on a shared channel (up to `max_connections`: by default one more than the
    shared pool's size). No retries (`Retry(NoBackoff(), 0)`): a pop that failed is not
    repeated blindly, the layer's supervisor reconnects. Close it with `aclose()`; closing it
    never closes `client`. For a Sentinel-managed primary it asks the same sentinels; for a
    cluster it is a second cluster client (a pop goes to the node of its key's slot).
    """
    if isinstance(client, RedisCluster):
        return _cluster_blocking(client, block_seconds, max_connections)
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = block_seconds + float(kwargs.get("socket_timeout") or 5.0)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs["health_check_interval"] = HEALTH_CHECK_INTERVAL
    if max_connections is None:
        max_connections = pool.max_connections + 1
    if isinstance(pool, SentinelConnectionPool):
        kwargs.pop("connection_pool", None)  # the Sentinel pool sets its own
        sentinel_client = pool.sentinel_manager.master_for(
            pool.service_name,
            connection_pool_class=SentinelBlockingPool,
            # The shared pool's class (SentinelManagedSSLConnection for rediss+sentinel://): the
            # Sentinel pool took `ssl=True` out of its kwargs, so without it the blocking pool
            # made plain connections, which refuse the ssl_* options (TypeError).
            connection_class=pool.connection_class,
            max_connections=max_connections,
            timeout=None,
            **kwargs,
        )
        assert isinstance(sentinel_client, aioredis.Redis)
        return sentinel_client
    blocking_pool = aioredis.BlockingConnectionPool(
        connection_class=pool.connection_class, max_connections=max_connections, timeout=None, **kwargs
    )
    return aioredis.Redis.from_pool(blocking_pool)


# What a second cluster client copies of the first (RedisCluster keeps its arguments, translated,
# in its public `connection_kwargs`; the rest there is redis-py's own plumbing).
_CLUSTER_COPIED = (
    "username",
    "password",
    "credential_provider",
    "client_name",
    "socket_connect_timeout",
    "socket_keepalive",
    "health_check_interval",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
)


def _cluster_blocking(client: RedisCluster, block_seconds: float, max_connections: int | None) -> RedisCluster:
    given = client.connection_kwargs
    kwargs = {key: given[key] for key in _CLUSTER_COPIED if key in given}
    kwargs["ssl"] = issubclass(given.get("connection_class", object), SSLConnection)
    return RedisCluster(
        startup_nodes=[ClusterNode(node.host, node.port) for node in client.startup_nodes],
        max_connections=max_connections if max_connections is not None else int(given["max_connections"]) + 1,
        socket_timeout=block_seconds + float(given.get("socket_timeout") or 5.0),
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


async def disconnect(client: RedisClient) -> None:
    """Close every connection `client` holds (it reconnects on its next command): ends a read
    parked on a dead connection, and makes a Sentinel-managed pool ask for the primary again."""
    if isinstance(client, RedisCluster):
        # The startup nodes (given at construction) are separate objects from the slot table's
        # nodes and keep the connection that fetched CLUSTER SLOTS; RedisCluster.aclose() skips
        # them while the client is marked for re-initialisation (after any connection error).
        nodes = {id(node): node for node in (*client.get_nodes(), *client.startup_nodes)}
        await asyncio.gather(*(node.disconnect() for node in nodes.values()))
    else:
        await client.connection_pool.disconnect()


async def close_client(client: RedisClient) -> None:
    """Close a client this process made, with its pool (and, for Sentinel, its sentinel clients)."""
    if isinstance(client, RedisCluster):
        await client.aclose()
        await disconnect(client)  # what aclose() may leave open (see disconnect)
    else:
        await client.aclose(close_connection_pool=True)
