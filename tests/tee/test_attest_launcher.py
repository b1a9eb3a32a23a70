"""Launcher wiring that needs no server: verifier key persistence/rotation, policy section."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from veil.catalog.errors import PolicyError
from veil.catalog.policy import parse_policy
from veil.tee.services import NonceBook, _load_keyring


def test_signing_keys_persist_0600_and_rotate_when_old(tmp_path: Path) -> None:
    directory = tmp_path / "attest"
    ring = _load_keyring(directory, rotate_after_days=30)
    path = directory / "signing-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert _load_keyring(directory, rotate_after_days=30).current_kid == ring.current_kid
    old = time.time() - 31 * 86400
    os.utime(path, (old, old))
    rotated = _load_keyring(directory, rotate_after_days=30)
    assert rotated.current_kid != ring.current_kid
    kids = {k["kid"] for k in rotated.jwks()["keys"]}
    assert ring.current_kid in kids  # the old key still verifies tokens it signed


def test_nonces_are_single_use_and_expire() -> None:
    book = NonceBook()
    book.put("a", expires_at=100.0)
    book.put("b", expires_at=100.0)
    assert book.consume("a", now=50.0) is True
    assert book.consume("a", now=50.0) is False
    assert book.consume("b", now=101.0) is False
    assert book.consume("never-issued", now=0.0) is False


def test_attestation_section_defaults_and_strictness() -> None:
    policy = parse_policy('consumers = ["lab"]\n', format="toml")
    assert policy.attestation is None
    strict = parse_policy('[attestation]\nrequire_hardware_backed = true\n', format="toml")
    assert strict.attestation is not None and strict.attestation.require_hardware_backed
    for bad in ('[attestation]\nrequire_hardware = true\n',
                '[attestation]\nrequired_status = "contraindicated"\n',
                '[attestation]\nallowed_backends = []\n',
                '[attestation]\nallowed_backends = ["Local Sandbox"]\n',
                '[attestation]\nmax_token_age_s = 0\n',
                '[attestation]\nallow_debug = "yes"\n'):
        with pytest.raises(PolicyError):
            parse_policy(bad, format="toml")
