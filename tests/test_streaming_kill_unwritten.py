"""A process killed at a streamed answer's first delta, before its write-behind ran (#18, found by
bench/stream_kill_soak.py): the question the page saw confirmed, and the answer before it, must
be in Redis, or the next process never answers the question (the page does not send a confirmed
question again) and reuses seqs the page has shown (chat.js drops those frames unseen)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import stop_process, wait_healthy
from .redis_server import RedisProcess, unique_prefix
from .stream_bots import PacedBot, Page
from .test_redis_multiprocess import Server

pytestmark = pytest.mark.timeout(60)

PIECES = 5


async def test_a_kill_at_the_first_delta_loses_neither_the_question_nor_the_answer_before(
    tmp_path: Path, redis_server: str
) -> None:
    prefix = unique_prefix()
    bot = f"{{name: 'tests.stream_bots:PacedBot', options: {{interval: 0.02, pieces: {PIECES}}}}}"
    # A write-behind slower than the bot's first delta: without writing before the reply shows,
    # nothing of the two questions would be in Redis when the process dies.
    extra = "history: {takeover_timeout: 0.5, write_interval: 2.0}\n"
    one, two = (Server(tmp_path, name, redis_server, prefix, bot=bot, extra=extra) for name in ("one", "two"))
    try:
        async with aiohttp.ClientSession() as session:
            for server in (one, two):
                await wait_healthy(session, f"{server.url}/healthz", exited=server.exited)
            page, seen = Page(), {}
            async with session.ws_connect(f"{one.url}/ws") as ws:
                conversation = (await ws.receive_json(timeout=5))["conversation"]
                for client_id in ("m1", "m2"):
                    await ws.send_json({"type": "message", "text": f"问{client_id}", "id": client_id})
                    while True:
                        f = await ws.receive_json(timeout=5)
                        page.see(f)
                        seen.update({f["seq"]: f} if "seq" in f else {})
                        if client_id == "m1" and f["type"] == "reply":
                            break  # m1 answered whole: ask m2
                        if client_id == "m2" and f["type"] == "reply_delta":
                            break  # m2's answer shows: kill
                one.proc.send_signal(signal.SIGKILL)
            one.proc.wait(10)
            last_seq = max(seen)
            assert seen[last_seq]["type"] == "user" and seen[last_seq]["id"] == "m2"
            finals: list[dict[str, Any]] = []
            async with session.ws_connect(f"{two.url}/ws?conversation={conversation}&last_seq={last_seq}") as ws:
                resumed = await ws.receive_json(timeout=10)
                assert resumed.get("event") == "resumed" and resumed["last_seq"] >= last_seq
                while not any(final.get("reply_to") == "m2" for final in finals):
                    f = await ws.receive_json(timeout=10)  # before the fix: nothing comes
                    page.see(f)
                    assert f.get("seq", last_seq + 1) > last_seq, f"seq {f['seq']} was shown before: {f}"
                    finals += [f] if f["type"] == "reply" else []
        assert [final["reply_to"] for final in finals] == ["m2"]  # m1's answer is not written again
        assert finals[0]["msg"] == "".join(PacedBot(pieces=PIECES).script("问m2"))
    finally:
        stop_process(one.proc)
        stop_process(two.proc)


async def test_a_kill_just_after_an_answer_ended_does_not_answer_it_again(tmp_path: Path, redis_server: str) -> None:
    prefix = unique_prefix()
    bot = f"{{name: 'tests.stream_bots:PacedBot', options: {{interval: 0.01, pieces: {PIECES}}}}}"
    extra = "history: {takeover_timeout: 0.5, write_interval: 2.0}\n"
    one, two = (Server(tmp_path, name, redis_server, prefix, bot=bot, extra=extra) for name in ("one", "two"))
    try:
        async with aiohttp.ClientSession() as session:
            for server in (one, two):
                await wait_healthy(session, f"{server.url}/healthz", exited=server.exited)
            async with session.ws_connect(f"{one.url}/ws") as ws:
                conversation = (await ws.receive_json(timeout=5))["conversation"]
                await ws.send_json({"type": "message", "text": "问m1", "id": "m1"})
                while (final := await ws.receive_json(timeout=5))["type"] != "reply":
                    pass
                one.proc.send_signal(signal.SIGKILL)  # the page has the answer whole
            one.proc.wait(10)
            url = f"{two.url}/ws?conversation={conversation}&last_seq={final['seq']}"
            async with session.ws_connect(url) as ws:
                resumed = await ws.receive_json(timeout=10)
                assert resumed.get("event") == "resumed" and resumed["last_seq"] == final["seq"]
                # Nothing more comes of m1: a question asked now is the next thing the page sees.
                await ws.send_json({"type": "message", "text": "问m2", "id": "m2"})
                f = await ws.receive_json(timeout=10)
                assert (f["type"], f.get("id"), f["seq"]) == ("user", "m2", final["seq"] + 1), f
    finally:
        stop_process(one.proc)
        stop_process(two.proc)


async def test_a_question_is_echoed_only_once_written(tmp_path: Path, redis_process: RedisProcess) -> None:
    """A kill right after the echo must not lose the question: while Redis cannot write it, the
    page is not told it arrived (it keeps it, to send again); once written, a kill takes nothing."""
    prefix = unique_prefix()
    bot = f"{{name: 'tests.stream_bots:PacedBot', options: {{interval: 0.01, pieces: {PIECES}}}}}"
    extra = "history: {takeover_timeout: 0.5}\n"
    one, two = (Server(tmp_path, name, redis_process.url, prefix, bot=bot, extra=extra) for name in ("one", "two"))
    try:
        async with aiohttp.ClientSession() as session:
            for server in (one, two):
                await wait_healthy(session, f"{server.url}/healthz", exited=server.exited)
            async with session.ws_connect(f"{one.url}/ws") as ws:
                conversation = (await ws.receive_json(timeout=5))["conversation"]
                redis_process.freeze()
                try:
                    await ws.send_json({"type": "message", "text": "问m1", "id": "m1"})
                    with pytest.raises(TimeoutError):  # before the fix: the echo, unwritten
                        await ws.receive_json(timeout=0.2)  # (shown anyway after WRITE_OUT_DEADLINE)
                finally:
                    redis_process.thaw()
                echo = await ws.receive_json(timeout=5)
                assert (echo["type"], echo["id"]) == ("user", "m1")
                one.proc.send_signal(signal.SIGKILL)
            one.proc.wait(10)
            async with session.ws_connect(f"{two.url}/ws?conversation={conversation}&last_seq={echo['seq']}") as ws:
                resumed = await ws.receive_json(timeout=10)
                assert resumed.get("event") == "resumed" and resumed["last_seq"] == echo["seq"]
                while (f := await ws.receive_json(timeout=10))["type"] != "reply":
                    pass
                assert (f["reply_to"], f["msg"]) == ("m1", "".join(PacedBot(pieces=PIECES).script("问m1")))
    finally:
        stop_process(one.proc)
        stop_process(two.proc)


async def test_with_redis_hung_the_echo_and_the_answer_come_anyway(tmp_path: Path, redis_process: RedisProcess) -> None:
    """Written first, but not at any price: a Redis that does not answer delays each stored frame
    by WRITE_OUT_DEADLINE (0.5 s), then the socket goes on."""
    bot = f"{{name: 'tests.stream_bots:PacedBot', options: {{interval: 0.01, pieces: {PIECES}}}}}"
    one = Server(tmp_path, "one", redis_process.url, unique_prefix(), bot=bot)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"{one.url}/healthz", exited=one.exited)
            async with session.ws_connect(f"{one.url}/ws") as ws:
                await ws.receive_json(timeout=5)
                redis_process.freeze()
                try:
                    await ws.send_json({"type": "message", "text": "问m1", "id": "m1"})
                    echo = await ws.receive_json(timeout=3)
                    assert (echo["type"], echo["id"]) == ("user", "m1")
                    while (f := await ws.receive_json(timeout=3))["type"] != "reply":
                        pass
                    assert f["msg"] == "".join(PacedBot(pieces=PIECES).script("问m1"))
                finally:
                    redis_process.thaw()
    finally:
        stop_process(one.proc)
