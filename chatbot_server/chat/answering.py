"""The bot's side of a chat socket: run a turn, stream what the bot writes, stop it, apologise.

A bot that answers from memory (`def answer`) is called directly; one that waits runs under its
deadline (turns.py). A streaming bot's turns run one at a time in a task of their own (`Serial`),
so the socket goes on reading while a reply is written: the user can stop it, and their next
messages wait, unstored, until it ends (so the page, which keeps unconfirmed messages below the
reply being written, shows the order a reload replays).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..bots import HistoryEntry, Reply, Turn
from ..protocol import Frame, frame
from . import texts
from .handoff import Handoff
from .holding import Holding, deliver
from .streams import Stream
from .turns import TurnRunner, apology_frame, reply_frame

log = logging.getLogger("chatbot_server.chat")

#: User messages that may wait for a streamed reply to end; more are refused (the page resends).
MAX_WAITING = 20
#: Seconds a streaming bot's stored frame waits for its write before it is shown anyway (Redis down).
WRITE_OUT_DEADLINE = 0.5
#: The "reply being written" of a turn that writes none (a sync bot's): never appended to.
_NOT_WRITING: list[Stream] = []


class AnsweringSocket(Protocol):
    """What Answering needs of its socket (a ChatConsumer)."""

    connection_id: str
    stats: Any
    hold: Holding
    handoff: Handoff | None

    async def send_json(self, payload: object) -> None: ...

    def emit_now(self, out: Frame) -> bool: ...

    def store_now(self, out: Frame) -> bytes | None: ...

    def send_encoded_nowait(self, data: bytes) -> None: ...

    async def emit(self, out: Frame) -> None: ...

    async def recent_history(self) -> list[HistoryEntry]: ...


class Serial:
    """Jobs run one after another in one task, so the caller never waits for them."""

    __slots__ = ("_jobs", "_task")

    def __init__(self) -> None:
        self._jobs: deque[Callable[[], Awaitable[None]]] = deque()
        self._task: asyncio.Task[None] | None = None

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Queue a job; False if MAX_WAITING already wait."""
        if len(self._jobs) >= MAX_WAITING:
            return False
        self._jobs.append(job)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return True

    async def _run(self) -> None:
        try:
            while self._jobs:
                job = self._jobs.popleft()
                try:
                    await job()
                except Exception:  # one failed job must not stop the ones behind it
                    log.exception("chat.job_failed")
        finally:
            self._task = None

    async def finish(self) -> None:
        """Drop the jobs not started (their messages were never stored: the page sends them
        again) and wait for the one running, whose frames reach the conversation's next holder."""
        self._jobs.clear()
        task = self._task
        if task is not None:
            await asyncio.shield(task)


