"""The customer's contact-centre frames besides 转人工: a rating, 取消排队, a left message (docs/agents.md)."""

from __future__ import annotations

from typing import Protocol

from ..config import Settings
from ..keys import RATINGS_KEY
from ..protocol import CancelHandoff, LeaveMessage, RatingAnswer, error_frame
from . import texts
from .handoff import Handoff
from .leave_message import LeaveSocket, leave_message
from .rating import RatingSocket, take_rating

ServiceRequest = RatingAnswer | CancelHandoff | LeaveMessage


class ServiceSocket(LeaveSocket, RatingSocket, Protocol):
    """What these frames need of the chat socket (ChatConsumer is one)."""

    settings: Settings


async def serve(
    socket: ServiceSocket,
    inbound: ServiceRequest,
    conversation: str,
    handoff: Handoff | None,
) -> None:
    """Act on one frame; without agents each is refused as `unsupported` (nobody could answer it)."""
    ratings = socket.request.config_dict.get(RATINGS_KEY)
    match inbound:
        case RatingAnswer() if ratings is not None:
            limit = socket.settings.agents.rating_comment_length
            await take_rating(socket, ratings, conversation, inbound, comment_length=limit)
        case CancelHandoff() if handoff is not None:
            await handoff.cancel(conversation)
        case LeaveMessage():
            await leave_message(socket, conversation, inbound)
        case _:
            await socket.send_json(error_frame("unsupported", texts.NO_AGENTS))
