"""/healthz and /metrics answer only clients in monitoring.allow (resolved through trusted proxies)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import create_app
from chatbot_server.ops.access import networks

from .helpers import make_settings

pytestmark = pytest.mark.timeout(30)

PATHS = ("/healthz", "/metrics")


async def make_client(aiohttp_client: Any, **sections: Any) -> TestClient:
    app: web.Application = create_app(make_settings(**sections))
    client: TestClient = await aiohttp_client(app)
    return client


async def status_of(client: TestClient, path: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(client.make_url(path), headers=headers) as response:
            is_json = response.content_type == "application/json"
            return response.status, await response.json() if is_json else await response.text()


async def test_outside_the_allow_list_gets_403_with_a_json_error(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, monitoring={"allow": ["10.0.0.0/8"]})  # we are 127.0.0.1
    for path in PATHS:
        status, body = await status_of(client, path)
        assert status == 403, path
        assert body["error"]["code"] == "forbidden" and body["error"]["message"]
    # The chat itself is not affected.
    assert (await status_of(client, "/"))[0] == 200


async def test_default_allow_list_serves_loopback(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client)
    status, body = await status_of(client, "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, text = await status_of(client, "/metrics")
    assert status == 200 and "chatbot_" in text


async def test_forwarded_client_address_counts_only_from_a_trusted_proxy(aiohttp_client: Any) -> None:
    behind_proxy = await make_client(
        aiohttp_client, server={"trusted_proxies": ["127.0.0.1"]}, monitoring={"allow": ["10.0.0.0/8"]}
    )
    for path in PATHS:
        assert (await status_of(behind_proxy, path, **{"X-Forwarded-For": "10.1.2.3"}))[0] == 200, path
        # The proxy forwarded a public client: refused although the peer (the proxy) is loopback.
        assert (await status_of(behind_proxy, path, **{"X-Forwarded-For": "203.0.113.9"}))[0] == 403, path
        # A client cannot put itself in the network by sending the header: the proxy appends the
        # peer it saw, the rightmost address is believed.
        spoofed = {"X-Forwarded-For": "10.1.2.3, 203.0.113.9"}
        assert (await status_of(behind_proxy, path, **spoofed))[0] == 403, path
    direct = await make_client(aiohttp_client, monitoring={"allow": ["10.0.0.0/8"]})
    for path in PATHS:  # nobody is trusted: the header is ignored
        assert (await status_of(direct, path, **{"X-Forwarded-For": "10.1.2.3"}))[0] == 403, path


async def test_networks_are_parsed_once(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, monitoring={"allow": ["127.0.0.0/8", "192.0.2.0/24"]})
    before = networks.cache_info()
    for _ in range(3):
        assert (await status_of(client, "/metrics"))[0] == 200
    after = networks.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 2
