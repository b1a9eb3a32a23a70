"""Join keys in stage-1 views: pseudonymous, joinable, sampled, never real or null."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.catalog import SchemaRejected, parse_policy, view_builders_for
from veil.catalog.errors import CatalogError, PolicyError
from veil.catalog.ingest import IngestResult, ingest
from veil.catalog.joinkeys import JoinKeySample, pseudonym
from veil.crypto import DataKey
from veil.crypto.keyring import LocalKeyring
from veil.crypto.pseudonym import CollaborationKey

POLICY = """\
join_keys = ["pid"]
join_sample_rate = {q}

[views.mock]
rows = {rows}

[views.sample]
publishable = true
rows = 200
"""

SYNTHETIC = """\
join_keys = ["pid"]

[views.synthetic]
epsilon = 1.0
rows = 300
"""


def _pair(n: int = 10_000, shared: float = 0.6, seed: int = 3) -> tuple[pd.DataFrame,
                                                                         pd.DataFrame]:
    """Two providers' data: ``shared`` of each one's distinct ids are in the other's."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(10 * n) + 1_000
    k = int(n * shared)
    a_ids = ids[:n]
    b_ids = np.concatenate([ids[:k], ids[n:2 * n - k]])
    a = pd.DataFrame({"pid": np.repeat(a_ids, 2), "x": rng.normal(size=2 * n)})
    b = pd.DataFrame({"pid": b_ids, "y": rng.integers(0, 4, n), "z": rng.integers(0, 2, n)})
    return a, b


def _upload(frame: pd.DataFrame, policy_text: str, key: CollaborationKey, where: Path,
            seed: int = 1) -> IngestResult:
    policy = parse_policy(policy_text, format="toml")
    where.mkdir(parents=True, exist_ok=True)
    return ingest(io.BytesIO(frame.to_csv(index=False).encode()), filename="d.csv",
                  max_bytes=1 << 28, dest=where / "data", dek=DataKey.generate(),
                  context=b"test", views=view_builders_for(policy, seed=seed,
                                                           collaboration=key),
                  policy=policy)


def test_mock_views_join_at_a_realistic_rate_and_never_show_real_keys(tmp_path: Path) -> None:
    a, b = _pair()
    key = CollaborationKey.generate()
    q, rows = 0.05, 1000
    va = _upload(a, POLICY.format(q=q, rows=rows), key, tmp_path / "a").views["mock"]
    vb = _upload(b, POLICY.format(q=q, rows=rows), key, tmp_path / "b").views["mock"]
    assert len(va) == rows and va["pid"].notna().all() and vb["pid"].notna().all()
    real = set(a["pid"]) | set(b["pid"])
    assert not (set(va["pid"]) | set(vb["pid"])) & real
    # About q of the 10 000 distinct keys of each, and the same people in both (coordinated).
    assert 0.5 * q * 10_000 < va["pid"].nunique() < 1.5 * q * 10_000
    rate = va["pid"].isin(set(vb["pid"])).mean()
    expected = 0.6  # the real data's match rate: the sample is coordinated across datasets
    assert 0.3 * expected < rate < min(1.0, 3 * expected)
    assert len(va.merge(vb, on="pid")) > 0


def test_sample_view_rows_are_never_joinable(tmp_path: Path) -> None:
    """A published real row with a joinable pseudonym would disclose its person's membership
    in the other provider's data: the sample view's keys match neither real ids nor views."""
    a, _ = _pair(n=2_000)
    key = CollaborationKey.generate()
    views = _upload(a, POLICY.format(q=0.05, rows=100), key, tmp_path).views
    sample = views["sample"]
    assert not set(sample["pid"]) & set(a["pid"])
    joinable = {pseudonym(key, int(v), integer=True) for v in a["pid"]}
    assert not set(sample["pid"]) & joinable
    assert not set(sample["pid"]) & set(views["mock"]["pid"])


def test_synthetic_join_key_is_never_all_null(tmp_path: Path) -> None:
    _, b = _pair(n=3_000)
    key = CollaborationKey.generate()
    view = _upload(b, SYNTHETIC, key, tmp_path).views["synthetic"]
    assert len(view) == 300 and view["pid"].notna().all()
    assert view["pid"].nunique() > 1
    sampled = {pseudonym(key, int(v), integer=True) for v in b["pid"]}
    assert set(view["pid"]) <= sampled


