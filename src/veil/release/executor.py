"""The trusted release executor: evaluates a job's declared plans on the full data.

The workload only writes plans (``veil.publish(name, veil.dp.mean(...))``). After it has
exited, the worker runs this module in a process of its own (``python -I -m
veil.release.executor``): code of the measured runtime — its digest is in the launch event log
(:func:`code_digest`) — never of the bundle. It fetches each input's data key through the job's
key agent, exactly as the workload did (broker nonce, evidence, verifier, provider policy),
evaluates every plan with ``veil.privacy.plans`` and OpenDP (DP-SGD plans: ``privacy.dpsgd``,
which runs the notebook's exported JAX loss only after checking it is pure computation),
writes the results and reports their cost from the library's privacy map or accountant. The
host side (:func:`execute_plans`) then replaces each plan in the output manifest with the
executor's result, so the final attestation quotes what trusted code computed, and hands the
gate typed :class:`Executed` records.

A plan that cannot be evaluated fails alone, with a data-free reason (``Failed``); the job goes
on.

Models the workload trained itself (kind ``model``) are checked here too, because only this
process holds the full data and may load a workload's file: the file is loaded with
scikit-learn and numpy types only (``privacy.model_io``), described, and audited for membership
inference (``privacy.membership``) on the data the notebook says it trained on
(``trained_on``), rebuilt by the executor. Two audits when they can run: the published model
itself, if the declared relation leaves held-out rows (its filters' complement), and always a
clone of it (same class and hyper-parameters) that the executor trains on a random half it
chose itself, so a lie about ``trained_on`` cannot hide the procedure's memorisation. The gate
takes the larger advantage (:class:`ModelChecked`).
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

__all__ = ["Executed", "ExecutorError", "ExecutorReport", "Failed", "ModelChecked",
           "code_digest", "execute_plans"]

# The modules whose code decides every released DP value, aggregate table and model audit.
MEASURED_MODULES = ("veil/release/executor.py", "veil/privacy/plans.py",
                    "veil/privacy/mechanisms.py", "veil/privacy/_opendp.py",
                    "veil/privacy/training.py", "veil/privacy/dpsgd.py",
                    "veil/privacy/model_io.py",
                    "veil/privacy/membership.py",
                    "veil/catalog/ingest.py", "veil/crypto/envelope.py", "veil/tee/agent.py")
_MAX_REPORT_BYTES = 4 * 1024 * 1024


class ExecutorError(RuntimeError):
    """The executor process itself failed (not one plan): the job's plans cannot be trusted."""


@dataclass(frozen=True)
class Executed:
    """One plan evaluated by trusted code; the gate takes cost and group facts only from here."""

    name: str
    kind: Literal["dp", "aggregate", "dp_model"]
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


@dataclass(frozen=True)
class ModelChecked:
    """A workload's model as trusted code read it: its facts, its audit, or why it is refused.

    ``advantage`` is the largest membership advantage any audit measured (None: no audit ran,
    ``meta["audit_skipped"]`` says why); ``refused`` is set when the file is unsafe to load.
    """

    name: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    advantage: float | None = None
    refused: str | None = None


@dataclass
class ExecutorReport:
    executed: dict[str, Executed] = field(default_factory=dict)
    failed: dict[str, Failed] = field(default_factory=dict)
    models: dict[str, ModelChecked] = field(default_factory=dict)
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
    models = [e for e in manifest.outputs if e.kind == "model"]
    if not plans and not models:
        return ExecutorReport()
    request = {"outputs_dir": str(outputs_dir), "inputs_dir": str(inputs_dir),
               "index": index.model_dump(mode="json"),
               "rules": {k: dict(v) for k, v in rules.items()},
               "agent": str(agent_socket),
               "plans": [{"name": e.name, "file": e.file, "sha256": e.sha256} for e in plans],
               "models": [{"name": e.name, "file": e.file, "sha256": e.sha256, "meta": e.meta}
                          for e in models]}
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
            models={d["name"]: ModelChecked(**d) for d in raw["models"]},
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
    from veil.privacy.dpsgd import SGDModel
    from veil.privacy.errors import PrivacyError
    from veil.privacy.mechanisms import DPResult
    from veil.privacy.plans import SourceRules, evaluate, parse_plan
    from veil.privacy.training import DPModel
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
            elif isinstance(result, DPModel):
                kind = "dp_model"
                payload = json.dumps(result.to_json(), allow_nan=False).encode()
                facts = {"epsilon": result.epsilon, "delta": result.delta,
                         "d_in": int(result.params["d_in"]), "mechanism": f"dp_gd_{result.model}"}
            elif isinstance(result, SGDModel):
                kind = "dp_model"
                payload = json.dumps(result.to_json(), allow_nan=False).encode()
                facts = {"epsilon": result.epsilon, "delta": result.delta,
                         "d_in": int(result.meta["d_in"]), "mechanism": "dp_sgd"}
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
    checked = [asdict(_check_model(item, outputs, frame, datasets, rules))
               for item in request.get("models", [])]
    return {"executed": executed, "failed": failed, "models": checked,
            "seconds": round(time.perf_counter() - t_start, 4)}


