"""The trusted release executor: evaluates a job's declared plans on the full data.

The workload only writes plans (``veil.publish(name, veil.dp.mean(...))``). After it has
exited, the worker runs this module in a process of its own (``python -I -m
veil.release.executor``): code of the measured runtime — its digest is in the launch event log
(:func:`code_digest`) — never of the bundle. It fetches each input's data key through the job's
key agent, exactly as the workload did (broker nonce, evidence, verifier, provider policy),
evaluates every plan with ``veil.privacy.plans`` and OpenDP, writes the results and reports
their cost from OpenDP's privacy map. The host side (:func:`execute_plans`) then replaces each
plan in the output manifest with the executor's result, so the final attestation quotes what
trusted code computed, and hands the gate typed :class:`Executed` records.

A plan that cannot be evaluated fails alone, with a data-free reason (``Failed``); the job goes
on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from veil.release.manifest import (
    EXTENSIONS,
    OutputEntry,
    OutputManifest,
    read_manifest,
    write_manifest,
)
from veil.stage import InputIndex

__all__ = ["Executed", "ExecutorError", "ExecutorReport", "Failed", "code_digest",
           "execute_plans"]

# The modules whose code decides every released DP value and aggregate table.
MEASURED_MODULES = ("veil/release/executor.py", "veil/privacy/plans.py",
                    "veil/privacy/mechanisms.py", "veil/privacy/_opendp.py",
                    "veil/catalog/ingest.py", "veil/crypto/envelope.py", "veil/tee/agent.py")
_MAX_REPORT_BYTES = 4 * 1024 * 1024


class ExecutorError(RuntimeError):
    """The executor process itself failed (not one plan): the job's plans cannot be trusted."""


@dataclass(frozen=True)
class Executed:
    """One plan evaluated by trusted code; the gate takes cost and group facts only from here."""

    name: str
    kind: Literal["dp", "aggregate"]
    file: str
    sha256: str
    size: int
    sources: tuple[str, ...]
    plan_digest: str
    epsilon: float = 0.0
    delta: float = 0.0
    d_in: int = 1
    mechanism: str | None = None
    groups: int | None = None
    dropped: int | None = None
    min_group_size: int | None = None
    smallest_group: int | None = None
    seconds: float = 0.0

    def meta(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items()
                if k not in ("name", "kind", "file", "sha256", "size") and v is not None}


@dataclass(frozen=True)
class Failed:
    name: str
    reason: str


@dataclass
class ExecutorReport:
    executed: dict[str, Executed] = field(default_factory=dict)
    failed: dict[str, Failed] = field(default_factory=dict)
    seconds: float = 0.0


def code_digest() -> str:
    """SHA-256 over the executor's measured modules, recorded in the launch event log."""
    root = Path(__file__).resolve().parents[2]
    sha = hashlib.sha256()
    for rel in MEASURED_MODULES:
        data = (root / rel).read_bytes()
        sha.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return "sha256:" + sha.hexdigest()


# --------------------------------------------------------------------------- host side


