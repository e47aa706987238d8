"""Process kills during streamed answers (#18): kill -9 the process holding the conversation mid-answer.

    python bench/stream_kill_soak.py --kills 20               # a quick check (~1 min)
    nice python bench/stream_kill_soak.py --kills 1000        # the soak

`--servers` (3) `python -m chatbot_server` processes share a redis-server this script starts on a
free loopback port (bench/server_pool.py). One page (as static/chat.js is) asks a question; the
paced bot (tests/stream_bots.py) streams its answer; at the first delta the process holding the
page's socket gets SIGKILL and a replacement starts in the background, so the pool stays at N. The
page reconnects to another process with its conversation id and last seq, sends again the
questions no `user` frame confirmed (on `resumed`, as chat.js does), and reads until the answer
ends. Every question must get exactly one final `reply`, with the bot's whole text, its deltas a
prefix of it; a frame whose seq the page showed already for another frame counts too (chat.js
drops it unseen). Prints one JSON line and a summary; exits 1 on any issue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.server_pool import ServerPool
from tests.redis_server import RedisProcess
from tests.stream_bots import PacedBot, Page
from tests.test_redis_multiprocess import Server

FIRST_DELTA_DEADLINE = 10.0  # seconds from a question to the first delta of its answer
ANSWER_DEADLINE = 15.0  # seconds from a kill to the end of the answer it cut (else: lost)


class SocketClosedError(Exception):
    """The page's socket closed under it."""


@dataclass
class Tally:
    kills: int = 0
    resent: int = 0  # questions sent again after a reconnect (no `user` frame had confirmed them)
    stalls: int = 0  # no first delta within FIRST_DELTA_DEADLINE: nothing was killed for it
    late: int = 0  # an answer not ended within ANSWER_DEADLINE of its kill (lost, unless it came later)
    closed: int = 0  # a socket closed by the server (not by a kill): the page reconnected
    conversations_lost: int = 0  # a resume answered by conversation_expired
    seq_reused: int = 0  # a stored frame with a seq the page had shown for another frame
    gaps: int = 0  # a delta past the end of the text the page had of its reply
    recovery: list[float] = field(default_factory=list)  # kill -> first frame of the answer again
    completion: list[float] = field(default_factory=list)  # kill -> the answer's final reply


