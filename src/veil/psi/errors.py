"""Exception types of `veil.psi`: every failure a caller can act on has its own class."""

from __future__ import annotations


class PsiError(Exception):
    """Base class of every error raised by `veil.psi`."""


class GroupError(PsiError):
    """A group operation failed (missing library, invalid point or scalar encoding)."""


class InputError(PsiError):
    """A party's own input is unusable (duplicate IDs, bad feature values, wrong columns)."""


class ProtocolError(PsiError):
    """The peer sent something the protocol does not allow (malformed or out-of-order message)."""


class ParameterMismatch(ProtocolError):
    """The two parties' parameters are inconsistent; the run is aborted before any data moves."""


class BudgetExceeded(PsiError):
    """Running would exceed the query budget T for this counterparty and dataset."""


class TransportError(PsiError):
    """The connection failed: timeout, oversized frame or the peer went away."""


class PeerDisconnected(TransportError):
    """The peer closed the connection before the protocol finished."""


class AuthenticationError(TransportError):
    """The peer did not present the pinned certificate."""
