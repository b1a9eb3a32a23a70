"""The secure stage's Python runtime: which distributions a workload can import, and their digest.

The local sandbox binds the server's own interpreter and virtual environment read-only
(``tee/sandbox/_bwrap.py``: ``_runtime``), so the secure stage's packages are exactly this
interpreter's ``importlib.metadata`` distributions. ``veil runtime`` and ``GET /runtime`` list
them, and the launcher records their digest in the launch event log's ``runtime`` event
(``packages``), so the quote and the token say which package set a job ran with: installing
or upgrading a package changes the measurement of every later launch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import threading
from dataclasses import dataclass
from importlib import metadata

__all__ = ["Package", "describe", "packages", "packages_digest"]

_lock = threading.Lock()
_cache: dict[tuple[tuple[str, int], ...], tuple[Package, ...]] = {}


@dataclass(frozen=True, order=True)
class Package:
    name: str  # normalised (PEP 503): lower case, runs of -_. as one -
    version: str


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _path_stamp() -> tuple[tuple[str, int], ...]:
    """Where distributions are found, with each folder's mtime: changes when one is installed."""
    stamp = []
    for entry in sys.path:
        try:
            stamp.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(stamp)


def packages() -> tuple[Package, ...]:
    """The installed distributions, sorted; re-read whenever a site folder changes."""
    stamp = _path_stamp()
    with _lock:
        cached = _cache.get(stamp)
        if cached is not None:
            return cached
    seen: dict[str, Package] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        key = _normalise(str(name))
        seen.setdefault(key, Package(key, str(dist.version)))  # first on sys.path wins
    found = tuple(sorted(seen.values()))
    with _lock:
        _cache.clear()
        _cache[stamp] = found
    return found


def packages_digest(found: tuple[Package, ...] | None = None) -> str:
    """SHA-256 over the canonical JSON list of [name, version] pairs."""
    pairs = [[p.name, p.version] for p in (packages() if found is None else found)]
    data = json.dumps(pairs, separators=(",", ":"), ensure_ascii=True).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def describe() -> dict[str, object]:
    """What ``GET /runtime`` answers besides the bundle runtime string."""
    found = packages()
    return {"python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "packages": [{"name": p.name, "version": p.version} for p in found],
            "packages_digest": packages_digest(found)}