class SoakPage:
    """One chat page: what static/chat.js keeps (conversation, last seq, unconfirmed questions,
    frames shown by seq) and does (resume, send again on `resumed`), on whichever process."""

    def __init__(self, pool: ServerPool, session: aiohttp.ClientSession, tally: Tally, rng: random.Random) -> None:
        self.pool, self.session, self.tally, self.rng = pool, session, tally, rng
        self.page = Page()  # stream texts by offset, finals by reply id
        self.conversation = ""
        self.last_seq = 0
        self.shown: dict[int, tuple[Any, ...]] = {}
        self.unconfirmed: dict[str, str] = {}  # client id -> text, in the order sent
        self.asked: dict[str, str] = {}  # client id -> text, every question
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.server: Server | None = None
        self.wanted = ""  # the conversation this socket asked to resume
        self.trace = False  # print every frame (--trace)
        self.kill_within: float | None = None  # --kill-at random: seconds after a question (else its first delta)

    async def connect(self, *, avoid: Server | None = None, fresh: bool = False) -> None:
        await self.drop()
        if fresh:
            self.conversation, self.last_seq, self.shown = "", 0, {}
        self.server = await self.pool.pick(avoid, choose=self.rng.randrange(1 << 16))
        self.wanted = self.conversation
        query = f"?conversation={self.conversation}&last_seq={self.last_seq}" if self.conversation else ""
        self.ws = await self.session.ws_connect(f"{self.server.url}/ws{query}")
        if fresh:  # as the page does, ask once the conversation is there
            await read_until(self, lambda f: f["type"] == "greeting", time.monotonic() + FIRST_DELTA_DEADLINE)

    async def drop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def ask(self, client_id: str, text: str) -> None:
        self.asked[client_id] = self.unconfirmed[client_id] = text
        await self._send(client_id, text)

    async def _send(self, client_id: str, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_json({"type": "message", "text": text, "id": client_id})

    async def next_frame(self, until: float) -> dict[str, Any]:
        """The next frame, applied as the page would apply it; TimeoutError at `until` (monotonic)."""
        while True:
            assert self.ws is not None
            msg = await self.ws.receive(timeout=max(0.01, until - time.monotonic()))
            if msg.type is aiohttp.WSMsgType.TEXT:
                f: dict[str, Any] = json.loads(msg.data)
                if self.trace:
                    print(f"  {self.server.port if self.server else 0} <- {msg.data}", file=sys.stderr)
                await self.see(f)
                return f
            if msg.type is aiohttp.WSMsgType.ERROR or msg.type in (
                aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
            ):  # fmt: skip
                raise SocketClosedError(f"{msg.type.name} {msg.data!r}")

    async def see(self, f: dict[str, Any]) -> None:
        kind, event = f.get("type"), f.get("event")
        new = f.get("conversation")
        if isinstance(new, str) and new != self.conversation:
            if event == "conversation_expired":
                self.tally.conversations_lost += 1
            self.conversation, self.last_seq, self.shown = new, 0, {}
        seq = f.get("seq")
        if isinstance(seq, int):
            key = (kind, f.get("msg"), f.get("id"), f.get("reply_to"))
            if seq in self.shown:
                if self.shown[seq] != key:
                    self.tally.seq_reused += 1  # chat.js would not show it
                return
            self.shown[seq] = key
            self.last_seq = max(self.last_seq, seq)
        if kind == "user":
            self.unconfirmed.pop(f.get("id", ""), None)
        if (event == "resumed") or (kind == "greeting" and f.get("conversation") != self.wanted):
            for client_id, text in list(self.unconfirmed.items()):  # chat.js resendPending()
                self.tally.resent += 1
                await self._send(client_id, text)
        try:
            self.page.see(f)
        except AssertionError:
            self.tally.gaps += 1

    def answers(self, client_id: str) -> bool:
        return any(final.get("reply_to") == client_id for final in self.page.done.values())

    def about(self, f: dict[str, Any], client_id: str) -> bool:
        """Whether `f` is a frame of an answer to `client_id`."""
        if f.get("type") in ("reply_start", "reply"):
            return f.get("reply_to") == client_id
        return f.get("type") == "reply_delta" and self.page.replying_to.get(f.get("id", "")) == client_id


async def read_until(page: SoakPage, done: Callable[[dict[str, Any]], bool], until: float) -> dict[str, Any] | None:
    """Frames until `done(frame)`; the page reconnects (elsewhere) if its socket closes. None at `until`."""
    while True:
        try:
            f = await page.next_frame(until)
        except TimeoutError:
            return None
        except SocketClosedError:
            page.tally.closed += 1
            await page.connect(avoid=page.server)
            continue
        if done(f):
            return f


async def one_kill(page: SoakPage, n: int) -> None:
    """Ask question n, kill the process holding the socket at its first delta, follow it to its end."""
    tally, client_id = page.tally, f"k{n}"
    await page.ask(client_id, f"问{n}")
    if page.kill_within is None:
        first = await read_until(
            page,
            lambda f: f["type"] == "reply_delta" and page.about(f, client_id),
            time.monotonic() + FIRST_DELTA_DEADLINE,
        )
        if first is None:
            tally.stalls += 1
            return
    else:  # at any moment of the question's life: before its echo, mid-answer, just after its end
        await read_until(page, lambda f: False, time.monotonic() + page.rng.uniform(0, page.kill_within))
    victim = page.server
    assert victim is not None
    if page.trace:
        print(f"  kill {victim.port}", file=sys.stderr)
    killed = time.monotonic()
    await page.pool.kill(victim)
    tally.kills += 1
    await page.connect(avoid=victim)
    recovered: list[float] = []

    def ended(f: dict[str, Any]) -> bool:
        if not recovered and page.about(f, client_id):
            recovered.append(time.monotonic() - killed)
        return f["type"] == "reply" and f.get("reply_to") == client_id

    if page.answers(client_id):
        return  # it had ended before the kill
    if await read_until(page, ended, killed + ANSWER_DEADLINE) is None:
        tally.late += 1
        return
    tally.recovery.extend(recovered)
    tally.completion.append(time.monotonic() - killed)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def read_stored(
    pool: ServerPool, session: aiohttp.ClientSession, conversations: list[str]
) -> list[dict[str, Any]]:
    """Every stored frame of the conversations, as a resume from seq 0 replays them (one page each)."""
    frames: list[dict[str, Any]] = []
    for conversation in conversations:
        server = await pool.pick()
        async with session.ws_connect(f"{server.url}/ws?conversation={conversation}&last_seq=0") as ws:
            while (f := await ws.receive_json(timeout=10)).get("event") != "resumed":
                if f.get("event") in ("history_more", "conversation_expired"):
                    raise RuntimeError(f"conversation {conversation[:8]}: {f['event']}; lower --per-conversation")
                frames.append(f)
    return frames


def outcome(
    page: SoakPage, bot: PacedBot, tally: Tally, tracebacks: int, stored: list[dict[str, Any]]
) -> dict[str, Any]:
    finals = Counter(str(final.get("reply_to")) for final in page.page.done.values())
    stored_users = Counter(str(f.get("id")) for f in stored if f["type"] == "user")
    stored_replies = Counter(str(f.get("reply_to")) for f in stored if f["type"] == "reply")
    wrong = prefix = 0
    for reply, final in page.page.done.items():
        question = page.asked.get(str(final.get("reply_to")), "?")
        wrong += final.get("msg") != "".join(bot.script(question))
        prefix += not str(final.get("msg", "")).startswith(page.page.streamed.get(reply, ""))
    result: dict[str, Any] = {
        "kills": tally.kills,
        "questions": len(page.asked),
        "answers_complete": sum(1 for q in page.asked if finals[q] == 1),
        "duplicates": sum(1 for q in page.asked if finals[q] > 1),
        "lost": sum(1 for q in page.asked if finals[q] == 0),
        "final_text_wrong": wrong,
        "prefix_violations": prefix,
        "delta_gaps": tally.gaps,
        "seq_reused": tally.seq_reused,
        "conversations_lost": tally.conversations_lost,
        "stalls": tally.stalls,
        "late_answers": tally.late,
        "server_tracebacks": tracebacks,
        # What Redis holds in the end: each question stored once and answered once.
        "stored_questions_missing": sum(1 for q in page.asked if stored_users[q] == 0),
        "stored_questions_twice": sum(1 for q in page.asked if stored_users[q] > 1),
        "stored_answers_missing": sum(1 for q in page.asked if stored_replies[q] == 0),
        "stored_answers_twice": sum(1 for q in page.asked if stored_replies[q] > 1),
        "resent": tally.resent,
        "unexpected_closes": tally.closed,
        "recovery_p50_s": percentile(tally.recovery, 0.5),
        "recovery_p99_s": percentile(tally.recovery, 0.99),
        "completion_p50_s": percentile(tally.completion, 0.5),
        "completion_p99_s": percentile(tally.completion, 0.99),
    }
    issue_keys = (
        "duplicates", "lost", "final_text_wrong", "prefix_violations", "delta_gaps", "seq_reused",
        "conversations_lost", "stalls", "server_tracebacks", "stored_questions_missing",
        "stored_questions_twice", "stored_answers_missing", "stored_answers_twice",
    )  # fmt: skip
    result["issues"] = sum(result[k] for k in issue_keys)
    return result


async def soak(args: argparse.Namespace, redis_url: str, workdir: Path) -> dict[str, Any]:
    bot = PacedBot(interval=args.interval, pieces=args.pieces)
    pool = ServerPool(
        workdir,
        redis_url,
        args.servers,
        bot=f"{{name: 'tests.stream_bots:PacedBot', options: {{interval: {args.interval}, pieces: {args.pieces}}}}}",
        extra=(
            f"history: {{takeover_timeout: {args.takeover_timeout}, quota_per_ip: 1000000000}}\n"
            "limits: {replay_per_ip: 1000000, rate_per_second: 1000, rate_burst: 1000}\n"
        ),
    )
    tally, conversations = Tally(), []
    async with aiohttp.ClientSession() as session:
        page = SoakPage(pool, session, tally, random.Random(args.seed))
        page.trace = args.trace
        if args.kill_at == "random":
            page.kill_within = args.pieces * args.interval + 0.1
        try:
            await pool.start()
            started = time.monotonic()
            for n in range(args.kills):
                if n % args.per_conversation == 0:
                    if page.conversation:
                        conversations.append(page.conversation)
                    await page.connect(fresh=True)
                await one_kill(page, n)
                if (n + 1) % 50 == 0:
                    print(f"{n + 1} kills, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            # A last question, not cut: an answer repeated late would be in by its end.
            await page.ask("last", "问last")
            await read_until(
                page, lambda f: f["type"] == "reply" and f.get("reply_to") == "last", time.monotonic() + 15
            )
            conversations.append(page.conversation)
            await page.drop()
            stored = await read_stored(pool, session, conversations)
        finally:
            await pool.close()
    tracebacks = sum(log.read_text(errors="replace").count("Traceback") for log in pool.logs() if log.exists())
    return {"kill_at": args.kill_at, **outcome(page, bot, tally, tracebacks, stored)}


def summary(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{result['kills']} kills (SIGKILL of the process holding the page's socket, {result['kill_at']})",
            f"questions {result['questions']}: answered once and whole {result['answers_complete']}, "
            f"duplicated {result['duplicates']}, lost {result['lost']}",
            f"final text wrong {result['final_text_wrong']}, deltas not a prefix {result['prefix_violations']}, "
            f"delta gaps {result['delta_gaps']}, seqs reused {result['seq_reused']}, "
            f"conversations lost {result['conversations_lost']}, stalls {result['stalls']}, "
            f"server tracebacks {result['server_tracebacks']}",
            f"in Redis at the end: questions missing {result['stored_questions_missing']}, stored twice "
            f"{result['stored_questions_twice']}; answers missing {result['stored_answers_missing']}, "
            f"stored twice {result['stored_answers_twice']}",
            f"questions sent again {result['resent']}; recovery (kill -> the answer's next frame) p50 "
            f"{result['recovery_p50_s']} s, p99 {result['recovery_p99_s']} s; kill -> final reply p50 "
            f"{result['completion_p50_s']} s, p99 {result['completion_p99_s']} s",
            "OK" if result["issues"] == 0 else f"ISSUES: {result['issues']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--interval", type=float, default=0.03, help="seconds between the bot's deltas")
    parser.add_argument("--pieces", type=int, default=6, help="deltas per answer")
    parser.add_argument("--takeover-timeout", type=float, default=0.5, help="history.takeover_timeout")
    parser.add_argument("--per-conversation", type=int, default=25, help="kills before the page starts afresh")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and configs")
    parser.add_argument(
        "--kill-at",
        choices=("first-delta", "random"),
        default="first-delta",
        help="when to kill: at the answer's first delta, or at a random moment from the question to just after the answer",
    )
    parser.add_argument("--trace", action="store_true", help="print every frame the page gets")
    args = parser.parse_args()
    redis = RedisProcess()
    redis.start()
    workdir = Path(tempfile.mkdtemp(prefix="chatbot-kill-soak-"))
    try:
        result = asyncio.run(soak(args, redis.url, workdir))
    finally:
        redis.cleanup()
    print(json.dumps(result, ensure_ascii=False))
    print(summary(result))
    if result["issues"] or args.keep:
        print(f"server logs: {workdir}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if result["issues"] else 0)


if __name__ == "__main__":
    main()
