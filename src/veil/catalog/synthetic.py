"""The `synthetic` stage-1 view: a DP synthetic sample fitted by the view builder (by default
the DP Gaussian copula of `veil.privacy.copula`; MST or AIM on request).

The builder sees the same streamed batches as every other view and keeps a
bounded uniform subsample (bottom-k, like the sample view) to fit on, so the
upload's memory stays bounded. Fitting on a uniform subsample is at least as
private as fitting on the whole data at the same epsilon. The fidelity report
is computed against that real subsample and stays with the provider; consumers
see only its DP figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from veil.catalog.errors import ViewUnavailable
from veil.catalog.schema import Schema
from veil.catalog.views import SampleViewBuilder

FIT_ROWS_CAP = 200_000


class SyntheticViewBuilder:
    name = "synthetic"

    def __init__(self, *, epsilon: float, delta: float = 0.0, rows: int = 1000,
                 seed: int | None = None, method: str = "auto",
                 bounds: dict[str, tuple[float, float]] | None = None,
                 categories: dict[str, list[Any]] | None = None,
                 fit_rows_cap: int = FIT_ROWS_CAP, exclude: Sequence[str] = (),
                 unit_column: str | None = None, contributions: int = 1,
                 target: str | None = None) -> None:
        self.epsilon, self.delta, self.rows, self.seed = epsilon, delta, rows, seed
        # Columns left out of the fit: join keys (``veil.catalog.joinkeys`` fills them in) and
        # the policy's views.synthetic.exclude (left null).
        self.exclude = list(exclude)
        self.bounds = bounds or {}
        self.categories = categories or {}
        self.method = method
        # The privacy unit: at most ``contributions`` rows per ``unit_column`` value are fitted,
        # so the spend is OpenDP's map at that distance (one unit, not one row).
        self.unit_column = unit_column
        self.contributions = contributions if unit_column is not None else 1
        self.target = target  # a column to score train-synthetic-test-real on (provider)
        # Told each phase of the fit ("bounds", "model", ...) so a build can show progress.
        self.progress: Callable[[str], None] | None = None
        self._reservoir = SampleViewBuilder(rows=fit_rows_cap, seed=seed,
                                            max_rows=fit_rows_cap)
        self.report: Any = None  # FidelityReport once built (provider-side)

    def observe(self, batch: pa.RecordBatch) -> None:
        self._reservoir.observe(batch)

    def build(self, schema: Schema) -> pd.DataFrame:
        from veil.privacy.synthetic import fit_synthetic

        real = self._reservoir.build(schema)
        order = list(real.columns)
        if self.unit_column is not None:  # rows without a unit belong to no one: left out
            unit = real[self.unit_column]
            real = real[unit.notna()].groupby(unit[unit.notna()], sort=False) \
                .head(self.contributions)
        real = real.drop(columns=self.exclude).reset_index(drop=True)
        if self.exclude and real.shape[1] < 2:  # MST fits pairs of columns
            raise ViewUnavailable("the synthetic view needs at least two columns besides "
                                  "the join keys")
        # The model bins numbers; dates and times travel as integer nanoseconds and come back.
        temporal = {c: real[c].dtype for c in real.columns
                    if pd.api.types.is_datetime64_any_dtype(real[c])
                    or str(real[c].dtype).startswith("date32")}
        for column in temporal:
            real[column] = pd.to_datetime(real[column]).astype("int64").astype("float64")
        view = fit_synthetic(real, epsilon=self.epsilon, delta=self.delta or None,
                             method=self.method, rows=self.rows,  # type: ignore[arg-type]
                             seed=self.seed, bounds=self.bounds or None,
                             categories=self.categories or None, progress=self.progress,
                             contributions=self.contributions)
        self.report = _with_relationships(view.fidelity, real, view.frame, self.target)
        frame = view.frame
        for column in temporal:
            frame[column] = pd.to_datetime(frame[column].round(), unit="ns")
        for column in self.exclude:
            frame[column] = None  # a placeholder the join-key wrapper overwrites
        return frame[order]


def _with_relationships(report: Any, real: pd.DataFrame, syn: pd.DataFrame,
                        target: str | None) -> Any:
    """Add the provider's relationship figures and warnings to the fit's report.

    Read from the real fitting sample, so provider-only. TSTR: a model trained on 70% of that
    sample and one trained on the view, both scored on the other 30% (the view saw those rows
    in its DP fit; the figure is a guide, not a held-out estimate).
    """
    from dataclasses import replace

    from veil.privacy.fidelity import LOST_CHANGE, STRONG, compare, tstr

    cmp = compare(real, syn)
    extra: dict[str, Any] = {"relationships": cmp.to_json()}
    warnings = []
    if cmp.lost:
        warnings.append(f"relationships lost (real |corr| >= {STRONG}, moved by more than "
                        f"{LOST_CHANGE}): {', '.join(cmp.lost)}")
    if cmp.max_ks > 0.1:
        worst = max(cmp.ks, key=lambda c: cmp.ks[c])
        warnings.append(f"column distribution off: KS {cmp.max_ks:.2f} on {worst!r}")
    if target is not None and target in real.columns and len(real) >= 20:
        cut = int(len(real) * 0.7)
        try:
            extra["tstr"] = tstr(real.iloc[:cut], syn, real.iloc[cut:], target)
        except ValueError as exc:  # e.g. a label the view never produced
            extra["tstr"] = {"error": type(exc).__name__}
        ratio = extra["tstr"].get("ratio")
        if isinstance(ratio, float) and ratio < 0.9:
            warnings.append(f"a model trained on the view scores {ratio:.0%} of one trained "
                            f"on the real data (target {target!r})")
    return replace(report, extra=extra, warnings=warnings)
