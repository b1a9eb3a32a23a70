"""`veil lab`: JupyterLab with the Veil kernel, the Veil sidebar and its server extension.

The Veil server's URL and the user's token reach JupyterLab through its process environment
only (the kernel inherits them); the kernel spec and the config written under
``$VEIL_HOME/lab`` never hold the token, and neither does any notebook.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from veil.cli._common import TokenOption, UrlOption, err_console

KERNEL_NAME = "veil"


def lab_paths(home: Path) -> tuple[Path, Path]:
    """(data dir with the kernel spec, config dir enabling the server extension)."""
    return home / "lab" / "share" / "jupyter", home / "lab" / "etc" / "jupyter"


def write_lab_files(home: Path, url: str) -> tuple[Path, Path]:
    """The "Veil" kernel spec (``%veil`` preloaded) and the server-extension switch."""
    data, config = lab_paths(home)
    kernel = data / "kernels" / KERNEL_NAME
    kernel.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--ext=veil"],
        "display_name": "Veil",
        "language": "python",
        # Only the URL: the token is inherited from the server's environment, never on disk.
        "env": {"VEIL_URL": url},
        "metadata": {"debugger": True},
    }
    (kernel / "kernel.json").write_text(json.dumps(spec, indent=1))
    conf_d = config / "jupyter_server_config.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / "veil.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {"veil.lab": True}},
         # A clean-room workspace calls no one but the Veil server: no news, no update check.
         "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}},
        indent=1))
    labconfig = config / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    return data, config


def lab_command(*, home: Path, root: Path, url: str, token: str, port: int, browser: bool,
                extra: list[str], base_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The JupyterLab command line and environment `veil lab` runs (tested without a browser)."""
    from veil.lab import LABEXTENSION_NAME, LABEXTENSIONS

    if not (LABEXTENSIONS / LABEXTENSION_NAME / "package.json").is_file():
        raise FileNotFoundError(
            f"the Veil JupyterLab extension is not built ({LABEXTENSIONS}); run scripts/setup.sh")
    data, config = write_lab_files(home, url)
    argv = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root}", f"--LabApp.extra_labextensions_path={LABEXTENSIONS}",
            f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}"]
    if not browser:
        argv.append("--no-browser")
    env = dict(base_env)

    def prepend(name: str, value: Path) -> None:
        env[name] = os.pathsep.join([str(value), *filter(None, [base_env.get(name)])])

    prepend("JUPYTER_PATH", data)
    prepend("JUPYTER_CONFIG_PATH", config)
    env.update(VEIL_URL=url, VEIL_TOKEN=token)
    return argv + extra, env


def lab(
    ctx: typer.Context,
    directory: Path = typer.Option(Path("."), "--dir", "-d", file_okay=False, exists=True,
                                   help="working directory (JupyterLab's root)"),
    port: int = typer.Option(8888, "--port", help="port on 127.0.0.1"),
    no_browser: bool = typer.Option(False, "--no-browser", help="do not open a browser"),
    url: str = UrlOption,
    token: str = TokenOption,
) -> None:
    """Start JupyterLab with the Veil kernel and sidebar (arguments after -- go to JupyterLab)."""
    from veil.settings import default_home

    url = (url or "http://127.0.0.1:8470").rstrip("/")
    if not token:
        err_console.print("[red]error[/red]: set VEIL_TOKEN (or --token): the sidebar and the "
                          "kernel act with your Veil token")
        raise typer.Exit(1)
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        err_console.print("[red]error[/red]: JupyterLab is not installed: "
                          "pip install 'veil[lab]' (scripts/setup.sh does)")
        raise typer.Exit(1) from None
    try:
        argv, env = lab_command(home=default_home(), root=directory.resolve(), url=url,
                                token=token, port=port, browser=not no_browser,
                                extra=list(ctx.args), base_env=dict(os.environ))
    except FileNotFoundError as exc:
        err_console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    sys.stdout.flush()
    os.execve(argv[0], argv, env)  # JupyterLab replaces this process: signals reach it
