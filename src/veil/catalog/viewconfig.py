"""Is a policy's ``[views.synthetic]`` buildable for this data? Checked at upload, before
anything is stored, so the provider hears every problem at once, with a TOML snippet to paste.

How each column is fitted (``synthetic_columns``): join keys and ``exclude`` are left out;
``categories`` make a column categorical with exactly those values (numbers too); ``bounds``
make it numeric over that public range; booleans are categories by type; a number with at most
``LOW_CARDINALITY`` distinct values (a 1/2 code) needs categories or bounds, because binning it
would smear it into decimals; other numbers get DP-chosen bounds, which needs enough rows for
the epsilon; text without categories is discovered by OpenDP's thresholded key release, which
needs ``delta > 0``. The checks read the provider's own statistics and reach only the provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from veil.catalog.errors import ViewConfigError
from veil.catalog.policy import DatasetPolicy
from veil.catalog.schema import LOW_CARDINALITY, Column, Schema

__all__ = ["SyntheticColumns", "check_view_config", "requested_views", "synthetic_columns"]

_NUMERIC = ("int", "float")
_TEMPORAL = ("date", "datetime")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def requested_views(policy: DatasetPolicy) -> list[str]:
    """The views a policy asks for, in build order."""
    views = ["mock"]
    if policy.views.sample is not None and policy.views.sample.publishable:
        views.append("sample")
    if policy.views.synthetic is not None:
        views.append("synthetic")
    return views


@dataclass(frozen=True)
class SyntheticColumns:
    """What the synthesiser is given: public knowledge for the fitted columns only."""

    exclude: list[str]
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    categories: dict[str, list[Any]] = field(default_factory=dict)


def synthetic_columns(policy: DatasetPolicy, names: Sequence[str]) -> SyntheticColumns:
    spec = policy.views.synthetic
    unit = policy.privacy_unit.id_column if policy.privacy_unit is not None else None
    # The privacy unit's id carries nothing a model could keep: never fitted (a join key gets
    # view keys, any other id column stays empty in the view).
    left_out = set(policy.join_keys) | set(spec.exclude if spec is not None else ()) \
        | ({unit} if unit is not None else set())
    fitted = [n for n in names if n not in left_out]
    bounds = {c: b for c, b in policy.all_bounds().items() if c in fitted}
    categories = {c: list(v) for c, v in policy.categories.items() if c in fitted}
    return SyntheticColumns([n for n in names if n in left_out], bounds, categories)


def check_view_config(policy: DatasetPolicy, schema: Schema, rows: int) -> None:
    """Raise :class:`ViewConfigError` listing every problem with the synthetic view's settings."""
    spec = policy.views.synthetic
    budget = policy.budget
    # Each join key's DP count of distinct keys is charged too (overlaps only if they fit).
    join_epsilon = policy.effective_join_epsilon * len(policy.join_keys)
    if spec is None:
        if budget is not None and join_epsilon > budget.epsilon:
            raise ViewConfigError([f"the join keys' DP counts need epsilon {join_epsilon:g} but "
                                   f"the dataset's budget is epsilon {budget.epsilon:g}: lower "
                                   "join_epsilon or raise the budget"], "")
        return
    from veil.privacy.synthetic import bounds_min_epsilon  # lazy: OpenDP

    names = schema.names
    problems: list[str] = []
    add_bounds: dict[str, list[float]] = {}
    add_categories: dict[str, list[Any]] = {}
    add_exclude: list[str] = []
    for what, cols in (("bounds", policy.all_bounds()), ("views.synthetic.exclude", spec.exclude),
                       ("categories", policy.categories)):
        missing = sorted(c for c in cols if c not in names)
        if missing and what != "categories":
            problems.append(f"{what} names columns the data does not have: {', '.join(missing)}")
    plan = synthetic_columns(policy, names)
    fitted = [c for c in schema.columns if c.name not in plan.exclude]
    if len(fitted) < 2:
        problems.append("the synthetic view models pairs of columns: it needs at least two "
                        "columns besides the join keys and views.synthetic.exclude")
    dp_bounds: list[Column] = []
    for col in fitted:
        stats = col.stats
        if col.name in plan.categories:
            problems += _category_conflicts(col, plan.categories[col.name])
        elif col.type == "bool" or col.name in plan.bounds:
            continue
        elif col.type in _NUMERIC and stats is not None and stats.values is not None \
                and len(stats.values) <= LOW_CARDINALITY:
            problems.append(f"column {col.name!r} has only {len(stats.values)} distinct numbers: "
                            "declare them as public categories (or give bounds to keep it "
                            "numeric)")
            add_categories[col.name] = list(stats.values)
        elif col.type in _NUMERIC or col.type in _TEMPORAL:
            dp_bounds.append(col)
        elif stats is not None and stats.distinct is None:
            problems.append(f"column {col.name!r} is free text (over 1000 distinct values): "
                            "leave it out with views.synthetic.exclude")
            add_exclude.append(col.name)
        elif spec.delta == 0.0:
            problems.append(f"column {col.name!r} is text without public categories: declare "
                            "them, or set views.synthetic.delta > 0 to discover them with DP")
            add_categories[col.name] = ["..."]
    numeric = [c for c in dp_bounds if c.type in _NUMERIC]
    if numeric:
        counted = min((c.stats.count - c.stats.null_count) if c.stats else rows for c in numeric)
        k = policy.privacy_unit.max_contributions if policy.privacy_unit is not None else 1
        need = bounds_min_epsilon(counted, len(numeric), k)
        if spec.epsilon < need:
            listed = ", ".join(c.name for c in numeric)
            problems.append(
                f"epsilon {spec.epsilon:g} is too small for {counted:,} rows: DP-chosen bounds "
                f"for {len(numeric)} column(s) ({listed}) need epsilon >= {need:.3g}; give "
                "their bounds (public knowledge), or raise views.synthetic.epsilon")
            for c in numeric:
                add_bounds[c.name] = _suggested_bounds(c)
    if budget is not None and spec.epsilon + join_epsilon > budget.epsilon:
        also = f" plus the join keys' {join_epsilon:g}" if join_epsilon else ""
        problems.append(f"views.synthetic.epsilon {spec.epsilon:g}{also} exceeds the dataset's "
                        f"budget epsilon {budget.epsilon:g} (the views are charged to it)")
    if problems:
        raise ViewConfigError(problems, _snippet(policy, add_bounds, add_categories, add_exclude))


