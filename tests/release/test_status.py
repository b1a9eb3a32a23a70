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


def test_the_input_index_is_typed_and_refuses_paths_outside_the_inputs(tmp_path) -> None:
    from veil.stage import IndexEntry, InputIndex, InputIndexError

    index = InputIndex(job="j1", bundle_digest="sha256:" + "0" * 64,
                       datasets={"h/v": IndexEntry(id="d1", file="h__v.enc", context="c")})
    index.write(tmp_path)
    assert InputIndex.read(tmp_path) == index
    for bad in ('{"job": "j1"}', "[]", "{", '{"job": "j", "bundle_digest": "sha256:00", '
                '"datasets": {}}'):
        (tmp_path / "inputs.json").write_text(bad)
        with pytest.raises(InputIndexError):
            InputIndex.read(tmp_path)
    with pytest.raises(ValueError, match="plain name"):
        IndexEntry(id="d1", file="../../etc/passwd", context="c")
