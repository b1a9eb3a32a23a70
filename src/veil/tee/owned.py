"""Names that record which process made a scratch resource, so a restart can sweep a crash.

A worker killed with SIGKILL cannot clean up after itself: its swtpm state, the sandbox's
staging mount and its cgroups stay behind. Each such resource is named ``<pid>-<random>`` (the
pid of the process that made it); a sweep removes only those whose maker is gone, so several
live workers sharing one state folder never sweep each other.
"""

from __future__ import annotations

import os
import secrets

__all__ = ["owned_name", "owner_gone"]


def owned_name(prefix: str = "") -> str:
    """A fresh name tagged with this process's pid."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(4)}"


def owner_gone(name: str, prefix: str = "") -> bool:
    """Whether ``name`` (made by ``owned_name(prefix)``) belongs to a process that has exited.

    Anything not in that shape is someone else's and never counts as gone.
    """
    if not name.startswith(prefix):
        return False
    pid_text, sep, _ = name[len(prefix):].partition("-")
    if not sep or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
