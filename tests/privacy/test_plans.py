"""Declared queries, without a server: plan validation, stability bounds, public keys, SDK."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from veil.privacy import plans as P
from veil.privacy import verify_cost


def _frames(seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict[str, P.SourceRules]]:
    rng = np.random.default_rng(seed)
    visits = pd.DataFrame({"pid": rng.integers(0, 80, 400),
                           "region": rng.choice(["n", "s"], 400),
                           "cost": rng.random(400) * 100})
    claims = pd.DataFrame({"pid": np.arange(0, 60), "plan": rng.choice(["a", "b"], 60),
                           "amount": rng.random(60) * 1000})
    rules = {"h/visits": P.SourceRules("h/visits", "pid", 3, {"region": ["n", "s", "w"]}, 5),
             "i/claims": P.SourceRules("i/claims", "pid", 2, {"plan": ["a", "b"]}, 5)}
    return {"h/visits": visits, "i/claims": claims}, rules


def _join() -> P.Relation:
    return P.Relation(sources=["h/visits"]).join(P.Relation(sources=["i/claims"]), on="pid")


def _dp(relation: P.Relation, **measure: object) -> P.PlanDocument:
    return P.parse_plan({"query": {"kind": "dp", "relation": relation.model_dump(mode="json"),
                                   "measure": measure}})


def test_join_moves_by_at_most_the_product_of_contribution_bounds() -> None:
    """Removing one person changes the joined, bounded relation by at most k_a * k_b rows."""
    frames, rules = _frames()
    frames["i/claims"] = pd.concat([frames["i/claims"], frames["i/claims"].head(30)])  # 2 rows/id
    base = P.prepare(_join(), frames, rules)
    assert base.d_in == 3 * 2
    for pid in range(0, 60, 7):
        neighbour = {name: f[f.pid != pid] for name, f in frames.items()}
        moved = P.prepare(_join(), neighbour, rules).frame
        diff = len(base.frame) - len(moved)
        assert 0 <= diff <= base.d_in
        assert (moved.pid != pid).all()
        # Everyone else's rows are exactly the same: truncation is per id.
        kept = base.frame[base.frame.pid != pid].reset_index(drop=True)
        pd.testing.assert_frame_equal(kept, moved.reset_index(drop=True))


def test_cost_is_openDP_map_at_the_contribution_bound() -> None:
    frames, rules = _frames()
    result = P.evaluate(_dp(_join(), mechanism="count", epsilon=0.5), frames, rules)
    assert result.params["d_in"] == 6 and result.epsilon == pytest.approx(0.5)
    assert verify_cost(result.to_json()) == pytest.approx((0.5, 0.0))
    # The scale grows with d_in: the same epsilon over one unit of 6 rows needs 6x the noise.
    single = P.evaluate(_dp(P.Relation(sources=["i/claims"]), mechanism="count", epsilon=0.5),
                        frames, {**rules, "i/claims": P.SourceRules("i/claims", "pid", 1)})
    assert result.params["scale"] == pytest.approx(6 * single.params["scale"], rel=1e-3)


def test_joins_off_the_privacy_id_or_without_a_unit_are_refused() -> None:
    frames, rules = _frames()
    with pytest.raises(P.PlanError, match="privacy-id column of both"):
        P.prepare(P.Relation(sources=["h/visits"]).join(P.Relation(sources=["i/claims"]),
                                                        on="region"), frames, rules)
    rules["i/claims"] = P.SourceRules("i/claims")
    with pytest.raises(P.PlanError, match="unknown stability"):
        P.prepare(_join(), frames, rules)


def test_group_keys_come_only_from_the_policy() -> None:
    frames, rules = _frames()
    rel = P.Relation(sources=["h/visits"])
    out = P.evaluate(_dp(rel, mechanism="grouped_count", by=["region"], epsilon=1.0),
                     frames, rules)
    assert [row["region"] for row in out.value] == ["n", "s", "w"]  # declared, even if empty
    with pytest.raises(P.PlanError, match="no public categories for 'cost'"):
        P.evaluate(_dp(rel, mechanism="grouped_count", by=["cost"], epsilon=1.0), frames, rules)
    with pytest.raises(P.PlanError, match="Extra inputs"):
        _dp(rel, mechanism="grouped_count", by=["region"], epsilon=1.0, keys=["n"])


@pytest.mark.parametrize("measure, message", [
    ({"mechanism": "mean", "column": "cost", "epsilon": 1.0}, "needs bounds"),
    ({"mechanism": "mean", "column": "cost", "bounds": [5, 1], "epsilon": 1.0}, "inverted"),
    ({"mechanism": "mean", "column": "cost", "bounds": [0, 1], "epsilon": -1}, "epsilon"),
    ({"mechanism": "count", "epsilon": 1.0, "bounds": [0, 1]}, "takes no bounds"),
    ({"mechanism": "median", "epsilon": 1.0}, "mechanism"),
    ({"mechanism": "count", "epsilon": "1"}, "epsilon"),
])
def test_malformed_measures_are_refused_before_any_data_is_read(measure, message) -> None:
    with pytest.raises(P.PlanError, match=message):
        _dp(P.Relation(sources=["h/visits"]), **measure)


def test_filters_are_public_constants_and_unknown_ops_are_refused() -> None:
    frames, rules = _frames()
    rel = P.Relation(sources=["h/visits"]).filter("region", "==", "n").filter("cost", "<", 50)
    kept = P.prepare(rel, frames, rules).frame
    assert (kept.region == "n").all() and (kept.cost < 50).all()
    with pytest.raises(P.PlanError, match="op"):
        P.Relation(sources=["h/visits"]).filter("region", "like", "n%")
    with pytest.raises(P.PlanError, match="constant"):
        P.Relation(sources=["h/visits"]).filter("cost", "<", frames["h/visits"].cost)
    with pytest.raises(P.PlanError, match="unknown column"):
        P.prepare(P.Relation(sources=["h/visits"]).filter("nope", "==", 1), frames, rules)


def test_derived_columns_are_row_wise_and_buckets_have_public_keys() -> None:
    frames, rules = _frames()
    rel = (P.Relation(sources=["h/visits"]).derive("double", "mul", "cost", 2.0)
           .derive("band", "bucket", "cost", edges=[25, 50, 75]).filter("band", ">=", 1))
    prepared = P.prepare(rel, frames, rules)
    kept = prepared.frame
    assert (kept.double == kept.cost * 2).all() and (kept.cost >= 25).all()
    assert prepared.d_in == 3  # derivation costs no stability
    out = P.evaluate(_dp(rel, mechanism="grouped_count", by=["band"], epsilon=1.0), frames,
                     rules)
    assert [row["band"] for row in out.value] == [0, 1, 2, 3]  # keys public by construction
    with pytest.raises(P.PlanError, match="already exists"):
        P.prepare(P.Relation(sources=["h/visits"]).derive("cost", "abs", "cost"), frames, rules)
    with pytest.raises(P.PlanError, match="not numeric"):
        P.prepare(P.Relation(sources=["h/visits"]).derive("x", "abs", "region"), frames, rules)
    for bad in (("x", "add", "cost"), ("x", "bucket", "cost"), ("x", "abs", 3.0)):
        with pytest.raises(P.PlanError):
            P.Relation(sources=["h/visits"]).derive(*bad)


def test_aggregate_counts_units_itself_and_drops_or_refuses_small_groups() -> None:
    frames, rules = _frames()
    frames["h/visits"].loc[:3, "region"] = "tiny"
    query = P.AggregateQuery(relation=P.Relation(sources=["h/visits"]), by=["region"],
                             aggregates={"visits": P.Aggregate(fn="count"),
                                         "cost": P.Aggregate(fn="mean", column="cost")})
    with pytest.raises(P.PlanError, match="fewer than 5 people"):
        P.evaluate_aggregate(query, frames, rules)
    rules["h/visits"] = P.SourceRules("h/visits", "pid", 3, {}, 5, "drop")
    result = P.evaluate_aggregate(query, frames, rules)
    assert set(result.table.region) == {"n", "s"} and result.dropped == 1
    assert result.smallest_kept is not None and result.smallest_kept >= 5
    assert "__veil_units__" not in result.table.columns


def test_pinned_plans_round_trip_and_reject_garbage() -> None:
    doc = _dp(P.Relation(sources=["h/visits"]), mechanism="count", epsilon=0.5)
    pinned = P.parse_pinned(P.pin_plans({"n": doc}))
    assert pinned["n"].digest == doc.digest
    for bad in (b"[]", b"{", b'{"n": {"query": 1}}', b'{"n": {"format": "v2", "query": {}}}'):
        with pytest.raises(P.PlanError):
            P.parse_pinned(bad)


# -- the SDK in stage 1 (no server: the views are registered directly) -------------------------


@pytest.fixture()
def sdk(monkeypatch: pytest.MonkeyPatch):
    from veil.sdk import dp

    monkeypatch.delenv("VEIL_STAGE", raising=False)
    frames, _ = _frames()
    public = {"privacy_unit": {"id_column": "pid", "max_contributions": 3},
              "categories": {"region": ["n", "s"]}, "min_group_size": 5, "small_groups": "drop"}
    visits = frames["h/visits"]
    dp.register_load("h/visits", visits, public)
    yield dp, visits
    dp._VIEWS.clear()


def test_stage_one_evaluates_on_the_view_and_publishes_only_the_plan(sdk, tmp_path,
                                                                     monkeypatch) -> None:
    import veil

    dp, visits = sdk
    query = dp.mean(visits, "cost", bounds=(0, 100), epsilon=1.0)
    assert 0 <= query.value <= 100 and "on the views" in repr(query)
    monkeypatch.setenv("VEIL_OUTPUTS", str(tmp_path))
    veil.publish("m", query)
    from veil.sdk.outputs import collect_plans

    assert collect_plans(tmp_path)["m"].digest == query.plan.digest
    assert (tmp_path / "m.view.json").exists()  # the stage-1 preview, never in stage 2


def test_sdk_refuses_derived_frames_chosen_keys_and_computed_dp_values(sdk) -> None:
    import veil

    dp, visits = sdk
    with pytest.raises(dp.PlanError, match="derived in pandas"):
        dp.mean(visits[visits.cost > 10], "cost", bounds=(0, 100), epsilon=1.0)
    with pytest.raises(dp.PlanError, match="chosen by the notebook"):
        dp.grouped_count(visits, by="region", epsilon=1.0, keys=["n", "s"])
    with pytest.raises(dp.PlanError, match="chosen by the notebook"):
        dp.histogram(visits, "region", epsilon=1.0, categories=["n"])
    from veil.privacy import count
    from veil.sdk import PublishError

    with pytest.raises(PublishError, match="cannot leave as DP"):
        veil.publish("raw", count(visits, epsilon=1.0))


def test_in_the_secure_stage_the_notebook_never_sees_the_value(sdk, monkeypatch) -> None:
    dp, visits = sdk
    monkeypatch.setenv("VEIL_STAGE", "secure")
    query = dp.count(visits, epsilon=1.0)
    assert "release executor" in repr(query)
    with pytest.raises(dp.PlanError, match="release executor"):
        _ = query.value
