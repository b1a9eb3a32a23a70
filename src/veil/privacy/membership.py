"""Membership-inference audit of a model, run by trusted code that holds the full data.

A non-DP model can memorise its training rows; a reviewer should see how much before it
leaves. Two attacks, each scored as AUC, TPR at 1% FPR and membership advantage
(max TPR - FPR, Yeom et al.), over members (rows the model was trained on) and non-members:

* loss threshold: a member's loss tends to be lower;
* LiRA (Carlini et al. 2022, online, fixed variance): shadow models of the same class
  (``sklearn.base.clone``) are trained on random halves of members and non-members pooled;
  for each row, the target model's logit-scaled confidence is compared with the Gaussians of
  the shadows that did and did not see it.

The advantage the gate compares with a policy's ``max_mia_advantage`` is the larger of the
two. The audit is a lower bound on leakage (a stronger attack may do better), which is why
every model still goes to provider review.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["MembershipAudit", "audit_membership"]

_EPS = 1e-6


@dataclass(frozen=True)
class MembershipAudit:
    members: int
    non_members: int
    shadows: int
    loss_auc: float
    loss_tpr_at_1pct_fpr: float
    loss_advantage: float
    lira_auc: float | None
    lira_tpr_at_1pct_fpr: float | None
    lira_advantage: float | None

    @property
    def advantage(self) -> float:
        return max(self.loss_advantage, self.lira_advantage or 0.0)

    def meta(self) -> dict[str, Any]:
        return {**{k: (round(v, 4) if isinstance(v, float) else v)
                   for k, v in asdict(self).items()}, "advantage": round(self.advantage, 4)}


def audit_membership(model: Any, x_in: np.ndarray, y_in: np.ndarray, x_out: np.ndarray,
                     y_out: np.ndarray, *, shadows: int = 8, max_rows: int = 2000,
                     seed: int = 0) -> MembershipAudit:
    """Attack ``model`` with members ``x_in`` and non-members ``x_out`` (see the docstring).

    At most ``max_rows`` of each side are used (the audit's time grows with shadows x rows);
    ``shadows=0`` runs the loss attack only.
    """
    rng = np.random.default_rng(seed)
    x_in, y_in = _sample(rng, x_in, y_in, max_rows)
    x_out, y_out = _sample(rng, x_out, y_out, max_rows)
    if len(y_in) < 2 or len(y_out) < 2:
        raise ValueError("the audit needs at least two members and two non-members")
    x = np.concatenate([x_in, x_out])
    y = np.concatenate([y_in, y_out])
    member = np.concatenate([np.ones(len(y_in), bool), np.zeros(len(y_out), bool)])
    classifier = hasattr(model, "predict_proba")
    target = _confidence(model, x, y, classifier)
    loss = _metrics(target, member)  # high confidence = low loss = member
    lira: tuple[float, float, float] | None = None
    if shadows > 0:
        lira = _metrics(_lira(model, x, y, target, shadows, rng, classifier), member)
    return MembershipAudit(len(y_in), len(y_out), shadows, *loss,
                           *(lira if lira else (None, None, None)))


def _sample(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
            n: int) -> tuple[np.ndarray, np.ndarray]:
    if len(y) <= n:
        return np.asarray(x, float), np.asarray(y)
    pick = rng.choice(len(y), n, replace=False)
    return np.asarray(x, float)[pick], np.asarray(y)[pick]


def _confidence(model: Any, x: np.ndarray, y: np.ndarray, classifier: bool) -> np.ndarray:
    """Logit of the probability of the true label (classifiers) or minus squared error."""
    if classifier:
        proba = model.predict_proba(x)
        classes = list(model.classes_)
        index = np.array([classes.index(v) if v in classes else -1 for v in y])
        p = np.where(index >= 0, proba[np.arange(len(y)), np.maximum(index, 0)], 0.0)
        p = np.clip(p, _EPS, 1 - _EPS)
        return np.asarray(np.log(p) - np.log1p(-p), dtype=float)
    return np.asarray(-(np.asarray(model.predict(x), float) - y.astype(float)) ** 2)


def _lira(model: Any, x: np.ndarray, y: np.ndarray, target: np.ndarray, shadows: int,
          rng: np.random.Generator, classifier: bool) -> np.ndarray:
    from sklearn.base import clone

    conf = np.empty((shadows, len(y)))
    seen = np.zeros((shadows, len(y)), bool)
    for s in range(shadows):
        half = rng.random(len(y)) < 0.5
        if classifier and len(np.unique(y[half])) < 2:
            half = ~half
        shadow = clone(model).fit(x[half], y[half])
        conf[s], seen[s] = _confidence(shadow, x, y, classifier), half
    score = np.zeros(len(y))
    var = max(float(np.var(conf)), _EPS)  # fixed variance: robust with few shadows
    for i in range(len(y)):
        ins, outs = conf[seen[:, i], i], conf[~seen[:, i], i]
        mu_in = ins.mean() if len(ins) else conf[:, i].max()
        mu_out = outs.mean() if len(outs) else conf[:, i].min()
        var_in = max(float(np.var(ins)), _EPS) if len(ins) > 2 else var
        var_out = max(float(np.var(outs)), _EPS) if len(outs) > 2 else var
        score[i] = (-(target[i] - mu_in) ** 2 / (2 * var_in) - 0.5 * np.log(var_in)
                    + (target[i] - mu_out) ** 2 / (2 * var_out) + 0.5 * np.log(var_out))
    return score


def _metrics(score: np.ndarray, member: np.ndarray) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(member, score)
    at_1pct = float(np.max(tpr[fpr <= 0.01])) if np.any(fpr <= 0.01) else 0.0
    return float(roc_auc_score(member, score)), at_1pct, float(np.max(tpr - fpr))
