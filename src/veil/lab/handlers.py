"""The Veil sidebar's backend: a Jupyter server extension that talks to Veil for the user.

The browser never sees the Veil token: it calls these routes (authenticated by Jupyter's own
token/cookie), and this process calls the Veil server with the token it was started with.
Every Veil call runs in a worker thread, so a slow Veil server never blocks Jupyter's loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from veil.lab import workspace
from veil.lab.workspace import LabError
from veil.sdk.client import ApiError, Client

log = logging.getLogger("veil.lab")
T = TypeVar("T")


@dataclass(frozen=True)
class LabConfig:
    """What the extension needs, read once when Jupyter loads it (never deeper down)."""

    url: str | None
    token: str | None
    root: Path

    @classmethod
    def from_env(cls, root: Path) -> LabConfig:
        return cls(os.environ.get("VEIL_URL"), os.environ.get("VEIL_TOKEN"), root)


class _VeilHandler(APIHandler):
    config_: LabConfig
    client: Client

    def initialize(self, config: LabConfig, client: Client) -> None:
        self.config_ = config
        self.client = client

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    def body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise LabError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise LabError("the request body must be a JSON object")
        return data

    def reply(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, default=str))

    async def run(self, work: Callable[[], Any]) -> None:
        """Run `work` off the loop; Veil refusals and bad requests become a JSON error."""
        if not self.config_.token:
            self.reply({"error": "no Veil token: start JupyterLab with `veil lab` and "
                                 "VEIL_TOKEN set"}, 401)
            return
        try:
            self.reply(await self.call(work))
        except ApiError as exc:
            self.reply({"error": exc.detail, "veil_status": exc.status},
                       exc.status if 400 <= exc.status < 500 else 502)
        except LabError as exc:
            self.reply({"error": str(exc)}, 422)
        except OSError as exc:  # never echo paths beyond the workspace or file contents
            log.warning("veil lab: %s", type(exc).__name__)
            self.reply({"error": f"cannot read or write a file ({type(exc).__name__})"}, 500)


class StatusHandler(_VeilHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def work() -> dict[str, Any]:
            me = self.client.me()
            return {"url": self.client.url, "user": me.get("user"), "role": me.get("role"),
                    "party": me.get("party"), "runtime": self.client.runtime()["runtime"]}
        await self.run(work)


class DatasetsHandler(_VeilHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def work() -> dict[str, Any]:
            start = time.perf_counter()
            rows = workspace.dataset_rows(self.client.datasets(), self.client.budgets())
            return {"datasets": [r.to_json() for r in rows],
                    "elapsed_s": time.perf_counter() - start}
        await self.run(work)


class InspectHandler(_VeilHandler):
    """Inputs detected, the digest the providers will approve, and a pre-flight if any."""

    @tornado.web.authenticated
    async def post(self) -> None:
        def work() -> dict[str, Any]:
            body = self.body()
            path = workspace.resolve(self.config_.root, str(body.get("path", "")))
            prepared = workspace.prepare(self.client, path, _inputs(body))
            pre = workspace.preflight(self.client, prepared)
            return {**prepared.describe(), "preflight": pre}
        await self.run(work)


class SubmitHandler(_VeilHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        def work() -> dict[str, Any]:
            body = self.body()
            path = workspace.resolve(self.config_.root, str(body.get("path", "")))
            prepared = workspace.prepare(self.client, path, _inputs(body))
            shown = body.get("digest")
            if shown is not None and shown != prepared.digest:
                raise LabError("the notebook changed since its digest was shown; "
                               "check it again before submitting")
            start = time.perf_counter()
            job = workspace.submit(self.client, prepared, self.config_.root)
            return {**workspace.job_summary(job), "elapsed_s": time.perf_counter() - start}
        await self.run(work)


class JobsHandler(_VeilHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        def work() -> dict[str, Any]:
            start = time.perf_counter()
            jobs = [workspace.job_summary(j) for j in self.client.jobs()[-20:]]
            jobs.reverse()  # newest first
            return {"jobs": jobs, "elapsed_s": time.perf_counter() - start}
        await self.run(work)


class DownloadHandler(_VeilHandler):
    @tornado.web.authenticated
    async def post(self, job_id: str) -> None:
        def work() -> dict[str, Any]:
            folder = workspace.job_folder(self.config_.root, job_id)
            folder.mkdir(parents=True, exist_ok=True)
            paths = workspace.download(self.client, job_id, folder)
            root = self.config_.root.resolve()
            return {"folder": str(folder.resolve().relative_to(root)),
                    "files": [str(p.resolve().relative_to(root)) for p in paths]}
        await self.run(work)


class VerdictHandler(_VeilHandler):
    @tornado.web.authenticated
    async def get(self, job_id: str) -> None:
        await self.run(lambda: workspace.verdict(self.client, job_id, self.config_.root))


def _inputs(body: dict[str, Any]) -> list[str]:
    raw = body.get("inputs") or []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise LabError("inputs must be a list of dataset names")
    return raw


def setup_handlers(web_app: Any, config: LabConfig) -> None:
    client = Client(config.url, config.token)
    base = url_path_join(web_app.settings["base_url"], "veil")
    job = r"/jobs/(?P<job_id>[A-Za-z0-9_-]{1,64})"
    routes: list[tuple[str, type[_VeilHandler]]] = [
        ("/status", StatusHandler), ("/datasets", DatasetsHandler),
        ("/inspect", InspectHandler), ("/submit", SubmitHandler), ("/jobs", JobsHandler),
        (job + "/download", DownloadHandler), (job + "/verdict", VerdictHandler)]
    kwargs = {"config": config, "client": client}
    web_app.add_handlers(".*$", [(base + path, handler, kwargs) for path, handler in routes])
