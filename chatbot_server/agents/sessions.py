"""Signed agent session cookies (HMAC-SHA256) and the sign-in rate limiter."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque

log = logging.getLogger("chatbot_server.agents")

COOKIE_NAME = "chatbot_agent"


class SessionSigner:
    """Makes and checks `<username b64>.<expiry>.<signature>` cookie values."""

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
        """A cookie value for `username`, valid `ttl` seconds."""
        user = base64.urlsafe_b64encode(username.encode()).decode().rstrip("=")
        payload = f"{user}.{int(time.time() + self.ttl)}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, value: str | None) -> str | None:
        """The username of a valid, unexpired cookie value, else None."""
        if not value or len(value) > 512:
            return None
        payload, dot, signature = value.rpartition(".")
        if not dot or not hmac.compare_digest(self._sign(payload), signature):
            return None
        user, _, expiry = payload.partition(".")
        if not expiry.isdigit() or int(expiry) < time.time():
            return None
        try:
            return base64.urlsafe_b64decode(user + "=" * (-len(user) % 4)).decode()
        except ValueError:
            return None


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
