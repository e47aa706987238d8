"""The default ChatConsumer over real websockets: the seed's behaviour, protocol v1, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestClient

from chatbot_server import Bot, Reply, Turn, create_app, setup
from chatbot_server.bots import Typing
from chatbot_server.keys import CONNECTIONS_KEY, LAYER_KEY
from chatbot_server.layers import MemoryChannelLayer

from .helpers import make_settings, receive_close, receive_json, receive_until

ClientMaker = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def chat_client(aiohttp_client: Any) -> ClientMaker:
    async def make(bot_instance: Bot | None = None, **sections: Any) -> TestClient:
        app = web.Application()
        setup(app, make_settings(**sections), bot=bot_instance)
        return await aiohttp_client(app)

    return make


async def test_greeting_is_the_seeds(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        greeting = await receive_json(ws)
    assert greeting["msg"] == "您好,很高兴为您服务。"  # 您, like every other message (#16)
    assert greeting["talk"] is False
    assert greeting["type"] == "greeting"
    assert greeting["seq"] == 1
    assert isinstance(greeting["ts"], int)
    assert len(greeting["conversation"]) >= 32


async def test_seed_form_gets_the_seeds_reply(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "怎么挂失"})
        reply = await receive_json(ws)
    assert reply["msg"] == "我正在思考你的问题{怎么挂失}"
    assert reply["talk"] is True
    assert reply["type"] == "reply"
    assert reply["intent"] == "echo" and reply["confidence"] == 1.0
    assert reply["seq"] == 3  # 1 greeting, 2 the user's message, 3 the reply


async def test_typed_message_is_confirmed_then_answered(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "message", "text": "你好", "id": "m1"})
        echo = await receive_json(ws)
        reply = await receive_json(ws)
    assert (echo["type"], echo["msg"], echo["id"], echo["seq"]) == ("user", "你好", "m1", 2)
    assert (reply["type"], reply["reply_to"], reply["seq"]) == ("reply", "m1", 3)


async def test_the_same_client_id_is_answered_once(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        for _ in range(2):
            await ws.send_json({"type": "message", "text": "你好", "id": "dup"})
        await ws.send_json({"type": "message", "text": "下一个", "id": "next"})
        frames = [await receive_json(ws) for _ in range(4)]
    assert [(f["type"], f.get("id") or f.get("reply_to")) for f in frames] == [
        ("user", "dup"),
        ("reply", "dup"),
        ("user", "next"),
        ("reply", "next"),
    ]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('"text"', "bad_frame"),
        ("{}", "bad_frame"),
        ('{"text": 5}', "bad_frame"),
        ('{"text": null}', "bad_frame"),
        ('{"text": "   "}', "empty_text"),
        ('{"text": ""}', "empty_text"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": 7, "text": "x"}', "bad_frame"),
        ('{"type": "message", "text": "x", "id": 5}', "bad_frame"),
        ('{"type": "resume", "conversation": 5}', "bad_frame"),
        ('{"type": "resume", "conversation": "abc", "last_seq": -1}', "bad_frame"),
        ('{"text": "' + "长" * 501 + '"}', "too_long"),
    ],
)
async def test_bad_input_gets_an_error_frame_and_the_socket_stays(
    chat_client: ClientMaker, raw: str, code: str
) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_str(raw)
        error = await receive_json(ws)
        assert error["type"] == "error" and error["code"] == code
        assert error["talk"] is False and error["msg"]
        await ws.send_json({"text": "还在吗"})
        assert (await receive_json(ws))["msg"] == "我正在思考你的问题{还在吗}"


async def test_binary_frames_get_an_error_frame(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_bytes(b"\xff\xfe binary")
        assert (await receive_json(ws))["code"] == "binary_not_supported"
        await ws.send_json({"text": "ok"})
        assert (await receive_json(ws))["type"] == "reply"


async def test_text_limit_comes_from_config(chat_client: ClientMaker) -> None:
    client = await chat_client(limits={"max_text_length": 10})
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "一二三四五六七八九十"})
        assert (await receive_json(ws))["type"] == "reply"
        await ws.send_json({"text": "一二三四五六七八九十一"})
        assert (await receive_json(ws))["code"] == "too_long"


async def test_oversized_frame_closes_with_1009(chat_client: ClientMaker) -> None:
    client = await chat_client(limits={"max_msg_size": 1024})
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_str('{"text": "' + "x" * 2000 + '"}')
        await receive_close(ws)
        assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG
    # The server is fine afterwards.
    async with client.ws_connect("/ws") as ws:
        assert (await receive_json(ws))["type"] == "greeting"


class RaisingBot(Bot):
    async def answer(self, turn: Turn) -> Reply:
        if turn.text == "boom":
            raise RuntimeError("the bot broke")
        return Reply(text="fine", intent="ok")


async def test_a_raising_bot_gets_an_apology_and_the_socket_stays(
    chat_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    client = await chat_client(bot_instance=RaisingBot())
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"text": "boom"})
        apology = await receive_json(ws)
        assert apology["type"] == "reply" and apology["intent"] == "bot_error"
        assert apology["msg"] == "抱歉,系统暂时无法回答,请稍后再试。"
        await ws.send_json({"text": "again"})
        assert (await receive_json(ws))["msg"] == "fine"
    assert any(r.exc_info and "the bot broke" in str(r.exc_info[1]) for r in caplog.records)


class HandoffBot(Bot):
    """Answers "转人工" as the FAQ bot does: a reply that asks for a human."""

    def answer(self, turn: Turn) -> Reply:
        if turn.text == "转人工":
            return Reply(text="好的,正在为您转接人工客服,请稍候。", intent="human_agent", handoff=True)
        return Reply(text=f"answer to {turn.text}")


async def test_without_agents_a_handoff_reply_is_one_answer_naming_the_hotline(chat_client: ClientMaker) -> None:
    # The default install has no agents: no "正在为您转接" followed by an error frame (#16).
    client = await chat_client(bot_instance=HandoffBot())
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "message", "text": "转人工", "id": "m1"})
        assert (await receive_json(ws))["type"] == "user"
        reply = await receive_json(ws)
        await ws.send_json({"type": "message", "text": "next", "id": "m2"})
        after = [await receive_json(ws) for _ in range(2)]  # no error frame in between
        await ws.send_json({"type": "handoff"})  # a scripted client: the page shows no button
        refused = await receive_json(ws)
    assert (reply["type"], reply["intent"], reply["reply_to"]) == ("reply", "human_agent", "m1")
    assert reply["msg"].startswith("抱歉,在线人工客服暂未开通。") and "95516" in reply["msg"]
    assert [(f["type"], f["msg"]) for f in after] == [("user", "next"), ("reply", "answer to next")]
    assert (refused["type"], refused["code"], refused["msg"]) == ("error", "unsupported", reply["msg"])


async def test_the_default_install_never_offers_a_human_it_has_not(chat_client: ClientMaker) -> None:
    # The shipped FAQ bot without agents: its handoff and its fallbacks name 95516, never 转人工.
    client = await chat_client(bot={"name": "faq", "options": {"watch": False}})
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        answers = []
        for text in ("我要转人工", "zzzz qqqq", "我想问一下关于卡的事情", "今天天气怎么样"):
            await ws.send_json({"type": "message", "text": text})
            answers.append(await receive_until(ws, "reply"))
    assert answers[0]["intent"] == "human_agent"
    assert all("95516" in a["msg"] and "转人工" not in a["msg"] for a in answers), answers


async def test_with_agents_the_faq_fallback_offers_a_human(chat_client: ClientMaker) -> None:
    # The same bot with agents configured: the app tells it so (BotContext.agents), and a question
    # it cannot answer offers 转人工, which the page then has a button for.
    from .agent_support import agent_section

    client = await chat_client(bot={"name": "faq", "options": {"watch": False}}, agents=agent_section())
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        await ws.send_json({"type": "message", "text": "zzzz qqqq"})
        answer = await receive_until(ws, "reply")
    assert "转人工" in answer["msg"], answer


class SlowBot(Bot):
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def respond(self, turn: Turn) -> AsyncIterator[Typing | Reply]:
        yield Typing()
        if turn.text == "slow":
            await self.release.wait()
        yield Reply(text=f"answer to {turn.text}")


async def test_a_slow_bot_times_out_without_blocking_other_sockets(chat_client: ClientMaker) -> None:
    bot = SlowBot()
    client = await chat_client(bot_instance=bot, bot={"name": "echo", "timeout": 0.5})
    async with client.ws_connect("/ws") as slow, client.ws_connect("/ws") as fast:
        await receive_json(slow)
        await receive_json(fast)
        await slow.send_json({"text": "slow"})
        assert (await receive_json(slow))["type"] == "typing"
        await fast.send_json({"text": "quick"})
        assert (await receive_until(fast, "reply"))["msg"] == "answer to quick"
        apology = await receive_json(slow)
        assert apology["intent"] == "bot_timeout" and apology["confidence"] == 0.0
    bot.release.set()


async def test_group_users_membership_follows_the_socket(chat_client: ClientMaker) -> None:
    client = await chat_client()
    layer = client.app[LAYER_KEY]
    registry = client.app[CONNECTIONS_KEY]
    assert isinstance(layer, MemoryChannelLayer)
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        assert len(layer.group_members("users")) == 1
        async with client.ws_connect("/ws") as ws2:
            await receive_json(ws2)
            assert len(layer.group_members("users")) == 2
        # The server leaves the group once its clean-up after the close handshake has run.
        async with asyncio.timeout(5):
            await registry.wait_until(1)
        assert len(layer.group_members("users")) == 1
    async with asyncio.timeout(5):
        await registry.wait_until(0)
    assert layer.group_members("users") == []


async def test_group_send_reaches_two_clients(chat_client: ClientMaker) -> None:
    client = await chat_client()
    layer = client.app[LAYER_KEY]
    async with client.ws_connect("/ws") as a, client.ws_connect("/ws") as b:
        await receive_json(a)
        await receive_json(b)
        await layer.group_send("users", {"type": "chat.broadcast", "text": "系统将于今晚维护"})
        for ws in (a, b):
            notice = await receive_json(ws)
            assert (notice["type"], notice["msg"], notice["talk"]) == ("system", "系统将于今晚维护", False)


async def test_unknown_layer_message_types_are_ignored(chat_client: ClientMaker) -> None:
    client = await chat_client()
    layer = client.app[LAYER_KEY]
    async with client.ws_connect("/ws") as ws:
        await receive_json(ws)
        for kind in ("no.such.handler", "on.connect", "close", "_finish", "send.json"):
            await layer.group_send("users", {"type": kind})
        await layer.group_send("users", {"type": "chat.broadcast", "text": "after"})
        assert (await receive_json(ws))["msg"] == "after"


async def test_resume_replays_after_last_seq(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws") as ws:
        conversation = (await receive_json(ws))["conversation"]
        await ws.send_json({"type": "message", "text": "一", "id": "1"})
        await receive_json(ws)
        await receive_json(ws)
    async with client.ws_connect(f"/ws?conversation={conversation}&last_seq=1") as ws:
        replay = [await receive_json(ws) for _ in range(3)]
    assert [(f["type"], f.get("seq")) for f in replay] == [("user", 2), ("reply", 3), ("system", None)]
    assert replay[2]["event"] == "resumed" and replay[2]["last_seq"] == 3


async def test_unknown_conversation_starts_afresh(chat_client: ClientMaker) -> None:
    client = await chat_client()
    async with client.ws_connect("/ws?conversation=not-a-real-one&last_seq=4") as ws:
        notice = await receive_json(ws)
        greeting = await receive_json(ws)
    assert notice["event"] == "conversation_expired"
    assert greeting["type"] == "greeting" and greeting["conversation"] != "not-a-real-one"


async def test_foreign_origin_is_refused(chat_client: ClientMaker) -> None:
    client = await chat_client()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
    assert refused.value.status == 403
    host = f"http://{client.host}:{client.port}"
    async with client.ws_connect("/ws", headers={"Origin": host}) as ws:
        assert (await receive_json(ws))["type"] == "greeting"


async def test_allowed_origins_from_config(chat_client: ClientMaker) -> None:
    client = await chat_client(security={"allowed_origins": ["https://bank.example"]})
    async with client.ws_connect("/ws", headers={"Origin": "https://bank.example"}) as ws:
        assert (await receive_json(ws))["type"] == "greeting"


async def test_shutdown_closes_sockets_with_1001_and_a_notice(aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(make_settings()))
    ws = await client.ws_connect("/ws")
    await receive_json(ws)
    shutdown = asyncio.ensure_future(client.app.shutdown())
    notice = await receive_json(ws)
    assert notice["type"] == "system" and "维护" in notice["msg"]
    await receive_close(ws)
    assert ws.close_code == WSCloseCode.GOING_AWAY
    await shutdown


async def test_the_standalone_server_freezes_its_start_up_heap_for_the_gc(aiohttp_client: Any) -> None:
    import gc

    gc.unfreeze()
    try:
        client = await aiohttp_client(create_app(make_settings(), handle_signals=True))
        assert gc.get_freeze_count() > 0  # start-up objects are out of the cyclic GC's way
        async with client.ws_connect("/ws") as ws:
            assert (await receive_json(ws))["type"] == "greeting"
    finally:
        gc.unfreeze()


async def test_healthz_reports_the_layer(chat_client: ClientMaker) -> None:
    client = await chat_client()
    response = await client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok" and body["layer"]["backend"] == "memory"


async def test_chat_page_renders_config_texts(chat_client: ClientMaker) -> None:
    client = await chat_client(ui={"title": "测试<客服>"})
    response = await client.get("/")
    html = await response.text()
    assert response.status == 200
    assert "<title>测试&lt;客服&gt;</title>" in html  # autoescaped
    assert "聊天记录" in html and 'lang="zh-CN"' in html
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    for asset in ("chat.js", "chat.css"):
        static = await client.get(f"/static/{asset}")
        assert static.status == 200
    assert "jquery" not in html.lower() and "http://" not in html and "https://" not in html


async def test_the_default_placeholder_names_no_key(chat_client: ClientMaker) -> None:
    # A phone has no Enter key (#16): the default placeholder and its label are device-neutral.
    html = await (await chat_client()).get("/")
    text = await html.text()
    assert 'placeholder="请输入您的问题"' in text and ">请输入您的问题</label>" in text


async def test_a_conversation_whose_start_fails_is_released(chat_client: ClientMaker) -> None:
    from chatbot_server.keys import HOLDERS_KEY, STORE_KEY

    client = await chat_client()
    layer = client.app[LAYER_KEY]
    store = client.app[STORE_KEY]
    original = layer.group_add
    created: list[str] = []
    create = store.create

    async def recording_create() -> str:
        created.append(await create())
        return created[-1]

    store.create = recording_create  # type: ignore[method-assign]

    async def failing_group_add(group: str, channel: str) -> None:
        if group.startswith("conv."):
            raise RuntimeError("layer down")
        await original(group, channel)

    layer.group_add = failing_group_add  # type: ignore[method-assign]
    async with client.ws_connect("/ws") as ws:
        closed = await receive_close(ws)
        assert closed.data == WSCloseCode.INTERNAL_ERROR
    await client.app[CONNECTIONS_KEY].wait_until(0)
    assert len(created) == 1 and not store.owns(created[0])
    assert len(client.app[HOLDERS_KEY]) == 0
