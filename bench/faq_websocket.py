"""The FAQ figures as a customer gets them: each question through the live websocket of the default install.

Starts `python -m chatbot_server` (embedded defaults: memory layer, FAQ bot, semantic stage if
installed) on a free loopback port, sends every question of a labelled JSONL file as a page
would ({"text": ...}; a fresh socket every few questions, inside the per-socket rate limit), reads
the intent of each reply frame, and compares it with the label and with what the in-process
`evaluate` command predicts. The two must agree: the server answers with the same matcher.

    python bench/faq_websocket.py --data tests/data/faq_blind4_heldout.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbot_server.bots.faq.bot import build_matcher
from chatbot_server.bots.faq.cascade import CascadeParams
from chatbot_server.bots.faq.evaluate import load_examples
from chatbot_server.bots.faq.options import DEFAULT_KNOWLEDGE_BASE
from chatbot_server.bots.faq.reply import RANK_LIMIT, reply_for
from chatbot_server.bots.faq.semantic import load_encoder
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
# Below the default rate burst (10 messages per socket): no question meets a rate limit.
PER_SOCKET = 8


async def ask_all(port: int, texts: list[str]) -> list[str]:
    """The intent of the reply to each text, asked in order."""
    url, origin = f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"
    intents: list[str] = []
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(texts), PER_SOCKET):
            async with session.ws_connect(url, headers={"Origin": origin}) as ws:
                for text in texts[start : start + PER_SOCKET]:
                    await ws.send_json({"text": text})
                    while True:
                        frame = await ws.receive_json(timeout=30)
                        if frame.get("type") == "reply":
                            intents.append(str(frame.get("intent", "")))
                            break
    return intents


def in_process(texts: list[str]) -> list[str]:
    """What the evaluate command predicts for each text."""
    matcher = build_matcher(DEFAULT_KNOWLEDGE_BASE, CascadeParams(), load_encoder())
    return [reply_for(matcher, matcher.rank(text, RANK_LIMIT)).intent for text in texts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "tests/data/faq_blind4_heldout.jsonl")
    args = parser.parse_args()
    examples = load_examples(args.data)
    texts = [example.text for example in examples]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")} | {"HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "chatbot_server", "--port", str(port)],
        cwd=ROOT / "bench",  # no config.yaml there: the embedded defaults
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # wait for the "listening" log line
            if "listening" in line:
                break
        else:
            print(f"server exited with {server.wait()}", file=sys.stderr)
            return 1
        served = asyncio.run(ask_all(port, texts))
    finally:
        server.terminate()
        server.communicate(timeout=20)
    local = in_process(texts)
    right = sum(got == example.intent for got, example in zip(served, examples, strict=True))
    agree = sum(a == b for a, b in zip(served, local, strict=True))
    print(f"{args.data.name}: {len(texts)} questions over the websocket")
    print(f"  top-1 through the websocket: {right / len(texts):.3f} ({right}/{len(texts)})")
    print(f"  agreement with evaluate in process: {agree}/{len(texts)}")
    for text, a, b in zip(texts, served, local, strict=True):
        if a != b:
            print(f"  differs: websocket {a}, in process {b}: {len(text)} characters")
    return 0 if agree == len(texts) else 1


if __name__ == "__main__":
    sys.exit(main())
