"""The seccomp filter every sandboxed job runs under, exported as BPF for ``bwrap --seccomp``."""

from __future__ import annotations

import errno
import functools
import socket
import tempfile

from ._types import SandboxUnavailable

# Syscalls a data-science workload never needs and that widen the kernel attack surface or
# would let it escape the namespaces/filters (io_uring can open sockets without socket(2)).
_DENIED = (
    "ptrace",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "process_vm_readv",
    "process_vm_writev",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "fanotify_init",
)


@functools.lru_cache(maxsize=1)
def seccomp_bpf() -> bytes:
    """BPF program: allow by default; only AF_UNIX sockets; deny the syscalls above."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:  # libseccomp missing
        raise SandboxUnavailable(
            "seccomp is unavailable (pip install pyseccomp; apt-get install libseccomp2)"
        ) from exc
    filt = sc.SyscallFilter(sc.ALLOW)
    for family in ("socket", "socketpair"):
        filt.add_rule(sc.ERRNO(errno.EACCES), family, sc.Arg(0, sc.NE, socket.AF_UNIX))
    for name in _DENIED:
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):  # syscall unknown on this arch
            continue
    with tempfile.TemporaryFile() as fh:
        filt.export_bpf(fh)
        fh.seek(0)
        data: bytes = fh.read()
    if not data:
        raise SandboxUnavailable("could not build the seccomp filter")
    return data
