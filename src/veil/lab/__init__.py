"""The researcher's JupyterLab workspace: the Veil sidebar, its server extension, ``%veil``.

`veil lab` starts JupyterLab with this package's prebuilt extension (``labextensions/``,
built from the top-level ``lab/`` folder by ``scripts/setup.sh``) and its server extension enabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The folder JupyterLab is pointed at (``--LabApp.extra_labextensions_path``).
LABEXTENSIONS = Path(__file__).parent / "labextensions"
LABEXTENSION_NAME = "veil-lab"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": f"labextensions/{LABEXTENSION_NAME}", "dest": LABEXTENSION_NAME}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "veil.lab"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from veil.lab.handlers import LabConfig, setup_handlers

    config = LabConfig.from_env(Path(serverapp.root_dir))
    setup_handlers(serverapp.web_app, config)
    serverapp.log.info("veil lab: server extension loaded (Veil at %s)", config.url)
