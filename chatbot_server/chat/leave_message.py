"""A message left for the agents (the 留言 form, outside business hours or with nobody online).

Card and ID numbers are masked in both fields before anything is stored or shown; the store caps
what one address may leave (store/left_messages.py). The consoles hear of it through AGENTS_GROUP.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web

from .. import messages
from ..errors import ChatbotServerError, StoreUnavailableError
from ..keys import LEFT_MESSAGES_KEY
from ..layers import ChannelLayer
from ..masking import mask_sensitive
from ..messages import AGENTS_GROUP
from ..protocol import LeaveMessage, error_frame, frame
from .handoff import HandoffSocket

log = logging.getLogger("chatbot_server.chat")

_THANKS_TEXT = "您的留言已收到,我们会在服务时间内尽快与您联系。"
_REFUSED = {
    "ip_limit": ("message_limit", "您留言过于频繁,请稍后再试。"),
    "full": ("message_box_full", "留言暂时无法提交,请稍后再试,或拨打银联客服热线 95516。"),
}
_UNAVAILABLE_TEXT = "抱歉,留言暂时无法提交,请稍后再试。"
_NO_AGENTS_TEXT = "抱歉,暂不支持留言。如需人工服务,请拨打银联客服热线 95516。"


class LeaveSocket(HandoffSocket, Protocol):
    """What leaving a message needs of the chat socket (ChatConsumer is one)."""

    request: web.Request
    layer: ChannelLayer


async def leave_message(socket: LeaveSocket, conversation: str, request: LeaveMessage) -> None:
    """Keep the message (masked), thank the user, show it in every console; errors as error frames."""
    box = socket.request.config_dict.get(LEFT_MESSAGES_KEY)
    layer = socket.layer
    if box is None:  # no agents configured: nobody would read it
        socket.stats.error("unsupported")
        await socket.send_json(error_frame("unsupported", _NO_AGENTS_TEXT))
        return
    contact, text = mask_sensitive(request.contact), mask_sensitive(request.text)
    try:
        added = await box.add(contact, text, conversation=conversation, ip=socket.client_ip)
    except StoreUnavailableError as exc:
        log.warning("left_message.unavailable error=%s", exc)
        socket.stats.error("message_unavailable")
        await socket.send_json(error_frame("message_unavailable", _UNAVAILABLE_TEXT))
        return
    if added.message is None:
        code, msg = _REFUSED[added.refused or "full"]
        socket.stats.error(code)
        await socket.send_json(error_frame(code, msg))
        return
    log.info("left_message.added conversation=%s id=%s", conversation[:8], added.message.id)
    await socket.emit(frame("system", _THANKS_TEXT, talk=False, event="message_left"))
    try:
        await layer.group_send(AGENTS_GROUP, messages.agents_left_message_added(added.message.item()))
    except ChatbotServerError as exc:  # kept all the same: consoles list it when they next load
        log.warning("left_message.publish_failed error=%s", exc)
