"""Handoff to a human: queue, live positions, claims, agent replies, bot silence, end and hand back.

Every test runs on one process (memory) and on two app instances sharing a private Redis, with the
user on one and the agent on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from chatbot_server.store.handoff import HandoffQueue, MemoryHandoffQueue, RedisHandoffQueue

from .agent_support import AgentSocket, Deployment, HandoffBot, agent_section, agents, deploy  # noqa: F401 (fixtures)
from .helpers import receive_json, receive_until
from .redis_server import unique_prefix

pytestmark = pytest.mark.timeout(30)


async def user(client: TestClient) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await client.ws_connect("/ws")
    greeting = await receive_json(ws)
    return ws, greeting["conversation"]


async def say(ws: aiohttp.ClientWebSocketResponse, text: str, mid: str) -> None:
    await ws.send_json({"type": "message", "text": text, "id": mid})


async def test_button_queues_with_live_positions_and_one_claim_wins(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    li = await AgentSocket.open(two, "li")
    wang = await AgentSocket.open(two, "wang")
    agents += [li, wang]
    assert (await li.next("hello"))["agent"] == {"username": "li", "name": "客服小李"}
    assert (await li.next("queue"))["items"] == []
    first, first_id = await user(one)
    second, second_id = await user(one)
    await first.send_json({"type": "handoff"})
    queued = await receive_until(first, "system")
    assert (queued["event"], queued["queue_position"]) == ("queued", 1)
    assert queued["msg"] == "正在为您转接人工客服,您是下一位,请稍候。"  # not "前面还有 0 位用户" (#16)
    await second.send_json({"type": "handoff"})
    behind = await receive_until(second, "system")
    assert (behind["queue_position"], behind["msg"]) == (2, "正在为您转接人工客服,您前面还有 1 位用户,请稍候。")
    # Consoles get each change as a delta, not the whole queue again.
    assert (await li.next("queue_added"))["item"]["conversation"] == first_id
    assert (await li.next("queue_added"))["item"]["conversation"] == second_id

    await asyncio.gather(li.send(type="claim", conversation=first_id), wang.send(type="claim", conversation=first_id))
    results = {}
    for name, agent in (("li", li), ("wang", wang)):
        async with asyncio.timeout(5):
            while name not in results:
                data = await agent.next()
                if data["type"] in ("claimed", "claim_failed") and data["conversation"] == first_id:
                    results[name] = data["type"]
    assert sorted(results.values()) == ["claim_failed", "claimed"]
    moved = await receive_until(second, "system")
    assert (moved["event"], moved["queue_position"], moved["msg"]) == ("queue_position", 1, "您是下一位,请稍候。")
    assert "seq" not in moved  # a transient notice, not part of the transcript
    joined = await receive_until(first, "system")
    winner = "客服小李" if results["li"] == "claimed" else "客服小王"
    assert (joined["event"], joined["agent"]) == ("agent_joined", winner)
    await first.close()
    await second.close()


async def test_user_and_agent_talk_and_the_bot_stays_silent(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, bot = await deploy()
    ws, conversation = await user(one)
    await say(ws, "我要转人工", "m1")
    assert (await receive_json(ws))["type"] == "user"
    assert (await receive_json(ws))["msg"] == "好的,为您转人工。"
    assert (await receive_json(ws))["event"] == "queued"  # the bot's handoff intent queued us
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.send(type="claim", conversation=conversation)
    assert (await li.next("claimed"))["conversation"] == conversation
    # The store's copy may lag the holder's write-behind; the holder's own copy follows (conv.mode).
    async with asyncio.timeout(5):
        while [f["type"] for f in (await li.next("transcript"))["frames"]][:3] != ["greeting", "user", "reply"]:
            pass
    assert (await receive_json(ws))["event"] == "agent_joined"

    await li.send(type="reply", conversation=conversation, text="您好,我是<b>小李</b>")
    said = await receive_json(ws)
    assert (said["type"], said["agent"], said["msg"], said["talk"]) == (
        "agent",
        "客服小李",
        "您好,我是<b>小李</b>",
        True,
    )
    assert (await li.frame_of("agent"))["seq"] == said["seq"]

    answered = list(bot.answered)
    await say(ws, "我的卡被吞了", "m2")
    echo = await receive_json(ws)
    assert (echo["type"], echo["msg"]) == ("user", "我的卡被吞了")
    assert (await li.frame_of("user"))["msg"] == "我的卡被吞了"
    # The page re-sends an unconfirmed message after a reconnect: still no bot answer while an agent
    # holds the conversation (it used to take the "stored but never answered" path).
    await say(ws, "我的卡被吞了", "m2")
    await li.send(type="reply", conversation=conversation, text="请提供网点")
    assert (await receive_json(ws))["msg"] == "请提供网点"  # no bot reply came in between
    assert bot.answered == answered

    await li.send(type="end", conversation=conversation)
    assert (await li.next("closed"))["reason"] == "agent_left"
    assert (await receive_json(ws))["event"] == "agent_left"
    assert (await receive_json(ws))["event"] == "rating_request"  # agents.ask_rating (tests/test_rating.py)
    await say(ws, "还有个问题", "m3")
    await receive_json(ws)
    assert (await receive_json(ws))["msg"] == "答:还有个问题"  # the bot answers again
    await ws.close()


async def test_hand_back_and_agents_can_only_touch_their_own(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    await receive_until(ws, "system")
    li = await AgentSocket.open(two, "li")
    wang = await AgentSocket.open(one, "wang")
    agents += [li, wang]
    await li.send(type="claim", conversation=conversation)
    await li.next("claimed")
    for action in ("reply", "end", "handback", "open"):
        await wang.send(type=action, conversation=conversation, text="我来")
        assert (await wang.next("error"))["code"] == "not_yours"
    await li.send(type="handback", conversation=conversation)
    await li.next("closed")
    assert (await receive_until(ws, "system"))["event"] == "agent_joined"
    assert (await receive_until(ws, "system"))["event"] == "agent_handback"
    await say(ws, "你好", "x")
    await receive_json(ws)
    assert (await receive_json(ws))["msg"] == "答:你好"
    await ws.close()


async def test_fallbacks_in_a_row_queue_the_user(deploy: Callable[..., Awaitable[Deployment]]) -> None:
    one, _, _ = await deploy(fallback_handoff=2)
    ws, _ = await user(one)
    for n in range(2):
        await say(ws, "??", f"q{n}")
        await receive_json(ws)
        assert (await receive_json(ws))["msg"] == "没听懂。"
    assert (await receive_json(ws))["event"] == "queued"
    await ws.close()


async def test_agent_reply_reaches_a_user_who_reconnected_elsewhere(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    await receive_until(ws, "system")
    li = await AgentSocket.open(one, "li")
    agents.append(li)
    await li.send(type="claim", conversation=conversation)
    joined = await receive_until(ws, "system")
    await ws.close()
    await li.send(type="reply", conversation=conversation, text="您还在吗")  # nobody holds it now
    await li.frame_of("agent")
    ws = await two.ws_connect(f"/ws?conversation={conversation}&last_seq={joined['seq']}")
    missed = await receive_json(ws)
    assert (missed["type"], missed["msg"], missed["seq"]) == ("agent", "您还在吗", joined["seq"] + 1)
    assert (await receive_json(ws))["event"] == "resumed"
    await say(ws, "在的", "z")
    await receive_json(ws)
    assert (await li.frame_of("user"))["msg"] == "在的"  # still the agent's: the bot stays silent
    await ws.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def queues(request: pytest.FixtureRequest) -> AsyncIterator[list[HandoffQueue]]:
    if request.param == "memory":
        shared = MemoryHandoffQueue()
        yield [shared, shared]
        return
    url = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster_url")
    prefix = unique_prefix()
    made: list[HandoffQueue] = [RedisHandoffQueue(url=url, prefix=prefix) for _ in range(2)]
    for q in made:
        await q.start()
    yield made
    for q in made:
        await q.close()


async def test_concurrent_claims_have_exactly_one_winner(queues: list[HandoffQueue]) -> None:
    for round_ in range(5):
        conversation = f"c{round_}"
        assert (await queues[0].enqueue(conversation, "hi")).position == 1
        claims = [queues[n % 2].claim(conversation, f"agent{n}") for n in range(10)]
        won = await asyncio.gather(*claims)
        assert won.count(True) == 1
        winner = f"agent{won.index(True)}"
        assert await queues[1].agent_of(conversation) == winner
        assert await queues[0].active(winner) == [conversation]
        assert not await queues[0].finish(conversation, "someone else")
        assert await queues[1].finish(conversation, winner)
        assert await queues[0].mode(conversation) == ("bot", None)


async def test_a_claim_run_again_with_its_request_id_answers_the_same(queues: list[HandoffQueue]) -> None:
    # What the Redis client's retry does when a claim's reply is lost (tests/test_handoff_faults.py).
    await queues[0].enqueue("c", "hi")
    assert await queues[0].claim("c", "li", request_id="r1")
    assert await queues[1].claim("c", "li", request_id="r1")  # the same claim, run again
    assert not await queues[1].claim("c", "wang", request_id="r1")
    assert not await queues[0].claim("c", "li", request_id="r2")  # another click is another claim
    assert await queues[1].agent_of("c") == "li"
    assert await queues[0].finish("c", "li")
    assert not await queues[0].claim("c", "li", request_id="r1")  # finished: nothing to repeat


async def test_waiting_user_who_reconnects_elsewhere_keeps_waiting(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, bot = await deploy()
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    await receive_until(ws, "system")
    await ws.close()
    ws = await two.ws_connect(f"/ws?conversation={conversation}&last_seq=1")
    replayed = await receive_json(ws)
    assert (replayed["event"], replayed["seq"]) == ("queued", 2)
    assert (await receive_json(ws))["event"] == "resumed"
    fresh = await receive_json(ws)
    assert (fresh["event"], fresh["queue_position"]) == ("queue_position", 1)
    await say(ws, "还要等多久", "w")
    assert (await receive_json(ws))["type"] == "user"
    li = await AgentSocket.open(one, "li")
    agents.append(li)
    await li.send(type="claim", conversation=conversation)
    transcript = await li.next("transcript")
    if transcript["frames"][-1]["msg"] != "还要等多久":
        # Read from Redis before the holder's write-behind wrote the line: the holder (told by
        # conv.mode) then sends the console its own full transcript.
        transcript = await li.next("transcript")
    assert transcript["frames"][-1]["msg"] == "还要等多久"  # stored while waiting; the bot said nothing
    assert "还要等多久" not in bot.answered
    assert (await receive_until(ws, "system"))["event"] == "agent_joined"
    await ws.close()
