"""The demo's data: a hospital's patient visits and an insurer's claims.

Generated with a fixed seed so every run tells the same story; the two
providers share about 60% of their patients (joined on `patient_id`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ["north", "south", "east", "west"]
DIAGNOSES = ["asthma", "diabetes", "fracture", "flu", "hypertension"]
PLANS = ["basic", "plus", "premium"]


def hospital_visits(patients: int = 3000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = patients * 2
    ids = rng.integers(1, patients + 1, size=rows)
    region_of = rng.choice(REGIONS, size=patients + 1, p=[0.4, 0.3, 0.2, 0.1])
    return pd.DataFrame({
        "visit_id": np.arange(1, rows + 1),
        "patient_id": ids,
        "age": rng.integers(18, 90, size=patients + 1)[ids],
        "region": region_of[ids],
        "diagnosis": rng.choice(DIAGNOSES, size=rows),
        "visit_cost": np.round(rng.gamma(2.0, 180.0, size=rows), 2),
    })


def insurer_claims(patients: int = 3000, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    covered = rng.permutation(np.arange(1, int(patients * 1.4) + 1))[: int(patients * 0.9)]
    plan = rng.choice(PLANS, size=len(covered), p=[0.5, 0.35, 0.15])
    base = np.select([plan == "basic", plan == "plus"], [400.0, 900.0], 1600.0)
    amount = np.round(base * rng.lognormal(0.0, 0.4, size=len(covered)), 2)
    # Large claims are approved less often: something for the demo's models to learn.
    approve_p = 0.97 - 0.5 * np.clip((amount - 500.0) / 2500.0, 0.0, 1.0)
    return pd.DataFrame({
        "patient_id": covered,
        "plan": plan,
        "claim_amount": amount,
        "approved": rng.random(len(covered)) < approve_p,
    })


HOSPITAL_POLICY = """\
consumers = ["university"]
min_group_size = 20
small_groups = "drop"
allowed_backends = ["local-sandbox"]
# Public ranges (age in years, the tariff's cap), used by the synthetic view and nothing else.
bounds = { age = [0, 120], visit_cost = [0, 5000] }
# patient_id joins with the insurer's views: synthetic keys, as many visits per key as in the
# data, matching the insurer's as often as the data does by DP counts (0.1 each; see README).
join_keys = ["patient_id"]

[categories]               # public values
region = ["north", "south", "east", "west"]
diagnosis = ["asthma", "diabetes", "fracture", "flu", "hypertension"]

[privacy_unit]             # DP protects a patient: at most 4 visits of each are used
id_column = "patient_id"
max_contributions = 4

[approval]
mode = "manual"

[views.mock]
rows = 2000

[views.synthetic]          # built in the background after the upload; charged to the budget
epsilon = 1.0
rows = 4000
exclude = ["visit_id"]     # a row number: nothing to model

[budget]                   # 1.0 of it pays for the synthetic view, for every consumer
epsilon = 4.0
delta = 1e-5
rule = "basic"
"""

INSURER_POLICY = """\
consumers = ["university"]
min_group_size = 25
small_groups = "drop"
allowed_backends = ["local-sandbox"]
categories = { plan = ["basic", "plus", "premium"] }
# Public bounds (not secret: the plans' claim cap), used by the synthetic view and nothing else.
bounds = { claim_amount = [0, 10000] }
# The views carry synthetic keys, one per row as in the data, as many of them drawn from the
# hospital's view keys as the DP count of the patients both have says (0.1 to each budget).
join_keys = ["patient_id"]

[privacy_unit]
id_column = "patient_id"
max_contributions = 1

[approval]
mode = "manual"

[views.mock]
rows = 1000

[views.synthetic]          # built in the background after the upload; charged to the budget
epsilon = 1.0
rows = 2000
target = "approved"        # the provider's report scores a model trained on the view
# patient_id is the privacy unit and a join key: not fitted, its view keys are filled in.

[budget]                   # 1.0 of it pays for the synthetic view, for every consumer
epsilon = 4.0
delta = 1e-5
rule = "basic"
"""
