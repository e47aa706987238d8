"""A flood of anonymous handoffs: lapsed entries, the per-address cap, and consoles fed by deltas.

Each test runs on one process (memory) and on two app instances sharing a private Redis (users on
one, the console on the other).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from chatbot_server.keys import QUEUE_KEY

from .agent_support import AgentSocket, Deployment, agents, deploy  # noqa: F401 (fixtures)
from .helpers import receive_json, receive_until

pytestmark = pytest.mark.timeout(60)


async def queued_user(client: TestClient) -> tuple[aiohttp.ClientWebSocketResponse, str, dict[str, Any]]:
    """A user who pressed 转人工: the socket, its conversation, and the answer to the handoff."""
    ws = await client.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "handoff"})
    answer = await receive_json(ws)
    return ws, conversation, answer


async def test_entries_of_gone_users_lapse_and_positions_count_only_live_ones(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    # A short grace: entries lapse about 2 s after their user went (the keeper renews live ones
    # every 0.5 s, so a live entry has 1.5 s of slack).
    users, console, _ = await deploy(queue_grace=2.0, max_queued_per_ip=1000)
    li = await AgentSocket.open(console, "li")
    agents.append(li)
    assert (await li.next("queue"))["items"] == []
    live, live_id, answer = await queued_user(users)
    assert answer["queue_position"] == 1
    gone = set()
    for _ in range(20):  # connect → 转人工 → close, as the flood did
        ws, conversation, answer = await queued_user(users)
        assert answer["event"] == "queued"
        gone.add(conversation)
        await ws.close()
    removed: set[str] = set()
    async with asyncio.timeout(20):
        while removed != gone:
            removed.update((await li.next("queue_removed"))["conversations"])
    fresh, _, answer = await queued_user(users)
    assert (answer["event"], answer["queue_position"]) == ("queued", 2)  # the live user only is ahead
    assert "前面还有 1 位用户" in answer["msg"]
    snapshot = await AgentSocket.open(console, "wang")
    agents.append(snapshot)
    items = (await snapshot.next("queue"))["items"]
    assert [i["position"] for i in items] == [1, 2]
    assert items[0]["conversation"] == live_id
    # A gone user who comes back finds their request lapsed: told the bot answers (转人工 again).
    back = await users.ws_connect("/ws")
    await receive_json(back)  # the greeting of a new conversation, before it resumes
    await back.send_json({"type": "resume", "conversation": sorted(gone)[0], "last_seq": 0})
    async with asyncio.timeout(5):
        while (told := await receive_until(back, "system")).get("event") != "mode":
            pass
    assert told["mode"] == "bot"
    await back.close()
    await live.close()
    await fresh.close()


async def test_a_lost_entry_of_a_waiting_user_is_queued_again(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    # A Sentinel failover can drop a queue entry Redis had not replicated yet: the user still
    # waits, so the keeper adds it again instead of leaving them queued for nobody.
    users, console, _ = await deploy(queue_grace=2.0)  # the keeper runs every 0.5 s
    li = await AgentSocket.open(console, "li")
    agents.append(li)
    assert (await li.next("queue"))["items"] == []
    ws, conversation, answer = await queued_user(users)
    assert answer["event"] == "queued"
    assert (await li.next("queue_added"))["item"]["conversation"] == conversation
    await asyncio.sleep(0.002)  # entries are ordered by their arrival millisecond: no tie here
    later, later_id, _ = await queued_user(users)  # queued after: must stay behind
    assert (await li.next("queue_added"))["item"]["conversation"] == later_id
    queue = users.app[QUEUE_KEY]
    # Gone without a word to anyone: taken and let go by nobody's console (no socket is told).
    assert await queue.claim(conversation, "ghost")
    assert await queue.finish(conversation, "ghost")
    assert await queue.position(conversation) is None
    again = await receive_until(ws, "system", timeout=10)
    assert (again["event"], again["queue_position"]) == ("queued", 1)  # its old place, ahead of `later`
    assert (await li.next("queue_added"))["item"]["conversation"] == conversation
    assert (await queue.position(conversation), await queue.position(later_id)) == (1, 2)
    await ws.close()
    await later.close()


async def test_a_third_handoff_from_one_address_is_refused(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    users, console, _ = await deploy()  # agents.max_queued_per_ip: 2
    first, first_id, answer = await queued_user(users)
    assert answer["queue_position"] == 1
    second, _, answer = await queued_user(users)
    assert answer["queue_position"] == 2
    third, _, refused = await queued_user(users)
    assert (refused["type"], refused["code"]) == ("error", "queue_limit")
    assert refused["msg"] == "您的网络中排队的请求过多,请稍后再试。"
    await third.send_json({"type": "message", "text": "那我先问问", "id": "t1"})
    assert (await receive_until(third, "reply"))["msg"] == "答:那我先问问"  # the bot still answers

    await first.send_json({"type": "handoff"})  # pressed again
    again = await receive_json(first)
    assert (again["code"], again["msg"]) == ("already_queued", "您已在排队中,请勿重复提交。")
    assert (await receive_json(first))["queue_position"] == 1

    li = await AgentSocket.open(console, "li")
    agents.append(li)
    await li.send(type="claim", conversation=first_id)
    await li.next("claimed")
    await third.send_json({"type": "handoff"})  # one of the address's two places is free again
    assert (await receive_until(third, "system"))["event"] == "queued"
    for ws in (first, second, third):
        await ws.close()


async def test_consoles_get_a_delta_not_the_whole_queue(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    users, console, _ = await deploy(max_queued_per_ip=1000)
    sockets = []
    for n in range(30):
        ws, _, _ = await queued_user(users)
        await ws.send_json({"type": "message", "text": f"排队中的用户 {n} 想问一个很长的问题" * 3, "id": f"m{n}"})
        sockets.append(ws)
    li = await AgentSocket.open(console, "li")
    agents.append(li)
    await li.next("hello")
    full = await li.ws.receive()
    assert (full.json()["type"], len(full.json()["items"])) == ("queue", 30)
    await li.next("left_messages")  # sent right after the queue (docs/agents.md)

    late, late_id, _ = await queued_user(users)
    sockets.append(late)
    change = await asyncio.wait_for(li.ws.receive(), 5)
    assert (change.json()["type"], change.json()["item"]["conversation"]) == ("queue_added", late_id)
    assert len(change.data) < 300 < len(full.data) / 10, (len(change.data), len(full.data))

    wang = await AgentSocket.open(console, "wang")
    agents.append(wang)
    await wang.next("queue")
    await wang.next("left_messages")
    await li.send(type="claim", conversation=late_id)
    await li.next("claimed")
    assert await wang.next() == {"type": "queue_removed", "conversations": [late_id]}
    for ws in sockets:
        await ws.close()
