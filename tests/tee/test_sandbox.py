"""The local-sandbox (bubblewrap) backend against hostile and benign workloads.

Every hostile notebook must end as a failed job with a short reason while the host stays
healthy: no leftover processes, cgroups or mounts, nothing released from /outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pandas as pd
import psutil
import pytest

from veil.tee.sandbox import (
    BubblewrapBackend,
    SandboxLimits,
    SandboxRequest,
    SandboxResult,
    _cgroup,
    backend_for,
)

NOTEBOOKS = Path(__file__).parent / "notebooks"
MiB = 1024 * 1024
LIMITS = SandboxLimits(
    cpu_seconds=20,
    memory_bytes=1024 * MiB,
    max_processes=48,
    max_file_bytes=64 * MiB,
    wall_seconds=20,
    tmpfs_bytes=64 * MiB,
    output_bytes=32 * MiB,
)


def _bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    probe = ["bwrap", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "--unshare-all", "--unshare-user",
             "--die-with-parent", "/usr/bin/true"]  # fmt: skip
    return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0


pytestmark = pytest.mark.skipif(not _bwrap_works(), reason="bubblewrap/user namespaces missing")

Runner = Callable[..., SandboxResult]


@pytest.fixture(scope="module")
def backend() -> BubblewrapBackend:
    b = backend_for("local-sandbox")
    assert isinstance(b, BubblewrapBackend)
    return b


@pytest.fixture
def job_dirs(tmp_path: Path) -> dict[str, Path]:
    dirs = {k: tmp_path / k for k in ("bundle", "inputs", "outputs")}
    dirs["bundle"].mkdir()
    dirs["inputs"].mkdir()
    df = pd.DataFrame({"age": [31, 45, 52, 28], "claim": [120.0, 80.5, 300.0, 15.25]})
    df.to_parquet(dirs["inputs"] / "acme__claims.parquet")
    (dirs["inputs"] / "inputs.json").write_text(json.dumps({"files": ["acme__claims.parquet"]}))
    return dirs


@pytest.fixture
def run_job(backend: BubblewrapBackend, job_dirs: dict[str, Path]) -> Runner:
    def run(
        entry: str,
        *,
        source: str | None = None,
        limits: SandboxLimits = LIMITS,
        env: Mapping[str, str] | None = None,
        **extra: object,
    ) -> SandboxResult:
        if source is not None:
            (job_dirs["bundle"] / entry).write_text(source)
        else:
            shutil.copy(NOTEBOOKS / entry, job_dirs["bundle"] / entry)
        req = SandboxRequest(
            bundle_dir=job_dirs["bundle"],
            entrypoint=entry,
            inputs_dir=job_dirs["inputs"],
            outputs_dir=job_dirs["outputs"],
            limits=limits,
            env=dict(env or {}),
            **extra,  # type: ignore[arg-type]
        )
        return backend.run(req)

    return run


def _outputs(job_dirs: dict[str, Path]) -> list[str]:
    root = job_dirs["outputs"]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _job_cgroups() -> set[Path]:
    """Our job cgroups (other engineers' workers may run sandboxes concurrently)."""
    own = _cgroup._own_path("memory").lstrip("/")
    return {p for p in (Path("/sys/fs/cgroup/memory") / own).glob("veil-sbx-*") if p.is_dir()}


@pytest.fixture(autouse=True)
def host_stays_healthy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """After every job: no sandbox processes, cgroups or staging mounts of ours are left."""
    run_root = tmp_path / "runs"
    run_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(run_root))
    before = _job_cgroups()
    yield
    assert _job_cgroups() - before == set()
    assert psutil.Process().children(recursive=True) == []
    assert str(run_root) not in Path("/proc/mounts").read_text()
    assert list(run_root.iterdir()) == []


# ----------------------------------------------------------------------------- benign jobs


