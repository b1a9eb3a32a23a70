"""A small typed HTTP client for Veil's API (used by the SDK, the CLI and the demo)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx


class ApiError(Exception):
    """The server refused a request; `status` and `detail` say why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class BuildFailed(ApiError):
    """A dataset's views could not be built; ``detail`` is the server's reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, detail)


class Client:
    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 120.0) -> None:
        self.url = (url or os.environ.get("VEIL_URL") or "http://127.0.0.1:8470").rstrip("/")
        self.token = token or os.environ.get("VEIL_TOKEN")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_token(self, token: str) -> Client:
        return Client(self.url, token)

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, f"/api/v1{path}", **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    # -- identity ---------------------------------------------------------------------------
    def me(self) -> dict[str, Any]:
        return self._json("GET", "/me")

    def create_party(self, name: str) -> dict[str, Any]:
        return self._json("POST", "/admin/parties", json={"name": name})

    def create_user(self, name: str, role: str, party: str | None) -> dict[str, Any]:
        return self._json("POST", "/admin/users", json={"name": name, "role": role, "party": party})

    def parties(self) -> list[dict[str, Any]]:
        return self._json("GET", "/admin/parties")

    def users(self) -> list[dict[str, Any]]:
        return self._json("GET", "/admin/users")

    def tokens(self) -> list[dict[str, Any]]:
        return self._json("GET", "/admin/tokens")

    def issue_token(self, user: str) -> dict[str, Any]:
        return self._json("POST", "/admin/tokens", json={"user": user})

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return self._json("POST", f"/admin/tokens/{token_id}/revoke")

    def rotate_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token and issue its user a new one (returned once, in ``token``)."""
        return self._json("POST", f"/admin/tokens/{token_id}/rotate")

    # -- datasets ---------------------------------------------------------------------------
    def upload(self, name: str, data: Path | BinaryIO, *, policy: str, policy_format: str,
               filename: str | None = None, wait: bool = True,
               progress: Callable[[dict[str, Any]], None] | None = None,
               timeout_s: float = 3600.0) -> dict[str, Any]:
        """Create the dataset and stream the data. The server answers once the data is
        stored (status ``building``) and builds the views in the background; with ``wait``
        this polls until they are ready (``progress`` sees each poll's dataset record) and
        raises :class:`BuildFailed` with the server's reason if they cannot be built."""
        draft = self._json("POST", "/datasets", json={
            "name": name, "policy": policy, "policy_format": policy_format})
        if isinstance(data, Path):
            filename = filename or data.name
            with data.open("rb") as fh:
                info = self._upload_body(draft["id"], _chunks(fh), filename)
        else:
            info = self._upload_body(draft["id"], _chunks(data), filename or "upload.csv")
        return self.wait_ready(info["name"], progress=progress, timeout_s=timeout_s) \
            if wait else info

    def wait_ready(self, full_name: str, *, progress: Callable[[dict[str, Any]], None] | None
                   = None, timeout_s: float = 3600.0, poll_s: float = 0.25) -> dict[str, Any]:
        """Poll a dataset until its views are built; its record once ``ready``."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.dataset(full_name)
            if progress is not None:
                progress(info)
            if info["status"] == "ready":
                return info
            if info["status"] == "failed":
                reason = (info.get("build") or {}).get("reason", "the views could not be built")
                raise BuildFailed(reason)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{full_name} is still {info['status']} after {timeout_s:g} s")
            time.sleep(poll_s)

    def _upload_body(self, dataset_id: str, body: Iterator[bytes],
                     filename: str) -> dict[str, Any]:
        return self._json("PUT", f"/datasets/{dataset_id}/data", params={"filename": filename},
                          content=body, headers={"Content-Type": "application/octet-stream"})

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/datasets")

    def dataset(self, full_name: str) -> dict[str, Any]:
        return self._json("GET", f"/datasets/{full_name}")

    def view(self, full_name: str, kind: str | None = None) -> tuple[str, bytes]:
        params = {"kind": kind} if kind else {}
        response = self._call("GET", f"/datasets/{full_name}/view", params=params)
        return response.headers["X-Veil-View"], response.content

    def update_policy(self, full_name: str, policy: str, *,
                      policy_format: str = "toml") -> dict[str, Any]:
        """Replace a dataset's policy; returns the dataset and the diff applied."""
        dataset_id = self.dataset(full_name)["id"]
        return self._json("PUT", f"/datasets/{dataset_id}/policy",
                          json={"policy": policy, "policy_format": policy_format})

    def delete_dataset(self, full_name: str) -> dict[str, Any]:
        dataset_id = self.dataset(full_name)["id"]
        return self._json("DELETE", f"/datasets/{dataset_id}")

    def runtime(self) -> dict[str, Any]:
        """The secure stage's runtime string, Python and packages (with their digest)."""
        return self._json("GET", "/runtime")

    def fidelity_plot(self, full_name: str, kind: str = "synthetic") -> bytes:
        """PNG plots of a DP view's fidelity (the dataset's provider only)."""
        return self._call("GET", f"/datasets/{full_name}/fidelity.png",
                          params={"kind": kind}).content

    def budgets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/budgets")

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, files: Mapping[str, bytes], *, entrypoint: str, inputs: Sequence[str],
               outputs: Sequence[str] = (), plans: Mapping[str, Any] | None = None
               ) -> dict[str, Any]:
        """Submit a bundle; ``plans`` (from ``veil.sdk.outputs.collect_plans``) pins the
        declared queries into it, so their results can be released without review."""
        return self._json("POST", "/jobs",
                          files=_bundle_form(files, entrypoint, inputs, outputs, plans))

    def preflight(self, files: Mapping[str, bytes], *, entrypoint: str, inputs: Sequence[str],
                  outputs: Sequence[str] = (), plans: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
        """Run the bundle on your stage-1 views in the secure stage's sandbox and preview the
        gate per output (auto-release / review / refused, ε needed vs left), with the run's
        diagnostics if it fails. Same arguments as ``submit``; nothing is charged or released.
        """
        return self._json("POST", "/jobs/preflight",
                          files=_bundle_form(files, entrypoint, inputs, outputs, plans))

    def jobs(self) -> list[dict[str, Any]]:
        return self._json("GET", "/jobs")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}")

    def wait(self, job_id: str, states: Iterable[str], *, timeout_s: float = 600.0,
             poll_s: float = 0.2,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll a job until it reaches one of `states`; TimeoutError after `timeout_s`.

        ``on_update`` sees the job each time its state, approvals or outputs change (progress
        for ``veil job wait`` and the JupyterLab jobs panel).
        """
        wanted = set(states)
        deadline = time.monotonic() + timeout_s
        seen: object = None
        while True:
            job = self.job(job_id)
            mark = (job["state"], len(job["approvals"]), len(job["transitions"]),
                    tuple(o["status"] for o in job["outputs"]))
            if on_update is not None and mark != seen:
                on_update(job)
            seen = mark
            if job["state"] in wanted:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def bundle_file(self, job_id: str, name: str) -> bytes:
        return self._call("GET", f"/jobs/{job_id}/bundle/{name}").content

    def bundle(self, job_id: str) -> dict[str, Any]:
        """The measured bundle document: digest, runtime, entrypoint, inputs, outputs, files."""
        return self._json("GET", f"/jobs/{job_id}/bundle")

    def download_bundle(self, job_id: str, directory: Path) -> list[Path]:
        """Write the bundle's files into ``directory``, each checked against its measured hash."""
        info = self.bundle(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for entry in info["files"]:
            data = self.bundle_file(job_id, entry["path"])
            _check_hash(data, entry["sha256"], f"bundle file {entry['path']}")
            written.append(_write(directory, entry["path"], data))
        return written

    def attestation(self, job_id: str) -> dict[str, Any]:
        """The job's final token and the output manifest it binds."""
        return self._json("GET", f"/jobs/{job_id}/attestation")

    def jwks(self) -> dict[str, Any]:
        """The verifier's public keys (verify tokens against a copy you trust)."""
        response = self._http.get("/.well-known/jwks.json")
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return dict(response.json())

    def download_all(self, job_id: str, directory: Path) -> list[Path]:
        """Every released output, plus ``manifest.json``, ``token.jwt`` and ``attestation.json``.

        Output files take the names the attested manifest gives them, so
        ``veil attest verify token.jwt --outputs DIR`` checks the folder as it is; outputs that
        were not released (rejected, refused) are absent and reported as such.
        """
        job = self.job(job_id)
        proof = self.attestation(job_id)
        files = {e["name"]: e["file"] for e in proof["manifest"].get("outputs", [])}
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for output in job["outputs"]:
            if output["status"] != "released":
                continue
            data = self.output(job_id, output["name"])
            _check_hash(data, output["sha256"], f"output {output['name']}")
            written.append(_write(directory, files.get(output["name"], output["name"]), data))
        written.append(_write(directory, "manifest.json",
                              json.dumps(proof["manifest"], indent=2).encode()))
        written.append(_write(directory, "token.jwt", proof["token"].encode() + b"\n"))
        summary = {"job": job_id, "digest": job["digest"], "backend": job["backend"],
                   "insecure": job["insecure"], "jwks_uri": proof["jwks_uri"],
                   "attestation": (job.get("result") or {}).get("attestation"),
                   "outputs": {o["name"]: o["status"] for o in job["outputs"]}}
        written.append(_write(directory, "attestation.json",
                              json.dumps(summary, indent=2).encode()))
        return written

    def approve(self, job_id: str, digest: str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/approve", json={"digest": digest})

    def auto_approve(self, job_id: str) -> dict[str, Any]:
        """Approve this job's digest automatically for its consumer party from now on."""
        return self._json("POST", f"/jobs/{job_id}/auto-approve")

    def reject(self, job_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/reject", json={"reason": reason})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/cancel")

    def review_output(self, job_id: str, name: str, decision: str,
                      reason: str | None = None) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{job_id}/outputs/{name}/review",
                          json={"decision": decision, "reason": reason})

    def output(self, job_id: str, name: str) -> bytes:
        return self._call("GET", f"/jobs/{job_id}/outputs/{name}").content


def _bundle_form(files: Mapping[str, bytes], entrypoint: str, inputs: Sequence[str],
                 outputs: Sequence[str], plans: Mapping[str, Any] | None
                 ) -> list[tuple[str, tuple[str | None, str | bytes, str]]]:
    """The multipart form of ``POST /jobs`` and ``POST /jobs/preflight``."""
    if plans:
        from veil.privacy.plans import PINNED_PLANS_FILE, pin_plans

        files = {**files, PINNED_PLANS_FILE: pin_plans(plans)}
    spec = {"entrypoint": entrypoint, "inputs": list(inputs), "outputs": list(outputs)}
    multipart: list[tuple[str, tuple[str | None, str | bytes, str]]] = [
        ("spec", (None, json.dumps(spec), "application/json"))]
    multipart += [("files", (name, data, "application/octet-stream"))
                  for name, data in files.items()]
    return multipart


def _check_hash(data: bytes, expected: str, what: str) -> None:
    if hashlib.sha256(data).hexdigest() != expected.removeprefix("sha256:"):
        raise ApiError(502, f"{what} does not match its measured sha256")


def _write(directory: Path, name: str, data: bytes) -> Path:
    """Write one file under ``directory``; a name from the server never escapes it."""
    target = (directory / name).resolve()
    if target.parent != directory.resolve() or name.startswith("."):
        raise ApiError(502, f"refusing to write {name!r} outside {directory}")
    target.write_bytes(data)
    return target


def _chunks(fh: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk
