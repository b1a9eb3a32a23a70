"""Budget accounting: composition rules, policy documents, charge decisions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from veil.privacy import Budget, BudgetPolicy, BudgetPolicyError, check_charge, compose


def test_basic_composition_adds() -> None:
    total = compose([Budget(0.5), (0.25, 1e-7), Budget(0.25, 1e-7)])
    assert total == Budget(1.0, 2e-7)
    assert compose([]) == Budget(0.0, 0.0)


def test_zcdp_beats_basic_for_many_small_costs() -> None:
    costs = [Budget(0.05)] * 200  # basic: eps = 10
    z = compose(costs, "zcdp", delta=1e-6)
    rho = 200 * 0.05**2 / 2
    assert z.epsilon == pytest.approx(rho + 2 * math.sqrt(rho * math.log(1e6)))
    assert z.epsilon < 10 and z.delta == 1e-6


def test_zcdp_never_worse_than_basic() -> None:
    few = [Budget(1.0)]
    assert compose(few, "zcdp", delta=1e-9) == compose(few, "basic")


def test_zcdp_with_approx_costs_uses_leftover_delta() -> None:
    costs = [Budget(0.05)] * 100 + [Budget(0.5, 4e-7)]
    z = compose(costs, "zcdp", delta=1e-6)
    rho = 100 * 0.05**2 / 2
    assert z.epsilon == pytest.approx(rho + 2 * math.sqrt(rho * math.log(1 / 6e-7)) + 0.5)


@pytest.mark.parametrize(
    "bad",
    [Budget, lambda: Budget(-1.0), lambda: Budget(float("nan")), lambda: Budget(1.0, 1.0)],
)
def test_bad_costs(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((BudgetPolicyError, TypeError)):
        bad()


def test_compose_bad_arguments() -> None:
    with pytest.raises(BudgetPolicyError):
        compose([Budget(1.0)], "pld?")  # type: ignore[arg-type]
    with pytest.raises(BudgetPolicyError):
        compose([Budget(1.0)], "zcdp")
    with pytest.raises(BudgetPolicyError):
        compose(["1.0"])  # type: ignore[list-item]


def test_policy_document() -> None:
    p = BudgetPolicy.parse({"epsilon": 3, "delta": 1e-6, "rule": "zcdp", "renewal": "30d"})
    assert p.period == timedelta(days=30)
    anchor = datetime(2025, 1, 1, tzinfo=UTC)
    assert p.period_start(anchor, anchor + timedelta(days=65)) == anchor + timedelta(days=60)
    assert BudgetPolicy.parse({"epsilon": 1}).period_start(anchor, anchor) is None


@pytest.mark.parametrize(
    "doc",
    [
        {"epsilon": 1, "unknown_field": 2},
        {"epsilon": 0},
        {"epsilon": -1},
        {"epsilon": float("inf")},
        {"epsilon": 1, "delta": 1},
        {"epsilon": 1, "rule": "advanced"},
        {"epsilon": 1, "renewal": "monthly"},
        {"epsilon": 1, "renewal": "0d"},
        {},
        "epsilon=1",
    ],
)
def test_bad_policy_documents(doc: object) -> None:
    with pytest.raises(BudgetPolicyError, match="invalid budget policy"):
        BudgetPolicy.parse(doc)


def test_check_charge_allows_then_refuses_with_reason() -> None:
    p = BudgetPolicy(epsilon=1.0)
    ok = check_charge(p, [Budget(0.5)], [Budget(0.3)], subject="acme/claims x bob")
    assert ok.allowed and ok.remaining_epsilon == pytest.approx(0.2)
    no = check_charge(p, [Budget(0.5), Budget(0.3)], [Budget(0.3)], subject="acme/claims x bob")
    assert not no.allowed
    assert no.remaining_epsilon == pytest.approx(0.2)
    assert "acme/claims x bob" in no.reason and "0.2" in no.reason


def test_exact_fill_is_allowed_and_delta_is_checked() -> None:
    p = BudgetPolicy(epsilon=1.0, delta=1e-6)
    assert check_charge(p, [Budget(0.5)], [Budget(0.5)]).allowed
    d = check_charge(p, [Budget(0.1, 9e-7)], [Budget(0.1, 2e-7)])
    assert not d.allowed and d.remaining_delta == pytest.approx(1e-7)


def test_zcdp_policy_allows_more_releases_than_basic() -> None:
    basic = BudgetPolicy(epsilon=2.0, delta=1e-6)
    zc = BudgetPolicy(epsilon=2.0, delta=1e-6, rule="zcdp")
    spent = [Budget(0.02)] * 150  # basic total = 3.0 > 2.0; zCDP gives ~1.3
    assert not check_charge(basic, spent, [Budget(0.02)]).allowed
    assert check_charge(zc, spent, [Budget(0.02)]).allowed


def test_check_charge_bad_input() -> None:
    with pytest.raises(BudgetPolicyError):
        check_charge({"epsilon": 1}, [], [Budget(0.1)])  # type: ignore[arg-type]
    with pytest.raises(BudgetPolicyError):
        check_charge(BudgetPolicy(epsilon=1), [], [(0.1, float("nan"))])
