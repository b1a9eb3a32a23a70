"""The output-status state machine, without a server."""

from __future__ import annotations

import pytest

from veil.release.status import ALLOWED, IllegalOutputTransition, OutputStatus, advance


def test_final_statuses_never_move() -> None:
    for final in (OutputStatus.RELEASED, OutputStatus.REFUSED, OutputStatus.REJECTED):
        assert not ALLOWED[final]
        for to in OutputStatus:
            with pytest.raises(IllegalOutputTransition):
                advance(final, to)


def test_review_settles_only_pending_outputs() -> None:
    assert advance("pending_review", OutputStatus.REJECTED) is OutputStatus.REJECTED
    assert advance(OutputStatus.TO_CHARGE, OutputStatus.PENDING) is OutputStatus.PENDING
    with pytest.raises(IllegalOutputTransition):
        advance(OutputStatus.TO_CHARGE, OutputStatus.REJECTED)  # a DP charge is not a review
    with pytest.raises(ValueError):
        advance("unheard-of", OutputStatus.RELEASED)

