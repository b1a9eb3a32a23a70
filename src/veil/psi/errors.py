"""Exception types of `veil.psi`: every failure a caller can act on has its own class.

As in h11 (`LocalProtocolError` vs `RemoteProtocolError`), the class says whose fault it is:
our input or policy, our own bug, the peer, or the wire. The whole tree, under one root::

    PsiError                     every error raised by veil.psi
    ├── InputError               our own input or configuration is unusable (local)
    │   └── AuditError           a leakage-audit parameter is out of range (veil.psi.audit)
    ├── BudgetExceeded           our query budget for this peer and dataset is spent (local)
    ├── GroupError               a group operation failed (missing library, bad encoding)
    ├── InternalError            an unexpected exception inside our protocol code (a bug)
    ├── ProtocolError            the peer broke the protocol (remote)
    │   ├── ParameterMismatch    the two parties' parameters disagree
    │   ├── PeerLimitExceeded    the peer announced sizes above our policy limits
    │   ├── PeerAborted          the peer stopped the run and sent an Abort with its reason
    │   └── MalformedPaillierData  invalid Paillier key or ciphertexts (also a PaillierError)
    ├── PaillierError            veil.psi.paillier: PlaintextRangeError, KeyMismatchError, …
    ├── MpcError                 the PPAM MPC engine (SPU, its own process) failed or is missing
    └── TransportError           the connection failed (timeout, TLS error)
        ├── PeerDisconnected     the peer went away before the protocol finished
        ├── AuthenticationError  the peer did not present the pinned certificate
        └── FrameTooLarge        the peer announced a frame above the limit for this step

`run_party` sends an Abort to the peer for every local error and every `ProtocolError` except
`PeerAborted` (the peer already knows), and for `FrameTooLarge`; other transport errors mean
the channel is gone.
"""

from __future__ import annotations


class PsiError(Exception):
    """Base class of every error raised by `veil.psi`."""


class GroupError(PsiError):
    """A group operation failed (missing library, invalid point or scalar encoding)."""


class InputError(PsiError):
    """A party's own input is unusable (duplicate IDs, bad feature values, wrong columns)."""


class AuditError(InputError):
    """A leakage-audit parameter is out of range or inconsistent; the message names it."""


class InternalError(PsiError):
    """An unexpected exception inside this party's protocol code: a bug on our side.

    Raised from the original exception (see `__cause__`) so that it still stops the run
    cleanly: the peer gets an Abort and the CLI prints one line instead of a traceback.
    """


class ProtocolError(PsiError):
    """The peer sent something the protocol does not allow (malformed or out-of-order message)."""


class ParameterMismatch(ProtocolError):
    """The two parties' parameters are inconsistent; the run is aborted before any data moves."""


class PeerLimitExceeded(ProtocolError):
    """The peer announced more rows than this party's policy allows (`PsiConfig.max_peer_rows`)."""


class PeerAborted(ProtocolError):
    """The peer stopped the run and told us why (an Abort message); `reason` is its text."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"peer aborted: {reason}")
        self.reason = reason


class BudgetExceeded(PsiError):
    """Running would exceed the query budget T for this counterparty and dataset."""


class MpcError(PsiError):
    """The MPC engine of `veil psi measure` (an SPU process per party) failed or is missing."""


class TransportError(PsiError):
    """The connection failed: timeout, oversized frame or the peer went away."""


class PeerDisconnected(TransportError):
    """The peer closed the connection before the protocol finished."""


class AuthenticationError(TransportError):
    """The peer did not present the pinned certificate."""


class FrameTooLarge(TransportError):
    """The peer announced a frame larger than this step (or `Channel.max_frame`) allows."""
