"""The console's tools (#16): typing indicator, canned replies, transcript export, the bot's suggestion.

Socket tests run on one process (memory) and on two app instances sharing a private Redis, with
the customer on the first and the agent on the second (agent_support.deploy).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import Bot, Reply, Turn, setup
from chatbot_server.agents.export import transcript_lines
from chatbot_server.agents.suggest import suggests
from chatbot_server.agents.typing import TypingGate
from chatbot_server.bots import build_bot
from chatbot_server.config.canned import expand
from chatbot_server.errors import ConfigError
from chatbot_server.identity import sign_identity
from chatbot_server.keys import STORE_KEY

from .agent_support import (  # noqa: F401
    AgentSocket,
    Deployment,
    HandoffBot,
    agent_section,
    agents,
    apps_of,
    deploy,
    session_cookie,
)
from .helpers import make_settings, receive_json, receive_until

pytestmark = pytest.mark.timeout(30)

CARD = "6222021234567878"  # passes Luhn: mask_sensitive keeps its last 4 only


async def queued_user(client: TestClient) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A customer who pressed 转人工."""
    ws = await client.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "handoff"})
    assert (await receive_until(ws, "system"))["event"] == "queued"
    return ws, conversation


async def claimed(agent: AgentSocket, ws: aiohttp.ClientWebSocketResponse, conversation: str) -> None:
    await agent.send(type="claim", conversation=conversation)
    await agent.next("claimed")
    assert (await receive_until(ws, "system"))["event"] == "agent_joined"


