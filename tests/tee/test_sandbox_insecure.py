"""The insecure-dev backend: same runner and limits, no isolation, always marked insecure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from veil.tee.sandbox import InsecureSubprocessBackend, SandboxLimits, SandboxRequest, SandboxResult

NOTEBOOKS = Path(__file__).parent / "notebooks"
MiB = 1024 * 1024
LIMITS = SandboxLimits(
    cpu_seconds=10,
    memory_bytes=2048 * MiB,
    max_file_bytes=8 * MiB,
    wall_seconds=15,
    output_bytes=16 * MiB,
)


def _run(tmp_path: Path, entry: str, source: str | None = None, **kw: object) -> SandboxResult:
    bundle, inputs = tmp_path / "bundle", tmp_path / "inputs"
    bundle.mkdir()
    inputs.mkdir()
    if source is None:
        shutil.copy(NOTEBOOKS / entry, bundle / entry)
    else:
        (bundle / entry).write_text(source)
    limits = SandboxLimits(**{**LIMITS.__dict__, **kw})  # type: ignore[arg-type]
    req = SandboxRequest(bundle, entry, inputs, tmp_path / "outputs", limits)
    return InsecureSubprocessBackend().run(req)


def test_ok_script_is_marked_insecure(tmp_path: Path) -> None:
    src = "import os\nopen(os.path.join(os.environ['VEIL_OUTPUTS'], 'a.txt'), 'w').write('1')\n"
    res = _run(tmp_path, "main.py", src)
    assert (res.ok, res.insecure, res.backend) == (True, True, "insecure-dev")
    assert (tmp_path / "outputs" / "a.txt").read_text() == "1"


def test_notebook_error_cell(tmp_path: Path) -> None:
    res = _run(tmp_path, "zero_div.ipynb")
    assert (res.ok, res.reason, res.insecure) == (
        False,
        "notebook raised ZeroDivisionError in cell 4, line 1",
        True,
    )


def test_wall_clock(tmp_path: Path) -> None:
    res = _run(
        tmp_path, "forever.py", "import time\nwhile True:\n    time.sleep(1)\n", wall_seconds=2
    )
    assert (res.ok, res.reason) == (False, "wall-clock timeout after 2 s")


def test_file_size_limit(tmp_path: Path) -> None:
    src = "import os\nopen(os.environ['VEIL_OUTPUTS'] + '/b', 'wb').write(b'x' * 9 * 1024**2)\n"
    res = _run(tmp_path, "big.py", src)
    assert (res.ok, res.reason) == (False, "file size limit")
    assert list((tmp_path / "outputs").iterdir()) == []


def test_memory_limit(tmp_path: Path) -> None:
    res = _run(tmp_path, "mem.py", "x = bytearray(50 * 1024**3)\n")
    assert (res.ok, res.reason) == (False, "memory limit")


def test_output_cap_watchdog(tmp_path: Path) -> None:
    src = (
        "import os, time\nout = os.environ['VEIL_OUTPUTS']\n"
        "for n in range(100):\n    open(f'{out}/p{n}', 'wb').write(b'x' * 4 * 1024**2)\n"
        "time.sleep(30)\n"
    )
    res = _run(tmp_path, "many.py", src)
    assert (res.ok, res.reason) == (False, "output exceeds 16 MiB")


@pytest.mark.parametrize("entry", ["cpu.py"])
def test_cpu_limit(tmp_path: Path, entry: str) -> None:
    res = _run(tmp_path, entry, "while True:\n    pass\n", cpu_seconds=1)
    assert (res.ok, res.reason) == (False, "cpu time limit")
