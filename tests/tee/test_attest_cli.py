"""`veil attest verify`: offline verification of a final token against the consumer's files."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from attest_support import DATASET, ISSUER, JOB, World, swtpm_verifier
from typer.testing import CliRunner

from veil.cli.attest import app
from veil.crypto.keys import SigningKeyRing
from veil.tee.attestation import SwtpmAttester, measure_launch, output_manifest_nonce, report_data

runner = CliRunner()
NOTEBOOK: dict[str, Any] = {
    "cells": [{"cell_type": "code", "source": "import veil\ndf = veil.load('acme/claims')",
               "metadata": {}, "outputs": [], "execution_count": None}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}
RUNTIME = "veil-runtime/test python/3.11"


def _digest(nb: Path) -> str:
    from veil.jobs.bundle import make_bundle

    return make_bundle({nb.name: nb.read_bytes()}, entrypoint=nb.name, inputs=[DATASET],
                       outputs=["summary"], runtime=RUNTIME).digest


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    nb = tmp_path / "analysis.ipynb"
    nb.write_text(json.dumps(NOTEBOOK))
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "summary.csv").write_text("n,mean\n120,4.2\n")
    manifest = {"outputs": [{"name": "summary", "kind": "table", "file": "summary.csv",
                             "sha256": hashlib.sha256(b"n,mean\n120,4.2\n").hexdigest()}]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return nb, out, manifest


def _signed_final(ring: SigningKeyRing, digest: str, manifest: dict[str, Any],
                  status: str = "warning", exp_in: int = 300) -> str:
    now = int(time.time())
    nonce = output_manifest_nonce(manifest)
    return ring.sign({
        "iss": ISSUER, "iat": now, "exp": now + exp_in, "eat_nonce": nonce,
        "hwmodel": "LOCAL_SWTPM", "dbgstat": "enabled", "ear.status": status,
        "submods": {"bundle": {"digest": digest, "runtime": RUNTIME, "entrypoint":
                               "analysis.ipynb", "inputs": [DATASET], "outputs": ["summary"]}},
        "x-veil": {"phase": "final", "job": JOB, "backend": "local-sandbox",
                   "hardware_backed": False, "tee_public_key": "",
                   "report_data": report_data(nonce, "", JOB).hex()},
    })


def _run(tmp_path: Path, ring: SigningKeyRing, token: str, *extra: str) -> Any:
    (tmp_path / "jwks.json").write_text(json.dumps(ring.jwks()))
    (tmp_path / "token.jwt").write_text(token)
    return runner.invoke(app, ["verify", str(tmp_path / "token.jwt"), "--jwks",
                               str(tmp_path / "jwks.json"), *extra])


def test_valid_token_bundle_and_outputs_verify(tmp_path: Path, files: Any) -> None:
    nb, out, manifest = files
    ring = SigningKeyRing()
    res = _run(tmp_path, ring, _signed_final(ring, _digest(nb), manifest),
               "--bundle", str(nb), "--outputs", str(out), "--issuer", ISSUER)
    assert res.exit_code == 0, res.output
    assert "VERIFIED" in res.output and "NOT VERIFIED" not in res.output
    assert "not hardware-backed" in res.output


def test_cleared_notebook_outputs_do_not_change_the_digest(tmp_path: Path, files: Any) -> None:
    nb, _, manifest = files
    ring = SigningKeyRing()
    token = _signed_final(ring, _digest(nb), manifest)
    cell: dict[str, Any] = dict(NOTEBOOK["cells"][0])
    cell.update(execution_count=3, outputs=[{"output_type": "stream", "text": "x"}])
    executed = dict(NOTEBOOK, cells=[cell])
    nb.write_text(json.dumps(executed))
    assert _run(tmp_path, ring, token, "--bundle", str(nb)).exit_code == 0


def test_changed_code_fails_the_bundle_check(tmp_path: Path, files: Any) -> None:
    nb, _, manifest = files
    ring = SigningKeyRing()
    token = _signed_final(ring, _digest(nb), manifest)
    nb.write_text(json.dumps(NOTEBOOK).replace("acme/claims", "acme/other"))
    res = _run(tmp_path, ring, token, "--bundle", str(nb))
    assert res.exit_code == 1 and "FAIL bundle" in res.output


def test_tampered_output_file_fails(tmp_path: Path, files: Any) -> None:
    nb, out, manifest = files
    ring = SigningKeyRing()
    token = _signed_final(ring, _digest(nb), manifest)
    (out / "summary.csv").write_text("n,mean\n120,9.9\n")
    res = _run(tmp_path, ring, token, "--outputs", str(out))
    assert res.exit_code == 1 and "DIFFERS" in res.output


def test_edited_manifest_fails(tmp_path: Path, files: Any) -> None:
    nb, out, manifest = files
    ring = SigningKeyRing()
    token = _signed_final(ring, _digest(nb), manifest)
    (out / "extra.csv").write_text("x")
    manifest["outputs"].append({"name": "extra", "kind": "table", "file": "extra.csv",
                                "sha256": hashlib.sha256(b"x").hexdigest()})
    (out / "manifest.json").write_text(json.dumps(manifest))
    res = _run(tmp_path, ring, token, "--outputs", str(out))
    assert res.exit_code == 1 and "FAIL output manifest" in res.output


def test_manifest_escaping_the_folder_fails(tmp_path: Path, files: Any) -> None:
    nb, out, manifest = files
    manifest["outputs"][0]["file"] = "../analysis.ipynb"
    (out / "manifest.json").write_text(json.dumps(manifest))
    ring = SigningKeyRing()
    res = _run(tmp_path, ring, _signed_final(ring, _digest(nb), manifest), "--outputs", str(out))
    assert res.exit_code == 1 and "outside the folder" in res.output


def test_token_from_unknown_key_expired_or_insecure_fails(tmp_path: Path, files: Any) -> None:
    nb, _, manifest = files
    ring, other = SigningKeyRing(), SigningKeyRing()
    res = _run(tmp_path, ring, _signed_final(other, _digest(nb), manifest))
    assert res.exit_code == 1 and "unknown key" in res.output
    res = _run(tmp_path, ring, _signed_final(ring, _digest(nb), manifest, exp_in=-600))
    assert res.exit_code == 1 and "expired" in res.output
    res = _run(tmp_path, ring, _signed_final(ring, _digest(nb), manifest,
                                             status="contraindicated"))
    assert res.exit_code == 1 and "INSECURE" in res.output
    res = _run(tmp_path, ring, _signed_final(ring, _digest(nb), manifest), "--issuer", "x")
    assert res.exit_code == 1


def test_unreadable_jwks_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text("[]")
    res = runner.invoke(app, ["verify", "abc", "--jwks", str(tmp_path / "jwks.json")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["verify", "abc", "--jwks", str(tmp_path / "missing.json")])
    assert res.exit_code == 2


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, SigningKeyRing]]:
    ring = SigningKeyRing()
    body = json.dumps(ring.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/.well-known/jwks.json" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", ring
    server.shutdown()
    server.server_close()


def test_jwks_can_come_from_a_url(tmp_path: Path, files: Any, jwks_server: Any) -> None:
    url, ring = jwks_server
    nb, out, manifest = files
    token = _signed_final(ring, _digest(nb), manifest)
    res = runner.invoke(app, ["verify", token, "--jwks", url, "--bundle", str(nb),
                              "--outputs", str(out)])
    assert res.exit_code == 0, res.output


@pytest.mark.tpm
def test_real_final_token_from_swtpm_verifies(
    tmp_path: Path, files: Any, world: World, swtpm_state: Path, pinned_ak: Any
) -> None:
    nb, out, manifest = files
    log = measure_launch(
        bundle_digest=_digest(nb), runtime={"name": "veil-python", "version": "3.11"},
        inputs=[{"id": DATASET, "sha256": "sha256:" + "22" * 32}],
        backend={"name": "local-sandbox"}, bundle_runtime=RUNTIME,
        bundle_entrypoint="analysis.ipynb", bundle_inputs=[DATASET], bundle_outputs=["summary"],
    )
    nonce = output_manifest_nonce(manifest)
    with SwtpmAttester(swtpm_state) as attester:
        attester.measure(log)
        evidence = attester.evidence(log, report_data(nonce, "", JOB))
    token = swtpm_verifier(world, pinned_ak).appraise_final(evidence, output_manifest=manifest,
                                                             job=JOB)
    res = _run(tmp_path, world.ring, token, "--bundle", str(nb), "--outputs", str(out))
    assert res.exit_code == 0, res.output
