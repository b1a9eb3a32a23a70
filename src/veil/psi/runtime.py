"""Driving one sans-I/O party over an authenticated channel: lock-step, sender speaks first."""

from __future__ import annotations

import contextlib

from veil.psi.budget import QueryBudget
from veil.psi.errors import (
    FrameTooLarge,
    InternalError,
    PeerAborted,
    PsiError,
    TransportError,
)
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

    The budget is charged (and refused if exhausted) after the peer is authenticated and before
    this party sends anything: the sender before its Hello, the receiver once the sender's
    first message has arrived and is not an Abort. So a receiver whose sender refused to run
    (its budget spent, bad input) is not charged for a run in which nothing was computed.

    On every error except a peer's Abort or a dead channel, an Abort is sent best-effort so the
    peer stops with a clear reason; unexpected exceptions become `InternalError`. Every failure
    raises, and callers write output only on success.
    """
    sender = party.config.role == "sender"
    charged = False

    def charge() -> None:
        nonlocal charged
        if party.config.input_dp and not charged:
            (budget or QueryBudget()).charge(
                channel.peer_fingerprint, dataset, party.config.queries)
        charged = True

    try:
        if sender:
            charge()
        out: Message | None = party.start()
        while out is not None:
            if sender:
                channel.send(out.to_parts())
                out = None  # drop our (possibly large) message before receiving the peer's
                incoming = decode(channel.recv(party.max_incoming))
            else:
                incoming = decode(channel.recv(party.max_incoming))
                if not isinstance(incoming, Abort):  # on an Abort, just stop (below)
                    charge()
                    channel.send(out.to_parts())
            out = party.receive(incoming)
        return party.result
    except PeerAborted:
        raise
    except FrameTooLarge as exc:
        _abort(channel, exc)
        raise
    except TransportError:
        raise
    except PsiError as exc:
        _abort(channel, exc)
        raise
    except Exception as exc:
        err = InternalError(f"unexpected {type(exc).__name__}: {exc}")
        _abort(channel, err)
        raise err from exc
    finally:
        channel.close()


def _abort(channel: Channel, exc: PsiError) -> None:
    with contextlib.suppress(PsiError, OSError):
        channel.send(Abort(f"{type(exc).__name__}: {exc}"[:300]).to_parts())
