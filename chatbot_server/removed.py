"""Clear errors for the public names 0.2 removed, instead of a bare AttributeError."""

from __future__ import annotations

from typing import NoReturn

_HINT = "(see docs/consumers.md)"

REMOVED: dict[str, str] = {
    # ChannelLayer
    "set_listener": "the layer pushes messages to one subscriber: layer.subscribe(channel, deliver)",
    "set_taker": "the layer pushes messages to one subscriber: layer.subscribe(channel, deliver)",
    "receive_nowait": "a consumer's messages arrive through layer.subscribe(); its own Inbox queues them",
    # WebsocketConsumer
    "transport": "use self.request.transport; frames go out through send_json()/send_json_nowait()",
    # ConversationStore
    "append_held": "store.append(conversation, frame) is synchronous now (conversations this process owns)",
    "append_encoded": "store.append(conversation, frame) returns the frame encoded",
    "holders": "the sockets holding conversations are in chat.holding.Holders (app key HOLDERS_KEY)",
}


def removed(owner: object, name: str) -> NoReturn:
    """Raise AttributeError for `name`, saying what replaced it."""
    raise AttributeError(f"{type(owner).__name__}.{name} was removed in chatbot_server 0.2: {REMOVED[name]} {_HINT}")


def gone(name: str) -> property:
    """A class attribute standing for a removed name: reading it raises the clear error.

    A property per name, not a class-wide __getattr__: defining __getattr__ puts every attribute
    read of the class's instances on a slower path (measured: +10% instructions per message).
    """

    def read(self: object) -> NoReturn:
        removed(self, name)

    return property(read)