def _check_model(item: Mapping[str, Any], outputs: Path, frame: Any, datasets: Mapping[str, Any],
                 rules: Mapping[str, Any]) -> ModelChecked:
    """Load a workload's model safely, describe it, and audit it where the data allows."""
    import time

    from veil.privacy.errors import PrivacyError
    from veil.privacy.model_io import ModelFormatError, describe, load_model

    name, sha = item["name"], item["sha256"]
    meta: dict[str, Any] = dict(item.get("meta") or {})
    fmt = meta.get("format")
    try:
        if fmt not in ("skops", "npz"):
            raise ModelFormatError("the model's format is not skops or npz")
        data = _read_file(outputs / item["file"], sha, limit=256 * 1024 * 1024)
        model = load_model(data, fmt)
    except (ModelFormatError, _Refused) as exc:
        return ModelChecked(name, sha, refused=str(exc))
    facts = describe(model, fmt, len(data)).meta()
    t0 = time.perf_counter()
    try:
        audits = _audit(model, fmt, meta, frame, datasets, rules)
    except (PrivacyError, _Refused) as exc:
        return ModelChecked(name, sha, {**facts, "audit_skipped": str(exc)})
    except Exception as exc:  # the type only: a message could quote data
        return ModelChecked(name, sha, {**facts, "audit_skipped":
                                        f"the audit failed ({type(exc).__name__})"})
    best = max(a.advantage for a in audits.values())
    return ModelChecked(name, sha, {**facts, "audit": {k: a.meta() for k, a in audits.items()},
                                    "mia_advantage": round(best, 4),
                                    "audit_seconds": round(time.perf_counter() - t0, 3)}, best)


def _audit(model: Any, fmt: str, meta: Mapping[str, Any], frame: Any,
           datasets: Mapping[str, Any], rules: Mapping[str, Any]) -> dict[str, Any]:
    import warnings

    import numpy as np
    from sklearn.base import clone

    from veil.privacy.membership import audit_membership
    from veil.privacy.plans import Relation, _build, prepare

    if fmt != "skops":
        raise _Refused("arrays are not a model the executor can query; no audit")
    trained_on, features, label = (meta.get("trained_on"), meta.get("features"),
                                   meta.get("label"))
    if trained_on is None or not isinstance(features, list) or not isinstance(label, str):
        raise _Refused("publish the model with trained_on=, features= and label= to have it "
                       "audited")
    relation = _build(Relation, trained_on)
    unknown = [s for s in relation.sources if s not in datasets]
    if unknown:
        raise _Refused(f"dataset {unknown[0]!r} is not an input of this job")
    names = getattr(model, "feature_names_in_", None)
    if names is not None and [str(n) for n in names] != features:
        raise _Refused("the model's feature names differ from the declared features")
    frames = {s: frame(s) for s in relation.sources}
    chosen = {s: rules[s] for s in relation.sources}
    members = prepare(relation, frames, chosen).frame
    everyone = prepare(relation.model_copy(update={"filters": []}), frames, chosen).frame
    held_out = everyone[~everyone.index.isin(members.index)]

    def xy(df: Any) -> tuple[Any, Any]:
        missing = [c for c in [*features, label] if c not in df.columns]
        if missing:
            raise _Refused(f"unknown column {missing[0]!r}")
        df = df[[*features, label]].dropna()
        return df[features].to_numpy(dtype=float), df[label].to_numpy()

    audits: dict[str, Any] = {}
    with warnings.catch_warnings():  # plain arrays for a model fitted on a named frame
        warnings.simplefilter("ignore", UserWarning)
        if len(held_out) >= 2:  # the model itself, on rows the declaration says it never saw
            (x_in, y_in), (x_out, y_out) = xy(members), xy(held_out)
            audits["published_model"] = audit_membership(model, x_in, y_in, x_out, y_out,
                                                         shadows=0)
        # A clone on a half the executor chose: robust to a false trained_on.
        x_all, y_all = xy(everyone)
        half = np.random.default_rng(0).random(len(y_all)) < 0.5
        probe = clone(model).fit(x_all[half], y_all[half])
        audits["executor_clone"] = audit_membership(probe, x_all[half], y_all[half],
                                                    x_all[~half], y_all[~half])
    return audits


class _Refused(Exception):
    pass


def _read_plan(path: Path, sha256: str) -> bytes:
    """The plan file as the manifest declared it; never through a symlink the workload left."""
    from veil.privacy.plans import MAX_PLAN_BYTES

    return _read_file(path, sha256, limit=MAX_PLAN_BYTES, what="plan")


def _read_file(path: Path, sha256: str, *, limit: int, what: str = "model") -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise _Refused(f"the {what} file is missing or not a regular file") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _Refused(f"the {what} is too large")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _Refused(f"the {what} file does not match the manifest")
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

