"""ctypes bindings to the system libsodium's ristretto255 functions (PyNaCl does not expose them).

ctypes releases the GIL for the duration of each foreign call, so batch loops over chunks of a
flat buffer run in parallel threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

from veil.psi.errors import GroupError

_CANDIDATES = ("libsodium.so.23", "libsodium.so", "libsodium.dylib")


@cache
def lib() -> ctypes.CDLL:
    """Load libsodium once and declare the argument types of the functions we call."""
    names = [*_CANDIDATES]
    found = ctypes.util.find_library("sodium")
    if found:
        names.append(found)
    handle: ctypes.CDLL | None = None
    for name in names:
        try:
            handle = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if handle is None:
        raise GroupError("libsodium (libsodium.so.23) is not installed; ristretto255 unavailable")
    if handle.sodium_init() < 0:
        raise GroupError("libsodium failed to initialise")
    vp = ctypes.c_void_p
    for fname, argtypes in {
        "crypto_core_ristretto255_from_hash": [vp, vp],
        "crypto_core_ristretto255_is_valid_point": [vp],
        "crypto_scalarmult_ristretto255": [vp, vp, vp],
        "crypto_core_ristretto255_scalar_reduce": [vp, vp],
        "crypto_core_ristretto255_scalar_invert": [vp, vp],
        "crypto_core_ristretto255_scalar_mul": [vp, vp, vp],
        "crypto_core_ristretto255_scalar_random": [vp],
    }.items():
        try:
            fn = getattr(handle, fname)
        except AttributeError as exc:
            raise GroupError(f"libsodium lacks {fname}; it is too old for ristretto255") from exc
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    return handle


def address(buf: bytearray) -> int:
    """The address of a bytearray's storage (the buffer must stay alive and unresized)."""
    if len(buf) == 0:
        return 0
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
