"""The console's canned replies: their variables, and the check made when the config is loaded."""

from __future__ import annotations

import re
from typing import Final

from ..errors import ConfigError
from .model import CannedReply

#: What a canned reply may name: the verified customer's name (empty if none), the agent's display
#: name, the hotline (ui.hotline).
VARIABLES: Final = ("name", "agent", "hotline")
_VARIABLE = re.compile(r"\{([^{}]*)\}")
# A shortcut is typed after "/" in the reply box: letters, digits, "_" or "-", no spaces.
_SHORTCUT = re.compile(r"/[\w-]{1,32}")


def expand(text: str, *, name: str, agent: str, hotline: str) -> str:
    """The reply with its variables filled in (the console does the same in agent_tools.js)."""
    values = {"name": name, "agent": agent, "hotline": hotline}
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def check_canned(canned: tuple[CannedReply, ...], *, source: str) -> None:
    """Refuse a canned reply that names an unknown variable, has a stray brace, or a bad or repeated
    shortcut: found at load, not by an agent in front of a customer. Raises ConfigError."""
    seen: set[str] = set()
    for n, reply in enumerate(canned):
        key = f"agents.canned[{n}]"
        if not _SHORTCUT.fullmatch(reply.shortcut):
            raise ConfigError(
                f"shortcut must be '/' and 1..32 letters, digits, '_' or '-', got {reply.shortcut!r}",
                key=f"{key}.shortcut",
                source=source,
            )
        if reply.shortcut in seen:
            raise ConfigError(f"shortcut {reply.shortcut} is used twice", key=f"{key}.shortcut", source=source)
        seen.add(reply.shortcut)
        if not reply.title.strip() or not reply.text.strip():
            raise ConfigError("needs a title and a text", key=key, source=source)
        for found in _VARIABLE.findall(reply.text):
            if found not in VARIABLES:
                known = ", ".join("{" + v + "}" for v in VARIABLES)
                raise ConfigError(
                    f"unknown variable {{{found}}} in {reply.text!r} (known: {known})", key=f"{key}.text", source=source
                )
        if "{" in _VARIABLE.sub("", reply.text) or "}" in _VARIABLE.sub("", reply.text):
            raise ConfigError(
                f"a brace without its pair in {reply.text!r} (variables look like {{name}})",
                key=f"{key}.text",
                source=source,
            )
