"""Business hours, leaving a message and cancelling a queued request (issue #16).

Every test runs on one process (memory) and on two app instances sharing a private Redis (users
on the first, consoles on the last). "Now" is set through the app's Availability clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chatbot_server import setup
from chatbot_server.keys import AVAILABILITY_KEY, QUEUE_KEY
from chatbot_server.masking import mask_sensitive

from .agent_support import AgentSocket, Deployment, agents, deploy  # noqa: F401 (fixtures)
from .helpers import make_settings, receive_json, receive_until
from .redis_server import RedisProcess
from .test_handoff_faults import chat_app, out_of_memory

pytestmark = pytest.mark.timeout(30)

SH = ZoneInfo("Asia/Shanghai")
HOURS = {
    "timezone": "Asia/Shanghai",
    **{d: ["09:00-12:00", "13:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
}
MONDAY_EVENING = dt.datetime(2026, 12, 7, 19, 30, tzinfo=SH)
MONDAY_MORNING = dt.datetime(2026, 12, 7, 10, 0, tzinfo=SH)
CARD = "4111111111111111"


def at(clients: tuple[TestClient, ...], moment: dt.datetime) -> None:
    """Every process's clock says `moment`."""
    for client in clients:
        client.app[AVAILABILITY_KEY].clock = lambda: moment


async def user(client: TestClient) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await client.ws_connect("/ws")
    greeting = await receive_json(ws)
    return ws, greeting["conversation"]


