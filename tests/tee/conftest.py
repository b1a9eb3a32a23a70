"""Fixtures for tests/tee: the attestation ones live in attest_support.py."""

from attest_support import pinned_ak, swtpm_state, world

__all__ = ["pinned_ak", "swtpm_state", "world"]
