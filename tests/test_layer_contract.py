"""The channel-layer contract: every implementation runs these very tests.

Add an implementation by extending the `layer_factory` fixture in conftest.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from chatbot_server.errors import ChannelFull, InvalidMessageError, InvalidNameError
from chatbot_server.layers import ChannelLayer

from .conftest import LayerFactory

pytestmark = pytest.mark.timeout(20)


async def recv(layer: ChannelLayer, channel: str) -> dict:
    async with asyncio.timeout(5):
        return await layer.receive(channel)


async def test_send_then_receive(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "test.message", "text": "你好"})
    assert await recv(layer, channel) == {"type": "test.message", "text": "你好"}


async def test_messages_keep_their_order(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    for n in range(20):
        await layer.send(channel, {"type": "seq", "n": n})
    assert [(await recv(layer, channel))["n"] for _ in range(20)] == list(range(20))


async def test_receive_waits_for_a_later_send(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(recv(layer, channel))
    await asyncio.sleep(0)  # let the receiver start waiting (not synchronisation: order only)
    assert not waiting.done()
    await layer.send(channel, {"type": "late"})
    assert (await waiting)["type"] == "late"


async def test_named_channel_without_process_part(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    await layer.send("worker.jobs", {"type": "job", "n": 1})
    assert (await recv(layer, "worker.jobs"))["n"] == 1


async def test_new_channels_are_unique(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    names = {await layer.new_channel("chat") for _ in range(200)}
    assert len(names) == 200
    assert all(name.startswith("chat.") and "!" in name for name in names)


async def test_capacity_raises_channel_full(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(capacity=3)
    channel = await layer.new_channel()
    for n in range(3):
        await layer.send(channel, {"type": "fill", "n": n})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "fill", "n": 3})
    # Receiving one makes room for one more.
    assert (await recv(layer, channel))["n"] == 0
    await layer.send(channel, {"type": "fill", "n": 3})


async def test_expired_messages_are_dropped(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(expiry=0.2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "old"})
    await asyncio.sleep(0.3)  # the behaviour under test is the passing of time itself
    await layer.send(channel, {"type": "new"})
    assert (await recv(layer, channel))["type"] == "new"


async def test_group_send_reaches_every_member(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    a, b, c = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("users", a)
    await layer.group_add("users", b)
    await layer.group_send("users", {"type": "chat.message", "text": "hi"})
    assert (await recv(layer, a))["text"] == "hi"
    assert (await recv(layer, b))["text"] == "hi"
    await layer.send(c, {"type": "marker"})
    assert (await recv(layer, c))["type"] == "marker"  # c, not a member, got nothing before


async def test_group_discard_stops_delivery(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("users", a)
    await layer.group_add("users", b)
    await layer.group_discard("users", a)
    await layer.group_discard("users", a)  # discarding twice is harmless
    await layer.group_discard("nobody-here", a)
    await layer.group_send("users", {"type": "after"})
    assert (await recv(layer, b))["type"] == "after"
    await layer.send(a, {"type": "marker"})
    assert (await recv(layer, a))["type"] == "marker"


async def test_group_send_skips_full_members(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.send(full, {"type": "first"})
    await layer.group_add("g", full)
    await layer.group_add("g", free)
    await layer.group_send("g", {"type": "broadcast"})  # must not raise
    assert (await recv(layer, free))["type"] == "broadcast"
    assert (await recv(layer, full))["type"] == "first"
    assert layer.stats.dropped == 1  # counted for /metrics


async def test_group_membership_expires(layer_factory: LayerFactory) -> None:
    layer = await layer_factory(group_expiry=1)
    old, renewed = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", old)
    await layer.group_add("g", renewed)
    await asyncio.sleep(0.6)
    await layer.group_add("g", renewed)  # renewing resets the clock
    await asyncio.sleep(0.6)
    await layer.group_send("g", {"type": "late"})
    assert (await recv(layer, renewed))["type"] == "late"
    await layer.send(old, {"type": "marker"})
    assert (await recv(layer, old))["type"] == "marker"


async def test_flush_drops_messages_and_groups(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "before"})
    await layer.flush()
    await layer.group_send("g", {"type": "to-nobody"})
    await layer.send(channel, {"type": "after"})
    assert (await recv(layer, channel))["type"] == "after"


@pytest.mark.parametrize("name", ["", "with space", "ünïcode", "a" * 100, "semi;colon", "two!bangs!x", None, 7])
async def test_invalid_names_are_rejected(layer_factory: LayerFactory, name: object) -> None:
    layer = await layer_factory()
    with pytest.raises(InvalidNameError, match="invalid"):
        await layer.send(name, {"type": "x"})  # type: ignore[arg-type]
    if name is not None and name != "two!bangs!x":
        with pytest.raises(InvalidNameError, match="group"):
            await layer.group_add(name, await layer.new_channel())  # type: ignore[arg-type]


async def test_names_just_under_the_limit_are_fine(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    await layer.group_add("g" * 99, await layer.new_channel())
    await layer.send("c" * 99, {"type": "ok"})
    assert (await recv(layer, "c" * 99))["type"] == "ok"


@pytest.mark.parametrize("message", [{"text": "no type"}, {"type": 3}, {"type": ""}, ["type"], "x"])
async def test_invalid_messages_are_rejected(layer_factory: LayerFactory, message: object) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    with pytest.raises(InvalidMessageError):
        await layer.send(channel, message)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessageError):
        await layer.group_send("g", message)  # type: ignore[arg-type]


async def test_a_subscriber_gets_every_message_in_order(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "before", "n": 0})  # sent before subscribe: handed over first
    got: list[tuple[str, int]] = []
    three = asyncio.Event()

    def deliver(message: Mapping[str, Any]) -> bool:
        got.append((message["type"], message["n"]))
        if len(got) == 3:
            three.set()
        return True

    layer.subscribe(channel, deliver)
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "group", "n": 1})
    await layer.send(channel, {"type": "direct", "n": 2})
    async with asyncio.timeout(5):
        await three.wait()  # the Redis layer delivers from its reader task
    assert got == [("before", 0), ("group", 1), ("direct", 2)]
    with pytest.raises(RuntimeError):
        await layer.receive(channel)  # pushed to the subscriber, never pulled


async def test_a_refusing_subscriber_makes_send_raise_channel_full(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    channel = await layer.new_channel()
    refused = asyncio.Event()

    def full(message: Mapping[str, Any]) -> bool:  # its own queue is full
        refused.set()
        return False

    layer.subscribe(channel, full)
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x"})
    await layer.group_add("g", channel)
    dropped = layer.stats.dropped
    refused.clear()
    await layer.group_send("g", {"type": "x"})  # group members that are full simply miss it
    async with asyncio.timeout(5):
        await refused.wait()  # the Redis layer delivers from its reader task
    assert layer.stats.dropped == dropped + 1


async def test_only_own_channels_can_be_subscribed(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    with pytest.raises(InvalidNameError):
        layer.subscribe("shared-channel", lambda message: True)
    with pytest.raises(InvalidNameError):
        layer.subscribe("chat.otherprocess!abc", lambda message: True)
    channel = await layer.new_channel()
    layer.subscribe(channel, lambda message: True)
    with pytest.raises(RuntimeError):
        layer.subscribe(channel, lambda message: True)  # one subscriber per channel


async def test_released_channel_gets_nothing_more(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    gone, staying = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", gone)
    await layer.group_add("g", staying)
    await layer.release_channel(gone)
    await layer.group_send("g", {"type": "after"})
    assert (await recv(layer, staying))["type"] == "after"
    assert gone not in layer.local


async def test_health_is_ok(layer_factory: LayerFactory) -> None:
    layer = await layer_factory()
    health = await layer.health()
    assert health.ok and health.backend == layer.backend
