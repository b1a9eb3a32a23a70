"""DP-SGD of user-defined models: an exported JAX loss, trained by trusted code.

The notebook writes a :class:`~veil.privacy.plans.SGDQuery`: its per-example loss exported with
``jax.export`` (StableHLO bytes, with the VJP), initial parameters (``.npz``), the data (a plan
over the inputs) and the DP-SGD parameters. The release executor (and, in stage 1, the SDK on
the views) runs it here. Why the guarantee holds whatever the loss computes:

* **Pure computation only** (:func:`check_exported`): the serialized module and its VJP are
  parsed and every operation must be StableHLO/CHLO arithmetic or a function call; a
  ``custom_call`` (host callbacks, FFI), send/recv, in/outfeed, collectives, effects,
  symbolic shapes, another platform than CPU or more than one device are refused, as is a
  signature other than ``loss(params, x: f32[features], y: f32[]) -> f32[]``.
* **Per-unit isolation**: the loss is called on one example at a time (``lax.map``; jax 0.10
  has no batching rule for an exported call, so ``jax.vmap`` over it raises), so a unit's
  gradient depends only on that unit's rows and the public parameters. A privacy unit's rows
  (at most the relation's ``d_in``: see ``plans``) are summed into one gradient and clipped
  with jax-privacy's ``clip_pytree`` (NaN-safe), so adding or removing one unit moves the sum by
  at most ``clip`` in L2: group privacy at ``d_in`` is exact, by clipping per unit.
* **Poisson subsampling** of units by jax-privacy's ``CyclicPoissonSampling`` (add/remove
  partition, cycle 1), seeded with 128 bits from the OS CSPRNG (``secrets``).
* **Noise** from OpenDP's Gaussian mechanism on the clipped sum (``make_gaussian`` over an
  L2-bounded float vector, scale ``noise_multiplier * clip``): the project's floating-point-safe
  sampler, not ``numpy.random`` nor ``jax.random`` (jax-privacy's ``gaussian_privatizer`` draws
  float32 ``jax.random.normal`` from a 64-bit key, so it is not used).
* **Accounting** by Google's ``dp-accounting`` RDP accountant for ``steps`` compositions of a
  Poisson-subsampled Gaussian (add/remove one unit), ``steps = ceil(epochs / sampling_rate)``;
  the tests cross-check it against dp-accounting's PLD accountant and jax-privacy's
  ``DpsgdTrainingAccountant``. The noisy sum is divided by the public ``batch_size`` and fed to
  an optax optimizer: post-processing.

Float arithmetic is idealized, as in every DP-SGD library (see ``_opendp``). The executor's
output (kind ``dp_model``) is JSON holding the parameters as base64 ``.npz``, the digests of the
loss and the initial parameters, and the accounting inputs, from which :func:`verify_sgd_cost`
re-derives the cost. Training losses on the full data are not released (they are not DP); the
stage-1 loss curve and accuracy are computed on the views only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd

from veil.privacy.errors import InvalidParameterError
from veil.privacy.plans import PlanError, SGDQuery, SourceRules, prepare

__all__ = ["SGD_MODEL_FORMAT", "SGDModel", "canonical", "check_exported", "dump_params",
           "epsilon_for", "export_loss", "export_predict", "load_params", "noise_for",
           "steps_for", "train_sgd", "verify_sgd_cost", "view_metrics"]

SGD_MODEL_FORMAT = "veil-dpsgd-model/1"
MAX_STEPS = 100_000
MAX_PARAMS = 10_000_000
_PAD = 32  # batches are padded to a multiple of this, so XLA compiles a few shapes only
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# StableHLO ops that are not pure computation on the given arguments.
_IMPURE = frozenset({
    "stablehlo.custom_call", "stablehlo.send", "stablehlo.recv", "stablehlo.infeed",
    "stablehlo.outfeed", "stablehlo.all_reduce", "stablehlo.all_gather",
    "stablehlo.all_to_all", "stablehlo.reduce_scatter", "stablehlo.collective_permute",
    "stablehlo.collective_broadcast", "stablehlo.partition_id", "stablehlo.replica_id",
    "stablehlo.create_token", "stablehlo.after_all"})
# Integer Rényi orders: the fractional ones near 1 make dp-accounting's series warn and drop out.
RDP_ORDERS = (*range(2, 129), 160, 192, 256, 384, 512)
_STRUCTURE = frozenset({"builtin.module", "func.func", "func.return", "func.call"})


# --------------------------------------------------------------------------- parameters


def dump_params(params: Mapping[str, Any]) -> bytes:
    """Parameters as ``.npz`` (float32 arrays, no pickle): what a plan and a model carry."""
    arrays = _checked_params({str(k): np.asarray(v) for k, v in params.items()})
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def load_params(data: bytes) -> dict[str, np.ndarray]:
    """Parse an ``.npz`` of float32 arrays; pickled objects and odd names are refused."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise PlanError(f"the parameters are not a plain .npz ({type(exc).__name__})") from None
    return _checked_params(arrays)


