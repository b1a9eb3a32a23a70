"""Phase E adapter: chunked encryption, row-packed masking and decryption reconstruct exactly."""

from __future__ import annotations

import numpy as np
import pytest

from veil.psi import _payload as P


@pytest.mark.parametrize("packing", ["masker", "owner", "none"])
def test_streamed_mask_roundtrip(monkeypatch: pytest.MonkeyPatch, packing: str) -> None:
    monkeypatch.setattr(P, "CHUNK_ROWS", 40)  # several chunks, a short last one, partial groups
    keys = P.generate_keys(2048)
    params = P.PayloadParams(2048, packing, 40)
    rows = 100
    feats = (np.arange(rows * 2, dtype=np.uint64).reshape(rows, 2) * np.uint64(2**40 + 3))
    feats[7, 1] = np.uint64(2**64 - 1)
    hits = np.array([7, 5, 3, 99, 0, *range(10, 60)], dtype=np.int64)
    peer = P.PeerCiphertexts(hits, rows, 2, params)
    assert P.chunk_count(rows, 2) == 3 and P.chunk_count(rows, 0) == 0
    for i in range(3):
        data = P.encrypt_chunk(keys, feats, i, params)
        assert len(data) == P.chunk_bytes(rows, 2, i, params) == min(40, rows - 40 * i) * 2 * 512
        peer.add(i, data)
    assert P.chunk_bytes(rows, 2, 3, params) == 0
    assert peer.table.shape == (2, len(hits), 512)  # only the matched rows are held
    step = P.batch_rows(params)
    assert step == {"masker": 38, "owner": 40, "none": 40}[packing]  # whole packing groups
    mine_parts, theirs_parts = [], []
    for start in range(0, len(hits), step):
        count = min(step, len(hits) - start)
        masked, mine = P.mask(keys.public, peer, start, count, params)
        assert len(masked) == P.masked_count(count, 2, params) * P.ciphertext_bytes(params)
        mine_parts.append(mine)
        theirs_parts.append(P.unmask(keys, masked, count, 2, params))
    mine, theirs = np.vstack(mine_parts), np.vstack(theirs_parts)
    total = (mine.astype(object) + theirs.astype(object)) % 2**64
    assert (total == feats[hits].astype(object)).all()
    assert not (mine == feats[hits]).all()  # the masker's share alone is not the value


def test_bad_public_key() -> None:
    with pytest.raises(Exception, match=r"public key|modulus|truncated|magic"):
        P.load_public(b"\x00" * 40, 2048)
