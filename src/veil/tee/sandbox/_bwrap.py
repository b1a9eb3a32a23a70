"""The `local-sandbox` backend: bubblewrap + seccomp + cgroup/rlimits around the runner."""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from veil.stage import INPUTS_MOUNT, OUTPUTS_MOUNT
from veil.tee.owned import owned_name, owner_gone

from . import _cgroup, _host
from ._seccomp import seccomp_bpf
from ._types import (
    SandboxHostFault,
    SandboxLimits,
    SandboxRequest,
    SandboxResult,
    SandboxUnavailable,
)

BWRAP_MISSING = "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
_SANDBOX_UID = 65534
# Sandbox paths the runtime must not be mounted over (the job's own mounts live there).
_RESERVED = tuple(
    PurePosixPath(p)
    for p in (
        "/job",
        "/inputs",
        "/outputs",
        "/work",
        "/tmp",
        "/proc",
        "/dev",
        "/etc",
        "/run",
        "/mnt",
        "/opt/veil",
    )
)
_VENV_DEST = "/opt/veil/venv"
_SRC_DEST = "/opt/veil/src"
_RUNNER_DEST = "/opt/veil/runner.py"
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_PASSWD = "sandbox:x:65534:65534:veil sandbox:/work:/usr/sbin/nologin\n"
_GROUP = "sandbox:x:65534:\n"


def find_bwrap() -> str | None:
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:" + os.environ.get("PATH", ""))


@dataclass(frozen=True)
class _Runtime:
    """How the host's Python + veil appear inside the sandbox (read-only binds only)."""

    binds: tuple[tuple[str, str], ...]
    python: str
    pythonpath: str | None
    runner: str


