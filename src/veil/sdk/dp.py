"""``veil.dp``: DP statistics for notebooks, the same code in both stages.

In stage 1 these run on the stage-1 view (so the noise scale and code paths are visible); in the
secure stage they run on the full data. A result only declares its cost: nothing is charged
until ``veil.publish(name, result)`` and the release gate accept it.
"""

from veil.privacy import (
    DPResult,
    count,
    grouped_count,
    grouped_sum,
    histogram,
    mean,
    quantile,
    sum,
)

__all__ = [
    "DPResult",
    "count",
    "grouped_count",
    "grouped_sum",
    "histogram",
    "mean",
    "quantile",
    "sum",
]
