"""Exception types of the privacy part; every failure refuses rather than degrading silently."""

from __future__ import annotations

from veil.errors import VeilError  # the one root of the tree (a leaf module, no imports)


class PrivacyError(VeilError):
    """Base class of every error raised by veil.privacy."""

    status_hint = 422


class InvalidParameterError(PrivacyError, ValueError):
    """A mechanism argument is malformed: bounds, epsilon, delta, categories, keys, options."""


class UnknownMechanismError(PrivacyError, ValueError):
    """A DP output names a mechanism Veil does not implement."""


class CostMismatchError(PrivacyError):
    """A DP output declares a privacy cost that its mechanism does not spend."""


class BudgetPolicyError(PrivacyError, ValueError):
    """A budget policy document or a cost fed to the accountant is invalid."""


class SyntheticDataError(PrivacyError):
    """The DP synthetic-data fit cannot proceed (unsupported column, unusable options)."""