def _category_conflicts(col: Column, values: list[Any]) -> list[str]:
    text = all(isinstance(v, str) for v in values)
    if col.type in _NUMERIC and text:
        return [f"categories.{col.name} are text but column {col.name!r} holds numbers"]
    if col.type in ("string", "category") and not text:
        return [f"categories.{col.name} are numbers but column {col.name!r} holds text"]
    if col.type in _TEMPORAL:
        return [f"categories.{col.name}: dates cannot be categories in the synthetic view"]
    if col.type == "bool" and any(not isinstance(v, bool) for v in values):
        return [f"categories.{col.name} must be true/false for a boolean column"]
    return []


def _suggested_bounds(col: Column) -> list[float]:
    """The data's range widened to 2 significant digits: what the mock view already shows.
    Only a starting point: public bounds should come from what the column can hold."""
    from veil.catalog.views import _coarsen

    stats = col.stats
    if stats is None or not isinstance(stats.min, int | float) \
            or not isinstance(stats.max, int | float):
        return [0.0, 1.0]
    lo, hi = _coarsen(float(stats.min), float(stats.max), integer=col.type == "int")
    return [lo, hi] if lo < hi else [lo, lo + 1.0]


def _snippet(policy: DatasetPolicy, bounds: Mapping[str, list[float]],
             categories: Mapping[str, list[Any]], exclude: list[str]) -> str:
    lines = ["# top level of the policy (above any [section]); replaces your existing lines"]
    if bounds:
        merged = {**{c: list(b) for c, b in policy.bounds.items()}, **bounds}
        lines.append(f"bounds = {_inline(merged)}")
    if categories:
        merged_c = {**{c: list(v) for c, v in policy.categories.items()}, **categories}
        lines.append(f"categories = {_inline(merged_c)}")
    spec = policy.views.synthetic
    if exclude and spec is not None:
        lines += ["", "[views.synthetic]", f"exclude = {_value([*spec.exclude, *exclude])}"]
    return "\n".join(lines) if len(lines) > 1 else ""


def _inline(table: Mapping[str, list[Any]]) -> str:
    body = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in table.items())
    return "{ " + body + " }"


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _value(values: list[Any]) -> str:
    def one(v: Any) -> Any:
        return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v

    return "[" + ", ".join(json.dumps(one(v)) for v in values) + "]"  # JSON scalars are TOML
