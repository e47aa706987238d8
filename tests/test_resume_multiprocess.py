"""A conversation started on one real server process is carried on by another (one private Redis)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from .test_redis_multiprocess import Server, prefix, servers  # noqa: F401 - shared fixtures

pytestmark = pytest.mark.timeout(40)


async def test_resume_on_another_process_is_exact(servers: tuple[Server, Server]) -> None:
    one, two = servers
    async with aiohttp.ClientSession() as session:
        await one.wait_ready(session)
        await two.wait_ready(session)
        seen: list[dict[str, Any]] = []
        async with session.ws_connect(f"{one.url}/ws") as ws:
            seen.append(await ws.receive_json(timeout=5))
            for n in range(5):
                await ws.send_json({"type": "message", "text": f"第{n}个", "id": f"m{n}"})
                seen.append(await ws.receive_json(timeout=5))
                seen.append(await ws.receive_json(timeout=5))
        conversation = seen[0]["conversation"]
        async with session.ws_connect(f"{two.url}/ws?conversation={conversation}&last_seq=4") as ws:
            replay = [await ws.receive_json(timeout=5) for _ in range(7)]
            resumed = await ws.receive_json(timeout=5)
            # Sent again by a page that missed the confirmation: stored and answered once only.
            await ws.send_json({"type": "message", "text": "第4个", "id": "m4"})
            await ws.send_json({"type": "message", "text": "最后", "id": "last"})
            more = [await ws.receive_json(timeout=5) for _ in range(2)]
    assert replay == seen[4:]
    assert resumed["event"] == "resumed" and resumed["last_seq"] == 11
    assert [(f["type"], f["seq"], f["msg"]) for f in more] == [
        ("user", 12, "最后"),
        ("reply", 13, "我正在思考你的问题{最后}"),
    ]
