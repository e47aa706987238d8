"""Fast JSON for frames and layer messages (orjson), in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

#: Serialise to compact JSON bytes (orjson's own function: no wrapper call on the hot path).
dumpb: Callable[[Any], bytes] = orjson.dumps


#: Parse JSON from str or bytes; raises JSONDecodeError (a ValueError) on bad input.
loads: Callable[[str | bytes], Any] = orjson.loads


def dumps(value: Any) -> str:
    """Serialise to a compact JSON string (UTF-8 text, non-ASCII kept as is)."""
    return orjson.dumps(value).decode()
