"""Which customer a chat socket serves, and which conversation they may carry on (docs/widget.md).

The host site's back end signs its signed-in customer into a token (identity.py) that the page
passes as `identity=` on the socket's URL. A verified customer resumes *their* conversation,
whichever browser or device they come from; a conversation bound to a customer is resumed by
nobody else, whatever conversation id they send. With `identity.required`, a socket without a
valid token is refused before anything is created or replayed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import IdentitySettings
from ..errors import StoreUnavailableError
from ..identity import Customer, IdentityError, verify_identity
from ..masking import mask_sensitive
from ..protocol import error_frame
from ..sockets.codes import CLOSE_IDENTITY
from ..store.customers import CustomerDirectory

log = logging.getLogger("chatbot_server.chat")

#: What the page shows for each refusal (the page stops reconnecting until it has a new token).
REFUSED_TEXT = {
    "identity_required": "请您先登录网站,再使用在线客服。",
    "identity_malformed": "身份验证失败,请您刷新页面或重新登录后再试。",
    "identity_bad_signature": "身份验证失败,请您刷新页面或重新登录后再试。",
    "identity_expired": "您的登录状态已过期,请刷新页面或重新登录后再试。",
}
OTHERS_TEXT = "该会话属于已登录的用户,已为您开始新的会话。"
UNAVAILABLE_TEXT = "抱歉,暂时无法载入您之前的聊天记录,已为您开始新的会话。"


@dataclass(frozen=True)
class Entry:
    """Where a socket starts: its customer (None: anonymous) and the conversation to resume
    (None: a new one), from `last_seq`; `refused`: it asked for a conversation that is not theirs."""

    customer: Customer | None
    conversation: str | None
    last_seq: int
    refused: bool = False


class IdentityGate:
    """Verifies tokens and decides resumes; one per application (built when identity.secret is set)."""

    __slots__ = ("customers", "settings")

    def __init__(self, settings: IdentitySettings, customers: CustomerDirectory) -> None:
        self.settings = settings
        self.customers = customers

    def verify(self, token: str | None) -> Customer | None:
        """The customer a token vouches for; None without one (anonymous). IdentityError if the
        token is bad, or missing while identity is required."""
        if not token:
            if self.settings.required:
                raise IdentityError("identity_required", "an identity token is required")
            return None
        customer = verify_identity(token, self.settings.secret, max_ttl=self.settings.max_token_ttl)
        # Shown to agents and logged: a host that uses card numbers as ids must not leak them here.
        return Customer(mask_sensitive(customer.id), mask_sensitive(customer.name))

    async def entry(self, customer: Customer | None, wanted: str | None, last_seq: int) -> Entry:
        """Where a socket starts. A verified customer gets their own conversation (from the start
        if the page did not show it) or, having none yet, may bring the anonymous one the page
        holds (a visitor who signs in mid-chat); anyone else's is never resumed."""
        owner = await self.customers.customer_of(wanted) if wanted else None
        if customer is None:
            if owner is not None:
                return Entry(None, None, 0, refused=True)
            return Entry(None, wanted, last_seq)
        theirs = await self.customers.conversation_of(customer.id)
        if theirs is not None and theirs != wanted:
            return Entry(customer, theirs, 0)
        if owner is not None and owner.id != customer.id:
            return Entry(customer, None, 0, refused=True)
        return Entry(customer, wanted, last_seq)

    async def may_resume(self, customer: Customer | None, conversation: str) -> bool:
        """Whether a socket of `customer` may switch to `conversation` (a resume frame)."""
        owner = await self.customers.customer_of(conversation)
        return owner is None or (customer is not None and owner.id == customer.id)

    async def bind(self, customer: Customer | None, conversation: str) -> None:
        """Remember the customer's conversation (renewing it): no-op for an anonymous socket."""
        if customer is not None:
            await self.customers.bind(customer, conversation)


class IdentitySocket(Protocol):
    """What Identified needs of its socket (a ChatConsumer)."""

    connection_id: str
    stats: Any

    async def send_json(self, payload: object) -> None: ...

    async def close(self, *, code: int = ..., message: str = ..., notify: bool = ...) -> None: ...


class Identified:
    """One socket's side: its customer, checked once at connect, and what it may resume."""

    __slots__ = ("customer", "gate", "socket")

    def __init__(self, socket: IdentitySocket, gate: IdentityGate) -> None:
        self.socket = socket
        self.gate = gate
        #: Who this socket serves; None: an anonymous visitor.
        self.customer: Customer | None = None

    async def enter(self, token: str | None, wanted: str | None, last_seq: int) -> Entry | None:
        """Verify the socket's token and pick its conversation; None if refused (the socket is closed)."""
        socket = self.socket
        try:
            self.customer = self.gate.verify(token)
        except IdentityError as exc:
            log.info("ws.identity_refused conn=%s code=%s", socket.connection_id, exc.code)
            socket.stats.error(exc.code)
            await socket.send_json(error_frame(exc.code, REFUSED_TEXT[exc.code]))
            await socket.close(code=CLOSE_IDENTITY, message="identity refused")
            return None
        try:
            entry = await self.gate.entry(self.customer, wanted, last_seq)
        except StoreUnavailableError as exc:  # as a resume the store cannot answer: a new conversation
            log.warning("identity.unavailable conn=%s error=%s", socket.connection_id, exc)
            socket.stats.error("history_unavailable")
            await socket.send_json(error_frame("history_unavailable", UNAVAILABLE_TEXT))
            return Entry(self.customer, None, 0)
        if entry.refused:
            await self._refuse()
        return entry

    async def may_resume(self, conversation: str) -> bool:
        """Whether this socket may switch to `conversation` (a resume frame); says so if not."""
        try:
            allowed = await self.gate.may_resume(self.customer, conversation)
        except StoreUnavailableError:
            allowed = False
        if not allowed:
            await self._refuse()
        return allowed

    async def bind(self, conversation: str) -> None:
        """Make `conversation` the customer's on every device. If the directory cannot be written
        the chat goes on, and the next connect binds it."""
        try:
            await self.gate.bind(self.customer, conversation)
        except StoreUnavailableError as exc:
            log.warning("identity.bind_failed conn=%s error=%s", self.socket.connection_id, exc)

    async def _refuse(self) -> None:
        self.socket.stats.error("conversation_refused")
        await self.socket.send_json(error_frame("conversation_refused", OTHERS_TEXT))
