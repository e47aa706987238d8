"""Canned replies in the console: the page gets the list and fills the variables in itself.

{name} comes from the transcript's `customer` (the verified customer's name, else empty: "您好,…"
still reads well), {agent} from the signed-in agent, {hotline} from ui.hotline. The config check
(config/canned.py) allows only these, so the page's plain replacement is the whole language.
"""

from __future__ import annotations

from typing import TypedDict

from ..config import Settings


class CannedItem(TypedDict):
    """One canned reply as the console's JSON config carries it (unexpanded)."""

    shortcut: str
    title: str
    text: str


class CannedConfig(TypedDict):
    """The console's share of the page config."""

    canned: list[CannedItem]
    hotline: str


def console_config(settings: Settings) -> CannedConfig:
    """The canned replies and the hotline, for the console page's JSON config."""
    items: list[CannedItem] = [
        {"shortcut": c.shortcut, "title": c.title, "text": c.text} for c in settings.agents.canned
    ]
    return {"canned": items, "hotline": settings.ui.hotline}
