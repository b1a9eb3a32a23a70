"""A job's sandbox limits: the operator's, lowered by the policy of every dataset it reads."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from veil.catalog.policy import LimitsSpec
from veil.tee.sandbox import SandboxLimits

__all__ = ["effective_limits"]

_KNOBS = ("wall_seconds", "cpu_seconds", "memory_bytes", "max_processes", "output_bytes")


def effective_limits(operator: SandboxLimits,
                     policies: Iterable[LimitsSpec | None]) -> SandboxLimits:
    """Each knob at the lowest of the operator's value and every policy's: a provider may only
    tighten what the operator allows, and the strictest input wins."""
    lowest = {knob: getattr(operator, knob) for knob in _KNOBS}
    for spec in policies:
        if spec is None:
            continue
        for knob in _KNOBS:
            value = getattr(spec, knob)
            if value is not None:
                lowest[knob] = min(lowest[knob], value)
    return replace(operator, **lowest)
