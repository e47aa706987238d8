"""Issue #14: bounded replay with paging of older history, the per-IP replay budget, the storage quota."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.chat.budgets import AddressBuckets
from chatbot_server.errors import ProtocolError
from chatbot_server.keys import STORE_KEY
from chatbot_server.protocol import HistoryRequest, parse_inbound

from .helpers import make_settings, receive_json
from .redis_server import unique_prefix

pytestmark = pytest.mark.timeout(60)

BEHIND_PROXY = {"trusted_proxies": ["127.0.0.1"]}
FAST = {"rate_per_second": 1000, "rate_burst": 1000}  # the socket's own limit is not under test here


async def make_client(aiohttp_client: Any, **sections: Any) -> TestClient:
    app = web.Application()
    setup(app, make_settings(**sections))
    client: TestClient = await aiohttp_client(app)
    return client


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def conversation_of(client: TestClient, replies: int, ip: str = "198.51.100.1") -> str:
    """A conversation of a greeting (seq 1) and `replies` typed messages with their answers."""
    async with client.ws_connect("/ws", headers=from_ip(ip)) as ws:
        conversation = str((await receive_json(ws))["conversation"])
        for n in range(replies):
            await ws.send_json({"type": "message", "text": f"问题{n}", "id": f"m{n}"})
        last = 0
        while last < 1 + 2 * replies:
            last = (await receive_json(ws)).get("seq", last)
    return conversation


async def until_system(
    ws: aiohttp.ClientWebSocketResponse, *events: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The frames received up to the first system frame with one of `events`, and that frame."""
    frames: list[dict[str, Any]] = []
    while True:
        data = await receive_json(ws)
        if data["type"] == "system" and data.get("event") in events:
            return frames, data
        frames.append(data)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings sections for the store: memory, or the Redis store on a test redis-server."""
    if request.param == "memory":
        return {}
    url = request.getfixturevalue("redis_server")
    return {"layer": {"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}}}


async def test_resume_replays_one_page_then_pages_until_everything_is_there(
    aiohttp_client: Any, backend: dict[str, Any]
) -> None:
    one = await make_client(aiohttp_client, server=BEHIND_PROXY, limits=FAST, **backend)
    conversation = await conversation_of(one, 125)  # 250 frames after the greeting: seqs 2..251
    # With Redis, the resume goes to another server of the deployment: it reads what was written.
    two = await make_client(aiohttp_client, server=BEHIND_PROXY, limits=FAST, **backend) if backend else one
    async with two.ws_connect(f"/ws?conversation={conversation}&last_seq=1", headers=from_ip("198.51.100.2")) as ws:
        replayed, more = await until_system(ws, "history_more", "resumed")
        assert [f["seq"] for f in replayed] == list(range(152, 252))  # replay_frames (100), the newest
        assert (more["event"], more["before"], more["after"], "seq" in more) == ("history_more", 152, 1, False)
        resumed = await receive_json(ws)
        assert (resumed["event"], resumed["last_seq"]) == ("resumed", 251)
        seen = [f["seq"] for f in replayed]
        pages = 0
        while more["event"] == "history_more":
            await ws.send_json({"type": "history", "before": more["before"], "after": more["after"]})
            page, more = await until_system(ws, "history_more", "history_done")
            assert 0 < len(page) <= 100 and [f["seq"] for f in page] == sorted(f["seq"] for f in page)
            seen += [f["seq"] for f in page]
            pages += 1
        assert pages == 2 and more["after"] == 1
    assert sorted(seen) == list(range(2, 252)) and len(set(seen)) == len(seen)  # each exactly once
    assert replayed[-1]["msg"] == "我正在思考你的问题{问题124}"


async def test_the_per_ip_replay_budget_refuses_with_rate_limited(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, server=BEHIND_PROXY, limits={**FAST, "replay_per_ip": 150})
    conversation = await conversation_of(client, 125)
    url = f"/ws?conversation={conversation}&last_seq=1"
    async with client.ws_connect(url, headers=from_ip("203.0.113.7")) as ws:
        replayed, more = await until_system(ws, "history_more")
        assert len(replayed) == 100  # 50 frames of this minute's 150 left
        assert (await receive_json(ws))["event"] == "resumed"
        await ws.send_json({"type": "history", "before": more["before"], "after": 1})
        refused = await receive_json(ws)
        assert (refused["type"], refused["code"]) == ("error", "rate_limited")
        # Nothing was replayed for that request: the next frame is the answer to the next message.
        await ws.send_json({"type": "message", "text": "还在吗", "id": "x1"})
        assert (await receive_json(ws))["type"] == "user"

    # Another socket of the same address shares the budget: refused, but told what it lacks.
    async with client.ws_connect(url, headers=from_ip("203.0.113.7")) as ws:
        refused = await receive_json(ws)
        assert (refused["type"], refused["code"]) == ("error", "rate_limited")
        more = await receive_json(ws)
        assert (more["event"], more["before"], more["after"]) == ("history_more", 254, 1)
        assert (await receive_json(ws))["event"] == "resumed"

    # Another address has its own budget.
    async with client.ws_connect(url, headers=from_ip("203.0.113.8")) as ws:
        replayed, _ = await until_system(ws, "history_more")
        assert [f["seq"] for f in replayed] == list(range(154, 254))
    metrics = await (await client.get("/metrics")).text()
    assert "chatbot_frames_replayed_total 200.0" in metrics


async def test_a_message_beyond_the_quota_is_refused_and_not_stored(aiohttp_client: Any) -> None:
    client = await make_client(aiohttp_client, server=BEHIND_PROXY, history={"quota_per_ip": 1024})
    async with client.ws_connect("/ws", headers=from_ip("192.0.2.5")) as ws:
        conversation = (await receive_json(ws))["conversation"]
        refused = None
        for n in range(20):
            text = f"第{n}条" + "长" * 100
            await ws.send_json({"type": "message", "text": text, "id": f"q{n}"})
            first = await receive_json(ws)
            if first["type"] == "error":
                refused = (text, first)
                break
            assert first["type"] == "user" and (await receive_json(ws))["type"] == "reply"
        assert refused is not None, "the quota never ran out"
        text, error = refused
        assert (error["code"], error["msg"]) == ("quota_exceeded", "抱歉,您发送的消息过多,请稍后再试。")
        # Not answered either: the next frame the server sends answers the next request.
        await ws.send_json({"type": "handoff"})
        assert (await receive_json(ws))["code"] == "unsupported"
    stored = await client.app[STORE_KEY].transcript(conversation)
    assert all(f.get("msg") != text and f.get("reply_to") != f"q{n}" for f in stored)
    assert 1 <= n <= 3  # 1 KiB holds the greeting and a message of 300 bytes with its answer, not much more


async def test_loopback_is_limited_like_any_address(aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    # An attack script on the same host is an anonymous client too (it was exempt before).
    client = await make_client(aiohttp_client, limits={**FAST, "replay_per_ip": 5})
    conversation = await conversation_of(client, 10, ip="")
    async with client.ws_connect(f"/ws?conversation={conversation}&last_seq=0") as ws:
        replayed, _ = await until_system(ws, "resumed")  # more than the budget: granted from a full one
        assert [f["seq"] for f in replayed] == list(range(1, 22))
    with caplog.at_level(logging.WARNING, logger="chatbot_server.chat"):
        async with client.ws_connect(f"/ws?conversation={conversation}&last_seq=0") as ws:
            frames, _ = await until_system(ws, "resumed")
    assert [f.get("code") for f in frames if f["type"] == "error"] == ["rate_limited"]
    assert "server.trusted_proxies" in caplog.text  # the likely cause, said once


async def test_a_trusted_proxys_own_address_is_not_limited(aiohttp_client: Any) -> None:
    # Behind a listed proxy X-Forwarded-For names each user; a request without it is the proxy's.
    client = await make_client(aiohttp_client, server=BEHIND_PROXY, limits={**FAST, "replay_per_ip": 5})
    conversation = await conversation_of(client, 10, ip="")
    for _ in range(2):
        async with client.ws_connect(f"/ws?conversation={conversation}&last_seq=0") as ws:
            replayed, _ = await until_system(ws, "resumed")
            assert [f["seq"] for f in replayed] == list(range(1, 22))


def test_history_frames_are_validated() -> None:
    assert parse_inbound('{"type": "history", "before": 52}', max_text_length=10) == HistoryRequest(52, 0)
    assert parse_inbound('{"type":"history","before":52,"after":3}', max_text_length=10) == HistoryRequest(52, 3)
    for bad in ('{"type":"history"}', '{"type":"history","before":"5"}', '{"type":"history","before":true}',
                '{"type":"history","before":5,"after":5}', '{"type":"history","before":-1}'):  # fmt: skip
        with pytest.raises(ProtocolError) as caught:
            parse_inbound(bad, max_text_length=10)
        assert caught.value.code == "bad_frame"


def test_address_buckets_refill_over_the_window_and_forget_full_buckets() -> None:
    buckets = AddressBuckets(100, 60.0)
    assert buckets.take("a", 100, now=1000.0) and not buckets.take("a", 1, now=1000.0)
    assert buckets.take("b", 100, now=1000.0)  # per address
    assert not buckets.take("a", 50, now=1029.0) and buckets.take("a", 50, now=1030.0)  # 100 per 60 s
    buckets.charge("a", 30, now=1030.0)  # what was stored counts, even beyond the budget
    assert buckets.tokens("a", 1030.0) == -30
    buckets.take("c", 1, now=1200.0)  # a minute after the last sweep: full buckets are dropped
    assert len(buckets) == 1


async def test_the_chat_page_loads_older_messages_on_request() -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    from .browser_support import launch_browser, live_server

    async with live_server(make_settings(limits={"replay_frames": 10})) as server:
        store = server.store
        conversation = await store.create()
        store.append(conversation, {"type": "greeting", "msg": "您好", "talk": False, "ts": 1})
        for n in range(12):  # seqs 2..25
            store.append(conversation, {"type": "user", "msg": f"问{n}", "talk": True, "ts": 1})
            store.append(conversation, {"type": "reply", "msg": f"答{n}", "talk": True, "ts": 1})
        await store.release(conversation)
        expected = ["您好"] + [t for n in range(12) for t in (f"问{n}", f"答{n}")]
        async with playwright_api.async_playwright() as playwright:
            browser = await launch_browser(playwright)
            try:
                page = await browser.new_page()
                page.set_default_timeout(5000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(server.url)
                bubbles = page.locator("#messages .bubble")
                # The page stores its own new conversation when that greeting arrives: wait for it,
                # or it may overwrite the state set below (a race seen once in five runs).
                await playwright_api.expect(bubbles).to_have_count(1)
                state = {"conversation": conversation, "lastSeq": 25}
                await page.evaluate(f"sessionStorage.setItem('chatbot_server.conversation', '{json.dumps(state)}')")
                await page.reload()
                button = page.get_by_role("button", name="加载更早的消息")
                await playwright_api.expect(bubbles).to_have_count(10)
                assert await bubbles.all_text_contents() == expected[15:]
                for shown in (20, 25):
                    await button.click()
                    await playwright_api.expect(bubbles).to_have_count(shown)
                    assert await bubbles.all_text_contents() == expected[25 - shown :]  # in order, no repeats
                await playwright_api.expect(button).to_be_hidden()
                assert not errors
            finally:
                await browser.close()
