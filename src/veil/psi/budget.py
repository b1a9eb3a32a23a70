"""Per-counterparty, per-dataset budgets, persisted under $VEIL_HOME/psi/: the query budget
(T PSI runs, budget.json) and, beside it, the measurement budget (total ε of the noisy PPAM
aggregates released by `veil psi measure`, measure_budget.json).

A run is charged before this party sends any protocol data (the receiver: once the sender's
first message has arrived and is not an Abort, so a sender's refusal costs the receiver
nothing), and stays charged even if the run then fails: the peer may already have learned
something, so failing closed means counting it.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from veil.psi.errors import BudgetExceeded, PsiError


def veil_home() -> Path:
    """The state folder, as ``Settings`` defines it (the one place that reads $VEIL_HOME)."""
    from veil.settings import default_home

    return default_home()


class _BudgetFile:
    """A JSON file of entries keyed by (counterparty, dataset); writes are atomic and locked."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"version": 1, "entries": {}}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data.get("entries"), dict):
                raise ValueError("no entries")
            return data
        except (ValueError, OSError) as exc:
            raise PsiError(
                f"budget file {self.path} is unreadable; refusing to run: {exc}") from None

    @staticmethod
    def _key(counterparty: str, dataset: str) -> str:
        return f"{counterparty}|{dataset}"

    def _write(self, data: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".budget-")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class QueryBudget(_BudgetFile):
    """Counts spent runs per (counterparty fingerprint, dataset)."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or veil_home() / "psi" / "budget.json")

    def spent(self, counterparty: str, dataset: str) -> int:
        entry = self._load()["entries"].get(self._key(counterparty, dataset), {})
        return int(entry.get("spent", 0))

    def charge(self, counterparty: str, dataset: str, limit: int) -> int:
        """Spend one run of `limit`; BudgetExceeded (nothing written) if all are spent."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            key = self._key(counterparty, dataset)
            entry = data["entries"].setdefault(key, {"spent": 0})
            spent = int(entry["spent"])
            if spent >= limit:
                raise BudgetExceeded(
                    f"query budget exhausted: {spent} of {limit} runs already spent for this "
                    "counterparty and dataset")
            entry["spent"] = spent + 1
            entry["limit"] = limit
            self._write(data)
            return spent + 1


class MeasurementBudget(_BudgetFile):
    """Total ε of released PPAM aggregates per (counterparty fingerprint, dataset).

    Charged before a measurement starts and kept if it fails (fail closed), like the query
    budget; the two are separate because a PSI run and a measurement release different things.
    """

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or veil_home() / "psi" / "measure_budget.json")

    def spent(self, counterparty: str, dataset: str) -> float:
        entry = self._load()["entries"].get(self._key(counterparty, dataset), {})
        return float(entry.get("epsilon", 0.0))

    def charge(self, counterparty: str, dataset: str, epsilon: float, limit: float) -> float:
        """Add `epsilon` to the spend; BudgetExceeded (nothing written) past `limit`."""
        if not (epsilon > 0 and limit > 0):
            raise PsiError("epsilon and the budget limit must be > 0")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load()
            entry = data["entries"].setdefault(self._key(counterparty, dataset), {})
            spent = float(entry.get("epsilon", 0.0))
            if spent + epsilon > limit + 1e-12:
                raise BudgetExceeded(
                    f"measurement budget exhausted: epsilon {spent:g} of {limit:g} already spent "
                    f"for this counterparty and dataset; this measurement needs {epsilon:g}")
            entry["epsilon"] = spent + epsilon
            entry["limit"] = limit
            entry["runs"] = int(entry.get("runs", 0)) + 1
            self._write(data)
            return spent + epsilon
