"""Agent accounts from config, their sign-in check, sessions and the sign-in rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AgentSettings
from .passwords import verify_password
from .sessions import LoginLimiter, SessionSigner


@dataclass(frozen=True)
class Agent:
    """A signed-in agent."""

    username: str
    name: str


class AgentDirectory:
    """Who may sign in, and the signer of their session cookies."""

    def __init__(self, settings: AgentSettings) -> None:
        self._accounts = {a.username: a for a in settings.accounts if a.username and a.password_hash}
        self.signer = SessionSigner(settings.session_secret, ttl=settings.session_ttl)
        self.limiter = LoginLimiter(failures=settings.login_failures, window=settings.login_window)

    def __len__(self) -> int:
        return len(self._accounts)

    def get(self, username: str | None) -> Agent | None:
        """The agent with that username, if configured."""
        account = self._accounts.get(username or "")
        return None if account is None else Agent(account.username, account.name or account.username)

    def check_password(self, username: str, password: str) -> Agent | None:
        """The agent if the password matches its hash."""
        account = self._accounts.get(username)
        if account is None or not verify_password(password, account.password_hash):
            return None
        return self.get(username)

    def from_cookie(self, value: str | None) -> Agent | None:
        """The agent of a valid session cookie value."""
        return self.get(self.signer.verify(value))
