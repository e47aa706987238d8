"""What the chat socket says to users (Simplified Chinese, polite 您), and the broadcast notice.

In one place so a bank can read (and a translator find) every sentence the socket sends itself.
"""

from __future__ import annotations

from typing import Final

from aiohttp import WSCloseCode

from .. import messages
from ..jsonutil import dumpb
from ..protocol import CLOSE_IDLE, frame

CARD_NUMBER_WARNING: Final = "为保护您的账户安全,请不要在对话中发送完整的卡号或身份证号,我们已自动隐藏。"
EXPIRED: Final = "之前的会话已过期,已为您开始新的会话。"
HISTORY_UNAVAILABLE: Final = "抱歉,暂时无法载入您之前的聊天记录,已为您开始新的会话。"
NO_AGENTS: Final = "抱歉,在线人工客服暂未开通。如需人工服务,请拨打银联客服热线 95516,或拨打发卡行客服电话(卡片背面)。"
QUOTA: Final = "抱歉,您发送的消息过多,请稍后再试。"
RATE_LIMITED: Final = "您发送得太快了,请稍后再试。"
BINARY: Final = "不支持二进制消息,请发送 JSON 文本。"
#: The last system frame before the server closes a socket, by close code.
CLOSING: Final = {
    WSCloseCode.GOING_AWAY: "服务器维护中,连接即将断开,请稍后重新连接。",
    CLOSE_IDLE: "由于长时间没有操作,连接已断开。",
}

# The last broadcast message and its encoded frame: every member of a group gets the same message
# object, so a broadcast to thousands of sockets is encoded once (a single-entry cache, by identity).
_last_broadcast: tuple[messages.ChatBroadcast, bytes] | None = None


def broadcast_bytes(message: messages.ChatBroadcast) -> bytes:
    """The system frame of a chat.broadcast, encoded once per message."""
    global _last_broadcast
    cached = _last_broadcast
    if cached is None or cached[0] is not message:
        out = frame("system", str(message.get("text", "")), talk=False, event="broadcast")
        cached = _last_broadcast = (message, dumpb(out))
    return cached[1]
