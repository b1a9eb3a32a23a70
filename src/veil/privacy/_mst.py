"""OpenDP 0.16's MST with one float-rounding fix.

Upstream ``MST.make_marginals`` hands its selection step exactly the budget ``d_select`` and the
selection splits it into ``num_selections`` equal parts; summing those parts back (rounded up,
as OpenDP must) can exceed ``d_select`` by an ulp, and the fit then dies with "insufficient
budget for query" for many ordinary epsilons (e.g. eps = 1 with 10 columns). We give the
selection step ``d_select * (1 - 1e-9)``; everything else is upstream's code path. The privacy
map of the whole measurement is still computed by OpenDP's compositors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from opendp._internal import _new_pure_function
from opendp.combinators import then_adaptive_composition
from opendp.extras.mbi import MST
from opendp.extras.mbi._mst import _make_mst_select
from opendp.extras.mbi._utilities import (
    get_associated_metric,
    make_noise_marginals,
    make_stable_marginals,
    prior,
)
from opendp.mod import binary_search_chain


@dataclass(kw_only=True, frozen=True)
class SafeMST(MST):
    """MST whose selection budget leaves room for float rounding (see module docstring)."""

    def make_marginals(  # type: ignore[no-untyped-def]
        self, input_domain, input_metric, output_measure, d_in, d_out, *, marginals, model
    ) -> Any:
        d_measure = d_out * self.measure_split
        d_select = prior(prior(d_out - d_measure))
        edges: list[Any] = list(itertools.combinations(input_domain.columns, 2))
        t_marginals = make_stable_marginals(
            input_domain, input_metric, get_associated_metric(output_measure), edges
        )
        d_marginals = t_marginals.map(d_in)

        def function(qbl: Any) -> Any:
            m_select = _make_mst_select(
                *t_marginals.output_space,
                output_measure,
                d_in=d_marginals,
                d_out=d_select * (1 - 1e-9),
                edges=edges,
                model=model,
                num_selections=self.num_selections,
            )
            selected = qbl(m_select)
            m_measure = binary_search_chain(
                lambda s: make_noise_marginals(
                    *t_marginals.output_space, output_measure, selected, scale=s
                ),
                d_in=d_marginals,
                d_out=d_measure,
                T=float,
            )
            all_marginals = marginals.add(*qbl(m_measure))
            new_model = self.estimator(
                model.domain, all_marginals.flatten(), potentials=model.potentials
            )
            return all_marginals, new_model

        return (
            t_marginals
            >> then_adaptive_composition(
                output_measure=output_measure,
                d_in=t_marginals.map(d_in),
                d_mids=[d_select, d_measure],
            )
            >> _new_pure_function(function)
        )
