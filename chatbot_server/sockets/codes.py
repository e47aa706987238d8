"""Close codes the socket layer uses besides the standard ones (RFC 6455 7.4: 4000-4999 are private)."""

from __future__ import annotations

from typing import Final

CLOSE_IDLE: Final = 4000  # no frame from the client for limits.idle_timeout seconds
CLOSE_SLOW_READER: Final = 4001  # the client stopped reading and what it left unread grew too large or too old
CLOSE_SESSION_ENDED: Final = 4003  # the agent's console session was signed out or expired: sign in again
CLOSE_IDENTITY: Final = 4004  # the identity token was refused or is required: reconnect only with a new token
