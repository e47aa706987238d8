"""Agent sign-in, sessions and the guards on every agent route and socket."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.agents.passwords import DEFAULT_ITERATIONS, PasswordChecker, hash_password, verify_password
from chatbot_server.agents.sessions import SessionSigner
from chatbot_server.sockets.codes import CLOSE_SESSION_ENDED

from .agent_support import PASSWORDS, SECRET, AgentSocket, agent_section, origin, session_cookie, sign_in
from .helpers import make_settings, receive_json
from .redis_server import unique_prefix
from .test_handoff_multiprocess import AgentServer

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
        added = await li.next("queue_added")
        assert added["item"]["conversation"] == conversation  # still waiting, unclaimed
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


# ----------------------------------------------------------- #14: sign-in cost, proxies, session end
@functools.cache
def slow_hash() -> tuple[str, float]:
    """A hash of PASSWORDS["li"] that takes about a second to verify, and how long one verify took."""
    started = time.perf_counter()
    hash_password("calibrate", iterations=20_000)
    iterations = max(20_000, int(20_000 * 1.0 / max(time.perf_counter() - started, 1e-4)))
    started = time.perf_counter()
    encoded = hash_password(PASSWORDS["li"], iterations=iterations)
    return encoded, time.perf_counter() - started


@pytest.fixture
async def slow_client(aiohttp_client: Any) -> TestClient:
    encoded, _ = slow_hash()
    section = agent_section(login_failures=100)
    section["accounts"] = [{"username": "li", "name": "客服小李", "password_hash": encoded}]
    app = web.Application()
    setup(app, make_settings(agents=section))
    return await aiohttp_client(app)


async def test_event_loop_stays_responsive_during_failed_sign_ins(slow_client: TestClient) -> None:
    _, one_hash = slow_hash()
    largest_gap = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal largest_gap
        loop = asyncio.get_running_loop()
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            largest_gap = max(largest_gap, loop.time() - before)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    attempts = [sign_in(slow_client, "li", "wrong password"), sign_in(slow_client, "nobody", "wrong password")] * 2
    statuses = [r.status for r in await asyncio.gather(*attempts)]
    done.set()
    await ticking
    assert statuses == [401] * 4
    # On the loop, each verify would stall it for a whole hash (~1 s); in threads it keeps ticking.
    assert largest_gap < one_hash / 2, (largest_gap, one_hash)


async def test_unknown_username_costs_as_much_as_a_wrong_password(slow_client: TestClient) -> None:
    known, unknown = [], []
    for _ in range(2):  # the fastest of two of each: a loaded machine only ever makes one slower
        for name, times in (("li", known), ("nobody", unknown)):
            started = time.perf_counter()
            assert (await sign_in(slow_client, name, "wrong password")).status == 401
            times.append(time.perf_counter() - started)
    assert min(unknown) >= min(known) / 2, (known, unknown)


def test_dummy_hash_costs_as_much_as_the_costliest_account() -> None:
    checker = PasswordChecker([hash_password("x" * 8, iterations=1000), hash_password("y" * 8, iterations=7000)])
    assert checker.dummy_iterations == 7000
    assert PasswordChecker([]).dummy_iterations == DEFAULT_ITERATIONS


async def test_cookie_is_secure_behind_a_trusted_tls_proxy(aiohttp_client: Any) -> None:
    def app(trusted: list[str]) -> web.Application:
        application = web.Application()
        setup(application, make_settings(agents=agent_section(), server={"trusted_proxies": trusted}))
        return application

    async def set_cookie(client: TestClient, **headers: str) -> str:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            response = await session.post(
                client.make_url("/agent/login"),
                data={"username": "li", "password": PASSWORDS["li"]},
                headers={"Origin": origin(client), **headers},
                allow_redirects=False,
            )
            assert response.status == 303
            return response.headers["Set-Cookie"]

    behind_proxy = await aiohttp_client(app(["127.0.0.1"]))
    assert "Secure" in await set_cookie(behind_proxy, **{"X-Forwarded-Proto": "https"})
    assert "Secure" not in await set_cookie(behind_proxy, **{"X-Forwarded-Proto": "http"})
    assert "Secure" not in await set_cookie(behind_proxy)
    direct = await aiohttp_client(app([]))  # an untrusted peer cannot ask for it
    assert "Secure" not in await set_cookie(direct, **{"X-Forwarded-Proto": "https"})


async def open_console(base: str, cookie: str, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{base}/agent/ws", headers={"Cookie": f"chatbot_agent={cookie}", "Origin": base})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> int | None:
    """The code of the server's close frame (frames before it are skipped), as a browser reports it.

    Not ws.close_code: aiohttp's client sets 1006 there when the server has already gone by the time
    its close reply is written, although the server's close frame named its code.
    """
    async with asyncio.timeout(timeout):
        while (msg := await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            pass
    return int(msg.data) if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code


async def sign_out(base: str, cookie: str) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        response = await session.post(
            f"{base}/agent/logout", headers={"Cookie": f"chatbot_agent={cookie}", "Origin": base}, allow_redirects=False
        )
        assert response.status == 303


async def test_sign_out_closes_the_sessions_sockets_and_revokes_its_cookie(client: TestClient) -> None:
    base = origin(client)
    cookie, other = await session_cookie(client, "li"), await session_cookie(client, "li")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        first, second = await open_console(base, cookie, session), await open_console(base, cookie, session)
        elsewhere = await open_console(base, other, session)  # li signed in on another computer
        await sign_out(base, cookie)
        assert await closed_with(first) == CLOSE_SESSION_ENDED
        assert await closed_with(second) == CLOSE_SESSION_ENDED
        # The copied cookie is refused from now on; li's other session goes on.
        assert await ws_status(client, Origin=base, Cookie=f"chatbot_agent={cookie}") == 401
        assert (await raw_get(client, "/agent", Cookie=f"chatbot_agent={cookie}")).status == 302
        await elsewhere.send_json({"type": "open", "conversation": "none"})
        while (answer := await elsewhere.receive_json(timeout=5))["type"] != "error":
            pass  # queue updates
        assert answer["code"] == "not_yours"
        await elsewhere.close()


async def test_agent_socket_closes_when_the_session_expires(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings(agents=agent_section(session_ttl=2)))
    client = await aiohttp_client(app)
    base = origin(client)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        ws = await open_console(base, await session_cookie(client, "li"), session)
        assert await closed_with(ws, timeout=15) == CLOSE_SESSION_ENDED


async def console_refused(session: aiohttp.ClientSession, url: str, cookie: str) -> None:
    """The console socket at `url` refuses the cookie (401), as for a signed-out session."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"{url}/agent/ws", headers={"Cookie": f"chatbot_agent={cookie}", "Origin": url})
    assert refused.value.status == 401


