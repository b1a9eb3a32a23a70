"""The secure stage's contract (veil.stage): the typed input index."""

from __future__ import annotations

import pytest


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