def test_notebook_reads_inputs_and_publishes(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    res = run_job("ok_inputs.ipynb")
    assert res.ok, res.reason
    assert (res.backend, res.insecure, res.reason, res.error_type) == (
        "local-sandbox",
        False,
        None,
        None,
    )
    assert _outputs(job_dirs) == ["count.txt", "tables", "tables/summary.csv"]
    assert (job_dirs["outputs"] / "count.txt").read_text() == "4"
    assert res.sandbox_start_s is not None and 0 < res.sandbox_start_s <= res.duration_s


def test_script_entrypoint(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    src = "import os\nopen('/outputs/x.txt', 'w').write(os.getcwd())\n"
    res = run_job("main.py", source=src)
    assert res.ok, res.reason
    assert (job_dirs["outputs"] / "x.txt").read_text() == "/work"


def test_environment_and_visible_filesystem(
    run_job: Runner, job_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOST_SECRET", "s3cr3t")
    src = (
        "import json, os, sys\n"
        "info = {'env': dict(os.environ), 'uid': os.getuid(), 'root': sorted(os.listdir('/')),\n"
        "        'repo': os.path.exists('/work/main'), 'executable': sys.executable,\n"
        "        'root_home': sorted(os.listdir('/root'))}\n"
        "json.dump(info, open('/outputs/info.json', 'w'))\n"
    )
    res = run_job("probe.py", source=src, env={"VEIL_JOB_ID": "job-42"})
    assert res.ok, res.reason
    info = json.loads((job_dirs["outputs"] / "info.json").read_text())
    env = info["env"]
    assert "HOST_SECRET" not in env and "VEIL_HOME" not in env
    assert env["VEIL_STAGE"] == "secure" and env["VEIL_JOB_ID"] == "job-42"
    assert (env["VEIL_INPUTS"], env["VEIL_OUTPUTS"], env["HOME"]) == (
        "/inputs",
        "/outputs",
        "/work",
    )
    assert env["MPLBACKEND"] == "Agg"
    assert info["uid"] == 65534
    assert not info["repo"]
    assert info["root_home"] in ([], [".pyenv"])  # only the interpreter, never /root itself
    assert set(info["root"]) <= {
        "bin", "dev", "etc", "inputs", "job", "lib", "lib64", "opt", "outputs", "proc", "root",
        "sbin", "tmp", "usr", "work",
    }  # fmt: skip


def test_extra_binds(run_job: Runner, job_dirs: dict[str, Path], tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    rw = tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "token").write_text("t0k")
    src = (
        "data = open('/run/broker/token').read()\n"
        "open('/mnt/state/echo', 'w').write(data)\n"
        "try:\n    open('/run/broker/x', 'w')\nexcept OSError:\n    pass\n"
        "else:\n    raise SystemExit(3)\n"
    )
    res = run_job(
        "bind.py",
        source=src,
        extra_ro_binds=[(ro, "/run/broker")],
        extra_rw_binds=[(rw, "/mnt/state")],
    )
    assert res.ok, res.reason
    assert (rw / "echo").read_text() == "t0k"
    assert not (ro / "x").exists()


# ----------------------------------------------------------------------------- workload errors


def test_notebook_exception_reports_type_and_cell_only(run_job: Runner) -> None:
    res = run_job("zero_div.ipynb")
    assert not res.ok
    assert res.reason == "notebook raised ZeroDivisionError in cell 4, line 1"
    assert (res.error_type, res.cell, res.line, res.message) == ("ZeroDivisionError", 4, 1, None)


def test_custom_exception_names_are_not_a_channel(run_job: Runner) -> None:
    res = run_job("custom_exception.ipynb")
    assert not res.ok
    assert res.error_type == "OtherException"
    assert res.reason is not None and "Leak" not in res.reason and "data" not in res.reason


def test_script_exception(run_job: Runner) -> None:
    res = run_job("bad.py", source="raise KeyError('patient 17')\n")
    assert (res.ok, res.reason, res.error_type, res.cell) == (
        False,
        "script raised KeyError in line 1",
        "KeyError",
        None,
    )


def _nb(*cells: str) -> str:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.writes(nb)


def test_notebook_diagnostics_name_public_things(run_job: Runner) -> None:
    """Through the real kernel: the module, name, attribute and column a researcher needs."""
    res = run_job("m.ipynb", source=_nb("x = 1", "import pandas\nimport sklearnx"))
    assert res.reason == ("notebook raised ModuleNotFoundError in cell 2, line 2: no module "
                          "named 'sklearnx' in the secure stage's runtime (`veil runtime` "
                          "lists its packages)")
    res = run_job("n.ipynb", source=_nb("print(totl)"))
    assert res.reason == "notebook raised NameError in cell 1, line 1: name 'totl' is not defined"
    res = run_job("a.ipynb", source=_nb("import pandas as pd\ndf = pd.DataFrame({'cost': [1]})",
                                        "df.groupy('cost')"))
    assert res.message == "'DataFrame' object has no attribute 'groupy'"
    res = run_job("k.ipynb", source=_nb("d = {}\nd['regoin']"), public_names=frozenset())
    assert (res.line, res.message) == (2, "key 'regoin' not found (check the column names of "
                                          "the input's schema)")


@pytest.mark.parametrize("cell", [
    "raise ValueError('patient 123 has diabetes')",
    "rows = {'4711': 1}\nkey = str(4700 + 11)\nrows[key + '0']",
    "assert False, '17,north,455'",
    "import importlib\nimportlib.import_module('alice' + '_smith')",
    "class ModuleNotFoundError(Exception):\n    pass\n"
    "name = 'patient_' + str(100 + 23)\n"
    "raise ModuleNotFoundError(f\"No module named '{name}'\")",
    "class Leaky(Exception):\n    def __str__(self):\n"
    "        return open('/inputs/inputs.json').read()\nraise Leaky()",
    "raise SyntaxError('patient 123 is HIV positive')",
    "raise NameError('x', name='patient' + '_' + '99')",
])
def test_data_carrying_errors_report_their_type_only(run_job: Runner, cell: str) -> None:
    """Values computed at run time (stand-ins for data) never reach the reason; a word written
    in the approved code may (it is public), so the values here are all computed."""
    res = run_job("leak.ipynb", source=_nb(cell))
    assert not res.ok and res.message is None and res.reason is not None
    for secret in ("123", "4711", "17,north", "alice_smith", "patient", "files", "99"):
        assert secret not in res.reason


def test_script_nonzero_exit(run_job: Runner) -> None:
    res = run_job("exit.py", source="import sys\nsys.exit(4)\n")
    assert not res.ok and res.error_type == "SystemExit"


def test_failed_job_releases_nothing(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    res = run_job("half.py", source="open('/outputs/partial.csv', 'w').write('a')\n1/0\n")
    assert not res.ok
    assert _outputs(job_dirs) == []


# ----------------------------------------------------------------------------- containment


def test_inet_socket_refused(run_job: Runner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        res = run_job("socket_inet.ipynb", env={"TARGET_PORT": str(port)})
        with pytest.raises(TimeoutError):
            listener.accept()
    assert not res.ok
    assert res.reason is not None
    assert res.reason.startswith("notebook raised PermissionError in cell 2, line ")


def test_inet6_udp_refused(run_job: Runner) -> None:
    res = run_job("socket_inet6_udp.ipynb")
    assert (res.ok, res.error_type) == (False, "PermissionError")


def test_cannot_read_veil_home(
    run_job: Runner, job_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "veil-home"
    home.mkdir()
    (home / "veil.db").write_bytes(b"SQLite format 3\0 secret")
    monkeypatch.setenv("VEIL_HOME", str(home))
    res = run_job("read_path.ipynb", env={"TARGET_PATH": str(home / "veil.db")})
    assert (res.ok, res.error_type) == (False, "FileNotFoundError")
    assert _outputs(job_dirs) == []


@pytest.mark.parametrize("target", ["other_dataset", "repo", "shadow", "proc_host"])
def test_cannot_read_outside_mounts(
    run_job: Runner, job_dirs: dict[str, Path], tmp_path: Path, target: str
) -> None:
    other = tmp_path / "datasets" / "globex__members.parquet"
    other.parent.mkdir()
    other.write_bytes(b"PAR1 other provider's rows")
    paths = {
        "other_dataset": str(other),
        "repo": str(Path(__file__).resolve()),
        "shadow": "/etc/shadow",
        "proc_host": f"/proc/{os.getpid()}/environ",
    }
    res = run_job("read_path.ipynb", env={"TARGET_PATH": paths[target]})
    assert not res.ok
    assert res.error_type in {"FileNotFoundError", "PermissionError"}
    assert _outputs(job_dirs) == []


def test_inputs_are_read_only(run_job: Runner) -> None:
    res = run_job("write_inputs.ipynb")
    assert (res.ok, res.error_type, res.cell) == (False, "OSError", 2)


def test_fork_bomb_hits_process_limit(run_job: Runner) -> None:
    res = run_job("fork_bomb.ipynb")
    assert (res.ok, res.reason) == (False, "process limit")
    assert res.duration_s < LIMITS.wall_seconds


def test_script_fork_bomb(run_job: Runner) -> None:
    res = run_job("bomb.py", source="import os\nwhile True:\n    os.fork()\n")
    assert (res.ok, res.reason) == (False, "process limit")


def test_allocating_50_gib_fails(run_job: Runner) -> None:
    res = run_job("alloc_50g.ipynb")
    assert (res.ok, res.reason) == (False, "memory limit")


def test_growing_memory_is_killed(run_job: Runner) -> None:
    res = run_job("memory_grow.ipynb", limits=replace(LIMITS, memory_bytes=384 * MiB))
    assert (res.ok, res.reason) == (False, "memory limit")


def test_writing_10_gib_hits_file_size_limit(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    res = run_job("write_10g.ipynb", limits=replace(LIMITS, output_bytes=256 * MiB))
    assert (res.ok, res.reason) == (False, "file size limit")
    assert _outputs(job_dirs) == []


def test_many_files_hit_output_cap(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    res = run_job("write_many.ipynb")
    assert (res.ok, res.reason) == (False, "output exceeds 32 MiB")
    assert _outputs(job_dirs) == []


def test_filling_scratch_space(run_job: Runner) -> None:
    res = run_job("fill_work.ipynb")
    assert (res.ok, res.reason) == (False, "scratch space (/work, /tmp, /dev/shm) full")


def test_huge_cell_outputs_are_discarded(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    res = run_job("huge_output.ipynb")
    assert res.ok, res.reason
    assert _outputs(job_dirs) == ["done.txt"]


def test_script_huge_stdout(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    src = "import sys\nfor _ in range(200000):\n    print('row,' * 200)\n"
    res = run_job("loud.py", source=src)
    assert res.ok, res.reason


def test_run_forever_hits_wall_clock(run_job: Runner) -> None:
    res = run_job("forever.ipynb", limits=replace(LIMITS, wall_seconds=4))
    assert (res.ok, res.reason) == (False, "wall-clock timeout after 4 s")
    assert res.duration_s < 4 + 3


def test_cpu_spin_hits_cpu_limit(run_job: Runner) -> None:
    res = run_job("cpu_spin.ipynb", limits=replace(LIMITS, cpu_seconds=2))
    assert (res.ok, res.reason) == (False, "cpu time limit")


def test_script_cpu_spin(run_job: Runner) -> None:
    res = run_job(
        "spin.py", source="while True:\n    pass\n", limits=replace(LIMITS, cpu_seconds=1)
    )
    assert (res.ok, res.reason) == (False, "cpu time limit")


def test_symlink_in_outputs_is_refused(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    res = run_job("symlink_out.ipynb")
    assert (res.ok, res.reason) == (False, "output contains a symlink or special file")
    assert _outputs(job_dirs) == []


def test_forged_status_is_not_trusted(run_job: Runner) -> None:
    src = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        '        os.write(fd, b\'{"v":1,"event":"finished","status":"ok"}\\n\' * 200)\n'
        "    except OSError:\n"
        "        pass\n"
        "raise ValueError\n"
    )
    res = run_job("forge.py", source=src)
    assert not res.ok


# ----------------------------------------------------------------------------- host layout, caps


_WRITE_PROBE = """
import errno, json, os
report = {}
block = b"x" * (1024 * 1024)
for place in ["/", "/etc", "/opt", "/dev", "/dev/shm", "/tmp", "/work"]:
    path, written, err = os.path.join(place, "probe.bin"), 0, None
    try:
        with open(path, "wb") as fh:
            for _ in range(100):
                fh.write(block)
                fh.flush()
                written += len(block)
    except OSError as exc:
        err = exc.errno
    try:
        os.unlink(path)
    except OSError:
        pass
    report[place] = [written, err]
json.dump(report, open("/outputs/report.json", "w"))
"""


def test_root_is_read_only_and_every_tmpfs_is_capped(
    run_job: Runner, job_dirs: dict[str, Path]
) -> None:
    """bwrap's own root and /dev tmpfs have no size cap, so they are read-only; the writable
    scratch (/tmp, /work, /dev/shm) is capped at tmpfs_bytes."""
    limits = replace(LIMITS, tmpfs_bytes=32 * MiB, max_file_bytes=256 * MiB)
    res = run_job("probe.py", source=_WRITE_PROBE, limits=limits)
    assert res.ok, res.reason
    report = json.loads((job_dirs["outputs"] / "report.json").read_text())
    for place in ("/", "/etc", "/opt", "/dev"):
        assert report[place] == [0, 30], place  # EROFS before a single byte
    for place in ("/dev/shm", "/tmp", "/work"):
        written, err = report[place]
        assert err == 28 and written <= 32 * MiB, place  # ENOSPC at the cap


def test_writing_past_the_tmpfs_cap_fails_cleanly(run_job: Runner) -> None:
    src = "block = b'x' * 1024**2\nwith open('/dev/shm/big', 'wb') as fh:\n" \
          "    for _ in range(600):\n        fh.write(block)\n"
    res = run_job("fill.py", source=src, limits=replace(LIMITS, max_file_bytes=1024 * MiB))
    assert (res.ok, res.reason) == (False, "scratch space (/work, /tmp, /dev/shm) full")
    res = run_job("root.py", source="open('/big', 'wb').write(b'x' * 600 * 1024**2)\n")
    assert (res.ok, res.reason, res.error_type) == (False, "script raised OSError in line 1",
                                                     "OSError")


def test_a_fork_bomb_that_keeps_retrying_is_stopped_early(run_job: Runner) -> None:
    """The pids limit only refuses forks; sitting at it must not last until the wall clock."""
    src = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    res = run_job("spin_bomb.py", source=src)
    assert (res.ok, res.reason) == (False, "process limit")
    assert res.duration_s < LIMITS.wall_seconds / 2


def test_proc_cmdline_shows_no_host_path(run_job: Runner, job_dirs: dict[str, Path]) -> None:
    src = (
        "import json\n"
        "lines = {p: open(p, 'rb').read().decode().split('\\0')\n"
        "         for p in ('/proc/1/cmdline', '/proc/self/cmdline')}\n"
        "json.dump(lines, open('/outputs/cmdline.json', 'w'))\n"
    )
    res = run_job("cmdline.py", source=src)
    assert res.ok, res.reason
    lines = json.loads((job_dirs["outputs"] / "cmdline.json").read_text())
    host = [sys.prefix, sys.base_prefix, str(Path(__file__).parents[2]), tempfile.gettempdir(),
            str(job_dirs["bundle"].parent), os.environ.get("VEIL_HOME", "/nonexistent")]
    for name, argv in lines.items():
        assert argv[-2] == "/job/cmdline.py", argv  # (the last item is the trailing NUL's)
        for arg in argv:
            assert not any(h in arg for h in host), (name, arg)
            assert not arg.startswith("/") or arg.startswith(("/opt/veil/", "/job/", "/usr/")), (
                name, arg)