def execute_plans(outputs_dir: Path, inputs_dir: Path, index: InputIndex,
                  rules: Mapping[str, Mapping[str, Any]], agent_socket: Path, *,
                  timeout_s: float = 600.0) -> ExecutorReport:
    """Run the executor process over every plan in the manifest; rewrite the manifest.

    ``index`` is the job's input index (trusted: the worker wrote it); ``rules`` maps each
    input's full name to its policy's ``public_rules()``.
    """
    manifest = read_manifest(outputs_dir)
    plans = [e for e in manifest.outputs if e.kind == "plan"]
    if not plans:
        return ExecutorReport()
    request = {"outputs_dir": str(outputs_dir), "inputs_dir": str(inputs_dir),
               "index": index.model_dump(mode="json"),
               "rules": {k: dict(v) for k, v in rules.items()},
               "agent": str(agent_socket),
               "plans": [{"name": e.name, "file": e.file, "sha256": e.sha256} for e in plans]}
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TMPDIR")}
    try:
        proc = subprocess.run([sys.executable, "-I", "-m", "veil.release.executor"],
                              input=json.dumps(request).encode(), capture_output=True,
                              timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ExecutorError(f"the release executor took longer than {timeout_s:g} s") from None
    if proc.returncode != 0 or len(proc.stdout) > _MAX_REPORT_BYTES:
        raise ExecutorError(f"the release executor failed (exit {proc.returncode})")
    try:
        raw = json.loads(proc.stdout)
        report = ExecutorReport(
            executed={d["name"]: Executed(**{**d, "sources": tuple(d["sources"])})
                      for d in raw["executed"]},
            failed={d["name"]: Failed(**d) for d in raw["failed"]},
            seconds=float(raw["seconds"]))
    except (ValueError, KeyError, TypeError):
        raise ExecutorError("the release executor's report is malformed") from None
    entries: list[OutputEntry] = []
    for entry in manifest.outputs:
        done = report.executed.get(entry.name)
        if done is None:
            entries.append(entry)
            continue
        entries.append(OutputEntry(name=entry.name, kind=done.kind, file=done.file,
                                   sha256=done.sha256, size=done.size, meta=done.meta()))
    write_manifest(outputs_dir, OutputManifest(outputs=entries))
    return report


# --------------------------------------------------------------------------- executor process


def _run(request: Mapping[str, Any]) -> dict[str, Any]:
    import time

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from veil.catalog.ingest import load_frame
    from veil.crypto.envelope import DataKey
    from veil.privacy.errors import PrivacyError
    from veil.privacy.mechanisms import DPResult
    from veil.privacy.plans import SourceRules, evaluate, parse_plan
    from veil.tee.agent import fetch_dataset_key

    t_start = time.perf_counter()
    outputs, inputs = Path(request["outputs_dir"]), Path(request["inputs_dir"])
    index = InputIndex.model_validate(request["index"])
    datasets = index.datasets
    rules = {name: SourceRules.from_public(name, r) for name, r in request["rules"].items()}
    frames: dict[str, pd.DataFrame] = {}

    def frame(name: str) -> pd.DataFrame:
        if name not in frames:
            entry = datasets[name]
            key = fetch_dataset_key(request["agent"], dataset_id=entry.id, job=index.job,
                                    bundle_digest=index.bundle_digest)
            loaded = load_frame(inputs / entry.file, DataKey.from_bytes(key),
                                context=entry.context.encode())
            frames[name] = loaded
        return frames[name]

    executed: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for item in request["plans"]:
        name, t0 = item["name"], time.perf_counter()
        try:
            doc = parse_plan(_read_plan(outputs / item["file"], item["sha256"]))
            sources = doc.query.relation.sources
            unknown = [s for s in sources if s not in datasets]
            if unknown:
                raise _Refused(f"dataset {unknown[0]!r} is not an input of this job")
            result = evaluate(doc, {s: frame(s) for s in sources},
                              {s: rules[s] for s in sources})
            if isinstance(result, DPResult):
                kind, payload = "dp", json.dumps(result.to_json(), allow_nan=False).encode()
                facts: dict[str, Any] = {"epsilon": result.epsilon, "delta": result.delta,
                                         "d_in": int(result.params.get("d_in", 1)),
                                         "mechanism": result.mechanism}
            else:
                buf = io.BytesIO()
                pq.write_table(pa.Table.from_pandas(result.table, preserve_index=False), buf)
                kind, payload = "aggregate", buf.getvalue()
                facts = {"groups": result.groups, "dropped": result.dropped,
                         "min_group_size": result.min_group_size,
                         "smallest_group": result.smallest_kept}
            file_name = f"{name}.{EXTENSIONS[kind]}"
            _write_new(outputs / file_name, payload)
            executed.append({"name": name, "kind": kind, "file": file_name,
                             "sha256": hashlib.sha256(payload).hexdigest(),
                             "size": len(payload), "sources": list(sources),
                             "plan_digest": doc.digest,
                             "seconds": round(time.perf_counter() - t0, 4), **facts})
        except (PrivacyError, _Refused) as exc:  # our own messages: names, never values
            failed.append({"name": name, "reason": str(exc)})
        except Exception as exc:  # anything else: the type only, it could quote data
            failed.append({"name": name, "reason": f"the plan failed ({type(exc).__name__})"})
    return {"executed": executed, "failed": failed,
            "seconds": round(time.perf_counter() - t_start, 4)}


class _Refused(Exception):
    pass


def _read_plan(path: Path, sha256: str) -> bytes:
    """The plan file as the manifest declared it; never through a symlink the workload left."""
    from veil.privacy.plans import MAX_PLAN_BYTES

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise _Refused("the plan file is missing or not a regular file") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_PLAN_BYTES + 1)
    if len(data) > MAX_PLAN_BYTES:
        raise _Refused("the plan is too large")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _Refused("the plan file does not match the manifest")
    return data


def _write_new(path: Path, data: bytes) -> None:
    """Write beside ``path`` with O_EXCL, then rename over whatever the workload left there."""
    tmp = path.with_name(f".{path.name}.executor")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(_run(request)))


if __name__ == "__main__":
    main()

