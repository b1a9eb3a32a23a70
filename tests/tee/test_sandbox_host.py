"""Host-side pieces of the sandbox without running one: request checks, the status channel,
the verdict mapping, the output checks and backend selection (fail closed)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

import veil.tee.sandbox as sandbox
from veil.tee.sandbox import (
    InsecureSubprocessBackend,
    SandboxError,
    SandboxLimits,
    SandboxRequest,
    SandboxUnavailable,
    _host,
    backend_for,
)


@pytest.fixture
def req(tmp_path: Path) -> SandboxRequest:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "inputs").mkdir()
    (tmp_path / "bundle" / "main.py").write_text("pass\n")
    return SandboxRequest(
        bundle_dir=tmp_path / "bundle",
        entrypoint="main.py",
        inputs_dir=tmp_path / "inputs",
        outputs_dir=tmp_path / "outputs",
    )


def test_valid_request_creates_outputs_dir(req: SandboxRequest) -> None:
    assert _host.validate_request(req) == req.bundle_dir / "main.py"
    assert req.outputs_dir.is_dir()


@pytest.mark.parametrize("entry", ["", "../main.py", "/etc/passwd.py", "main.txt", "nope.py"])
def test_bad_entrypoints(req: SandboxRequest, entry: str) -> None:
    with pytest.raises(SandboxError, match="entrypoint"):
        _host.validate_request(replace(req, entrypoint=entry))


def test_symlinked_entrypoint_refused(req: SandboxRequest, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text("pass\n")
    (req.bundle_dir / "link.py").symlink_to(tmp_path / "elsewhere.py")
    with pytest.raises(SandboxError, match="regular file"):
        _host.validate_request(replace(req, entrypoint="link.py"))


def test_missing_dirs_and_nonempty_outputs(req: SandboxRequest, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="bundle_dir"):
        _host.validate_request(replace(req, bundle_dir=tmp_path / "missing"))
    with pytest.raises(SandboxError, match="inputs_dir"):
        _host.validate_request(replace(req, inputs_dir=tmp_path / "missing"))
    req.outputs_dir.mkdir()
    (req.outputs_dir / "stale.csv").write_text("x")
    with pytest.raises(SandboxError, match="must be empty"):
        _host.validate_request(req)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"PATH": "/evil"}, "reserved"),
        ({"LD_PRELOAD": "/x.so"}, "reserved"),
        ({"PYTHONSTARTUP": "/x.py"}, "reserved"),
        ({"VEIL_STAGE": "programming"}, "reserved"),
        ({"BAD-NAME": "x"}, "invalid"),
        ({"OK": "a\0b"}, "NUL"),
    ],
)
def test_bad_env(req: SandboxRequest, env: dict[str, str], match: str) -> None:
    with pytest.raises(SandboxError, match=match):
        _host.validate_request(replace(req, env=env))


@pytest.mark.parametrize("dest", ["/etc/x", "/run", "relative", "/run/../etc", "/run//x", "/job/x"])
def test_bad_extra_bind_targets(req: SandboxRequest, tmp_path: Path, dest: str) -> None:
    with pytest.raises(SandboxError, match="under /run or /mnt"):
        _host.validate_request(replace(req, extra_ro_binds=[(tmp_path, dest)]))


def test_extra_bind_checks(req: SandboxRequest, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="does not exist"):
        _host.validate_request(replace(req, extra_rw_binds=[(tmp_path / "no", "/run/x")]))
    with pytest.raises(SandboxError, match="duplicate"):
        _host.validate_request(
            replace(
                req, extra_ro_binds=[(tmp_path, "/run/x")], extra_rw_binds=[(tmp_path, "/run/x")]
            )
        )


def test_mount_exposing_veil_home_refused(
    req: SandboxRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_HOME", str(tmp_path / "bundle" / "home"))
    with pytest.raises(SandboxError, match="VEIL_HOME"):
        _host.validate_request(req)
    monkeypatch.setenv("VEIL_HOME", str(tmp_path / "state"))
    with pytest.raises(SandboxError, match="VEIL_HOME"):
        _host.validate_request(replace(req, extra_ro_binds=[(tmp_path, "/run/all")]))
    # a folder *inside* VEIL_HOME (e.g. one job's decrypted inputs) is fine
    monkeypatch.setenv("VEIL_HOME", str(tmp_path))
    _host.validate_request(req)


def test_the_home_passed_down_is_protected_not_the_environments(
    req: SandboxRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`veil serve --home X` protects X even when $VEIL_HOME says something else."""
    monkeypatch.setenv("VEIL_HOME", str(tmp_path / "elsewhere"))
    with pytest.raises(SandboxError, match="expose"):
        _host.validate_request(req, home=tmp_path / "bundle" / "home")
    _host.validate_request(req, home=tmp_path / "elsewhere")


