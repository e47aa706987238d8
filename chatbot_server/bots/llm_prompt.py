"""What the llm bot sends to the model: the messages of one request, all of it masked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from ..masking import mask_sensitive
from .base import HistoryEntry

Message = dict[str, str]

ENTRIES_HEADING = "以下是知识库中与用户问题相关的条目（请只根据这些条目回答）："
# The last line of a grounded answer: the entry it rests on, so the customer (and an agent reading
# the transcript) can tell a knowledge-base answer from the model's own words.
CITATION = "\n\n参考：《{title}》"
# Our citation at the end of an earlier answer: left out of the history, or the model copies it.
_OLD_CITATION = re.compile(r"\s*参考：《[^》\n]*》\s*$")
# Agents' lines are the bank speaking, like the bot's; system lines (notices) are not conversation.
_ROLES = {"user": "user", "bot": "assistant", "agent": "assistant"}


class GroundingEntry(Protocol):
    """The parts of a knowledge-base entry the prompt uses (bots/faq/knowledge.py Entry)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def answer(self) -> str: ...


def citation(entry: GroundingEntry) -> str:
    """The line appended to an answer grounded in `entry`."""
    return CITATION.format(title=entry.title)


def grounding_text(entries: Sequence[GroundingEntry]) -> str:
    """The entries as the model reads them: numbered, each with its title and answer."""
    blocks = [f"【条目{n}】《{entry.title}》\n{entry.answer.strip()}" for n, entry in enumerate(entries, 1)]
    return ENTRIES_HEADING + "\n\n" + "\n\n".join(blocks)


def build_messages(
    system_prompt: str, entries: Sequence[GroundingEntry], history: Sequence[HistoryEntry], question: str
) -> list[Message]:
    """The chat messages for one question: the system prompt with the entries, the recent turns,
    then the question. Every text goes through mask_sensitive here, the one place that builds what
    leaves the server (the store keeps customer text masked already; entries and history from
    elsewhere might not be)."""
    messages: list[Message] = [{"role": "system", "content": system_prompt + "\n\n" + grounding_text(entries)}]
    for line in history:
        role = _ROLES.get(line.role)
        text = _OLD_CITATION.sub("", line.text) if role == "assistant" else line.text
        if role is not None and text.strip():
            _add(messages, role, text)
    _add(messages, "user", question)
    return [{"role": m["role"], "content": mask_sensitive(m["content"])} for m in messages]


def _add(messages: list[Message], role: str, text: str) -> None:
    """Append a message, keeping the turns alternating: some chat templates (Mistral's, older
    Llama ones) reject two user or two assistant messages in a row, or an assistant one first."""
    last = messages[-1]
    if role == last["role"]:
        last["content"] += "\n" + text
    elif role == "assistant" and last["role"] == "system":
        return  # the greeting before the first question tells the model nothing
    else:
        messages.append({"role": role, "content": text})
