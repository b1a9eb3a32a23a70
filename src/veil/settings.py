"""Where Veil keeps its state, and the knobs an operator may turn.

One frozen object, read once from the environment, passed explicitly to the
parts that need it (no module-level globals that tests would have to patch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_home() -> Path:
    return Path(os.environ.get("VEIL_HOME", str(Path.home() / ".veil"))).expanduser()


_SANDBOX_KNOBS = ("sandbox_wall_s", "sandbox_cpu_s", "sandbox_memory_bytes",
                  "sandbox_max_processes", "sandbox_output_bytes")


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    database_url: str | None = None
    max_upload_bytes: int = 2 * 1024**3
    max_bundle_bytes: int = 16 * 1024**2
    insecure_dev: bool = False
    worker_poll_s: float = 0.5
    worker_lease_s: float = 30.0
    max_attempts: int = 2
    # Sandbox limits of every job; None keeps the sandbox's own default (SandboxLimits).
    # A dataset policy's [limits] can only lower them.
    sandbox_wall_s: int | None = None
    sandbox_cpu_s: int | None = None
    sandbox_memory_bytes: int | None = None
    sandbox_max_processes: int | None = None
    sandbox_output_bytes: int | None = None
    # Python of the MPC engine's environment (spu) for `veil psi measure`; None: the
    # checkout's .venv-mpc (scripts/setup.sh creates it).
    mpc_python: Path | None = None

    def __post_init__(self) -> None:
        for name in _SANDBOX_KNOBS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
                raise ValueError(f"{name} must be a positive integer")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'veil.sqlite'}"

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def key_dir(self) -> Path:
        return self.home / "keys"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.blob_dir, self.key_dir, self.run_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.chmod(0o700)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {}
        if "VEIL_DATABASE_URL" in env:
            values["database_url"] = env["VEIL_DATABASE_URL"]
        if "VEIL_MAX_UPLOAD_BYTES" in env:
            values["max_upload_bytes"] = int(env["VEIL_MAX_UPLOAD_BYTES"])
        if "VEIL_WORKER_LEASE_S" in env:
            values["worker_lease_s"] = float(env["VEIL_WORKER_LEASE_S"])
        for name in _SANDBOX_KNOBS:
            raw = env.get(f"VEIL_{name.upper()}")
            if raw is not None:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"VEIL_{name.upper()} must be an integer") from None
        if env.get("VEIL_MPC_PYTHON"):
            values["mpc_python"] = Path(env["VEIL_MPC_PYTHON"])
        if env.get("VEIL_INSECURE_DEV") == "1":
            values["insecure_dev"] = True
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
