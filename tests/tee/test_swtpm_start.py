"""swtpm start-up: start() returns only once the TPM accepts connections, or fails clearly.

The socket file appears at bind(), before listen(); a start that waited only for the file let
the first connect race swtpm. The fake swtpm below makes that window long and deterministic.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from veil.tee.attestation import SwtpmError, swtpm_missing
from veil.tee.attestation.swtpm import _STATE_FILE, _Swtpm
from veil.tee.faults import PlatformFault

pytestmark = pytest.mark.tpm

# Binds both sockets at once (so the files exist), but listens only after LISTEN_AFTER seconds.
_FAKE = """#!{python}
import socket, sys, time
args = sys.argv[1:]
paths = [args[args.index(flag) + 1].split("path=", 1)[1] for flag in ("--server", "--ctrl")]
socks = []
for path in paths:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    socks.append(s)
time.sleep({listen_after})
for s in socks:
    s.listen(4)
time.sleep(60)
"""


def _connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _fake_swtpm(bin_dir: Path, listen_after: float) -> None:
    bin_dir.mkdir()
    script = bin_dir / "swtpm"
    script.write_text(_FAKE.format(python=sys.executable, listen_after=listen_after))
    script.chmod(0o755)


def _no_swtpm_left(workdir: Path) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(workdir) in part for part in proc.info["cmdline"] or ()):
            return False
    return True


def test_twenty_sequential_starts_all_connect(swtpm_state: Path, tmp_path: Path) -> None:
    from tpm2_pytss import ESAPI, TCTILdr

    connected = 0
    for i in range(20):
        workdir = tmp_path / f"t{i}"
        workdir.mkdir()
        shutil.copyfile(swtpm_state / _STATE_FILE, workdir / _STATE_FILE)
        tpm = _Swtpm(workdir)
        tpm.start()
        try:
            # Raw connects first (the race showed as ECONNREFUSED here), then a real command.
            assert _connects(tpm.socket) and _connects(tpm.ctrl)
            esys = ESAPI(TCTILdr("swtpm", f"path={tpm.socket}"))
            try:
                assert len(bytes(esys.get_random(8))) == 8
            finally:
                esys.close()
            connected += 1
        finally:
            tpm.stop()
    assert connected == 20


def test_start_waits_until_swtpm_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_swtpm(tmp_path / "bin", listen_after=0.5)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    workdir = tmp_path / "w"
    workdir.mkdir()
    tpm = _Swtpm(workdir)
    t0 = time.monotonic()
    tpm.start()
    try:
        assert time.monotonic() - t0 >= 0.4  # it waited past bind() for listen()
        assert _connects(tpm.socket) and _connects(tpm.ctrl)
    finally:
        tpm.stop()


def test_a_swtpm_that_never_listens_times_out_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_swtpm(tmp_path / "bin", listen_after=3600)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    workdir = tmp_path / "w"
    workdir.mkdir()
    tpm = _Swtpm(workdir, start_timeout_s=0.5)
    with pytest.raises(SwtpmError, match=r"did not accept connections within 0\.5 s") as info:
        tpm.start()
    assert isinstance(info.value, PlatformFault)  # the worker re-queues, never blames the job
    assert _no_swtpm_left(workdir)


def test_a_swtpm_that_exits_at_start_is_a_platform_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "swtpm").write_text("#!/bin/sh\nexit 3\n")
    (bin_dir / "swtpm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    workdir = tmp_path / "w"
    workdir.mkdir()
    with pytest.raises(SwtpmError, match=r"exited during start-up \(exit status 3") as info:
        _Swtpm(workdir).start()
    assert isinstance(info.value, PlatformFault)


@pytest.fixture(autouse=True)
def _needs_swtpm() -> None:
    if swtpm_missing():
        pytest.skip(str(swtpm_missing()))
