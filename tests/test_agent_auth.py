"""Agent sign-in, sessions and the guards on every agent route and socket."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.agents.passwords import verify_password
from chatbot_server.agents.sessions import SessionSigner

from .agent_support import PASSWORDS, SECRET, AgentSocket, agent_section, origin, session_cookie, sign_in
from .helpers import make_settings, receive_json

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    app = web.Application()
    setup(app, make_settings(agents=agent_section(login_failures=3, login_window=60)))
    return await aiohttp_client(app)


async def raw_get(client: TestClient, path: str, **headers: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.get(client.make_url(path), headers=headers, allow_redirects=False)
        await response.read()
        return response


async def ws_status(client: TestClient, **headers: str) -> int:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        try:
            ws = await session.ws_connect(client.make_url("/agent/ws"), headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def test_console_without_session_redirects_to_sign_in(client: TestClient) -> None:
    response = await raw_get(client, "/agent")
    assert response.status == 302 and response.headers["Location"] == "/agent/login"
    login = await raw_get(client, "/agent/login")
    assert login.status == 200 and "script-src 'self'" in login.headers["Content-Security-Policy"]


async def test_sign_in_sets_a_strict_http_only_cookie_and_opens_the_console(client: TestClient) -> None:
    response = await sign_in(client, "li")
    assert response.status == 303 and response.headers["Location"] == "/agent"
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/agent" in set_cookie
    cookie = response.cookies["chatbot_agent"].value
    page = await raw_get(client, "/agent", Cookie=f"chatbot_agent={cookie}")
    assert page.status == 200


async def test_wrong_password_and_unknown_user_are_refused(client: TestClient) -> None:
    assert (await sign_in(client, "li", "wrong password")).status == 401
    assert (await sign_in(client, "nobody", "whatever1")).status == 401
    assert "Set-Cookie" not in (await sign_in(client, "li", "wrong again")).headers


async def test_sign_in_is_rate_limited_per_username_and_ip(client: TestClient) -> None:
    for _ in range(3):
        assert (await sign_in(client, "li", "guess")).status == 401
    # Even the right password is refused for a while: the limit is per username ...
    assert (await sign_in(client, "li")).status == 429
    # ... and per address (the test client always comes from 127.0.0.1).
    assert (await sign_in(client, "wang")).status == 429


async def test_posts_need_a_same_site_origin(client: TestClient) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        for headers in ({}, {"Origin": "https://evil.example"}):
            response = await session.post(
                client.make_url("/agent/login"),
                data={"username": "li", "password": PASSWORDS["li"]},
                headers=headers,
                allow_redirects=False,
            )
            assert response.status == 403
        response = await session.post(client.make_url("/agent/logout"), allow_redirects=False)
        assert response.status == 403


async def test_logout_clears_the_cookie(client: TestClient) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.post(
            client.make_url("/agent/logout"), headers={"Origin": origin(client)}, allow_redirects=False
        )
        assert response.status == 303 and response.headers["Location"] == "/agent/login"
        assert response.cookies["chatbot_agent"].value == ""


async def test_agent_socket_guards(client: TestClient) -> None:
    good = await session_cookie(client, "li")
    own = origin(client)
    assert await ws_status(client, Origin=own) == 401
    tampered = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert await ws_status(client, Origin=own, Cookie=f"chatbot_agent={tampered}") == 401
    forged = SessionSigner("another secret", ttl=60).issue("li")
    assert await ws_status(client, Origin=own, Cookie=f"chatbot_agent={forged}") == 401
    expired = SessionSigner(SECRET, ttl=-10).issue("li")
    assert await ws_status(client, Origin=own, Cookie=f"chatbot_agent={expired}") == 401
    assert await ws_status(client, Cookie=f"chatbot_agent={good}") == 403
    assert await ws_status(client, Origin="https://evil.example", Cookie=f"chatbot_agent={good}") == 403
    assert await ws_status(client, Origin=own, Cookie=f"chatbot_agent={good}") == 101


async def test_user_socket_cannot_act_as_an_agent(client: TestClient) -> None:
    li = await AgentSocket.open(client, "li")
    try:
        async with client.ws_connect("/ws") as ws:
            conversation = (await receive_json(ws))["conversation"]
            await ws.send_json({"type": "handoff"})
            await receive_json(ws)
            for kind in ("claim", "reply", "end", "agent"):
                await ws.send_json({"type": kind, "conversation": conversation, "text": "我是客服"})
                error = await receive_json(ws)
                assert (error["type"], error["code"]) == ("error", "unknown_type")
        assert (await li.next("queue"))["items"] == []
        queue = await li.next("queue")
        assert [i["conversation"] for i in queue["items"]] == [conversation]  # still waiting, unclaimed
    finally:
        await li.close()


def test_hashpw_command_prints_a_verifiable_hash() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatbot_server.agents.hashpw", "--stdin"],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    encoded = done.stdout.strip()
    assert encoded.startswith("pbkdf2_sha256$")
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse batterY", encoded)
