"""The API's endpoints (docs/api.md): message, broadcast, transcript and handoff.

Each view reads and checks its input (payload.py), finds the conversation (by its id or by the
verified customer it belongs to) and acts through what the chat itself uses: chat.holding.deliver
for frames, the layer for notices and handoff requests. Failures are raised as ApiError (or the
store's and layer's own errors), which the guard turns into JSON.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from aiohttp import web

from .. import messages
from ..chat.holding import deliver
from ..errors import StoreUnavailableError
from ..keys import CUSTOMERS_KEY, LAYER_KEY, QUEUE_KEY, STORE_KEY
from ..masking import mask_sensitive
from ..messages import USERS_GROUP, conversation_group
from ..protocol import Frame, frame
from ..store.handoff_base import QueueUnavailableError
from .errors import ApiError, bad_request, json_response, not_found
from .payload import conversation_id, customer_id, group_field, read_object, sender_field, text_field

log = logging.getLogger("chatbot_server.api")

_MESSAGE_FIELDS = frozenset({"customer", "conversation", "text", "sender"})
_BROADCAST_FIELDS = frozenset({"text", "group"})


async def _conversation_of_customer(request: web.Request, customer: str) -> str:
    """The verified customer's current conversation (404 if they have none, or it expired)."""
    conversation = await request.config_dict[CUSTOMERS_KEY].conversation_of(customer)
    if conversation is None:
        raise not_found("no conversation for this customer")
    return await _known(request, conversation)


async def _known(request: web.Request, conversation: str) -> str:
    """`conversation`, if the store has it (404 otherwise: never existed, or expired)."""
    if not await request.config_dict[STORE_KEY].exists(conversation):
        raise not_found("no such conversation (unknown, or expired after history.ttl)")
    return conversation


async def _from_path(request: web.Request) -> str:
    """The conversation a /conversations/{conversation}/... or /customers/{customer}/... path names."""
    match = request.match_info
    if "customer" in match:
        return await _conversation_of_customer(request, customer_id(match["customer"]))
    return await _known(request, conversation_id(match["conversation"]))


def api_frame(text: str, sender: str) -> Frame:
    """The frame an API message becomes: one the chat page already shows as a message bubble.

    Without a sender, a `reply` (the service speaking, as the bot's answers do); with one, an
    `agent` frame, whose name the page shows above the bubble. Both say `source: "api"`."""
    ident = secrets.token_hex(8)
    if sender:
        return frame("agent", text, talk=True, agent=sender, id=ident, source="api")
    return frame("reply", text, talk=True, intent="api", confidence=1.0, id=ident, source="api")


async def post_message(request: web.Request) -> web.Response:
    """POST /messages: a message into a customer's conversation, live if a socket holds it."""
    data = await read_object(request, _MESSAGE_FIELDS)
    if ("customer" in data) == ("conversation" in data):
        raise bad_request("customer", "give exactly one of customer or conversation")
    text = mask_sensitive(text_field(data))
    sender = sender_field(data)
    if "customer" in data:
        conversation = await _conversation_of_customer(request, customer_id(data["customer"]))
    else:
        conversation = await _known(request, conversation_id(data["conversation"]))
    out = api_frame(text, sender)
    config = request.config_dict
    # Appended here if no process holds the conversation (its seq); else sent to its holder, the
    # single writer, which stores and shows it. Agents watching it see it either way.
    seq = await deliver(config[STORE_KEY], config[LAYER_KEY], conversation, out, show=True)
    body: dict[str, Any] = {"conversation": conversation, "id": out["id"], "delivered": True, "live": seq is None}
    return json_response(body, status=202)


async def post_broadcast(request: web.Request) -> web.Response:
    """POST /broadcast: a notice to every chat socket in a group (not stored: docs/protocol.md)."""
    data = await read_object(request, _BROADCAST_FIELDS)
    text = mask_sensitive(text_field(data))
    group = group_field(data, USERS_GROUP)
    await request.config_dict[LAYER_KEY].group_send(group, messages.chat_broadcast(text))
    return json_response({"group": group, "sent": True}, status=202)


async def get_transcript(request: web.Request) -> web.Response:
    """GET .../transcript: every kept frame, oldest first, texts masked again on the way out."""
    conversation = await _from_path(request)
    config = request.config_dict
    frames = await config[STORE_KEY].transcript(conversation)
    for stored in frames:
        # Masked when stored already; again here, so that a frame stored by an older version or
        # another writer never leaves with a full card number (defence in depth).
        if isinstance(stored.get("msg"), str):
            stored["msg"] = mask_sensitive(stored["msg"])
    customer = await config[CUSTOMERS_KEY].customer_of(conversation)
    who = None if customer is None else {"id": customer.id, "name": customer.name}
    return json_response({"conversation": conversation, "customer": who, "frames": frames})


async def post_handoff(request: web.Request) -> web.Response:
    """POST .../handoff: queue the conversation for a human, as the customer's 转人工 button does."""
    if request.body_exists:
        await read_object(request, frozenset())  # no fields yet: an empty object at most
    config = request.config_dict
    queue = config.get(QUEUE_KEY)
    if queue is None:
        raise ApiError(503, "handoff_unavailable", "no agent accounts are configured (agents.accounts)")
    try:
        return await _hand_off(request, await _from_path(request))
    except StoreUnavailableError as exc:  # the queue's (QueueUnavailableError) or the store's
        log.warning("api.handoff_unavailable error=%s", exc)
        kind = f" ({exc.kind})" if isinstance(exc, QueueUnavailableError) else ""
        raise ApiError(
            503, "handoff_unavailable", f"the handoff queue or store does not answer{kind}; retry later"
        ) from None


async def _hand_off(request: web.Request, conversation: str) -> web.Response:
    config = request.config_dict
    queue = config[QUEUE_KEY]
    mode, _ = await queue.mode(conversation)
    if mode == "agent":
        raise ApiError(409, "with_agent", "an agent is serving this conversation already")
    if mode == "queued":
        position = await queue.position(conversation)
        return json_response({"conversation": conversation, "status": "queued", "queue_position": position})
    # A queue entry lives only while its customer waits on an open socket (store/handoff_base.py):
    # the socket holding the conversation asks for the human, exactly as its 转人工 button would.
    if not await config[STORE_KEY].has_owner(conversation):
        raise ApiError(409, "not_connected", "the customer is not connected; the queue only holds customers who wait")
    await config[LAYER_KEY].group_send(conversation_group(conversation), messages.conv_handoff(conversation))
    return json_response({"conversation": conversation, "status": "requested"}, status=202)
