"""Reconnect churn during streamed answers (#18): a page drops its socket every few frames.

    python bench/stream_reconnect.py                   # 1,000 drops, 2 apps on a private Redis
    python bench/stream_reconnect.py --drops 200 --seed 7

Two apps in this process share a private redis-server (as two processes would: their own layer
and store, only Redis between them). A page asks a question, reads 1-12 frames, drops its socket,
comes back on either app with what it has seen, and asks the next question when an answer has
ended. Every answer's final text is checked against the bot's script, and the text its deltas had
shown against the start of that final text. Prints the counts, and any answer that stalled (no
frame for 5 s) or ended twice. The in-process servers share the 2 cores with the client.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot_server import setup  # noqa: E402
from chatbot_server.config import settings_from_dict  # noqa: E402
from tests.stream_bots import PacedBot, Page  # noqa: E402


async def churn(url: str, drops: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    bot = PacedBot(interval=0.003, pieces=30)
    settings = settings_from_dict(
        {
            "bot": {"name": "echo"},
            "layer": {"backend": "redis", "redis": {"url": url, "prefix": f"churn{seed}"}},
            "limits": {"rate_per_second": 1000, "rate_burst": 1000, "replay_per_ip": 10**6},
            "logging": {"level": "ERROR"},
        }
    )
    clients = []
    for _ in range(2):
        app = web.Application()
        setup(app, settings, bot=bot)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
    page, conversation, last_seq, asked, stalls = Page(), "", 0, 0, 0
    try:
        for _ in range(drops):
            query = f"?conversation={conversation}&last_seq={last_seq}" if conversation else ""
            ws = await rng.choice(clients).ws_connect(f"/ws{query}")
            for _ in range(rng.randint(1, 12)):
                try:
                    f = await ws.receive_json(timeout=5)
                except TimeoutError:
                    stalls += 1
                    page.writing.clear()  # give up on it: ask the next question
                    break
                page.see(f)
                conversation = f.get("conversation", conversation)
                last_seq = max(last_seq, f.get("seq", 0))
                if f["type"] in ("greeting", "reply") and "seq" in f and not page.writing:
                    asked += 1
                    await ws.send_json({"type": "message", "text": f"问{asked}", "id": f"m{asked}"})
            await ws.close()
    finally:
        for client in clients:
            await client.close()
    by_question: dict[str, int] = {}
    wrong = short = 0
    for reply, final in page.done.items():
        question = final.get("reply_to", "?")
        by_question[question] = by_question.get(question, 0) + 1
        if final["msg"] != "".join(bot.script(f"问{question[1:]}")):
            wrong += 1
        if not final["msg"].startswith(page.streamed[reply]):
            short += 1
    return {
        "drops": drops,
        "asked": asked,
        "answers ended": len(page.done),
        "final text wrong": wrong,
        "deltas not a prefix of the final text": short,
        "questions answered twice": sum(1 for n in by_question.values() if n > 1),
        "stalls (no frame for 5 s)": stalls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    from tests.redis_server import RedisProcess

    redis = RedisProcess()
    redis.start()
    try:
        result = asyncio.run(churn(redis.url, args.drops, args.seed))
    finally:
        redis.cleanup()
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
