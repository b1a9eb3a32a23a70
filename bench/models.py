"""Models: DP training accuracy vs epsilon, training time, and membership-audit time.

Run: nice -n 10 .venv/bin/python bench/models.py [--rows 10000] [--seeds 3]
                                                 [--only linear|mlp|audit]
Prints, for breast cancer (569 rows, 30 features) and a synthetic logistic problem, the held-out
accuracy of the non-DP baseline (same publicly scaled features) and of the DP model at each
epsilon (mean over seeds), the DP training time, and the audit's advantage and time for a deep
tree and for the DP model. Then DP-SGD of a user-defined MLP (a JAX loss exported with
jax.export, trained by ``veil.privacy.dpsgd``): accuracy vs epsilon on breast cancer against
scikit-learn's non-DP MLP of the same shape, and the time per epoch at 10^4 and 10^5 rows.
"""

from __future__ import annotations

import argparse
import base64
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from veil.privacy import plans as P
from veil.privacy.membership import audit_membership
from veil.privacy.training import design, score

EPSILONS = (0.5, 1.0, 3.0, 8.0)


def _plan(features: list[str], bounds: dict[str, tuple[float, float]],
          epsilon: float) -> P.PlanDocument:
    return P.parse_plan({"query": {
        "kind": "train", "relation": {"sources": ["b/data"]}, "model": "logistic_regression",
        "features": features, "label": "y", "bounds": {k: list(v) for k, v in bounds.items()},
        "epsilon": epsilon, "delta": 1e-5}})


def _synthetic(rows: int, seed: int = 0) -> tuple[pd.DataFrame, dict[str, tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (rows, 10))
    w = rng.normal(0, 1.5, 10)
    y = (x @ w + rng.logistic(0, 0.5, rows) > 0).astype(int)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)]).assign(y=y)
    return frame, {f"x{i}": (-1.0, 1.0) for i in range(10)}


def _cancer() -> tuple[pd.DataFrame, dict[str, tuple[float, float]]]:
    frame = load_breast_cancer(as_frame=True).frame.rename(
        columns=lambda c: c.replace(" ", "_")).rename(columns={"target": "y"})
    return frame, {c: (float(frame[c].min()), float(frame[c].max()))
                   for c in frame.columns if c != "y"}


def table(name: str, frame: pd.DataFrame, bounds: dict[str, tuple[float, float]],
          seeds: int) -> None:
    features = list(bounds)
    rules = {"b/data": P.SourceRules("b/data")}
    acc: dict[float, list[float]] = {e: [] for e in EPSILONS}
    secs: dict[float, list[float]] = {e: [] for e in EPSILONS}
    base: list[float] = []
    for seed in range(seeds):
        train, test = train_test_split(frame, test_size=0.3, random_state=seed)
        query = _plan(features, bounds, 1.0).query
        rows, test_rows = design(query, train), design(query, test)  # type: ignore[arg-type]
        fit = LogisticRegression(max_iter=2000).fit(rows[:, :-1], rows[:, -1])
        base.append(fit.score(test_rows[:, :-1], test_rows[:, -1]))
        for eps in EPSILONS:
            t0 = time.perf_counter()
            model = P.evaluate(_plan(features, bounds, eps), {"b/data": train}, rules)
            secs[eps].append(time.perf_counter() - t0)
            acc[eps].append(score(model, test))
    print(f"\n{name}: {len(frame)} rows, {len(features)} features, {seeds} seeds, delta 1e-5")
    print(f"  non-DP baseline accuracy  {np.mean(base):.3f}")
    print("  epsilon   DP accuracy (min-max)     gap    train s")
    for eps in EPSILONS:
        print(f"  {eps:7.1f}   {np.mean(acc[eps]):.3f} ({min(acc[eps]):.3f}-{max(acc[eps]):.3f})"
              f"      {np.mean(base) - np.mean(acc[eps]):+.3f}   {np.mean(secs[eps]):.2f}")


