"""Helpers for handoff and agent tests: accounts, sign-in, agent sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import Bot, Reply, Turn, setup
from chatbot_server.agents.passwords import hash_password

from .helpers import make_settings
from .redis_server import unique_prefix

PASSWORDS = {"li": "li-password-1", "wang": "wang-password-2"}
NAMES = {"li": "客服小李", "wang": "客服小王"}
SECRET = "test-session-secret"


def agent_section(**extra: Any) -> dict[str, Any]:
    """The agents: config section with two accounts (cheap hashes: tests need speed, not strength)."""
    accounts = [
        {"username": u, "name": NAMES[u], "password_hash": hash_password(p, iterations=1000)}
        for u, p in PASSWORDS.items()
    ]
    # Manual routing unless a test asks for auto: the handoff tests claim by hand (test_routing.py
    # covers auto-assignment). They also queue users before any console is open, so nobody online
    # still queues (test_left_messages.py covers the offer of a message instead).
    sections = {"accounts": accounts, "session_secret": SECRET, "routing": "manual", "queue_when_offline": True}
    return {**sections, **extra}


class HandoffBot(Bot):
    """Echoes; "人工" asks for a human; "??" is a fallback answer."""

    def __init__(self) -> None:
        self.answered: list[str] = []

    async def answer(self, turn: Turn) -> Reply:
        self.answered.append(turn.text)
        if "人工" in turn.text:
            return Reply(text="好的,为您转人工。", intent="human_agent", confidence=1.0, handoff=True)
        if turn.text == "??":
            return Reply(text="没听懂。", intent="out_of_scope", confidence=0.1, fallback=True)
        return Reply(text=f"答:{turn.text}", intent="echo", confidence=1.0)


def origin(client: TestClient) -> str:
    """The Origin a browser on the test server's pages would send."""
    return str(client.make_url("/")).rstrip("/")


async def sign_in(client: TestClient, username: str, password: str | None = None) -> aiohttp.ClientResponse:
    """POST the sign-in form from a cookie-less session; the response carries Set-Cookie."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.post(
            client.make_url("/agent/login"),
            data={"username": username, "password": PASSWORDS.get(username, "") if password is None else password},
            headers={"Origin": origin(client)},
            allow_redirects=False,
        )
        await response.read()
        return response


async def session_cookie(client: TestClient, username: str) -> str:
    """A valid session cookie value for `username`."""
    response = await sign_in(client, username)
    assert response.status == 303, response.status
    return response.cookies["chatbot_agent"].value


class AgentSocket:
    """An agent console's socket."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws

    @classmethod
    async def open(cls, client: TestClient, username: str) -> AgentSocket:
        cookie = await session_cookie(client, username)
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        ws = await session.ws_connect(
            client.make_url("/agent/ws"), headers={"Cookie": f"chatbot_agent={cookie}", "Origin": origin(client)}
        )
        return cls(session, ws)

    async def next(self, kind: str | None = None, timeout: float = 5) -> dict[str, Any]:
        """The next frame (of type `kind`, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                data: dict[str, Any] = await self.ws.receive_json()
                if kind is None or data["type"] == kind:
                    return data

    async def frame_of(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """The next live conversation frame of type `kind` (user, agent, system...)."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.next("frame")
                if data["frame"]["type"] == kind:
                    return data["frame"]

    async def send(self, **data: Any) -> None:
        await self.ws.send_json(data)

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


# Fixtures shared by the handoff tests: one process (memory) or two apps on a private Redis
# (users on the first, the console on the last).
Deployment = tuple[TestClient, TestClient, HandoffBot]


@pytest.fixture(params=["memory", "redis"])
def deploy(request: pytest.FixtureRequest, aiohttp_client: Any) -> Callable[..., Awaitable[Deployment]]:
    async def make(**agents: Any) -> Deployment:
        bot = HandoffBot()
        sections: dict[str, Any] = {"agents": agent_section(**agents)}
        count = 1
        if request.param == "redis":
            url = request.getfixturevalue("redis_server")
            sections["layer"] = {"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}}
            count = 2
        clients = []
        for _ in range(count):
            app = web.Application()
            setup(app, make_settings(**sections), bot=bot)
            clients.append(await aiohttp_client(app))
        return clients[0], clients[-1], bot

    return make


@pytest.fixture
async def agents() -> AsyncIterator[list[AgentSocket]]:
    opened: list[AgentSocket] = []
    yield opened
    for agent in opened:
        await agent.close()


async def apps_of(
    request: pytest.FixtureRequest, aiohttp_client: Any, sections: dict[str, Any], *, bot: Bot | None = None
) -> tuple[TestClient, TestClient]:
    """For a fixture with params ["memory", "redis"]: one app twice on memory, or two apps of one
    deployment (two processes, as far as the code can tell) on the test Redis, with `sections`."""
    if request.param != "redis":
        app = web.Application()
        setup(app, make_settings(**sections), bot=bot)
        client = await aiohttp_client(app)
        return client, client
    url = request.getfixturevalue("redis_server")
    sections = {**sections, "layer": {"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}}}
    clients = []
    for _ in range(2):
        app = web.Application()
        setup(app, make_settings(**sections), bot=bot)
        clients.append(await aiohttp_client(app))
    return clients[0], clients[1]
