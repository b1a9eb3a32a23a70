"""A job's progress as a researcher reads it: who still has to act, and where time went.

Pure over the job record the API returns (``schemas.Job``), so the CLI's ``veil job wait``,
the ``%veil wait`` magic and the JupyterLab jobs panel say the same thing.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Any

__all__ = ["FINAL_STATES", "WAIT_STATES", "progress", "progress_line"]

FINAL_STATES = frozenset({"released", "failed", "rejected", "cancelled"})
# Where a consumer's wait ends by default: a final state, or outputs waiting for providers.
WAIT_STATES = FINAL_STATES | {"output_review"}


def progress(job: dict[str, Any]) -> dict[str, Any]:
    """State, parties still to approve, outputs still in review, time per state and phase."""
    approved = {a["party"] for a in job.get("approvals", []) if a.get("decision") == "approve"
                and a.get("digest") == job.get("digest")}
    providers = sorted({name.split("/", 1)[0] for name in job.get("inputs", [])})
    out: dict[str, Any] = {"state": job["state"]}
    if job["state"] == "pending_approval":
        out["awaiting_approval"] = [p for p in providers if p not in approved]
    if job["state"] == "output_review":
        out["awaiting_review"] = [o["name"] for o in job.get("outputs", [])
                                  if o.get("status") == "pending_review"]
    out["states_s"] = _time_in_states(job.get("transitions", []))
    result = job.get("result") or {}
    phases = {"sandbox_s": result.get("duration_s"),
              "sandbox_start_s": result.get("sandbox_start_s"),
              "executor_s": (result.get("executor") or {}).get("seconds")}
    out["phases_s"] = {k: v for k, v in phases.items() if isinstance(v, int | float)}
    if job["state"] in ("failed", "rejected", "cancelled"):
        out["reason"] = job.get("reason")
    return out


def progress_line(job: dict[str, Any]) -> str:
    """One line for a terminal."""
    info = progress(job)
    parts = [f"job {job['id']}: {info['state']}"]
    if info.get("awaiting_approval"):
        parts.append("waiting for approval by " + ", ".join(info["awaiting_approval"]))
    if info.get("awaiting_review"):
        parts.append("outputs waiting for provider review: " + ", ".join(info["awaiting_review"]))
    if info.get("reason"):
        parts.append(str(info["reason"]))
    if job["state"] in WAIT_STATES:
        timed = [f"{state} {s:.2f} s" for state, s in info["states_s"].items()]
        timed += [f"{name.removesuffix('_s')} {s:.2f} s" for name, s in info["phases_s"].items()]
        if timed:
            parts.append("time: " + ", ".join(timed))
    return " — ".join(parts)


def _time_in_states(transitions: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in each state the job has left (from the persisted transitions)."""
    spent: dict[str, float] = {}
    for before, after in pairwise(transitions):
        try:
            seconds = (datetime.fromisoformat(after["at"])
                       - datetime.fromisoformat(before["at"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            continue
        spent[before["to"]] = round(spent.get(before["to"], 0.0) + seconds, 3)
    return spent