def _under(path: PurePosixPath, roots: tuple[PurePosixPath, ...]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


@functools.lru_cache(maxsize=1)
def _runtime(home: Path | None = None) -> _Runtime:
    """Bind exactly the interpreter, the venv and veil's source folder: not /work, not /root."""
    base = Path(sys.base_prefix).resolve()
    prefix = Path(sys.prefix).resolve()
    src = Path(__file__).resolve().parents[3]  # the folder that contains the `veil` package
    binds: list[tuple[str, str]] = []
    usr = PurePosixPath("/usr")

    def place(host: Path, fallback: str | None) -> str:
        """Sandbox path of host: same path when possible, else the fallback location."""
        pure = PurePosixPath(host)
        if _under(pure, (usr,)):
            return str(pure)
        if fallback is None:
            if _under(pure, _RESERVED):
                raise SandboxUnavailable(
                    f"the Python installation under {host} collides with a sandbox mount point"
                )
            binds.append((str(host), str(pure)))
            return str(pure)
        binds.append((str(host), fallback))
        return fallback

    def translate(host: Path) -> str:
        for h, d in binds:
            hp = Path(h)
            if host == hp or host.is_relative_to(hp):
                return str(PurePosixPath(d) / host.relative_to(hp))
        if _under(PurePosixPath(host), (usr,)):
            return str(host)
        raise SandboxUnavailable(f"{host} is not mounted in the sandbox")

    place(base, None)
    if prefix != base:
        place(prefix, _VENV_DEST)
        exe = Path(sys.executable)
        exe_dir = exe.parent.resolve()  # the venv's bin/, keeping the venv's own python name
        python = (
            translate(exe_dir / exe.name)
            if exe_dir.is_relative_to(prefix)
            else translate(exe.resolve())
        )
    else:
        python = translate(Path(sys.executable).resolve())
    pythonpath = None
    if not (src.is_relative_to(prefix) or src.is_relative_to(base)):
        place(src, _SRC_DEST)
        pythonpath = _SRC_DEST
    # The runner is stdlib-only, so it can sit alone at a neutral path whatever the host layout.
    binds.append((str(_host.RUNNER_PATH.resolve()), _RUNNER_DEST))
    _host.check_not_exposing_home([Path(h) for h, _ in binds], _host.protected_home(home))
    return _Runtime(tuple(binds), python, pythonpath, _RUNNER_DEST)


def _mount_tmpfs(path: Path, size: int) -> bool:
    """Size-capped host tmpfs for staging /outputs (needs CAP_SYS_ADMIN); False if impossible."""
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"size={size},nr_inodes=10000,mode=0700".encode()
    rc = libc.mount(
        b"tmpfs", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts
    )
    return bool(rc == 0)


def _umount(path: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(str(path).encode(), _MNT_DETACH)


def _staging_full(path: Path, cap: int) -> bool:
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    return st.f_bavail == 0 or used >= cap - 64 * 1024


def _make_run_dir(scratch: Path | None) -> Path:
    if scratch is None:
        return Path(tempfile.mkdtemp(prefix="veil-sbx-"))
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_dir = scratch / owned_name()
    run_dir.mkdir(mode=0o700)
    return run_dir


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as fh:  # field 5 is the mount point (octal-escaped)
        return {line.split()[4].encode().decode("unicode_escape") for line in fh}


def sweep_scratch(scratch: Path) -> int:
    """Unmount and delete the run dirs of worker processes that have exited, and their cgroups.

    A worker killed mid-job leaves its size-capped outputs tmpfs mounted and its cgroups behind;
    bwrap itself dies with its parent (--die-with-parent).
    """
    swept = _cgroup.sweep_stale_cgroups()
    if not scratch.is_dir():
        return swept
    mounted = _mount_points()
    for entry in scratch.iterdir():
        if not owner_gone(entry.name) or entry.is_symlink():
            continue
        staging = entry / "outputs"
        if str(staging) in mounted:
            _umount(staging)
        shutil.rmtree(entry, ignore_errors=True)
        swept += 1
    return swept


class BubblewrapBackend:
    """Runs each job under bubblewrap: no network, read-only system, only the job's folders."""

    name = "local-sandbox"

    def __init__(self, bwrap: str | None = None, *, scratch_dir: Path | None = None,
                 home: Path | None = None) -> None:
        """``scratch_dir`` holds each run's staging mount and files (default: the temp dir);
        under the run folder, ``sweep_scratch`` can clean what a killed worker left. ``home``
        is the server's state folder, never mounted (default: ``Settings``' default)."""
        self._scratch = scratch_dir
        self._home = _host.protected_home(home)
        found = bwrap or find_bwrap()
        if not found or not os.access(found, os.X_OK):
            raise SandboxUnavailable(BWRAP_MISSING)
        self._bwrap = found
        self._runtime = _runtime(self._home)
        self._bpf = seccomp_bpf()

    def run(self, request: SandboxRequest) -> SandboxResult:
        """Run one job; a host-side OS failure is a SandboxHostFault (the job may re-run)."""
        try:
            return self._run(request)
        except OSError as exc:
            raise SandboxHostFault(
                f"sandbox host failure: {exc.strerror or type(exc).__name__}"
            ) from None

    def _run(self, request: SandboxRequest) -> SandboxResult:
        entry = _host.validate_request(request, home=self._home)
        limits = request.limits
        is_nb = entry.suffix == ".ipynb"
        run_dir = _make_run_dir(self._scratch)
        cg: _cgroup.JobCgroup | None = None
        staged = False
        staging = run_dir / "outputs"
        try:
            staging.mkdir(mode=0o700)
            staged = _mount_tmpfs(staging, limits.output_bytes)
            out_src = staging if staged else request.outputs_dir
            etc = run_dir / "etc"
            etc.mkdir()
            (etc / "passwd").write_text(_PASSWD)
            (etc / "group").write_text(_GROUP)
            bpf_path = run_dir / "seccomp.bpf"
            bpf_path.write_bytes(self._bpf)
            cg = _cgroup.create_job_cgroup(limits.memory_bytes, limits.max_processes)
            bpf_fd = os.open(bpf_path, os.O_RDONLY)
            status_r, status_w = os.pipe()
            args_fd = -1
            try:
                args = self._argv(request, entry, limits, out_src, etc, bpf_fd, status_w, cg)
                args_path = run_dir / "bwrap.args"
                split = args.index("--")  # bwrap takes options from the fd, the command not
                args_path.write_bytes(b"".join(a.encode() + b"\0" for a in args[:split]))
                args_fd = os.open(args_path, os.O_RDONLY)
                argv = self._command(args_fd, args[split:], cg)
            except BaseException:
                for fd in (bpf_fd, status_r, status_w, args_fd):
                    if fd >= 0:
                        os.close(fd)
                raise
            env = _host.base_env(request, inputs=INPUTS_MOUNT, outputs=OUTPUTS_MOUNT,
                                 home="/work")
            if self._runtime.pythonpath:
                env["PYTHONPATH"] = self._runtime.pythonpath
            watchdogs = [] if staged else [_host.output_size_watchdog(out_src, limits.output_bytes)]
            if cg is not None:
                watchdogs.append(cg.fork_bomb_watchdog(limits.max_processes))
            raw = _host.supervise(
                argv,
                env=env,
                cwd=str(run_dir),
                status_r=status_r,
                pass_fds=(bpf_fd, status_w, args_fd),
                wall_seconds=limits.wall_seconds,
                watchdog=_host.first_of(watchdogs),
            )
            memory_hit = cg.memory_limit_hit() if cg else False
            pids_hit = cg.pids_limit_hit() if cg else False
            if cg is not None:
                cg.destroy()
                cg = None
            if raw.returncode not in (0, 1) and raw.stderr:
                _host.log.debug("bwrap stderr: %s", raw.stderr[:512].decode(errors="replace"))
            output_over = staged and _staging_full(staging, limits.output_bytes)
            verdict = _host.classify(
                raw,
                limits=limits,
                is_notebook=is_nb,
                output_over=output_over,
                memory_hit=memory_hit,
                pids_hit=pids_hit,
                entry=entry,
                columns=request.public_names,
            )
            return _host.settle(verdict, raw, request, written=out_src, staged=staged,
                                insecure=False, backend=self.name)
        finally:
            if cg is not None:
                cg.destroy()
            if staged:
                _umount(staging)
            shutil.rmtree(run_dir, ignore_errors=True)

    def _argv(
        self,
        req: SandboxRequest,
        entry: Path,
        limits: SandboxLimits,
        out_src: Path,
        etc: Path,
        bpf_fd: int,
        status_w: int,
        cg: _cgroup.JobCgroup | None,
    ) -> list[str]:
        """bwrap's arguments (without the executable), ending in the runner's command line."""
        rt = self._runtime
        uid = str(_SANDBOX_UID)
        args = [
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--uid", uid, "--gid", uid, "--hostname", "sandbox",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for name in ("lib", "lib64", "bin", "sbin"):
            host = Path("/") / name
            if host.is_symlink():
                args += ["--symlink", os.readlink(host), f"/{name}"]
            elif host.is_dir():
                args += ["--ro-bind", str(host), f"/{name}"]
        for host_path, dest in rt.binds:
            args += ["--ro-bind", host_path, dest]
        args += [
            "--ro-bind", str(etc / "passwd"), "/etc/passwd",
            "--ro-bind", str(etc / "group"), "/etc/group",
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(limits.tmpfs_bytes), "--tmpfs", "/dev/shm",
            "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
            "--size", str(limits.tmpfs_bytes), "--tmpfs", "/work",
            "--ro-bind", str(req.bundle_dir.resolve()), "/job",
            "--ro-bind", str(req.inputs_dir.resolve()), INPUTS_MOUNT,
            "--bind", str(out_src.resolve()), OUTPUTS_MOUNT,
        ]  # fmt: skip
        for ro_src, ro_dest in req.extra_ro_binds:
            args += ["--ro-bind", str(Path(ro_src).resolve()), ro_dest]
        for rw_src, rw_dest in req.extra_rw_binds:
            args += ["--bind", str(Path(rw_src).resolve()), rw_dest]
        # bwrap's root and /dev are tmpfs without a size cap: once every mount point exists,
        # make them read-only, so the only writable places are the capped tmpfs and /outputs.
        args += ["--remount-ro", "/dev", "--remount-ro", "/"]
        args += ["--chdir", "/work", "--seccomp", str(bpf_fd), "--"]
        rlimits = {"cpu": limits.cpu_seconds, "fsize": limits.max_file_bytes, "nofile": 1024}
        if cg is None:  # no cgroup: fall back to rlimits (RLIMIT_NPROC is weak for host root)
            rlimits["as"] = limits.memory_bytes
            rlimits["nproc"] = limits.max_processes
        inner = "/job/" + str(PurePosixPath(req.entrypoint))
        args += [rt.python, "-s", "-P", rt.runner]
        args += _host.runner_args(status_w, rlimits, limits.wall_seconds, inner)
        return args

    def _command(self, args_fd: int, inner: list[str], cg: _cgroup.JobCgroup | None
                 ) -> list[str]:
        """bwrap reading its options (all the host paths) from ``args_fd``, then ``inner``
        ("--" and the runner's sandbox-side command line): the sandbox sees this as
        /proc/1/cmdline."""
        command = [self._bwrap, "--args", str(args_fd), *inner]
        if cg is None:
            return command
        # Join the job's cgroups before exec'ing bwrap, so every sandboxed task is accounted.
        script = (
            'for f in "$1" "$2"; do echo $$ > "$f" || exit 125; done; '
            'echo 1000 > /proc/self/oom_score_adj; shift 2; exec "$@"'
        )
        return ["/bin/sh", "-c", script, "sh", *map(str, cg.procs_files), *command]
