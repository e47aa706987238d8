"""Signed agent session cookies (HMAC-SHA256), their sign-out and expiry, and the sign-in rate limiter.

Cookies stay stateless (any process with the secret checks them), but each names a session id,
so a sign-out can revoke that one session: `LiveSessions` remembers revoked ids until they would
have expired anyway, and closes the session's open console sockets (close code 4003) at sign-out
and when the session expires. Across processes the sign-out travels as one channel-layer message
to SESSIONS_GROUP, which every agent-serving process joins (routes.py): the layer already reaches
every process, on memory and on Redis alike, so no second Redis client or key space is needed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from ..sockets.codes import CLOSE_SESSION_ENDED

log = logging.getLogger("chatbot_server.agents")

COOKIE_NAME = "chatbot_agent"
# Joined by one channel per agent-serving process; sign-outs are sent to it.
SESSIONS_GROUP = "agents.sessions"
SESSION_ENDED = "agent.session_ended"


@dataclass(frozen=True)
class Session:
    """What a valid session cookie says: who, which sign-in, until when (time.time())."""

    username: str
    id: str
    expires: float


class SessionSigner:
    """Makes and checks `<username b64>.<expiry>.<session id>.<signature>` cookie values."""

    def __init__(self, secret: str, *, ttl: float) -> None:
        if not secret:
            secret = secrets.token_urlsafe(32)
            log.warning(
                "agents.session_secret is not set: using a random one, so agent sign-ins do not work across "
                "processes or restarts (set CHATBOT_SESSION_SECRET)"
            )
        self._key = secret.encode()
        self.ttl = ttl

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, username: str) -> str:
        """A cookie value for a new session of `username`, valid `ttl` seconds."""
        user = base64.urlsafe_b64encode(username.encode()).decode().rstrip("=")
        payload = f"{user}.{int(time.time() + self.ttl)}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def session(self, value: str | None) -> Session | None:
        """The session of a valid, unexpired cookie value, else None."""
        if not value or len(value) > 512:
            return None
        payload, dot, signature = value.rpartition(".")
        if not dot or not hmac.compare_digest(self._sign(payload), signature):
            return None
        user, _, rest = payload.partition(".")
        expiry, _, session_id = rest.partition(".")
        if not expiry.isdigit() or int(expiry) < time.time() or not session_id:
            return None
        try:
            username = base64.urlsafe_b64decode(user + "=" * (-len(user) % 4)).decode()
        except ValueError:
            return None
        return Session(username, session_id, float(expiry))

    def verify(self, value: str | None) -> str | None:
        """The username of a valid, unexpired cookie value, else None."""
        session = self.session(value)
        return None if session is None else session.username


class Closable(Protocol):
    """An open console socket (AgentConsumer)."""

    async def close(self, *, code: int, message: str) -> None: ...


def session_ended(session: Session) -> dict[str, Any]:
    """The layer message a sign-out sends to SESSIONS_GROUP."""
    return {"type": SESSION_ENDED, "session": session.id, "expires": session.expires}


class LiveSessions:
    """This process's revoked sessions (until their expiry) and the console sockets of each session."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}  # session id -> when it expires anyway
        self._sockets: dict[str, set[Closable]] = {}
        self._session_of: dict[Closable, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def revoked(self, session_id: str) -> bool:
        """Whether the session was signed out (here or on another process that told us)."""
        return session_id in self._revoked

    def revoke(self, session_id: str, expires: float) -> None:
        """Refuse the session from now on and close its sockets on this process."""
        now = time.time()
        for stale in [s for s, until in self._revoked.items() if until < now]:
            del self._revoked[stale]  # an expired cookie is refused anyway
        if expires >= now:
            self._revoked[session_id] = expires
        self._end(session_id, "signed_out")

    def deliver(self, message: Any) -> bool:
        """The SESSIONS_GROUP listener: a sign-out on any process (a layer Deliver callback)."""
        session_id, expires = message.get("session"), message.get("expires")
        if message.get("type") == SESSION_ENDED and isinstance(session_id, str) and isinstance(expires, float | int):
            self.revoke(session_id, float(expires))
        else:
            log.warning("agents.sessions unexpected message type=%r", message.get("type"))
        return True

    def attach(self, session: Session, socket: Closable) -> None:
        """Close `socket` when `session` is signed out or expires."""
        self._sockets.setdefault(session.id, set()).add(socket)
        self._session_of[socket] = session.id
        if self.revoked(session.id) or session.expires <= time.time():
            self._end(session.id, "ended")  # signed out while the socket was opening
        elif session.id not in self._timers:
            loop = asyncio.get_running_loop()
            delay = session.expires - time.time()
            self._timers[session.id] = loop.call_later(delay, self._end, session.id, "expired")

    def detach(self, socket: Closable) -> None:
        """The socket has closed."""
        session_id = self._session_of.pop(socket, None)
        sockets = self._sockets.get(session_id or "")
        if session_id is None or sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self._sockets[session_id]
            timer = self._timers.pop(session_id, None)
            if timer is not None:
                timer.cancel()

    def _end(self, session_id: str, why: str) -> None:
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        # Forgotten at once: a second end (the sign-out's own layer message) must not close twice.
        for socket in self._sockets.pop(session_id, ()):
            self._session_of.pop(socket, None)
            log.info("agents.session_%s session=%s", why, session_id[:6])
            task = asyncio.get_running_loop().create_task(
                socket.close(code=CLOSE_SESSION_ENDED, message="session ended")
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def close(self) -> None:
        """Stop the expiry timers (the server is stopping; its sockets are closed by the registry)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class LoginLimiter:
    """At most `failures` failed sign-ins per key (IP, username) within `window` seconds."""

    def __init__(self, *, failures: int, window: float, max_keys: int = 100_000) -> None:
        self.failures = failures
        self.window = window
        self.max_keys = max_keys
        self._seen: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._seen.get(key)
        if stamps is None:
            if len(self._seen) >= self.max_keys:
                self._seen.pop(next(iter(self._seen)))
            stamps = self._seen[key] = deque()
        while stamps and now - stamps[0] > self.window:
            stamps.popleft()
        return stamps

    def blocked(self, *keys: str) -> bool:
        """Whether any of the keys used up its failures."""
        now = time.monotonic()
        return any(len(self._recent(key, now)) >= self.failures for key in keys)

    def failed(self, *keys: str) -> None:
        """Count one failure against each key."""
        now = time.monotonic()
        for key in keys:
            self._recent(key, now).append(now)

    def succeeded(self, *keys: str) -> None:
        """Forget the failures of the keys."""
        for key in keys:
            self._seen.pop(key, None)
