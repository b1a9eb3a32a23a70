"""Helpers shared by the PSI tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def seeded_random(seed: bytes) -> Callable[[int], bytes]:
    """A deterministic byte source (SHAKE-256 counter stream) for reproducible sessions."""
    counter = [0]

    def draw(size: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(seed + counter[0].to_bytes(8, "big")).digest(size)

    return draw