@pytest.mark.parametrize("field", ["cpu_seconds", "memory_bytes", "wall_seconds", "output_bytes"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_bad_limits(field: str, value: object) -> None:
    with pytest.raises(SandboxError, match=field):
        SandboxLimits(**{field: value})  # type: ignore[arg-type]


def test_too_few_processes() -> None:
    with pytest.raises(SandboxError, match="max_processes"):
        SandboxLimits(max_processes=2)


# ----------------------------------------------------------------------------- status channel


def _rec(**kw: object) -> bytes:
    return (json.dumps({"v": 1, **kw}) + "\n").encode()


FINISHED_OK = _rec(event="finished", status="ok", error_type=None, cell=None, limit=None)


def test_status_roundtrip() -> None:
    raw = _rec(event="started", t_ns=5) + FINISHED_OK
    st = _host.parse_status(raw, overflow=False)
    assert st is not None and (st.started_ns, st.finished, st.status) == (5, True, "ok")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json\n",
        b"\xff\xfe\n",
        FINISHED_OK * 2,
        FINISHED_OK + _rec(event="started", t_ns=1),
        _rec(event="started", t_ns=True),
        _rec(event="finished", status="ok", error_type=None, cell=None, limit=None, extra=1),
        _rec(event="finished", status="great", error_type=None, cell=None, limit=None),
        _rec(event="finished", status="error", error_type="a b", cell=None, limit=None),
        _rec(event="finished", status="error", error_type="X" * 65, cell=None, limit=None),
        _rec(event="finished", status="error", error_type="E", cell=True, limit=None),
        _rec(event="finished", status="error", error_type="E", cell=-1, limit=None),
        _rec(event="finished", status="error", error_type="E", cell=1, limit="quota"),
        (json.dumps({"v": 2, "event": "started", "t_ns": 1}) + "\n").encode(),
        b"[]\n",
        b"\n".join([FINISHED_OK] * 3),
    ],
)
def test_tampered_status_is_rejected(raw: bytes) -> None:
    assert _host.parse_status(raw, overflow=False) is None


def test_status_overflow_is_rejected() -> None:
    assert _host.parse_status(FINISHED_OK, overflow=True) is None


def _raw(status: bytes = b"", code: int | None = 0, **kw: object) -> _host.RawOutcome:
    base: dict[str, object] = dict(
        returncode=code,
        timed_out=False,
        watchdog_reason=None,
        status=status,
        status_overflow=False,
        stderr=b"",
        t0_ns=0,
        duration_s=1.0,
    )
    base.update(kw)
    return _host.RawOutcome(**base)  # type: ignore[arg-type]


LIM = SandboxLimits(wall_seconds=20, output_bytes=64 * 1024 * 1024)


