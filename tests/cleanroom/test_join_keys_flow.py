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
from veil.sdk.client import Client


def _policy(join: str) -> str:
    return join + POLICY.format(k=5, mode="manual", digests="[]")


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
            _policy('join_keys = ["patient_id"]\njoin_sample_rate = 0.5\n'))
    _upload(world.insurer, tmp_path, "claims", claims_csv(300),
            _policy('join_keys = ["patient_id"]\njoin_sample_rate = 1.0\n'))
    _upload(world.insurer, tmp_path, "plain", claims_csv(300), _policy(""))
    assert world.researcher.dataset("hospital/visits")["join_keys"] == ["patient_id"]
    assert world.researcher.dataset("insurer/plain")["join_keys"] == []

    views = {}
    for name in ("hospital/visits", "insurer/claims"):
        _, data = world.researcher.view(name, "mock")
        views[name] = pd.read_parquet(io.BytesIO(data))
    visits, claims = views["hospital/visits"], views["insurer/claims"]
    assert visits["patient_id"].notna().all() and claims["patient_id"].notna().all()
    assert not set(visits["patient_id"]) & set(range(1, 301))  # no real id in a view
    matched = visits["patient_id"].isin(set(claims["patient_id"])).mean()
    assert 0.15 < matched < 1.0  # half of the hospital's patients are insured
    assert len(visits.merge(claims, on="patient_id")) > 0

    veil.sdk.connect(live_server.url, world.researcher.token)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        veil.sdk.load("hospital/visits", view="mock")  # declared on both sides: no warning
    with pytest.warns(UserWarning, match="'patient_id' is not a declared join key") as caught:
        veil.sdk.load("insurer/plain", view="mock")
    assert "hospital/visits" in str(caught[0].message)
