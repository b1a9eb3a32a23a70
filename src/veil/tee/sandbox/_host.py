"""Host-side machinery shared by the backends: request checks, the supervised run loop, the
status channel, output checks and the mapping of what happened to a short, data-free reason."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from veil.stage import ENV_INPUTS, ENV_OUTPUTS, ENV_STAGE, PREFLIGHT, SECURE

from . import diagnostics
from ._types import SandboxError, SandboxLimits, SandboxRequest, SandboxResult

log = logging.getLogger("veil.tee.sandbox")

RUNNER_PATH = Path(__file__).with_name("runner.py")
_STATUS_CAP = 4096
_MAX_OUTPUT_ENTRIES = 10_000
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_RESERVED_ENV = frozenset(
    {ENV_STAGE, ENV_INPUTS, ENV_OUTPUTS, "HOME", "PATH", "TMPDIR", "MPLBACKEND"}
)
_RESERVED_ENV_PREFIXES = ("LD_", "PYTHON", "JUPYTER", "IPYTHON")
_EXTRA_BIND_ROOTS = (PurePosixPath("/run"), PurePosixPath("/mnt"))
_LIMIT_REASONS = {
    "memory": "memory limit",
    "fsize": "file size limit",
    "nproc": "process limit",
    "cpu": "cpu time limit",
    "disk": "scratch space (/work, /tmp, /dev/shm) full",
    "killed": "kernel was killed",
}


def protected_home(home: Path | None) -> Path:
    """The server's state folder (``Settings.home``), which must never be visible to a job."""
    from veil.settings import default_home

    return (home or default_home()).resolve()


def check_not_exposing_home(sources: Sequence[Path], home: Path) -> None:
    """Refuse a mount whose source is the server's home or one of its ancestors."""
    for src in sources:
        resolved = src.resolve()
        if home == resolved or home.is_relative_to(resolved):
            raise SandboxError(f"refusing to mount {src}: it would expose VEIL_HOME")


def validate_request(req: SandboxRequest, *, home: Path | None = None) -> Path:
    """Check a request before anything runs; returns the entrypoint's host path.

    ``home`` is the server's state folder (default: ``Settings``' default home).
    """
    if not isinstance(req.limits, SandboxLimits):
        raise SandboxError("limits must be a SandboxLimits")
    if req.stage not in (SECURE, PREFLIGHT):
        raise SandboxError(f"stage must be {SECURE!r} or {PREFLIGHT!r}")
    if not req.bundle_dir.is_dir():
        raise SandboxError("bundle_dir is not a directory")
    if not req.inputs_dir.is_dir():
        raise SandboxError("inputs_dir is not a directory")
    rel = PurePosixPath(req.entrypoint)
    if (
        not req.entrypoint
        or rel.is_absolute()
        or ".." in rel.parts
        or rel.suffix not in (".ipynb", ".py")
    ):
        raise SandboxError("entrypoint must be a relative *.ipynb or *.py path inside the bundle")
    entry = req.bundle_dir / rel
    try:
        st = entry.lstat()
    except OSError:
        raise SandboxError("entrypoint not found in the bundle") from None
    if not stat.S_ISREG(st.st_mode):
        raise SandboxError("entrypoint must be a regular file (not a symlink)")
    if req.outputs_dir.exists():
        if not req.outputs_dir.is_dir() or req.outputs_dir.is_symlink():
            raise SandboxError("outputs_dir is not a directory")
        if any(req.outputs_dir.iterdir()):
            raise SandboxError("outputs_dir must be empty")
    else:
        req.outputs_dir.mkdir(parents=True, mode=0o700)
    for key, value in req.env.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise SandboxError("invalid environment variable name")
        if key in _RESERVED_ENV or key.startswith(_RESERVED_ENV_PREFIXES):
            raise SandboxError(f"environment variable {key} is reserved by the sandbox")
        if not isinstance(value, str) or "\0" in value:
            raise SandboxError(f"environment variable {key} must be a string without NUL")
    seen: set[PurePosixPath] = set()
    for host, dest in [*req.extra_ro_binds, *req.extra_rw_binds]:
        target = PurePosixPath(dest)
        if (
            not target.is_absolute()
            or str(target) != dest
            or ".." in target.parts
            or not any(target.is_relative_to(root) and target != root for root in _EXTRA_BIND_ROOTS)
        ):
            raise SandboxError("extra bind targets must be normalized paths under /run or /mnt")
        if target in seen:
            raise SandboxError("duplicate extra bind target")
        seen.add(target)
        if not Path(host).exists():
            raise SandboxError("extra bind source does not exist")
    check_not_exposing_home(
        [
            req.bundle_dir,
            req.inputs_dir,
            req.outputs_dir,
            *(Path(h) for h, _ in req.extra_ro_binds),
            *(Path(h) for h, _ in req.extra_rw_binds),
        ],
        protected_home(home),
    )
    return entry