def audits() -> None:
    frame, bounds = _cancer()
    features = list(bounds)
    members, others = frame.iloc[::2], frame.iloc[1::2]
    xs, ys = members[features].to_numpy(), members.y.to_numpy()
    xo, yo = others[features].to_numpy(), others.y.to_numpy()
    print("\nmembership audit on breast cancer (285 members, 284 non-members, 8 shadows)")
    print("  model                 advantage  loss AUC  LiRA AUC  LiRA TPR@1%FPR  seconds")
    tree = DecisionTreeClassifier(random_state=0).fit(xs, ys)
    noisy = np.random.default_rng(0).integers(0, 2, len(ys))
    coin = DecisionTreeClassifier(random_state=0).fit(xs, noisy)
    dp_model = P.evaluate(_plan(features, bounds, 1.0), {"b/data": members},
                          {"b/data": P.SourceRules("b/data")}).to_sklearn()
    for label, model, y_in, y_out in (
            ("deep tree", tree, ys, yo), ("deep tree, coin labels", coin, noisy,
                                          np.random.default_rng(1).integers(0, 2, len(yo))),
            ("DP logistic, eps 1", dp_model, ys, yo)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = audit_membership(model, xs, y_in, xo, y_out, shadows=8)
        print(f"  {label:22s} {a.advantage:9.3f}  {a.loss_auc:8.3f}  {a.lira_auc or 0:8.3f}"
              f"  {a.lira_tpr_at_1pct_fpr or 0:14.3f}  {time.perf_counter() - t0:7.2f}")


# --------------------------------------------------------------------------- DP-SGD MLP

SGD_EPSILONS = (1.0, 3.0, 8.0)
HIDDEN = 16


def _mlp_loss(p: Any, x: Any, y: Any) -> Any:
    import jax.numpy as jnp

    z = (jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[0]
    return jnp.logaddexp(0.0, z) - y * z


def _mlp_logit(p: Any, x: Any) -> Any:
    import jax.numpy as jnp

    return (jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])[0]


def _sgd_plan(bounds: dict[str, tuple[float, float]], **dp: Any) -> P.PlanDocument:
    from veil.privacy import dpsgd

    n = len(bounds)
    rng = np.random.default_rng(0)
    init = {"w1": rng.normal(0, 0.3, (n, HIDDEN)).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "w2": rng.normal(0, 0.3, (HIDDEN, 1)).astype(np.float32),
            "b2": np.zeros(1, np.float32)}
    enc = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return P.parse_plan({"query": {
        "kind": "dpsgd", "relation": {"sources": ["b/data"]}, "features": list(bounds),
        "label": "y", "bounds": {k: list(v) for k, v in bounds.items()},
        "loss": enc(dpsgd.export_loss(_mlp_loss, init, n)),
        "predict": enc(dpsgd.export_predict(_mlp_logit, init, n)),
        "params": enc(dpsgd.dump_params(init)), "delta": 1e-5, "clip": 1.0, **dp}})


def mlp_table(seeds: int) -> None:
    """Breast cancer: DP-SGD MLP vs scikit-learn's non-DP MLP of the same shape."""
    from sklearn.neural_network import MLPClassifier

    from veil.privacy import dpsgd

    frame, bounds = _cancer()
    rules = {"b/data": P.SourceRules("b/data")}
    dp = {"sampling_rate": 0.25, "batch_size": 100, "epochs": 30, "learning_rate": 0.05}
    acc: dict[float, list[float]] = {e: [] for e in SGD_EPSILONS}
    secs: dict[float, list[float]] = {e: [] for e in SGD_EPSILONS}
    base: list[float] = []
    for seed in range(seeds):
        train, test = train_test_split(frame, test_size=0.3, random_state=seed,
                                       stratify=frame.y)
        for eps in SGD_EPSILONS:
            doc = _sgd_plan(bounds, epsilon=eps, **dp)
            query = doc.query
            assert isinstance(query, P.SGDQuery)
            t0 = time.perf_counter()
            model = P.evaluate(doc, {"b/data": train}, rules)
            secs[eps].append(time.perf_counter() - t0)
            x, y, _ = dpsgd.design(query, test)
            acc[eps].append(dpsgd.view_metrics(query)(model.params, x, y)[1] or 0.0)
        x_tr, y_tr, _ = dpsgd.design(query, train)
        base.append(MLPClassifier((HIDDEN,), activation="tanh", max_iter=2000,
                                  random_state=seed).fit(x_tr, y_tr).score(x, y))
    steps = dpsgd.steps_for(dp["sampling_rate"], dp["epochs"])
    print(f"\nDP-SGD MLP (30-{HIDDEN}-1 tanh, exported loss) on breast cancer: {seeds} seeds, "
          f"q {dp['sampling_rate']}, {dp['epochs']} epochs = {steps} steps, clip 1, delta 1e-5")
    print(f"  non-DP baseline (sklearn MLPClassifier, same shape)  {np.mean(base):.3f}")
    print("  epsilon   DP accuracy (min-max)     gap    train s")
    for eps in SGD_EPSILONS:
        print(f"  {eps:7.1f}   {np.mean(acc[eps]):.3f} ({min(acc[eps]):.3f}-{max(acc[eps]):.3f})"
              f"      {np.mean(base) - np.mean(acc[eps]):+.3f}   {np.mean(secs[eps]):.2f}")


def mlp_timing(rows_list: tuple[int, ...] = (10_000, 100_000), batch: int = 256) -> None:
    """Time per epoch of DP-SGD on the synthetic problem (10 features), one epoch each."""
    from veil.privacy import dpsgd

    print(f"\nDP-SGD MLP (10-{HIDDEN}-1) time per epoch, expected batch {batch}, noise 1.0")
    print("  rows      steps/epoch  s/epoch  ms/step  of which noise ms/step  epsilon(1 epoch)")
    noise = dpsgd._noise(10 * HIDDEN + 2 * HIDDEN + 1, 1.0)
    zeros = [0.0] * (10 * HIDDEN + 2 * HIDDEN + 1)
    t0 = time.perf_counter()
    for _ in range(20):
        noise(zeros)
    noise_ms = (time.perf_counter() - t0) / 20 * 1000
    for rows in rows_list:
        frame, bounds = _synthetic(rows)
        q = batch / rows
        doc = _sgd_plan(bounds, noise_multiplier=1.0, sampling_rate=q, batch_size=batch,
                        epochs=1, learning_rate=0.01)
        t0 = time.perf_counter()
        model = P.evaluate(doc, {"b/data": frame}, {"b/data": P.SourceRules("b/data")})
        secs = time.perf_counter() - t0
        steps = model.meta["steps"]
        print(f"  {rows:<9d} {steps:11d}  {secs:7.2f}  {secs / steps * 1000:7.1f}  "
              f"{noise_ms:22.1f}  {model.epsilon:16.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=("linear", "mlp", "audit"))
    args = parser.parse_args()
    if args.only in (None, "linear"):
        table("breast cancer", *_cancer(), args.seeds)
        table("synthetic logistic", *_synthetic(args.rows), args.seeds)
    if args.only in (None, "audit"):
        audits()
    if args.only in (None, "mlp"):
        warnings.filterwarnings("ignore", message="optax.global_norm is deprecated")
        mlp_table(args.seeds)
        mlp_timing()


if __name__ == "__main__":
    main()
