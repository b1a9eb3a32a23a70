"""Input hygiene, table reading, share files and the query budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from veil.psi.budget import QueryBudget
from veil.psi.errors import BudgetExceeded, InputError, PsiError
from veil.psi.inputs import (
    normalise_email,
    normalise_ids,
    normalise_phone,
    read_party_data,
    reveal,
    write_shares,
)


def test_normalisers() -> None:
    assert normalise_email("  Ann.B@Example.COM ") == "ann.b@example.com"
    assert normalise_phone("+1 (555) 010-0001") == "+15550100001"
    assert normalise_phone("0044 20 7946 0000") == "+442079460000"
    assert normalise_phone("555.010.0001") == "5550100001"
    assert normalise_ids("device_id", [" x ", None, ""]) == [b"x", b"", b""]


def test_duplicates_after_normalisation_refused() -> None:
    with pytest.raises(InputError, match="'email' has 1 duplicate"):
        normalise_ids("email", ["A@x.com", "a@x.com "])


def test_read_csv_and_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"email": ["a@x", "b@x"], "phone": ["1", None], "spend": [3, 4],
                       "flag": [True, False], "other": ["p", "q"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        data = read_party_data(tmp_path / name, ["email", "phone"], ["spend", "flag"])
        assert [list(c) for c in data.ids] == [[b"a@x", b"b@x"], [b"1", b""]]
        assert data.features.tolist() == [[3, 1], [4, 0]]


@pytest.mark.parametrize(
    ("csv", "ids", "features", "match"),
    [("email,spend\na,-1\n", ["email"], ["spend"], "negative"),
     ("email,spend\na,1.5\n", ["email"], ["spend"], "integers"),
     ("email,spend\na,\n", ["email"], ["spend"], "missing"),
     ("email,spend\na,1\n", ["mail"], ["spend"], "not found|mail"),
     ("email,spend\na,1\n", [], ["spend"], "at least one"),
     ("email,spend\na,1\n", ["email"], ["email"], "twice")],
)
def test_bad_tables(tmp_path: Path, csv: str, ids: list[str], features: list[str],
                    match: str) -> None:
    (tmp_path / "t.csv").write_text(csv)
    with pytest.raises(InputError, match=match):
        read_party_data(tmp_path / "t.csv", ids, features)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_party_data(tmp_path / "nope.csv", ["email"], [])


def test_shares_and_reveal(tmp_path: Path) -> None:
    vals = np.array([[5, 1], [7, 0]], dtype=np.uint64)
    a = np.array([[2**64 - 3, 9], [11, 2**64 - 1]], dtype=np.uint64)
    b = ((vals.astype(object) - a.astype(object)) % 2**64).astype(np.uint64)
    write_shares(tmp_path / "a.csv", ["sender:x", "receiver:y"], a)
    write_shares(tmp_path / "b.csv", ["sender:x", "receiver:y"], b)
    out = reveal(tmp_path / "a.csv", tmp_path / "b.csv")
    assert (out.rows, out.sums, out.refused) == (2, {"sender:x": 12, "receiver:y": 1}, None)
    write_shares(tmp_path / "c.csv", ["sender:x"], a[:, :1])
    with pytest.raises(InputError, match="same run"):
        reveal(tmp_path / "a.csv", tmp_path / "c.csv")
    (tmp_path / "d.csv").write_text("sender:x,receiver:y\n1,zz\n")
    with pytest.raises(InputError, match="not a share file"):
        reveal(tmp_path / "a.csv", tmp_path / "d.csv")


def test_budget(tmp_path: Path) -> None:
    b = QueryBudget(tmp_path / "psi" / "budget.json")
    assert b.charge("peer", "ds", 2) == 1
    assert b.charge("peer", "ds", 2) == 2
    with pytest.raises(BudgetExceeded):
        b.charge("peer", "ds", 2)
    assert b.charge("peer", "other", 2) == 1
    assert b.spent("peer", "ds") == 2
    b.path.write_text("{not json")
    with pytest.raises(PsiError, match="unreadable"):
        b.charge("peer", "ds", 5)


def test_null_like_ids_are_ids(tmp_path: Path) -> None:
    """Audit item 4: "NA", "null", "N/A", "NaN", "#N/A" are real identifiers, not missing."""
    words = ["NA", "null", "N/A", "NaN", "#N/A", "None", "nan"]
    (tmp_path / "t.csv").write_text("code,v\n" + "".join(f"{w},{i}\n" for i, w in enumerate(words)))
    data = read_party_data(tmp_path / "t.csv", ["code"], ["v"])
    assert list(data.ids[0]) == [w.encode() for w in words]
    assert data.features[:, 0].tolist() == list(range(len(words)))


def test_rows_without_any_id_refused_with_count(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("email,phone\na@x,\n,\n , \nb@x,1\n")
    with pytest.raises(InputError, match=r"2 of 4 rows of t.csv have no ID .*lines 3, 4"):
        read_party_data(tmp_path / "t.csv", ["email", "phone"], [])


def test_full_uint64_range_and_clear_range_errors(tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text(f"id,v\na,{2**63}\nb,{2**64 - 1}\nc,0\n")
    data = read_party_data(tmp_path / "ok.csv", ["id"], ["v"])
    assert data.features[:, 0].tolist() == [2**63, 2**64 - 1, 0]
    (tmp_path / "big.csv").write_text(f"id,v\na,1\nb,{2**64}\n")
    with pytest.raises(InputError, match=r"row 2: 18446744073709551616 is 2\^64 or more; "
                                         r"features must be integers in \[0, 2\^64 - 1\]"):
        read_party_data(tmp_path / "big.csv", ["id"], ["v"])
    (tmp_path / "na.csv").write_text("id,v\na,NA\n")
    with pytest.raises(InputError, match="'NA' is not an integer"):
        read_party_data(tmp_path / "na.csv", ["id"], ["v"])


def test_reveal_refuses_sums_over_dummies_without_zero_column(tmp_path: Path) -> None:
    """Audit item 6: with dummies and no zero column, sums are refused, not printed as garbage."""
    vals = np.array([[5, 1], [2**63 + 7, 0], [9, 1]], dtype=np.uint64)  # row 2: a dummy match
    a = np.array([[2**64 - 3, 9], [11, 2**64 - 1], [4, 4]], dtype=np.uint64)
    b = ((vals.astype(object) - a.astype(object)) % 2**64).astype(np.uint64)
    names = ["sender:x", "receiver:is_real"]
    write_shares(tmp_path / "a.csv", names, a, tau=40)
    write_shares(tmp_path / "b.csv", names, b, tau=40)
    out = reveal(tmp_path / "a.csv", tmp_path / "b.csv")
    assert out.rows == 3 and out.sums == {}
    assert out.refused and "tau=40" in out.refused and "--zero-column" in out.refused
    write_shares(tmp_path / "b.csv", names, b, tau=40, zero_columns=["receiver:is_real"])
    out = reveal(tmp_path / "a.csv", tmp_path / "b.csv")
    assert out.refused is None and out.real_rows == 2
    assert out.sums == {"sender:x": 14, "receiver:is_real": 2}
    write_shares(tmp_path / "c.csv", names, b, tau=41)
    with pytest.raises(InputError, match="same run"):
        reveal(tmp_path / "a.csv", tmp_path / "c.csv")


def test_estimate_removes_the_dummy_bias() -> None:
    from scipy.stats import hypergeom

    from veil.psi.estimate import dummy_noise, estimate

    mean, sd = dummy_noise(261)
    dist = hypergeom(2 * 261, 261, 261)
    assert mean == pytest.approx(dist.mean()) and sd == pytest.approx(dist.std())
    est = estimate((180, 160, 148), 261)
    assert est.noisy == 488 and est.expected_dummies == 391.5
    assert est.estimate == 96.5
    assert est.low == pytest.approx(96.5 - 1.96 * sd * 3**0.5, abs=0.01)
    exact = estimate((3, 1), 0)
    assert (exact.estimate, exact.low, exact.high) == (4, 4, 4)