@pytest.mark.parametrize(
    ("raw", "kw", "reason"),
    [
        (_raw(FINISHED_OK), {}, None),
        (_raw(FINISHED_OK, code=1), {}, "sandbox exited abnormally (exit status 1)"),
        (_raw(FINISHED_OK, timed_out=True), {}, "wall-clock timeout after 20 s"),
        (_raw(FINISHED_OK), {"output_over": True}, "output exceeds 64 MiB"),
        (_raw(b"", code=137), {"memory_hit": True}, "memory limit"),
        (_raw(b"", code=1), {"pids_hit": True}, "process limit"),
        (_raw(b"", code=128 + 24), {}, "cpu time limit"),
        (_raw(b"", code=-24), {}, "cpu time limit"),
        (_raw(b"", code=1), {}, "sandbox failed to start"),
        (_raw(b"garbage", code=1), {}, "sandbox produced an invalid status report"),
        (_raw(_rec(event="started", t_ns=1), code=137), {}, "sandbox killed by signal SIGKILL"),
        (
            _raw(_rec(event="finished", status="error", error_type="E", cell=3, limit="fsize"), 1),
            {},
            "file size limit",
        ),
        (
            _raw(_rec(event="finished", status="error", error_type="KeyError", cell=3, limit=None)),
            {"is_notebook": True},
            "notebook raised KeyError in cell 3",
        ),
        (
            _raw(
                _rec(event="finished", status="setup-error", error_type=None, cell=None, limit=None)
            ),
            {},
            "sandbox runner could not apply the limits",
        ),
    ],
)
def test_classify(raw: _host.RawOutcome, kw: dict[str, bool], reason: str | None) -> None:
    args: dict[str, bool] = {"is_notebook": False, "output_over": False, **kw}
    verdict = _host.classify(raw, limits=LIM, **args)
    assert verdict.reason == reason
    assert verdict.ok is (reason is None)


# ----------------------------------------------------------------------------- outputs


def test_output_problem(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.csv").write_bytes(b"x" * 100)
    assert _host.output_problem(tmp_path, 100) is None
    assert _host.output_problem(tmp_path, 99) == "output exceeds 99 bytes"
    os.symlink("/etc/passwd", tmp_path / "a" / "l")
    assert _host.output_problem(tmp_path, 1000) == "output contains a symlink or special file"


def test_output_fifo_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p")
    assert _host.output_problem(tmp_path, 1000) == "output contains a symlink or special file"


def test_copy_outputs_keeps_tree(tmp_path: Path) -> None:
    src, dst = tmp_path / "s", tmp_path / "d"
    (src / "t").mkdir(parents=True)
    dst.mkdir()
    (src / "t" / "x.csv").write_text("1,2")
    _host.copy_outputs(src, dst)
    assert (dst / "t" / "x.csv").read_text() == "1,2"


# ----------------------------------------------------------------------------- backend choice


def test_backend_for_fails_closed_without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable) as exc:
        backend_for("local-sandbox")
    assert str(exc.value) == "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    assert isinstance(backend_for("local-sandbox", insecure_dev=True), InsecureSubprocessBackend)


def test_backend_for_names() -> None:
    with pytest.raises(SandboxError, match="unknown"):
        backend_for("gvisor")
    with pytest.raises(SandboxUnavailable, match="explicit"):
        backend_for("insecure-dev")
    assert backend_for("insecure-dev", insecure_dev=True).name == "insecure-dev"


def test_bubblewrap_backend_with_missing_binary() -> None:
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        sandbox.BubblewrapBackend(bwrap="/nonexistent/bwrap")


def test_the_platform_has_one_secure_stage_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Submissions are checked against, and jobs run on, the same backend object."""
    import veil.tee.sandbox
    from veil.tee import backends
    from veil.tee.backends import LocalInsecure, LocalSandbox, secure_stage_for

    stage = secure_stage_for()
    assert isinstance(stage, LocalSandbox) and stage.name == stage.sandbox.name == "local-sandbox"
    assert not stage.insecure and not stage.hardware_backed
    env, binds = stage.agent_wiring(Path("/run/x"))
    assert env["VEIL_KEY_AGENT"].startswith(backends.AGENT_SANDBOX_DIR) and binds
    monkeypatch.setattr(veil.tee.sandbox, "find_bwrap", lambda: None)
    with pytest.raises(SandboxUnavailable):
        secure_stage_for()  # fail closed: no silent fallback
    weak = secure_stage_for(insecure_dev=True)
    assert isinstance(weak, LocalInsecure) and weak.insecure and weak.name == "local-insecure"
