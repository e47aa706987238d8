"""The consoles' side of left messages: the store on the app's backend, the list, closing one.

Console frames: `left_messages` (the open ones, on connect), `left_message_added` and
`left_message_closed` (deltas, through AGENTS_GROUP to every console on every process).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from .. import messages
from ..config import Settings
from ..errors import ProtocolError
from ..layers import ChannelLayer
from ..messages import AGENTS_GROUP
from ..store.left_messages import LeftMessages, MemoryLeftMessages

if TYPE_CHECKING:
    from ..ops.redis import RedisClient

log = logging.getLogger("chatbot_server.agents")


def make_left_messages(settings: Settings, backend: str, *, client: RedisClient | None) -> LeftMessages:
    """Left messages where the handoff queue is: Redis when it is shared, else this process."""
    agents = settings.agents
    per_ip, max_open = agents.left_messages_per_ip, agents.left_messages_max
    if backend == "redis" and client is not None:
        from ..store.left_messages_redis import RedisLeftMessages

        prefix = settings.layer.redis.prefix
        return RedisLeftMessages(client, prefix=prefix, per_ip=per_ip, max_open=max_open)
    return MemoryLeftMessages(per_ip=per_ip, max_open=max_open)


class Console(Protocol):
    """What these helpers need of the agent socket (AgentConsumer is one)."""

    layer: ChannelLayer

    async def send_json(self, payload: object) -> None: ...


async def listing(box: LeftMessages) -> dict[str, Any]:
    """The `left_messages` frame: every open message, oldest first."""
    return {"type": "left_messages", "items": [m.item() for m in await box.open()]}


async def close_message(console: Console, box: LeftMessages, message_id: str, agent: str) -> None:
    """Close one message: gone from every console (on every process); not open: an error frame."""
    if not await box.close(message_id):
        raise ProtocolError("unknown_message", "这条留言已处理或不存在。")
    log.info("left_message.closed id=%s agent=%s", message_id, agent)
    await console.layer.group_send(AGENTS_GROUP, messages.agents_left_message_closed(message_id))
