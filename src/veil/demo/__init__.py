"""`veil demo`: the whole two-stage story over the real HTTP API.

A hospital and an insurer upload data; a university researcher develops on
their stage-1 views, submits a notebook, both providers approve its digest,
the worker runs it on the full data in the sandbox, the release gate checks
the outputs, the providers review what needs review, and the researcher
downloads the released results. Every step goes through a real server on
loopback; the process exits non-zero if any step fails.
"""

from __future__ import annotations

from veil.demo.story import DemoFailed, run_demo

__all__ = ["DemoFailed", "run_demo"]