class Answering:
    """One socket's bot turns."""

    __slots__ = ("_stopping", "_turn", "_watch", "_yielding", "error_text", "notes", "serial", "socket", "turns")

    def __init__(self, socket: AnsweringSocket, turns: TurnRunner, *, error_text: str) -> None:
        self.socket = socket
        self.turns = turns
        self.error_text = error_text
        #: Turns of a streaming bot, one at a time (None for other bots: the socket awaits them).
        self.serial = Serial() if turns.style == "stream" else None
        # A turn that may wait, running: its task, the reply it writes, the message it answers.
        self._turn: tuple[asyncio.Task[None], list[Stream], str | None] | None = None
        self._stopping = False  # the user stopped it: keep what was written
        self._yielding = False  # another socket's turn answers the same message: keep nothing
        self._watch: asyncio.Task[None] | None = None  # watches writers elsewhere (watch_writers)
        #: Told every question and reply, off the reply path (chat/unanswered.py); None: nobody.
        self.notes: Callable[[str, Reply], None] | None = None

    async def answer(self, text: str, client_id: str | None = None) -> None:
        """Run the bot on one message within its deadline (if it can wait); apologise if it fails."""
        socket, turns = self.socket, self.turns
        history = await socket.recent_history() if turns.bot.uses_history else ()
        turn = Turn(socket.hold.conversation, text, history)
        started = time.monotonic()
        if client_id is not None:
            socket.hold.start_answering(client_id)
        stream = _NOT_WRITING  # a sync bot writes no pieces: no list per message
        try:
            if turns.style == "sync":  # the common case: no coroutine, no timer
                await self._on_reply(turns.bot.answer(turn), started, client_id, stream, text)  # type: ignore[arg-type]
            else:
                stream = []  # the reply being written, once the bot writes one
                if turns.style == "stream":
                    socket.hold.store.write_soon()  # the question: written while the bot thinks

                async def on_reply(reply: Reply) -> None:
                    await self._on_reply(reply, started, client_id, stream, text)

                async def on_delta(piece: str) -> None:
                    await self._on_delta(piece, client_id, stream)

                await self._run(turns.run(turn, on_reply, self._on_typing, on_delta), stream, client_id)
        except TimeoutError:
            log.warning("bot.timeout conn=%s after=%.2fs", socket.connection_id, time.monotonic() - started)
            socket.stats.error("bot_timeout")
            await self._end(apology_frame(self.error_text, "bot_timeout", client_id), stream, failed=True)
        except Exception:
            log.exception("bot.error conn=%s", socket.connection_id)
            socket.stats.error("bot_error")
            await self._end(apology_frame(self.error_text, "bot_error", client_id), stream, failed=True)
        finally:
            if client_id is not None:
                socket.hold.done_answering(client_id)

    async def _run(self, work: Awaitable[None], stream: list[Stream], client_id: str | None) -> None:
        """Run a turn that may wait, in a task stop() can cancel without cancelling us."""
        task = asyncio.ensure_future(work)
        self._turn = (task, stream, client_id)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not (self._stopping or self._yielding) or (current is not None and current.cancelling()):
                raise  # we are being cancelled ourselves, not the turn by the user
            if self._yielding:
                while stream:
                    self.socket.hold.streams.by_id.pop(stream.pop().id, None)
            else:
                await self._stopped(stream)
        finally:
            self._turn = None
            self._stopping = self._yielding = False

    def stop(self, reply: str | None) -> bool:
        """Stop the reply being written (`reply`: its id, or None for any); False if none is."""
        running = self._turn
        if running is None or self._stopping:
            return False
        task, stream, _ = running
        if reply is not None and not (stream and stream[0].id == reply):
            return False  # another reply (or one relayed from the socket we took over from)
        self._stopping = True
        task.cancel()
        return True

    def drop(self, reply_to: str) -> None:
        """Cancel, unseen and unstored, our turn answering `reply_to` (another socket's writes it)."""
        running = self._turn
        if running is not None and running[2] == reply_to and not self._stopping:
            self._yielding = True
            running[0].cancel()

    def watch_writers(self, answer_orphans: Callable[[], Awaitable[None]]) -> None:
        """After a resume that inherited replies being written on another socket: should their
        writer fall silent for `turns.timeout` s (its process died after handing over), answer
        those questions here."""
        hold = self.socket.hold
        if self.serial is None or not (hold.streams or hold.inherited):
            return

        async def watch() -> None:
            if await hold.wait_quiet(idle=self.turns.timeout, limit=self.turns.reply_timeout):
                log.warning("bot.writer_silent conn=%s", self.socket.connection_id)
                hold.forget_silent()
                if self.serial is not None:
                    self.serial.submit(answer_orphans)

        self._watch = asyncio.get_running_loop().create_task(watch())

    async def finish(self) -> None:
        """The socket is going away: stop watching, run the turns queued, and wait until the replies
        written here (or inherited) fall quiet, so the conversation's next holder finds them whole."""
        if self.serial is None:
            return
        await self.unwatch()
        await self.serial.finish()
        await self.socket.hold.wait_quiet(idle=self.turns.timeout, limit=self.turns.reply_timeout)

    async def unwatch(self) -> None:
        """Stop watching (the socket is going away: it waits for those writers itself)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _stopped(self, stream: list[Stream]) -> None:
        if not stream:
            return  # stopped before anything was written: nothing to keep
        written = stream[0]
        out = frame("reply", written.text, talk=True, intent="stopped", confidence=0.0)
        if written.reply_to is not None:
            out["reply_to"] = written.reply_to
        await self._end(out, stream, stopped=True)

    async def _on_typing(self) -> None:
        await self.socket.send_json(frame("typing", "", talk=False))

    async def _on_delta(self, piece: str, client_id: str | None, stream: list[Stream]) -> None:
        hold = self.socket.hold
        new = not stream
        if new:
            if hold.holding:
                await self.write_out()
            stream.append(Stream(secrets.token_hex(6), client_id))
            hold.streams.by_id[stream[0].id] = stream[0]
        written = stream[0]
        delta = written.grow(piece)
        if hold.holding:  # to our page
            if new:
                await self.socket.send_json(written.start_frame())
            await self.socket.send_json(delta)
        else:  # to the conversation's holder now, if any: the whole text, which no snapshot needs
            await deliver(hold.store, hold.layer, hold.conversation, written.whole())

    async def write_out(self) -> None:
        """Write out the conversation's frames now. A streaming bot's conversation shows a stored
        frame (the question's echo, the final reply) only once written, and a reply being
        written only after what came before: if this process dies mid-reply, the next one must
        find the question (the page, which saw it confirmed, does not send it again) and the
        answers before it (or it would answer them again, under seqs the page has shown).
        If Redis does not write it within WRITE_OUT_DEADLINE (down), that is logged and it is shown."""
        written = self.socket.hold.store.write_soon()
        if written is None:  # the memory store: nothing to wait for
            return
        try:
            async with asyncio.timeout(WRITE_OUT_DEADLINE):
                await asyncio.shield(written)  # the writer resolves it, or retries until it can
        except TimeoutError:
            log.warning("history.write_out_slow conn=%s deadline=%.1fs", self.socket.connection_id, WRITE_OUT_DEADLINE)

    async def _end(self, out: Frame, stream: list[Stream], *, stopped: bool = False, failed: bool = False) -> None:
        """The final frame of a turn: stored, and, for a streamed reply, carrying its id."""
        socket = self.socket
        if stream:
            written = stream.pop()
            socket.hold.streams.by_id.pop(written.id, None)
            out["id"] = written.id
            if stopped:
                out["stopped"] = True
            if failed:
                out["failed"] = True
        if self.serial is not None:
            # A streaming bot's final frame is shown once written: were this process to die
            # between showing and writing it, the next would answer the question again, under
            # the seq the page has just shown (chat.js drops that frame, the new stream stays).
            encoded = socket.store_now(out)
            if encoded is not None:
                try:
                    await self.write_out()
                finally:  # stored: shown even if the turn is stopped meanwhile
                    socket.send_encoded_nowait(encoded)
                return
        if not socket.emit_now(out):
            await socket.emit(out)

    async def _on_reply(
        self, reply: Reply, started: float, client_id: str | None, stream: list[Stream], asked: str
    ) -> None:
        socket = self.socket
        socket.stats.bot_latency.observe(time.monotonic() - started)
        if self.notes is not None:  # never waits, never raises
            self.notes(asked, reply)
        handoff = socket.handoff
        if handoff is None and reply.handoff:  # no agents (#16): one answer naming the hotline instead
            reply = dataclasses.replace(reply, text=texts.NO_AGENTS, handoff=False)
        out = reply_frame(reply, client_id)
        if stream or self.serial is not None:
            await self._end(out, stream)
        elif not socket.emit_now(out):
            await socket.emit(out)
        if handoff is not None and handoff.needs_after_reply(reply):
            await handoff.after_reply(reply, socket.hold.conversation)
