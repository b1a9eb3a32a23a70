"""Join keys through the real server: joinable pseudonyms in the views, warnings in veil.load."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import veil.sdk
from tests.cleanroom.helpers import POLICY, claims_csv, make_world, visits_csv
from veil.sdk.client import ApiError, Client

BUDGET = "\n[budget]\nepsilon = 3.0\ndelta = 1e-6\n"


def _policy(join: str, budget: str = "") -> str:
    return join + POLICY.format(k=5, mode="manual", digests="[]") + budget


def _upload(client: Client, tmp: Path, name: str, text: str, policy: str) -> dict[str, Any]:
    path = tmp / f"{name}.csv"
    path.write_text(text)
    return client.upload(name, path, policy=policy, policy_format="toml")


@pytest.fixture
def sdk_reset() -> Iterator[None]:
    yield
    veil.sdk._client = None


def test_views_join_on_pseudonyms_and_load_warns_about_undeclared_ids(
        live_server: Any, tmp_path: Path, sdk_reset: None) -> None:
    world = make_world(live_server)
    _upload(world.hospital, tmp_path, "visits", visits_csv(300),
            _policy('join_keys = ["patient_id"]\njoin_sample_rate = 0.5\n', BUDGET))
    claims = _upload(world.insurer, tmp_path, "claims", claims_csv(300),
                     _policy('join_keys = ["patient_id"]\njoin_sample_rate = 1.0\n', BUDGET))
    # Nobody consumes both this one and the hospital's: its keys match nothing.
    apart = _upload(world.insurer, tmp_path, "apart", claims_csv(300),
                    _policy('join_keys = ["patient_id"]\n').replace('["lab"]', '["insurer"]'))
    _upload(world.insurer, tmp_path, "plain", claims_csv(300), _policy(""))
    assert world.researcher.dataset("hospital/visits")["join_keys"] == ["patient_id"]
    assert world.researcher.dataset("insurer/plain")["join_keys"] == []

    views = {}
    for name in ("hospital/visits", "insurer/claims"):
        _, data = world.researcher.view(name, "mock")
        views[name] = pd.read_parquet(io.BytesIO(data))
    visits, insured = views["hospital/visits"], views["insurer/claims"]
    assert visits["patient_id"].notna().all() and insured["patient_id"].notna().all()
    assert not set(visits["patient_id"]) & set(range(1, 301))  # no real id in a view
    matched = visits["patient_id"].isin(set(insured["patient_id"])).mean()
    assert 0.3 < matched < 0.7  # half of the hospital's patients are insured
    assert len(visits.merge(insured, on="patient_id")) > 0
    # Every key came from DP counts: the insurer's build released its distinct keys and its
    # overlap with the hospital's (charged to both budgets), and says how its keys were drawn.
    drawn = world.researcher.dataset("insurer/claims")["view_info"]["mock"]["join_keys"]
    assert drawn["patient_id"]["matched"]["hospital/visits"] > 0
    assert drawn["patient_id"]["epsilon"] == pytest.approx(0.2, rel=1e-5)
    assert claims["view_info"]["mock"]["join_keys"] == drawn
    assert apart["view_info"]["mock"]["join_keys"]["patient_id"]["matched"] == {}
    spent = {b["dataset"]: b["views_epsilon"] for b in world.researcher.budgets()}
    assert spent["hospital/visits"]["joinkeys"] == pytest.approx(0.1 + 0.1, rel=1e-5)
    assert spent["insurer/claims"]["joinkeys"] == pytest.approx(0.1 + 0.1, rel=1e-5)

    veil.sdk.connect(live_server.url, world.researcher.token)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        veil.sdk.load("hospital/visits", view="mock")  # declared on both sides: no warning
    with pytest.warns(UserWarning, match="'patient_id' is not a declared join key") as caught:
        veil.sdk.load("insurer/plain", view="mock")
    assert "hospital/visits" in str(caught[0].message)


def test_an_overlap_count_needs_room_in_both_budgets(live_server: Any, tmp_path: Path) -> None:
    """The hospital's budget pays its own distinct count (0.1) but has no room for an overlap:
    the insurer's keys match nothing there and the hospital is charged nothing more. A budget
    too small even for the distinct count is refused at upload, naming join_epsilon."""
    world = make_world(live_server)
    tight = "\n[budget]\nepsilon = 0.15\ndelta = 1e-6\n"
    _upload(world.hospital, tmp_path, "visits", visits_csv(300),
            _policy('join_keys = ["patient_id"]\n', tight))
    claims = _upload(world.insurer, tmp_path, "claims", claims_csv(300),
                     _policy('join_keys = ["patient_id"]\n', BUDGET))
    assert claims["view_info"]["mock"]["join_keys"]["patient_id"]["matched"] == {}
    spent = {b["dataset"]: b["views_epsilon"] for b in world.researcher.budgets()}
    assert spent["hospital/visits"] == {"joinkeys": pytest.approx(0.1, rel=1e-5)}
    assert spent["insurer/claims"] == {"joinkeys": pytest.approx(0.1, rel=1e-5)}
    with pytest.raises(ApiError) as refused:
        _upload(world.hospital, tmp_path, "tiny", visits_csv(300),
                _policy('join_keys = ["patient_id"]\njoin_epsilon = 0.5\n', tight))
    assert refused.value.status == 422 and "join_epsilon" in str(refused.value)