def base_env(request: SandboxRequest, *, inputs: str, outputs: str, home: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        ENV_STAGE: request.stage,
        ENV_INPUTS: inputs,
        ENV_OUTPUTS: outputs,
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(request.env)
    return env


def runner_args(status_fd: int, limits: dict[str, int], cell_timeout: int, entry: str) -> list[str]:
    return [
        "--status-fd",
        str(status_fd),
        "--limits",
        json.dumps(limits, separators=(",", ":")),
        "--cell-timeout",
        str(cell_timeout),
        entry,
    ]


# --------------------------------------------------------------------------- supervised run


@dataclass
class RawOutcome:
    returncode: int | None
    timed_out: bool
    watchdog_reason: str | None
    status: bytes
    status_overflow: bool
    stderr: bytes
    t0_ns: int
    duration_s: float


def supervise(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    status_r: int,
    pass_fds: Sequence[int],
    wall_seconds: float,
    watchdog: Callable[[], str | None] | None = None,
    on_kill: Callable[[int], None] | None = None,
) -> RawOutcome:
    """Run argv in its own session; enforce the wall clock; collect the capped status channel."""
    t0_ns = time.monotonic_ns()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
        close_fds=True,
    )
    for fd in pass_fds:
        os.close(fd)
    assert proc.stderr is not None
    err_fd = proc.stderr.fileno()
    status = bytearray()
    stderr = bytearray()
    overflow = False
    timed_out = False
    watchdog_reason: str | None = None
    sel = selectors.DefaultSelector()
    for fd in (status_r, err_fd):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    open_fds = {status_r, err_fd}
    deadline = t0 + wall_seconds
    next_watch = t0

    def drain(fd: int) -> None:
        nonlocal overflow
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if not chunk:
                sel.unregister(fd)
                open_fds.discard(fd)
                return
            if fd == status_r:
                if len(status) + len(chunk) > _STATUS_CAP:
                    overflow = True
                else:
                    status.extend(chunk)
            elif len(stderr) < _STATUS_CAP:
                stderr.extend(chunk[: _STATUS_CAP - len(stderr)])

    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if open_fds:
                for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                    drain(int(key.fd))
            else:
                time.sleep(min(0.05, deadline - now))
            if proc.poll() is not None:
                break
            if watchdog is not None and now >= next_watch:
                next_watch = now + 0.2
                watchdog_reason = watchdog()
                if watchdog_reason is not None:
                    break
    finally:
        if proc.poll() is None:
            if on_kill is not None:
                on_kill(proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for fd in list(open_fds):
            with contextlib.suppress(OSError):
                drain(fd)
        sel.close()
        os.close(status_r)
        proc.stderr.close()
    return RawOutcome(
        returncode=proc.returncode,
        timed_out=timed_out,
        watchdog_reason=watchdog_reason,
        status=bytes(status),
        status_overflow=overflow,
        stderr=bytes(stderr),
        t0_ns=t0_ns,
        duration_s=time.monotonic() - t0,
    )


# --------------------------------------------------------------------------- status channel


@dataclass(frozen=True)
class Status:
    started_ns: int | None
    finished: bool
    status: str | None = None
    error_type: str | None = None
    cell: int | None = None
    limit: str | None = None
    line: int | None = None
    detail: tuple[str, ...] = ()


_FINISHED_KEYS = frozenset({"v", "event", "status", "error_type", "cell", "limit"})
_STATUSES = frozenset({"ok", "error", "setup-error"})
_LIMITS = frozenset({*_LIMIT_REASONS, "wall"})


def parse_status(raw: bytes, overflow: bool) -> Status | None:
    """Strictly parse the runner's records; anything unexpected means 'no trustworthy status'."""
    if overflow:
        return None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    started: int | None = None
    finished: dict[str, Any] | None = None
    if len(lines) > 2:
        return None
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if not isinstance(rec, dict) or rec.get("v") != 1:
            return None
        if rec.get("event") == "started" and set(rec) == {"v", "event", "t_ns"}:
            if started is not None or finished is not None:
                return None
            t_ns = rec["t_ns"]
            if not isinstance(t_ns, int) or isinstance(t_ns, bool):
                return None
            started = t_ns
        elif rec.get("event") == "finished" and set(rec) in (
            _FINISHED_KEYS, _FINISHED_KEYS | {"line", "detail"}):
            if finished is not None:
                return None
            finished = rec
        else:
            return None
    if finished is None:
        return Status(started_ns=started, finished=False)
    status, etype, cell, limit = (
        finished["status"],
        finished["error_type"],
        finished["cell"],
        finished["limit"],
    )
    if status not in _STATUSES:
        return None
    if etype is not None and not (
        isinstance(etype, str) and etype.isidentifier() and len(etype) <= 64
    ):
        return None
    if cell is not None and (
        not isinstance(cell, int) or isinstance(cell, bool) or not 0 < cell < 1_000_000
    ):
        return None
    if limit is not None and limit not in _LIMITS:
        return None
    at_line, detail = finished.get("line"), finished.get("detail", [])
    if at_line is not None and (
        not isinstance(at_line, int) or isinstance(at_line, bool) or not 0 < at_line < 1_000_000
    ):
        return None
    if not isinstance(detail, list) or len(detail) > 2 or not all(
        isinstance(d, str) and len(d) <= 101 for d in detail
    ):
        return None
    return Status(started, True, status, etype, cell, limit, at_line, tuple(detail))


# --------------------------------------------------------------------------- outputs


class _OutputRejected(Exception):
    pass


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every entry under root, via lstat only: symlinks are reported, never followed."""
    stack = [root]
    count = 0
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for entry in it:
                count += 1
                if count > _MAX_OUTPUT_ENTRIES:
                    raise _OutputRejected("output has too many files")
                st = entry.stat(follow_symlinks=False)
                path = Path(entry.path)
                yield path, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(path)


def output_problem(root: Path, cap: int) -> str | None:
    """Why the outputs under root must not be released, or None."""
    total = 0
    try:
        for _path, st in _walk(root):
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                return "output contains a symlink or special file"
            total += st.st_size
            if total > cap:
                return f"output exceeds {format_bytes(cap)}"
    except _OutputRejected as exc:
        return str(exc)
    except OSError:
        return "output folder could not be read"
    return None


def output_size_watchdog(root: Path, cap: int) -> Callable[[], str | None]:
    """Polling fallback for hosts where outputs cannot be staged on a size-capped tmpfs."""

    def check() -> str | None:
        total = 0
        try:
            for _path, st in _walk(root):
                total += st.st_blocks * 512 if stat.S_ISREG(st.st_mode) else 0
                if total > cap:
                    return f"output exceeds {format_bytes(cap)}"
        except _OutputRejected as exc:
            return str(exc)
        except OSError:
            return None
        return None

    return check


def first_of(watchdogs: Sequence[Callable[[], str | None]]) -> Callable[[], str | None] | None:
    """One watchdog that reports the first reason any of ``watchdogs`` gives."""
    if not watchdogs:
        return None

    def check() -> str | None:
        for watchdog in watchdogs:
            reason = watchdog()
            if reason is not None:
                return reason
        return None

    return check


def copy_outputs(src: Path, dst: Path) -> None:
    """Copy regular files and folders (already checked) without following any symlink."""
    for path, st in sorted(_walk(src), key=lambda item: str(item[0])):
        target = dst / path.relative_to(src)
        if stat.S_ISDIR(st.st_mode):
            target.mkdir(mode=0o700, exist_ok=True)
            continue
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fin, open(target, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1024 * 1024)


def clear_dir(root: Path) -> None:
    """Remove everything a failed job left in its output folder (nothing of it is released)."""
    for entry in list(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None
    error_type: str | None
    cell: int | None
    sandbox_start_s: float | None
    line: int | None = None
    message: str | None = None


def classify(
    raw: RawOutcome,
    *,
    limits: SandboxLimits,
    is_notebook: bool,
    output_over: bool,
    memory_hit: bool = False,
    pids_hit: bool = False,
    entry: Path | None = None,
    columns: Collection[str] = (),
) -> Verdict:
    """Turn what the host observed into one short, data-free verdict (host facts first).

    ``entry`` (the approved entrypoint) and ``columns`` (the inputs' schema columns) are what
    ``diagnostics.diagnose`` may name in a workload error's message.
    """
    status = parse_status(raw.status, raw.status_overflow)
    start = None
    if status is not None and status.started_ns is not None:
        start = max(0.0, (status.started_ns - raw.t0_ns) / 1e9)
    etype = status.error_type if status is not None else None
    cell = status.cell if status is not None and is_notebook else None

    def fail(reason: str) -> Verdict:
        return Verdict(False, reason, etype, cell, start)

    if raw.timed_out:
        return fail(f"wall-clock timeout after {limits.wall_seconds} s")
    if raw.watchdog_reason is not None:
        return fail(raw.watchdog_reason)
    if output_over:
        return fail(f"output exceeds {format_bytes(limits.output_bytes)}")
    code = raw.returncode
    finished = status is not None and status.finished
    if finished and status is not None and status.status == "ok" and code == 0:
        return Verdict(True, None, None, None, start)
    if memory_hit:
        return fail("memory limit")
    if pids_hit:
        return fail("process limit")
    if finished and status is not None:
        if status.status == "setup-error":
            return fail("sandbox runner could not apply the limits")
        if status.limit == "wall":
            return fail(f"wall-clock timeout after {limits.wall_seconds} s")
        if status.limit is not None:
            return fail(_LIMIT_REASONS[status.limit])
        if status.status == "error" and etype is not None:
            diag = _diagnose(status, entry, columns, is_notebook, cell)
            return Verdict(False, diag.text("notebook" if is_notebook else "script"),
                           diag.error_type, cell, start, diag.line, diag.message)
    signo = _signal_of(code)
    if signo == signal.SIGXCPU:
        return fail("cpu time limit")
    if signo == signal.SIGXFSZ:
        return fail("file size limit")
    if status is None:
        return fail("sandbox produced an invalid status report")
    if status.started_ns is None and not status.finished:
        return fail("sandbox failed to start")
    if signo is not None:
        return fail(f"sandbox killed by signal {signal.Signals(signo).name}")
    return fail(f"sandbox exited abnormally (exit status {code})")


def _diagnose(status: Status, entry: Path | None, columns: Collection[str], is_notebook: bool,
              cell: int | None) -> diagnostics.Diagnostic:
    source: str | None = None
    vocabulary: frozenset[str] = frozenset()
    if entry is not None:
        try:
            data = entry.read_bytes()
        except OSError:
            data = None
        if data is not None:
            source = diagnostics.cell_source(entry.name, data, cell)
            vocabulary = diagnostics.public_vocabulary(entry.name, data, columns)
    return diagnostics.diagnose(status.error_type, cell=cell, line=status.line,
                                detail=status.detail, source=source, vocabulary=vocabulary,
                                notebook=is_notebook)


def _signal_of(code: int | None) -> int | None:
    if code is None:
        return None
    if code < 0:
        signo = -code
    elif 128 < code < 128 + 65:  # bwrap reports a signalled child as 128 + signal
        signo = code - 128
    else:
        return None
    try:
        signal.Signals(signo)
    except ValueError:
        return None
    return signo


def settle(verdict: Verdict, raw: RawOutcome, request: SandboxRequest, *, written: Path,
           staged: bool, insecure: bool, backend: str) -> SandboxResult:
    """Check what the workload wrote, keep it only on success, and report.

    `written` is where the workload's /outputs lived (a staging tmpfs or the real folder);
    staged outputs are copied to `request.outputs_dir` only once everything passed.
    """
    if verdict.ok:
        problem = output_problem(written, request.limits.output_bytes)
        if problem is not None:
            verdict = Verdict(False, problem, None, None, verdict.sandbox_start_s)
    if verdict.ok and staged:
        copy_outputs(written, request.outputs_dir)
    if not verdict.ok:
        clear_dir(request.outputs_dir)
    return SandboxResult(
        ok=verdict.ok,
        reason=verdict.reason,
        error_type=verdict.error_type,
        cell=verdict.cell,
        line=verdict.line,
        message=verdict.message,
        duration_s=raw.duration_s,
        sandbox_start_s=verdict.sandbox_start_s,
        insecure=insecure,
        backend=backend,
    )
