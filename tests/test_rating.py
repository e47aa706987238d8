"""Ratings after a human chat (CSAT): asked once after `end` (not after a handback), answered once,
the comment masked, counted in /metrics, a skip remembered across a reload.

Every test runs on one process (memory) and on two app instances sharing a private Redis: the
customer on the first, the agent's console on the second.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from chatbot_server.keys import RATINGS_KEY

from .agent_support import AgentSocket, Deployment, agents, deploy  # noqa: F401 (fixtures)
from .helpers import receive_json, receive_until

pytestmark = pytest.mark.timeout(30)

CARD = "6222021234567878"  # passes Luhn (tests/test_masking.py)


async def system_event(ws: aiohttp.ClientWebSocketResponse, event: str) -> dict[str, Any]:
    """Skip frames until a system frame with `event`; fail on a rating_request that is not it."""
    while True:
        data = await receive_json(ws)
        if data["type"] == "system" and data.get("event") == event:
            return data
        assert data.get("event") != "rating_request", data


async def talk_to_agent(
    one: TestClient, two: TestClient, agents: list[AgentSocket]
) -> tuple[aiohttp.ClientWebSocketResponse, str, AgentSocket]:
    ws = await one.ws_connect("/ws")
    conversation = (await receive_json(ws))["conversation"]
    await ws.send_json({"type": "handoff"})
    await system_event(ws, "queued")
    li = await AgentSocket.open(two, "li")
    agents.append(li)
    await li.send(type="claim", conversation=conversation)
    await li.next("claimed")
    await system_event(ws, "agent_joined")
    return ws, conversation, li


async def rating_counts(client: TestClient) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {m[0]: float(m[1]) for m in re.findall(r'^chatbot_ratings_total\{score="(\d)"\} (\S+)$', text, re.M)}


async def test_rated_once_after_end_masked_and_counted(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(ask_rating=True)
    ws, conversation, li = await talk_to_agent(one, two, agents)
    before = await rating_counts(one)
    await li.send(type="end", conversation=conversation)
    await system_event(ws, "agent_left")
    asked = await system_event(ws, "rating_request")
    assert (asked["agent"], isinstance(asked["seq"], int)) == ("客服小李", True)  # stored: a reload shows it

    await ws.send_json({"type": "rating", "score": 6})
    assert (await receive_json(ws))["code"] == "bad_rating"
    await ws.send_json({"type": "rating", "score": 4, "comment": "x" * 201})
    assert (await receive_json(ws))["code"] == "too_long"
    await ws.send_json({"type": "rating", "score": 5, "comment": f"很好,卡号 {CARD}"})
    done = await system_event(ws, "rating_done")
    assert (done["msg"], done["score"]) == ("感谢您的评价,祝您生活愉快!", 5)
    await ws.send_json({"type": "rating", "score": 1})  # a second answer
    refused = await receive_json(ws)
    assert (refused["type"], refused["code"]) == ("error", "rating_refused")

    kept = await one.server.app[RATINGS_KEY].recent(1)
    assert [(r.conversation, r.agent, r.score) for r in kept] == [(conversation, "li", 5)]
    assert CARD not in kept[0].comment and kept[0].comment.startswith("很好,卡号 ")
    after = await rating_counts(one)
    assert after["5"] == before.get("5", 0) + 1 and after["1"] == before.get("1", 0)
    metrics = await (await one.get("/metrics")).text()
    assert 'chatbot_agent_ratings_total{agent="li",score="5"} 1.0' in metrics
    await ws.close()


async def test_no_rating_after_a_handback_nor_without_an_ended_chat(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(ask_rating=True)
    ws, conversation, li = await talk_to_agent(one, two, agents)
    await ws.send_json({"type": "rating", "score": 3})  # the chat is still on
    assert (await receive_json(ws))["code"] == "rating_refused"
    await li.send(type="handback", conversation=conversation)
    await system_event(ws, "agent_handback")
    await ws.send_json({"type": "message", "text": "还在吗", "id": "m1"})
    assert (await receive_json(ws))["type"] == "user"  # system_event would fail on a rating_request
    assert (await receive_json(ws))["msg"] == "答:还在吗"
    await ws.send_json({"type": "rating", "score": 3})
    assert (await receive_json(ws))["code"] == "rating_refused"
    await ws.close()


async def test_not_asked_when_turned_off(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(ask_rating=False)
    ws, conversation, li = await talk_to_agent(one, two, agents)
    await li.send(type="end", conversation=conversation)
    await system_event(ws, "agent_left")
    await ws.send_json({"type": "message", "text": "你好", "id": "m1"})
    assert (await receive_json(ws))["type"] == "user"
    assert (await receive_json(ws))["msg"] == "答:你好"
    await ws.close()


async def test_skip_is_remembered_across_a_reload(
    deploy: Callable[..., Awaitable[Deployment]], agents: list[AgentSocket]
) -> None:
    one, two, _ = await deploy(ask_rating=True)
    ws, conversation, li = await talk_to_agent(one, two, agents)
    await li.send(type="end", conversation=conversation)
    await system_event(ws, "rating_request")
    await ws.send_json({"type": "rating", "skip": True})
    skipped = await system_event(ws, "rating_done")
    assert (skipped["msg"], skipped["skipped"]) == ("", True)
    await ws.close()

    # A reload (on the other process, for Redis) replays the request and then its answer: no card.
    again = await two.ws_connect(f"/ws?conversation={conversation}&last_seq=0")
    events = []
    while (data := await receive_json(again)).get("event") != "resumed":
        if data["type"] == "system":
            events.append(data.get("event"))
    assert events[-2:] == ["rating_request", "rating_done"] and events.count("rating_request") == 1
    await again.send_json({"type": "rating", "score": 2})
    assert (await receive_until(again, "error"))["code"] == "rating_refused"  # after the "mode" notice
    assert await one.server.app[RATINGS_KEY].recent(1) == []
    await again.close()


async def test_rating_without_agents_is_unsupported(aiohttp_client: Any) -> None:
    from aiohttp import web

    from chatbot_server import setup

    from .helpers import make_settings

    app = web.Application()
    setup(app, make_settings())
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    await receive_json(ws)
    await ws.send_json({"type": "rating", "score": 5})
    assert (await receive_json(ws))["code"] == "unsupported"
    await ws.close()


def test_settings_are_checked() -> None:
    from chatbot_server.config import settings_from_dict
    from chatbot_server.errors import ConfigError

    account = {"username": "li", "name": "小李", "password_hash": "pbkdf2_sha256$1$c2FsdA$aGFzaA"}
    assert settings_from_dict({"agents": {"accounts": [account]}}).agents.accounts[0].role == "agent"
    with pytest.raises(ConfigError, match="agent, supervisor") as error:
        settings_from_dict({"agents": {"accounts": [{**account, "role": "boss"}]}})
    assert error.value.key == "agents.accounts[0].role"
    for key, bad in (("rating_comment_length", 0), ("unanswered_below", 1.5), ("unanswered_days", 0)):
        with pytest.raises(ConfigError) as error:
            settings_from_dict({"agents": {key: bad}})
        assert error.value.key == f"agents.{key}"


class _Socket:
    """A chat socket's part the rating uses: what it sends and stores."""

    def __init__(self) -> None:
        from chatbot_server.ops.metrics import ServerStats

        self.stats = ServerStats()
        self.sent: list[Any] = []
        self.emitted: list[Any] = []

    async def send_json(self, payload: object) -> None:
        self.sent.append(payload)

    async def emit(self, out: Any) -> None:
        self.emitted.append(out)


async def test_a_store_that_fails_gets_a_clear_error_frame() -> None:
    from chatbot_server.chat.rating import take_rating
    from chatbot_server.ops.redis import redis_client
    from chatbot_server.protocol import RatingAnswer
    from chatbot_server.store.ratings_redis import RedisRatingStore

    client = redis_client("redis://127.0.0.1:1/0", pool_size=2, connect_timeout=0.5, socket_timeout=0.5)
    socket = _Socket()
    try:
        await take_rating(socket, RedisRatingStore(client), "c1", RatingAnswer(5, "好"), comment_length=200)
    finally:
        await client.aclose()
    assert [(f["type"], f["code"]) for f in socket.sent] == [("error", "rating_unavailable")]
    assert socket.emitted == [] and socket.stats.errors["rating_unavailable"] == 1
