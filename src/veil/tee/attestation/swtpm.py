"""Evidence from a per-job software TPM (swtpm over a unix socket, driven with tpm2-pytss).

Each job gets its own swtpm process in a private dir under the worker's run folder (named for
the worker's pid, so a restart sweeps what a killed worker left), started from a copy of one
state template. The endorsement seed lives in that template, so the attestation key (AK), a
primary key derived from it, is the same every time: the verifier pins that AK public key
(``enroll_ak``) instead of trusting swtpm's system-wide local CA. This proves only "a
software TPM saw these measurements"; tokens say so (hwmodel LOCAL_SWTPM, not hardware-backed).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from veil.tee.attestation.errors import SwtpmError, SwtpmUnavailableError
from veil.tee.attestation.eventlog import MEASUREMENT_PCR, EventLog
from veil.tee.attestation.evidence import LOCAL_SWTPM_TYPE, Evidence
from veil.tee.owned import owned_name, owner_gone

__all__ = [
    "SwtpmAttester",
    "create_swtpm_state",
    "enroll_ak",
    "has_swtpm_state",
    "key_id",
    "sweep_swtpm_dirs",
    "swtpm_missing",
]

_STATE_FILE = "tpm2-00.permall"
_PID_FILE = "swtpm.pid"
_START_TIMEOUT_S = 5.0
_MAX_SOCKET_PATH = 100
# swtpm dies with the thread that started it (PR_SET_PDEATHSIG via util-linux setpriv), so a
# worker killed with SIGKILL leaves no TPM process behind. Without setpriv, the sweep at the
# next start kills it.
_SETPRIV = shutil.which("setpriv")
_DIE_WITH_PARENT: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL") if _SETPRIV else ()


def swtpm_missing() -> str | None:
    """Why swtpm evidence cannot be produced here, or None if it can."""
    if shutil.which("swtpm") is None:
        return "the swtpm binary is not installed (apt-get install swtpm swtpm-tools)"
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        return "tpm2-pytss is not installed (pip install tpm2-pytss; needs libtss2-dev)"
    return None


def has_swtpm_state(directory: Path) -> bool:
    """Whether ``directory`` holds manufactured TPM state (a template or a job's copy)."""
    return (directory / _STATE_FILE).is_file()


def key_id(public_key: PublicKeyTypes) -> str:
    """Stable id of a pinned key: SHA-256 of its SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _accepts(path: Path) -> bool:
    """True once a unix socket at ``path`` accepts a connection (it is listening)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class _Swtpm:
    """One swtpm process bound to a unix socket in ``workdir``; always killed on stop()."""

    def __init__(self, workdir: Path, *, start_timeout_s: float = _START_TIMEOUT_S) -> None:
        self.workdir = workdir
        self.socket = workdir / "tpm.sock"
        self.ctrl = workdir / "tpm.sock.ctrl"
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start swtpm and return only once both sockets accept a connection.

        The socket file appears at bind(), before listen(): waiting for the file alone lets the
        first connect race swtpm and fail with ECONNREFUSED.
        """
        if len(str(self.ctrl)) > _MAX_SOCKET_PATH:
            raise SwtpmError("swtpm work dir path is too long for a unix socket (max ~100 chars)")
        for stale in (self.socket, self.ctrl):
            stale.unlink(missing_ok=True)
        log = open(self.workdir / "swtpm.log", "wb")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [
                    *_DIE_WITH_PARENT,
                    "swtpm", "socket", "--tpm2",
                    "--tpmstate", f"dir={self.workdir}",
                    "--server", f"type=unixio,path={self.socket}",
                    "--ctrl", f"type=unixio,path={self.ctrl}",
                    "--flags", "not-need-init,startup-clear",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise SwtpmUnavailableError(f"cannot run swtpm: {exc.strerror}") from None
        finally:
            log.close()
        (self.workdir / _PID_FILE).write_text(str(self._proc.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while not (_accepts(self.socket) and _accepts(self.ctrl)):
            code = self._proc.poll()
            if code is not None:
                self.stop()
                raise SwtpmError(f"swtpm exited during start-up (exit status {code}; "
                                 "see swtpm.log in its work dir)")
            if time.monotonic() > deadline:
                self.stop()
                raise SwtpmError(f"swtpm did not accept connections within "
                                 f"{self.start_timeout_s:g} s")
            time.sleep(0.005)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def create_swtpm_state(directory: Path) -> Path:
    """Manufacture a fresh TPM (new endorsement seed) into ``directory``; the AK derives from it."""
    reason = swtpm_missing()
    if reason:
        raise SwtpmUnavailableError(reason)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / _STATE_FILE).exists():
        raise SwtpmError(f"{directory} already holds TPM state; refusing to overwrite it")
    from tpm2_pytss import ESAPI, TCTILdr

    tpm = _Swtpm(directory)
    tpm.start()
    try:
        esys = ESAPI(TCTILdr("swtpm", f"path={tpm.socket}"))
        try:
            esys.get_random(8)  # the first command makes swtpm persist its manufactured state
        finally:
            esys.close()
    except Exception as exc:
        raise SwtpmError(f"software TPM did not answer: {type(exc).__name__}") from None
    finally:
        tpm.stop()
    if not (directory / _STATE_FILE).exists():
        raise SwtpmError("swtpm did not write its state file")
    for leftover in ("tpm.sock", "tpm.sock.ctrl", ".lock", "swtpm.log", _PID_FILE):
        (directory / leftover).unlink(missing_ok=True)
    return directory


def _make_workdir(parent: Path | None) -> tuple[Path | None, Path]:
    """(record, workdir) for one swtpm: under ``parent`` (the run folder), named for its owner.

    Without a parent the dir is a plain temp dir (tests, enrolment). If the sockets would not fit
    a unix socket path under ``parent``, the state goes to a short temp dir and ``parent`` holds
    a symlink to it, so the sweep still finds it.
    """
    if parent is None:
        workdir = Path(tempfile.mkdtemp(prefix="veil-swtpm-"))
        os.chmod(workdir, 0o700)
        return None, workdir
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = parent / owned_name()
    if len(str(record / "tpm.sock.ctrl")) <= _MAX_SOCKET_PATH:
        record.mkdir(mode=0o700)
        return None, record
    workdir = Path(tempfile.mkdtemp(prefix="veil-swtpm-"))
    os.chmod(workdir, 0o700)
    record.symlink_to(workdir)
    return record, workdir


def sweep_swtpm_dirs(parent: Path) -> int:
    """Kill the swtpm and delete the TPM state of every job whose worker process is gone."""
    swept = 0
    if not parent.is_dir():
        return 0
    for entry in parent.iterdir():
        if not owner_gone(entry.name):
            continue
        workdir = entry.resolve() if entry.is_symlink() else entry
        _kill_swtpm(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        if entry.is_symlink():
            entry.unlink(missing_ok=True)
        swept += 1
    return swept


def _kill_swtpm(workdir: Path) -> None:
    """SIGKILL the swtpm recorded in ``workdir``, if that pid is still a swtpm serving it."""
    try:
        pid = int((workdir / _PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if f"dir={workdir}".encode() in cmdline.split(b"\0"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class SwtpmAttester:
    """Context manager: a per-job swtpm, its AK, PCR measurement and quotes.

    ``backend`` names the secure-stage backend this attester serves; evidence from it is always
    software-TPM evidence whatever the isolation around it.
    """

    backend = "local-sandbox"

    def __init__(self, state_template: Path, *, workdir_parent: Path | None = None) -> None:
        reason = swtpm_missing()
        if reason:
            raise SwtpmUnavailableError(reason)
        if not (state_template / _STATE_FILE).is_file():
            raise SwtpmError(f"no swtpm state in {state_template}; run create_swtpm_state first")
        self._template = state_template
        self._parent = workdir_parent
        self._tmp: Path | None = None
        self._record: Path | None = None
        self._tpm: _Swtpm | None = None
        self._esys: Any = None
        self._ak: Any = None
        self._ak_public: ec.EllipticCurvePublicKey | None = None

    def __enter__(self) -> SwtpmAttester:
        from tpm2_pytss import ESAPI, TCTILdr
        from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
        from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

        try:
            self._record, self._tmp = _make_workdir(self._parent)
            shutil.copyfile(self._template / _STATE_FILE, self._tmp / _STATE_FILE)
            self._tpm = _Swtpm(self._tmp)
            self._tpm.start()
            self._esys = ESAPI(TCTILdr("swtpm", f"path={self._tpm.socket}"))
            attrs = (
                TPMA_OBJECT.RESTRICTED
                | TPMA_OBJECT.SIGN_ENCRYPT
                | TPMA_OBJECT.FIXEDTPM
                | TPMA_OBJECT.FIXEDPARENT
                | TPMA_OBJECT.SENSITIVEDATAORIGIN
                | TPMA_OBJECT.USERWITHAUTH
            )
            template = TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=attrs)
            handle, out_public, *_ = self._esys.create_primary(
                TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT
            )
            self._ak = handle
            key = serialization.load_pem_public_key(bytes(out_public.to_pem()))
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise SwtpmError("attestation key is not an EC key")
            self._ak_public = key
        except Exception as exc:
            self.close()
            if isinstance(exc, SwtpmError):
                raise
            raise SwtpmError(f"software TPM set-up failed: {type(exc).__name__}: {exc}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop swtpm and delete its per-job state (including the AK's seed copy)."""
        if self._esys is not None:
            try:
                self._esys.close()
            finally:
                self._esys = None
        if self._tpm is not None:
            self._tpm.stop()
            self._tpm = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._record is not None:
            self._record.unlink(missing_ok=True)  # the symlink of a long-path fallback
            self._record = None

    @property
    def ak_public_key(self) -> ec.EllipticCurvePublicKey:
        if self._ak_public is None:
            raise SwtpmError("attester is not started")
        return self._ak_public

    def _require(self) -> Any:
        if self._esys is None:
            raise SwtpmError("attester is not started")
        return self._esys

    def read_register(self) -> bytes:
        esys = self._require()
        from tpm2_pytss.types import TPML_PCR_SELECTION

        _, _, values = esys.pcr_read(TPML_PCR_SELECTION.parse(f"sha256:{MEASUREMENT_PCR}"))
        return bytes(values.digests[0])

    def measure(self, log: EventLog) -> None:
        """Extend every event of the sealed launch log into the measurement PCR."""
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
        from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

        esys = self._require()
        if not log.sealed:
            raise SwtpmError("refusing to measure a launch log without its separator")
        if self.read_register() != bytes(32):
            raise SwtpmError("measurement PCR is not fresh; one swtpm serves one job")
        pcr = getattr(ESYS_TR, f"PCR{MEASUREMENT_PCR}")
        for event in log.events:
            digests = TPML_DIGEST_VALUES(
                [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=event.digest))]
            )
            esys.pcr_extend(pcr, digests)
        if self.read_register() != log.replay():
            raise SwtpmError("PCR value after measurement disagrees with the event log")

    def evidence(self, log: EventLog, report_data: bytes) -> Evidence:
        """Quote the measurement PCR with ``report_data`` as qualifying data."""
        from tpm2_pytss.constants import TPM2_ALG
        from tpm2_pytss.types import (
            TPML_PCR_SELECTION,
            TPMS_SCHEME_HASH,
            TPMT_SIG_SCHEME,
            TPMU_SIG_SCHEME,
        )

        esys = self._require()
        if len(report_data) != 32:
            raise SwtpmError("report_data must be 32 bytes")
        scheme = TPMT_SIG_SCHEME(
            scheme=TPM2_ALG.ECDSA,
            details=TPMU_SIG_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
        )
        try:
            quoted, signature = esys.quote(
                self._ak,
                TPML_PCR_SELECTION.parse(f"sha256:{MEASUREMENT_PCR}"),
                report_data,
                scheme,
            )
        except Exception as exc:
            raise SwtpmError(f"TPM2_Quote failed: {type(exc).__name__}") from None
        der = encode_dss_signature(
            int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big"),
            int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big"),
        )
        return Evidence(
            type=LOCAL_SWTPM_TYPE,
            event_log=log.to_list(),
            report_data=report_data.hex(),
            quote=base64.b64encode(bytes(quoted.attestationData)).decode(),
            signature=base64.b64encode(der).decode(),
            signer=key_id(self.ak_public_key),
        )


def enroll_ak(state_template: Path) -> ec.EllipticCurvePublicKey:
    """The AK public key a verifier should pin for swtpms started from ``state_template``."""
    with SwtpmAttester(state_template) as attester:
        return attester.ak_public_key
