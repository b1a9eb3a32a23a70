"""PPAM on secret shares (spec §8) with MPC-DualDP noise (§9): plan, accounting, and real 2PC.

The MPC tests start two SPU processes (Cheetah, `.venv-mpc`) linked over 127.0.0.1, each fed
one party's shares, and compare with the plaintext model `plain_aggregates`.
"""

from __future__ import annotations

import math
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from veil.psi.budget import MeasurementBudget
from veil.psi.errors import BudgetExceeded, InputError, ParameterMismatch
from veil.psi.local import run_local
from veil.psi.ppam.engine import (
    EngineResult,
    LinkTls,
    WorkerJob,
    default_mpc_python,
    run_engine,
)
from veil.psi.ppam.measure import (
    ShareTable,
    check_table,
    measure,
    plain_aggregates,
    read_share_table,
    report,
)
from veil.psi.ppam.noise import coins_for, noise_spec, pld_delta
from veil.psi.ppam.plan import MeasurePlan, ShareColumns, parse_window
from veil.psi.session import PartyData, PsiConfig, PsiParty
from veil.psi.transport import Identity

from ._support import seeded_random

FXP = 1 << 16
NAMES = ("sender:t0", "sender:campaign", "sender:group", "receiver:t1", "receiver:value",
         "receiver:real")
COLS = ShareColumns("sender:t0", "receiver:t1", "receiver:value", "sender:campaign",
                    "sender:group", "receiver:real")