@pytest.mark.timeout(60)
async def test_sign_out_on_one_process_closes_the_socket_on_another(tmp_path: Path, redis_server: str) -> None:
    prefix = unique_prefix()
    one, two = AgentServer(tmp_path, "one", redis_server, prefix), AgentServer(tmp_path, "two", redis_server, prefix)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            await one.wait_ready(session)
            await two.wait_ready(session)
            cookie = (await one.sign_in(session)).cookies["chatbot_agent"].value
            ws = await open_console(two.url, cookie, session)
            await sign_out(one.url, cookie)
            assert await closed_with(ws) == CLOSE_SESSION_ENDED
            await console_refused(session, two.url, cookie)
    finally:
        one.stop()
        two.stop()


@pytest.mark.timeout(60)
async def test_a_process_started_after_a_sign_out_refuses_the_cookie(tmp_path: Path, redis_server: str) -> None:
    # The sign-out's layer message reaches only processes listening then; the set in Redis the rest.
    prefix = unique_prefix()
    one = AgentServer(tmp_path, "one", redis_server, prefix)
    two = None
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            await one.wait_ready(session)
            cookie = (await one.sign_in(session)).cookies["chatbot_agent"].value
            await sign_out(one.url, cookie)
            two = AgentServer(tmp_path, "two", redis_server, prefix)  # starts after the sign-out
            await two.wait_ready(session)
            await console_refused(session, two.url, cookie)
    finally:
        one.stop()
        if two is not None:
            two.stop()
