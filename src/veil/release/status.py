"""The output-status state machine: every rule for an output's status lives here (h11 style).

Beside ``jobs.lifecycle.ALLOWED`` for jobs. The gate gives each output its first status; the
ledger settles ``to_charge``; provider review settles ``pending_review``. Nothing else moves an
output, and a final status never moves again.
"""

from __future__ import annotations

from enum import StrEnum


class OutputStatus(StrEnum):
    TO_CHARGE = "to_charge"  # a verified DP result; the ledger charges it or refuses it
    PENDING = "pending_review"  # waits for every provider whose data was used
    RELEASED = "released"
    REFUSED = "refused"  # by the gate or the ledger: never stored
    REJECTED = "rejected"  # by a provider at review: deleted


ALLOWED: dict[OutputStatus, frozenset[OutputStatus]] = {
    OutputStatus.TO_CHARGE: frozenset({OutputStatus.RELEASED, OutputStatus.PENDING,
                                       OutputStatus.REFUSED}),
    OutputStatus.PENDING: frozenset({OutputStatus.RELEASED, OutputStatus.REJECTED}),
    OutputStatus.RELEASED: frozenset(),
    OutputStatus.REFUSED: frozenset(),
    OutputStatus.REJECTED: frozenset(),
}


class IllegalOutputTransition(ValueError):
    """An output status change the state machine does not allow (a bug, never user input)."""


def advance(current: str, to: OutputStatus) -> OutputStatus:
    """The new status, if ``current -> to`` is allowed; otherwise IllegalOutputTransition."""
    if to not in ALLOWED[OutputStatus(current)]:
        raise IllegalOutputTransition(f"an output cannot go from {current} to {to}")
    return to
