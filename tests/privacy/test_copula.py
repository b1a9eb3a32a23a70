"""The DP Gaussian copula: keeps correlations and marginals at eps 1, spends what it says,
refuses what it cannot fit; its post-processing cores tested without a fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from veil.privacy import InvalidParameterError, SyntheticDataError
from veil.privacy.copula import _Marginal, _refine
from veil.privacy.fidelity import compare
from veil.privacy.synthetic import fit_synthetic


def _related(n: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.8, -0.5], [0.8, 1.0, -0.3], [-0.5, -0.3, 1.0]])
    z = rng.multivariate_normal(np.zeros(3), cov, size=n)
    df = pd.DataFrame({
        "income": np.round(np.exp(10 + 0.6 * z[:, 0]), 2),
        "spend": np.round(2000 + 500 * z[:, 1]),  # whole numbers stored as decimals
        "age": np.clip(np.round(45 + 12 * z[:, 2]), 18, 90).astype(np.int64),
        "smoker": z[:, 2] + rng.normal(0, 1, n) > 0.5,
        "plan": np.array(["basic", "plus", "premium"])[np.digitize(z[:, 0], [-0.5, 0.7])],
    })
    df.loc[rng.random(n) < 0.2, "spend"] = np.nan
    return df


@pytest.fixture(scope="module")
def big() -> tuple[pd.DataFrame, object]:
    df = _related(20_000)
    view = fit_synthetic(df, epsilon=1.0, rows=20_000, seed=1,
                         bounds={"income": (0, 200_000), "spend": (0, 5000), "age": (18, 90)},
                         categories={"plan": ["basic", "plus", "premium"]})
    return df, view


def test_auto_picks_the_copula_and_keeps_every_correlation(big) -> None:  # type: ignore[no-untyped-def]
    df, view = big
    assert view.method == "copula"
    cmp = compare(df.assign(plan=df["plan"].map({"basic": 0, "plus": 1, "premium": 2})),
                  view.frame.assign(plan=view.frame["plan"].map(
                      {"basic": 0, "plus": 1, "premium": 2})))
    assert max(cmp.corr_delta.values()) <= 0.08, cmp.corr_delta
    assert not cmp.lost
    for column in ("income", "spend", "age"):
        assert ks_2samp(df[column].dropna(), view.frame[column].dropna()).statistic <= 0.06


def test_types_nulls_and_whole_numbers_survive(big) -> None:  # type: ignore[no-untyped-def]
    df, view = big
    f = view.frame
    assert f["age"].dtype == np.int64 and f["age"].between(18, 90).all()
    assert f["smoker"].dtype == bool
    assert set(f["plan"].dropna()) <= {"basic", "plus", "premium"}
    assert abs(f["spend"].isna().mean() - 0.2) <= 0.02  # the null rate is modelled
    spend = f["spend"].dropna()
    assert (spend == spend.round()).mean() >= 0.9  # drawn as whole values, not smeared
    assert abs(f["smoker"].mean() - df["smoker"].mean()) <= 0.03


def test_spend_is_opendps_map_and_within_the_budget(big) -> None:  # type: ignore[no-untyped-def]
    _, view = big
    assert 1.0 * (1 - 1e-5) <= view.epsilon <= 1.0
    assert 0 < view.delta <= 1e-9  # the Gaussian's delta
    assert set(view.fidelity.spend) == {"model"}
    public = view.fidelity.public_json()
    assert public["method"] == "copula" and "income|spend" in public["modelled_pairs"]


def test_a_privacy_unit_with_several_rows_costs_no_more() -> None:
    df = _related(3000)
    view = fit_synthetic(df.drop(columns=["plan"]), epsilon=1.0, rows=500, seed=2,
                         method="copula", contributions=3,
                         bounds={"income": (0, 200_000), "spend": (0, 5000), "age": (18, 90)})
    assert view.epsilon <= 1.0 and len(view.frame) == 500


def test_few_rows_still_fit() -> None:
    df = _related(60)
    view = fit_synthetic(df, epsilon=1.0, rows=60, seed=3,
                         bounds={"income": (0, 200_000), "spend": (0, 5000), "age": (18, 90)},
                         categories={"plan": ["basic", "plus", "premium"]})
    assert len(view.frame) == 60 and view.epsilon <= 1.0


def test_text_without_public_categories() -> None:
    df = _related(2000)
    bounds = {"income": (0, 200_000), "spend": (0, 5000), "age": (18, 90)}
    with pytest.raises(SyntheticDataError, match=r"'plan'.*categories = \{ plan"):
        fit_synthetic(df, epsilon=1.0, rows=100, method="copula", bounds=bounds)
    # auto falls back to MST, which discovers the categories
    view = fit_synthetic(df, epsilon=1.0, rows=100, bounds=bounds)
    assert view.method == "mst"


def test_pure_epsilon_is_refused_by_the_copula() -> None:
    df = _related(500).drop(columns=["plan", "smoker"])
    with pytest.raises(SyntheticDataError, match="delta > 0"):
        fit_synthetic(df, epsilon=1.0, delta=0.0, rows=10, method="copula",
                      bounds={"income": (0, 200_000), "spend": (0, 5000), "age": (18, 90)})
    with pytest.raises(InvalidParameterError, match="unknown method"):
        fit_synthetic(df, epsilon=1.0, rows=10, method="gan")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pure cores


def test_noise_in_empty_tails_is_not_taken_for_rows() -> None:
    rng = np.random.default_rng(0)
    scale = 40.0
    counts = np.zeros(129)
    counts[10:20] = 2000.0  # the data; the other 118 bins and null are empty
    margin = _Marginal(counts + rng.normal(0, scale, 129), 128, scale)
    assert margin.p[:10].sum() + margin.p[20:].sum() <= 0.01
    assert margin.null_rate == 0.0


def test_public_categories_keep_their_small_counts() -> None:
    margin = _Marginal(np.array([150.0, 260.0, 0.0]), 2, 76.0, threshold=False)
    assert margin.p[0] == pytest.approx(150 / 410)


def test_refined_bins_follow_the_mass() -> None:
    coarse = [0.0, 25.0, 50.0, 75.0, 100.0]
    edges = _refine(coarse, np.array([0.7, 0.3, 0.0, 0.0]), 20, integer=False)
    widths = np.diff(edges)
    assert edges[0] == 0.0 and edges[-1] == 100.0 and np.all(widths > 0)
    assert sum(1 for e in edges if e < 25) == 14  # 70 % of the mass, 70 % of the bins
    assert widths[-1] == 25.0  # an empty tail stays one wide bin
    whole = _refine([0.0, 10.0, 20.0], np.array([1.0, 0.0]), 40, integer=True)
    assert whole == [float(v) for v in range(0, 11)] + [20.0]
