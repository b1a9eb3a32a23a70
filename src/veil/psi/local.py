"""In-memory transport: drive two sans-I/O parties in one process through the byte codec."""

from __future__ import annotations

from veil.psi.errors import ProtocolError
from veil.psi.messages import Message, decode
from veil.psi.session import PsiParty, PsiResult


def run_local(sender: PsiParty, receiver: PsiParty) -> tuple[PsiResult, PsiResult]:
    """Run both parties to completion; every message goes through encode/decode and size limits."""
    out_s: Message | None = sender.start()
    out_r: Message | None = receiver.start()
    while out_s is not None and out_r is not None:
        frame_s, frame_r = out_s.to_bytes(), out_r.to_bytes()
        if len(frame_s) > receiver.max_incoming or len(frame_r) > sender.max_incoming:
            raise ProtocolError("frame larger than the protocol allows at this step")
        out_s, out_r = sender.receive(decode(frame_r)), receiver.receive(decode(frame_s))
    if (out_s is None) != (out_r is None):
        raise ProtocolError("parties finished at different steps")
    return sender.result, receiver.result
