"""How much memory a request may use, so that a request that cannot fit is refused up front with
the setting to lower, instead of ending in MemoryError (docs/gate.md, section 5). Standard library
only."""

from __future__ import annotations

import os

GIB = 1 << 30
FALLBACK_AVAILABLE = 4 * GIB  # when the platform does not say
# A request may plan to use at most this share of the memory available when it starts.
SHARE = 0.5


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; else physical pages; else 4 GiB)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return FALLBACK_AVAILABLE


def memory_budget() -> int:
    """Bytes one request may plan to use."""
    return int(SHARE * available_memory())


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


__all__ = ["GIB", "available_memory", "gib", "memory_budget"]