# ------------------------------------------------------------------ typing indicator
async def test_typing_reaches_the_customer_throttled_and_is_never_stored(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    ws, conversation = await queued_user(one)
    li = await AgentSocket.open(two, "li")
    wang = await AgentSocket.open(two, "wang")
    agents += [li, wang]
    await claimed(li, ws, conversation)

    await wang.send(type="typing", conversation=conversation)
    assert (await wang.next("error"))["code"] == "not_yours"
    for _ in range(3):  # the second and third are within TYPING_INTERVAL: dropped
        await li.send(type="typing", conversation=conversation)
    await li.send(type="reply", conversation=conversation, text="您好,请讲")
    typing = await receive_json(ws)
    assert (typing["type"], typing["who"]) == ("typing", "agent")
    assert "seq" not in typing  # transient
    said = await receive_json(ws)  # no second typing notice came in between
    assert (said["type"], said["msg"]) == ("agent", "您好,请讲")

    async with asyncio.timeout(5):
        kinds: list[str] = []
        while "agent" not in kinds:
            # The transcript is the store's, written behind (history.write_interval): one opened at
            # once may not have the reply yet, so ask again until it does (CI flake: it asked once).
            await li.send(type="open", conversation=conversation)
            kinds = [f["type"] for f in (await li.next("transcript"))["frames"]]
    assert "typing" not in kinds
    await ws.close()


def test_typing_gate_lets_one_notice_per_interval_per_conversation() -> None:
    now = [100.0]
    gate = TypingGate(interval=2.0, clock=lambda: now[0])
    assert gate.allow("a") and gate.allow("b")
    assert not gate.allow("a")
    now[0] += 1.9
    assert not gate.allow("a")
    now[0] += 0.2
    assert gate.allow("a")


# ------------------------------------------------------------------ canned replies
def test_canned_variables_expand_and_an_absent_name_still_reads_well() -> None:
    text = "您好{name},我是{agent},热线 {hotline}。"
    assert expand(text, name="张三", agent="客服小李", hotline="95516") == "您好张三,我是客服小李,热线 95516。"
    assert expand(text, name="", agent="客服小李", hotline="95516") == "您好,我是客服小李,热线 95516。"


@pytest.mark.parametrize(
    ("canned", "message"),
    [
        ({"shortcut": "/hi", "title": "问候", "text": "您好{customer}"}, "unknown variable {customer}"),
        ({"shortcut": "/hi", "title": "问候", "text": "您好{}"}, "unknown variable {}"),
        ({"shortcut": "/hi", "title": "问候", "text": "您好{name"}, "a brace without its pair"),
        ({"shortcut": "hi", "title": "问候", "text": "您好"}, "shortcut must be '/'"),
        ({"shortcut": "/h i", "title": "问候", "text": "您好"}, "shortcut must be '/'"),
        ({"shortcut": "/hi", "title": "", "text": "您好"}, "needs a title and a text"),
    ],
)
def test_bad_canned_replies_are_config_errors(canned: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        make_settings(agents={"canned": [canned]})
    assert caught.value.key is not None and caught.value.key.startswith("agents.canned[0]")


def test_a_shortcut_used_twice_is_a_config_error() -> None:
    twice = [{"shortcut": "/hi", "title": "a", "text": "您好"}, {"shortcut": "/hi", "title": "b", "text": "您好"}]
    with pytest.raises(ConfigError, match="used twice"):
        make_settings(agents={"canned": twice})


async def test_the_console_page_carries_the_canned_replies_and_the_hotline(aiohttp_client: Any) -> None:
    canned = [{"shortcut": "/hi", "title": "问候", "text": "您好{name},热线 {hotline}"}]
    app = web.Application()
    setup(app, make_settings(agents=agent_section(canned=canned), ui={"hotline": "400-800-1234"}))
    client = await aiohttp_client(app)
    cookie = await session_cookie(client, "li")
    page = await (await client.get("/agent", headers={"Cookie": f"chatbot_agent={cookie}"})).text()
    found = re.search(r'<script type="application/json" id="agent-config">(.*?)</script>', page, re.S)
    assert found is not None
    config = json.loads(found.group(1))
    assert (config["canned"], config["hotline"]) == (canned, "400-800-1234")
    assert config["exportPath"] == "/agent/conversations/{id}/transcript.txt"


# ------------------------------------------------------------------ transcript export
async def test_export_needs_a_session_and_the_holder_and_is_masked(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    ws, conversation = await queued_user(one)
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await claimed(li, ws, conversation)
    await ws.send_json({"type": "message", "text": f"我的卡号 {CARD} 被冻结了", "id": "m1"})
    assert (await li.frame_of("user"))["msg"] == "我的卡号 ************7878 被冻结了"
    await li.send(type="reply", conversation=conversation, text="好的,马上为您查询")
    await li.frame_of("agent")
    path = f"/agent/conversations/{conversation}/transcript.txt"

    assert (await two.get(path)).status == 401
    wang = await session_cookie(two, "wang")
    assert (await two.get(path, headers={"Cookie": f"chatbot_agent={wang}"})).status == 403
    li_cookie = {"Cookie": f"chatbot_agent={await session_cookie(two, 'li')}"}
    await one.app[STORE_KEY].flush()  # the holder writes behind (history.write_interval)
    response = await two.get(path, headers=li_cookie)
    text = await response.text()
    assert response.status == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.content_type == "text/plain"
    assert CARD not in text and "************7878" in text
    assert re.search(r"\] 用户:我的卡号 \*+7878 被冻结了\n", text)
    assert "客服 客服小李:好的,马上为您查询" in text

    as_json = await (await two.get(path.replace(".txt", ".json"), headers=li_cookie)).json()
    speakers = [line["speaker"] for line in as_json["lines"]]
    assert "用户" in speakers and speakers[-1] == "客服 客服小李"
    assert (await two.get(f"/agent/conversations/{conversation}/transcript.html", headers=li_cookie)).status == 404
    await ws.close()


def test_export_masks_every_line_again() -> None:
    frames = [
        {"type": "user", "msg": f"卡号 {CARD}", "ts": 1_700_000_000_000, "seq": 1},
        {"type": "error", "msg": "出错了", "ts": 1_700_000_000_001, "seq": 2},
        {"type": "agent", "msg": "收到", "agent": "客服小李", "ts": 1_700_000_000_002, "seq": 3},
    ]
    lines = transcript_lines(frames)
    assert [(x["speaker"], x["text"]) for x in lines] == [("用户", "卡号 ************7878"), ("客服 客服小李", "收到")]


# ------------------------------------------------------------------ the bot's suggestion
@pytest.fixture(params=["memory", "redis"])
async def faq_deploy(
    request: pytest.FixtureRequest, aiohttp_client: Any
) -> AsyncIterator[tuple[TestClient, TestClient]]:
    """The real FAQ bot, built by the app from settings."""
    sections: dict[str, Any] = {"agents": agent_section(), "bot": {"name": "faq", "options": {"watch": False}}}
    yield await apps_of(request, aiohttp_client, sections)


async def test_the_faq_bots_suggestion_for_the_last_question(
    faq_deploy: tuple[TestClient, TestClient], agents: list[AgentSocket]
) -> None:
    one, two = faq_deploy
    ws, conversation = await queued_user(one)
    await ws.send_json({"type": "message", "text": "银行卡丢了怎么挂失", "id": "m1"})
    await receive_until(ws, "user")  # stored; the bot is silent while the customer waits
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.send(type="claim", conversation=conversation)
    first = await li.next("suggestion")
    assert (first["conversation"], first["question"], first["intent"]) == (
        conversation,
        "银行卡丢了怎么挂失",
        "card_lost_report",
    )
    assert "挂失" in first["answer"] and 0 < first["score"] <= 1

    await ws.send_json({"type": "message", "text": "在国外ATM一天能取多少现金", "id": "m2"})
    second = await li.next("suggestion")
    assert (second["question"], second["intent"]) == ("在国外ATM一天能取多少现金", "overseas_atm_withdrawal_limit")
    await ws.close()


class SlowBot(Bot):
    """Answers "慢…" only when released: a slow model."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def answer(self, turn: Turn) -> Reply:
        if "慢" in turn.text:
            await self.release.wait()
        return Reply(text=f"答:{turn.text}", intent="slow", confidence=0.5)


async def test_a_slow_suggestion_does_not_hold_up_the_console(aiohttp_client: Any, agents: list[AgentSocket]) -> None:
    bot = SlowBot()
    app = web.Application()
    setup(app, make_settings(agents=agent_section(suggestions=True)), bot=bot)  # a custom bot: only when asked
    client = await aiohttp_client(app)
    ws, conversation = await queued_user(client)
    await ws.send_json({"type": "message", "text": "慢问题", "id": "m1"})
    await receive_until(ws, "user")
    li = await AgentSocket.open(client, "li")
    agents.append(li)
    await claimed(li, ws, conversation)
    await li.send(type="reply", conversation=conversation, text="请稍候")
    seen = [(await li.next("frame"))["frame"]["type"] for _ in range(2)]
    assert "agent" in seen  # the console's frames flow while the bot still thinks
    assert (await receive_until(ws, "agent"))["msg"] == "请稍候"
    bot.release.set()
    suggestion = await li.next("suggestion")
    assert (suggestion["question"], suggestion["answer"], suggestion["intent"]) == ("慢问题", "答:慢问题", "slow")
    await ws.close()


def test_auto_suggestions_ask_only_the_offline_builtin_bots() -> None:
    assert suggests(build_bot("echo", {}), "auto") and suggests(build_bot("faq", {"watch": False}), "auto")
    assert not suggests(
        build_bot("llm", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "faq": {"watch": False}}), "auto"
    )
    assert not suggests(SlowBot(), "auto") and suggests(SlowBot(), True)
    assert not suggests(build_bot("echo", {}), False)


async def test_suggestions_off(aiohttp_client: Any, agents: list[AgentSocket]) -> None:
    app = web.Application()
    setup(app, make_settings(agents=agent_section(suggestions=False)))
    client = await aiohttp_client(app)
    ws, conversation = await queued_user(client)
    await ws.send_json({"type": "message", "text": "问题", "id": "m1"})
    await receive_until(ws, "user")
    li = await AgentSocket.open(client, "li")
    agents.append(li)
    await claimed(li, ws, conversation)
    await li.send(type="reply", conversation=conversation, text="您好")
    # Every frame up to the agent's own line: no suggestion among them (it would have come first).
    kinds = []
    async with asyncio.timeout(5):
        while not kinds or kinds[-1] != "agent":
            data = await li.next()
            kinds.append(data["frame"]["type"] if data["type"] == "frame" else data["type"])
    assert "suggestion" not in kinds
    await ws.close()


async def test_the_pages_carry_the_tools_stable_ids(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings(agents=agent_section()))
    client = await aiohttp_client(app)
    chat = await (await client.get("/")).text()
    assert 'id="typing"' in chat and "客服正在输入…" in chat
    cookie = await session_cookie(client, "li")
    console = await (await client.get("/agent", headers={"Cookie": f"chatbot_agent={cookie}"})).text()
    for element in ("canned-list", "export-transcript", "suggestion", "use-suggestion", "notify-toggle"):
        assert f'id="{element}"' in console
    assert "agent_tools.js" in console
    assert (await client.get("/static/agent_tools.js")).status == 200


async def test_export_names_the_verified_customer(aiohttp_client: Any, agents: list[AgentSocket]) -> None:
    secret = "identity-secret-of-at-least-32-characters"
    app = web.Application()
    setup(app, make_settings(agents=agent_section(), identity={"secret": secret}), bot=HandoffBot())
    client = await aiohttp_client(app)
    ws = await client.ws_connect(f"/ws?identity={sign_identity(secret, 'cust-7', name='李四')}")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "handoff"})
    await receive_until(ws, "system")
    li = await AgentSocket.open(client, "li")
    agents.append(li)
    await claimed(li, ws, conversation)
    cookie = {"Cookie": f"chatbot_agent={await session_cookie(client, 'li')}"}
    path = f"/agent/conversations/{conversation}/transcript"
    assert "客户 李四(客户号 cust-7)\n" in await (await client.get(f"{path}.txt", headers=cookie)).text()
    assert (await (await client.get(f"{path}.json", headers=cookie)).json())["customer"] == {
        "id": "cust-7",
        "name": "李四",
    }
    await ws.close()
