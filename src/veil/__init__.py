"""Veil: privacy-preserving data collaboration.

In a notebook, `import veil` gives the stage-aware SDK: `veil.load`,
`veil.publish`, `veil.connect` and `veil.dp` behave the same in the
Programming Stage (privacy-enhanced views) and inside the secure stage (full data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from veil.sdk import aggregate, connect, load, publish
    from veil.sdk import dp as dp

__all__ = ["__version__", "aggregate", "connect", "dp", "load", "publish"]


def __getattr__(name: str) -> Any:
    # Lazy: the CLI and the server import `veil.*` parts without paying for pandas.
    if name in {"aggregate", "connect", "load", "publish", "dp", "stage"}:
        import veil.sdk

        return getattr(veil.sdk, name)
    raise AttributeError(name)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext veil`` registers the ``%veil`` magics (see `veil.lab.magics`)."""
    from veil.lab.magics import load_ipython_extension as load

    load(ipython)