def _checked_params(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not arrays:
        raise PlanError("the model has no parameters")
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if not _PARAM_NAME.fullmatch(name):
            raise PlanError(f"parameter name {name[:64]!r} must be an identifier")
        if array.dtype.kind != "f":
            raise PlanError(f"parameter {name!r} must be a float array, not {array.dtype}")
        out[name] = array.astype(np.float32)
        if not np.isfinite(out[name]).all():
            raise PlanError(f"parameter {name!r} has non-finite values")
    if sum(a.size for a in out.values()) > MAX_PARAMS:
        raise PlanError(f"the model has more than {MAX_PARAMS} parameters")
    return out


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PlanError(f"the {what} is not base64") from None


# --------------------------------------------------------------------------- exported code


def _avals(params: Mapping[str, np.ndarray], n_features: int, *, with_label: bool) -> Any:
    import jax

    spec = {k: jax.ShapeDtypeStruct(v.shape, np.float32) for k, v in params.items()}
    x = jax.ShapeDtypeStruct((n_features,), np.float32)
    return (spec, x, jax.ShapeDtypeStruct((), np.float32)) if with_label else (spec, x)


def export_loss(fn: Callable[..., Any], params: Mapping[str, Any], n_features: int) -> bytes:
    """``jax.export`` of a per-example loss ``fn(params, x, y) -> scalar``, with its VJP."""
    import jax
    from jax import export

    checked = _checked_params({str(k): np.asarray(v) for k, v in params.items()})
    exported = export.export(jax.jit(fn), platforms=["cpu"])(
        *_avals(checked, n_features, with_label=True))
    return bytes(canonical(exported).serialize(vjp_order=1))


def export_predict(fn: Callable[..., Any], params: Mapping[str, Any], n_features: int) -> bytes:
    """``jax.export`` of ``fn(params, x) -> scalar`` (a logit), for stage-1 accuracy."""
    import jax
    from jax import export

    checked = _checked_params({str(k): np.asarray(v) for k, v in params.items()})
    exported = export.export(jax.jit(fn), platforms=["cpu"])(
        *_avals(checked, n_features, with_label=False))
    return bytes(canonical(exported).serialize())


def canonical(exported: Any) -> Any:
    """The same ``Exported`` (and VJP) without source locations, so the bytes do not depend on
    where the code was written: a Jupyter cell's file name changes with every kernel, and the
    plan pinned in stage 1 must be byte-identical to the one the secure run publishes."""
    import dataclasses

    from jax._src.export import _export  # the portable-artifact writer jax.export itself uses
    from jax._src.interpreters import mlir as jax_mlir
    from jax._src.lib import _jax
    from jax.extend.mlir import ir

    with jax_mlir.make_ir_context():
        module = _jax.mlir.deserialize_portable_artifact(exported.mlir_module_serialized)
        text = jax_mlir.module_to_string(module, enable_debug_info=False)
        stripped = _export._module_to_bytecode(ir.Module.parse(text))
    get_vjp = exported._get_vjp
    return dataclasses.replace(
        exported, mlir_module_serialized=stripped,
        _get_vjp=None if get_vjp is None else (lambda e: canonical(get_vjp(e))))


def check_exported(data: bytes, params: Mapping[str, np.ndarray], n_features: int, *,
                   with_label: bool = True, what: str = "loss") -> Any:
    """Deserialize an exported function and refuse anything but pure CPU computation.

    Returns the ``jax.export.Exported``; every refusal is a ``PlanError`` naming the reason.
    """
    import jax
    from jax import export

    try:
        exported = export.deserialize(bytearray(data))
    except Exception as exc:  # any parse failure of untrusted bytes
        raise PlanError(f"the {what} is not a jax.export serialization "
                        f"({type(exc).__name__})") from None
    if "cpu" not in exported.platforms or exported.nr_devices != 1:
        raise PlanError(f"the {what} must be exported for one CPU device")
    if exported.ordered_effects or exported.unordered_effects:
        raise PlanError(f"the {what} has side effects (host callbacks or I/O); only pure "
                        "computation may run in the trusted executor")
    expected = jax.tree.structure((_avals(params, n_features, with_label=with_label), {}))
    want = [(tuple(a.shape), np.dtype(a.dtype)) for a in
            jax.tree.leaves(_avals(params, n_features, with_label=with_label))]
    got = [(tuple(a.shape), np.dtype(a.dtype)) for a in exported.in_avals]
    signature = ("loss(params, x: float32[features], y: float32[]) -> float32[]" if with_label
                 else "predict(params, x: float32[features]) -> float32[]")
    if str(exported.in_tree) != str(expected) or got != want:
        raise PlanError(f"the {what}'s signature must be {signature} with the plan's "
                        f"parameters and {n_features} features")
    if [(tuple(a.shape), np.dtype(a.dtype)) for a in exported.out_avals] != \
            [((), np.dtype(np.float32))]:
        raise PlanError(f"the {what} must return one float32 scalar ({signature})")
    modules = [exported]
    if with_label:
        if not exported.has_vjp():
            raise PlanError("the loss must be serialized with its VJP "
                            "(exported.serialize(vjp_order=1))")
        modules.append(exported.vjp())
    for module in modules:
        try:  # the portable (VHLO) artifact as the StableHLO that XLA will compile
            text = module.mlir_module()
        except Exception as exc:
            raise PlanError(f"the {what}'s StableHLO cannot be read ({type(exc).__name__})") \
                from None
        _check_ops(text, what)
    return exported


def _check_ops(text: str, what: str) -> None:
    """Walk every operation of the module: StableHLO/CHLO computation and calls only."""
    from jax._src.interpreters import mlir as jax_mlir  # jax's context knows its dialects
    from jax.extend.mlir import ir

    names: set[str] = set()
    targets: set[str] = set()

    def visit(op: Any) -> Any:
        names.add(op.name)
        if op.name == "stablehlo.custom_call":
            targets.add(str(op.attributes["call_target_name"]))
        return ir.WalkResult.ADVANCE

    try:
        with jax_mlir.make_ir_context():
            module = ir.Module.parse(text)
            if "jax.uses_shape_polymorphism" in module.operation.attributes and \
                    str(module.operation.attributes["jax.uses_shape_polymorphism"]) == "true":
                raise PlanError(f"the {what} must have static shapes")
            module.operation.walk(visit)
    except PlanError:
        raise
    except Exception as exc:
        raise PlanError(f"the {what}'s StableHLO cannot be parsed ({type(exc).__name__})") \
            from None
    if targets:
        raise PlanError(f"the {what} contains custom calls ({', '.join(sorted(targets))[:200]}),"
                        " e.g. host callbacks; only pure computation may run in the executor")
    bad = sorted(n for n in names if n in _IMPURE or not (
        n in _STRUCTURE or n.startswith(("stablehlo.", "chlo."))))
    if bad:
        raise PlanError(f"the {what} uses operations that are not pure computation: "
                        f"{', '.join(bad)[:200]}")


# --------------------------------------------------------------------------- accounting


def steps_for(sampling_rate: float, epochs: float) -> int:
    """Steps of DP-SGD: each step samples each unit with ``sampling_rate``."""
    steps = math.ceil(epochs / sampling_rate - 1e-9)
    if steps > MAX_STEPS:
        raise PlanError(f"epochs / sampling_rate gives {steps} steps, more than {MAX_STEPS}")
    return max(1, steps)


def _event(noise_multiplier: float, sampling_rate: float, steps: int) -> Any:
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


def epsilon_for(noise_multiplier: float, sampling_rate: float, steps: int,
                delta: float) -> float:
    """(epsilon at delta) of ``steps`` Poisson-subsampled Gaussians: dp-accounting's RDP."""
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(list(RDP_ORDERS))
    accountant.compose(_event(noise_multiplier, sampling_rate, steps))
    return float(accountant.get_epsilon(delta))


def noise_for(epsilon: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier whose RDP epsilon is at most ``epsilon``."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    try:
        sigma = float(dp_accounting.calibrate_dp_mechanism(
            lambda: RdpAccountant(list(RDP_ORDERS)), lambda s: _event(s, sampling_rate, steps),
            epsilon, delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(0.05, 1.0)))
    except Exception as exc:  # the library's search failed: no multiplier reaches epsilon
        raise PlanError(f"no noise multiplier reaches epsilon {epsilon:g} with these "
                        f"parameters ({type(exc).__name__})") from None
    if epsilon_for(sigma, sampling_rate, steps, delta) > epsilon:  # the map has the last word
        sigma *= 1 + 1e-6
    return sigma


def verify_sgd_cost(doc: Mapping[str, Any]) -> tuple[float, float]:
    """Re-derive a DP-SGD model's (epsilon, delta) from its parameters (no data touched)."""
    try:
        p = doc["params"]
        sigma, q, steps = float(p["noise_multiplier"]), float(p["sampling_rate"]), int(p["steps"])
        delta = float(doc["delta"])
        if not (sigma > 0 and 0 < q <= 1 and 1 <= steps <= MAX_STEPS and 0 < delta < 1):
            raise ValueError("out of range")
        eps = epsilon_for(sigma, q, steps, delta)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"DP-SGD model parameters are invalid ({type(exc).__name__})") from None
    if abs(eps - float(doc["epsilon"])) > 1e-9 * max(1.0, eps):
        raise InvalidParameterError("the DP-SGD model's declared cost differs from "
                                    "dp-accounting's")
    return eps, delta


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class SGDModel:
    """A DP-SGD-trained model: its parameters, the digests of its code, and its cost."""

    features: list[str]
    label: str
    params: dict[str, np.ndarray]
    epsilon: float
    delta: float
    meta: dict[str, Any] = field(default_factory=dict)
    # Stage 1 only: on the view (never computed on the full data).
    view_losses: list[float] | None = None
    view_accuracy: float | None = None

    def to_json(self) -> dict[str, Any]:
        """What the executor writes (kind ``dp_model``): parameters as base64 npz, no pickle."""
        return {"format": SGD_MODEL_FORMAT, "model": "dpsgd", "features": self.features,
                "label": self.label, "epsilon": self.epsilon, "delta": self.delta,
                "params": self.meta,
                "weights_npz": base64.b64encode(dump_params(self.params)).decode(),
                "accountant": {"library": f"dp-accounting {version('dp-accounting')}",
                               "method": "RDP, Poisson-subsampled Gaussian, add/remove one unit",
                               "noise": f"opendp {version('opendp')} make_gaussian",
                               "clipping": f"jax-privacy {version('jax-privacy')} clip_pytree",
                               "d_in": self.meta.get("d_in")}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SGDModel:
        """Parse AND re-derive the cost (fails closed, like ``DPModel.from_json``)."""
        if doc.get("format") != SGD_MODEL_FORMAT:
            raise InvalidParameterError("not a Veil DP-SGD model")
        epsilon, delta = verify_sgd_cost(doc)
        try:
            params = load_params(_b64(str(doc["weights_npz"]), "weights"))
        except PlanError as exc:
            raise InvalidParameterError(str(exc)) from None
        return cls([str(f) for f in doc["features"]], str(doc["label"]), params, epsilon, delta,
                   dict(doc["params"]))

    def __repr__(self) -> str:
        seen = ""
        if self.view_losses:
            seen += f", loss on the view {self.view_losses[0]:.3f} -> {self.view_losses[-1]:.3f}"
        if self.view_accuracy is not None:
            seen += f", accuracy on the view {self.view_accuracy:.3f}"
        return (f"SGDModel({sum(a.size for a in self.params.values())} parameters on "
                f"{len(self.features)} features, {self.meta.get('steps')} steps{seen}, "
                f"cost=(epsilon={self.epsilon:.6g}, delta={self.delta:.3g}))")


# --------------------------------------------------------------------------- training


def design(query: SGDQuery, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features scaled to [-1, 1] by the public bounds, labels, kept-row mask).

    Rows with a missing or non-finite value are dropped: a row-wise filter.
    """
    from veil.privacy.training import _scale

    for column in [*query.features, query.label]:
        if column not in frame.columns:
            raise PlanError(f"unknown column {column!r}")
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise PlanError(f"column {column!r} is not numeric")
    values = frame[[*query.features, query.label]].to_numpy(dtype=float, na_value=np.nan)
    keep = np.isfinite(values).all(axis=1)
    values = values[keep]
    x = np.empty((len(values), len(query.features)), dtype=np.float32)
    for j, column in enumerate(query.features):
        x[:, j] = _scale(values[:, j], query.bounds[column])
    y = values[:, -1]
    if query.label in query.bounds:
        y = _scale(y, query.bounds[query.label])
    return x, y.astype(np.float32), keep


def _units(frame: pd.DataFrame, id_column: str | None, keep: np.ndarray, x: np.ndarray,
           y: np.ndarray, d_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by privacy unit: [units, rows ≤ d_in, ...] with a row mask."""
    if id_column is None:
        return x[:, None, :], y[:, None], np.ones((len(y), 1), dtype=bool)
    codes, _ = pd.factorize(frame[id_column].to_numpy()[keep])
    n_units = int(codes.max()) + 1 if len(codes) else 0
    position = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    width = int(position.max()) + 1 if len(codes) else 1
    if width > d_in:  # prepare() bounds contributions; this would be a bug, so fail closed
        raise PlanError("a privacy unit has more rows than its contribution bound")
    xs = np.zeros((n_units, width, x.shape[1]), dtype=np.float32)
    ys = np.zeros((n_units, width), dtype=np.float32)
    mask = np.zeros((n_units, width), dtype=bool)
    xs[codes, position], ys[codes, position], mask[codes, position] = x, y, True
    return xs, ys, mask


def _clipped_sum_fn(loss: Any, clip: float) -> Any:
    """jit(params, xs, ys, mask, active) -> sum over units of the clipped unit gradients."""
    import jax
    import jax.numpy as jnp
    from jax_privacy.clipping import clip_pytree

    def unit_grad(params: Any, xs: Any, ys: Any, ms: Any) -> Any:
        def unit_loss(p: Any) -> Any:
            # One example per call: an exported call cannot be vmapped (nor see other rows).
            losses = jax.lax.map(lambda r: jnp.where(r[2], loss.call(p, r[0], r[1]), 0.0),
                                 (xs, ys, ms))
            return jnp.sum(losses)
        return jax.grad(unit_loss)(params)

    def clipped_sum(params: Any, xs: Any, ys: Any, ms: Any, active: Any) -> Any:
        def body(total: Any, unit: Any) -> Any:
            ux, uy, um, ua = unit
            clipped, _ = clip_pytree(unit_grad(params, ux, uy, um), clip, nan_safe=True)
            return jax.tree.map(lambda t, g: t + jnp.where(ua, g, 0.0), total, clipped), None

        zero = jax.tree.map(jnp.zeros_like, params)
        total, _ = jax.lax.scan(body, zero, (xs, ys, ms, active))
        return total

    return jax.jit(clipped_sum)


def _mean_loss_fn(loss: Any) -> Any:
    import jax
    import jax.numpy as jnp

    def mean_loss(params: Any, x: Any, y: Any) -> Any:
        return jnp.mean(jax.lax.map(lambda r: loss.call(params, r[0], r[1]), (x, y)))
    return jax.jit(mean_loss)


def _noise(size: int, scale: float) -> Any:
    """OpenDP's Gaussian mechanism on an L2-bounded float32 vector of ``size`` entries.

    float32 like the gradients (and 2x faster to sample than float64); OpenDP accounts for
    its rounding itself.
    """
    from veil.privacy._opendp import dp

    return dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="f32", nan=False), size=size),
                              dp.l2_distance(T="f32"), scale)


