"""Ads measurement (issue 13 item 5) as a clean-room template job.

The same measurement as ``veil psi measure`` for partners who both upload to Veil: the
publisher's impressions (id, campaign, group, t0) joined on the shared privacy id with the
advertiser's conversions (id, t1, value). Every figure is a declared plan — join, ``derive``
t1 - t0 and the clipped value, ``filter`` 0 < t1 - t0 ≤ window, DP grouped count and sum by
campaign and test/control group over the policies' public ``categories`` — so the release
executor computes and noises it with OpenDP and charges ε; the notebook never sees a raw value.
Lift is derived by the reader from the released DP figures (post-processing, free).
"""

from __future__ import annotations

from dataclasses import dataclass

import nbformat

from veil.privacy.plans import PlanDocument, Relation, _build

OUTPUTS = ("conversions", "value")


@dataclass(frozen=True)
class AdsParams:
    """The public parameters of one measurement; ε is split evenly over the two outputs."""

    publisher: str
    advertiser: str
    id_column: str = "user_id"
    window: float = 7.0
    cap: float = 100.0
    epsilon: float = 1.0
    t0: str = "t0"
    t1: str = "t1"
    value: str = "value"
    campaign: str = "campaign"
    group: str = "group"
    campaigns: tuple[str, ...] = ()  # empty: every campaign the publisher's policy declares

    def __post_init__(self) -> None:
        for what, x in (("window", self.window), ("cap", self.cap), ("epsilon", self.epsilon)):
            if not x > 0:
                raise ValueError(f"{what} must be positive, got {x}")
        if self.publisher == self.advertiser:
            raise ValueError("the publisher and advertiser datasets must differ")


def _relation(p: AdsParams) -> Relation:
    base = _build(Relation, {"sources": [p.publisher]}).join(
        _build(Relation, {"sources": [p.advertiser]}), on=p.id_column)
    rel = (base.derive("delay", "sub", p.t1, p.t0)
            .derive("clipped_value", "min", p.value, float(p.cap))
            .filter("delay", ">", 0).filter("delay", "<=", float(p.window)))
    if p.campaigns:
        rel = rel.filter(p.campaign, "in", list(p.campaigns))
    return rel


def plans(p: AdsParams) -> dict[str, PlanDocument]:
    """The plans the notebook publishes, to pin them at submission."""
    rel = _relation(p).model_dump(mode="json")
    by = [p.campaign, p.group]
    eps = p.epsilon / len(OUTPUTS)
    return {
        "conversions": _build(PlanDocument, {"query": {"kind": "dp", "relation": rel, "measure": {
            "mechanism": "grouped_count", "epsilon": eps, "by": by}}}),
        "value": _build(PlanDocument, {"query": {"kind": "dp", "relation": rel, "measure": {
            "mechanism": "grouped_sum", "epsilon": eps, "by": by, "column": "clipped_value",
            "bounds": [0.0, float(p.cap)]}}}),
    }


def notebook(p: AdsParams) -> bytes:
    """The template notebook with ``p`` filled in (values written as Python literals);
    deterministic, so a provider can regenerate it and compare."""
    eps = p.epsilon / len(OUTPUTS)
    cells = [
        "# Ads measurement: conversions and value per campaign and test/control group.\n"
        "# Every figure is a declared plan: the release executor computes, noises (OpenDP)\n"
        "# and charges it. Lift = test rate / control rate, derived from the DP figures.\n"
        "import veil\n"
        f"imps = veil.load({p.publisher!r})\nconvs = veil.load({p.advertiser!r})",
        f"j = veil.dp.join(imps, convs, on={p.id_column!r})\n"
        f"j = j.derive('delay', 'sub', {p.t1!r}, {p.t0!r})\n"
        f"j = j.derive('clipped_value', 'min', {p.value!r}, {float(p.cap)!r})\n"
        f"j = j.filter('delay', '>', 0).filter('delay', '<=', {float(p.window)!r})"
        + (f"\nj = j.filter({p.campaign!r}, 'in', {list(p.campaigns)!r})" if p.campaigns else ""),
        f"by = [{p.campaign!r}, {p.group!r}]\n"
        f"veil.publish('conversions', veil.dp.grouped_count(j, by, epsilon={eps!r}))\n"
        f"veil.publish('value', veil.dp.grouped_sum(j, by, 'clipped_value', "
        f"bounds=(0.0, {float(p.cap)!r}), epsilon={eps!r}))",
    ]
    nb = nbformat.v4.new_notebook()
    # Fixed cell ids: the same parameters give the same bytes, so the same bundle digest.
    nb.cells = [nbformat.v4.new_code_cell(c, id=f"ads-{i}") for i, c in enumerate(cells)]
    return nbformat.writes(nb).encode()
