"""In-sandbox runner: executes one job entrypoint and reports only a tiny, data-free status.

Run as a *script* (``python -s -P .../runner.py``), never as ``-m veil.tee.sandbox.runner``, so
that no package ``__init__`` of veil is imported before the workload's limits are in place and so
the runner stays independent of whatever the rest of ``veil.tee`` imports. It therefore uses the
standard library only (plus nbclient for notebooks).

Reporting channel: newline-delimited JSON written to an inherited pipe (``--status-fd``):
a ``started`` record just before the workload's first instruction, then one ``finished`` record.
Tracebacks, exception messages and cell outputs are never reported as such (they may quote
data): only the line number and, for a few classes, the one name the message is about (a
module, a name, an attribute, a key), which the host keeps only when it is public (see
``veil.tee.sandbox.diagnostics``). stdout and stderr are pointed at /dev/null before anything
else runs.
"""

from __future__ import annotations

import argparse
import builtins
import errno
import json
import os
import re
import resource
import sys
import time
from typing import Any

_PROTOCOL_VERSION = 1
# Exception type names are workload-controlled; only well-known names are reported so that a
# custom class name cannot be used as a covert channel for data.
_KNOWN_LIBRARY_ERRORS = frozenset(
    {
        "ParserError",
        "EmptyDataError",
        "MergeError",
        "IndexingError",
        "InvalidIndexError",
        "ArrowInvalid",
        "ArrowTypeError",
        "ArrowNotImplementedError",
        "ArrowIOError",
        "LinAlgError",
        "AxisError",
        "DeadKernelError",
        "CellTimeoutError",
    }
)
_ERRNO_LIMITS = {errno.EFBIG: "fsize", errno.ENOSPC: "disk", errno.ENOMEM: "memory"}
_EVALUE_ERRNO = re.compile(r"^\[Errno (\d+)\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_LINE = re.compile(r"(?:Cell In\[\d*\]|<ipython-input-[^>]*>), line (\d+)")
_DETAIL_PATTERNS = {
    "ModuleNotFoundError": re.compile(r"^No module named '([^']{1,100})'$"),
    "ImportError": re.compile(r"^cannot import name '([^']{1,100})' from '([^']{1,100})'"),
    "NameError": re.compile(r"^name '([^']{1,100})' is not defined"),
    "UnboundLocalError": re.compile(r"^cannot access local variable '([^']{1,100})'"),
    "AttributeError": re.compile(r"^'([^']{1,100})' object has no attribute '([^']{1,100})'$"),
    "KeyError": re.compile(r"^'([^'\n]{1,100})'$"),
}
_MODULE_ATTR = re.compile(r"^module '([^']{1,100})' has no attribute '([^']{1,100})'$")


def safe_type_name(name: str) -> str:
    """Return `name` if it is a builtin exception or a well-known library one, else a generic."""
    builtin = getattr(builtins, name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        return name
    if name in _KNOWN_LIBRARY_ERRORS:
        return name
    return "OtherException"


def detail_from_message(type_name: str, evalue: str) -> list[str]:
    """The one name a known message is about (the host decides whether it may be shown)."""
    if type_name == "AttributeError":
        match = _MODULE_ATTR.match(evalue)
        if match:
            return [match.group(2), "module"]
        match = _DETAIL_PATTERNS[type_name].match(evalue)
        return [match.group(2), match.group(1)] if match else []
    pattern = _DETAIL_PATTERNS.get(type_name)
    match = pattern.match(evalue) if pattern is not None else None
    return list(match.groups()) if match else []


def _script_detail(exc: BaseException, path: str) -> tuple[int | None, list[str]]:
    """Line in the entrypoint and the named thing, read from attributes (no ``str(exc)``)."""
    import traceback

    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path:
            line = frame.lineno
    if isinstance(exc, SyntaxError) and exc.filename == path:
        line = exc.lineno
    name = getattr(exc, "name", None)
    kind = type(exc).__name__
    if kind == "ModuleNotFoundError" and isinstance(name, str):
        return line, [name]
    if kind == "ImportError" and isinstance(name, str):
        return line, []
    if kind in ("NameError", "UnboundLocalError") and isinstance(name, str):
        return line, [name]
    if kind == "AttributeError" and isinstance(name, str):
        obj = getattr(exc, "obj", None)
        return line, [name, "module" if type(obj).__name__ == "module" else type(obj).__name__]
    if kind == "KeyError" and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return line, [exc.args[0]]
    return line, []


def _cell_line(traceback_text: str) -> int | None:
    match = _CELL_LINE.search(_ANSI.sub("", traceback_text))
    return int(match.group(1)) if match else None


def _limit_hint(type_name: str, err_no: int | None) -> str | None:
    """Map an exception to the resource limit it signals (a fixed enum, never free text)."""
    if type_name == "MemoryError":
        return "memory"
    if err_no is not None:
        if err_no == errno.EAGAIN and type_name == "BlockingIOError":
            return "nproc"
        return _ERRNO_LIMITS.get(err_no)
    return None


class _Reporter:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pid = os.getpid()

    def send(self, record: dict[str, Any]) -> None:
        if os.getpid() != self._pid:  # a fork of the workload must not speak for the runner
            os._exit(1)
        record = {"v": _PROTOCOL_VERSION, **record}
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        os.write(self._fd, data)

    def started(self) -> None:
        self.send({"event": "started", "t_ns": time.monotonic_ns()})

    def finished(
        self,
        status: str,
        error_type: str | None = None,
        cell: int | None = None,
        limit: str | None = None,
        line: int | None = None,
        detail: list[str] | None = None,
    ) -> None:
        self.send(
            {
                "event": "finished",
                "status": status,
                "error_type": error_type,
                "cell": cell,
                "limit": limit,
                "line": line,
                "detail": [str(d)[:101] for d in (detail or [])[:2]],
            }
        )


def _silence_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _apply_limits(limits: dict[str, int]) -> None:
    """Set hard+soft rlimits before the workload starts; the workload cannot raise them."""
    table = {
        "cpu": resource.RLIMIT_CPU,
        "as": resource.RLIMIT_AS,
        "fsize": resource.RLIMIT_FSIZE,
        "nproc": resource.RLIMIT_NPROC,
        "nofile": resource.RLIMIT_NOFILE,
    }
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, value in limits.items():
        res = table[key]
        if key == "cpu":
            # soft limit delivers SIGXCPU, the hard one SIGKILL shortly after
            resource.setrlimit(res, (value, value + 2))
        else:
            resource.setrlimit(res, (value, value))


def _prepare_env() -> None:
    tmp = os.environ.get("TMPDIR") or "/tmp"
    defaults = {
        "JUPYTER_RUNTIME_DIR": os.path.join(tmp, "jupyter-runtime"),
        "JUPYTER_CONFIG_DIR": os.path.join(tmp, "jupyter-config"),
        "JUPYTER_DATA_DIR": os.path.join(tmp, "jupyter-data"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "IPYTHONDIR": os.path.join(tmp, "ipython"),
        "MPLCONFIGDIR": os.path.join(tmp, "matplotlib"),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def _run_script(path: str, rep: _Reporter) -> int:
    import runpy

    sys.argv = [path]
    rep.started()
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code in (None, 0):
            rep.finished("ok")
            return 0
        rep.finished("error", "SystemExit")
        return 1
    except BaseException as exc:
        name = safe_type_name(type(exc).__name__)
        err_no = exc.errno if isinstance(exc, OSError) else None
        try:
            line, detail = _script_detail(exc, path)
        except Exception:  # whatever the workload's exception does, the report goes out
            line, detail = None, []
        rep.finished("error", name, None, _limit_hint(type(exc).__name__, err_no), line, detail)
        return 1
    rep.finished("ok")
    return 0


def _run_notebook(path: str, rep: _Reporter, cell_timeout: int, tmp: str) -> int:
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    class _DiscardingClient(NotebookClient):
        """Drops every output as it arrives: outputs may quote data and could exhaust memory."""

        def output(self, outs: Any, msg: Any, display_id: Any, cell_index: int) -> None:
            return None

    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class _SpecManager(KernelSpecManager):
        """The only kernel is this file in --kernel mode (see _kernel_main)."""

        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            argv = [sys.executable, "-s", "-P", os.path.abspath(__file__), "--kernel"]
            argv += ["-f", "{connection_file}", "--HistoryManager.enabled=False"]
            return KernelSpec(argv=argv, display_name="veil", language="python", resource_dir=tmp)

    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(
        kernel_name="veil",
        kernel_spec_manager=_SpecManager(),
        transport="ipc",
        ip=os.path.join(tmp, "kernel"),
    )
    client = _DiscardingClient(
        nb,
        km=km,
        timeout=cell_timeout,
        startup_timeout=max(60, cell_timeout),
        allow_errors=False,
        force_raise_errors=True,
        record_timing=False,
        resources={"metadata": {"path": os.getcwd()}},
    )
    index = -1

    def fail(error_type: str, limit: str | None, line: int | None = None,
             detail: list[str] | None = None) -> None:
        # Report first, then leave without the kernel's graceful shutdown: after a dead or
        # runaway kernel it can take many seconds, and the sandbox teardown kills it anyway.
        rep.finished("error", error_type, index + 1 if index >= 0 else None, limit, line, detail)
        os._exit(1)

    try:
        with client.setup_kernel():
            rep.started()
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            rep.finished("ok")
    except CellExecutionError as exc:
        ename = str(getattr(exc, "ename", "") or "")
        evalue = str(getattr(exc, "evalue", "") or "")
        match = _EVALUE_ERRNO.match(evalue)
        err_no = int(match.group(1)) if match else None
        safe = safe_type_name(ename) if ename.isidentifier() else "OtherException"
        line = _cell_line(str(getattr(exc, "traceback", "") or ""))
        fail(safe, _limit_hint(ename, err_no), line, detail_from_message(safe, evalue))
    except CellTimeoutError:
        fail("CellTimeoutError", "wall")
    except DeadKernelError:
        fail("DeadKernelError", _kernel_death_hint(km))
    except Exception as exc:  # kernel start-up or protocol failure, e.g. under a process limit
        err_no = exc.errno if isinstance(exc, OSError) else None
        fail(safe_type_name(type(exc).__name__), _limit_hint(type(exc).__name__, err_no))
    return 0


def _kernel_death_hint(km: Any) -> str | None:
    """Why the kernel died, as a limit enum, from its exit signal."""
    import signal

    proc = getattr(getattr(km, "provisioner", None), "process", None)
    code = proc.poll() if proc is not None else None
    if code == -signal.SIGXCPU:
        return "cpu"
    if code == -signal.SIGXFSZ:
        return "fsize"
    if code == -signal.SIGKILL:
        return "killed"
    return None


def _kernel_main(argv: list[str]) -> None:
    """ipykernel without its IOPub pipe: that pipe binds tcp://127.0.0.1, which the seccomp
    filter refuses (libzmq aborts on it); it only forwards forked children's output, which is
    discarded here anyway."""
    from ipykernel import iostream
    from ipykernel.kernelapp import launch_new_instance

    def _no_pipe(self: Any) -> None:
        self._pipe_flag = False

    iostream.IOPubThread._setup_pipe_in = _no_pipe  # type: ignore[method-assign]
    sys.argv = [sys.argv[0], *argv]
    launch_new_instance()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="veil-sandbox-runner", add_help=False)
    parser.add_argument("--status-fd", type=int, required=True)
    parser.add_argument("--limits", default="{}")
    parser.add_argument("--cell-timeout", type=int, default=600)
    parser.add_argument("--keep-stdio", action="store_true")
    parser.add_argument("entrypoint")
    args = parser.parse_args(argv)
    if not args.keep_stdio:
        _silence_stdio()
    os.set_inheritable(args.status_fd, False)
    rep = _Reporter(args.status_fd)
    try:
        limits = {str(k): int(v) for k, v in json.loads(args.limits).items()}
        _prepare_env()
        _apply_limits(limits)
    except Exception:
        rep.finished("setup-error")
        return 2
    tmp = os.path.dirname(os.environ["JUPYTER_RUNTIME_DIR"])
    if args.entrypoint.endswith(".ipynb"):
        return _run_notebook(args.entrypoint, rep, args.cell_timeout, tmp)
    return _run_script(args.entrypoint, rep)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--kernel"]:
        _kernel_main(sys.argv[2:])
    else:
        sys.exit(main())
