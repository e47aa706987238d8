"""Customer identity tokens: the host's back end vouches for a signed-in customer (docs/widget.md).

A token is `<payload>.<signature>`: the payload is base64url JSON {"sub": customer id, "name":
display name, "exp": unix seconds}, the signature base64url HMAC-SHA256 of the payload's text with
`identity.secret`. Unlike Chatwoot's identifier_hash, the token expires (a leaked one does not
work forever) and the signature is compared in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Literal

import orjson

#: Longest token accepted (a query parameter: bounded before anything is decoded).
MAX_TOKEN_LENGTH = 1024
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 64
#: Seconds of clock difference between the host's back end and us forgiven on `exp`.
LEEWAY = 30

IdentityProblem = Literal["identity_required", "identity_malformed", "identity_bad_signature", "identity_expired"]


class IdentityError(ValueError):
    """A token that does not vouch for anyone; `code` says why (for the error frame and metrics)."""

    def __init__(self, code: IdentityProblem, message: str) -> None:
        super().__init__(message)
        self.code: IdentityProblem = code


@dataclass(frozen=True)
class Customer:
    """A customer the host site signed in: its own id for them and the name agents see."""

    id: str
    name: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), payload.encode("ascii"), hashlib.sha256).digest()


def sign_identity(secret: str, customer_id: str, *, name: str = "", ttl: float = 600, now: float | None = None) -> str:
    """A token for `customer_id` valid `ttl` seconds: what the host's back end makes (Python hosts
    may call this; docs/widget.md shows the same in a few lines of other languages)."""
    if not customer_id or len(customer_id) > MAX_ID_LENGTH or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"customer_id must be 1..{MAX_ID_LENGTH} characters and name at most {MAX_NAME_LENGTH}")
    issued = time.time() if now is None else now
    payload = _b64(orjson.dumps({"sub": customer_id, "name": name, "exp": int(issued + ttl)}))
    return f"{payload}.{_b64(_signature(secret, payload))}"


def verify_identity(token: str, secret: str, *, max_ttl: float, now: float | None = None) -> Customer:
    """The customer `token` vouches for; IdentityError if it is malformed, forged or expired, or
    expires more than `max_ttl` seconds from now."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise IdentityError("identity_malformed", "identity token is malformed")
    payload, signature = token.split(".")
    try:
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        raise IdentityError("identity_malformed", "identity token is malformed") from None
    # Signature first: nothing of an unsigned payload is parsed.
    if not payload.isascii() or not hmac.compare_digest(given, _signature(secret, payload)):
        raise IdentityError("identity_bad_signature", "identity token signature does not match")
    try:
        claims = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise IdentityError("identity_malformed", "identity token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise IdentityError("identity_malformed", "identity token payload is not an object")
    sub, name, exp = claims.get("sub"), claims.get("name", ""), claims.get("exp")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_ID_LENGTH:
        raise IdentityError("identity_malformed", f"identity token sub must be 1..{MAX_ID_LENGTH} characters")
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        raise IdentityError("identity_malformed", f"identity token name must be at most {MAX_NAME_LENGTH} characters")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdentityError("identity_malformed", "identity token needs a numeric exp")
    current = time.time() if now is None else now
    if exp + LEEWAY < current:
        raise IdentityError("identity_expired", "identity token has expired")
    if exp - current > max_ttl:
        raise IdentityError("identity_malformed", "identity token expires too far ahead (identity.max_token_ttl)")
    return Customer(sub, name)


__all__ = ["Customer", "IdentityError", "sign_identity", "verify_identity"]
