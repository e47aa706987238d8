"""Where the packaged templates and static files are, installed or in a source checkout."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def _package_dir(package: str, fallback: str) -> Path:
    try:
        located = Path(str(importlib.resources.files(package)))
        if located.is_dir():
            return located
    except (ModuleNotFoundError, TypeError):
        pass
    # A plain source checkout (tests run from the repository): the top-level folder.
    return Path(__file__).resolve().parent.parent / fallback


def templates_dir() -> Path:
    """The folder holding chat.html and friends."""
    return _package_dir("chatbot_server.templates", "templates")


def static_dir() -> Path:
    """The folder holding chat.js, chat.css and images."""
    return _package_dir("chatbot_server.static", "static")
