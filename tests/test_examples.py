"""The runnable examples in examples/ work as docs/consumers.md says, over real websockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSCloseCode, web

import chatbot_server
from chatbot_server import ConfigError
from chatbot_server.bots import BotContext, build_bot
from chatbot_server.keys import CONNECTIONS_KEY
from examples.custom_bot import KeywordBot
from examples.custom_consumer import ROOM, make_app

from .helpers import make_settings, receive_close, receive_json


def keyword_bot(**options: Any) -> KeywordBot:
    return KeywordBot.from_options(options, BotContext())


async def test_keyword_bot_streams_typing_then_the_matching_reply(aiohttp_client: Any) -> None:
    app = web.Application()
    chatbot_server.setup(app, make_settings(), bot=keyword_bot(rules={"挂失": "请拨打客服电话挂失。"}))
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        assert (await receive_json(ws))["type"] == "greeting"
        await ws.send_json({"type": "message", "text": "卡丢了要挂失", "id": "q1"})
        assert (await receive_json(ws))["type"] == "user"
        assert (await receive_json(ws))["type"] == "typing"
        reply = await receive_json(ws)
        assert (reply["type"], reply["msg"], reply["intent"], reply["reply_to"]) == (
            "reply",
            "请拨打客服电话挂失。",
            "keyword:挂失",
            "q1",
        )
        await ws.send_json({"text": "你好"})
        assert (await receive_json(ws))["type"] == "typing"
        fallback = await receive_json(ws)
    assert (fallback["intent"], fallback["confidence"], fallback["suggestions"]) == ("out_of_scope", 0.0, ["挂失"])


def test_keyword_bot_is_chosen_by_import_path_with_options() -> None:
    bot = build_bot("examples.custom_bot:KeywordBot", {"rules": {"额度": "可在 App 中申请提额。"}, "fallback": "不懂"})
    assert isinstance(bot, KeywordBot) and bot.rules == {"额度": "可在 App 中申请提额。"} and bot.fallback == "不懂"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"tone": "friendly"}, "bot.options"),
        ({"rules": ["挂失"]}, "bot.options.rules"),
        ({"fallback": ""}, "bot.options.fallback"),
    ],
)
def test_keyword_bot_rejects_bad_options_naming_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        keyword_bot(**options)
    assert error.value.key == key


async def test_room_consumer_relays_to_every_member_and_leaves_the_group(aiohttp_client: Any) -> None:
    layer = chatbot_server.MemoryChannelLayer()
    await layer.start()
    try:
        client = await aiohttp_client(make_app(make_settings(), layer=layer))
        async with client.ws_connect("/ws2") as a, client.ws_connect("/ws2") as b:
            me = (await receive_json(a))["you"]
            await receive_json(b)
            assert len(layer.group_members(ROOM)) == 2
            await a.send_str("大家好")
            for ws in (a, b):
                assert await receive_json(ws) == {"type": "message", "from": me, "text": "大家好"}
            # Base-class methods are never reachable from a layer message; the room keeps working.
            await layer.group_send(ROOM, {"type": "close"})
            await a.send_bytes(b"\x00")
            assert (await receive_json(a))["code"] == "binary_not_supported"
            await b.send_str("/bye")
            await receive_close(b)
            assert b.close_code == WSCloseCode.OK
        # The server leaves the group in its clean-up, which runs after the close handshake.
        async with asyncio.timeout(5):
            await client.app[CONNECTIONS_KEY].wait_until(0)
        assert layer.group_members(ROOM) == []
    finally:
        await layer.close()


async def test_announce_reaches_room_and_chat_sockets_through_the_layer(aiohttp_client: Any) -> None:
    client = await aiohttp_client(make_app(make_settings()))
    async with client.ws_connect("/ws2") as room, client.ws_connect("/ws") as chat:
        await receive_json(room)
        await receive_json(chat)
        response = await client.post("/announce", data="今晚 22:00 维护".encode())
        assert response.status == 200
        assert await receive_json(room) == {"type": "message", "from": "server", "text": "今晚 22:00 维护"}
        notice = await receive_json(chat)
    assert (notice["type"], notice["event"], notice["msg"]) == ("system", "broadcast", "今晚 22:00 维护")