def train_sgd(query: SGDQuery, frames: Mapping[str, pd.DataFrame],
              rules: Mapping[str, SourceRules], *,
              on_epoch: Callable[[Mapping[str, np.ndarray]], None] | None = None) -> SGDModel:
    """Check the exported loss, then DP-SGD on the prepared relation (see the module doc).

    ``on_epoch`` (stage 1 only) sees the parameters after each pass of ``1/sampling_rate``
    steps, for the view's loss curve.
    """
    import jax
    import optax
    from jax.flatten_util import ravel_pytree
    from jax_privacy.batch_selection import (
        CyclicPoissonSampling,
        PartitionType,
        pad_to_multiple_of,
    )

    t0 = time.perf_counter()
    loss_bytes, init_bytes = _b64(query.loss, "loss"), _b64(query.params, "parameters")
    init = load_params(init_bytes)
    exported = check_exported(loss_bytes, init, len(query.features))
    if query.predict is not None:
        check_exported(_b64(query.predict, "predict function"), init, len(query.features),
                       with_label=False, what="predict function")
    prepared = prepare(query.relation, frames, rules)
    x, y, keep = design(query, prepared.frame)
    xs, ys, mask = _units(prepared.frame, prepared.id_column, keep, x, y, prepared.d_in)
    q, delta = query.sampling_rate, query.delta
    steps = steps_for(q, query.epochs)
    sigma = (query.noise_multiplier if query.noise_multiplier is not None
             else noise_for(float(query.epsilon or 0.0), q, steps, delta))
    epsilon = epsilon_for(sigma, q, steps, delta)
    if query.epsilon is not None and epsilon > query.epsilon * (1 + 1e-9):
        raise PlanError("the calibrated noise does not meet the plan's epsilon")

    params: Any = {k: jax.numpy.asarray(v) for k, v in init.items()}
    flat, unravel = ravel_pytree(params)
    noise = _noise(int(flat.size), sigma * query.clip)
    grad_sum = _clipped_sum_fn(exported, query.clip)
    optimizer = (optax.adam(query.learning_rate) if query.optimizer == "adam"
                 else optax.sgd(query.learning_rate))
    state = optimizer.init(params)
    sampler = CyclicPoissonSampling(sampling_prob=q, iterations=steps,
                                    partition_type=PartitionType.INDEPENDENT)
    per_epoch = max(1, round(1 / q))
    for step, batch in enumerate(sampler.batch_iterator(len(ys), secrets.randbits(128))):
        idx = pad_to_multiple_of(np.asarray(batch, dtype=np.int64), _PAD)
        active = idx >= 0
        idx = np.where(active, idx, 0)
        total = grad_sum(params, xs[idx], ys[idx], mask[idx], active)
        summed = np.asarray(ravel_pytree(total)[0], dtype=np.float32)
        noisy = np.asarray(noise(summed.tolist()), dtype=np.float32) / query.batch_size
        updates, state = optimizer.update(unravel(jax.numpy.asarray(noisy)), state, params)
        params = optax.apply_updates(params, updates)
        if on_epoch is not None and ((step + 1) % per_epoch == 0 or step + 1 == steps):
            on_epoch({k: np.asarray(v) for k, v in params.items()})
    final = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    meta = {"noise_multiplier": sigma, "sampling_rate": q, "steps": steps, "clip": query.clip,
            "batch_size": query.batch_size, "epochs": query.epochs,
            "learning_rate": query.learning_rate, "optimizer": query.optimizer,
            "d_in": prepared.d_in, "n_features": len(query.features),
            "bounds": {k: list(v) for k, v in query.bounds.items()},
            "loss_sha256": hashlib.sha256(loss_bytes).hexdigest(),
            "init_sha256": hashlib.sha256(init_bytes).hexdigest(),
            "seconds": round(time.perf_counter() - t0, 3)}
    return SGDModel(list(query.features), query.label, final, epsilon, delta, meta)


def view_metrics(query: SGDQuery) -> Callable[..., tuple[float, float | None]]:
    """``metrics(params, x, y) -> (mean loss, accuracy or None)``: stage 1, on the view.

    Accuracy needs a predict function (a logit) and a 0/1 label. The exported code is checked
    and compiled once, then reused for every epoch of the loss curve.
    """
    import jax

    init = load_params(_b64(query.params, "parameters"))
    mean_loss = _mean_loss_fn(check_exported(_b64(query.loss, "loss"), init,
                                             len(query.features)))
    predict = None if query.predict is None else check_exported(
        _b64(query.predict, "predict function"), init, len(query.features), with_label=False,
        what="predict function")
    logits = None if predict is None else jax.jit(
        lambda p, x: jax.lax.map(lambda r: predict.call(p, r), x))

    def metrics(params: Mapping[str, np.ndarray], x: np.ndarray,
                y: np.ndarray) -> tuple[float, float | None]:
        if not len(y):
            return float("nan"), None
        mean = float(mean_loss(params, x, y))
        if logits is None:
            return mean, None
        return mean, float(np.mean((np.asarray(logits(params, x)) > 0) == (y > 0.5)))

    return metrics
