"""Inter-process messages: the channel-layer groups and the typed messages sent between sockets.

A message's `type` names its handler: "conv.takeover" is handled by `conv_takeover()`. Each
constructor below carries the handler's name too, so `conv_takeover(...)` builds a ConvTakeover.
Handlers still read what arrives defensively: a message may come from another process (or version).

The layer groups:

* USERS_GROUP: every user socket (ChatConsumer).
* AGENTS_GROUP: every agent console (AgentConsumer).
* QUEUE_GROUP: every user socket waiting in the handoff queue.
* conversation_group(c): the one user socket holding conversation c (its owner).
* watch_group(c): the agent consoles following conversation c.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from .protocol import Frame

__all__ = [
    "AGENTS_GROUP",
    "QUEUE_GROUP",
    "USERS_GROUP",
    "AgentFrame",
    "AgentTranscript",
    "AgentsQueue",
    "AgentsQueueAdded",
    "AgentsQueueChanged",
    "AgentsQueueRemoved",
    "ChatBroadcast",
    "ChatMessage",
    "ConvDeliver",
    "ConvHandoff",
    "ConvMode",
    "ConvReleased",
    "ConvTakeover",
    "ConvTyping",
    "LeftMessageAdded",
    "LeftMessageClosed",
    "LeftMessageItem",
    "QueueChanged",
    "QueueItem",
    "agent_frame",
    "agent_transcript",
    "agents_left_message_added",
    "agents_left_message_closed",
    "agents_queue",
    "agents_queue_added",
    "agents_queue_changed",
    "agents_queue_removed",
    "chat_broadcast",
    "conv_deliver",
    "conv_handoff",
    "conv_mode",
    "conv_released",
    "conv_takeover",
    "conv_typing",
    "conversation_group",
    "queue_changed",
    "watch_group",
]

USERS_GROUP = "users"
AGENTS_GROUP = "agents"
QUEUE_GROUP = "handoff.queue"


def conversation_group(conversation: str) -> str:
    """The layer group of the one socket holding a conversation (its owner)."""
    return f"conv.{conversation}"


def watch_group(conversation: str) -> str:
    """The group of the agent consoles following a conversation."""
    return f"watch.{conversation}"


# ------------------------------------------------------------------ to the conversation's holder
class ConvTakeover(TypedDict):
    """A socket (any process) carries on the conversation: the holder writes it out, answers with
    conv.released to `reply_channel`, and closes. Sent by ChatConsumer.take_over to
    conversation_group; handled by ChatConsumer.conv_takeover, which ignores its own `process`."""

    type: Literal["conv.takeover"]
    conversation: str
    reply_channel: str
    process: str


class ConvReleased(TypedDict):
    """The old holder wrote the conversation out; `answering`: the client message ids it was still
    answering. Sent by ChatConsumer.conv_takeover to the taker's channel; handled by conv_released."""

    type: Literal["conv.released"]
    conversation: str
    answering: list[str]
    #: Replies it was writing (or relaying), each {"id", "reply_to", "text" so far}: chat/streams.py.
    streams: NotRequired[list[dict[str, Any]]]


class ConvDeliver(TypedDict):
    """A frame made elsewhere (an agent's line, a late bot answer) for the holder to append and
    send. Sent by chat.consumer.deliver() to conversation_group; handled by ChatConsumer.conv_deliver."""

    type: Literal["conv.deliver"]
    conversation: str
    frame: Frame


class ConvMode(TypedDict):
    """An agent (`agent`: their display name) took the conversation, or let it go back to the bot.
    Sent by AgentConsumer.claim / let_go to conversation_group; handled by ChatConsumer.conv_mode."""

    type: Literal["conv.mode"]
    conversation: str
    mode: Literal["bot", "agent"]
    agent: NotRequired[str]


class ConvTyping(TypedDict):
    """The holding agent is typing: the page shows 客服正在输入… for a moment (never stored).
    Sent by agents.tools to conversation_group; handled by ChatConsumer.conv_typing."""

    type: Literal["conv.typing"]
    conversation: str


class ConvHandoff(TypedDict):
    """The host's back end asks for a human for this conversation (POST .../handoff, api/).
    Sent to conversation_group; handled by ChatConsumer.conv_handoff, as if the user pressed 转人工."""

    type: Literal["conv.handoff"]
    conversation: str


# ------------------------------------------------------------------ about the handoff queue
class AgentsQueue(TypedDict):
    """Every console reloads the whole queue (what an earlier build sent on each change; consoles
    now get the deltas below). Handled by AgentConsumer.agents_queue."""

    type: Literal["agents.queue"]


class QueueItem(TypedDict):
    """One waiting conversation as consoles show it (store.handoff.QueueEntry.item())."""

    conversation: str
    since: int
    preview: str


class AgentsQueueAdded(TypedDict):
    """A conversation joined the queue. Sent by Handoff.request to AGENTS_GROUP; handled by
    AgentConsumer.agents_queue_added."""

    type: Literal["agents.queue_added"]
    item: QueueItem


class AgentsQueueChanged(TypedDict):
    """A waiting conversation's entry changed (its preview). Sent by Handoff.request to
    AGENTS_GROUP; handled by AgentConsumer.agents_queue_changed."""

    type: Literal["agents.queue_changed"]
    item: QueueItem


class AgentsQueueRemoved(TypedDict):
    """Conversations left the queue (claimed, or lapsed: nobody waited for them any more). Sent
    by AgentConsumer.queue_moved, Handoff.request and the queue's keeper to AGENTS_GROUP; handled
    by AgentConsumer.agents_queue_removed."""

    type: Literal["agents.queue_removed"]
    conversations: list[str]


