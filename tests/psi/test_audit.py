"""The leakage audit's cores: oracles, attacks, scoring, the linkage game (no server, no files).

The qualitative result of the original's figure 3: against plain ECDH-PSI every attack's
leakage grows with the number of calls until it recovers X; against DPCA-PSI the attacks'
membership advantage stays within the DP bound.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import hypergeom

from tests.psi._support import seeded_random
from veil.psi.audit import attacks as A
from veil.psi.audit.linkage import best_advantage, linkage_test
from veil.psi.audit.metrics import dp_bound, score
from veil.psi.audit.oracles import (
    DpcaFaithful,
    DpcaSampling,
    MultiIdEcdh,
    Observation,
    PlainEcdh,
    ReferenceMasking,
    SumOracle,
    binomial_trials,
    dpca_noise,
)
from veil.psi.audit.population import Population, make_population
from veil.psi.audit.sweep import SweepConfig, run_sweep
from veil.psi.errors import AuditError
from veil.psi.tau import choose_tau

COUNT_ATTACKS = [A.baseline, A.improved, A.dypathblazer, A.act_bayesian]
SUM_ATTACKS = [A.tree_sum_explorer, A.sum_only]
N = 20
EPS = 1.0
DELTA = 1 / (10 * N)
T = 12


@pytest.fixture(scope="module")
def tau1() -> int:
    """tau for k = 1, T calls, ε = 1, N = 20 (the parties' own rule, spec §5)."""
    return choose_tau(1, T, EPS, N, use_disk_cache=False).tau


def _pops(count: int, seed: int, k: int = 1) -> list[Population]:
    rng = np.random.default_rng(seed)
    return [make_population(N, N, N // 2, k=k, rng=rng) for _ in range(count)]


def _mean(attack: A.AttackFn, make, calls: int, seed: int, reps: int = 12, k: int = 1,
          field: str = "leakage") -> float:
    rng = np.random.default_rng(seed + 1)
    vals = [getattr(score(attack(p.values, make(p), calls, rng), p.member), field)
            for p in _pops(reps, seed, k)]
    return float(np.mean(vals))


@pytest.mark.parametrize("attack", COUNT_ATTACKS, ids=lambda f: f.__name__)
def test_count_attacks_recover_members_of_plain_ecdh_psi(attack: A.AttackFn) -> None:
    curve = [_mean(attack, PlainEcdh, calls, seed=7) for calls in (1, 5, 10, 25)]
    assert curve == sorted(curve), curve  # leakage grows with calls
    assert curve[0] == 0.0 and curve[-1] >= 0.8, curve
    if attack is not A.act_bayesian:  # the exact attacks never declare wrongly
        assert _mean(attack, PlainEcdh, 25, seed=7, field="precision") == 1.0


@pytest.mark.parametrize("attack", COUNT_ATTACKS, ids=lambda f: f.__name__)
def test_multi_id_ecdh_psi_leaks_like_plain(attack: A.AttackFn) -> None:
    assert _mean(attack, MultiIdEcdh, 25, seed=8, k=2) >= 0.8


@pytest.mark.parametrize("attack", SUM_ATTACKS, ids=lambda f: f.__name__)
def test_sum_attacks_recover_members_of_psi_sum(attack: A.AttackFn) -> None:
    curve = [_mean(attack, SumOracle, calls, seed=9) for calls in (1, 3, 10, 25)]
    assert curve == sorted(curve) and curve[-1] >= 0.95, curve


@pytest.mark.parametrize("attack", COUNT_ATTACKS, ids=lambda f: f.__name__)
def test_dpca_psi_keeps_every_attack_within_the_dp_bound(attack: A.AttackFn, tau1: int) -> None:
    bound = dp_bound(EPS, DELTA)
    rb = seeded_random(b"audit-dpca")
    adv = _mean(attack, lambda p: DpcaSampling(p, tau1, rb), T, seed=10, reps=40,
                field="advantage")
    assert adv <= bound
    assert adv < 0.2  # near zero, as in the original's figure 3 (plain: 1.0)
    plain = _mean(attack, PlainEcdh, T, seed=10, reps=40, field="advantage")
    assert plain > adv + 0.2


def test_dpca_psi_multi_id_within_the_bound() -> None:
    tau = choose_tau(2, T, EPS, N, use_disk_cache=False).tau
    rb = seeded_random(b"audit-multi")
    adv = _mean(A.improved, lambda p: DpcaSampling(p, tau, rb), T, seed=11, reps=40, k=2,
                field="advantage")
    assert adv <= dp_bound(EPS, DELTA) and adv < 0.2


def test_exact_ppam_sums_leak_and_dualdp_noise_stops_it(tau1: int) -> None:
    rb = seeded_random(b"audit-ppam")
    bound = dp_bound(EPS, DELTA)
    exact = _mean(A.sum_only, lambda p: SumOracle(p, tau1, random_bytes=rb), T, seed=12,
                  field="advantage")
    assert exact > bound  # the DP of the sizes says nothing about the sum (spec §12.4)
    per_call = (EPS / T, DELTA / T)
    for attack in SUM_ATTACKS:
        noisy = _mean(attack, lambda p: SumOracle(p, tau1, dualdp=per_call, random_bytes=rb),
                      T, seed=12, reps=30, field="advantage")
        assert noisy <= dp_bound(2 * EPS, 2 * DELTA) and noisy < 0.2


def test_reference_masking_links_every_row_in_one_call(tau1: int) -> None:
    pop = _pops(1, 13)[0]
    rng = np.random.default_rng(0)
    inf = A.ciphertext_linkage(pop.values, ReferenceMasking(pop, tau1), 1, rng)
    s = score(inf, pop.member)
    assert s.leakage == 1.0 and s.precision == 1.0 and inf.calls == 1
    assert s.advantage > dp_bound(EPS, DELTA)  # the DP claim is void under this leak
    # Veil's protocol re-randomises: the same attack finds nothing to link
    none = A.ciphertext_linkage(pop.values, DpcaSampling(pop, tau1), 1, rng)
    assert not none.positive and not none.negative


def test_sampling_noise_is_the_protocols_hypergeometric() -> None:
    tau = 40
    rb = seeded_random(b"audit-noise")
    draws = np.concatenate([dpca_noise(3, tau, rb) for _ in range(700)])
    dist = hypergeom(2 * tau, tau, tau)
    assert abs(draws.mean() - dist.mean()) < 4 * dist.std() / math.sqrt(draws.size)
    assert abs(draws.var() / dist.var() - 1) < 0.15
    assert dpca_noise(2, 0, rb).tolist() == [0, 0]


def test_faithful_oracle_runs_the_real_protocol() -> None:
    pop = _pops(1, 14, k=2)[0]
    everyone = np.arange(pop.n)
    exact = DpcaFaithful(pop, 0).query(everyone)  # tau = 0: plain cascade, exact sizes
    real = np.bincount(pop.column[pop.column >= 0], minlength=2)
    assert exact.sizes == tuple(int(r) for r in real) and exact.count == pop.member.sum()
    tau = 12
    oracle = DpcaFaithful(pop, tau, random_bytes=seeded_random(b"faithful"))
    sizes = np.array([oracle.query(everyone).sizes for _ in range(12)])
    noise = sizes - real
    assert noise.min() >= 0 and noise.max() <= tau and oracle.calls == 12
    # agrees with sampling mode in distribution (mean tau/2, sd ~1.7 per round)
    assert abs(noise.mean() - tau / 2) < 1.5


def test_multi_id_oracle_reveals_per_column_set_sizes() -> None:
    pop = _pops(1, 15, k=2)[0]
    obs = MultiIdEcdh(pop).query(np.arange(pop.n))
    assert len(obs.sizes) == 3 and sum(obs.sizes[:2]) == pop.member.sum()


def test_scoring_and_the_bound() -> None:
    member = np.array([True, True, False, False])
    s = score(A.Inference(frozenset({0, 2}), frozenset({3}), 1), member)
    assert (s.leakage, s.positive, s.negative, s.declared, s.wrong) == (0.5, 0.25, 0.25, 3, 1)
    assert s.precision == pytest.approx(2 / 3) and s.advantage == pytest.approx(0.25)
    with pytest.raises(AuditError, match="both member and non-member"):
        score(A.Inference(frozenset({0}), frozenset({0}), 1), member)
    assert dp_bound(1.0, 0.0) == pytest.approx((math.e - 1) / (math.e + 1))
    assert dp_bound(8.0, 0.01) <= 1.0
    assert binomial_trials(1.0, 1e-5, 1.0) == 98  # spec §9's example


def test_attacks_respect_the_call_budget() -> None:
    pop = _pops(1, 16)[0]
    rng = np.random.default_rng(1)
    for attack in [*COUNT_ATTACKS, *SUM_ATTACKS]:
        for calls in (0, 1, 4):
            oracle = SumOracle(pop)
            inf = attack(pop.values, oracle, calls, rng)
            assert inf.calls == oracle.calls <= calls


def test_bad_parameters_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(AuditError, match="intersection 30 exceeds"):
        make_population(20, 20, 30, rng=rng)
    with pytest.raises(AuditError, match="must be an integer >= 1"):
        make_population(0, 20, 0, rng=rng)
    pop = _pops(1, 17)[0]
    with pytest.raises(AuditError, match="indices into X"):
        PlainEcdh(pop).query(np.array([pop.n]))
    with pytest.raises(AuditError, match="repeat"):
        PlainEcdh(pop).query(np.array([1, 1]))
    with pytest.raises(AuditError, match="calls"):
        A.improved(pop.values, PlainEcdh(pop), -1, rng)
    with pytest.raises(AuditError, match="PSI-SUM"):
        A.sum_only(pop.values, PlainEcdh(pop), 3, rng)
    with pytest.raises(AuditError, match="unknown oracle"):
        SweepConfig(oracles=("nope",))
    with pytest.raises(AuditError, match="epsilon"):
        SweepConfig(epsilons=(0.0,))
    with pytest.raises(AuditError, match="epsilon"):
        binomial_trials(math.inf, 1e-5, 1)
    assert Observation((1,), 1.0).total is None


def test_linkage_game() -> None:
    tau = 100
    results = {r.observer: r for r in linkage_test(
        tau, epsilon=EPS, delta=DELTA, trials=600, faithful_trials=2,
        random_bytes=seeded_random(b"linkage"))}
    assert results["multi-ID ECDH-PSI (2^k sizes)"].advantage == 1.0
    assert results["cascade without DP (real protocol)"].advantage == 1.0  # m_2 gives it away
    sampled = results["DPCA-PSI cascade (sampling)"]
    # within sampling error of the best any test on the sizes can do, itself far below 1
    assert sampled.advantage <= sampled.best_possible + 3 / math.sqrt(sampled.trials)
    assert sampled.best_possible < 0.2 and sampled.advantage <= sampled.bound
    assert "DPCA-PSI cascade (real protocol)" in results
    assert best_advantage(0) == 1.0 and best_advantage(100) < best_advantage(10) < 1.0


def test_sweep_rows_cover_calls_and_epsilons() -> None:
    cfg = SweepConfig(calls=(1, 4), epsilons=(4.0, 8.0), reps=2, seed=5,
                      oracles=("ecdh", "dpca-k1"), attacks=("guo-improved",))
    rows = run_sweep(cfg, lambda k, eps: 10 if eps == 4.0 else 5)
    assert [(r.oracle, r.epsilon, r.calls) for r in rows] == [
        ("ecdh", None, 1), ("ecdh", None, 4), ("dpca-k1", 4.0, 1), ("dpca-k1", 4.0, 4),
        ("dpca-k1", 8.0, 1), ("dpca-k1", 8.0, 4)]
    assert rows[-1].tau == 5 and rows[-1].bound == pytest.approx(dp_bound(8.0, 1 / 200))


def test_sweep_runs_the_real_protocol_for_faithful_points() -> None:
    cfg = SweepConfig(calls=(1, 3), epsilons=(8.0,), reps=3, faithful_reps=2, seed=6,
                      oracles=("dpca-k1-faithful", "dpca-multi-faithful"),
                      attacks=("guo-improved",))
    rows = run_sweep(cfg, lambda k, eps: 4)
    assert [(r.oracle, r.k, r.calls, r.reps) for r in rows] == [
        ("dpca-k1-faithful", 1, 3, 2), ("dpca-multi-faithful", 2, 3, 2)]
