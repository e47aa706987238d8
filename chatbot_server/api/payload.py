"""Reading and checking API request bodies and ids: bounded, strict, every refusal naming its field.

Unknown fields are refused rather than ignored: a typo ("txt") or a field this version does not
have would otherwise be dropped silently, and the client would believe it was acted on.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import InvalidNameError
from ..identity import MAX_ID_LENGTH as MAX_CUSTOMER_ID_LENGTH
from ..jsonutil import JSONDecodeError, loads
from ..layers.base import MAX_NAME_LENGTH, validate_group_name
from ..messages import AGENTS_GROUP
from ..protocol import MAX_CONVERSATION_ID_LENGTH
from .errors import ApiError, bad_request

#: Bytes of request body read at most: 2000 characters escaped as \\uXXXX are 12 KB.
MAX_BODY = 32 * 1024
#: Characters of a message or broadcast text.
MAX_TEXT = 2000
#: Characters of a sender's display name (the chat page shows it above the bubble).
MAX_SENDER = 32


async def read_object(request: web.Request, fields: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object body, whose keys must be among `fields` (413, 415, 400 otherwise)."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with 'Content-Type: application/json'")
    if request.charset not in (None, "utf-8", "UTF-8"):
        raise ApiError(415, "unsupported_media_type", "JSON bodies are UTF-8; leave out charset or say utf-8")
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise _too_large()
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY:
            raise _too_large()
    try:
        data = loads(bytes(body))
    except JSONDecodeError:
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("", "the body must be a JSON object")
    unknown = sorted(set(data) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields)) or "none"
        raise bad_request(unknown[0], f"unknown field (this endpoint takes: {allowed})")
    return data


def _too_large() -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")


def text_field(data: dict[str, Any], name: str = "text") -> str:
    """A required text, trimmed: 1..MAX_TEXT characters."""
    value = data.get(name)
    if value is None:
        raise bad_request(name, "is required")
    if not isinstance(value, str):
        raise bad_request(name, "must be a string")
    value = value.strip()
    if not value:
        raise bad_request(name, "must not be empty")
    if len(value) > MAX_TEXT:
        raise bad_request(name, f"must be at most {MAX_TEXT} characters (got {len(value)})")
    return value


def sender_field(data: dict[str, Any]) -> str:
    """The optional display name of who speaks ("" if absent): 1..MAX_SENDER characters."""
    value = data.get("sender")
    if value is None:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_SENDER:
        raise bad_request("sender", f"must be a string of 1 to {MAX_SENDER} characters")
    return value.strip()


def conversation_id(value: object, field: str = "conversation") -> str:
    """A conversation id as the chat protocol allows one: 1..128 characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CONVERSATION_ID_LENGTH:
        raise bad_request(
            field, f"must be a conversation id (a string of 1 to {MAX_CONVERSATION_ID_LENGTH} characters)"
        )
    return value


def customer_id(value: object, field: str = "customer") -> str:
    """A verified customer's id as identity tokens carry it: 1..128 characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CUSTOMER_ID_LENGTH:
        raise bad_request(field, f"must be a customer id (a string of 1 to {MAX_CUSTOMER_ID_LENGTH} characters)")
    return value


def group_field(data: dict[str, Any], default: str) -> str:
    """A layer group chat sockets may be in: a valid group name, not one of the agents' groups."""
    value = data.get("group", default)
    try:
        group = validate_group_name(value)
    except InvalidNameError:
        raise bad_request(
            "group",
            f"must be a group name of ASCII letters, digits, '-', '_' or '.', under {MAX_NAME_LENGTH} characters",
        ) from None
    # The agents' consoles listen on these: a chat notice is not for them.
    if group == AGENTS_GROUP or group.startswith((f"{AGENTS_GROUP}.", "watch.")):
        raise bad_request("group", f"{group!r} is the agents' group, not the customers'")
    return group