class QueueChanged(TypedDict):
    """The queue moved: every waiting user learns their new position. Sent by
    AgentConsumer.queue_moved and the queue's keeper to QUEUE_GROUP; handled by
    ChatConsumer.queue_changed."""

    type: Literal["queue.changed"]


# ------------------------------------------------------------------ to the agent consoles
class AgentFrame(TypedDict):
    """A new frame of a conversation an agent holds. Sent by ChatConsumer.forward_to_agents and
    AgentConsumer.add_frame to watch_group; handled by AgentConsumer.agent_frame."""

    type: Literal["agent.frame"]
    conversation: str
    frame: Frame


class AgentTranscript(TypedDict):
    """The holder's full transcript, once an agent claims (the store may lag its write-behind).
    Sent by ChatConsumer.conv_mode to watch_group; handled by AgentConsumer.agent_transcript."""

    type: Literal["agent.transcript"]
    conversation: str
    frames: list[dict[str, Any]]


# ------------------------------------------------------------------ to every user
class ChatBroadcast(TypedDict):
    """A notice to every user. Sent by the host application to USERS_GROUP; handled by
    ChatConsumer.chat_broadcast."""

    type: Literal["chat.broadcast"]
    text: str


class LeftMessageItem(TypedDict):
    """A message left outside business hours (store/left_messages.py), as consoles show it."""

    id: str
    ts: int
    contact: str
    text: str
    conversation: str


class LeftMessageAdded(TypedDict):
    """A customer left a message. Sent by chat/leave_message.py to AGENTS_GROUP; handled by
    AgentConsumer.agents_left_message_added."""

    type: Literal["agents.left_message_added"]
    item: LeftMessageItem


class LeftMessageClosed(TypedDict):
    """An agent closed a left message. Sent by AgentConsumer to AGENTS_GROUP; handled by
    AgentConsumer.agents_left_message_closed (every console drops it)."""

    type: Literal["agents.left_message_closed"]
    id: str


ChatMessage = (
    ConvTakeover
    | ConvReleased
    | ConvDeliver
    | ConvMode
    | ConvHandoff
    | ConvTyping
    | AgentsQueue
    | AgentsQueueAdded
    | AgentsQueueChanged
    | AgentsQueueRemoved
    | QueueChanged
    | AgentFrame
    | AgentTranscript
    | ChatBroadcast
    | LeftMessageAdded
    | LeftMessageClosed
)


def conv_takeover(conversation: str, reply_channel: str, process: str) -> ConvTakeover:
    """A ConvTakeover: the taker's channel and process."""
    return {"type": "conv.takeover", "conversation": conversation, "reply_channel": reply_channel, "process": process}


def conv_released(conversation: str, answering: list[str], streams: list[dict[str, Any]] | None = None) -> ConvReleased:
    """A ConvReleased with the client ids still being answered and the replies being written."""
    message: ConvReleased = {"type": "conv.released", "conversation": conversation, "answering": answering}
    if streams:
        message["streams"] = streams
    return message


def conv_deliver(conversation: str, frame: Frame) -> ConvDeliver:
    """A ConvDeliver of one frame."""
    return {"type": "conv.deliver", "conversation": conversation, "frame": frame}


def conv_mode(conversation: str, mode: Literal["bot", "agent"], agent: str | None = None) -> ConvMode:
    """A ConvMode; `agent` (the agent's display name) only when one takes over."""
    message: ConvMode = {"type": "conv.mode", "conversation": conversation, "mode": mode}
    if agent is not None:
        message["agent"] = agent
    return message


def conv_handoff(conversation: str) -> ConvHandoff:
    """A ConvHandoff."""
    return {"type": "conv.handoff", "conversation": conversation}


def conv_typing(conversation: str) -> ConvTyping:
    """A ConvTyping."""
    return {"type": "conv.typing", "conversation": conversation}


def agents_queue() -> AgentsQueue:
    """An AgentsQueue."""
    return {"type": "agents.queue"}


def agents_queue_added(item: QueueItem) -> AgentsQueueAdded:
    """An AgentsQueueAdded of one entry."""
    return {"type": "agents.queue_added", "item": item}


def agents_queue_changed(item: QueueItem) -> AgentsQueueChanged:
    """An AgentsQueueChanged of one entry."""
    return {"type": "agents.queue_changed", "item": item}


def agents_queue_removed(conversations: list[str]) -> AgentsQueueRemoved:
    """An AgentsQueueRemoved of the conversations no longer waiting."""
    return {"type": "agents.queue_removed", "conversations": conversations}


def queue_changed() -> QueueChanged:
    """A QueueChanged."""
    return {"type": "queue.changed"}


def agent_frame(conversation: str, frame: Frame) -> AgentFrame:
    """An AgentFrame of one frame."""
    return {"type": "agent.frame", "conversation": conversation, "frame": frame}


def agent_transcript(conversation: str, frames: list[dict[str, Any]]) -> AgentTranscript:
    """An AgentTranscript of the stored frames."""
    return {"type": "agent.transcript", "conversation": conversation, "frames": frames}


def chat_broadcast(text: str) -> ChatBroadcast:
    """A ChatBroadcast of one notice."""
    return {"type": "chat.broadcast", "text": text}


def agents_left_message_added(item: LeftMessageItem) -> LeftMessageAdded:
    """A LeftMessageAdded of one message."""
    return {"type": "agents.left_message_added", "item": item}


def agents_left_message_closed(message_id: str) -> LeftMessageClosed:
    """A LeftMessageClosed of one message."""
    return {"type": "agents.left_message_closed", "id": message_id}
