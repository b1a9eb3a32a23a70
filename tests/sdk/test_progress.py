"""Job progress as a pure function of the job record (what `veil job wait` prints)."""

from __future__ import annotations

from veil.sdk.progress import progress, progress_line


def _job(state: str, **kw: object) -> dict:
    job = {"id": "j1", "state": state, "digest": "sha256:d",
           "inputs": ["hospital/visits", "insurer/claims"], "approvals": [], "outputs": [],
           "transitions": [], "result": None, "reason": None}
    return {**job, **kw}


def test_who_still_has_to_approve() -> None:
    job = _job("pending_approval", approvals=[
        {"party": "hospital", "decision": "approve", "digest": "sha256:d"},
        {"party": "insurer", "decision": "approve", "digest": "sha256:old"}])
    assert progress(job)["awaiting_approval"] == ["insurer"]
    assert "waiting for approval by insurer" in progress_line(job)


def test_time_per_state_and_phase() -> None:
    moves = [{"to": "submitted", "at": "2026-01-01T10:00:00+00:00"},
             {"to": "pending_approval", "at": "2026-01-01T10:00:00.5+00:00"},
             {"to": "approved", "at": "2026-01-01T10:00:02+00:00"},
             {"to": "running", "at": "2026-01-01T10:00:02.25+00:00"},
             {"to": "output_review", "at": "2026-01-01T10:00:07+00:00"}]
    job = _job("output_review", transitions=moves,
               result={"duration_s": 3.5, "sandbox_start_s": 0.8, "executor": {"seconds": 0.1}},
               outputs=[{"name": "a", "status": "released"},
                        {"name": "b", "status": "pending_review"}])
    info = progress(job)
    assert info["states_s"] == {"submitted": 0.5, "pending_approval": 1.5, "approved": 0.25,
                                "running": 4.75}
    assert info["phases_s"] == {"sandbox_s": 3.5, "sandbox_start_s": 0.8, "executor_s": 0.1}
    assert info["awaiting_review"] == ["b"]
    line = progress_line(job)
    assert "running 4.75 s" in line and "sandbox 3.50 s" in line


def test_a_failure_carries_its_reason() -> None:
    job = _job("failed", reason="notebook raised NameError in cell 2, line 1: name 'x' is not "
                                "defined")
    assert progress(job)["reason"].endswith("is not defined")
    assert progress_line(job).startswith("job j1: failed — notebook raised NameError")
