"""Host code written against 0.1's layer, consumer and store API gets a clear error naming the replacement."""

from __future__ import annotations

import pytest

from chatbot_server import MemoryChannelLayer, WebsocketConsumer
from chatbot_server.store import MemoryConversationStore


@pytest.mark.parametrize(
    ("owner", "name", "replacement"),
    [
        (MemoryChannelLayer(), "set_listener", "subscribe"),
        (MemoryChannelLayer(), "set_taker", "subscribe"),
        (MemoryChannelLayer(), "receive_nowait", "subscribe"),
        (MemoryConversationStore(), "append_held", "append"),
        (MemoryConversationStore(), "append_encoded", "append"),
        (MemoryConversationStore(), "holders", "Holders"),
    ],
)
def test_a_removed_name_says_what_replaced_it(owner: object, name: str, replacement: str) -> None:
    with pytest.raises(AttributeError, match=rf"{name} was removed in chatbot_server 0\.2: .*{replacement}"):
        getattr(owner, name)


def test_other_missing_names_are_plain_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        MemoryChannelLayer().nothing_here  # noqa: B018
    assert not hasattr(MemoryConversationStore(), "nothing_here")


def test_the_consumer_points_old_transport_users_to_the_request() -> None:
    consumer = WebsocketConsumer.__new__(WebsocketConsumer)  # no request needed for the lookup
    with pytest.raises(AttributeError, match=r"request\.transport"):
        consumer.transport  # noqa: B018