def test_policy_naming_a_missing_join_key_is_refused(tmp_path: Path) -> None:
    a, _ = _pair(n=200)
    with pytest.raises(SchemaRejected, match="'patient_id'") as info:
        _upload(a, 'join_keys = ["patient_id"]\n', CollaborationKey.generate(), tmp_path)
    assert info.value.status_hint == 422
    assert not (tmp_path / "data").exists()
    floats = pd.DataFrame({"pid": [1.5, 2.5] * 50, "x": range(100)})
    with pytest.raises(SchemaRejected, match="'pid' must be an integer or string"):
        _upload(floats, 'join_keys = ["pid"]\n', CollaborationKey.generate(), tmp_path / "f")


def test_a_repeated_key_where_one_to_one_is_declared_is_refused(tmp_path: Path) -> None:
    a, b = _pair(n=500)  # a repeats every pid twice; b has each once
    doc = 'join_keys = ["pid"]\njoin_one_to_one = true\n'
    with pytest.raises(SchemaRejected, match=r"'pid' is declared one-to-one .* 500 rows repeat"):
        _upload(a, doc, CollaborationKey.generate(), tmp_path / "a")
    assert not (tmp_path / "a" / "data").exists()
    assert _upload(b, doc, CollaborationKey.generate(), tmp_path / "b").rows == 500
    text = pd.DataFrame({"pid": ["k1", "k2", "k1"], "x": [1, 2, 3]})
    with pytest.raises(SchemaRejected, match="1 rows repeat"):
        _upload(text, doc, CollaborationKey.generate(), tmp_path / "t")
    with pytest.raises(PolicyError, match="join_one_to_one"):
        parse_policy("join_one_to_one = true\n", format="toml")


def test_join_key_policy_fields_are_strict() -> None:
    with pytest.raises(PolicyError, match="join_keys"):
        parse_policy('join_keys = ["a", "a"]\n', format="toml")
    with pytest.raises(PolicyError, match="join_sample_rate"):
        parse_policy("join_sample_rate = 0.1\n", format="toml")
    with pytest.raises(PolicyError, match="join_sample_rate"):
        parse_policy('join_keys = ["a"]\njoin_sample_rate = 1.5\n', format="toml")
    assert parse_policy('join_keys = ["a"]\n', format="toml").effective_join_sample_rate == 0.05
    with pytest.raises(CatalogError, match="collaboration key"):
        view_builders_for(parse_policy('join_keys = ["a"]\n', format="toml"))


def test_pseudonyms_are_stable_within_a_collaboration_and_differ_across(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keys")
    key = ring.collaboration_key()
    assert LocalKeyring(tmp_path / "keys").collaboration_key() == key  # stored once, reused
    assert (tmp_path / "keys" / "collaboration.key").stat().st_mode & 0o777 == 0o600
    assert "redacted" in repr(key)
    other = LocalKeyring(tmp_path / "elsewhere").collaboration_key()
    assert pseudonym(key, 42, integer=True) == pseudonym(key, 42, integer=True)
    assert pseudonym(key, 42, integer=True) != pseudonym(other, 42, integer=True)
    assert 0 <= int(pseudonym(key, 42, integer=True)) < 2**53
    text = pseudonym(key, "p-42", integer=False)
    assert isinstance(text, str) and len(text) == 24 and text != "p-42"
    a, _ = _pair(n=2_000)
    first = _upload(a, POLICY.format(q=0.1, rows=500), key, tmp_path / "1", seed=1)
    again = _upload(a, POLICY.format(q=0.1, rows=500), key, tmp_path / "2", seed=2)
    apart = _upload(a, POLICY.format(q=0.1, rows=500), other, tmp_path / "3", seed=1)
    assert set(first.views["mock"]["pid"]) == set(again.views["mock"]["pid"])
    assert not set(first.views["mock"]["pid"]) & set(apart.views["mock"]["pid"])


def test_sample_is_capped_at_the_view_rows() -> None:
    import pyarrow as pa

    sample = JoinKeySample(CollaborationKey.generate(), q=1.0, cap=50)
    for start in range(0, 10_000, 1000):
        sample.observe(pa.array(range(start, start + 1000)))
    keys = sample.keys()
    assert len(keys) == 50 and len(set(keys)) == 50
