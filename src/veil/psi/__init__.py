"""veil.psi: DPCA-PSI — multi-ID ECDH-PSI with two-party DP dummies and secret-shared payloads.

Sans-I/O core: `PsiParty(PsiConfig, PartyData)` driven by `run_local` (in memory) or
`run_party` over a TLS `Channel` (`connect` / `Listener`). See README.md in this folder.
"""

from __future__ import annotations

from veil.psi.budget import QueryBudget
from veil.psi.errors import (
    AuthenticationError,
    BudgetExceeded,
    FrameTooLarge,
    GroupError,
    InputError,
    InternalError,
    ParameterMismatch,
    PeerAborted,
    PeerDisconnected,
    PeerLimitExceeded,
    ProtocolError,
    PsiError,
    TransportError,
)
from veil.psi.groups import Group, Scalar, get_group
from veil.psi.inputs import read_party_data, reveal, write_shares
from veil.psi.local import run_local
from veil.psi.runtime import run_party
from veil.psi.session import PartyData, PsiConfig, PsiParty, PsiResult
from veil.psi.transport import Channel, Identity, Listener, connect, generate_identity

__all__ = [
    "AuthenticationError", "BudgetExceeded", "Channel", "FrameTooLarge", "Group", "GroupError",
    "Identity", "InputError", "InternalError", "Listener", "ParameterMismatch", "PartyData",
    "PeerAborted", "PeerDisconnected", "PeerLimitExceeded",
    "ProtocolError", "PsiConfig", "PsiError", "PsiParty", "PsiResult", "QueryBudget", "Scalar",
    "TransportError", "connect", "generate_identity", "get_group", "read_party_data", "reveal",
    "run_local", "run_party", "write_shares",
]