async def system(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return await receive_until(ws, "system")


async def test_outside_hours_no_queue_entry_but_the_hours_and_an_offer(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(hours=HOURS)
    at((one, two), MONDAY_EVENING)
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    closed = await system(ws)
    assert closed["event"] == "handoff_closed" and closed["reason"] == "hours"
    assert closed["msg"] == (
        "人工客服服务时间为周一至周五 9:00–12:00、13:00–18:00,下次服务时间:12月8日 周二 9:00。"
        "您可以给我们留言,我们会在服务时间内尽快与您联系。"
    )
    assert "seq" in closed  # part of the transcript: a resumed page shows it again
    assert await one.app[QUEUE_KEY].position(conversation) is None
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    assert (await li.next("queue"))["items"] == []
    # The bot still answers.
    await ws.send_json({"type": "message", "text": "你好", "id": "m1"})
    assert (await receive_until(ws, "reply"))["msg"] == "答:你好"
    await ws.close()


async def test_within_hours_the_request_is_queued(deploy: Callable[..., Awaitable[Deployment]]) -> None:
    one, two, _ = await deploy(hours=HOURS)
    at((one, two), MONDAY_MORNING)
    ws, _ = await user(one)
    await ws.send_json({"type": "handoff"})
    assert (await system(ws))["event"] == "queued"
    await ws.close()


async def test_nobody_online_is_like_outside_hours_with_its_own_text(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    """Real presence (agents/routing.py): no console open, then one online, then away."""
    one, two, _ = await deploy(queue_when_offline=False)  # no hours: always open
    ws, conversation = await user(one)
    await ws.send_json({"type": "message", "text": "我要转人工", "id": "m1"})  # the bot's handoff intent
    closed = await system(ws)
    assert (closed["event"], closed["reason"]) == ("handoff_closed", "offline")
    assert closed["msg"].startswith("当前暂无人工客服在线")
    assert await two.app[QUEUE_KEY].position(conversation) is None

    li = await AgentSocket.open(two, "li")  # online on the other process
    agents.append(li)
    await li.next("left_messages")  # loaded: present
    await ws.send_json({"type": "handoff"})
    assert (await system(ws))["event"] == "queued"
    await ws.send_json({"type": "cancel_handoff"})
    assert (await system(ws))["event"] == "handoff_cancelled"

    await li.send(type="status", status="away")  # away counts as nobody
    await li.next("agents")
    await ws.send_json({"type": "handoff"})
    assert (await system(ws))["reason"] == "offline"
    await ws.close()


async def test_a_left_message_is_stored_masked_listed_on_the_other_process_and_closed_everywhere(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(hours=HOURS)
    at((one, two), MONDAY_EVENING)
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    assert (await li.next("left_messages"))["items"] == []
    ws, conversation = await user(one)
    text = f"我的卡 {CARD} 被冻结了,请联系我"
    await ws.send_json({"type": "leave_message", "contact": " 13800138000 ", "text": text})
    thanks = await system(ws)
    assert (thanks["event"], thanks["msg"]) == ("message_left", "您的留言已收到,我们会在服务时间内尽快与您联系。")
    added = (await li.next("left_message_added"))["item"]
    assert added["contact"] == "13800138000"
    assert added["text"] == mask_sensitive(text) and CARD not in added["text"]
    assert added["conversation"] == conversation and isinstance(added["ts"], int)
    # A console that opens now gets it in the snapshot (read from the store, on its process).
    wang = await AgentSocket.open(two, "wang")
    agents.append(wang)
    listed = (await wang.next("left_messages"))["items"]
    assert [m["id"] for m in listed] == [added["id"]] and listed[0]["text"] == added["text"]
    await wang.send(type="close_message", id=added["id"])
    for console in (li, wang):
        assert (await console.next("left_message_closed"))["id"] == added["id"]
    # Closed twice (a second click, another console): a clear error, nothing else.
    await li.send(type="close_message", id=added["id"])
    assert (await li.next("error"))["code"] == "unknown_message"
    late = await AgentSocket.open(two, "li")
    agents.append(late)
    assert (await late.next("left_messages"))["items"] == []
    await ws.close()


async def test_left_messages_list_oldest_first(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(left_messages_per_ip=5)
    ws, _ = await user(one)
    for n in range(3):
        await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": f"留言 {n}"})
        assert (await system(ws))["event"] == "message_left"
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    assert [m["text"] for m in (await li.next("left_messages"))["items"]] == ["留言 0", "留言 1", "留言 2"]
    await ws.close()


async def test_the_per_address_cap_and_the_total_cap_refuse_clearly(
    deploy: Callable[..., Awaitable[Deployment]],
) -> None:
    one, _, _ = await deploy(left_messages_per_ip=2)
    ws, _ = await user(one)
    for _ in range(2):
        await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": "你好"})
        assert (await system(ws))["event"] == "message_left"
    await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": "你好"})
    refused = await receive_until(ws, "error")
    assert (refused["code"], refused["msg"]) == ("message_limit", "您留言过于频繁,请稍后再试。")
    await ws.close()


async def test_the_total_cap(deploy: Callable[..., Awaitable[Deployment]]) -> None:
    one, _, _ = await deploy(left_messages_per_ip=10, left_messages_max=1)
    ws, _ = await user(one)
    await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": "一"})
    assert (await system(ws))["event"] == "message_left"
    await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": "二"})
    assert (await receive_until(ws, "error"))["code"] == "message_box_full"
    await ws.close()


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"contact": "", "text": "你好"}, "empty_contact"),
        ({"contact": "call me maybe", "text": "你好"}, "bad_contact"),
        ({"contact": "1" * 200, "text": "你好"}, "bad_contact"),
        ({"contact": "13800138000", "text": "  "}, "empty_text"),
        ({"contact": "13800138000", "text": "长" * 501}, "too_long"),
        ({"contact": 13800138000, "text": "你好"}, "bad_frame"),
    ],
)
async def test_bad_left_messages_get_clear_errors(aiohttp_client: Any, fields: dict[str, Any], code: str) -> None:
    from .agent_support import agent_section

    app = web.Application()
    setup(app, make_settings(agents=agent_section()))
    ws, _ = await user(await aiohttp_client(app))
    await ws.send_json({"type": "leave_message", **fields})
    assert (await receive_until(ws, "error"))["code"] == code
    await ws.close()


async def test_cancel_while_queued_frees_the_place(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.next("queue")
    first, first_id = await user(one)
    second, second_id = await user(one)
    await first.send_json({"type": "handoff"})
    assert (await system(first))["queue_position"] == 1
    await second.send_json({"type": "handoff"})
    assert (await system(second))["queue_position"] == 2
    await first.send_json({"type": "cancel_handoff"})
    cancelled = await system(first)
    assert (cancelled["event"], cancelled["mode"]) == ("handoff_cancelled", "bot")
    assert cancelled["msg"] == "已为您取消人工排队,智能客服将继续为您服务。"
    moved = await system(second)
    assert (moved["event"], moved["queue_position"]) == ("queue_position", 1)
    async with asyncio.timeout(5):
        while True:
            removed = await li.next("queue_removed")
            if first_id in removed["conversations"]:
                break
    assert [e.conversation for e in await two.app[QUEUE_KEY].waiting()] == [second_id]
    # The bot answers again; cancelling again says there is nothing to cancel.
    await first.send_json({"type": "message", "text": "还在吗", "id": "m2"})
    assert (await receive_until(first, "reply"))["msg"] == "答:还在吗"
    await first.send_json({"type": "cancel_handoff"})
    assert (await receive_until(first, "error"))["code"] == "not_queued"
    # The freed place counts against the address's cap no more: queueing again works.
    await first.send_json({"type": "handoff"})
    assert (await system(first))["queue_position"] == 2
    await first.close()
    await second.close()


async def test_without_agents_nothing_is_offered(aiohttp_client: Any) -> None:
    app = web.Application()
    setup(app, make_settings())
    client = await aiohttp_client(app)
    page = await (await client.get("/")).text()
    for marker in ('id="handoff"', 'id="leave-message-form"', 'id="cancel-handoff"', "leave_message.js"):
        assert marker not in page
    ws, _ = await user(client)
    await ws.send_json({"type": "leave_message", "contact": "13800138000", "text": "你好"})
    assert (await receive_until(ws, "error"))["code"] == "unsupported"
    await ws.send_json({"type": "cancel_handoff"})
    assert (await receive_until(ws, "error"))["code"] == "unsupported"
    await ws.close()


async def test_with_agents_the_page_has_the_form_and_the_cancel_button(aiohttp_client: Any) -> None:
    from .agent_support import agent_section

    app = web.Application()
    setup(app, make_settings(agents=agent_section()))
    client = await aiohttp_client(app)
    response = await client.get("/")
    page = await response.text()
    for marker in ('id="leave-message-form"', 'id="leave-contact"', 'id="leave-text"', 'id="cancel-handoff"'):
        assert marker in page
    script = re.search(r'<script src="([^"]*leave_message\.js[^"]*)"', page)
    assert script is not None and "script-src 'self'" in response.headers["Content-Security-Policy"]
    served = await client.get(script.group(1))
    assert served.status == 200
    source = re.sub(r"//[^\n]*", "", await served.text())
    for banned in ("innerHTML", "insertAdjacentHTML", "eval(", "new Function", "document.write", "onclick"):
        assert banned not in source


async def test_a_redis_refusing_writes_gets_a_clear_error_and_the_chat_goes_on(
    aiohttp_client: Any, redis_process: RedisProcess
) -> None:
    client = await chat_app(aiohttp_client, redis_process.url)
    ws, _ = await user(client)
    async with out_of_memory(redis_process.url):
        await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": "你好"})
        error = await receive_until(ws, "error")
        assert (error["code"], error["msg"]) == ("message_unavailable", "抱歉,留言暂时无法提交,请稍后再试。")
        metrics = await (await client.get("/metrics")).text()
        assert 'chatbot_errors_total{code="message_unavailable"} 1.0' in metrics
    await ws.send_json({"type": "message", "text": "还在吗", "id": "m1"})
    assert (await receive_until(ws, "reply"))["msg"] == "答:还在吗"
    await ws.send_json({"type": "leave_message", "contact": "a@example.com", "text": "你好"})
    assert (await system(ws))["event"] == "message_left"  # Redis is back: it works again
    await ws.close()


async def test_a_failing_presence_check_queues_as_before(deploy: Callable[..., Awaitable[Deployment]]) -> None:
    one, _, _ = await deploy()

    async def broken() -> bool:
        raise RuntimeError("presence is down")

    one.app[AVAILABILITY_KEY].anyone_online = broken
    ws, _ = await user(one)
    await ws.send_json({"type": "handoff"})
    assert (await system(ws))["event"] == "queued"
    await ws.close()


def test_layer_messages_name_their_handler_and_constructor() -> None:
    from chatbot_server import messages
    from chatbot_server.agents.consumer import AgentConsumer

    item: messages.LeftMessageItem = {"id": "m", "ts": 1, "contact": "c", "text": "t", "conversation": "v"}
    added, closed = messages.agents_left_message_added(item), messages.agents_left_message_closed("m")
    assert added == {"type": "agents.left_message_added", "item": item}
    assert closed == {"type": "agents.left_message_closed", "id": "m"}
    for built in (added, closed):
        name = built["type"].replace(".", "_")
        assert callable(getattr(AgentConsumer, name)) and callable(getattr(messages, name))


async def test_the_hourly_window_of_an_address_ends() -> None:
    from chatbot_server.store.left_messages import WINDOW, MemoryLeftMessages

    box = MemoryLeftMessages(per_ip=1, max_open=10)
    assert (await box.add("c", "一", conversation="v", ip="1.2.3.4", now=1000.0)).message is not None
    assert (await box.add("c", "二", conversation="v", ip="1.2.3.4", now=1000.0 + WINDOW - 1)).refused == "ip_limit"
    assert (await box.add("c", "三", conversation="v", ip="5.6.7.8", now=1001.0)).message is not None
    assert (await box.add("c", "四", conversation="v", ip="1.2.3.4", now=1000.0 + WINDOW)).message is not None
    assert [m.text for m in await box.open()] == ["一", "三", "四"]
