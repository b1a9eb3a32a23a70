"""Helpers shared by the catalog tests."""

from __future__ import annotations

import io


class Unseekable(io.RawIOBase):
    """A request-body-like stream: short reads, no seek."""

    def __init__(self, data: bytes, step: int = 4096) -> None:
        self._src = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        got = self._src.read(min(len(b), self._step))
        b[: len(got)] = got
        return len(got)


def make_csv(rows: int = 300) -> bytes:
    lines = ["id,age,city,score,day,flag,note"]
    cities = ["paris", "lyon", "nice", "lille"]
    for i in range(rows):
        note = "" if i % 10 == 0 else f"n{i * 7919 % 1000003}"
        lines.append(
            f"{i},{18 + i % 60},{cities[i % 4]},{i * 1.25 + 0.001},"
            f"2024-{1 + i % 12:02d}-{1 + i % 28:02d},{'true' if i % 3 else 'false'},{note}"
        )
    return ("\n".join(lines) + "\n").encode()
