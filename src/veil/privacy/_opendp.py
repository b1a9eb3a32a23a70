"""The one place that switches OpenDP features on, so every caller shares the same choice.

Only ``contrib`` is enabled. ``floating-point`` is NOT needed: OpenDP's float sum and Laplace
samplers used here are available under ``contrib`` and account for float rounding themselves.
DP training (``veil.privacy.training``) switches two more on for the moment it builds its
measurements (:func:`features`): ``honest-but-curious`` for the row-wise gradient map, and
``idealized-numerics`` for OpenDP's numpy row sum, which does not bound float rounding (nor
does any DP-SGD library; the gap is a relative error near n * 2**-53 of the clipped sum).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import opendp.prelude as dp

from veil.privacy.errors import InvalidParameterError

dp.enable_features("contrib")


_FEATURES_LOCK = threading.Lock()


@contextmanager
def features(*names: str) -> Iterator[None]:
    """Enable extra OpenDP features only while measurements are built (see the docstring).

    OpenDP's features are process-wide: the lock keeps two builders (worker threads) from
    switching them off under each other. Veil's other mechanisms never rely on OpenDP refusing
    for lack of these features, so the window does not weaken them.
    """
    with _FEATURES_LOCK:
        dp.enable_features(*names)
        try:
            yield
        finally:
            dp.disable_features(*names)

#: Default neighbouring relation: datasets differing by one added or removed row. A declared
#: query over a dataset with a privacy unit (see ``veil.privacy.plans``) passes the unit's
#: contribution bound instead.
D_IN = 1


def check_epsilon(epsilon: object, name: str = "epsilon") -> float:
    """Reject eps that is not a finite positive real, before any data is touched."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise InvalidParameterError(f"{name} must be a real number, got {type(epsilon).__name__}")
    value = float(epsilon)
    if not math.isfinite(value) or value <= 0.0:
        raise InvalidParameterError(f"{name} must be finite and > 0, got {value!r}")
    return value


def check_delta(delta: object, name: str = "delta") -> float:
    """Reject delta outside [0, 1) or non-finite."""
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise InvalidParameterError(f"{name} must be a real number, got {type(delta).__name__}")
    value = float(delta)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise InvalidParameterError(f"{name} must be finite and in [0, 1), got {value!r}")
    return value


def check_bounds(bounds: object, name: str = "bounds") -> tuple[float, float]:
    """Bounds are the public clamp range; missing, inverted or non-finite bounds are refused."""
    if bounds is None:
        raise InvalidParameterError(f"{name} are required: pass (lower, upper)")
    if isinstance(bounds, str | bytes) or not isinstance(bounds, list | tuple) or len(bounds) != 2:
        raise InvalidParameterError(f"{name} must be a pair (lower, upper)")
    lo: object = bounds[0]
    hi: object = bounds[1]
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InvalidParameterError(f"{name} must be real numbers, got {type(v).__name__}")
        if not math.isfinite(float(v)):
            raise InvalidParameterError(f"{name} must be finite, got {v!r}")
    lo_f, hi_f = float(lo), float(hi)  # type: ignore[arg-type]
    if not lo_f < hi_f:
        raise InvalidParameterError(f"{name} are inverted or empty: lower {lo!r} >= upper {hi!r}")
    return lo_f, hi_f


def check_scale(scale: object) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise InvalidParameterError("scale must be a real number")
    value = float(scale)
    if not math.isfinite(value) or value <= 0.0:
        raise InvalidParameterError(f"scale must be finite and > 0, got {value!r}")
    return value


def check_d_in(d_in: object) -> int:
    """The symmetric distance a privacy unit can move the data by (contribution bound)."""
    if isinstance(d_in, bool) or not isinstance(d_in, int) or not 1 <= d_in <= 1_000_000:
        raise InvalidParameterError("d_in (rows one privacy unit may change) must be an "
                                    "integer in [1, 1000000]")
    return d_in


def calibrate(make: Callable[[float], Any], epsilon: float, guess: float | None = None, *,
              d_in: int = D_IN) -> float:
    """Noise scale whose OpenDP privacy map at ``d_in`` changed rows is within
    [eps(1-1e-6), eps].

    A closed-form ``guess`` (for one row) is tried first, scaled by ``d_in`` (building polars
    measurements is slow); OpenDP's binary search is the fallback, so the map always has the
    last word.
    """
    if guess is not None and math.isfinite(guess) and guess > 0:
        for g in (guess * d_in, guess * d_in * (1 + 1e-7)):
            spent = float(make(g).map(d_in))
            if epsilon * (1 - 1e-6) <= spent <= epsilon:
                return g
    try:
        return float(dp.binary_search_param(make, d_in=d_in, d_out=epsilon, T=float))
    except dp.OpenDPException as exc:  # pragma: no cover - only on absurd epsilons
        raise InvalidParameterError(f"no noise scale achieves epsilon={epsilon!r}") from exc
