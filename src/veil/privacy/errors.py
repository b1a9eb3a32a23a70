"""Exception types of the privacy part; every failure refuses rather than degrading silently."""

from __future__ import annotations


class PrivacyError(Exception):
    """Base class of every error raised by veil.privacy."""


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
