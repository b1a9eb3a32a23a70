"""Join keys in stage-1 views: synthetic keys drawn from DP counts, joinable at the real
match rate, never real or null."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from veil.catalog import SchemaRejected, parse_policy, view_builders_for
from veil.catalog.errors import CatalogError, PolicyError
from veil.catalog.ingest import IngestResult, ingest
from veil.catalog.joinkeys import JoinKeys, KeyIndex, Partner, draw_pool
from veil.crypto import DataKey
from veil.crypto.keyring import LocalKeyring
from veil.crypto.pseudonym import CollaborationKey
from veil.privacy.mechanisms import count_cost

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


def _indexed(frame: pd.DataFrame, policy_text: str, key: CollaborationKey,
             rows: int = 1000, seed: int = 1) -> JoinKeys:
    joins = JoinKeys(key, parse_policy(policy_text, format="toml"), rows=rows, seed=seed)
    for batch in pa.Table.from_pandas(frame, preserve_index=False).to_batches(4096):
        joins.observe(batch)
    return joins


def test_two_datasets_view_keys_match_at_the_real_rate_by_dp_counts() -> None:
    a, b = _pair()  # 10 000 distinct ids each, 6 000 shared; a has 2 rows an id
    key = CollaborationKey.generate()
    doc = POLICY.format(q=1.0, rows=1000)
    first = _indexed(a, doc, key, rows=2000)  # both views cover a tenth of their data
    first.resolve()  # nobody to match yet
    pool_a = first.pools["pid"]
    assert 0.9 * 1000 < len(pool_a.keys) < 1.1 * 1000  # 2 rows a key, as in the data
    assert pool_a.matched == {} and pool_a.partner_epsilon == {}
    partner = Partner("a-id", "hospital/a", first.tags("pid"), pool_a.distinct, pool_a.keys, 1)
    second = _indexed(b, doc, key, rows=1000, seed=2)
    second.resolve({"pid": [partner]})
    pool_b = second.pools["pid"]
    shared = set(pool_a.keys) & set(pool_b.keys)
    assert pool_b.matched == {"hospital/a": len(shared)}
    for pool in (pool_a, pool_b):  # the data's match rate is 0.6 on either side
        assert 0.5 < len(shared) / len(pool.keys) < 0.7
    real = set(a["pid"]) | set(b["pid"])
    assert not (set(pool_a.keys) | set(pool_b.keys)) & real
    # Two DP counts for the second dataset (distinct keys, overlap), one for the first.
    assert second.epsilon == pytest.approx(2 * 0.1, rel=1e-6)
    assert second.partner_epsilon() == {"a-id": pytest.approx(0.1, rel=1e-6)}
    assert second.summary() == {"pid": {"keys": len(pool_b.keys),
                                        "matched": {"hospital/a": len(shared)},
                                        "epsilon": pytest.approx(0.2, rel=1e-5)}}


def test_mock_views_spread_the_keys_and_never_show_real_ones(tmp_path: Path) -> None:
    a, _ = _pair()
    key = CollaborationKey.generate()
    rows = 1000
    va = _upload(a, POLICY.format(q=1.0, rows=rows), key, tmp_path / "a").views["mock"]
    assert len(va) == rows and va["pid"].notna().all()
    assert not set(va["pid"]) & set(a["pid"])
    assert 0.9 * rows / 2 < va["pid"].nunique() < 1.1 * rows / 2  # 2 rows a key, as in a
    assert va["pid"].value_counts().max() <= 3
    half = _upload(a, POLICY.format(q=0.5, rows=rows), key, tmp_path / "h").views["mock"]
    assert 0.9 * rows / 4 < half["pid"].nunique() < 1.1 * rows / 4


def test_overlap_counts_are_dp_with_each_sides_contribution_bound() -> None:
    """One unit moves an overlap by at most its d_in on either side: one noise scale,
    calibrated for the larger, and each side charged what its own d_in costs."""
    rng = np.random.default_rng(0)
    tags = np.arange(1000, dtype=np.uint64)
    partner = Partner("p", "x/p", np.arange(500, 1500, dtype=np.uint64), 1000.0,
                      list(range(10**6, 10**6 + 50)), d_in=3)
    pool = draw_pool(tags, column="pid", integer=True, d_in=1, per_key=0.05, rows=1000,
                     epsilon=0.5, partners=[partner], rng=rng)
    spent_by_partner = pool.partner_epsilon["p"]
    assert spent_by_partner == pytest.approx(0.5, rel=1e-6)  # its d_in 3 sets the scale
    assert pool.epsilon < 0.5 + 0.5  # this side's d_in is 1: its overlap share costs less
    scale = 3 / 0.5
    assert pool.epsilon == pytest.approx(count_cost(1 / 0.5, 1) + count_cost(scale, 1),
                                         rel=1e-3)
    # The released sizes vary with the noise (not a deterministic function of the data).
    sizes = {len(draw_pool(tags, column="pid", integer=True, d_in=1, per_key=0.5, rows=10_000,
                           epsilon=0.1, rng=np.random.default_rng(s)).keys) for s in range(8)}
    assert len(sizes) > 1


def test_key_index_counts_only_each_units_first_rows() -> None:
    key = CollaborationKey.generate()
    frame = pd.DataFrame({"unit": [1] * 5 + [2, 3], "email": ["a", "b", "c", "d", "e", "f", "g"]})
    index = KeyIndex(key, "email", unit_column="unit", max_contributions=2)
    for batch in pa.Table.from_pandas(frame).to_batches(3):  # units span batches
        index.observe(batch)
    assert len(index.tags()) == 2 + 1 + 1
    same = KeyIndex(key, "email")
    same.observe(pa.RecordBatch.from_pandas(frame))
    assert len(same.tags()) == 7
    assert set(index.tags()) <= set(same.tags())  # tags are the same function of the key


def test_sample_view_rows_are_never_joinable(tmp_path: Path) -> None:
    """A published real row with a joinable pseudonym would disclose its person's membership
    in the other provider's data: the sample view's keys match neither real ids nor views."""
    a, _ = _pair(n=2_000)
    key = CollaborationKey.generate()
    views = _upload(a, POLICY.format(q=0.05, rows=100), key, tmp_path).views
    sample = views["sample"]
    assert sample["pid"].notna().all()
    assert not set(sample["pid"]) & set(a["pid"])
    assert not set(sample["pid"]) & set(views["mock"]["pid"])


def test_synthetic_join_key_is_never_all_null(tmp_path: Path) -> None:
    _, b = _pair(n=3_000)
    key = CollaborationKey.generate()
    view = _upload(b, SYNTHETIC, key, tmp_path).views["synthetic"]
    assert len(view) == 300 and view["pid"].notna().all()
    assert view["pid"].nunique() > 1
    assert not set(view["pid"]) & set(b["pid"])


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
    assert parse_policy('join_keys = ["a"]\n', format="toml").effective_join_sample_rate == 1.0
    with pytest.raises(PolicyError, match="join_epsilon"):
        parse_policy("join_epsilon = 0.1\n", format="toml")
    with pytest.raises(PolicyError, match="join_epsilon"):
        parse_policy('join_keys = ["a"]\njoin_epsilon = 0\n', format="toml")
    assert parse_policy('join_keys = ["a"]\n', format="toml").effective_join_epsilon == 0.1
    with pytest.raises(CatalogError, match="collaboration key"):
        view_builders_for(parse_policy('join_keys = ["a"]\n', format="toml"))


def test_key_tags_are_stable_within_a_collaboration_and_view_keys_carry_nothing(
        tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keys")
    key = ring.collaboration_key()
    assert LocalKeyring(tmp_path / "keys").collaboration_key() == key  # stored once, reused
    assert (tmp_path / "keys" / "collaboration.key").stat().st_mode & 0o777 == 0o600
    assert "redacted" in repr(key)
    other = LocalKeyring(tmp_path / "elsewhere").collaboration_key()
    a, _ = _pair(n=2_000)
    doc = POLICY.format(q=0.1, rows=500)
    assert np.array_equal(_indexed(a, doc, key).tags("pid"), _indexed(a, doc, key).tags("pid"))
    assert not set(_indexed(a, doc, key).tags("pid")) & set(_indexed(a, doc, other).tags("pid"))
    first = _upload(a, doc, key, tmp_path / "1", seed=1)
    again = _upload(a, doc, key, tmp_path / "2", seed=2)
    assert not set(first.views["mock"]["pid"]) & set(again.views["mock"]["pid"])


def test_view_keys_are_capped_at_the_view_rows() -> None:
    frame = pd.DataFrame({"pid": np.arange(10_000), "x": 1})
    joins = _indexed(frame, POLICY.format(q=1.0, rows=50), CollaborationKey.generate(),
                     rows=50)
    joins.resolve()
    keys = joins.pools["pid"].keys
    assert len(keys) == 50 and len(set(keys)) == 50
