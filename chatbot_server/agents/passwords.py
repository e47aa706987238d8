"""Agent password hashes: PBKDF2-SHA256 with a random salt, in one self-describing string.

`PasswordChecker` verifies them off the event loop: one PBKDF2 at 310,000 iterations takes
~0.1-0.3 s of CPU, and four concurrent failed sign-ins on the loop raised every chat socket's
round trip from 0.9 ms to 660 ms (#14). hashlib.pbkdf2_hmac releases the GIL, so a thread helps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 310_000
MAX_ITERATIONS = 10_000_000
# Threads hashing at once: a flood of sign-ins queues behind these instead of taking every thread
# of the loop's default executor (DNS lookups and file reads use that one) or every core.
HASH_THREADS = 2


class ParsedHash(NamedTuple):
    """The parts of a `pbkdf2_sha256$<iterations>$<salt>$<hash>` string."""

    iterations: int
    salt: bytes
    digest: bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    """`pbkdf2_sha256$<iterations>$<salt>$<hash>` for config's agents.accounts[].password_hash."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def parse_hash(encoded: str) -> ParsedHash | None:
    """The parts of a hash made by hash_password, or None if it is not one."""
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM or not parts[1].isdigit():
        return None
    try:
        salt = base64.b64decode(parts[2], validate=True)
        expected = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    iterations = int(parts[1])
    if not 1 <= iterations <= MAX_ITERATIONS:
        return None
    return ParsedHash(iterations, salt, expected)


def _matches(password: str, parsed: ParsedHash) -> bool:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), parsed.salt, parsed.iterations)
    return hmac.compare_digest(digest, parsed.digest)


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches a hash made by hash_password (constant-time comparison)."""
    parsed = parse_hash(encoded)
    return parsed is not None and _matches(password, parsed)


class PasswordChecker:
    """Verifies passwords in a small thread pool of its own, at one cost for every username.

    A username without an account (or with an unreadable hash) is checked against a dummy hash
    with as many iterations as the costliest configured account, so the answer's timing does
    not tell which usernames exist (before #14: 3-12 ms for unknown, 112-155 ms for known).
    """

    def __init__(self, hashes: Iterable[str], *, threads: int = HASH_THREADS) -> None:
        costs = [parsed.iterations for parsed in map(parse_hash, hashes) if parsed is not None]
        iterations = max(costs, default=DEFAULT_ITERATIONS)
        self._dummy = ParsedHash(iterations, secrets.token_bytes(16), secrets.token_bytes(32))
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None  # threads start on the first sign-in

    @property
    def dummy_iterations(self) -> int:
        """What an unknown username costs (the iterations of the costliest account)."""
        return self._dummy.iterations

    async def check(self, password: str, encoded: str | None) -> bool:
        """Whether `password` matches `encoded` (None: no such account; always False, same cost)."""
        parsed = parse_hash(encoded) if encoded is not None else None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="chatbot-pbkdf2")
        loop = asyncio.get_running_loop()
        matched = await loop.run_in_executor(self._pool, _matches, password, parsed or self._dummy)
        # The dummy's digest is random: it never matches, but say so plainly rather than rely on it.
        return matched and parsed is not None

    def close(self) -> None:
        """Stop the threads (a hash under way finishes; its sign-in has gone with the server)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
