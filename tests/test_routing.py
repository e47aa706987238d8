"""Routing (#16): presence, capacity, auto-assignment, reassignment on silence, transfer, wait estimate.

The store tests run on memory and on two RedisRouting instances sharing one Redis (two processes);
the app tests on one process (memory) and on two app instances on one Redis (user on the first,
consoles on the last).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chatbot_server import ConfigError, load_settings, setup
from chatbot_server.store.handoff import HandoffQueue, MemoryHandoffQueue, RedisHandoffQueue
from chatbot_server.store.routing import AgentRouting, MemoryRouting, estimate
from chatbot_server.store.routing_redis import RedisRouting

from .agent_support import AgentSocket, Deployment, HandoffBot, agent_section, agents, deploy  # noqa: F401 (fixtures)
from .helpers import make_settings, receive_until
from .redis_server import RedisProcess, unique_prefix
from .test_handoff import user
from .test_handoff_faults import out_of_memory

pytestmark = pytest.mark.timeout(30)

Pair = tuple[HandoffQueue, list[AgentRouting]]
#: Another routing on the pair's backend: (ttl, process name) -> it.
_extra: dict[int, Callable[[float, str], AgentRouting]] = {}


@pytest.fixture(params=["memory", "redis", "cluster"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """One queue and two routings on it: the same object in memory, two "processes" on one Redis
    (or one Redis Cluster)."""
    if request.param == "memory":
        queue = MemoryHandoffQueue()
        shared = MemoryRouting(queue, ttl=5, process="a")

        def same(ttl: float, process: str) -> AgentRouting:
            shared.ttl = ttl  # one process: "another" is this one, renewing for a shorter time
            return shared

        _extra[id(queue)] = same
        yield queue, [shared, shared]
        _extra.pop(id(queue))
        return
    # On a cluster every key is in the queue's slot (one hash tag), the agents' sets too.
    url = request.getfixturevalue("redis_server" if request.param == "redis" else "redis_cluster_url")
    prefix = unique_prefix()
    queues = [RedisHandoffQueue(url=url, prefix=prefix) for _ in range(2)]
    client = queues[0].client
    _extra[id(queues[0])] = lambda ttl, process: RedisRouting(client, prefix, ttl=ttl, process=process)
    yield queues[0], [RedisRouting(q.client, prefix, ttl=5, process=p) for q, p in zip(queues, "ab", strict=True)]
    _extra.pop(id(queues[0]))
    for q in queues:
        await q.close()


async def test_concurrent_assignment_never_exceeds_capacity(pair: Pair) -> None:
    queue, (a, b) = pair
    await a.connect("li", 2)
    await b.connect("wang", 1)
    for n in range(10):
        await queue.enqueue(f"c{n}", f"问题{n}")
    results = await asyncio.gather(*(r.assign() for r in (a, b) * 5))
    given = [x for batch in results for x in batch]
    assert sorted(x.conversation for x in given) == ["c0", "c1", "c2"]  # oldest first, each once
    assert Counter(x.agent for x in given) == {"li": 2, "wang": 1}
    assert [e.conversation for e in await queue.waiting()] == [f"c{n}" for n in range(3, 10)]
    assert {x.username: (x.load, x.capacity) for x in await b.roster()} == {"li": (2, 2), "wang": (1, 1)}
    assert await a.assign() == []  # everyone is full
    assert await a.claim("c3", "li", 2) is None  # a claim by hand is capped too
    assert await queue.agent_of("c3") is None


async def test_least_busy_then_idle_longest_and_away_gets_nothing(pair: Pair) -> None:
    queue, (a, b) = pair
    await a.connect("li", 3)
    await b.connect("wang", 3)
    await queue.enqueue("c1", "")
    assert [(x.conversation, x.agent) for x in await a.assign()] == [("c1", "li")]  # tie: by name
    await queue.enqueue("c2", "")
    assert [x.agent for x in await b.assign()] == ["wang"]  # least busy
    await queue.enqueue("c3", "")
    assert [x.agent for x in await a.assign()] == ["li"]  # tie on load: li idle longer
    await b.set_status("li", "away")
    await queue.enqueue("c4", "")
    assert [x.agent for x in await a.assign()] == ["wang"]
    await a.set_status("wang", "away")
    await queue.enqueue("c5", "")
    assert await b.assign() == []
    assert not await a.anyone_online()
    assert [(x.username, x.status) for x in await a.roster()] == [("li", "away"), ("wang", "away")]
    await a.set_status("wang", "online")
    assert await a.anyone_online()
    assert [(x.username, x.load, x.capacity) for x in await b.available()] == [("wang", 2, 3)]


async def test_presence_lapses_without_renewal_and_ends_on_disconnect(pair: Pair) -> None:
    queue, (a, b) = pair
    short = _extra[id(queue)](0.6, "dead")
    await short.connect("li", 3)  # a process that will die: nobody renews
    await b.connect("wang", 3)
    await b.renew(["wang"])
    assert {x.username for x in await b.available()} == {"li", "wang"}
    await asyncio.sleep(0.7)  # the time passing is what is tested: the TTL lapses
    await b.renew(["wang"])
    assert [x.username for x in await a.available()] == ["wang"]
    await queue.enqueue("c1", "")
    assert [x.agent for x in await a.assign()] == ["wang"]
    await b.disconnect("wang")
    assert not await a.anyone_online()


async def test_transfer_and_its_refusals(pair: Pair) -> None:
    queue, (a, b) = pair
    await a.connect("li", 3)
    await b.connect("wang", 1)
    for c in ("c1", "c2"):
        await queue.enqueue(c, "")
    assert await a.claim("c1", "li", 3)
    assert await a.claim("c2", "li", 3)
    assert await b.transfer("c1", "wang", "li") == "not_yours"
    assert await a.transfer("c1", "li", "li") == "same"
    assert await a.transfer("c1", "li", "zhao") == "offline"
    assert await a.transfer("c1", "li", "wang") == "ok"
    assert await queue.agent_of("c1") == "wang"
    assert await queue.active("li") == ["c2"]
    assert await a.transfer("c2", "li", "wang") == "full"
    await b.set_status("li", "away")
    assert await b.transfer("c1", "wang", "li") == "offline"


async def test_silent_assignment_goes_back_in_its_place_and_the_agent_is_away(pair: Pair) -> None:
    queue, (a, b) = pair
    await a.connect("li", 1)
    await queue.enqueue("c1", "我的卡被吞了")
    since = (await queue.waiting())[0].since
    await queue.enqueue("c2", "")
    assert [x.conversation for x in await a.assign()] == ["c1"]
    await b.replied("c2")  # not assigned: nothing happens
    assert await b.silent(60) == []  # not yet
    taken = await b.silent(0)
    assert [(t.conversation, t.agent, t.entry.since, t.entry.preview) for t in taken] == [
        ("c1", "li", since, "我的卡被吞了")
    ]
    assert [e.conversation for e in await queue.waiting()] == ["c1", "c2"]  # back at the head
    assert await queue.agent_of("c1") is None
    assert [(x.username, x.status, x.load) for x in await a.roster()] == [("li", "away", 0)]
    await a.set_status("li", "online")
    assert [x.conversation for x in await a.assign()] == ["c1"]
    await a.replied("c1")  # answered: kept
    assert await b.silent(0) == []
    assert await queue.agent_of("c1") == "li"


async def test_waiting_sockets_asking_at_once_share_one_read_of_the_estimate(pair: Pair) -> None:
    """A queue change makes every waiting socket of a process ask for its estimate at once."""
    _, (a, _) = pair
    await a.connect("li", 2)
    reads = 0
    roster = a.roster

    async def counted() -> list[Any]:
        nonlocal reads
        reads += 1
        return await roster()

    a.roster = counted  # type: ignore[method-assign]
    together = await asyncio.gather(*(a.estimated_wait(n) for n in range(1, 51)))
    assert reads == 1
    assert together == [await a.estimated_wait(n) for n in range(1, 51)]  # the same as asked one by one
    assert reads == 51


async def test_wait_estimate() -> None:
    assert estimate(None, 1, 1, 1) is None  # nothing measured yet
    assert estimate(60_000, 1, 0, 0) is None  # nobody online
    assert estimate(60_000, 3, 0, 2) == 180  # all full: one slot's worth
    assert estimate(60_000, 4, 2, 2) == 120


# ------------------------------------------------------------------ through the sockets
async def test_auto_assignment_reaches_the_console_and_the_user(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(routing="auto")
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    hello = await li.next("hello")
    assert [(x["username"], x["name"], x["status"]) for x in hello["agents"]] == [("li", "客服小李", "online")]
    assert (hello["routing"], hello["capacity"]) == ("auto", 3)
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    assert (await li.next("assigned"))["conversation"] == conversation
    assert (await li.next("transcript"))["conversation"] == conversation
    assert (await receive_until(ws, "system"))["event"] == "queued"
    joined = await receive_until(ws, "system")
    assert (joined["event"], joined["agent"]) == ("agent_joined", "客服小李")
    await li.send(type="reply", conversation=conversation, text="您好")
    assert (await receive_until(ws, "agent"))["msg"] == "您好"
    await ws.close()


async def test_silent_agent_loses_the_chat_to_a_colleague(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(routing="auto", assign_timeout=0.3)
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.next("hello")
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    assert (await li.next("assigned"))["conversation"] == conversation
    wang = await AgentSocket.open(two, "wang")  # busy-free colleague, online now
    agents.append(wang)
    closed = await li.next("closed")
    assert (closed["conversation"], closed["reason"]) == (conversation, "reassigned")
    assert (await li.next("status"))["status"] == "away"
    assert (await wang.next("assigned"))["conversation"] == conversation
    texts = []
    async with asyncio.timeout(5):
        while "reassigned" not in texts:
            texts.append((await receive_until(ws, "system")).get("event"))
    assert texts[-1] == "reassigned"
    await wang.send(type="reply", conversation=conversation, text="我来为您服务")
    assert (await receive_until(ws, "agent"))["msg"] == "我来为您服务"
    await li.send(type="reply", conversation=conversation, text="我还在")
    assert (await li.next("error"))["code"] == "not_yours"
    await ws.close()


async def test_transfer_accepted_and_refused(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(routing="auto", capacity=1)
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.next("hello")
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    await li.next("assigned")
    await li.send(type="transfer", conversation=conversation, to="wang")
    refused = await li.next("error")
    assert (refused["code"], refused["reason"]) == ("transfer_refused", "offline")
    wang = await AgentSocket.open(two, "wang")
    agents.append(wang)
    async with asyncio.timeout(5):  # li sees wang come online
        while "wang" not in {x["username"] for x in (await li.next("agents"))["agents"]}:
            pass
    await li.send(type="transfer", conversation=conversation, to="wang")
    assert (await li.next("closed"))["reason"] == "transferred"
    assert (await wang.next("assigned"))["conversation"] == conversation
    assert (await wang.next("transcript"))["conversation"] == conversation
    moved = await receive_until(ws, "system")
    while moved["event"] != "transferred":
        moved = await receive_until(ws, "system")
    assert moved["msg"] == "已为您转接至客服小王,请稍候。"
    await wang.send(type="transfer", conversation=conversation, to="li")  # li has a free slot again
    assert (await wang.next("closed"))["reason"] == "transferred"
    assert (await li.next("assigned"))["conversation"] == conversation
    second, other = await user(one)
    await second.send_json({"type": "handoff"})
    assert (await wang.next("assigned"))["conversation"] == other  # li is full (capacity 1)
    await wang.send(type="transfer", conversation=other, to="li")
    assert (await wang.next("error"))["reason"] == "full"
    await ws.close()
    await second.close()


async def test_bad_status_and_transfer_frames_get_a_clear_error(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, _, _ = await deploy()
    li = await AgentSocket.open(one, "li")
    agents.append(li)
    await li.next("hello")
    for bad in ({"type": "status", "status": "busy"}, {"type": "transfer", "conversation": "c1"}):
        await li.send(**bad)
        assert (await li.next("error"))["code"] == "bad_frame"
    await li.send(type="status", status="away")  # the socket stays usable
    assert (await li.next("status"))["status"] == "away"


async def test_status_selector_and_manual_mode_capacity(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(capacity=1)  # manual (agent_section's default here)
    li = await AgentSocket.open(two, "li")
    wang = await AgentSocket.open(one, "wang")
    agents += [li, wang]
    await li.send(type="status", status="away")
    assert (await li.next("status"))["status"] == "away"
    async with asyncio.timeout(5):
        while True:  # in wang's hello if li went away before it was read, else in an `agents` frame
            got = await wang.next()
            if (
                got["type"] in ("hello", "agents")
                and {x["username"]: x["status"] for x in got["agents"]}.get("li") == "away"
            ):
                break
    ids = []
    for _ in range(2):
        ws, conversation = await user(one)
        await ws.send_json({"type": "handoff"})
        await receive_until(ws, "system")
        ids.append(conversation)
    await li.send(type="claim", conversation=ids[0])  # manual: away agents may still claim
    assert (await li.next("claimed"))["conversation"] == ids[0]
    await li.send(type="claim", conversation=ids[1])
    assert (await li.next("error"))["code"] == "at_capacity"
    await wang.send(type="claim", conversation=ids[1])
    assert (await wang.next("claimed"))["conversation"] == ids[1]


async def test_away_agents_get_nothing_until_online(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(routing="auto")
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.next("hello")
    await li.send(type="status", status="away")
    assert (await li.next("status"))["status"] == "away"
    ws, conversation = await user(one)
    await ws.send_json({"type": "handoff"})
    queued = await receive_until(ws, "system")
    assert queued["event"] == "queued"
    assert "estimated_wait" not in queued  # nobody online: no estimate
    assert (await li.next("queue_added"))["item"]["conversation"] == conversation  # offered, not given
    await li.send(type="status", status="online")
    assert (await li.next("assigned"))["conversation"] == conversation
    await ws.close()


async def test_waiting_users_hear_an_estimate_once_a_wait_was_measured(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy()  # manual: the first claim measures a wait
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.next("hello")
    first, first_id = await user(one)
    await first.send_json({"type": "handoff"})
    assert "estimated_wait" not in await receive_until(first, "system")  # nothing measured yet
    await li.send(type="claim", conversation=first_id)
    await li.next("claimed")
    second, _ = await user(one)
    await second.send_json({"type": "handoff"})
    queued = await receive_until(second, "system")
    # A wait of well under a second (0 ms is possible), shared by li's two free slots: too short
    # to say in minutes.
    assert queued["event"] == "queued"
    assert queued["estimated_wait"] in (0, 1)
    assert queued["msg"] == "正在为您转接人工客服,您是下一位,请稍候。"
    await first.close()
    await second.close()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("capacity: 0", "agents.capacity"),
        ("routing: round_robin", "agents.routing"),
        ("assign_timeout: -1", "agents.assign_timeout"),
        ("presence_ttl: 0", "agents.presence_ttl"),
        ("accounts: [{username: li, name: 小李, password_hash: x, capacity: -1}]", "agents.accounts[0].capacity"),
    ],
)
def test_routing_settings_are_checked(tmp_path: Path, section: str, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"agents: {{{section}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert error.value.key == key


def test_routing_defaults_and_a_per_account_capacity(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("agents: {accounts: [{username: li, name: 小李, password_hash: x, capacity: 5}]}\n", "utf-8")
    agents = load_settings(path, env={}).agents
    assert (agents.capacity, agents.routing, agents.assign_timeout, agents.accounts[0].capacity) == (3, "auto", 60.0, 5)


async def test_routing_actions_while_redis_refuses_writes(aiohttp_client: Any, redis_process: RedisProcess) -> None:
    settings = make_settings(
        agents=agent_section(routing="auto"),
        layer={"backend": "redis", "redis": {"url": redis_process.url, "prefix": unique_prefix()}},
    )
    app = web.Application()
    setup(app, settings, bot=HandoffBot())
    client = await aiohttp_client(app)
    li = await AgentSocket.open(client, "li")
    try:
        await li.next("hello")
        async with out_of_memory(redis_process.url):
            await li.send(type="status", status="away")
            error = await li.next("error")
            assert (error["code"], error["msg"]) == ("queue_unavailable", "排队服务暂时不可用,请稍后再试。")
            # A transfer's checks only read: refused for its reason, not for the outage.
            await li.send(type="transfer", conversation="c" * 32, to="wang")
            assert (await li.next("error"))["reason"] == "not_yours"
            metrics = await (await client.get("/metrics")).text()
            assert 'chatbot_errors_total{code="queue_unavailable"} 1.0' in metrics
        await li.send(type="status", status="away")  # the socket stayed open, and works again
        assert (await li.next("status"))["status"] == "away"
    finally:
        await li.close()
