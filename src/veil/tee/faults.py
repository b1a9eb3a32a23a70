"""The one error type that says "the platform failed, not the workload".

A fault of the host side of the secure stage (swtpm would not start, the attester lost its
TPM, the sandbox host could not set up mounts or cgroups) says nothing about the job: the worker
re-queues the job instead of failing it, bounded by its attempt count. Subclasses keep their own
place in their part's tree (e.g. ``SwtpmError`` is also an ``EvidenceError``); handlers match on
this class by MRO.
"""

from __future__ import annotations

__all__ = ["PlatformFault"]


class PlatformFault(Exception):
    """The host platform failed to run a job; the job itself is not at fault and may run again."""
