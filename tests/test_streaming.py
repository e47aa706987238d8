"""Streamed replies (#18): reply_start / reply_delta / reply, across reconnects, stops and deadlines."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import Bot, Delta, Reply, Turn, Typing, setup
from chatbot_server.bots import BotEvent
from chatbot_server.keys import STORE_KEY

from .helpers import make_settings, receive_json, receive_until
from .redis_server import unique_prefix
from .stream_bots import PacedBot, Page

pytestmark = pytest.mark.timeout(30)


class ScriptBot(Bot):
    """Writes each reply piece by piece; the test hands it the pieces (None ends the reply)."""

    uses_history = False

    def __init__(self) -> None:
        self.pieces: asyncio.Queue[str | None] = asyncio.Queue()
        self.started = asyncio.Event()
        self.closed = asyncio.Event()  # the turn's generator was closed (a stop cancels it)

    async def respond(self, turn: Turn) -> AsyncIterator[BotEvent]:
        self.started.set()
        yield Typing()
        text = ""
        try:
            while (piece := await self.pieces.get()) is not None:
                text += piece
                yield Delta(piece)
        finally:
            self.closed.set()
        yield Reply(text=text, intent="stream", confidence=1.0)

    def write(self, *pieces: str | None) -> None:
        for piece in pieces:
            self.pieces.put_nowait(piece)


Apps = Callable[..., Awaitable[tuple[TestClient, TestClient, ScriptBot]]]


@pytest.fixture(params=["memory", "redis"])
def apps(request: pytest.FixtureRequest, aiohttp_client: Any) -> Apps:
    """Two servers of one deployment (memory: the same one twice) sharing one scripted bot."""

    async def make(**bot: Any) -> tuple[TestClient, TestClient, ScriptBot]:
        script = ScriptBot()
        sections: dict[str, Any] = {"history": {"takeover_timeout": 0.5}, "bot": {"timeout": 5, **bot}}
        if request.param == "memory":
            app = web.Application()
            setup(app, make_settings(**sections), bot=script)
            client = await aiohttp_client(app)
            return client, client, script
        url = request.getfixturevalue("redis_server")
        sections["layer"] = {"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}}
        clients = []
        for _ in range(2):
            app = web.Application()
            setup(app, make_settings(**sections), bot=script)
            clients.append(await aiohttp_client(app))
        return clients[0], clients[1], script

    return make


async def read_until(ws: aiohttp.ClientWebSocketResponse, page: Page, done: Callable[[], bool]) -> list[dict[str, Any]]:
    seen = []
    while not done():
        f = await receive_json(ws)
        page.see(f)
        seen.append(f)
    return seen


async def ask(ws: aiohttp.ClientWebSocketResponse, text: str, mid: str) -> dict[str, Any]:
    await ws.send_json({"type": "message", "text": text, "id": mid})
    return await receive_until(ws, "user")


async def test_a_reply_grows_by_deltas_and_ends_stored_once(apps: Apps) -> None:
    one, _, bot = await apps()
    ws = await one.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ask(ws, "怎么挂失", "m1")
    assert (await receive_json(ws))["type"] == "typing"
    bot.write("您好,")
    start = await receive_json(ws)
    assert (start["type"], start["reply_to"]) == ("reply_start", "m1") and "seq" not in start
    first = await receive_json(ws)
    assert (first["type"], first["id"], first["offset"], first["text"]) == ("reply_delta", start["id"], 0, "您好,")
    bot.write("请拨打95516。", None)
    second = await receive_json(ws)
    assert (second["offset"], second["text"]) == (3, "请拨打95516。")
    final = await receive_json(ws)
    assert (final["type"], final["id"], final["msg"], final["reply_to"]) == (
        "reply",
        start["id"],
        "您好,请拨打95516。",
        "m1",
    )
    assert final["seq"] == 3 and not final.get("stopped")
    await ws.close()
    stored = await one.app[STORE_KEY].transcript(conversation)
    assert [f["type"] for f in stored] == ["greeting", "user", "reply"]  # no start, no deltas


async def test_offsets_count_what_javascript_counts(apps: Apps) -> None:
    one, _, bot = await apps()
    ws = await one.ws_connect("/ws")
    await receive_json(ws)
    await ask(ws, "hi", "m1")
    bot.write("😀", "好", None)
    page = Page()
    frames = await read_until(ws, page, lambda: bool(page.done))
    assert [f["offset"] for f in frames if f["type"] == "reply_delta"] == [0, 2]  # the emoji is 2 units
    await ws.close()


async def test_a_page_that_reconnects_mid_reply_gets_every_character_once(apps: Apps) -> None:
    one, two, bot = await apps()
    ws = await one.ws_connect("/ws")
    greeting = await receive_json(ws)
    user = await ask(ws, "境外取现", "m1")
    page = Page()
    bot.write("第一段。", "第二段。")
    await read_until(ws, page, lambda: page.writing.get(next(iter(page.writing), ""), "") == "第一段。第二段。")
    await ws.close()  # the page reloads (or its network dropped) while the bot writes on

    bot.write("第三段。")
    ws = await two.ws_connect(f"/ws?conversation={greeting['conversation']}&last_seq={user['seq']}")
    assert (await receive_until(ws, "system"))["event"] == "resumed"
    bot.write("第四段。", None)
    await read_until(ws, page, lambda: bool(page.done))
    (final,) = page.done.values()
    assert final["msg"] == "第一段。第二段。第三段。第四段。"
    assert final["seq"] == 3
    await ws.close()


async def test_a_reconnect_before_the_first_piece_sees_the_whole_reply(apps: Apps) -> None:
    one, two, bot = await apps()
    ws = await one.ws_connect("/ws")
    greeting = await receive_json(ws)
    user = await ask(ws, "转账限额", "m1")
    await asyncio.wait_for(bot.started.wait(), 5)
    await ws.close()
    ws = await two.ws_connect(f"/ws?conversation={greeting['conversation']}&last_seq={user['seq']}")
    assert (await receive_until(ws, "system"))["event"] == "resumed"
    bot.write("单笔", "五万元。", None)
    page = Page()
    await read_until(ws, page, lambda: bool(page.done))
    assert [f["msg"] for f in page.done.values()] == ["单笔五万元。"]
    await ws.close()


async def test_the_user_can_stop_a_reply_and_keeps_what_was_written(apps: Apps) -> None:
    one, _, bot = await apps()
    ws = await one.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ask(ws, "分期", "m1")
    bot.write("分期手续费")
    page = Page()
    frames = await read_until(ws, page, lambda: any(page.writing.values()))
    reply = next(f["id"] for f in frames if f["type"] == "reply_start")
    await ws.send_json({"type": "stop", "id": reply})
    final = await receive_until(ws, "reply")
    assert (final["id"], final["msg"], final["stopped"]) == (reply, "分期手续费", True)
    await asyncio.wait_for(bot.closed.wait(), 5)  # the bot's generator was closed, not left running
    # The socket stays open and answers the next question.
    await ask(ws, "再问一个", "m2")
    bot.write("好的", None)
    assert (await receive_until(ws, "reply"))["msg"] == "好的"
    await ws.close()
    stored = await one.app[STORE_KEY].transcript(conversation)
    assert [(f["type"], f.get("stopped")) for f in stored][2] == ("reply", True)


async def test_a_stop_for_another_reply_or_none_running_changes_nothing(apps: Apps) -> None:
    one, _, bot = await apps()
    ws = await one.ws_connect("/ws")
    await receive_json(ws)
    await ws.send_json({"type": "stop"})  # nothing is being written
    await ask(ws, "年费", "m1")
    bot.write("免年费")
    await receive_until(ws, "reply_delta")
    await ws.send_json({"type": "stop", "id": "not-this-one"})
    bot.write("的条件", None)
    final = await receive_until(ws, "reply")
    assert final["msg"] == "免年费的条件" and "stopped" not in final
    await ws.close()


async def test_messages_sent_while_a_reply_is_written_wait_their_turn(apps: Apps) -> None:
    one, _, bot = await apps()
    ws = await one.ws_connect("/ws")
    await receive_json(ws)
    await ask(ws, "第一问", "m1")
    bot.write("第一")
    await receive_until(ws, "reply_delta")
    await ws.send_json({"type": "message", "text": "第二问", "id": "m2"})
    bot.write("答", None)
    order = []
    while len(order) < 2:
        f = await receive_json(ws)
        if f["type"] in ("reply", "user"):
            order.append((f["type"], f["msg"], f["seq"]))
    # The second question is stored (and echoed) after the first answer: the order a reload shows.
    assert order == [("reply", "第一答", 3), ("user", "第二问", 4)]
    bot.write(None)
    await receive_until(ws, "reply")
    await ws.close()


async def test_no_first_piece_in_time_is_an_apology(apps: Apps) -> None:
    one, _, _ = await apps(timeout=0.3, reply_timeout=5)
    ws = await one.ws_connect("/ws")
    await receive_json(ws)
    await ask(ws, "hi", "m1")
    final = await receive_until(ws, "reply")
    assert final["intent"] == "bot_timeout" and "id" not in final
    await ws.close()


async def test_a_reply_that_outlives_its_deadline_ends_failed(apps: Apps) -> None:
    one, _, bot = await apps(timeout=2, reply_timeout=2.5)
    ws = await one.ws_connect("/ws")
    await receive_json(ws)
    await ask(ws, "hi", "m1")
    bot.write("写了一半")  # the first piece in time; then nothing more: the whole-reply deadline passes
    start = await receive_until(ws, "reply_start")
    final = await receive_until(ws, "reply", timeout=10)
    assert (final["id"], final["failed"], final["intent"]) == (start["id"], True, "bot_timeout")
    await ws.close()


async def test_a_hundred_drops_mid_reply_lose_and_repeat_nothing(
    request: pytest.FixtureRequest, aiohttp_client: Any
) -> None:
    """The page drops its socket every few frames while answers are written and comes back on
    either of two servers on one Redis, sending again a question it saw no echo of (as the chat
    page does): every answer ends once, whole, and what its deltas showed is the start of it.
    (bench/stream_reconnect.py runs the same for 1,000 drops.)"""
    rng = random.Random(18)
    bot = PacedBot(interval=0.003, pieces=30)
    url = request.getfixturevalue("redis_server")
    sections: dict[str, Any] = {
        "layer": {"backend": "redis", "redis": {"url": url, "prefix": unique_prefix()}},
        "limits": {"rate_per_second": 1000, "rate_burst": 1000, "replay_per_ip": 10**6},
    }
    clients = []
    for _ in range(2):
        app = web.Application()
        setup(app, make_settings(**sections), bot=bot)
        clients.append(await aiohttp_client(app))
    page, conversation, last_seq, asked = Page(), "", 0, 0
    unconfirmed: dict[str, Any] | None = None  # the question sent, until its echo is seen
    for _ in range(100):
        query = f"?conversation={conversation}&last_seq={last_seq}" if conversation else ""
        ws = await rng.choice(clients).ws_connect(f"/ws{query}")
        if unconfirmed is not None and conversation:
            await ws.send_json(unconfirmed)
        for _ in range(rng.randint(1, 12)):
            f = await receive_json(ws)
            page.see(f)
            conversation = f.get("conversation", conversation)
            last_seq = max(last_seq, f.get("seq", 0))
            if f["type"] == "user" and unconfirmed is not None and f.get("id") == unconfirmed["id"]:
                unconfirmed = None
            if f["type"] in ("greeting", "reply") and "seq" in f and not page.writing and unconfirmed is None:
                asked += 1
                unconfirmed = {"type": "message", "text": f"问{asked}", "id": f"m{asked}"}
                await ws.send_json(unconfirmed)
        await ws.close()
    assert len(page.done) >= 5, "too few answers ended to say anything"
    answered = [final["reply_to"] for final in page.done.values()]
    assert len(answered) == len(set(answered)), "a question was answered twice"
    for reply, final in page.done.items():
        assert final["msg"] == "".join(bot.script(f"问{final['reply_to'][1:]}"))
        assert final["msg"].startswith(page.streamed[reply]), f"deltas made {page.streamed[reply]!r}"
