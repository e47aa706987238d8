"""Fast JSON for frames and layer messages (orjson), in one place."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> str:
    """Serialise to a compact JSON string (UTF-8 text, non-ASCII kept as is)."""
    return orjson.dumps(value).decode()


def dumpb(value: Any) -> bytes:
    """Serialise to compact JSON bytes."""
    return orjson.dumps(value)


def loads(data: str | bytes) -> Any:
    """Parse JSON; raises JSONDecodeError (a ValueError) on bad input."""
    return orjson.loads(data)
