"""Resume across reconnects: same process and another process on one Redis, exact transcripts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import Bot, Reply, Turn, setup
from chatbot_server.store.redis import RedisConversationStore

from .helpers import make_settings, receive_json, receive_until
from .redis_server import unique_prefix

pytestmark = pytest.mark.timeout(30)


class GateBot(Bot):
    """Echoes; a message starting with "wait" is answered only once `gate` is set."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.answered: list[str] = []

    async def answer(self, turn: Turn) -> Reply:
        if turn.text.startswith("wait"):
            self.waiting.set()
            await self.gate.wait()
        self.answered.append(turn.text)
        return Reply(text=f"答:{turn.text}", intent="echo", confidence=1.0)


Apps = Callable[[], Awaitable[tuple[TestClient, TestClient, GateBot]]]


@pytest.fixture(params=["memory", "redis"])
def apps(request: pytest.FixtureRequest, aiohttp_client: Any) -> Apps:
    """Two servers of one deployment (memory: the same process twice) and their shared bot."""

    async def make() -> tuple[TestClient, TestClient, GateBot]:
        bot = GateBot()
        sections: dict[str, Any] = {"bot": {"name": "echo", "timeout": 20}, "history": {"takeover_timeout": 0.5}}
        if request.param == "memory":
            app = web.Application()
            setup(app, make_settings(**sections), bot=bot)
            client = await aiohttp_client(app)
            return client, client, bot
        url = request.getfixturevalue("redis_server")
        sections["layer"] = {"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}}
        clients = []
        for _ in range(2):
            app = web.Application()
            setup(app, make_settings(**sections), bot=bot)
            clients.append(await aiohttp_client(app))
        return clients[0], clients[1], bot

    return make


# The client goes away without waiting long for the server's close reply (it may be busy answering).
QUICK_CLOSE = aiohttp.ClientWSTimeout(ws_close=0.05)


async def drop(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close from the client side; a server busy answering replies to the close later."""
    await ws.close()


async def say(ws: aiohttp.ClientWebSocketResponse, text: str, mid: str) -> None:
    await ws.send_json({"type": "message", "text": text, "id": mid})


async def test_drop_and_resume_elsewhere_loses_and_repeats_nothing(apps: Apps) -> None:
    one, two, _ = await apps()
    seen: list[dict[str, Any]] = []
    ws = await one.ws_connect("/ws")
    seen.append(await receive_json(ws))
    conversation = seen[0]["conversation"]
    for n in range(3):
        await say(ws, f"问题{n}", f"m{n}")
        seen.append(await receive_json(ws))
        seen.append(await receive_json(ws))
    last_seen = seen[3]["seq"]  # the client saw only part of it before the drop
    await ws.close()

    ws = await two.ws_connect(f"/ws?conversation={conversation}&last_seq={last_seen}")
    replay = [await receive_json(ws) for _ in range(3)]
    resumed = await receive_json(ws)
    assert resumed["event"] == "resumed" and resumed["last_seq"] == 7
    assert replay == seen[last_seen:]
    await say(ws, "问题3", "m3")
    more = [await receive_json(ws), await receive_json(ws)]
    await ws.close()
    got = seen[:last_seen] + replay + more
    assert [f["seq"] for f in got] == list(range(1, 10))
    assert [f.get("msg") for f in got[1:]] == [
        "问题0",
        "答:问题0",
        "问题1",
        "答:问题1",
        "问题2",
        "答:问题2",
        "问题3",
        "答:问题3",
    ]


async def test_answer_in_flight_reaches_the_resumed_socket(apps: Apps) -> None:
    one, two, bot = await apps()
    ws = await one.ws_connect("/ws", timeout=QUICK_CLOSE)
    greeting = await receive_json(ws)
    await say(ws, "wait for it", "slow")
    echo = await receive_json(ws)
    await asyncio.wait_for(bot.waiting.wait(), 5)
    await drop(ws)  # the socket drops while the bot is answering

    ws = await two.ws_connect(f"/ws?conversation={greeting['conversation']}&last_seq={echo['seq']}")
    assert (await receive_json(ws))["event"] == "resumed"
    bot.gate.set()
    reply = await receive_json(ws)
    assert (reply["type"], reply["reply_to"], reply["seq"], reply["msg"]) == ("reply", "slow", 3, "答:wait for it")
    await say(ws, "wait for it", "slow")  # the page sends it again: it must not be answered twice
    await say(ws, "下一个", "next")
    after = [await receive_json(ws), await receive_json(ws)]
    assert [(f["type"], f["seq"]) for f in after] == [("user", 4), ("reply", 5)]
    assert bot.answered == ["wait for it", "下一个"]
    await ws.close()


async def test_answer_made_while_nobody_listens_is_replayed(apps: Apps) -> None:
    one, two, bot = await apps()
    ws = await one.ws_connect("/ws", timeout=QUICK_CLOSE)
    greeting = await receive_json(ws)
    await say(ws, "wait a bit", "slow")
    await receive_json(ws)
    await asyncio.wait_for(bot.waiting.wait(), 5)
    await drop(ws)
    bot.gate.set()
    # Reconnect until the stored answer is replayed (the old socket notices its close by itself).
    async with asyncio.timeout(10):
        while True:
            ws = await two.ws_connect(f"/ws?conversation={greeting['conversation']}&last_seq=2")
            first = await receive_json(ws)
            if first["type"] == "reply":
                break
            await ws.close()
            await asyncio.sleep(0.05)  # the old process finishes the answer on its own time
    assert (first["reply_to"], first["seq"]) == ("slow", 3)
    assert (await receive_json(ws))["event"] == "resumed"
    await ws.close()


async def test_a_second_socket_takes_the_conversation_over(apps: Apps) -> None:
    one, two, _ = await apps()
    first = await one.ws_connect("/ws")
    greeting = await receive_json(first)
    second = await two.ws_connect(f"/ws?conversation={greeting['conversation']}&last_seq=1")
    assert (await receive_json(second))["event"] == "resumed"
    notice = await receive_until(first, "system")
    assert notice["event"] == "taken_over"
    closed = await first.receive(timeout=5)
    assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4002
    await say(second, "还在吗", "a")
    assert [(await receive_json(second))["seq"] for _ in range(2)] == [2, 3]
    await second.close()


async def test_unknown_conversation_never_reads_another(apps: Apps) -> None:
    one, _, _ = await apps()
    ws = await one.ws_connect("/ws?conversation=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA&last_seq=0")
    notice = await receive_json(ws)
    greeting = await receive_json(ws)
    assert notice["event"] == "conversation_expired" and greeting["type"] == "greeting"
    assert greeting["seq"] == 2 and greeting["conversation"] != "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    await ws.close()


async def test_message_stored_but_never_answered_is_answered_once(aiohttp_client: Any, redis_server: str) -> None:
    """The server died after storing the user's message: the resume answers it, a resend does not."""
    prefix = unique_prefix()
    dead = RedisConversationStore(url=redis_server, prefix=prefix, process_id="deadprocess")
    await dead.start()
    conversation = await dead.create()
    dead.append(conversation, {"type": "greeting", "msg": "你好", "talk": False, "ts": 1})
    dead.append(conversation, {"type": "user", "msg": "卡丢了", "talk": True, "ts": 2, "id": "lost"})
    await dead.flush()  # written, but the owner key stays: the process "died" without releasing
    bot = GateBot()
    app = web.Application()
    setup(
        app,
        make_settings(
            layer={"backend": "redis", "redis": {"url": redis_server, "prefix": prefix}},
            history={"takeover_timeout": 0.3},
        ),
        bot=bot,
    )
    client = await aiohttp_client(app)
    ws = await client.ws_connect(f"/ws?conversation={conversation}&last_seq=2")
    assert (await receive_json(ws))["event"] == "resumed"
    reply = await receive_json(ws)
    assert (reply["reply_to"], reply["seq"], reply["msg"]) == ("lost", 3, "答:卡丢了")
    await say(ws, "卡丢了", "lost")
    await say(ws, "谢谢", "t")
    assert [(await receive_json(ws))["seq"] for _ in range(2)] == [4, 5]
    assert bot.answered == ["卡丢了", "谢谢"]
    await ws.close()
    await dead.close()
