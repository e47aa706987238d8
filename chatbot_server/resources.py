"""Where the packaged templates and static files are, installed from a wheel or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _locate(name: str) -> Path:
    inside = _PACKAGE_DIR / name  # a wheel maps the top-level folder into the package
    if inside.is_dir():
        return inside
    return _PACKAGE_DIR.parent / name  # a source checkout or an editable install


def templates_dir() -> Path:
    """The folder holding chat.html and friends."""
    return _locate("templates")


def static_dir() -> Path:
    """The folder holding chat.js, chat.css and images."""
    return _locate("static")
