"""Redis URLs for one server, a Sentinel-managed primary and a Cluster (chatbot_server.redis_url)."""

from __future__ import annotations

import pytest

from chatbot_server.ops.redis import SentinelBlockingPool, redact
from chatbot_server.redis_url import parse_redis_url


def test_a_sentinel_url_names_sentinels_service_db_and_passwords() -> None:
    target = parse_redis_url("rediss+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380,s3/primary/2?sentinel_password=sp")
    assert target.kind == "sentinel" and target.tls
    assert target.nodes == (("10.0.0.1", 26379), ("::1", 26380), ("s3", 26379))
    assert (target.service, target.db, target.password, target.sentinel_password) == ("primary", 2, "p@ss", "sp")
    assert target.username is None


def test_a_cluster_url_names_its_nodes() -> None:
    target = parse_redis_url("redis+cluster://user:pw@a:7000,b:7001")
    assert target.kind == "cluster" and not target.tls
    assert target.nodes == (("a", 7000), ("b", 7001))
    assert (target.username, target.password) == ("user", "pw")


def test_one_servers_url_is_left_to_redis_py() -> None:
    target = parse_redis_url("redis://:x@h:1/3")
    assert target.kind == "standalone" and target.nodes == () and target.url == "redis://:x@h:1/3"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h", "starts with one of"),
        ("redis+sentinel://h:1", "service name is missing"),
        ("redis+sentinel://h:1/s/x", "must be a number"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://", "at least one host"),
        ("redis+cluster://h:99999", "no valid port"),
        ("redis+cluster://h:1?ssl_ca_certs=/ca.pem", "rediss+cluster://"),
        ("redis+cluster://h:1?timeout=2", "query option 'timeout'"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("+", r"\+").replace("(", r"\(")):
        parse_redis_url(url)


def test_a_bad_url_error_never_shows_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        parse_redis_url("redis+sentinel://:s3cret@h:1")
    assert "s3cret" not in str(caught.value)


def test_redact_hides_the_passwords_of_multi_host_urls() -> None:
    shown = redact("redis+sentinel://:s3cret@a:1,b:2/primary?sentinel_password=s3cret2")
    assert "s3cret" not in shown and "a:1,b:2/primary" in shown


def test_the_sentinel_pool_waits_like_a_blocking_pool() -> None:
    # SentinelBlockingPool relies on SentinelConnectionPool passing its keyword arguments on to
    # the next class in the MRO: this pins that, for the next redis-py upgrade.
    from redis.asyncio.sentinel import Sentinel

    sentinel = Sentinel([("127.0.0.1", 1)])  # type: ignore[no-untyped-call]
    client = sentinel.master_for("primary", connection_pool_class=SentinelBlockingPool, max_connections=3, timeout=7)
    pool = client.connection_pool
    assert isinstance(pool, SentinelBlockingPool)
    assert (pool.max_connections, pool.timeout, pool.service_name) == (3, 7, "primary")
