"""Shared fixtures and helpers for the attestation/broker tests (imported, not a conftest)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.crypto import hpke
from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation import (
    EventLog,
    SwtpmAttester,
    create_swtpm_state,
    enroll_ak,
    measure_launch,
    report_data,
    swtpm_missing,
)
from veil.tee.broker import InMemoryBrokerStore, KeyBroker, KeyPolicy
from veil.tee.verifier import Verifier

ISSUER = "https://veil.test/verifier"
BUNDLE = "sha256:" + "ab" * 32
OTHER_BUNDLE = "sha256:" + "cd" * 32
JOB = "job-42"
DATASET = "acme/claims"
PROVIDER = "acme"
DATA_KEY = bytes(range(32))

LOCAL_POLICY = KeyPolicy(
    allowed_backends=frozenset({"local-sandbox"}),
    required_status="warning",
    require_hardware_backed=False,
    allow_debug=True,
    max_token_age_s=120,
)


def launch_log(bundle: str = BUNDLE) -> EventLog:
    return measure_launch(
        bundle_digest=bundle,
        runtime={"name": "veil-python", "version": "3.11", "digest": "sha256:" + "11" * 32},
        inputs=[{"id": DATASET, "sha256": "sha256:" + "22" * 32}],
        backend={"name": "local-sandbox", "network": "none"},
        bundle_runtime="python3.11",
        bundle_entrypoint="analysis.ipynb",
        bundle_inputs=[DATASET],
        bundle_outputs=["summary"],
    )


@pytest.fixture(scope="session")
def swtpm_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = swtpm_missing()
    if reason:
        pytest.skip(f"swtpm tests need swtpm + tpm2-pytss: {reason}")
    return create_swtpm_state(tmp_path_factory.mktemp("swtpm") / "state")


@pytest.fixture(scope="session")
def pinned_ak(swtpm_state: Path) -> Any:
    return enroll_ak(swtpm_state)


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    clock: Clock
    ring: SigningKeyRing
    verifier: Verifier
    store: InMemoryBrokerStore
    broker: KeyBroker

    def sign_result(
        self, patch: Callable[[dict[str, Any]], None] | None = None
    ) -> tuple[str, str, X25519PrivateKey]:
        """A well-formed hardware-style launch result signed by the verifier's key.

        Lets the broker's policy be tested on its own; ``patch`` edits the claims first.
        """
        nonce = self.broker.challenge()
        tee_key = hpke.generate_private_key()
        pub = hpke.encode_public_key(tee_key.public_key())
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 300, "jti": "t",
            "eat_nonce": nonce, "hwmodel": "GCP_AMD_SEV", "swname": "veil-launcher",
            "dbgstat": "disabled-since-boot", "ear.status": "affirming",
            "submods": {"bundle": {"digest": BUNDLE}},
            "x-veil": {
                "phase": "launch", "job": JOB, "backend": "gcp-confidential-space",
                "hardware_backed": True, "tee_public_key": pub,
                "report_data": report_data(nonce, pub, JOB).hex(),
            },
        }
        if patch is not None:
            patch(claims)
        return self.ring.sign(claims), pub, tee_key


@pytest.fixture
def world() -> Iterator[World]:
    clock = Clock()
    ring = SigningKeyRing()
    verifier = Verifier(ring, issuer=ISSUER, clock=clock)
    store = InMemoryBrokerStore()
    store.add_dataset(DATASET, PROVIDER, LOCAL_POLICY, DATA_KEY)
    store.approve(provider=PROVIDER, job=JOB, bundle_digest=BUNDLE)
    broker = KeyBroker(store, trusted_jwks=ring.jwks, issuer=ISSUER, clock=clock)
    yield World(clock, ring, verifier, store, broker)


def swtpm_verifier(world: World, ak: Any) -> Verifier:
    return Verifier(world.ring, issuer=ISSUER, trusted_aks=[ak], clock=world.clock)


def attest_launch(
    state: Path, verifier: Verifier, nonce: str, *, bundle: str = BUNDLE, job: str = JOB
) -> tuple[str, str, Any]:
    """Launcher + workload side of one job with a real swtpm: returns (token, pubkey, privkey)."""
    tee_key = hpke.generate_private_key()
    pub = hpke.encode_public_key(tee_key.public_key())
    log = launch_log(bundle)
    with SwtpmAttester(state) as attester:
        attester.measure(log)
        evidence = attester.evidence(log, report_data(nonce, pub, job))
    token = verifier.appraise(evidence.to_dict(), nonce=nonce, tee_public_key=pub, job=job)
    return token, pub, tee_key
