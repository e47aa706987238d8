"""A streamed reply survives the death of the process writing it (#18): real server processes, one Redis."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import stop_process, wait_healthy
from .redis_server import unique_prefix
from .stream_bots import PacedBot, Page
from .test_redis_multiprocess import Server

pytestmark = pytest.mark.timeout(60)

PIECES = 40


async def test_a_reply_whose_process_dies_is_written_again_by_the_next(tmp_path: Path, redis_server: str) -> None:
    prefix = unique_prefix()
    bot = f"{{name: 'tests.stream_bots:PacedBot', options: {{interval: 0.02, pieces: {PIECES}}}}}"
    one, two = (
        Server(tmp_path, name, redis_server, prefix, bot=bot, extra="history: {takeover_timeout: 0.5}\n")
        for name in ("one", "two")
    )
    try:
        async with aiohttp.ClientSession() as session:
            for server in (one, two):
                await wait_healthy(session, f"{server.url}/healthz", exited=server.exited)
            page = Page()
            async with session.ws_connect(f"{one.url}/ws") as ws:
                conversation = (await ws.receive_json(timeout=5))["conversation"]
                await ws.send_json({"type": "message", "text": "挂失", "id": "m1"})
                user: dict[str, Any] = {}
                while sum(len(t) for t in page.writing.values()) < 30:  # part of the reply is on screen
                    f = await ws.receive_json(timeout=5)
                    page.see(f)
                    user = f if f["type"] == "user" else user
                one.proc.send_signal(signal.SIGKILL)  # the writing process dies mid-reply
            one.proc.wait(10)
            async with session.ws_connect(f"{two.url}/ws?conversation={conversation}&last_seq={user['seq']}") as ws:
                starts = []
                while not page.done:
                    f = await ws.receive_json(timeout=10)
                    page.see(f)
                    if f["type"] == "reply_start":
                        starts.append(f)
        # The next process answers the orphaned question again (same reply_to: the page replaces
        # what the dead one had written), in full, once.
        (final,) = page.done.values()
        assert final["msg"] == "".join(PacedBot(pieces=PIECES).script("挂失"))
        assert final["reply_to"] == "m1" and starts and all(s["reply_to"] == "m1" for s in starts)
    finally:
        stop_process(one.proc)
        stop_process(two.proc)
