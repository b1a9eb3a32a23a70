"""ADAPTER (temporary): calls the workspace needs that `veil.sdk.client.Client` lacks today.

Issue 11 part A adds `Client.download_all(job_id, directory) -> list[Path]`, the job's
attestation and `POST /jobs/preflight`. Until they are merged, these thin functions use the
routes that exist (`/jobs/{id}/attestation`, `/jobs/{id}/outputs/{name}`, `/runtime`, the
JWKS); each prefers the Client method when it exists, so pointing the workspace at the new
methods is a matter of deleting the fallbacks here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from veil.release.manifest import MANIFEST_NAME as MANIFEST_FILE
from veil.sdk.client import ApiError, Client

TOKEN_FILE = "attestation.jwt"
OUTPUTS_DIR = "outputs"


def runtime(client: Client) -> str:
    """The secure stage's runtime string, which the bundle digest covers."""
    return str(client._json("GET", "/runtime")["runtime"])


def jwks(client: Client) -> dict[str, Any]:
    """The verifier's public keys: the one thing the consumer trusts."""
    response = client._http.get("/.well-known/jwks.json")
    if response.status_code != 200:
        raise ApiError(response.status_code, "the verifier's JWKS is unavailable")
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ApiError(502, "the verifier's JWKS is malformed")
    return data


def attestation(client: Client, job_id: str) -> dict[str, Any]:
    fn = getattr(client, "attestation", None)
    if callable(fn):
        return dict(fn(job_id))
    return dict(client._json("GET", f"/jobs/{job_id}/attestation"))


def download_all(client: Client, job_id: str, directory: Path) -> list[Path]:
    """Released outputs, the output manifest and the final token into `directory`.

    Layout: ``outputs/<file>`` per released manifest entry, ``outputs/manifest.json``,
    ``attestation.jwt``. Manifest file names come from the workload: anything that is not a
    plain file name is refused rather than written.
    """
    fn = getattr(client, "download_all", None)
    if callable(fn):
        return [Path(p) for p in fn(job_id, directory)]
    job = client.job(job_id)
    doc = attestation(client, job_id)
    manifest = doc["manifest"]
    out = directory / OUTPUTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    released = {o["name"] for o in job["outputs"] if o["status"] == "released"}
    written: list[Path] = []
    for entry in manifest.get("outputs", []):
        name, file = entry.get("name"), entry.get("file")
        if name not in released:
            continue
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise ApiError(502, f"output {name!r} names an unsafe file in the manifest")
        path = out / file
        path.write_bytes(client.output(job_id, name))
        written.append(path)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    (directory / TOKEN_FILE).write_text(doc["token"])
    return [*written, out / MANIFEST_FILE, directory / TOKEN_FILE]


def preflight(client: Client, files: dict[str, bytes], entrypoint: str,
              inputs: list[str]) -> dict[str, Any] | None:
    """The gate's verdict per output before submitting, if the server has the route.

    Returns None when it does not (404/405), so the sidebar says "no pre-flight" rather than
    pretending every output will pass.
    """
    fn = getattr(client, "preflight", None)
    try:
        if callable(fn):
            return dict(fn(files, entrypoint=entrypoint, inputs=inputs))
        spec = {"entrypoint": entrypoint, "inputs": inputs, "outputs": []}
        multipart: list[tuple[str, tuple[str | None, str | bytes, str]]] = [
            ("spec", (None, json.dumps(spec), "application/json"))]
        multipart += [("files", (n, d, "application/octet-stream")) for n, d in files.items()]
        return dict(client._json("POST", "/jobs/preflight", files=multipart))
    except ApiError as exc:
        if exc.status in (404, 405):
            return None
        raise
