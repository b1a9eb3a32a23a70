"""Driving one sans-I/O party over an authenticated channel: lock-step, sender speaks first."""

from __future__ import annotations

import contextlib

from veil.psi.budget import QueryBudget
from veil.psi.errors import BudgetExceeded, InputError, ProtocolError, PsiError
from veil.psi.messages import Abort, Message, decode
from veil.psi.session import PsiParty, PsiResult
from veil.psi.transport import Channel


def run_party(
    party: PsiParty,
    channel: Channel,
    *,
    dataset: str,
    budget: QueryBudget | None = None,
) -> PsiResult:
    """Charge the query budget, then run the protocol to completion over `channel`.

    The budget is charged (and refused if exhausted) after the peer is authenticated but before
    any protocol data is sent. On a local error an Abort is sent best-effort so the peer stops
    with a clear reason; every failure raises, and callers write output only on success.
    """
    sender = party.config.role == "sender"
    try:
        if party.config.input_dp:
            (budget or QueryBudget()).charge(
                channel.peer_fingerprint, dataset, party.config.queries)
        out: Message | None = party.start()
        while out is not None:
            if sender:
                channel.send(out.to_parts())
                out = None  # drop our (possibly large) message before receiving the peer's
                frame = channel.recv(party.max_incoming)
            else:
                frame = channel.recv(party.max_incoming)
                channel.send(out.to_parts())
            out = party.receive(decode(frame))
        return party.result
    except (ProtocolError, InputError, BudgetExceeded) as exc:
        if not str(exc).startswith("peer aborted"):
            _abort(channel, f"{type(exc).__name__}: {exc}"[:300])
        raise
    except PsiError:
        raise
    finally:
        channel.close()


def _abort(channel: Channel, reason: str) -> None:
    with contextlib.suppress(PsiError):
        channel.send(Abort(reason).to_parts())
