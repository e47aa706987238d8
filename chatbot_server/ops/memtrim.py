"""Give freed memory back to the operating system after a wave of disconnects (glibc only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("chatbot_server.memtrim")


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Collect garbage and return free heap pages to the OS, so RSS falls after a burst."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class TrimAfterWaves:
    """Calls release_free_memory once the socket count has fallen well below its recent peak."""

    def __init__(self, *, min_drop: int = 500) -> None:
        self.min_drop = min_drop
        self.peak = 0

    def observe(self, open_sockets: int) -> bool:
        """Record the current count; True when a trim is due now."""
        if open_sockets > self.peak:
            self.peak = open_sockets
            return False
        if self.peak - open_sockets >= self.min_drop and open_sockets <= self.peak // 2:
            self.peak = open_sockets
            return True
        return False
