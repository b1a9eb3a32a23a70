"""veil.privacy: DP mechanisms (OpenDP), budget accounting and DP synthetic data.

Imports libraries only. ``veil.privacy.synthetic`` is imported lazily (it pulls in jax/mbi).
"""

from veil.privacy.accounting import Budget, BudgetPolicy, ChargeDecision, check_charge, compose
from veil.privacy.errors import (
    BudgetPolicyError,
    CostMismatchError,
    InvalidParameterError,
    PrivacyError,
    SyntheticDataError,
    UnknownMechanismError,
)
from veil.privacy.mechanisms import (
    DPResult,
    count,
    grouped_count,
    grouped_sum,
    histogram,
    mean,
    quantile,
    sum,
    verify_cost,
)

__all__ = [
    "Budget",
    "BudgetPolicy",
    "BudgetPolicyError",
    "ChargeDecision",
    "CostMismatchError",
    "DPResult",
    "InvalidParameterError",
    "PrivacyError",
    "SyntheticDataError",
    "UnknownMechanismError",
    "check_charge",
    "compose",
    "count",
    "grouped_count",
    "grouped_sum",
    "histogram",
    "mean",
    "quantile",
    "sum",
    "verify_cost",
]
