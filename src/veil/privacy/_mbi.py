"""OpenDP 0.16's MST and AIM, each with one fix; everything else is upstream's code path.

MST: upstream ``MST.make_marginals`` hands its selection step exactly the budget
``d_select`` and the selection splits it into ``num_selections`` equal parts; summing those
parts back (rounded up, as OpenDP must) can exceed ``d_select`` by an ulp, and the fit then
dies with "insufficient budget for query" for many ordinary epsilons (e.g. eps = 1 with 10
columns). We give the selection step ``d_select * (1 - 1e-9)``. The privacy map of the whole
measurement is still computed by OpenDP's compositors.

AIM: upstream's loop spends what is left of the budget in a last step; when that remainder is a
float crumb the selection step gets a budget of zero, OpenDP's scale search then probes a
negative scale and the whole fit dies (about half of all fits of a 3-column table at eps = 1).
Upstream means to stop there ("d_out is so small that no scale is suitable" -> no more steps) but
catches only ``ValueError``. We stop on a crumb (less than 1/1000 of a step) and on the
``OpenDPException`` too. Stopping early spends less than ``d_out``, never more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from opendp._internal import _new_pure_function
from opendp.combinators import (
    make_fully_adaptive_composition,
    make_privacy_filter,
    then_adaptive_composition,
)
from opendp.extras.mbi import AIM, MST
from opendp.extras.mbi._aim import _expand_queries, _make_aim_marginal
from opendp.extras.mbi._mst import _make_mst_select
from opendp.extras.mbi._utilities import (
    get_associated_metric,
    make_noise_marginals,
    make_stable_marginals,
    prior,
)
from opendp.mod import OpenDPException, binary_search_chain


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


@dataclass(kw_only=True, frozen=True)
class SafeAIM(AIM):
    """AIM that stops instead of failing when only a crumb of budget is left (module docstring)."""

    def make_marginals(  # type: ignore[no-untyped-def]
        self, input_domain, input_metric, output_measure, d_in, d_out, *, marginals, model
    ) -> Any:
        algorithm = replace(self, queries=_expand_queries(self.queries, input_domain.columns))
        cliques = [query.by for query in algorithm.queries]  # type: ignore[union-attr]
        t_marginals = make_stable_marginals(
            input_domain, input_metric, get_associated_metric(output_measure), cliques
        )
        d_marginals = t_marginals.map(d_in)
        rounds = algorithm.rounds or 16 * len(input_domain.columns)
        crumb = d_out / rounds / 1000

        def function(qbl: Any) -> Any:
            current_model, current_marginals = model, marginals.copy()
            d_step, d_spent = d_out / rounds, 0.0
            while d_step > crumb:
                try:
                    m_step = _make_aim_marginal(
                        *t_marginals.output_space,
                        output_measure,
                        d_marginals,
                        d_step,
                        marginals=current_marginals,
                        model=current_model,
                        max_size=algorithm.max_size * (d_spent + d_step) / d_out,
                        algorithm=algorithm,
                    )
                except OpenDPException:
                    break  # no selection scale fits this budget: upstream's intended stop
                if not m_step:
                    break
                current_marginals, current_model, is_significant = qbl(m_step)
                if not is_significant:
                    d_step *= 4
                d_spent = qbl.privacy_loss(d_marginals)
                d_step = min(d_step, max(prior(d_out - d_spent), 0))
            return current_marginals, current_model

        return (
            t_marginals
            >> make_privacy_filter(
                make_fully_adaptive_composition(*t_marginals.output_space, output_measure),
                d_in=d_marginals,
                d_out=d_out,
            )
            >> _new_pure_function(function)
        )
