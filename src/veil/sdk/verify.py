"""Verify a secure-stage token against your own files: what a consumer trusts and checks.

Only the verifier's JWKS is trusted: the bundle digest is recomputed from the consumer's own
files (notebook and pinned plans) and every output file is re-hashed against the token's
manifest. Used by ``veil attest verify``, the demo, and anything else a consumer runs (the
JupyterLab workspace, the web console); it never raises for a bad token — each check says
what it found.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AttestInputError", "Verdict", "load_jwks", "load_token", "verify_token"]

_HINTS = {
    "warning": "software TPM evidence: not hardware-backed, debug enabled (local backend)",
    "contraindicated": "INSECURE evidence (test mode): proves nothing",
    "affirming": "hardware-backed evidence appraised by the verifier",
}


class AttestInputError(Exception):
    """A JWKS or token to verify could not be read or parsed."""


@dataclass
class Verdict:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    # Outputs the attested manifest lists but the folder lacks: rejected or refused at review,
    # so never released. Not a failure: the token still proves every file that is there.
    not_released: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))


def load_jwks(source: str) -> dict[str, Any]:
    try:
        if source.startswith(("http://", "https://")):
            import httpx

            response = httpx.get(source, timeout=10, follow_redirects=False)
            response.raise_for_status()
            data = response.json()
        else:
            data = json.loads(Path(source).read_text())
    except Exception as exc:
        raise AttestInputError(f"cannot load JWKS from {source}: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise AttestInputError("JWKS must be a JSON object with a 'keys' list")
    return data


def load_token(token: str) -> str:
    """A token string, or the contents of the file it names."""
    if token.count(".") == 2 and "/" not in token:
        return token.strip()
    try:
        return Path(token).read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise AttestInputError("TOKEN is neither a compact JWT nor a readable file") from None


def _recompute_bundle_digest(
    files: Mapping[str, bytes], bundle: Mapping[str, Any]
) -> str:
    """Recompute the digest with the jobs part's own measurement code (imported lazily)."""
    from veil.jobs import bundle as jobs_bundle

    inputs = [str(x) for x in bundle.get("inputs", [])]
    outputs = [str(x) for x in bundle.get("outputs", [])]
    runtime = str(bundle.get("runtime", ""))
    fn = getattr(jobs_bundle, "bundle_digest", None)
    if fn is not None:
        return str(fn(files, runtime, inputs, outputs))
    entrypoint = str(bundle.get("entrypoint") or "")
    if not entrypoint and len(files) == 1:
        entrypoint = next(iter(files))
    made = jobs_bundle.make_bundle(
        files, entrypoint=entrypoint, inputs=inputs, outputs=outputs, runtime=runtime
    )
    return str(made.digest)


def _hex(value: Any) -> str:
    text = str(value)
    return text.removeprefix("sha256:").lower()


def _check_outputs(verdict: Verdict, outputs_dir: Path, claims: Mapping[str, Any]) -> None:
    from veil.tee.attestation.evidence import output_manifest_nonce

    manifest_path = outputs_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["outputs"]
        if not isinstance(entries, list):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        verdict.add("outputs", False, f"cannot read an output manifest at {manifest_path}")
        return
    phase = claims.get("x-veil", {}).get("phase")
    nonce = output_manifest_nonce(manifest)
    verdict.add("output manifest", phase == "final" and claims.get("eat_nonce") == nonce,
                "manifest digest matches the token's eat_nonce" if claims.get("eat_nonce") ==
                nonce else "manifest does not match this token (or the token is not a final one)")
    root = outputs_dir.resolve()
    for entry in entries:
        name = str(entry.get("name", "?")) if isinstance(entry, dict) else "?"
        rel = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(rel, str):
            verdict.add(f"output {name}", False, "manifest entry names no file")
            continue
        path = (outputs_dir / rel).resolve()
        if not path.is_relative_to(root):
            verdict.add(f"output {name}", False, f"file {rel} is outside the folder")
            continue
        if not path.exists():
            verdict.not_released.append(name)
            continue
        if not path.is_file():
            verdict.add(f"output {name}", False, f"{rel} is not a regular file")
            continue
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        verdict.add(f"output {name}", actual == _hex(entry.get("sha256")),
                    "sha256 matches" if actual == _hex(entry.get("sha256")) else
                    "sha256 DIFFERS from the manifest")


def verify_token(
    token: str,
    jwks: Mapping[str, Any],
    *,
    bundle_files: Sequence[Path] = (),
    outputs_dir: Path | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> Verdict:
    """All the checks behind ``veil attest verify``; never raises for a bad token."""
    from veil.tee.attestation.errors import VerificationError
    from veil.tee.verifier import verify_result

    verdict = Verdict()
    try:
        result = verify_result(token, jwks, issuer=issuer, now=now)
    except VerificationError as exc:
        verdict.add("signature and time", False, str(exc))
        return verdict
    claims = result.claims
    verdict.claims = claims
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.expires_at))
    verdict.add("signature and time", True, f"signed by a trusted key; valid until {expires}")
    verdict.add("status", result.status != "contraindicated",
                f"ear.status={result.status}: {_HINTS.get(result.status, '')}")
    if bundle_files:
        try:
            files = {path.name: path.read_bytes() for path in bundle_files}
            bundle = claims.get("submods", {}).get("bundle", {})
            digest = _recompute_bundle_digest(files, bundle)
            verdict.add("bundle", digest == result.bundle_digest,
                        f"your files hash to {digest}" + (
                            "" if digest == result.bundle_digest
                            else f", the token attests {result.bundle_digest}"))
        except Exception as exc:  # BundleError, OSError, ImportError: report, don't crash
            verdict.add("bundle", False, f"cannot recompute the bundle digest: {exc}")
    if outputs_dir is not None:
        _check_outputs(verdict, outputs_dir, claims)
    return verdict
