"""The queue's preview is the user's question, not their "转人工" (issue #16); the join notice names the agent once.

Each test runs on one process (memory) and on two app instances sharing a private Redis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from .agent_support import AgentSocket, Deployment, agents, deploy  # noqa: F401 (fixtures)
from .helpers import receive_json, receive_until

pytestmark = pytest.mark.timeout(30)


async def user(client: TestClient) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await client.ws_connect("/ws")
    return ws, (await receive_json(ws))["conversation"]


async def ask(ws: aiohttp.ClientWebSocketResponse, text: str, mid: str) -> dict[str, object]:
    """Send a line; return the bot's reply to it."""
    await ws.send_json({"type": "message", "text": text, "id": mid})
    return await receive_until(ws, "reply")


async def test_typed_handoff_previews_the_question_asked_before(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    ws, conversation = await user(one)
    assert (await ask(ws, "我的卡被吞了", "m1"))["msg"] == "答:我的卡被吞了"
    assert (await ask(ws, "转人工", "m2"))["intent"] == "human_agent"  # HandoffBot: "人工" asks for one
    assert (await receive_until(ws, "system"))["event"] == "queued"
    added = await li.next("queue_added")
    assert (added["item"]["conversation"], added["item"]["preview"]) == (conversation, "我的卡被吞了")

    # The button pressed as well: the preview is still the question, not the typed request.
    await ws.send_json({"type": "handoff"})
    assert (await receive_until(ws, "error"))["code"] == "already_queued"
    wang = await AgentSocket.open(two, "wang")
    agents.append(wang)
    items = (await wang.next("queue"))["items"]
    assert [(i["conversation"], i["preview"]) for i in items] == [(conversation, "我的卡被吞了")]

    await li.send(type="claim", conversation=conversation)
    joined = await receive_until(ws, "system")
    while joined["event"] == "queue_position":  # the pressed button's position notice
        joined = await receive_until(ws, "system")
    assert (joined["event"], joined["msg"]) == ("agent_joined", "人工客服已接入,客服小李正在为您服务。")
    await ws.close()


async def test_button_and_fallbacks_preview_the_last_line(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(fallback_handoff=2, max_queued_per_ip=3)  # three users on one address
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    pressed, pressed_id = await user(one)
    await ask(pressed, "信用卡年费怎么收", "m1")
    await pressed.send_json({"type": "handoff"})
    added = await li.next("queue_added")
    assert (added["item"]["conversation"], added["item"]["preview"]) == (pressed_id, "信用卡年费怎么收")

    lost, lost_id = await user(one)
    await ask(lost, "??", "m1")
    await ask(lost, "??", "m2")  # the second fallback in a row queues: the unanswered line is the question
    added = await li.next("queue_added")
    assert (added["item"]["conversation"], added["item"]["preview"]) == (lost_id, "??")

    only, only_id = await user(one)
    await ask(only, "人工", "m1")  # nothing asked before: no preview (the console shows the user's id)
    added = await li.next("queue_added")
    assert (added["item"]["conversation"], added["item"]["preview"]) == (only_id, "")
    for ws in (pressed, lost, only):
        await ws.close()
