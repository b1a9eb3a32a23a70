"""Models as outputs in safe formats: skops for scikit-learn, ``.npz`` for arrays; no pickle.

A model file crosses two trust boundaries: the workload writes it (hostile) and the consumer
loads it. Pickle would run the writer's code in the reader; skops only rebuilds types it is
told to trust, and ``.npz`` with ``allow_pickle=False`` holds plain arrays. Every load here
first lists the file's types (``skops.io.get_untrusted_types``) and refuses anything outside
scikit-learn and numpy, so a file naming ``builtins.eval`` or a workload's own class is never
instantiated.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from veil.privacy.errors import PrivacyError

__all__ = ["ModelFormatError", "ModelInfo", "describe", "dump_model", "load_model"]

ModelFormat = Literal["skops", "npz"]
_TRUSTED_PREFIXES = ("sklearn.", "numpy.")
MAX_MODEL_BYTES = 256 * 1024 * 1024


class ModelFormatError(PrivacyError):
    """A model that cannot be written or read safely; the message names the type, no data."""


@dataclass(frozen=True)
class ModelInfo:
    """What a reviewer sees about a model, read from the file by trusted code."""

    format: ModelFormat
    type: str
    size: int
    n_features: int | None
    feature_names: list[str] | None

    def meta(self) -> dict[str, Any]:
        return {"format": self.format, "model_type": self.type, "size": self.size,
                "n_features": self.n_features, "feature_names": self.feature_names}


def dump_model(model: Any) -> tuple[ModelFormat, bytes]:
    """A fitted scikit-learn estimator as skops, or arrays (one, or a dict of them) as npz."""
    if isinstance(model, np.ndarray) or (isinstance(model, dict) and model and all(
            isinstance(k, str) and isinstance(v, np.ndarray) for k, v in model.items())):
        arrays = {"array": model} if isinstance(model, np.ndarray) else model
        if any(a.dtype == object for a in arrays.values()):
            raise ModelFormatError("object arrays need pickle; publish numeric arrays")
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)
        return "npz", buf.getvalue()
    if not _is_estimator(model):
        raise ModelFormatError(f"cannot publish a {type(model).__name__} as a model: use a "
                               "scikit-learn estimator or numpy arrays")
    import skops.io as sio

    data: bytes = sio.dumps(model)
    _check_types(data)  # refuse now what the executor and the consumer would refuse later
    return "skops", data


def load_model(data: bytes, format: ModelFormat) -> Any:
    """Load a model file, trusting only scikit-learn and numpy types (fails closed)."""
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFormatError("the model file is too large")
    if format == "npz":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile):
            raise ModelFormatError("not a plain .npz file (pickled arrays are refused)") \
                from None
    import skops.io as sio

    trusted = _check_types(data)
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:  # a malformed file: the type only, never its content
        raise ModelFormatError(f"the skops file cannot be loaded ({type(exc).__name__})") \
            from None


def describe(model: Any, format: ModelFormat, size: int) -> ModelInfo:
    """Type, size and input shape of a loaded model (``feature_names_in_`` when present)."""
    if format == "npz":
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in model.items())
        return ModelInfo("npz", f"arrays: {shapes}", size, None, None)
    names = getattr(model, "feature_names_in_", None)
    n = getattr(model, "n_features_in_", None)
    return ModelInfo("skops", f"{type(model).__module__}.{type(model).__qualname__}", size,
                     None if n is None else int(n),
                     None if names is None else [str(x) for x in names])


def _check_types(data: bytes) -> list[str]:
    import skops.io as sio

    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ModelFormatError(f"not a skops file ({type(exc).__name__})") from None
    outside = [t for t in types if not t.startswith(_TRUSTED_PREFIXES)]
    if outside:
        raise ModelFormatError(f"the model holds types outside scikit-learn and numpy "
                               f"({', '.join(sorted(outside)[:5])}); refused")
    return list(types)


def _is_estimator(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return False
    return isinstance(model, BaseEstimator) and type(model).__module__.startswith("sklearn.")
