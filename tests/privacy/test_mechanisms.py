"""DP mechanisms: privacy maps against OpenDP's own, verification, bad input."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pandas as pd
import pytest

from veil import privacy
from veil.privacy import (
    CostMismatchError,
    DPResult,
    InvalidParameterError,
    UnknownMechanismError,
    verify_cost,
)

dp.enable_features("contrib")


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 2000
    frame = pd.DataFrame(
        {
            "cost": rng.gamma(2.0, 500.0, n),
            "g": rng.choice(["a", "b", "c"], n),
            "h": rng.integers(0, 3, n),
            "label": rng.choice(["x", "y"], n),
        }
    )
    frame.loc[::40, "cost"] = np.nan
    return frame


def _all_results(df: pd.DataFrame) -> list[DPResult]:
    return [
        privacy.count(df, epsilon=0.5),
        privacy.count(df, epsilon=0.5, column="cost"),
        privacy.sum(df, "cost", bounds=(0, 5000), epsilon=0.7),
        privacy.mean(df, "cost", bounds=(0, 5000), epsilon=1.0),
        privacy.quantile(df, "cost", 0.5, bounds=(0, 5000), epsilon=1.0),
        privacy.histogram(df, "g", categories=["a", "b"], epsilon=1.0),
        privacy.histogram(df, "cost", bins=[0, 500, 1000, 2000], epsilon=1.0),
        privacy.grouped_count(df, ["g", "h"], keys=[("a", 0), ("b", 1)], epsilon=1.0),
        privacy.grouped_sum(df, "g", "cost", keys=["a", "b", "zzz"], bounds=(0, 5000), epsilon=1.0),
    ]


def test_declared_cost_is_within_requested_epsilon(df: pd.DataFrame) -> None:
    for r, want in zip(_all_results(df), [0.5, 0.5, 0.7, 1, 1, 1, 1, 1, 1], strict=True):
        assert want * (1 - 1e-5) <= r.epsilon <= want, r
        assert r.delta == 0.0


def test_json_round_trip_reverifies(df: pd.DataFrame) -> None:
    for r in _all_results(df):
        again = DPResult.from_json(r.to_json())
        assert again.epsilon == r.epsilon and again.params == r.params
        assert verify_cost(r) == (pytest.approx(r.epsilon, rel=1e-12), 0.0)


@pytest.mark.parametrize("factor", [0.5, 0.999, 1.001, 2.0])
def test_misdeclared_epsilon_is_refused(df: pd.DataFrame, factor: float) -> None:
    d = privacy.mean(df, "cost", bounds=(0, 5000), epsilon=1.0).to_json()
    d["epsilon"] *= factor
    with pytest.raises(CostMismatchError, match="declared epsilon"):
        DPResult.from_json(d)


def test_tampered_params_change_the_cost(df: pd.DataFrame) -> None:
    d = privacy.sum(df, "cost", bounds=(0, 5000), epsilon=1.0).to_json()
    d["params"]["scale"] /= 10  # less noise, same declared epsilon
    with pytest.raises(CostMismatchError):
        verify_cost(d)
    d = privacy.sum(df, "cost", bounds=(0, 5000), epsilon=1.0).to_json()
    d["params"]["bounds"] = [0, 50000]  # wider clamp -> more sensitivity
    with pytest.raises(CostMismatchError):
        verify_cost(d)


def test_declared_delta_must_match(df: pd.DataFrame) -> None:
    d = privacy.count(df, epsilon=1.0).to_json()
    d["delta"] = 1e-6
    with pytest.raises(CostMismatchError, match="declared delta"):
        verify_cost(d)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(mechanism="laplace_magic"),
        lambda d: d["params"].update(extra=1),
        lambda d: d["params"].pop("scale"),
        lambda d: d.update(unexpected=True),
        lambda d: d.update(epsilon=float("nan")),
        lambda d: d.update(value="not a number"),
        lambda d: d["params"].update(scale=-1.0),
    ],
)
def test_malformed_results_are_refused(df: pd.DataFrame, mutate) -> None:  # type: ignore[no-untyped-def]
    d = privacy.count(df, epsilon=1.0).to_json()
    mutate(d)
    with pytest.raises((InvalidParameterError, UnknownMechanismError, CostMismatchError)):
        DPResult.from_json(d)


def test_unknown_mechanism_error_type(df: pd.DataFrame) -> None:
    d = privacy.count(df, epsilon=1.0).to_json()
    d["mechanism"] = "nope"
    with pytest.raises(UnknownMechanismError):
        verify_cost(d)


def test_grouped_value_shape_checked(df: pd.DataFrame) -> None:
    d = privacy.grouped_count(df, "g", keys=["a", "b"], epsilon=1.0).to_json()
    d["value"] = d["value"][:1]
    with pytest.raises(InvalidParameterError, match="does not match"):
        verify_cost(d)


# ----------------------------------------------------------- privacy maps vs OpenDP directly


def test_count_map_matches_opendp() -> None:
    r = privacy.count(pd.DataFrame({"a": [1, 2, 3]}), epsilon=0.3)
    m = dp.m.make_laplace(
        dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=r.params["scale"]
    )
    assert r.epsilon == pytest.approx(m.map(1), rel=1e-12)
    assert r.params["scale"] == pytest.approx(1 / 0.3, rel=1e-6)


def test_sum_map_matches_opendp() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    r = privacy.sum(df, "x", bounds=(-10, 40), epsilon=0.8)
    sens = (
        (dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance())
        >> dp.t.then_clamp((-10.0, 40.0))
        >> dp.t.then_sum()
    ).map(1)
    assert 40.0 <= sens < 50.001  # OpenDP may use U - L when signs differ
    lap = dp.m.make_laplace(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), r.params["scale"]
    )
    assert r.epsilon == pytest.approx(lap.map(sens), rel=1e-12)


def test_mean_is_basic_composition_of_count_and_sum() -> None:
    df = pd.DataFrame({"x": np.linspace(0, 10, 50)})
    r = privacy.mean(df, "x", bounds=(0, 10), epsilon=1.0, count_share=0.3)
    c = privacy.count(df, epsilon=0.3).epsilon
    s = privacy.sum(df, "x", bounds=(0, 10), epsilon=0.7).epsilon
    assert r.epsilon == pytest.approx(c + s, rel=1e-5)
    assert 0 <= r.value <= 10


def test_quantile_map_matches_opendp() -> None:
    df = pd.DataFrame({"x": np.arange(100.0)})
    r = privacy.quantile(df, "x", 0.25, bounds=(0, 100), epsilon=0.5, n_candidates=11)
    m = dp.m.make_private_quantile(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.symmetric_distance(),
        dp.max_divergence(),
        candidates=[float(x) for x in np.linspace(0, 100, 11)],
        alpha=0.25,
        scale=r.params["scale"],
    )
    assert r.epsilon == pytest.approx(m.map(1), rel=1e-12)
    assert r.value in np.linspace(0, 100, 11)


def test_histogram_and_grouped_maps_are_one_over_scale(df: pd.DataFrame) -> None:
    for r in (
        privacy.histogram(df, "g", categories=["a", "b", "c"], epsilon=0.25),
        privacy.grouped_count(df, "g", keys=["a"], epsilon=0.25),
        privacy.grouped_sum(df, "g", "cost", keys=["a"], bounds=(0, 10), epsilon=0.25),
    ):
        assert r.epsilon == pytest.approx(0.25, rel=1e-6)


# ----------------------------------------------------------- values are sensible


def test_values_are_close_at_large_epsilon(df: pd.DataFrame) -> None:
    eps = 50.0
    clean = df["cost"].dropna().clip(0, 5000)
    assert abs(privacy.count(df, epsilon=eps).value - len(df)) < 5
    assert abs(privacy.sum(df, "cost", bounds=(0, 5000), epsilon=eps).value - clean.sum()) < 2000
    assert abs(privacy.mean(df, "cost", bounds=(0, 5000), epsilon=eps).value - clean.mean()) < 20
    med = privacy.quantile(df, "cost", 0.5, bounds=(0, 5000), epsilon=eps, n_candidates=501)
    assert abs(med.value - clean.median()) < 100
    gs = privacy.grouped_sum(df, "g", "cost", keys=["a", "zzz"], bounds=(0, 5000), epsilon=eps)
    truth = df.loc[df.g == "a", "cost"].fillna(0).clip(0, 5000).sum()
    assert abs(gs.value[0]["sum"] - truth) < 2000
    assert gs.value[1] == {"g": "zzz", "sum": pytest.approx(0, abs=2000)}
    gc = privacy.grouped_count(df, ["g", "h"], keys=[("a", 0)], epsilon=eps)
    truth_c = int(((df.g == "a") & (df.h == 0)).sum())
    assert abs(gc.value[0]["count"] - truth_c) < 5
    h = privacy.histogram(df, "cost", bins=[0, 1000, 1e9], epsilon=eps)
    assert abs(h.value["[0, 1000)"] - int((df.cost < 1000).sum())) < 5


def test_repr_shows_value_and_cost(df: pd.DataFrame) -> None:
    text = repr(privacy.mean(df, "cost", bounds=(0, 5000), epsilon=0.5))
    assert "mean of cost" in text and "epsilon=0.5" in text and "value=" in text


# ----------------------------------------------------------- bad input


@pytest.mark.parametrize("eps", [0, -1, float("inf"), float("nan"), "1", True, None])
def test_bad_epsilon(df: pd.DataFrame, eps: object) -> None:
    with pytest.raises(InvalidParameterError, match="epsilon"):
        privacy.count(df, epsilon=eps)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="epsilon"):
        privacy.sum(df, "cost", bounds=(0, 1), epsilon=eps)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bounds",
    [None, (5, 1), (1, 1), (0, float("inf")), (float("nan"), 1), (0,), "ab", (0, "1"), (True, 2)],
)
def test_bad_bounds(df: pd.DataFrame, bounds: object) -> None:
    for fn in (privacy.sum, privacy.mean):
        with pytest.raises(InvalidParameterError, match="bounds"):
            fn(df, "cost", bounds=bounds, epsilon=1.0)  # type: ignore[operator]
    with pytest.raises(InvalidParameterError, match="bounds"):
        privacy.quantile(df, "cost", 0.5, bounds=bounds, epsilon=1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="bounds"):
        privacy.grouped_sum(df, "g", "cost", keys=["a"], bounds=bounds, epsilon=1.0)  # type: ignore[arg-type]


def test_unknown_options_are_errors(df: pd.DataFrame) -> None:
    with pytest.raises(TypeError):
        privacy.mean(df, "cost", bounds=(0, 1), epsilon=1.0, delta=1e-5)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        privacy.count(df, epsilon=1.0, noise="gaussian")  # type: ignore[call-arg]


def test_other_bad_inputs(df: pd.DataFrame) -> None:
    bad = [
        lambda: privacy.sum(df, "nope", bounds=(0, 1), epsilon=1.0),
        lambda: privacy.sum(df, "g", bounds=(0, 1), epsilon=1.0),
        lambda: privacy.count("not a frame", epsilon=1.0),  # type: ignore[arg-type]
        lambda: privacy.quantile(df, "cost", 1.5, bounds=(0, 1), epsilon=1.0),
        lambda: privacy.quantile(df, "cost", 0.5, bounds=(0, 1), epsilon=1.0, n_candidates=1),
        lambda: privacy.mean(df, "cost", bounds=(0, 1), epsilon=1.0, count_share=1.0),
        lambda: privacy.histogram(df, "g", epsilon=1.0),
        lambda: privacy.histogram(df, "g", categories=["a"], bins=[0, 1], epsilon=1.0),
        lambda: privacy.histogram(df, "g", categories=["a", "a"], epsilon=1.0),
        lambda: privacy.histogram(df, "g", categories=[], epsilon=1.0),
        lambda: privacy.histogram(df, "cost", bins=[0, 0, 1], epsilon=1.0),
        lambda: privacy.histogram(df, "cost", bins=[0, math.inf], epsilon=1.0),
        lambda: privacy.grouped_count(df, "g", keys=None, epsilon=1.0),  # type: ignore[arg-type]
        lambda: privacy.grouped_count(df, "g", keys=[], epsilon=1.0),
        lambda: privacy.grouped_count(df, "g", keys=["a", "a"], epsilon=1.0),
        lambda: privacy.grouped_count(df, ["g", "h"], keys=["a"], epsilon=1.0),
        lambda: privacy.grouped_count(df, [], keys=["a"], epsilon=1.0),
        lambda: privacy.grouped_count(df, "missing", keys=["a"], epsilon=1.0),
    ]
    for i, fn in enumerate(bad):
        with pytest.raises(InvalidParameterError):
            fn()
            pytest.fail(f"case {i} accepted")


def test_sdk_declares_queries_instead_of_computing_values() -> None:
    """veil.dp builds plans for the release executor; only veil.privacy computes values."""
    from veil.sdk import dp as vdp

    for name in ("count", "sum", "mean", "quantile", "histogram", "grouped_count", "grouped_sum"):
        assert getattr(vdp, name) is not getattr(privacy, name)
    with pytest.raises(vdp.PlanError, match="derived in pandas"):
        vdp.mean(pd.DataFrame({"cost": [1.0, 2.0]}), "cost", bounds=(0, 5000), epsilon=0.5)
