"""Agent accounts from config, their sign-in check, sessions and the sign-in rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AgentSettings
from .passwords import PasswordChecker
from .revocations import LocalRevocations, Revocations
from .sessions import Closable, LiveSessions, LoginLimiter, Session, SessionSigner


@dataclass(frozen=True)
class Agent:
    """A signed-in agent."""

    username: str
    name: str
    role: str = "agent"  # or "supervisor": also reads /agent/unanswered

    @property
    def supervisor(self) -> bool:
        return self.role == "supervisor"


class AgentDirectory:
    """Who may sign in, the signer of their session cookies and the sessions that ended early."""

    def __init__(self, settings: AgentSettings) -> None:
        self._accounts = {a.username: a for a in settings.accounts if a.username and a.password_hash}
        self.signer = SessionSigner(settings.session_secret, ttl=settings.session_ttl)
        self.limiter = LoginLimiter(failures=settings.login_failures, window=settings.login_window)
        self.passwords = PasswordChecker(a.password_hash for a in self._accounts.values())
        self.sessions = LiveSessions()
        # Sign-outs for processes that were not listening (set by setup_agents: Redis when shared).
        self.revocations: Revocations = LocalRevocations()

    def __len__(self) -> int:
        return len(self._accounts)

    def get(self, username: str | None) -> Agent | None:
        """The agent with that username, if configured."""
        account = self._accounts.get(username or "")
        return None if account is None else Agent(account.username, account.name or account.username, account.role)

    async def check_password(self, username: str, password: str) -> Agent | None:
        """The agent if the password matches its hash (off the event loop; unknown names cost the same)."""
        account = self._accounts.get(username)
        if not await self.passwords.check(password, None if account is None else account.password_hash):
            return None
        return self.get(username)

    def session(self, value: str | None) -> Session | None:
        """The session of a valid cookie value that was not signed out."""
        session = self.signer.session(value)
        if session is None or self.sessions.revoked(session.id):
            return None
        return session

    def from_cookie(self, value: str | None) -> Agent | None:
        """The agent of a valid session cookie value (not signed out)."""
        session = self.session(value)
        return None if session is None else self.get(session.username)

    def watch(self, value: str | None, socket: Closable) -> None:
        """Close `socket` (code 4003) when the session of its cookie is signed out or expires."""
        # Not self.session(): a session signed out while the socket opened must close it now.
        session = self.signer.session(value) or Session("", "", 0.0)  # expired meanwhile: closes now
        self.sessions.attach(session, socket)

    def close(self) -> None:
        """Stop the hashing threads and the session timers."""
        self.passwords.close()
        self.sessions.close()