def _ports() -> tuple[str, str]:
    socks = [socket.socket() for _ in range(2)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return tuple(f"127.0.0.1:{s.getsockname()[1]}" for s in socks)  # type: ignore[return-value]
    finally:
        for s in socks:
            s.close()


def _split(values: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, values.shape, dtype=np.uint64)
    return a, values - a  # uint64 wraps: a + b = values mod 2^64


def _mpc(plan: MeasurePlan, names: tuple[str, ...], s0: np.ndarray, s1: np.ndarray,
         plans: tuple[MeasurePlan, MeasurePlan] | None = None,
         tls: tuple[LinkTls, LinkTls] | None = None, connect_timeout_s: float = 30,
         ) -> tuple[EngineResult | Exception, EngineResult | Exception]:
    addresses = _ports()
    out: dict[int, EngineResult | Exception] = {}

    def party(rank: int, shares: np.ndarray) -> None:
        p = plans[rank] if plans else plan
        reveal = {"both": "both", "publisher": 0, "advertiser": 1}[p.reveal_to]
        job = WorkerJob(rank, addresses, p.to_worker(), shares.shape[0], names,  # type: ignore[arg-type]
                        reveal, timeout_s=60, connect_timeout_s=connect_timeout_s,  # type: ignore[arg-type]
                        tls=tls[rank] if tls else None)
        try:
            out[rank] = run_engine(default_mpc_python(), job, shares)
        except Exception as exc:  # handed to the test
            out[rank] = exc

    threads = [threading.Thread(target=party, args=(r, s)) for r, s in ((0, s0), (1, s1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    return out[0], out[1]


def _random_rows(n: int, seed: int) -> np.ndarray:
    """Real rows (t0, campaign, group, t1, value, real=1) plus dummy rows (random, real=0)."""
    rng = np.random.default_rng(seed)
    t0 = rng.integers(0, 10**6, n)
    rows = np.stack([t0, rng.integers(1, 4, n), rng.integers(0, 2, n),
                     t0 + rng.integers(-50, 80, n), rng.integers(0, 900, n),
                     np.ones(n, np.int64)], axis=1).astype(np.uint64)
    dummies = n // 4
    rows[:dummies, :5] = rng.integers(0, 2**64, (dummies, 5), dtype=np.uint64)
    rows[:dummies, 5] = 0
    return rows


# --- pure: plan, accounting, budget -------------------------------------------------------


def test_window_parsing() -> None:
    assert parse_window("7d") == 7 * 86400
    assert parse_window("12h", time_unit_s=3600) == 12
    for bad in ("7 days", "-1d", "0s", "1.5s", ""):
        with pytest.raises(InputError):
            parse_window(bad)


def test_plan_refuses_bad_input() -> None:
    ok = dict(columns=COLS, window=5, cap=500, metrics=("conversions",), epsilon=1.0,
              campaigns=(1,))
    MeasurePlan(**ok)  # type: ignore[arg-type]
    for change in ({"metrics": ("clicks",)}, {"metrics": ()}, {"cap": 0}, {"cap": 2**40},
                   {"epsilon": 0.0}, {"epsilon": math.inf}, {"delta": 1.0}, {"window": 0},
                   {"campaigns": ()}, {"campaigns": (1, 1)}, {"campaigns": (-1,)}):
        with pytest.raises(InputError):
            MeasurePlan(**{**ok, **change})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="group"):
        MeasurePlan(**{**ok, "columns": ShareColumns("a", "b", "v", "c"),  # type: ignore[arg-type]
                       "metrics": ("lift",)})


def test_spec_noise_formula_example() -> None:
    # Spec §9: eps = 1, delta = 1e-5, s = 1 gives N_b = ceil(8 ln(2e5)) = 98.
    assert coins_for(1, 1.0, 1e-5) == 98
    spec = noise_spec(1, 1.0, 1e-5)
    assert (spec.shift, spec.units) == (0, 1)
    assert spec.coins <= 98 and spec.coins % 2 == 0  # PLD-tight, never above the formula
    assert spec.sd == pytest.approx(math.sqrt(spec.coins) / 2)


@pytest.mark.parametrize(("sensitivity", "epsilon", "delta"),
                         [(1, 1.0, 1e-5), (1, 0.25, 2.5e-7), (500, 0.25, 2.5e-7),
                          (250_000, 2.0, 1e-6), (7, 0.5, 1e-6)])
def test_formula_cross_checked_by_pld(sensitivity: int, epsilon: float, delta: float) -> None:
    """The spec's coin count meets (eps, delta) under dp-accounting's PLD, lattice included."""
    spec = noise_spec(sensitivity, epsilon, delta)
    assert spec.units * spec.quantum >= sensitivity  # rounding never shrinks the sensitivity
    assert spec.units <= 9
    assert pld_delta(spec.coins, spec.units, epsilon) <= delta
    assert spec.coins <= coins_for(spec.units, epsilon, delta)  # the spec's formula bounds it
    assert pld_delta(coins_for(spec.units, epsilon, delta), spec.units, epsilon) <= delta
    # and it is the smallest such even count: two coins fewer would not do
    assert pld_delta(spec.coins - 2, spec.units, epsilon) > delta


def test_budget_split_and_aggregates() -> None:
    plan = MeasurePlan(COLS, window=5, cap=500, metrics=("conversions", "value", "lift"),
                       epsilon=1.0, delta=1e-6, campaigns=(1, 2))
    aggs = plan.aggregates()
    assert len(aggs) == 2 * 2 * 4  # campaigns x groups x kinds
    assert {a.noise.epsilon for a in aggs} == {0.25}
    assert {a.noise.delta for a in aggs} == {2.5e-7}
    value = next(a for a in aggs if a.kind == "value")
    assert value.noise.sensitivity == 500 and value.noise.quantum == 64


def test_measurement_budget_is_charged_and_refuses(tmp_path: Path) -> None:
    budget = MeasurementBudget(tmp_path / "m.json")
    assert budget.charge("peer", "ds", 1.0, 2.0) == 1.0
    assert budget.charge("peer", "ds", 1.0, 2.0) == 2.0
    with pytest.raises(BudgetExceeded):
        budget.charge("peer", "ds", 0.5, 2.0)
    assert budget.spent("peer", "ds") == 2.0
    assert budget.spent("other", "ds") == 0.0


def test_dummies_without_zero_column_refused_before_anything_is_charged(tmp_path: Path) -> None:
    cols = ShareColumns("sender:t0", "receiver:t1", "receiver:value")
    plan = MeasurePlan(cols, window=5, cap=10, metrics=("value",), epsilon=1.0)
    table = ShareTable(NAMES, np.zeros((3, 6), np.uint64), tau=12)
    budget = MeasurementBudget(tmp_path / "m.json")
    with pytest.raises(InputError, match="dummy rows"):
        measure("publisher", table, plan, listen="127.0.0.1:1", peer="127.0.0.1:2",
                peer_fingerprint="fp", dataset="ds", budget=budget, budget_limit=5.0, tls=None)
    assert budget.spent("fp", "ds") == 0.0
    with pytest.raises(InputError, match="not in the share file"):
        check_table(MeasurePlan(ShareColumns("sender:nope", "receiver:t1"), window=5, cap=10,
                                metrics=("conversions",), epsilon=1.0),
                    ShareTable(NAMES, np.zeros((3, 6), np.uint64)))


def test_missing_or_broken_engine_is_a_clear_error(tmp_path: Path) -> None:
    from veil.psi.errors import MpcError

    job = WorkerJob(0, ("127.0.0.1:1", "127.0.0.1:2"), {}, 1, ("a",), "both")
    with pytest.raises(MpcError, match=r"setup\.sh"):
        run_engine(tmp_path / "nope" / "python", job, np.zeros((1, 1), np.uint64))
    with pytest.raises(MpcError, match="without a result"):
        run_engine(Path("/bin/false"), job, np.zeros((1, 1), np.uint64))
    with pytest.raises(InputError):
        run_engine(default_mpc_python(), job, np.zeros((2, 1), np.uint64))


# --- real 2PC (two SPU processes on loopback) ----------------------------------------------


def test_spec_ppam_vector_through_dpca_psi_and_spu() -> None:
    """Spec §11.1 PPAM variant: DPCA-PSI with dummies, then the MPC equals the plaintext result."""
    sender_ids = [[v.encode() for v in c] for c in (["c", "h", "e", "g", "y", "z"],
                                                   ["*", "#", "&", "@", "%", "!"])]
    receiver_ids = [[v.encode() for v in c] for c in (["b", "c", "e", "g"], ["#", "*", "&", "!"])]
    t0 = [0.1, 2.0, 0.03, 4, 0.5, 0.6]
    t1 = v = [0.1, 2, 0.3, 4]
    sf = np.array([[round(x * FXP)] for x in t0], dtype=np.uint64)
    rf = np.array([[round(a * FXP), round(b * FXP), 1] for a, b in zip(t1, v, strict=True)],
                  dtype=np.uint64)
    s = PsiParty(PsiConfig("sender", tau=12), PartyData(sender_ids, sf, ("t0",)),
                 random_bytes=seeded_random(b"S"))
    r = PsiParty(PsiConfig("receiver", tau=12, zero_column=-1),
                 PartyData(receiver_ids, rf, ("t1", "value", "real")),
                 random_bytes=seeded_random(b"R"))
    rs, rr = run_local(s, r)
    names = rs.share_names
    plan = MeasurePlan(ShareColumns("sender:t0", "receiver:t1", "receiver:value",
                                    real="receiver:real"),
                       window=5 * FXP, cap=2**20, metrics=("conversions", "value"),
                       epsilon=1.0, exact=True)
    a, b = _mpc(plan, names, rs.shares, rr.shares)
    assert isinstance(a, EngineResult) and isinstance(b, EngineResult), (a, b)
    assert a.values == b.values
    plain = plain_aggregates(plan, names, rs.shares + rr.shares)
    got = report("publisher", plan, a).aggregates
    # the plaintext measurement of the spec: sum of v over matched rows with 0 < t1 - t0 < 5
    assert got["all/value"].value / FXP == pytest.approx(2.3, abs=1e-3)
    assert got["all/value"].value == plain["all/value"]
    assert got["all/conversions"].value == plain["all/conversions"] == 2


def test_random_data_matches_plaintext_model_exactly_and_with_noise() -> None:
    rows = _random_rows(400, seed=3)
    s0, s1 = _split(rows, seed=4)
    exact = MeasurePlan(COLS, window=30, cap=500, metrics=("conversions", "value", "lift"),
                        epsilon=1.0, campaigns=(1, 2, 3), exact=True)
    a, b = _mpc(exact, NAMES, s0, s1)
    assert isinstance(a, EngineResult) and isinstance(b, EngineResult), (a, b)
    plain = plain_aggregates(exact, NAMES, rows)
    assert [int(x) for x in a.values or ()] == [plain[g.name] for g in exact.aggregates()]
    assert sum(plain[f"campaign={c}/{g}/users"] for c in (1, 2, 3)
               for g in ("test", "control")) == 300  # dummy rows left out

    noisy = MeasurePlan(COLS, window=30, cap=500, metrics=("conversions", "value"),
                        epsilon=8.0, campaigns=(1, 2, 3))
    a, b = _mpc(noisy, NAMES, s0, s1)
    assert isinstance(a, EngineResult) and isinstance(b, EngineResult), (a, b)
    rep = report("advertiser", noisy, b)
    plain = plain_aggregates(noisy, NAMES, rows)
    for agg in noisy.aggregates():
        got = rep.aggregates[agg.name]
        assert abs(got.value - plain[agg.name]) <= 6 * agg.noise.sd + agg.noise.quantum
        assert got.value % agg.noise.quantum == 0  # released on the lattice only
    assert a.values == b.values


def test_noise_distribution_is_the_centred_binomial() -> None:
    """64 aggregates over empty cells: each release is pure MPC noise, q(Bin(N,1/2) - N/2)."""
    campaigns = tuple(range(100, 164))
    rows = _random_rows(64, seed=9)  # campaigns 1..3: every measured cell is empty
    s0, s1 = _split(rows, seed=10)
    plan = MeasurePlan(COLS, window=30, cap=500, metrics=("conversions",), epsilon=0.5,
                       delta=1e-6, campaigns=campaigns)
    a, _ = _mpc(plan, NAMES, s0, s1)
    assert isinstance(a, EngineResult), a
    noise = np.array(a.values, dtype=float)
    spec = plan.aggregates()[0].noise
    sd = math.sqrt(spec.coins) / 2
    assert len(noise) == 64
    assert np.all(np.abs(noise) <= 5 * sd)
    assert abs(noise.mean()) <= 4 * sd / math.sqrt(64)
    assert 0.5 <= noise.var() / sd**2 <= 1.7  # about 3 standard errors of the variance
    assert len(set(noise.tolist())) > 20  # fresh coins for every aggregate


def test_result_to_one_party_and_plan_mismatch() -> None:
    rows = _random_rows(40, seed=1)
    s0, s1 = _split(rows, seed=2)
    plan = MeasurePlan(COLS, window=30, cap=500, metrics=("conversions",), epsilon=2.0,
                       campaigns=(1,), reveal_to="advertiser")
    a, b = _mpc(plan, NAMES, s0, s1)
    assert isinstance(a, EngineResult) and isinstance(b, EngineResult), (a, b)
    assert a.values is None and b.values is not None
    assert not report("publisher", plan, a).told

    other = MeasurePlan(COLS, window=31, cap=500, metrics=("conversions",), epsilon=2.0,
                        campaigns=(1,))
    a2, b2 = _mpc(plan, NAMES, s0, s1, plans=(plan, other))
    assert isinstance(a2, ParameterMismatch) and isinstance(b2, ParameterMismatch)


def _identities(tmp_path: Path) -> dict[str, Identity]:
    from veil.psi.transport import generate_identity

    return {n: generate_identity(tmp_path / n, n)[0] for n in ("pub", "adv", "mallory")}


def test_link_runs_over_pinned_tls(tmp_path: Path) -> None:
    """The SPU link runs over mutual TLS with the PSI certificates."""
    ids = _identities(tmp_path)
    rows = _random_rows(40, seed=1)
    s0, s1 = _split(rows, seed=2)
    plan = MeasurePlan(COLS, window=30, cap=500, metrics=("conversions",), epsilon=2.0,
                       campaigns=(1,), exact=True)
    good = (LinkTls(ids["pub"].cert, ids["pub"].key, ids["adv"].cert),
            LinkTls(ids["adv"].cert, ids["adv"].key, ids["pub"].cert))
    a, b = _mpc(plan, NAMES, s0, s1, tls=good)
    assert isinstance(a, EngineResult) and isinstance(b, EngineResult), (a, b)
    plain = plain_aggregates(plan, NAMES, rows)
    assert list(a.values or ()) == [plain[g.name] for g in plan.aggregates()]


@pytest.mark.slow
def test_impostor_cannot_link(tmp_path: Path) -> None:
    """A peer without the pinned certificate gets no link, so no shares (about a minute)."""
    from veil.psi.errors import MpcError

    ids = _identities(tmp_path)
    rows = _random_rows(40, seed=1)
    s0, s1 = _split(rows, seed=2)
    plan = MeasurePlan(COLS, window=30, cap=500, metrics=("conversions",), epsilon=2.0,
                       campaigns=(1,), exact=True)
    impostor = (LinkTls(ids["pub"].cert, ids["pub"].key, ids["adv"].cert),
                LinkTls(ids["mallory"].cert, ids["mallory"].key, ids["pub"].cert))
    a, b = _mpc(plan, NAMES, s0, s1, tls=impostor, connect_timeout_s=3)
    assert isinstance(a, MpcError) and isinstance(b, MpcError), (a, b)
    assert "could not link" in str(a) and "stacktrace" not in str(a)


def test_share_file_round_trip(tmp_path: Path) -> None:
    from veil.psi.inputs import write_shares

    shares = np.array([[1, 2**64 - 1], [3, 4]], dtype=np.uint64)
    write_shares(tmp_path / "s.csv", ("sender:a", "receiver:b"), shares, tau=5,
                 zero_columns=("receiver:b",))
    table = read_share_table(tmp_path / "s.csv")
    assert table.names == ("sender:a", "receiver:b") and table.tau == 5
    assert table.zero_columns == ("receiver:b",)
    assert (table.shares == shares).all()
